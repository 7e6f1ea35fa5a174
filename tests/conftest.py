import os
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


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python app/main.py` as a subprocess on a free 127.0.0.1 port, ready once /health says so."""

    def __init__(self, log: Path | None = None, port: int | None = None, **env):
        self.port, self.log = port or free_port(), log
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {**os.environ, **env}
        if "LIT_SERVER_API_KEY" not in env:  # a key in the developer's shell must not leak into the open server
            environment.pop("LIT_SERVER_API_KEY", None)
        if "TRIAGE_EDGE_CASES" not in env:  # what tests flag (schemathesis too) never lands in data/edge_cases.csv
            environment["TRIAGE_EDGE_CASES"] = str(Path(tempfile.mkdtemp(prefix="triage-cases-")) / "edge_cases.csv")
        self.process = subprocess.Popen(
            [sys.executable, "app/main.py", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env=environment,
            stdout=open(log, "w") if log else subprocess.DEVNULL,  # noqa: SIM115  (the child owns it)
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.process.poll() is None, "the server exited while starting"
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError("the server did not become healthy in 180 s")

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
