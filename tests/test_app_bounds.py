"""The app's bounds against a real server: credentials in any Unicode (never a 500), what a UI password alone protects,
the Batch tab's row cap and turns, a SIGTERM mid-batch leaving no partial file, and no server path in any error a
client sees (a broken or missing version on the Compare tab, its gate report, the suite on both, a bad batch file).

Machinery: every input and flag comes from the pipeline's contract (tests/conftest.py's helpers)."""

import json
import os
import shutil
import signal
import tempfile
import threading
import time

import gradio as gr
import psutil
import pytest
import requests
from conftest import ROOT, Server, example_input, inputs, slow_pipeline, write_rows
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import model
from app import guards, render, uploads
from building import builder

KEY, USER, PASSWORD, REVIEW_KEY = "clé-ключ-🔑", "Jürgen-ユーザー", "пароль-密码", "rëview-ключ"
UI_ONLY = "open-sesame"  # the login-only server's password (in ASCII: its tests are of other things)
FLAGS = list(model.Flags().model_dump(mode="json").values())
BROKEN, GARBLED, MISSING = "20261207-010203-abcdef", "20261207-010203-abcde0", "20261207-010203-0bcdef"
SERVER_PLACES = [str(ROOT), str(model.ROOT), tempfile.gettempdir(), "/work", "/tmp"]


def no_server_path(said: str) -> str:
    assert not [p for p in SERVER_PLACES if p in said], said
    return said


# --- credentials in any Unicode -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def unicode_server(tmp_path_factory):
    """A server whose API key, UI user and password and reviewer key are all outside ASCII."""
    s = Server(
        log=tmp_path_factory.mktemp("unicode") / "server.log",
        LIT_SERVER_API_KEY=KEY,
        TRIAGE_UI_USER=USER,
        TRIAGE_UI_PASSWORD=PASSWORD,
        TRIAGE_REVIEW_KEY=REVIEW_KEY,
    )
    yield s
    s.stop()


def login(server, user: str, password: str) -> requests.Response:
    return requests.post(f"{server.url}/login", data={"username": user, "password": password}, timeout=30)


def test_a_login_in_any_unicode_lets_the_right_one_in_and_never_gives_500(unicode_server):
    assert login(unicode_server, USER, PASSWORD).json() == {"success": True}
    assert login(unicode_server, "anyone", KEY).json() == {"success": True}  # any name, the API key as password
    for user, password in [(USER, "пароль-неверный"), ("Jürgen", PASSWORD), ("ユーザー", "ü"), (USER, PASSWORD + "x")]:
        wrong = login(unicode_server, user, password)
        assert wrong.status_code in (400, 401), (user, password, wrong.status_code, wrong.text[:200])
        assert "Traceback" not in wrong.text


def test_an_api_key_in_any_unicode_is_compared_as_utf8_bytes(unicode_server):
    right, wrong = {"X-API-Key": KEY.encode()}, {"X-API-Key": "clé-ключ-🔒".encode()}
    for method, path in [("POST", "/predict"), ("GET", "/info"), ("GET", "/cases"), ("GET", "/gradio_api/info")]:
        body = example_input() if path == "/predict" else None
        assert requests.request(method, f"{unicode_server.url}{path}", json=body, headers=right, timeout=60).status_code == 200, path
        assert requests.request(method, f"{unicode_server.url}{path}", json=body, headers=wrong, timeout=60).status_code == 401, path
        latin = {"X-API-Key": "clé".encode("latin-1")}  # bytes that are no UTF-8 at all
        assert requests.request(method, f"{unicode_server.url}{path}", json=body, headers=latin, timeout=60).status_code == 401, path


def test_gradio_client_takes_a_key_outside_ascii_as_its_utf8_bytes(unicode_server):
    client = Client(f"{unicode_server.url}/", verbose=False, headers={"X-API-Key": KEY.encode()})
    assert client.predict(**example_input(), api_name="/run")


def test_a_reviewer_key_in_any_unicode_gives_401_or_passes_never_500(unicode_server):
    decision = {"ids": ["no-such-case"], "accept": False}  # past the key: whatever the queue says of an unknown case
    url, key = f"{unicode_server.url}/cases/review", {"X-API-Key": KEY.encode()}
    right = requests.post(url, json=decision, headers=key | {"X-Review-Key": REVIEW_KEY.encode()}, timeout=60)
    assert right.status_code not in (401, 403) and right.status_code < 500, right.text[:200]
    for given in ["rëview-ключ!", "ü", "plain"]:
        answer = requests.post(url, json=decision, headers=key | {"X-Review-Key": given.encode()}, timeout=60)
        assert answer.status_code == 401, (given, answer.status_code, answer.text[:200])


def test_same_secret_takes_any_unicode():
    assert guards.same_secret(PASSWORD, PASSWORD) and guards.same_secret(PASSWORD.encode(), PASSWORD)
    assert not guards.same_secret("пароль", PASSWORD) and not guards.same_secret(None, PASSWORD)
    assert not guards.same_secret(b"\xff\xfe", PASSWORD)


# --- a UI password alone: the app behind the login, the API as open as without credentials --------------------------
@pytest.fixture(scope="module")
def login_only(tmp_path_factory):
    """A server with a UI password and no API key, a 5-row batch cap, and a versions folder holding a version with a
    missing file and one with a garbled file."""
    folder = tmp_path_factory.mktemp("login-only")
    versions = folder / "versions"
    for name, damage in [(BROKEN, "missing"), (GARBLED, "garbled")]:
        made = versions / name
        made.mkdir(parents=True)
        for source in sorted(builder.ARTIFACTS_DIR.iterdir()):
            if source.is_file():
                os.link(source, made / source.name)  # the artifacts as a version, without copying the encoder
        victim = made / sorted(json.loads((made / "manifest.json").read_text())["artifacts"])[0]
        victim.unlink()
        if damage == "garbled":
            victim.write_bytes(b"not what the manifest says")
    s = Server(log=folder / "server.log", TRIAGE_UI_PASSWORD=UI_ONLY, TRIAGE_BATCH_MAX_ROWS="5", TRIAGE_VERSIONS_DIR=str(versions))
    yield s
    s.stop()


def test_a_ui_password_alone_leaves_the_api_open(login_only):
    assert requests.post(f"{login_only.url}/predict", json=example_input(), timeout=60).status_code == 200
    assert requests.get(f"{login_only.url}/info", timeout=30).status_code == 200
    assert requests.get(f"{login_only.url}/cases", timeout=30).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/gradio_api/call/run"),
        ("POST", "/gradio_api/call/batch_report"),
        ("POST", "/gradio_api/queue/join"),
        ("POST", "/gradio_api/upload"),
        ("GET", "/gradio_api/info"),
        ("GET", "/gradio_api/file=/etc/passwd"),
    ],
)
def test_a_ui_password_alone_puts_every_route_of_the_app_behind_the_login(login_only, method, path):
    response = requests.request(method, f"{login_only.url}{path}", json={"data": ["hi"]}, timeout=30)
    assert response.status_code == 401, (path, response.status_code, response.text[:200])


@pytest.fixture(scope="module")
def logged_in(login_only):
    return Client(f"{login_only.url}/", verbose=False, auth=("triage", UI_ONLY))


def test_the_row_cap_is_checked_before_scoring(logged_in, tmp_path):
    fields = list(model.Input.model_fields)
    five = write_rows(tmp_path / "five.csv", inputs(5))
    headline, *_, summary = logged_in.predict(handle_file(five), False, False, None, *FLAGS, *FLAGS, api_name="/batch_report")
    assert summary["rows"] == 5, headline
    huge = tmp_path / "huge.csv"  # a million rows of empty cells: before the cap, minutes of scoring
    huge.write_text(",".join(fields) + "\n" + ("," * (len(fields) - 1) + "\n") * 1_000_000)
    for path in (write_rows(tmp_path / "six.csv", inputs(6)), huge):
        started = time.perf_counter()
        with pytest.raises(AppError) as refused:
            logged_in.submit(handle_file(path), False, False, None, *FLAGS, *FLAGS, api_name="/batch_report").result(timeout=120)
        assert "more than 5 rows" in str(refused.value) and "TRIAGE_BATCH_MAX_ROWS" in str(refused.value)
        assert time.perf_counter() - started < 60
        no_server_path(str(refused.value))


def test_the_byte_cap_is_checked_in_the_handler_too(tmp_path):
    path = write_rows(tmp_path / "two.csv", inputs(2))
    with pytest.raises(Exception, match=r"larger than 0 MB.*TRIAGE_MAX_UPLOAD_MB"):
        uploads.within_limits(path, rows=10, mb=0)
    uploads.within_limits(path, rows=2, mb=1)


# --- no server path in any error ------------------------------------------------------------------------------------
def refusal_of(client, api_name: str, **named) -> str:
    with pytest.raises(AppError) as refused:
        client.submit(api_name=api_name, **named).result(timeout=180)
    return no_server_path(str(refused.value))


@pytest.mark.parametrize("version", [BROKEN, GARBLED, MISSING])
def test_compare_on_a_broken_or_missing_version_names_it_and_no_server_path(logged_in, version):
    said = refusal_of(logged_in, "/compare", **example_input(), b_version=version)
    assert version in said
    if version == MISSING:
        assert "no version" in said


@pytest.mark.parametrize("version", [BROKEN, MISSING, "../../etc"])
def test_the_edge_cases_tabs_version_errors_name_no_server_path(logged_in, version):
    assert version in refusal_of(logged_in, "/gate_report", version=version)
    assert version in refusal_of(logged_in, "/edge_cases_on_both", verdict="all", source="all", version=version)


def test_a_bad_batch_file_is_named_without_its_server_path(logged_in, tmp_path):
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"a,b\n\x00\x01\x02\n")
    said = refusal_of(logged_in, "/batch_report", file=handle_file(binary), use_eval=False, compare=False)
    assert "binary.csv" in said


def test_public_cuts_every_server_folder_out():
    from building import versions

    said = render.public(f"{versions.versions_dir()}/{BROKEN}/x.npz and {model.ROOT}/data/a.csv, /srv/deep/file.csv, http://h:1/a/b")
    assert said == f"{BROKEN}/x.npz and data/a.csv, file.csv, http://h:1/a/b"


# --- batches at once, and a SIGTERM mid-batch ------------------------------------------------------------------------
def test_batches_beyond_the_turns_are_refused_and_a_sigterm_leaves_no_partial_report(tmp_path):
    """One batch scored at a time and none waiting: a second is refused at once; then a SIGTERM while the first is
    being scored removes its partial report file with the server process (TMPDIR: where the report folders are)."""
    temporary = tmp_path / "server-tmp"
    temporary.mkdir()
    server = Server(
        log=tmp_path / "server.log",
        TMPDIR=str(temporary),
        TRIAGE_BATCH_CONCURRENCY="1",
        TRIAGE_BATCH_WAITING="0",
        TRIAGE_GRACEFUL_TIMEOUT="3",
        **slow_pipeline(tmp_path, seconds=0.1),
    )
    try:
        tree = server.tree()
        client = Client(f"{server.url}/", verbose=False)
        upload = handle_file(write_rows(tmp_path / "slow.csv", inputs(400)))  # 40 s at least
        first = client.submit(upload, False, False, None, *FLAGS, *FLAGS, api_name="/batch_report")
        reports = temporary / "triage-reports"
        deadline = time.time() + 60
        while not list(reports.glob("*/*.partial")):
            assert time.time() < deadline and not first.done(), "the first batch never started writing"
            time.sleep(0.2)
        started = time.perf_counter()
        with pytest.raises(AppError, match="TRIAGE_BATCH_CONCURRENCY"):
            client.submit(upload, False, False, None, *FLAGS, *FLAGS, api_name="/batch_report").result(timeout=30)
        assert time.perf_counter() - started < 20 and not first.done()
        server.process.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(tree, timeout=30)
        assert not alive
        assert not list(reports.rglob("*.partial")) and not list(reports.iterdir()), list(reports.rglob("*"))
    finally:
        if server.process.poll() is None:
            server.stop()
        shutil.rmtree(temporary, ignore_errors=True)


def test_turns_let_some_run_some_wait_and_refuse_the_rest():
    turns, waited, order = uploads.Turns(running=1, waiting=1), threading.Event(), []

    def second():
        with turns.turn(on_wait=waited.set):
            order.append("second")

    with turns.turn():
        later = threading.Thread(target=second)
        later.start()
        assert waited.wait(10) and not order  # waiting for its turn, not run
        with pytest.raises(gr.Error, match="TRIAGE_BATCH_WAITING"), turns.turn():
            pass
    later.join(10)
    assert order == ["second"]
    with turns.turn():  # every turn given back
        pass


def test_report_folders_of_a_process_that_is_gone_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = psutil.Popen(["true"])
    gone.wait()
    left = tmp_path / "triage-reports" / f"{gone.pid}-abc"
    left.mkdir(parents=True)
    (left / "x-report.csv.partial").write_text("half")
    mine = uploads.report_dir()
    assert mine.exists() and not left.exists() and mine.name.startswith(f"{os.getpid()}-")
