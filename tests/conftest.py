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
def postgres():
    server = Postgres()
    yield server
    server.stop()
    shutil.rmtree(server.folder, ignore_errors=True)
