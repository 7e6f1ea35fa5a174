"""The rooms: one concern each, imports running one way (down to model.py), and model.py short enough to read."""

import ast
import subprocess
import sys

import pytest

import model

ROOT = model.ROOT
ROOMS = ("model", "encoders", "files", "versions", "builder", "edge_cases", "review", "gate", "commands", "reporting", "batch")
# what each room may import at its top, of the project's own modules
MAY_IMPORT = {
    "files": set(),
    "versions": set(),
    "encoders": {"files"},
    "model": {"encoders", "files", "versions"},
    "builder": {"model", "encoders", "files", "versions", "edge_cases"},
    "edge_cases": {"model", "files"},
    "review": {"model", "edge_cases"},
    "gate": {"model", "edge_cases", "reporting", "versions"},
    "commands": {"model", "builder", "edge_cases", "review", "versions"},
    "reporting": {"model", "builder", "files"},
    "batch": {"model", "builder", "edge_cases", "review", "reporting", "files"},
}


def top_imports(path) -> set[str]:
    """The project modules a file imports at module level (not inside a function: those run only when called)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names & {*ROOMS, "app"}


@pytest.mark.parametrize("room", sorted(MAY_IMPORT))
def test_imports_run_one_way(room):
    assert top_imports(ROOT / f"{room}.py") <= MAY_IMPORT[room], f"{room}.py imports a room above it"


def test_importing_the_pipeline_loads_no_other_room():
    check = "import model, sys; print(sorted(m for m in ('builder', 'edge_cases', 'commands', 'batch', 'app') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]


def test_model_py_reads_in_one_sitting():
    lines = len((ROOT / "model.py").read_text().splitlines())
    assert lines < 700, f"model.py has {lines} lines: move what is not the pipeline to the room it belongs in"


def test_the_known_commands_still_run_through_model_py():
    done = subprocess.run([sys.executable, "model.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(command in done.stdout for command in ("build", "eval", "cases", "export-onnx")), done.stdout
    done = subprocess.run([sys.executable, "model.py", "cases", "undo"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "invalid choice: 'undo'" in done.stderr, done.stderr[-2000:]
