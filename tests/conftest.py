import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The tests run on artifacts/ (built from data/), whatever version a developer promoted here; a test sets its own folder
os.environ.setdefault("TRIAGE_VERSIONS_DIR", tempfile.mkdtemp(prefix="triage-versions-"))


SNAKEMAKE = [sys.executable, "-m", "snakemake"]  # through the running interpreter, not PATH (the venv need not be active)
CHROMIUM = "/usr/bin/chromium"  # Debian's, never a downloaded browser
SHOTS = Path(tempfile.gettempdir()) / "ui-shots"  # the browser tests' screenshots at 1400 px, to look at; never committed


@pytest.fixture(scope="session", autouse=True)
def pipeline_ready():
    """The pipeline's artifacts loaded in the test process (built first when missing or stale), as every face does."""
    from building import builder

    return builder.ready()


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven by Playwright."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is needed: apt-get install -y chromium"
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield browser
        browser.close()


def with_this_python(**env) -> dict:
    """The environment with this interpreter's folder first on PATH: the Snakefile's rules call `python`."""
    return {**os.environ, **env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python app/main.py` as a subprocess on a free 127.0.0.1 port, ready once /health says so and the UI is loaded
    (`/` past its 503; `wait_for_ui=False`: /health alone). `root`: the project to serve (a copy, say)."""

    def __init__(self, log: Path | None = None, port: int | None = None, wait_for_ui: bool = True, root: Path = ROOT, **env):
        self.port, self.log = port or free_port(), log
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {**os.environ, **env}
        if "LIT_SERVER_API_KEY" not in env:  # a key in the developer's shell must not leak into the open server
            environment.pop("LIT_SERVER_API_KEY", None)
        scratch = Path(tempfile.mkdtemp(prefix="triage-cases-"))  # what tests flag (schemathesis too) stays out of the repository
        environment.setdefault("TRIAGE_EDGE_CASES", str(scratch / "edge_cases.csv"))
        environment.setdefault("TRIAGE_DATABASE_URL", f"sqlite:///{scratch / 'review.sqlite3'}")
        self.process = subprocess.Popen(
            [sys.executable, "app/main.py", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=root,
            env=environment,
            stdout=open(log or scratch / "server.log", "w"),  # noqa: SIM115  (the child owns it; a failure shows its end)
            stderr=subprocess.STDOUT,
        )
        deadline, output, last = time.time() + 180, Path(log or scratch / "server.log"), "/health never asked"
        while time.time() < deadline:
            assert self.process.poll() is None, f"the server exited while starting; its output ends:\n{output.read_text()[-3000:]}"
            try:
                health = requests.get(f"{self.url}/health", timeout=2)
                last = f"/health answered {health.status_code}: {health.text[:300]}"
                if health.status_code == 200:  # the API answers; the UI loads after it: / says 503 until then
                    ui = requests.get(f"{self.url}/", timeout=5) if wait_for_ui else health
                    if ui.status_code != 503:
                        return
                    last = f"/health ok, / answered 503: {ui.text[:300]}"
            except requests.RequestException as error:
                last = f"/health: {type(error).__name__}"
            time.sleep(0.5)
        processes = [f"{p.pid} {p.status()} cpu {sum(p.cpu_times()[:2]):.1f} s: {' '.join(p.cmdline())[:80]}" for p in self.tree()]
        self.stop()
        raise TimeoutError(
            f"the server did not become healthy in 180 s ({last}); its processes:\n"
            + "\n".join(processes)
            + f"\nits output ends:\n{output.read_text()[-3000:]}"
        )

    def tree(self) -> list[psutil.Process]:
        parent = psutil.Process(self.process.pid)
        return [parent, *parent.children(recursive=True)]

    def stop(self) -> float:
        """SIGTERM, then the seconds until every process of the tree is gone (killed after 20 s)."""
        tree = self.tree()
        start = time.time()
        self.process.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(tree, timeout=20)
        for p in alive:
            p.kill()
        return time.time() - start if not alive else float("inf")


@pytest.fixture(autouse=True, scope="session")
def data_is_never_written():
    """No test may change the repository's data/ (the edge-case store included): a failure at the end says which file."""
    before = {p: p.read_bytes() for p in (ROOT / "data").iterdir() if p.is_file()}
    yield
    changed = [p.name for p, content in before.items() if not p.exists() or p.read_bytes() != content]
    assert not changed, f"the tests changed data/: {changed}"


class Postgres:
    """A real PostgreSQL server (Debian's `postgresql`) in a temporary folder on 127.0.0.1, run as `postgres` under root."""

    def __init__(self):
        found = shutil.which("pg_ctl") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))), None)
        if found is None:
            pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql; .ci/run does)")
        self.bin = Path(found).resolve().parent
        self.folder = Path(tempfile.mkdtemp(prefix="triage-pg-"))
        self.as_user = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            shutil.chown(self.folder, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self.url = f"postgresql+psycopg://triage@127.0.0.1:{self.port}/postgres"
        self.run("initdb", "-D", self.folder / "data", "-U", "triage", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()

    def run(self, tool: str, *args) -> None:
        command = [*self.as_user, self.bin / tool, *map(str, args)]
        subprocess.run(command, check=True, capture_output=True, timeout=120, cwd=self.folder)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run("pg_ctl", "-D", self.folder / "data", "-l", self.folder / "log", "-o", options, "-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server: `immediate` is a crash as far as clients see (every connection cut)."""
        self.run("pg_ctl", "-D", self.folder / "data", "-m", mode, "-w", "stop")


@pytest.fixture
def loop(tmp_path, monkeypatch):
    """A suite (empty: what the repository's data/edge_cases.csv holds plays no part), a review queue and a versions
    folder of this test's own; children inherit them."""
    monkeypatch.setenv("TRIAGE_EDGE_CASES", str(tmp_path / "suite.csv"))
    monkeypatch.setenv("TRIAGE_VERSIONS_DIR", str(tmp_path / "versions"))
    monkeypatch.setenv("TRIAGE_DATABASE_URL", f"sqlite:///{tmp_path / 'review.sqlite3'}")
    return tmp_path


@pytest.fixture
def postgres():
    server = Postgres()
    yield server
    server.stop()
    shutil.rmtree(server.folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# What the machinery's tests run on: drawn from the pipeline's contract (model.py), never from the worked example's
# names, so that they run on a fork's pipeline too (README, "Your own pipeline")
# ---------------------------------------------------------------------------------------------
def example_input() -> dict:
    """The Input's own example (model_config's json_schema_extra)."""
    from building import contract

    return contract.input_example()


def labelled_rows(n: int | None = None) -> list[dict]:
    """Rows of the first labelled set as {"input": the Input's fields, "expected": {label: value}, "row": the raw cells};
    without a label or a labelled set, the example alone (expected empty)."""
    import pandas as pd

    import model
    from building import contract

    sets = contract.labelled_sets()
    if not sets:
        return [{"input": example_input(), "expected": {}, "row": example_input()}]
    frame = pd.read_csv(next(iter(sets.values())), dtype=str, keep_default_na=False)
    frame = frame.head(n) if n else frame
    rows = []
    for cells in frame.to_dict("records"):
        one = contract.input_from_row(cells).model_dump(mode="json")
        rows.append({"input": one, "expected": {model.LABEL: cells[contract.expected_column()]}, "row": cells})
    return rows


def inputs(n: int) -> list[dict]:
    """`n` valid inputs: the labelled set's, repeated where it is shorter, or the example."""
    pool = [r["input"] for r in labelled_rows()]
    return [pool[i % len(pool)] for i in range(n)]


def label_values() -> list[str]:
    """The label's values (an enum's, in order), or [] without a label."""
    import model
    from building import contract

    if not contract.label():
        return []
    annotation = contract.base_type(model.Output.model_fields[contract.label()].annotation)
    return (
        [m.value for m in annotation]
        if contract.is_enum(annotation)
        else sorted({r["expected"][contract.label()] for r in labelled_rows()})
    )


def expected_matching(answer) -> dict:
    """An expected answer that `answer` (an Output, or its dict) gets right: its label."""
    from building import contract

    answer = answer if isinstance(answer, dict) else answer.model_dump(mode="json")
    return {contract.label(): answer[contract.label()]}


def expected_not_matching(answer) -> dict:
    """An expected answer that `answer` gets wrong: another value of the label."""
    from building import contract

    mine = expected_matching(answer)[contract.label()]
    return {contract.label(): next(v for v in label_values() if v != mine)}


def changed_flags() -> dict:
    """Flags that differ from the defaults: the first bool flag turned over, else the first number moved within bounds."""
    import model

    for name, field in model.Flags.model_fields.items():
        if field.annotation is bool:
            return {name: not field.default}
    name, field = next(iter(model.Flags.model_fields.items()))
    return {name: field.default + 1}


def invalid_input() -> tuple[dict, str]:
    """The example with one required field made invalid, and that field's name (the 422's loc)."""
    import model

    example = example_input()
    for name, field in model.Input.model_fields.items():
        if field.is_required():
            return {**example, name: None}, name
    name = next(iter(model.Input.model_fields))
    return {**example, name: {"not": "valid"}}, name


def approximately(value, tolerance: float = 1e-3):
    """`value` (an answer's JSON, say) with every float inside it matched within `tolerance`: an answer computed in
    another batch may differ in its last digits."""
    if isinstance(value, float):
        return pytest.approx(value, abs=tolerance)
    if isinstance(value, dict):
        return {k: approximately(v, tolerance) for k, v in value.items()}
    if isinstance(value, list):
        return [approximately(v, tolerance) for v in value]
    return value


def _refused(schema, values: dict, name: str) -> bool:
    """Whether `schema` refuses `values`, naming the field `name` first."""
    from pydantic import ValidationError

    try:
        schema.model_validate(values)
    except ValidationError as error:
        return error.errors()[0]["loc"][:1] == (name,)
    return False


def _bounds(field) -> dict:
    """A pydantic field's bounds: ge, gt, le, lt, min_length, max_length, where it has them."""
    found = {}
    for constraint in field.metadata:
        for bound in ("ge", "gt", "le", "lt", "min_length", "max_length"):
            if getattr(constraint, bound, None) is not None:
                found[bound] = getattr(constraint, bound)
    return found


def invalid_values(schema, base: dict | None = None) -> list[tuple[str, object]]:
    """(field, value) pairs that `schema` (a pydantic model) refuses in `base` (valid values: the example, say), one
    mistake each, drawn from each field's type and bounds: a wrong type, each bound overstepped (numbers, text length), a
    value no enum has. Only what the schema does refuse, naming that field, is kept."""
    from building import contract

    found = []
    for name, field in schema.model_fields.items():
        kind, bounds = contract.base_type(field.annotation), _bounds(field)
        candidates = [{"not": "valid"}]
        if kind is str:
            candidates += [42, "", "   "]
        elif kind is bool:
            candidates += ["maybe"]
        elif kind in (int, float):
            candidates += ["many"]
        elif contract.is_enum(kind):
            candidates += ["no-such-value"]
        candidates += [bounds["ge"] - 1] if "ge" in bounds else []
        candidates += [bounds["le"] + 1] if "le" in bounds else []
        candidates += [bounds[b] for b in ("gt", "lt") if b in bounds]
        candidates += ["x" * (bounds["max_length"] + 1)] if "max_length" in bounds and kind is str else []
        for value in candidates:
            if (name, value) not in found and _refused(schema, {**(base or {}), name: value}, name):
                found.append((name, value))
    return found


def edge_values(schema, base: dict | None = None) -> list[tuple[str, object]]:
    """(field, value) pairs at the edges of what `schema` accepts in `base`: both bools, every enum value, each number at
    its inclusive bounds, a text at its longest. Only what the schema accepts is kept."""
    from pydantic import ValidationError

    from building import contract

    found = []
    for name, field in schema.model_fields.items():
        kind, bounds = contract.base_type(field.annotation), _bounds(field)
        candidates = [bounds[b] for b in ("ge", "le") if b in bounds]
        if kind is bool:
            candidates = [True, False]
        elif contract.is_enum(kind):
            candidates = [member.value for member in kind]
        elif kind is str and "max_length" in bounds:
            candidates = ["a" * bounds["max_length"]]
        for value in candidates:
            try:
                schema.model_validate({**(base or {}), name: value})
            except ValidationError:
                continue
            found.append((name, value))
    return found


def flag_variants() -> list[dict]:
    """Sets of flags that should change answers: none, changed_flags(), and each flag at each edge it accepts."""
    import model

    variants = [{}, changed_flags()]
    for name, value in edge_values(model.Flags):
        if value != model.Flags.model_fields[name].default and {name: value} not in variants:
            variants.append({name: value})
    return variants


def long_input() -> dict:
    """The example with its text field (the Input's first str field) nine tenths as long as the schema allows (5,000
    characters where it sets no bound): the example's own text, repeated. The example itself without a text field."""
    import model
    from building import contract

    example, name = example_input(), contract.text_field()
    if name is None:
        return example
    text = str(example.get(name) or "some text")
    most = _bounds(model.Input.model_fields[name]).get("max_length", 5000)
    return {**example, name: " ".join([text] * max(1, most * 9 // 10 // (len(text) + 1)))}


SLOW_PIPELINE = """
import importlib.abc, importlib.util, os, sys, time

class SlowPipeline(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "model":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("model")
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            fast, least = module.run_batch, float(os.environ["TEST_SECONDS_PER_INPUT"])

            def run_batch(inputs, *args, **kwargs):  # as the pipeline's, then a sleep up to `least` seconds an input
                start = time.perf_counter()
                answers = fast(inputs, *args, **kwargs)
                time.sleep(max(0.0, least * len(inputs) - (time.perf_counter() - start)))
                return answers

            module.run_batch = run_batch

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, SlowPipeline())
"""


def slow_pipeline(folder: Path, seconds: float = 0.05) -> dict:
    """The environment for a server whose pipeline takes at least `seconds` an input (its `run_batch` tops itself up
    with a sleep), so that tests of queues, timeouts, killed workers and drains have requests in flight whatever the
    pipeline's own speed (the worked example's long inputs take longer than this already). Made by a `sitecustomize` on
    PYTHONPATH in `folder`: the project's code is unchanged."""
    site = Path(folder) / "slow-pipeline"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(SLOW_PIPELINE)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "TEST_SECONDS_PER_INPUT": str(seconds)}


# --- more of the same (helper-b): an input with a text of one's own, the expected answer's example, other values ------
def text_field() -> str:
    """The Input's text field (the one the store cleans and masks, and tables show); a test that needs one is skipped
    for a pipeline without one."""
    from building import contract

    found = contract.text_field()
    if found is None:
        pytest.skip("the pipeline's Input has no text field")
    return found


def with_text(text: str, base: dict | None = None) -> dict:
    """The example (or `base`) with its text field set to `text`: many distinct valid inputs."""
    return {**(base or example_input()), text_field(): text}


def longest_text() -> int:
    """The most characters the text field takes (its max_length; 5,000 when it sets none)."""
    import model

    field = model.Input.model_fields[text_field()]
    return min([m.max_length for m in field.metadata if getattr(m, "max_length", None)] or [5000])


def expected_example() -> dict:
    """The expected answer's own example (model.Expected's json_schema_extra), else the label's first value."""
    import model
    from building import contract

    examples = (model.Expected.model_config.get("json_schema_extra") or {}).get("examples")
    return dict(examples[0]) if examples else {contract.label(): label_values()[0]}


def other_value(annotation, value):
    """A valid value of type `annotation` other than `value`: a bool turned over, another enum member, a number moved."""
    from building import contract

    base = contract.base_type(annotation)
    if base is bool:
        return not value
    if contract.is_enum(base):
        return next(m.value for m in base if m.value != value)
    if base in (int, float):
        return (value or 0) + 1
    return f"{value or ''} (another)"


def expected_more() -> tuple[dict, str]:
    """The expected example with one optional field given too (the first bool or enum one), and that field's name; the
    example alone and None when the expected answer has no such field."""
    import model
    from building import contract

    example = expected_example()
    for name, field in model.Expected.model_fields.items():
        base = contract.base_type(field.annotation)
        if not field.is_required() and name not in example and (base is bool or contract.is_enum(base)):
            return {**example, name: True if base is bool else next(iter(base)).value}, name
    return example, None


def optional_input_field() -> str:
    """The last Input field with a default (what an older store may lack a column for)."""
    import model

    return [name for name, field in model.Input.model_fields.items() if not field.is_required()][-1]


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Rows (dicts) as a CSV file, the columns in the order they first appear; None an empty cell."""
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in rows for k in row)), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def expected_cells(expected: dict) -> dict:
    """An expected answer as a table's cells: expected_<field> for each field."""
    from building import contract

    return {contract.expected_column(k): v for k, v in expected.items()}


# --- (helper-c): a row of a labelled table, rows of every label, the pipeline's answers, flags as KEY=VALUE ------------
def labelled_row(cells: dict) -> dict:
    """One row of a labelled table (its cells, as in the labelled set) in labelled_rows' shape: the Input it makes, the
    expected answer, the cells."""
    from building import contract

    one = contract.input_from_row(cells).model_dump(mode="json")
    label = contract.label()
    return {"input": one, "expected": {label: cells[contract.expected_column()]} if label else {}, "row": cells}


def labelled_mix(n: int) -> list[dict]:
    """`n` labelled rows (labelled_rows' shape) taking each label value in turn, so that a few rows hold as many classes
    as they can; the set repeated where it is shorter."""
    from building import contract

    by_value = {}
    for row in labelled_rows():
        by_value.setdefault(row["expected"].get(contract.label()), []).append(row)
    queues = list(by_value.values())
    mixed = [queue[i] for i in range(max(map(len, queues))) for queue in queues if i < len(queue)]
    return [mixed[i % len(mixed)] for i in range(n)]


def answers(given: list[dict], flags: dict | None = None) -> list:
    """The pipeline's answers (model.Output) to `given` inputs under `flags`, in one `run_batch`: as a report scores
    them when they make one chunk (an answer may depend on the rest of its batch in its last digits)."""
    import model

    return model.run_batch(given, model.Flags(**(flags or {})))


def relabelled(rows: list[dict], right: bool) -> list[dict]:
    """`rows` with each expected answer one the pipeline gets right (`right`) or wrong, its answers drawn in one batch."""
    from building import contract

    out = []
    for row, answer in zip(rows, answers([r["input"] for r in rows]), strict=True):
        expected = expected_matching(answer) if right else expected_not_matching(answer)
        out.append({**row, "expected": expected, "row": {**row["row"], contract.expected_column(): expected[contract.label()]}})
    return out


def right_rows(n: int) -> list[dict]:
    """`n` distinct labelled rows (labelled_mix's order) that the pipeline gets right, scored together as one batch."""
    every = labelled_mix(len(labelled_rows()))
    pool = [r for r, a in zip(every, answers([r["input"] for r in every]), strict=True) if _right(r, a)]
    chosen = pool[:n]
    for _ in range(5):  # a row right in one batch and wrong in another is dropped, and the next one taken
        wrong = [r for r, a in zip(chosen, answers([r["input"] for r in chosen]), strict=True) if not _right(r, a)]
        if not wrong:
            assert len(chosen) == n, f"the labelled set has only {len(chosen)} rows the pipeline gets right"
            return chosen
        pool = [r for r in pool if r not in wrong]
        chosen = pool[:n]
    pytest.fail(f"no {n} rows of the labelled set that the pipeline gets right together")


def _right(row: dict, answer) -> bool:
    from building import contract

    return str(answer.model_dump(mode="json")[contract.label()]) == row["expected"][contract.label()]


def flag_pairs(flags: dict) -> list[str]:
    """Flags as batch.py's KEY=VALUE pairs (for --flag and --compare): a bool as true or false."""
    return [f"{name}={str(value).lower() if isinstance(value, bool) else value}" for name, value in flags.items()]


def changing_flags(given: list[dict]) -> dict:
    """Flags (the first of flag_variants() that does) under which the pipeline answers at least one of `given` inputs
    otherwise than under the defaults: what a comparison of two variants must find differences with."""
    plain = [a.model_dump(mode="json") for a in answers(given)]
    for flags in flag_variants()[1:]:
        if [a.model_dump(mode="json") for a in answers(given, flags)] != plain:
            return flags
    pytest.fail("no flag changes the answer to any of these inputs")


def fake_version(versions_dir: Path, payload: bytes = b"weights") -> str:
    """A version kept in `versions_dir` in seconds, without a build: one artifact file and the manifest recording its size
    and SHA-256, as the build writes them (what promote, rollback and the gate's record check; it cannot be served)."""
    import hashlib
    import json
    import secrets

    name = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
    folder = versions_dir / name
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(payload)
    recorded = {"weights.bin": {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}}
    (folder / "manifest.json").write_text(json.dumps({"version": name, "artifacts": recorded}, indent=2) + "\n")
    return name


PAIRS = 8  # the disagreements recorded_pairs keeps


def recorded_pairs(candidate: str = "cand") -> list[int]:
    """PAIRS shadowed requests whose answers differ on the label (the candidate's: another of its values), and one
    where they agree; returns the disagreements' ids."""
    import json

    import model
    from building import builder, contract
    from loop import review

    builder.ready()
    label = contract.label()
    for i, one in enumerate(inputs(PAIRS + 1)):
        served = contract.run(model.Input.model_validate(one)).model_dump(mode="json")
        other = next(v for v in label_values() if v != served[label])
        now = {**served, label: other} if i < PAIRS else served
        differs = label if i < PAIRS else ""
        pair = {"candidate": candidate, "served": "artifacts", "at": float(i), "input_json": json.dumps({**one, "flags": {}})}
        review.record_shadow([pair | {"served_json": json.dumps(served), "candidate_json": json.dumps(now), "differs": differs}])
    record = review.shadow_record(candidate, listed=100)
    ids = sorted(d["id"] for d in record["disagreements"])
    assert len(ids) == PAIRS and record["requests"] == PAIRS + 1
    return ids
