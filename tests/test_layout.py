"""The top level is the design card's, the supporting code lives in packages named by concern, imports run one way
(down to model.py, which imports nothing of the project), and model.py is short enough to read."""

import ast
import subprocess
import sys

import pytest

import model

ROOT = model.ROOT
# the project's own modules: the top level's two files and each package's modules
MODULES = {
    "model": ROOT / "model.py",
    "recipe": ROOT / "recipe.py",
    "batch": ROOT / "batch.py",
    **{f"{package}.{path.stem}": path for package in ("building", "loop", "reporting", "app") for path in (ROOT / package).glob("*.py")},
}
LAYERS = ("model", "recipe", "building", "reporting", "loop", "batch", "app")  # each may import only those before it (and itself)
TOP_LEVEL_PYTHON = {"model.py", "recipe.py", "batch.py"}  # the engineer's two files, and the batch face
PACKAGES = {"app", "building", "loop", "reporting"}


def layer(module: str) -> str:
    return module.split(".")[0]


def imports(path) -> set[str]:
    """The project's modules and packages that a file imports, at its top or inside a function (an import circle is one
    however late it runs)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if layer(name) in LAYERS}


def test_the_top_level_is_the_design_cards():
    python = {p.name for p in ROOT.glob("*.py")}
    assert python == TOP_LEVEL_PYTHON, f"Python files at the top level beyond these: {sorted(python - TOP_LEVEL_PYTHON)}"
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages == PACKAGES
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    folders = {name.split("/")[0] for name in tracked if "/" in name}
    beside = {"data", "tests", "bench", "notebooks", "deploy", "profiles", ".ci", ".github"}  # data, tests, deployment, CI
    assert folders <= PACKAGES | beside, f"top-level folders beyond the design card's: {sorted(folders - PACKAGES - beside)}"


@pytest.mark.parametrize("package", sorted(PACKAGES - {"app"}))
def test_each_package_says_in_a_line_what_it_holds(package):
    docstring = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text()))
    assert docstring and len(docstring.splitlines()) == 1, f"{package}/__init__.py: one line saying what the package holds"


def test_model_py_imports_nothing_of_the_project():
    assert imports(ROOT / "model.py") == set(), "model.py imports a supporting package: the build and the loop import it, not back"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_one_way(module):
    mine = LAYERS.index(layer(module))
    above = {name for name in imports(MODULES[module]) if LAYERS.index(layer(name)) > mine}
    assert not above, f"{module} imports {sorted(above)}, a layer above it (order: {' < '.join(LAYERS)})"


def test_importing_the_pipeline_loads_no_other_module():
    others = sorted(set(LAYERS) - {"model"})
    check = f"import model, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in {others}))"
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-2000:]


def test_the_pipeline_without_its_artifacts_says_how_to_load_them():
    code = "import model; from building import contract; model.run_batch([contract.input_example()])"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "builder.ready()" in done.stderr.splitlines()[-1], done.stderr[-2000:]


def test_model_py_reads_in_one_sitting():
    lines = len((ROOT / "model.py").read_text().splitlines())
    assert lines < 700, f"model.py has {lines} lines: move what is not the pipeline to the package it belongs in"


@pytest.mark.parametrize(("package", "commands"), [("building", ("build", "eval", "export-onnx")), ("loop", ("cases", "gate", "promote"))])
def test_each_command_line_lives_with_its_commands(package, commands):
    done = subprocess.run([sys.executable, "-m", package, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and all(command in done.stdout for command in commands), done.stdout + done.stderr[-2000:]
    done = subprocess.run([sys.executable, "-m", package, "undo"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "invalid choice: 'undo'" in done.stderr, done.stderr[-2000:]
