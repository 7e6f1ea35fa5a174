"""Files the page takes and gives: a file input reads only what was uploaded on the page; a batch report gets a
folder of its own that goes after an hour.

`only_uploads` patches Gradio, read as of gradio 6.31.0 (`GRADIO_VERSION_READ`); tests/test_ui.py fails on any
other version and when what it relies on moves. On an upgrade, re-read:

- gradio/blocks.py, `Block.move_resource_to_block_cache(self, url_or_file_path)` and
  `Block.async_move_resource_to_block_cache(self, url_or_file_path)`: the copy of an input file (or URL) into
  the block's cache, which `only_uploads` wraps on the instance;
- gradio/processing_utils.py, `move_files_to_cache` and `async_move_files_to_cache`: they call those two for
  every FileData an event receives, after `_check_allowed`, which returns early unless `blocks.has_launched`,
  so under `gr.mount_gradio_app` (app/main.py) nothing else checks the path;
- gradio/utils.py, `get_upload_folder()`: where uploads land (`GRADIO_TEMP_DIR`, else `<tmp>/gradio`).
"""

import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr

GRADIO_VERSION_READ = "6.31.0"


def uploaded(path: str | Path) -> Path:
    """The path of a file uploaded to this app, refusing any other: links and `..` resolved first, URLs refused.
    The message names nothing on the server."""
    folder = Path(gr.utils.get_upload_folder()).resolve()
    given = Path(str(path))
    resolved = given.resolve()
    if given.is_symlink() or not resolved.is_relative_to(folder) or not resolved.is_file():
        raise gr.Error("Only a CSV file uploaded on this page can be scored: upload it again.")
    return resolved


def only_uploads(component: gr.File) -> gr.File:
    """Make a file input take only files uploaded to this app. A client can name any server path (or a URL)
    in the FileData it sends, and a Gradio app mounted on another server copies it into its cache unchecked;
    here the path is checked before that copy. (On the instance: a subclass would make Gradio write a .pyi.)"""
    copy, async_copy = component.move_resource_to_block_cache, component.async_move_resource_to_block_cache

    async def async_checked(path):
        return await async_copy(uploaded(path))

    component.move_resource_to_block_cache = lambda path: copy(uploaded(path))
    component.async_move_resource_to_block_cache = async_checked
    return component


def report_dir(max_age_s: float = 3600) -> Path:
    """A new folder for one batch report. Gradio serves a copy, so folders older than an hour are removed."""
    parent = Path(tempfile.gettempdir()) / "triage-reports"
    parent.mkdir(exist_ok=True)
    for old in parent.iterdir():
        if time.time() - old.stat().st_mtime > max_age_s:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=parent))
