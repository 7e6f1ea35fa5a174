"""Start-up: the API answers before the UI is loaded (importing Gradio takes seconds, the API needs none of it); until
the UI is mounted, / and Gradio's routes answer 503 "starting"; a stop while it loads is clean; a UI that cannot load
ends the server with status 1, naming why. A slow or broken Gradio is made by a `sitecustomize` on PYTHONPATH that
delays (or fails) `import gradio` in the server's processes: the product's own code is unchanged."""

import os
import signal
import subprocess
import sys
import time

import psutil
import requests
from conftest import ROOT, Server, approximately, example_input, free_port

from building import contract

SLOW_IMPORT = """
import importlib.abc, importlib.util, os, sys, time

class SlowGradio(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "gradio":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("gradio")
        run = spec.loader.exec_module

        def exec_module(module):  # the module's own code: the slow (or failing) part, as a real import's is
            if os.environ["GRADIO_IMPORT"] == "broken":
                raise ImportError("gradio is broken on this machine (a test)")
            time.sleep(float(os.environ["GRADIO_IMPORT"]))
            run(module)

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, SlowGradio())
"""


def gradio_import(tmp_path, how: str) -> dict:
    """The environment for a server whose `import gradio` sleeps `how` seconds, or fails with how="broken"."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SLOW_IMPORT)
    return {"PYTHONPATH": str(tmp_path / "site"), "GRADIO_IMPORT": how}


def test_the_api_answers_while_the_ui_loads_and_the_ui_follows(tmp_path):
    server = Server(log=tmp_path / "server.log", wait_for_ui=False, **gradio_import(tmp_path, "20"))
    try:
        assert requests.get(f"{server.url}/health", timeout=5).text == "ok"
        answer = requests.post(f"{server.url}/predict", json=example_input(), timeout=30)
        assert answer.status_code == 200 and answer.json() == approximately(contract.run(example_input()).model_dump(mode="json"))
        page = requests.get(f"{server.url}/", headers={"accept": "text/html"}, timeout=5)
        assert page.status_code == 503 and page.headers["retry-after"] == "1"
        assert 'http-equiv="refresh"' in page.text and 'href="/docs"' in page.text  # reloads itself; the API's docs
        api = requests.get(f"{server.url}/gradio_api/info", timeout=5)
        assert api.status_code == 503 and "the app is starting" in api.json()["detail"]
        assert "ready: the API at" in server.log.read_text() and "ready: the app at" not in server.log.read_text()
        deadline = time.time() + 120
        while requests.get(f"{server.url}/", timeout=5).status_code == 503 and time.time() < deadline:
            time.sleep(0.5)
        assert requests.get(f"{server.url}/", timeout=5).status_code == 200
        assert requests.get(f"{server.url}/gradio_api/info", timeout=5).json()["named_endpoints"]["/run"]
        assert "ready: the app at" in server.log.read_text()
    finally:
        server.stop()


def test_a_key_guards_gradio_while_it_loads(tmp_path):
    """With a key, Gradio's routes need it even before the UI is there: no key 401, the key 503 (starting)."""
    server = Server(log=tmp_path / "server.log", wait_for_ui=False, LIT_SERVER_API_KEY="k3y", **gradio_import(tmp_path, "20"))
    try:
        assert requests.get(f"{server.url}/gradio_api/info", timeout=5).status_code == 401
        assert requests.get(f"{server.url}/gradio_api/info", headers={"X-API-Key": "k3y"}, timeout=5).status_code == 503
    finally:
        server.stop()


def test_a_stop_while_the_ui_loads_is_clean(tmp_path):
    server = Server(log=tmp_path / "server.log", wait_for_ui=False, **gradio_import(tmp_path, "600"))
    tree = server.tree()
    started = time.time()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0 and time.time() - started < 20  # never waits for the import
    _, alive = psutil.wait_procs(tree, timeout=15)  # the children end with it (they watch the main process)
    assert not alive, [p.cmdline()[:3] for p in alive]
    assert "Traceback" not in server.log.read_text()


def test_a_ui_that_cannot_load_ends_the_server_naming_why(tmp_path):
    port, log = free_port(), tmp_path / "server.log"
    scratch = {"TRIAGE_DATABASE_URL": f"sqlite:///{tmp_path}/q.sqlite3", "TRIAGE_EDGE_CASES": str(tmp_path / "cases.csv")}
    env = {**os.environ, **gradio_import(tmp_path, "broken"), **scratch}
    command = [sys.executable, "app/main.py", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            assert process.wait(timeout=120) == 1
        finally:
            process.kill()
    text = log.read_text()
    assert "the app (UI) failed to load: stopping the server" in text and "gradio is broken on this machine (a test)" in text
    assert "stopping the whole server with exit status 1" in text
