"""The HTTP API for the application team: a LitServe wrapper of `model.run_batch` (debug off).

POST /predict takes a ticket (with optional flags) and returns the `Triage` answer. Concurrent requests
are batched into one `run_batch` call; each keeps its own flags. The request and response schemas are
the pipeline's own pydantic models, so /docs and /openapi.json show the real fields.
Settings (environment variables):

    TRIAGE_MAX_BATCH_SIZE   largest batch of requests per run_batch call   (default 32)
    TRIAGE_BATCH_TIMEOUT    seconds to wait for a batch to fill            (default 0.005)
    TRIAGE_TIMEOUT          seconds a request may wait in the queue (504)  (default 30)
    TRIAGE_WORKERS          inference worker processes                     (default 1)
    TRIAGE_MAX_BODY_BYTES   largest request body to /predict (413)         (default 65536)
    TRIAGE_BODY_TIMEOUT     seconds a request body may stall, or take in all on /predict (408)  (default 10)
    TRIAGE_MAX_CONNECTIONS  open connections and requests at once; beyond, 503                (default 512)
    TRIAGE_GRACEFUL_TIMEOUT seconds a SIGTERM waits for requests in flight                    (default 10)
    TRIAGE_PROBE_PORT       a second port with /health and /live only, answered by a thread   (default: none)
    LIT_SERVER_API_KEY      when set, /predict and /info need the header X-API-Key (401); /health stays open

Faults: a killed inference worker is replaced (restart_workers), at any moment, idle or busy; the requests
it held get a JSON 503 and /health says 503 until the new one answers. Every /predict has a deadline
(TRIAGE_TIMEOUT plus the time a batch may take): past it, a 504, never a hang. /health is 200 only while
requests go through end to end (answers, or a canary ticket, came back within the last seconds). The HTTP
process and LitServe's manager cannot be replaced: if either dies, the whole server exits with status 1
for its supervisor to restart it. Every child ends when the main process dies, however it dies. SIGTERM
drains: the server stops accepting, answers what is in flight, then stops the workers.
"""

import asyncio
import atexit
import json
import logging
import math
import multiprocessing
import os
import pickle
import queue
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from contextlib import asynccontextmanager
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import litserve as ls
import zmq
import zmq.utils.monitor
from fastapi import Depends, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from litserve.utils import LitAPIStatus, ResponseBufferItem
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

import builder
import edge_cases
import model
from app import observe

log = logging.getLogger("triage")
SETTINGS = {
    "max_batch_size": int(os.environ.get("TRIAGE_MAX_BATCH_SIZE", "32")),
    "batch_timeout": float(os.environ.get("TRIAGE_BATCH_TIMEOUT", "0.005")),
    "timeout": float(os.environ.get("TRIAGE_TIMEOUT", "30")),
    "workers": int(os.environ.get("TRIAGE_WORKERS", "1")),
    "max_body_bytes": int(os.environ.get("TRIAGE_MAX_BODY_BYTES", str(64 * 1024))),
    "body_timeout": float(os.environ.get("TRIAGE_BODY_TIMEOUT", "10")),
    "max_connections": int(os.environ.get("TRIAGE_MAX_CONNECTIONS", "512")),
    "graceful_timeout": float(os.environ.get("TRIAGE_GRACEFUL_TIMEOUT", "10")),
}
API_PATHS = ("/predict", "/cases")
RUN_SECONDS = 10  # beyond its time in the queue (TRIAGE_TIMEOUT), the most a request's batch may take before its 504
HEALTH_FRESH = 3  # seconds: /health is 200 while an answer (a request's, or the canary's) came back this recently


def watch_parent(parent: int, interval: float = 0.5) -> None:
    """End this process once `parent` is gone (the main process killed outright, even with SIGKILL): no orphan keeps
    the port, a worker or the queues after it. A thread rather than a parent-death signal, which Linux sends when the
    *thread* that started the child ends (LitServe restarts workers from a thread)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


class TriageRequest(model.Ticket):
    """A ticket to triage, and optionally the feature flags to run the pipeline with."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{**model.Ticket.model_config["json_schema_extra"]["examples"][0], "flags": {"top_k": 2}}]},
    )
    flags: model.Flags = Field(default_factory=model.Flags, description="Feature flags; every one is optional.")


class TriageAPI(ls.LitAPI):
    def setup(self, device):
        # Stopped by the server (SIGTERM): exit like a program, so that what this process holds (tqdm's lock, a
        # named semaphore) is released; killed outright, it would leave a "leaked semaphore" warning behind.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        watch_parent(multiprocessing.parent_process().pid)
        logging.getLogger("litserve.loops.simple_loops").addFilter(queue_timeout_line)
        model.resources()  # load the model and artifacts (built if missing) before /health says ready
        observe.safely(observe.WORKER_STARTS.inc)

    def decode_request(self, request: TriageRequest):
        return request

    def predict(self, requests):
        batched = isinstance(requests, list)
        requests = requests if batched else [requests]
        tickets = [model.Ticket.model_validate(r.model_dump(exclude={"flags"})) for r in requests]
        timings: dict[str, float] = {}
        results = model.run_each(tickets, [r.flags for r in requests], timings)  # one failure fails one request
        customers = [result for r, result in zip(requests, results, strict=True) if not isinstance(r, Canary)]
        if customers:
            observe.observe_batch(len(customers), timings, customers)
        results = [(result, len(tickets)) for result in results]  # each answer knows the size of its batch (for the log)
        return results if batched else results[0]

    def encode_response(self, output) -> tuple[str | dict, int]:
        """The answer as JSON text, written here in the worker: the API process passes it on without validating
        or serializing it again. A ticket the pipeline failed on gets an error (a 500 for that request only)."""
        result, batch_size = output
        if isinstance(result, Exception):
            return {"detail": f"the pipeline failed on this ticket: {type(result).__name__}"}, batch_size
        return result.model_dump_json(), batch_size


def queue_timeout_line(record: logging.LogRecord) -> bool:
    """LitServe's log line for a request that waited too long advises `LitServe(..., timeout=30)`: say this server's setting."""
    if "waiting in the queue for too long" in str(record.msg):
        record.msg, record.args = "a request waited in the queue longer than TRIAGE_TIMEOUT (%g s): answered 504", (SETTINGS["timeout"],)
    return True


class Canary(TriageRequest):
    """The ticket /health sends through the queue and the pipeline, like a client's (left out of the answer metrics)."""


class RequestQueue:
    """The inference workers' request queue on ZeroMQ: the HTTP process pushes, each worker pulls (a Unix socket).

    It replaces LitServe's multiprocessing queue, whose get() takes a lock shared by every process: a worker
    killed while it waits in get(), which is most of an idle worker's life, never releases it, and its replacement
    then waits on it forever while /health said ok. A ZeroMQ socket belongs to one process, so a killed worker takes
    only the requests it had received (those get a 503, below). With no worker connected, put() refuses at once.
    """

    def __init__(self, address: str):
        self.address, self._socket, self._pid, self._events, self.workers = address, None, None, None, 0

    def __getstate__(self) -> dict:  # a spawned worker gets the address; sockets are made in the process that uses them
        return {"address": self.address, "_socket": None, "_pid": None, "_events": None, "workers": 0}

    def _connected(self, kind: int) -> zmq.Socket:
        if self._pid != os.getpid():  # first use in this process (the HTTP process is forked: nothing inherited is used)
            self._socket = zmq.Context.instance().socket(kind)
            self._socket.setsockopt(zmq.LINGER, 0)
            (self._socket.bind if kind == zmq.PUSH else self._socket.connect)(self.address)
            self._pid = os.getpid()
        return self._socket

    def open(self) -> None:
        """Bind the HTTP process's end before the first request, so that the workers are connected by then."""
        self._events = self._connected(zmq.PUSH).get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)

    def connected(self) -> int:
        """In the HTTP process: how many workers are connected now. The kernel closes a dead worker's end at once,
        so this falls the moment one dies, before any check of processes could tell."""
        while self._events.poll(0):
            event = zmq.utils.monitor.recv_monitor_message(self._events)["event"]
            self.workers += 1 if event == zmq.EVENT_ACCEPTED else -1
        return self.workers

    def put(self, item) -> None:
        try:
            self._connected(zmq.PUSH).send(pickle.dumps(item), zmq.NOBLOCK)
        except zmq.Again:  # no worker connected (one is starting) or every one is far behind
            raise HTTPException(503, "no inference worker is ready to take this request: retry in a few seconds") from None

    def get(self, block: bool = True, timeout: float | None = None):
        socket = self._connected(zmq.PULL)
        if not socket.poll(None if block and timeout is None else int((timeout or 0) * 1000)):
            raise queue.Empty
        return pickle.loads(socket.recv())  # from this server's own HTTP process only (a Unix socket in a private folder)

    def get_nowait(self):
        return self.get(block=False)


class Watch:
    """The HTTP process's view of the workers, kept fresh in the background so that /health answers at once, even
    under load: whether every worker is ready (LitServe's shared status, read off the event loop), whether answers
    come back (a client's, or else a canary ticket sent through the same queue every second), and an event set
    each time a worker is lost, which fails the requests it held (WorkerWatch)."""

    def __init__(self, server: "TriageServer", interval: float = 0.2):
        self.server, self.interval = server, interval
        self.lost = asyncio.Event()
        self.workers_ready, self.last_answer, self.next_canary, self.beat = False, -math.inf, -math.inf, time.monotonic()

    def answered(self) -> None:
        self.last_answer = time.monotonic()

    @property
    def ok(self) -> bool:
        return self.workers_ready and time.monotonic() - self.last_answer < HEALTH_FRESH and self.alive

    @property
    def alive(self) -> bool:
        """The event loop turns: `run` beat within the last seconds (what the probe port's /live tells)."""
        return time.monotonic() - self.beat < HEALTH_FRESH

    def _ready(self) -> bool:
        status = dict(self.server.workers_setup_status)
        return bool(status) and all(v == ls.utils.WorkerSetupStatus.READY for v in status.values())

    async def run(self) -> None:
        self._beating = asyncio.ensure_future(self._heartbeat())  # kept: a task nobody holds may be collected
        canary, workers = None, len(self.server.inference_workers)
        while True:
            try:
                ready = self.server.request_queue.connected() == workers and await asyncio.to_thread(self._ready)
            except (OSError, EOFError):  # LitServe's manager is gone: shutting down, or the main process stops the server
                ready = False
            if self.workers_ready and not ready:
                self.lost.set()
                self.lost = asyncio.Event()
            self.workers_ready = ready
            now = time.monotonic()
            if ready and now - self.last_answer >= 1 and now >= self.next_canary and (canary is None or canary.done()):
                self.next_canary = now + 1
                canary = asyncio.ensure_future(self._canary())
            await asyncio.sleep(self.interval)

    async def _heartbeat(self) -> None:
        while True:
            self.beat = time.monotonic()
            await asyncio.sleep(self.interval)

    async def _canary(self) -> None:
        try:
            answer, _ = await ask_worker(self.server, Canary(text="Where is my order 75983714?"), HEALTH_FRESH)
        except (HTTPException, TimeoutError):  # a stuck worker: wait before the next, not to pile canaries in its queue
            self.next_canary = time.monotonic() + 10
            return
        if isinstance(answer, str):  # the pipeline's answer, not its error
            self.answered()


def serve_probes(watch: Watch, host: str, port: int) -> None:
    """/health and /live on a port of their own (TRIAGE_PROBE_PORT), answered by a thread of the HTTP process: under
    any load on the main port they answer at once, never queued behind /predict on the event loop. They say what
    `watch` knows; its heartbeat tells a stalled event loop too (then both are 503)."""

    class Probe(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = {"/health": watch.ok, "/live": watch.alive}.get(self.path)
            status, body = (404, b"not found") if ok is None else (200, b"ok") if ok else (503, b"not ready")
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # probes every few seconds: not worth a log line each
            pass

    probes = ThreadingHTTPServer((host, port), Probe)
    probes.daemon_threads = True
    threading.Thread(target=probes.serve_forever, name="probes", daemon=True).start()


async def ask_worker(server: ls.LitServer, request: TriageRequest, timeout: float):
    """Send `request` through the workers' queue and wait at most `timeout` seconds for its answer (TimeoutError after).
    A worker's error comes back as an HTTPException: 504 for a request that waited too long in the queue, 503 for one
    whose worker died."""
    uid, event = uuid.uuid4().hex, asyncio.Event()
    server.response_buffer[uid] = ResponseBufferItem(event)
    try:
        server.request_queue.put((server.app.response_queue_id, uid, time.monotonic(), request))
        await asyncio.wait_for(event.wait(), timeout)
        answer, status = server.response_buffer[uid].response
    finally:
        server.response_buffer.pop(uid, None)
    if status == LitAPIStatus.ERROR:
        error = pickle.loads(answer) if isinstance(answer, bytes) else answer  # pickled by this server's own worker
        if isinstance(error, HTTPException):
            raise error
        raise HTTPException(503, "the inference worker handling this request stopped; it is being replaced: retry in a few seconds")
    return answer


class Problem(BaseModel):
    detail: str = Field(description="What is wrong, in one sentence.", examples=["Invalid or missing X-API-Key header"])


class FieldProblem(BaseModel):
    type: str = Field(examples=["string_too_long"])
    loc: list[str | int] = Field(description="Where: body, then the field's path.", examples=[["body", "text"]])
    msg: str = Field(examples=["String should have at most 5000 characters"])
    input: Any = Field(None, description="What was sent there, shortened to 100 characters.")


class FieldProblems(BaseModel):
    detail: list[FieldProblem]


ERRORS = {  # every error a client of /predict or /cases can get, each with its JSON body
    401: ("The API key is missing or wrong (only when the server has LIT_SERVER_API_KEY set).", Problem),
    408: (f"The request body stalled or took longer than TRIAGE_BODY_TIMEOUT ({SETTINGS['body_timeout']:g} s).", Problem),
    413: (f"The request body is larger than TRIAGE_MAX_BODY_BYTES ({SETTINGS['max_body_bytes']} bytes).", Problem),
    422: ("A field is missing, unknown or out of bounds: each problem names its field.", FieldProblems),
    500: ("The pipeline failed on this ticket (other requests in the same batch are answered).", Problem),
    503: (
        "The server is at its connection limit, or the inference worker stopped and is being replaced: retry. On /cases: the "
        "edge-case store cannot be used (its path is a folder, or it cannot be read or written).",
        Problem,
    ),
    504: (
        f"The request waited longer than TRIAGE_TIMEOUT ({SETTINGS['timeout']:g} s) in the queue, or got no answer within "
        f"{SETTINGS['timeout'] + RUN_SECONDS:g} s in all (a stuck worker).",
        Problem,
    ),
    507: ("The edge-case store is full (no space left on device): the case was not saved; GET /cases keeps working.", Problem),
}


def error_responses(*codes: int) -> dict[int, dict]:
    return {code: {"description": ERRORS[code][0], "model": ERRORS[code][1]} for code in codes}


async def send_json(send: Send, status: int, body: dict) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


class RequestGuard:
    """Bodies that stall or never end: every request body must keep arriving (a gap over `timeout` seconds
    gives 408); on the API paths the whole body must arrive within `timeout` and hold at most `max_size`
    bytes (413). Bounds how long a slow or stalled client can hold a connection."""

    def __init__(self, app: ASGIApp, max_size: int, timeout: float, paths: tuple[str, ...] = API_PATHS):
        self.app, self.max_size, self.timeout, self.paths = app, max_size, timeout, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] in self.paths:
            return await self._api(scope, receive, send)
        state = {"body_done": False, "stalled": False, "started": False}

        async def guarded_receive() -> dict:  # only the body is timed; after it, waiting for a disconnect is normal
            if state["body_done"]:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                state["stalled"] = True
                return {"type": "http.disconnect"}
            state["body_done"] = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def tracked_send(message: dict) -> None:
            if state["stalled"]:  # the app's answer to a vanished body (often a 500): the 408 below replaces it
                return
            state["started"] = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracked_send)
        except Exception:  # the app's error about a vanished body (say, ClientDisconnect): the 408 below says it
            if not state["stalled"]:
                raise
        if state["stalled"] and not state["started"]:
            await send_json(send, 408, {"detail": f"the request body stalled for {self.timeout:g} s"})

    async def _api(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_size:
            return await self._too_large(send)
        body, more = [], True
        try:
            async with asyncio.timeout(self.timeout):
                while more:  # read the body (chunked or not) up to the limit, then replay it
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body.append(message.get("body", b""))
                    more = message.get("more_body", False)
                    if sum(map(len, body)) > self.max_size:
                        return await self._too_large(send)
        except TimeoutError:
            return await send_json(send, 408, {"detail": f"the request body did not arrive within {self.timeout:g} s"})
        replay = iter([{"type": "http.request", "body": b"".join(body), "more_body": False}])

        async def replayed() -> dict:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)

    async def _too_large(self, send: Send) -> None:
        await send_json(send, 413, {"detail": f"request body is larger than {self.max_size} bytes"})


class WorkerWatch:
    """A request in flight when an inference worker dies gets a JSON 503 at once instead of waiting for its deadline.

    LitServe (restart_workers=True) replaces a dead worker and marks it as starting in the shared worker status;
    `Watch` sees that and sets its `lost` event, which fails the requests that were in flight then.
    """

    def __init__(self, app: ASGIApp, server: "TriageServer", paths: tuple[str, ...] = ("/predict",)):
        self.app, self.server, self.paths = app, server, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        lost = self.server.watch.lost
        started = False

        async def tracked_send(message: dict) -> None:
            nonlocal started
            started = True
            await send(message)

        request = asyncio.ensure_future(self.app(scope, receive, tracked_send))
        worker_lost = asyncio.ensure_future(lost.wait())
        await asyncio.wait({request, worker_lost}, return_when=asyncio.FIRST_COMPLETED)
        if request.done():
            worker_lost.cancel()
            return request.result()
        request.cancel()
        if not started:
            detail = "the inference worker handling this request stopped; it is being replaced: retry in a few seconds"
            await send_json(send, 503, {"detail": detail})


def validation_error(request, error: RequestValidationError) -> JSONResponse:
    """422 naming each field, with long or unprintable inputs shortened (never a 500, never the whole body echoed)."""
    detail = [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"], "input": shorten(e.get("input"))} for e in error.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


def shorten(value, limit: int = 100):
    """A JSON-safe, short copy of a client's input for an error body."""
    if isinstance(value, str):
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates become visible escapes
        return value if len(value) <= limit else f"{value[:limit]}... ({len(value)} characters)"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {shorten(str(k), 40): shorten(v, limit) for k, v in list(value.items())[:20]}
    if isinstance(value, (list, tuple)):
        return [shorten(v, limit) for v in value[:20]]
    return value if value is None or isinstance(value, (bool, int, float)) else shorten(str(value), limit)


class KeyGate:
    """With credentials set, nothing but /health, /metrics, the API docs and the UI's login page answers without them.

    A request passes with the header X-API-Key (API and UI alike: for the UI it stands for a login) or
    with the UI's login session (Gradio's cookie). Everything else, Gradio's own routes included, gets 401.
    """

    OPEN = frozenset(
        {"/health", "/live", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json"}
        | {"/", "/login", "/login/", "/favicon.ico", "/theme.css"}
    )
    OPEN_PREFIXES = ("/assets/", "/static/", "/svelte/", "/gradio_api/theme.css", "/manifest.json", "/pwa_icon", "/docs-static/")

    def __init__(self, app: ASGIApp, key: str | None, gradio_app=None):
        self.app, self.key, self.gradio = app, key, gradio_app
        self.token = secrets.token_urlsafe(24)  # the UI session that a valid X-API-Key stands for
        if gradio_app is not None:
            gradio_app.tokens[self.token] = "api-key"

    @staticmethod
    def login_check(key: str | None, user: str, password: str | None):
        """Gradio's `auth` function: the UI's own user and password, or any name with the API key as password."""

        def check(username: str, given: str) -> bool:
            as_user = password is not None and secrets.compare_digest(username, user) and secrets.compare_digest(given, password)
            return as_user or (key is not None and secrets.compare_digest(given, key))

        return check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.OPEN or scope["path"].startswith(self.OPEN_PREFIXES):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.key is not None and secrets.compare_digest(headers.get(b"x-api-key", b""), self.key.encode()):
            if self.gradio is not None:  # Gradio checks its own cookie: give it the session the key stands for
                cookie = f"access-token-unsecure-{self.gradio.cookie_id}={self.token}".encode()
                rest = [(k, v) for k, v in scope["headers"] if k != b"cookie"]
                scope = {**scope, "headers": [*rest, (b"cookie", b"; ".join(filter(None, [headers.get(b"cookie"), cookie])))]}
            return await self.app(scope, receive, send)
        if self._session(headers.get(b"cookie", b"").decode("latin-1")):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        await send_json(send, 401, {"detail": "credentials required: the header X-API-Key, or log in to the app at /"})

    def _session(self, cookie_header: str) -> bool:
        if self.gradio is None or not cookie_header:
            return False
        cookies = SimpleCookie()
        try:
            cookies.load(cookie_header)
        except CookieError:
            return False
        names = (f"access-token-{self.gradio.cookie_id}", f"access-token-unsecure-{self.gradio.cookie_id}")
        return any(name in cookies and self.gradio.tokens.get(cookies[name].value) for name in names)


class TriageServer(ls.LitServer):
    """LitServer with this server's request queue, /predict's deadline, /health's watch and a supervisor of its helpers.

    Each override below replaces a LitServe 0.2.19 internal; tests/test_heal.py fails loudly when they change."""

    ready_message = "ready"  # main.py sets it with the app's and the docs' URLs
    probe_address: tuple[str, int] | None = None  # (host, TRIAGE_PROBE_PORT): main.py sets it when that is set

    stopping = False  # set when a graceful shutdown begins: the helpers' ends are expected from then on

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.temporary: list[str] = []  # folders to remove even when the server stops with os._exit (main.py adds its own)

    def _init_manager(self, num_api_servers: int):
        """Replaces the Manager's request queue (a blocking round trip per put) with `RequestQueue` (one HTTP process)."""
        manager = super()._init_manager(num_api_servers)
        folder = tempfile.mkdtemp(prefix="triage-queue-")  # private (0700): only this user's processes reach the socket
        self.temporary.append(folder)
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        self.request_queue = RequestQueue(f"ipc://{folder}/requests")
        for path in self.litapi_request_queues:
            self.litapi_request_queues[path] = self.request_queue
        return manager

    @asynccontextmanager
    async def lifespan(self, app):
        """LitServe's lifespan (its response reader), plus the watch behind /health, in the HTTP process."""
        async with super().lifespan(app):
            self.request_queue.open()
            self.watch = Watch(self)
            task = asyncio.get_running_loop().create_task(self.watch.run())
            if self.probe_address:
                serve_probes(self.watch, *self.probe_address)
            yield
            task.cancel()

    def _start_server(self, *args, **kwargs):
        started = super()._start_server(*args, **kwargs)  # the workers are ready: LitServe waited for them
        log.info(self.ready_message)
        return started

    def _start_worker_monitoring(self, manager, uvicorn_workers):
        """LitServe's monitor replaces dead inference workers; this also watches what cannot be replaced."""
        super()._start_worker_monitoring(manager, uvicorn_workers)
        helpers = {**{f"the HTTP process {name}": p for name, p in uvicorn_workers.items()}, "LitServe's manager process": manager._process}
        threading.Thread(target=self._supervise, args=(helpers,), name="triage-supervisor", daemon=True).start()

    def _supervise(self, helpers: dict, interval: float = 0.5) -> None:
        """The HTTP process holds the port and LitServe's manager the shared status and answer queues: neither can be
        started again in place. When one dies (a SIGBUS, the OOM killer, a kill), stop every process of the server and
        exit with status 1, so that its supervisor (Kubernetes, systemd, a Space) starts it afresh; never a live
        process with a dead port."""
        while not self.stopping:
            for name, process in helpers.items():
                if not process.is_alive() and not self.stopping:
                    self._die(name, process)
            time.sleep(interval)

    def _die(self, name: str, process) -> None:
        code = process.exitcode
        how = f"killed by {signal.Signals(-code).name}" if code and code < 0 else f"exit status {code}"
        log.error("%s (pid %s) died (%s): stopping the whole server with exit status 1, for its supervisor to restart it",
                  name, process.pid, how)  # fmt: skip
        for worker in self.inference_workers:  # at once, before LitServe's monitor restarts one
            worker.kill()
        for folder in self.temporary:
            shutil.rmtree(folder, ignore_errors=True)
        os._exit(1)  # the other children watch this process (watch_parent) and end with it

    def _register_api_endpoints(self, lit_api: ls.LitAPI, request_type, response_type) -> None:
        """POST /predict, as LitServe registers it, except that: the answer has a deadline (504 past it, never a hang),
        the worker's JSON is sent as it is (FastAPI would validate and serialize it a second time in this process),
        and it is documented with every response."""

        async def predict(request: TriageRequest, http: Request) -> model.Triage:
            deadline = self.timeout + RUN_SECONDS
            try:
                answer, http.state.batch_size = await ask_worker(self, request, deadline)
            except TimeoutError:
                return JSONResponse({"detail": f"no answer within {deadline:g} s: the inference worker is stuck or far behind"}, 504)
            if isinstance(answer, str):
                self.watch.answered()
                return Response(answer, media_type="application/json")
            return JSONResponse(answer, status_code=500)

        self.app.add_api_route(
            lit_api.api_path,
            predict,
            methods=["POST"],
            dependencies=[Depends(self.setup_auth(lit_api))],
            summary="Triage one ticket",
            description="The pipeline's answer for one customer message: category, team, urgency, order numbers found, "
            "help-centre articles, and an automatic reply when every rule allows one. Requests that arrive together are "
            "batched; each keeps its own flags, and its answer is the same as alone.",
            tags=["triage"],
            responses=error_responses(401, 408, 413, 422, 500, 503, 504),
        )

    def _perform_graceful_shutdown(self, manager, uvicorn_workers, shutdown_reason="normal"):
        """Drain first: the API servers stop accepting and answer what is in flight while the inference workers still
        run (uvicorn's graceful shutdown, bounded by uvicorn_graceful_timeout); then LitServe stops the workers.
        Reached too when the manager dies under LitServe's wait for its shutdown event: that is the supervisor's case."""
        if isinstance(sys.exc_info()[1], (EOFError, OSError)):  # LitServe's wait on its manager failed: the manager died
            manager._process.join(3)
            self._die("LitServe's manager process", manager._process)
        self.stopping = True
        log.info("stopping: answering the requests in flight (at most %g s), then stopping the workers", self.uvicorn_graceful_timeout)
        for process in uvicorn_workers.values():
            process.terminate()
        for process in uvicorn_workers.values():
            process.join(self.uvicorn_graceful_timeout + 5)
        alive = {k: p for k, p in uvicorn_workers.items() if p.is_alive()}
        super()._perform_graceful_shutdown(manager, alive, shutdown_reason)


class SkippedLine(BaseModel):
    line: int = Field(description="The line's number in the store's CSV (1 is the header).")
    problem: str = Field(examples=["6 cells where the header has 21 (a torn or hand-edited line)"])


class CasePage(BaseModel):
    total: int = Field(description="Cases in the store.")
    offset: int
    limit: int
    cases: list[model.EdgeCase]
    skipped: list[SkippedLine] = Field(
        [], description="Lines of the store that are no edge case (torn, not UTF-8, a missing cell, an unknown category): skipped."
    )


class CaseSaved(BaseModel):
    id: str = Field(description="The case's id (the same ticket, flags and expected answer always give the same id).")
    new: bool = Field(description="False when the same case was already in the store: it is not repeated.")
    case: model.EdgeCase


def add_case_routes(server: ls.LitServer) -> None:
    """POST /cases flags an edge case (the pipeline's current answer is recorded with it); GET /cases lists them."""
    auth = [Depends(server.setup_auth())]  # the API key, when one is set

    def post_case(case: model.EdgeCase, response: Response) -> CaseSaved:
        try:
            saved, new = edge_cases.save_cases([case.model_copy(update={"source": model.CaseSource.api})], created_by=None)[0]
        except ValidationError as error:  # say, a text of nothing but control characters: empty once cleaned
            raise HTTPException(422, detail=f"{model.error_message(error)} (after cleaning the text)") from None
        except edge_cases.StoreFull as error:
            raise HTTPException(507, detail=str(error)) from None
        except edge_cases.StoreUnavailable as error:
            raise HTTPException(503, detail=str(error)) from None
        response.status_code = 201 if new else 200
        return CaseSaved(id=saved.id, new=new, case=saved)

    def get_cases(offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=500)) -> CasePage:
        try:
            store = edge_cases.read_cases()
        except edge_cases.StoreUnavailable as error:
            raise HTTPException(503, detail=str(error)) from None
        page = store.cases[offset : offset + limit]
        return CasePage(total=len(store.cases), offset=offset, limit=limit, cases=page, skipped=store.skipped)

    server.app.add_api_route(
        "/cases",
        post_case,
        methods=["POST"],
        status_code=201,
        dependencies=auth,
        summary="Flag an edge case",
        description="Saves a ticket with its expected answer; 201 with the case id, or 200 when the same case is already saved.",
        tags=["edge cases"],
        responses={
            200: {"description": "The same case was already saved", "model": CaseSaved},
            **error_responses(401, 408, 413, 422, 503, 507),
        },
    )
    server.app.add_api_route(
        "/cases",
        get_cases,
        methods=["GET"],
        dependencies=auth,
        summary="List the edge cases, oldest first",
        description="A page of the edge-case store: `offset` and `limit` (at most 500); `skipped` names the store's bad lines.",
        tags=["edge cases"],
        responses=error_responses(401, 422, 503),
    )


def info() -> dict:
    """What /info reports: pipeline, model, categories, flags with defaults and bounds, batching."""
    fingerprint = builder.fingerprint()
    return {
        "pipeline_version": model.PIPELINE_VERSION,
        "model": fingerprint["model"],
        "encoder": fingerprint["encoder"],
        "data": fingerprint["data"],
        "categories": {c.value: model.TEAMS[c] for c in model.Category},
        "flags": model.Flags.model_json_schema()["properties"],
        "batching": {k: SETTINGS[k] for k in ("max_batch_size", "batch_timeout", "timeout", "workers")},
        "max_body_bytes": SETTINGS["max_body_bytes"],
    }


def self_hosted_docs(app) -> None:
    """/docs with Swagger UI's files served by this server, from the PyPI package fastapi-offline: the page works
    without internet (FastAPI's default page loads them from a CDN and is blank offline)."""
    import fastapi_offline
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != "/docs"]
    app.mount("/docs-static", StaticFiles(directory=Path(fastapi_offline.__file__).parent / "static"), name="docs-static")

    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Support-ticket triage API",
            swagger_js_url="/docs-static/swagger-ui-bundle.js",
            swagger_css_url="/docs-static/swagger-ui.css",
            swagger_favicon_url="/docs-static/favicon.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
        )

    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)


def build_server() -> ls.LitServer:
    """The LitServer with /predict, /health (always open) and /info; main.py mounts the UI on it."""
    api = TriageAPI(max_batch_size=SETTINGS["max_batch_size"], batch_timeout=SETTINGS["batch_timeout"], api_path="/predict")
    server = TriageServer(
        api,
        accelerator="cpu",
        workers_per_device=SETTINGS["workers"],
        timeout=SETTINGS["timeout"],
        model_metadata=info(),
        restart_workers=True,  # a dead inference worker is replaced, not the end of the server
    )
    server.app.add_middleware(WorkerWatch, server=server)
    server.app.add_middleware(RequestGuard, max_size=SETTINGS["max_body_bytes"], timeout=SETTINGS["body_timeout"])  # outside WorkerWatch
    server.app.add_middleware(observe.Observe)  # outside both: their 408, 413 and 503 are counted and logged too
    server.app.add_exception_handler(RequestValidationError, validation_error)
    add_case_routes(server)
    self_hosted_docs(server.app)
    server.app.title, server.app.version = "Support-ticket triage API", model.PIPELINE_VERSION
    server.app.description = "Triage customer messages (POST /predict) and flag edge cases (/cases). The app is at /."
    server.uvicorn_graceful_timeout = SETTINGS["graceful_timeout"]  # what a SIGTERM waits for requests in flight
    server.monitor_internal = 0.5  # seconds between LitServe's checks that the workers are alive
    routes = server.app.router.routes
    info_route = next(r for r in routes if getattr(r, "path", None) == "/info")
    routes[:] = [r for r in routes if getattr(r, "path", None) not in ("/", "/health", "/info")]  # "/" becomes the UI

    def ready() -> PlainTextResponse:
        watch = getattr(server, "watch", None)  # made when the HTTP process starts
        return PlainTextResponse("ok") if watch is not None and watch.ok else PlainTextResponse("not ready", 503)

    server.app.add_api_route(  # never behind the API key: load balancers and Kubernetes probe it
        "/health",
        ready,
        methods=["GET"],
        summary="Ready?",
        description=f"`ok` while requests go through end to end: every inference worker is ready and an answer (a client's, or "
        f"a canary ticket's, sent every second) came back within the last {HEALTH_FRESH} s. 503 `not ready` otherwise: starting, "
        "replacing a worker, or stuck. Answered at once, even under load (nothing is queued). No key needed.",
        tags=["service"],
        responses={200: {"content": {"text/plain": {"example": "ok"}}}, 503: {"content": {"text/plain": {"example": "not ready"}}}},
    )
    server.app.add_api_route(
        "/live",
        lambda: PlainTextResponse("ok"),
        methods=["GET"],
        summary="Alive?",
        description="`ok` whenever the HTTP process answers at all (Kubernetes' liveness probe): being busy or replacing a worker "
        "is not a reason to restart the server; a dead helper makes the server exit by itself. No key needed.",
        tags=["service"],
        responses={200: {"content": {"text/plain": {"example": "ok"}}}},
    )
    server.app.add_api_route(
        "/metrics",
        observe.metrics,
        methods=["GET"],
        summary="Prometheus metrics",
        description="Requests by route and status, latency, requests in flight, batch sizes, seconds per pipeline step, "
        "answers by category, worker starts. Counts and timings only, never ticket text; open like /health.",
        tags=["service"],
        response_class=PlainTextResponse,
    )
    server.app.add_api_route(
        "/info",
        info_route.endpoint,
        methods=["GET"],
        dependencies=info_route.dependencies,
        summary="What is serving",
        description="Pipeline version, embedding model and encoder, data hashes, categories with their teams, every flag "
        "with its default and bounds, and the batching settings.",
        tags=["service"],
        response_model=ServerInfo,
        responses=error_responses(401),
    )
    return server


class ServerInfo(BaseModel):
    model: dict[str, Any] = Field(description="pipeline_version, model, encoder, data, categories, flags, batching, max_body_bytes")
    server: dict[str, Any] = Field(description="LitServe's own: devices, workers, timeout")
