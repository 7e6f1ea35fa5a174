"""The one server as an attacker and a failing machine see it: credentials on every route, files the UI may
read, error bodies, stalled bodies, schemathesis against /openapi.json, a killed worker, SIGTERM under load.

Machinery: every input, flag and expected answer comes from the pipeline's contract (tests/conftest.py's helpers)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import gradio
import hypothesis
import pandas as pd
import psutil
import pytest
import requests
import schemathesis
import yaml
from conftest import ROOT, Server, approximately, example_input, free_port, labelled_rows, long_input, slow_pipeline
from gradio_client import Client, handle_file
from schemathesis.generation import GenerationMode

import model
from app.api import SETTINGS
from building import builder, contract

KEY, UI_USER, UI_PASSWORD = "sesame", "owner", "open-sesame"
FLAGS = list(model.Flags().model_dump(mode="json").values())
FIRST = next(iter(model.Input.model_fields))  # the Input's first field: what a stalled body starts with
# a file of the server's that the UI must never read: the evaluation set, or a file the artifacts are built from
SERVER_FILE = next(iter(contract.labelled_sets().values()), None) or sorted(builder.recipe_data().values())[0]


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    """A server with an API key, a UI login, a 1 MB upload cap and a 2 s body timeout."""
    log = tmp_path_factory.mktemp("locked") / "server.log"
    s = Server(
        log=log,
        LIT_SERVER_API_KEY=KEY,
        TRIAGE_UI_USER=UI_USER,
        TRIAGE_UI_PASSWORD=UI_PASSWORD,
        TRIAGE_MAX_UPLOAD_MB="1",
        TRIAGE_BODY_TIMEOUT="2",
        TRIAGE_MAX_CONNECTIONS="40",
    )
    yield s
    s.stop()


def gradio_call(server, api_name: str, data: list, headers: dict) -> str:
    """Gradio's own HTTP API, as curl would use it: POST the call, then read its event stream."""
    started = requests.post(f"{server.url}/gradio_api/call/{api_name}", json={"data": data}, headers=headers, timeout=30)
    assert started.status_code == 200, started.text
    return requests.get(f"{server.url}/gradio_api/call/{api_name}/{started.json()['event_id']}", headers=headers, timeout=120).text


# --- credentials on every route -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/predict"),
        ("GET", "/info"),
        ("POST", "/gradio_api/call/run"),
        ("POST", "/gradio_api/call/compare"),
        ("POST", "/gradio_api/call/batch_report"),
        ("POST", "/gradio_api/run/run"),
        ("POST", "/gradio_api/queue/join"),
        ("GET", "/gradio_api/queue/data?session_hash=x"),
        ("POST", "/gradio_api/upload"),
        ("GET", "/gradio_api/info"),
        ("GET", "/config"),
        ("GET", "/gradio_api/file=/etc/passwd"),
        ("GET", "/gradio_api/heartbeat/x"),
        ("POST", "/gradio_api/reset"),
        ("GET", "/gradio_api/openapi.json"),
    ],
)
def test_with_a_key_nothing_answers_without_credentials(locked, method, path):
    response = requests.request(method, f"{locked.url}{path}", json={"data": ["hi"]}, timeout=30)
    assert response.status_code == 401, (path, response.status_code, response.text[:200])
    wrong = requests.request(method, f"{locked.url}{path}", json={"data": ["hi"]}, headers={"X-API-Key": "wrong"}, timeout=30)
    assert wrong.status_code == 401


@pytest.mark.parametrize("path", ["/health", "/docs", "/openapi.json", "/"])
def test_what_stays_open_with_a_key(locked, path):
    response = requests.get(f"{locked.url}{path}", timeout=30)
    assert response.status_code == 200
    if path == "/":  # Gradio's login page: no components (it does embed the API's description, as /openapi.json is open)
        assert '"auth_required":true' in response.text.replace(" ", "") and '"components":[]' in response.text.replace(" ", "")


def test_gradio_client_needs_credentials_and_takes_the_key_or_a_login(locked):
    with pytest.raises(Exception, match="credentials"):
        Client(f"{locked.url}/", verbose=False)
    with pytest.raises(ValueError, match="Could not login"):  # Gradio answers 400 "Incorrect credentials."
        Client(f"{locked.url}/", verbose=False, auth=(UI_USER, "wrong"))
    expected = approximately(contract.run(example_input()).model_dump(mode="json", exclude={"trace"}))
    for client in (
        Client(f"{locked.url}/", verbose=False, headers={"X-API-Key": KEY}),
        Client(f"{locked.url}/", verbose=False, auth=(UI_USER, UI_PASSWORD)),
        Client(f"{locked.url}/", verbose=False, auth=("anyone", KEY)),
    ):
        assert client.predict(**example_input(), api_name="/run")[-1] == expected


def rows_csv(path: Path, rows: list[dict], least_bytes: int = 0) -> Path:
    """A CSV of `rows`, repeated until it holds `least_bytes` at least."""
    frame = pd.DataFrame(rows)
    one = len(frame.to_csv(index=False, header=False).encode())
    pd.concat([frame] * max(1, least_bytes // one + 1)).to_csv(path, index=False)
    return path


def test_uploads_are_capped(locked, tmp_path):
    big = rows_csv(tmp_path / "big.csv", [example_input()], least_bytes=1_300_000)  # the cap is 1 MB
    with open(big, "rb") as f:
        response = requests.post(f"{locked.url}/gradio_api/upload", files={"files": f}, headers={"X-API-Key": KEY}, timeout=60)
    assert response.status_code == 413, response.text[:200]
    small = rows_csv(tmp_path / "small.csv", [example_input()])
    with open(small, "rb") as f:
        assert requests.post(f"{locked.url}/gradio_api/upload", files={"files": f}, headers={"X-API-Key": KEY}, timeout=60).ok


# --- the batch tab reads only uploads -------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        str(SERVER_FILE),  # a server file
        str(SERVER_FILE.relative_to(model.ROOT)),  # relative to the server's working directory
        "DOTDOT",  # out of the upload folder with ..
        "SYMLINK",  # a link inside the upload folder to a server file
        "http://127.0.0.1:1/openapi.json",  # a URL the server would fetch
    ],
)
def test_the_batch_tab_refuses_files_not_uploaded(locked, path, tmp_path):
    uploads = Path(gradio.utils.get_upload_folder())  # the server's, as both run on this machine
    if path == "DOTDOT":
        path = str(uploads) + "/.." * len(uploads.parts) + str(SERVER_FILE)
    if path == "SYMLINK":
        link = uploads / f"triage-test-{time.time_ns()}" / "link.csv"
        link.parent.mkdir(parents=True)
        link.symlink_to(SERVER_FILE)
        path = str(link)
    file_data = {"path": path, "meta": {"_type": "gradio.FileData"}}
    events = gradio_call(locked, "batch_report", [file_data, False, False, None, *FLAGS, *FLAGS, None], {"X-API-Key": KEY})
    assert "event: error" in events and "Only a CSV file uploaded on this page can be scored" in events
    assert SERVER_FILE.stem not in events and str(model.ROOT) not in events and "report.csv" not in events


def test_the_batch_tab_refuses_a_baseline_not_uploaded(locked):
    server_file = {"path": str(SERVER_FILE), "meta": {"_type": "gradio.FileData"}}
    events = gradio_call(locked, "batch_report", [None, True, False, server_file, *FLAGS, *FLAGS, None], {"X-API-Key": KEY})
    assert "event: error" in events and "Only a CSV file uploaded on this page can be scored" in events


def test_the_batch_tab_scores_an_upload(locked, tmp_path):
    upload = rows_csv(tmp_path / "mine.csv", [labelled_rows(1)[0]["row"]])  # a row of the labelled set, as it is there
    client = Client(f"{locked.url}/", verbose=False, headers={"X-API-Key": KEY})
    headline, *_, summary = client.predict(handle_file(upload), False, False, None, *FLAGS, *FLAGS, api_name="/batch_report")
    assert summary["rows"] == 1 and "**1 row**" in headline


# --- error bodies ------------------------------------------------------------------------------------
ODD_JSON = {str: ['"hi \\ud800"', '"hi \\udfff there"'], float: ["NaN", "Infinity", "-Infinity", "1e400"]}  # lone surrogates; no numbers


def odd_bodies() -> list[tuple[str, str]]:
    """Raw JSON bodies that Python's JSON reader takes but the schemas refuse, each with the field it names: lone
    surrogates in each text field, NaN, infinities and an overflow in each number field, the inputs' and the flags'."""
    found = []
    for schema, where in ((model.Input, None), (model.Flags, "flags")):
        for name, field in schema.model_fields.items():
            kind = contract.base_type(field.annotation)
            for raw in ODD_JSON.get(float if kind is int else kind, []):
                body = {**example_input(), **({where: {name: "@"}} if where else {name: "@"})}
                text = json.dumps(body).replace('"@"', raw)
                if refused(json.loads(text)):
                    found.append((text, name))
    return found


def refused(body: dict) -> bool:
    try:
        model.Input.model_validate({k: v for k, v in body.items() if k != "flags"})
        model.Flags.model_validate(body.get("flags", {}))
    except ValueError:  # pydantic's ValidationError
        return True
    return False


@pytest.mark.parametrize(("raw", "field"), odd_bodies())
def test_odd_bodies_are_422_naming_the_field(locked, raw, field):
    response = requests.post(
        f"{locked.url}/predict", data=raw.encode(), headers={"Content-Type": "application/json", "X-API-Key": KEY}, timeout=30
    )
    assert response.status_code == 422, response.text
    assert field in {str(part) for error in response.json()["detail"] for part in error["loc"]}


def test_error_bodies_do_not_echo_long_inputs(locked):
    long = "x" * 5001
    field = next(name for name in model.Input.model_fields if refused({**example_input(), name: long}))
    response = requests.post(f"{locked.url}/predict", json={**example_input(), field: long}, headers={"X-API-Key": KEY}, timeout=30)
    assert response.status_code == 422 and len(response.text) < 600, len(response.text)
    assert "5001 characters" in response.json()["detail"][0]["input"]


def test_schemathesis_finds_no_server_error(locked):
    """Generated valid and invalid requests for every operation in /openapi.json: 2xx or 4xx, never 5xx."""
    schema = schemathesis.openapi.from_url(f"{locked.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert "/predict" in {op.path for op in operations}
    for operation in operations:
        takes_input = any(len(getattr(operation, part)) for part in ("query", "body", "path_parameters"))
        for mode in GenerationMode if takes_input else [GenerationMode.POSITIVE]:  # no input: nothing to make invalid
            never_5xx(operation, mode, locked.url)


def never_5xx(operation, mode, base_url: str, examples: int = 40) -> None:
    @hypothesis.settings(max_examples=examples, deadline=None, database=None, phases=[hypothesis.Phase.generate], derandomize=True)
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def check(case):
        response = case.call(base_url=base_url, headers={"X-API-Key": KEY}, timeout=60)
        assert response.status_code < 500, (operation.path, mode, case.body, response.status_code, response.text[:300])

    check()


# --- slow and stalled request bodies ----------------------------------------------------------------------
def stalled(url: str, path: str, headers: str, start: str = f'{{"{FIRST}": ') -> socket.socket:
    """A request that promises more body than it sends."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: 1000\r\n\r\n{start}".encode())
    return s


@pytest.mark.parametrize(
    ("path", "headers", "start"),
    [
        ("/predict", f"X-API-Key: {KEY}\r\nContent-Type: application/json\r\n", f'{{"{FIRST}": '),
        (
            "/gradio_api/upload",
            f"X-API-Key: {KEY}\r\nContent-Type: multipart/form-data; boundary=b\r\n",
            f'--b\r\nContent-Disposition: form-data; name="files"; filename="a.csv"\r\n\r\n{FIRST}\n',
        ),
    ],
)
def test_stalled_bodies_time_out_with_408_while_serving_goes_on(locked, path, headers, start):
    sockets = [stalled(locked.url, path, headers, start) for _ in range(10)]
    start = time.time()
    assert requests.post(f"{locked.url}/predict", json=example_input(), headers={"X-API-Key": KEY}, timeout=30).status_code == 200
    answers = [s.recv(200).decode(errors="replace") for s in sockets]
    assert time.time() - start < 10
    assert all(a.startswith("HTTP/1.1 408") for a in answers), answers[:2]
    for s in sockets:
        s.close()


def test_connections_beyond_the_limit_get_503_not_a_queue(locked):
    sockets = [stalled(locked.url, "/predict", f"X-API-Key: {KEY}\r\nContent-Type: application/json\r\n") for _ in range(60)]
    answers = [s.recv(200).decode(errors="replace")[:12] for s in sockets]
    assert "HTTP/1.1 503" in answers and "HTTP/1.1 408" in answers, set(answers)  # bounded, then released
    for s in sockets:
        s.close()
    assert requests.post(f"{locked.url}/predict", json=example_input(), headers={"X-API-Key": KEY}, timeout=30).status_code == 200


# --- a killed worker, SIGTERM under load (a pipeline of 50 ms an input at least: requests are in flight) ------------------
LONG = long_input()


def post(server, body):
    try:
        response = requests.post(f"{server.url}/predict", json=body, timeout=60)
        return response.status_code, response.headers.get("content-type", "")
    except requests.RequestException as error:  # a dropped connection: what must never happen
        return type(error).__name__, ""


def inference_workers(server) -> list[psutil.Process]:
    return [p for p in server.tree() if "spawn_main" in " ".join(p.cmdline())]


def test_a_killed_worker_is_replaced_and_its_requests_get_503(tmp_path):
    server = Server(log=tmp_path / "server.log", **slow_pipeline(tmp_path))
    try:
        (worker,) = inference_workers(server)
        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(post, server, LONG) for _ in range(16)]
            time.sleep(0.3)
            worker.kill()
            answers = [f.result() for f in futures]
        assert {code for code, _ in answers} <= {200, 503}, answers  # every request answered
        assert (503, "application/json") in answers
        health = []
        deadline = time.time() + 120
        while time.time() < deadline and health[-1:] != [200]:
            health.append(requests.get(f"{server.url}/health", timeout=5).status_code)
            time.sleep(0.25)
        assert 503 in health and health[-1] == 200, health  # not ready until the new worker is
        assert server.process.poll() is None and inference_workers(server)[0].pid != worker.pid
        assert post(server, example_input()) == (200, "application/json")
    finally:
        server.stop()


def test_sigterm_drains_requests_in_flight_and_exits_cleanly(tmp_path):
    log = tmp_path / "server.log"
    server = Server(log=log, **slow_pipeline(tmp_path))
    tree = server.tree()
    with ThreadPoolExecutor(32) as pool:
        futures = [pool.submit(post, server, LONG) for _ in range(32)]
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        answers = [f.result() for f in futures]
    assert answers == [(200, "application/json")] * 32
    _, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive and server.process.wait() == 0
    output = log.read_text()
    assert "Traceback" not in output and "leaked" not in output and "Warning" not in output, output[-2000:]


def test_ctrl_c_stops_the_whole_tree_with_no_traceback(tmp_path):
    """A terminal's Ctrl-C sends SIGINT to the whole process group (the workers too): one stop, no traceback."""
    log, port = tmp_path / "server.log", free_port()
    process = subprocess.Popen(
        [sys.executable, "app/main.py", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
        cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,  # noqa: SIM115
    )  # fmt: skip
    try:
        deadline = time.time() + 180
        while not healthy(f"http://127.0.0.1:{port}"):
            assert process.poll() is None and time.time() < deadline, log.read_text()[-2000:]
            time.sleep(0.25)
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=15) == 0
        _, alive = psutil.wait_procs(tree, timeout=5)
        assert not alive, alive
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    output = log.read_text()
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]
    assert output.count("stopping:") == 1, output[-3000:]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_signal_to_the_whole_process_group_drains_like_one_to_the_main_process(tmp_path, signum):
    """systemd and many supervisors stop a service with SIGTERM to its whole process group (`kill -TERM -PGID`), a
    terminal's Ctrl-C sends SIGINT to it: every process of the server gets it at once. LitServe's manager and the
    inference workers died of it, the requests in flight with them (8 dropped, exit status 1). Now the main process
    drains as for a SIGTERM of its own: every request in flight answered, exit status 0, no process left."""
    log, port = tmp_path / "server.log", free_port()
    scratch = {"TRIAGE_DATABASE_URL": f"sqlite:///{tmp_path}/q.sqlite3", "TRIAGE_EDGE_CASES": str(tmp_path / "cases.csv")}
    process = subprocess.Popen(
        [sys.executable, "app/main.py", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env={**os.environ, **slow_pipeline(tmp_path, 0.1), **scratch}, stdout=open(log, "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT, start_new_session=True,  # its own process group, as a service's
    )  # fmt: skip
    server = SimpleNamespace(url=f"http://127.0.0.1:{port}")
    try:
        deadline = time.time() + 180
        while not healthy(server.url):
            assert process.poll() is None and time.time() < deadline, log.read_text()[-2000:]
            time.sleep(0.25)
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        assert len(tree) >= 4, tree  # the main process, LitServe's manager, the HTTP process, an inference worker
        with ThreadPoolExecutor(24) as pool:
            futures = [pool.submit(post, server, LONG) for _ in range(24)]
            time.sleep(0.5)
            os.killpg(process.pid, signum)
            answers = [f.result() for f in futures]
        assert answers == [(200, "application/json")] * 24, answers
        assert process.wait(timeout=60) == 0
        _, alive = psutil.wait_procs(tree, timeout=15)
        assert not alive, [p.cmdline()[:3] for p in alive]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    output = log.read_text()
    assert "Traceback" not in output and "leaked" not in output and "died" not in output, output[-3000:]
    assert output.count("stopping:") == 1, output[-3000:]


def healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def test_the_kubernetes_manifest_covers_the_drain_and_the_scrape():
    manifest = next(d for d in yaml.safe_load_all((model.ROOT / "deploy" / "kubernetes.yaml").read_text()) if d["kind"] == "Deployment")
    pod = manifest["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["containers"][0].get("env", [])}
    assert "secretKeyRef" in env["TRIAGE_DATABASE_URL"]  # the replicas' shared review queue: its URL (a password) in a Secret
    graceful = float(env.get("TRIAGE_GRACEFUL_TIMEOUT", SETTINGS["graceful_timeout"]))
    assert pod["terminationGracePeriodSeconds"] >= graceful + 5  # the drain, then the workers' own stop
    assert json.dumps(pod).count("/health") >= 1
    scrape = manifest["spec"]["template"]["metadata"]["annotations"]
    assert scrape["prometheus.io/scrape"] == "true" and scrape["prometheus.io/path"] == "/metrics"
    assert int(scrape["prometheus.io/port"]) == pod["containers"][0]["ports"][0]["containerPort"]
