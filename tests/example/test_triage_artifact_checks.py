"""The worked example's recipe checks that its artifacts fit together (recipe.py, `shape_problem`): files that match
their manifest but not each other are named and never served. A fork's recipe has its own artifacts and checks.

tests/test_heal.py tests the machinery's part for any recipe: an artifact that cannot be loaded is never served."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from building import builder, files


def tamper(folder: Path, name: str) -> None:
    """Replace one artifact with a wrong-shaped one and record its size and hash in the manifest, as an edit would."""
    import faiss

    path = folder / name
    if name == "classifier.npz":
        with np.load(path) as saved:
            np.savez(path, coef=saved["coef"][:, :16], intercept=saved["intercept"], classes=saved["classes"])
    elif name == "classes":
        name, path = "classifier.npz", folder / "classifier.npz"
        with np.load(path) as saved:
            classes = saved["classes"].copy()
            classes[0] = "lottery"
            np.savez(path, coef=saved["coef"], intercept=saved["intercept"], classes=classes)
    else:
        index = faiss.IndexFlatIP(16)
        index.add(np.eye(16, dtype=np.float32))
        faiss.write_index(index, str(path))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artifacts"][name] = {"bytes": path.stat().st_size, "sha256": files.sha256_file(path)}
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("artifact", "named"), [("classifier.npz", "classifier.npz has weights"), ("classes", "lottery"), ("articles.faiss", "16-dimensional")]
)
def test_artifacts_of_the_wrong_shape_are_named_and_never_served(tmp_path, artifact, named):
    builder.ready()  # built
    folder = tmp_path / "artifacts"
    shutil.copytree(builder.ARTIFACTS_DIR, folder, ignore=shutil.ignore_patterns(".*"))
    tamper(folder, artifact)
    check = "import sys; from building import builder; sys.exit(0 if builder._load_checked() is None else 3)"
    done = subprocess.run(
        [sys.executable, "-c", check],
        cwd=ROOT,
        env={**os.environ, "TRIAGE_ARTIFACTS_DIR": str(folder)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]  # refused: it would be rebuilt, never loaded
    assert named in done.stderr and "rebuilding them" in done.stderr, done.stderr[-2000:]
