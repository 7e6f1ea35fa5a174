"""The server as a failing machine sees it: every process of it killed at each moment (the inference worker idle,
busy or stuck, the HTTP process, LitServe's manager, the main process itself), /health under load, metrics on a
full disk, artifacts that match their manifest yet cannot be loaded. Real processes, real signals, a real tmpfs.

Machinery: the inputs come from the pipeline's contract (tests/conftest.py's helpers), and the servers' pipeline takes
50 ms an input at least (conftest.slow_pipeline), so that there is load whatever the pipeline's own speed."""

import json
import os
import pickle
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
import yaml
import zmq
from conftest import ROOT, Server, example_input, free_port, invalid_input, long_input, slow_pipeline

from app import api, observe, ui
from app.health import HEALTH_FRESH, Watch
from app.litserve_internals import RequestQueue
from building import builder, files

TIMEOUT = 4  # TRIAGE_TIMEOUT of the servers here: a request's deadline is TIMEOUT + api.RUN_SECONDS
DEADLINE = TIMEOUT + api.RUN_SECONDS
LONG = long_input()
DEPLOYMENT = next(d for d in yaml.safe_load_all((ROOT / "deploy" / "kubernetes.yaml").read_text()) if d["kind"] == "Deployment")
PROBE_TIMEOUT = DEPLOYMENT["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["timeoutSeconds"]  # /health within it


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    probes, folder = free_port(), tmp_path_factory.mktemp("heal")
    s = Server(log=folder / "server.log", TRIAGE_TIMEOUT=str(TIMEOUT), TRIAGE_PROBE_PORT=str(probes), **slow_pipeline(folder))
    s.probes = f"http://127.0.0.1:{probes}"
    yield s
    s.stop()


def post(server, body=None, timeout: float = DEADLINE + 5):
    """One /predict: (status, content type), or the name of the client's error (a hang or a dropped connection)."""
    try:
        response = requests.post(f"{server.url}/predict", json=body or example_input(), timeout=timeout)
        return response.status_code, response.headers.get("content-type", "")
    except requests.RequestException as error:
        return type(error).__name__, ""


def health(server, url: str | None = None) -> int | str:
    try:
        return requests.get(f"{url or server.url}/health", timeout=PROBE_TIMEOUT).status_code
    except requests.RequestException as error:
        return type(error).__name__


def wait_for_health(server, status: int, within: float) -> list:
    seen, deadline = [], time.time() + within
    while time.time() < deadline and seen[-1:] != [status]:
        seen.append(health(server))
        time.sleep(0.25)
    assert seen[-1:] == [status], seen
    return seen


def kill_worker(server) -> psutil.Process:
    """SIGKILL the inference worker; /health says 503 at once (its end of the queue closed), then 200 once replaced."""
    worker = role(server, "worker")
    worker.kill()
    wait_for_health(server, 503, within=2)
    wait_for_health(server, 200, within=60)
    return worker


def role(server, name: str) -> psutil.Process:
    """One process of the server by its role: the inference worker, the HTTP process or LitServe's manager."""
    main = psutil.Process(server.process.pid)
    children = main.children()
    if name == "worker":
        (found,) = [p for p in children if "spawn_main" in " ".join(p.cmdline())]
        return found
    forked = sorted((p for p in children if p.cmdline() == main.cmdline()), key=lambda p: p.create_time())  # same command line
    manager, http = forked  # LitServe forks its manager first, the HTTP process once the workers are ready
    return http if name == "http" else manager


@pytest.mark.shapeless
# --- the inference worker -------------------------------------------------------------------------------
def test_a_worker_that_connects_while_the_queue_binds_is_counted(tmp_path, monkeypatch):
    """The workers retry their connect (every 100 ms) long before the HTTP process binds the request queue. One accepted
    between the bind and the start of the monitor that counts them was never counted: /health said 503 for good (one
    start in about a hundred, under load). Here the monitor's start is slowed, as a loaded machine deschedules the HTTP
    process, while a worker's connect is pending."""
    address = f"ipc://{tmp_path}/requests"
    requests_queue = RequestQueue(address)
    worker = zmq.Context.instance().socket(zmq.PULL)
    worker.setsockopt(zmq.LINGER, 0)
    worker.connect(address)  # retrying: nothing is bound yet
    monitor = zmq.Socket.get_monitor_socket

    def descheduled(socket, *args, **kwargs):
        time.sleep(0.5)
        return monitor(socket, *args, **kwargs)

    monkeypatch.setattr(zmq.Socket, "get_monitor_socket", descheduled)
    requests_queue.open()
    deadline = time.time() + 5
    while requests_queue.connected() < 1 and time.time() < deadline:
        time.sleep(0.05)
    try:
        assert requests_queue.connected() == 1
        requests_queue.put({"request": 1})
        assert worker.poll(5000) and pickle.loads(worker.recv()) == {"request": 1}
    finally:
        worker.close()
        requests_queue._socket.close()


@pytest.mark.shapeless
def test_an_idle_worker_sleeps(server):
    """LitServe's batching loop asks the request queue every millisecond, work or not: an idle worker took 15% of a
    core and woke 5,000 times in 5 s. Idle, it now waits on the queue; what is left is the canary input each second
    (about 550 wakeups of all its threads in 5 s here). Wakeups are counted, not CPU seconds: a busy machine makes
    each canary cost more CPU, not more wakeups."""
    worker = role(server, "worker")
    time.sleep(1)
    before = wakeups(worker)
    time.sleep(5)
    assert wakeups(worker) - before < 2500  # fewer than one every 2 ms


def wakeups(process: psutil.Process) -> int:
    """Context switches of every thread of `process` (Linux's /proc/PID/task/*/status)."""
    counts = [
        line.split()[1]
        for task in Path(f"/proc/{process.pid}/task").iterdir()
        for line in (task / "status").read_text().splitlines()
        if "ctxt_switches" in line
    ]
    return sum(map(int, counts))


@pytest.mark.shapeless
def test_a_worker_killed_while_idle_is_replaced_and_later_requests_are_answered(server):
    """Killed while it waits on its queue (an idle worker's whole life): with LitServe's multiprocessing queue the
    killed reader kept the queue's lock and every later request hung while /health said ok."""
    assert post(server) == (200, "application/json")
    time.sleep(1)  # idle
    worker = kill_worker(server)
    assert role(server, "worker").pid != worker.pid
    assert [post(server) for _ in range(5)] == [(200, "application/json")] * 5


@pytest.mark.shapeless
def test_a_worker_killed_at_random_moments_under_load_never_leaves_a_request_hanging(server):
    rng = random.Random(15)
    stop = time.time() + 1e9

    def client(_):
        answers = []
        while time.time() < stop:
            answers.append(post(server, LONG if rng.random() < 0.3 else None))
        return answers

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client, i) for i in range(8)]
        for _ in range(3):
            time.sleep(rng.uniform(0.2, 1.5))
            kill_worker(server)
        stop = time.time()
        answers = [a for f in futures for a in f.result()]
    assert {code for code, _ in answers} <= {200, 503}, {code for code, _ in answers}  # never a hang, never a dropped connection
    assert {kind for _, kind in answers} == {"application/json"}
    assert [post(server) for _ in range(5)] == [(200, "application/json")] * 5


@pytest.mark.shapeless
def test_a_stuck_worker_makes_health_503_and_requests_504_then_recovers(server):
    """SIGSTOP: alive to every process check, answering nothing. /health must stop saying ok; requests end at their deadline."""
    worker = role(server, "worker")
    worker.suspend()
    try:
        seen = wait_for_health(server, 503, within=HEALTH_FRESH + 3)
        assert 200 in seen or len(seen) == 1
        assert health(server, server.probes) == 503
        assert requests.get(f"{server.probes}/live", timeout=PROBE_TIMEOUT).status_code == 200  # stuck worker: not a reason to restart
        start = time.time()
        code, kind = post(server)
        assert (code, kind) == (504, "application/json") and time.time() - start < DEADLINE + 3
    finally:
        worker.resume()
    wait_for_health(server, 200, within=30)
    assert post(server) == (200, "application/json")


@pytest.mark.shapeless
def test_health_gives_a_busy_worker_the_time_a_batch_may_take():
    """Idle, /health wants an answer (the canary's) within HEALTH_FRESH; with clients' requests in flight, within the
    RUN_SECONDS a request's deadline allows its batch: 32 long inputs took 2.6 s on two quiet cores, more under load,
    and /health said 503 between two batches of a busy server."""
    watch = Watch(server=None, canary=None, busy_fresh=api.RUN_SECONDS)
    watch.workers_ready, watch.beat = True, time.monotonic() + 60  # ready, and the event loop turning
    watch.last_answer = time.monotonic() - (HEALTH_FRESH + 1)
    assert not watch.ok  # idle: the canary should have come back by now
    watch.holding[object()] = False  # a client's request in flight
    assert watch.ok
    watch.last_answer = time.monotonic() - (api.RUN_SECONDS + 1)
    assert not watch.ok  # longer than any batch may take: stuck


@pytest.mark.shapeless
def test_health_answers_within_the_probe_timeout_under_load(server):
    """64 clients sending long inputs: /health is answered from memory, on the main port and on the probe port
    (TRIAGE_PROBE_PORT, a thread of its own: what deploy/kubernetes.yaml probes)."""
    with ThreadPoolExecutor(64) as pool:
        futures = [pool.submit(lambda: [post(server, LONG) for _ in range(4)]) for _ in range(64)]
        time.sleep(1)
        probes = []
        for _ in range(8):
            probes.append((health(server), health(server, server.probes)))  # a timeout here: the probe would fail
            time.sleep(0.3)
        answers = [a for f in futures for a in f.result()]
    assert probes == [(200, 200)] * 8, probes
    assert {code for code, _ in answers} <= {200, 504}  # answered, some past TRIAGE_TIMEOUT (4 s here) in the queue


# --- what cannot be replaced: the server exits, its supervisor restarts it -----------------------------------
def port_is_free(port: int) -> bool:
    """Nothing listens there: a new server (uvicorn sets SO_REUSEADDR, as here) can bind it."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.shapeless
@pytest.mark.parametrize("victim", ["http", "manager", "main"])
def test_a_dead_helper_or_main_process_ends_the_whole_server_and_frees_the_port(tmp_path, victim):
    """The HTTP process (a SIGBUS once left a zombie holding the port) or LitServe's manager dies: the server exits
    with status 1 at once. The main process is killed outright: its children end too. Then a restart on the same
    port is healthy."""
    log = tmp_path / "server.log"
    server = Server(log=log)
    tree = server.tree()
    target = psutil.Process(server.process.pid) if victim == "main" else role(server, victim)
    target.kill()
    if victim != "main":
        assert server.process.wait(timeout=15) == 1
        assert "died (killed by SIGKILL): stopping the whole server with exit status 1" in log.read_text()
    _, alive = psutil.wait_procs(tree, timeout=15)
    assert not alive, [p.cmdline()[:3] for p in alive]
    assert port_is_free(server.port)
    again = Server(log=tmp_path / "again.log", port=server.port)
    try:
        assert post(again) == (200, "application/json")
    finally:
        again.stop()


# --- metrics on a full disk ------------------------------------------------------------------------------
@pytest.fixture
def small_tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (a container without the capability)")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> None:
    """Take every free byte of the file system under `folder`."""
    with open(folder / "filler", "wb", buffering=0) as f:
        for size in (65536, 4096, 1):
            try:
                while f.write(b"\0" * size):
                    pass
            except OSError:
                pass


@pytest.mark.shapeless
def test_metrics_on_a_full_disk_never_take_the_server_down(tmp_path, small_tmpfs):
    log = tmp_path / "server.log"
    server = Server(log=log, PROMETHEUS_MULTIPROC_DIR=str(small_tmpfs))
    try:
        http = role(server, "http")
        fill(small_tmpfs)
        # new label values (routes, statuses) make new entries in the metric files, beyond the pages written so far
        for _ in range(3):
            assert post(server) == (200, "application/json")
            assert requests.post(f"{server.url}/predict", json=invalid_input()[0], timeout=30).status_code == 422
            for path in ("/info", "/cases", "/docs", "/openapi.json", "/health", "/live", "/metrics", "/nothing-here"):
                assert requests.get(f"{server.url}{path}", timeout=30).status_code < 500, path
        kill_worker(server)  # a new worker: new metric files, on the full disk
        assert post(server) == (200, "application/json")
        assert http.is_running() and http.status() != psutil.STATUS_ZOMBIE and server.process.poll() is None
        metrics = requests.get(f"{server.url}/metrics", timeout=30).text
        assert "triage_metrics_write_failures_total" in metrics and "triage_requests_total" in metrics
        said = log.read_text().count("metrics: cannot write to")  # the new worker's files did not fit
        assert 1 <= said <= 3, said  # once per process at most
    finally:
        server.stop()


@pytest.mark.shapeless
def test_a_metric_file_that_does_not_fit_is_kept_in_memory_and_counted(small_tmpfs):
    fill(small_tmpfs)
    before = observe.write_failures
    values = observe.AllocatedMmapedDict(str(small_tmpfs / "counter_2.db"))
    for i in range(2000):
        values.write_value(f"key {i}" * 3, float(i), 0.0)
    assert values.read_value("key 1999key 1999key 1999")[0] == 1999.0
    assert observe.write_failures == before + 1


@pytest.mark.shapeless
def test_metric_files_take_their_disk_space_before_use(tmp_path):
    """The library's files are sparse (truncate): on a full disk, writing to them through mmap is a SIGBUS."""
    path = tmp_path / "counter_1.db"
    values = observe.AllocatedMmapedDict(str(path))
    for i in range(2000):  # past 64 KiB: the file grows
        values.write_value(f"key {i}" * 3, float(i), 0.0)
    assert os.stat(path).st_blocks * 512 >= os.stat(path).st_size > 65536  # every byte allocated: no hole
    values.close()


# --- artifacts that match their manifest yet cannot be loaded -------------------------------------------------
def garbled(folder: Path, names: list[str]) -> None:
    """Replace artifacts with bytes no reader takes and record their sizes and hashes in the manifest, as an edit would."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in names:
        (folder / name).write_bytes(b"not an artifact\n" * 64)
        manifest["artifacts"][name] = {"bytes": (folder / name).stat().st_size, "sha256": files.sha256_file(folder / name)}
    (folder / "manifest.json").write_text(json.dumps(manifest))


LOAD_EACH = """
import sys
from pathlib import Path
from building import builder

for folder in sys.argv[1:]:  # each a copy of the artifacts with files garbled
    builder.ARTIFACTS_DIR = Path(folder)
    print("served" if builder._load_checked() is not None else "refused", flush=True)
"""


def test_artifacts_that_cannot_be_loaded_are_never_served(tmp_path):
    """The recipe's files garbled, their manifest updated: the checksums pass, recipe.load fails, and the build
    machinery says so and would rebuild, never serve them; the same for the encoder's files, where there is an encoder.
    The worked example's own checks that its artifacts fit together are tests/example/test_triage_artifact_checks.py's."""
    builder.ready()  # built
    names = list(json.loads((builder.ARTIFACTS_DIR / "manifest.json").read_text())["artifacts"])
    kinds = {"recipe": [n for n in names if n not in builder.ENCODER_FILES], "encoder": [n for n in names if n in builder.ENCODER_FILES]}
    folders = []
    for kind, garble in kinds.items():
        if garble:
            folders.append(tmp_path / kind)
            shutil.copytree(builder.ARTIFACTS_DIR, folders[-1], ignore=shutil.ignore_patterns(".*"))
            garbled(folders[-1], garble)
    done = subprocess.run([sys.executable, "-c", LOAD_EACH, *map(str, folders)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["refused"] * len(folders), (kinds, done.stdout, done.stderr[-3000:])
    said = done.stderr.count("they cannot be loaded"), done.stderr.count("rebuilding them")
    assert said == (len(folders), len(folders)), done.stderr[-3000:]


# --- small things -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["Look here: ![x](http://127.0.0.1:1/t.png) <b>bold</b> **b** http://127.0.0.1:1/x", "a `b` ``c`` d"])
def test_a_flag_confirmation_shows_the_input_as_text_never_as_markup(text):
    """The confirmation is Markdown: the input inside it is a code span, so nothing in it becomes an image, markup or a link
    (backslash escapes were not enough: an autolinker took the URL with the backslashes in it)."""
    import markdown_it

    html = markdown_it.MarkdownIt("commonmark").render(ui.literal(text))  # the browser's rendering: tests/test_browser.py
    assert "<img" not in html and "<b>" not in html and "<strong>" not in html and "<a " not in html, html
    code = re.fullmatch(r"<p><code>(.*)</code></p>\n", html, flags=re.DOTALL)
    assert code and code.group(1) == text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;"), html


@pytest.mark.shapeless
def test_the_kubernetes_probes_ask_the_probe_port_with_timeouts():
    container = DEPLOYMENT["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    port = int(env["TRIAGE_PROBE_PORT"])
    assert port in [p["containerPort"] for p in container["ports"]]
    for probe, path in (("startupProbe", "/live"), ("readinessProbe", "/health"), ("livenessProbe", "/live")):
        assert container[probe]["httpGet"] == {"path": path, "port": port}, probe
    assert container["readinessProbe"]["timeoutSeconds"] >= 2 and container["livenessProbe"]["timeoutSeconds"] >= 2
