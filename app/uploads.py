"""Files the page takes and gives: a file input reads only what was uploaded on the page; a batch is bounded (rows,
bytes, batches at once and waiting: `batch_limits`); a batch report gets a folder of its own that goes after an hour,
or when its server process ends.

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

import contextlib
import multiprocessing.util
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr

import batch

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
    """A new folder for one batch report, named for this process, which removes it when it ends (a server stopped by
    SIGTERM too: no partial report stays behind). Gradio serves a copy, so folders older than an hour go, and so do
    those of a process that is gone (one killed outright)."""
    parent = Path(tempfile.gettempdir()) / "triage-reports"
    parent.mkdir(exist_ok=True)
    for old in parent.iterdir():
        if time.time() - old.stat().st_mtime > max_age_s or not _alive(old.name.split("-")[0]):
            shutil.rmtree(old, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(dir=parent, prefix=f"{os.getpid()}-"))
    _made.setdefault(os.getpid(), []).append(folder)
    if len(_made[os.getpid()]) == 1:  # multiprocessing runs this when the process ends, a forked server process included
        multiprocessing.util.Finalize(None, _remove_made, args=(os.getpid(),), exitpriority=0)
    return folder


_made: dict[int, list[Path]] = {}  # the report folders each process made (a forked child inherits its parent's list)


def _remove_made(pid: int) -> None:
    for folder in _made.pop(pid, []):
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: str) -> bool:
    """Whether the process `pid` (a folder name's) still runs; a name that is no pid counts as alive (age alone)."""
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's: alive
        pass
    return True


ROWS_DEFAULT, RUNNING_DEFAULT, WAITING_DEFAULT = 20_000, 1, 4  # see batch_limits


def batch_limits() -> dict[str, int]:
    """The Batch tab's bounds (environment variables), so that one upload cannot hold the server:
    TRIAGE_BATCH_MAX_ROWS (20,000: about a minute's scoring on two cores, at some 400 inputs a second, two with a
    comparison), TRIAGE_MAX_UPLOAD_MB (50, also Gradio's cap on an upload), TRIAGE_BATCH_CONCURRENCY (batches scored at
    once: 1, as one already keeps two cores busy) and TRIAGE_BATCH_WAITING (batches that may wait for a turn: 4; one
    more is refused at once)."""
    return {
        "rows": int(os.environ.get("TRIAGE_BATCH_MAX_ROWS", ROWS_DEFAULT)),
        "mb": int(os.environ.get("TRIAGE_MAX_UPLOAD_MB", "50")),
        "running": max(1, int(os.environ.get("TRIAGE_BATCH_CONCURRENCY", RUNNING_DEFAULT))),
        "waiting": max(0, int(os.environ.get("TRIAGE_BATCH_WAITING", WAITING_DEFAULT))),
    }


def within_limits(path: str | Path, rows: int, mb: int) -> None:
    """Refuse, before anything is scored, a CSV over `mb` megabytes or `rows` rows (rows as scoring reads them, counted
    only up to one past the cap); the message names the cap and its setting."""
    name = Path(path).name
    if Path(path).stat().st_size > mb * 1024 * 1024:
        raise gr.Error(f"{name} is larger than {mb} MB, the most this server scores (TRIAGE_MAX_UPLOAD_MB).")
    seen = 0
    for chunk in batch.read_chunks(path, min(rows + 1, 65536)):
        seen += len(chunk)
        if seen > rows:
            raise gr.Error(
                f"{name} has more than {rows:,} rows, the most this server scores in one batch (TRIAGE_BATCH_MAX_ROWS): "
                "split it, or score it with batch.py on your own machine."
            )


class Turns:
    """At most `running` batches scored at once and `waiting` more waiting for their turn; one more is refused at once
    with a message. (Gradio's own queue would keep every click waiting, with no end: the event runs with
    concurrency_limit=None and this bounds it.)"""

    def __init__(self, running: int, waiting: int):
        self.running, self.waiting = running, waiting
        self.free, self.admitted = threading.Semaphore(running), threading.Semaphore(running + waiting)

    @contextlib.contextmanager
    def turn(self, on_wait=None):
        """Hold a turn for one batch; `on_wait()` is called first when the batch must wait for it."""
        if not self.admitted.acquire(blocking=False):
            raise gr.Error(
                f"The server is scoring {self.running} batch(es) with {self.waiting} more waiting, the most it takes "
                "(TRIAGE_BATCH_CONCURRENCY, TRIAGE_BATCH_WAITING): try again in a few minutes."
            )
        try:
            if not self.free.acquire(blocking=False):
                if on_wait:
                    on_wait()
                self.free.acquire()
            try:
                yield
            finally:
                self.free.release()
        finally:
            self.admitted.release()
