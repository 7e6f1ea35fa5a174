"""Every dependence of this server on LitServe's internals, read in LitServe 0.2.19 (PINNED). Nothing else in the project
touches a LitServe name that starts with `_` or a route LitServe registers; tests/test_litserve_internals.py checks the
version and each name below, so that an upgrade fails there, naming what to re-read here, instead of in the server.

Overridden (TriageServer), each calling LitServe's own first or last:
    _init_manager               its Manager's request queue replaced by RequestQueue, its answer transport by
                                AnswerTransport (both ZeroMQ): see each
    lifespan                    + in the HTTP process: the queue's end bound, the health watch running, then
                                `alongside` (main.py: the UI, loaded while the API already answers)
    run                         + StartingPage on the port LitServe binds (uvicorn.Config.bind_socket, as run() calls
                                it), answering from the first second while the workers start
    _start_server               + the `ready:` log line; StartingPage stops (the HTTP process takes the port's
                                connections from then on)
    _start_worker_monitoring    + a supervisor: a dead HTTP process or manager ends the server with status 1
    _perform_graceful_shutdown  the HTTP process drains before the workers stop (WORKER_STOP: they ignore SIGTERM);
                                a dead manager is the supervisor's case
Read or written:
    workers_setup_status, WorkerSetupStatus.READY     workers_ready()
    response_buffer, ResponseBufferItem, LitAPIStatus, app.response_queue_id, the queue item
        (response_queue_id, uid, timestamp, request)  ask_worker(): what LitServe's request handler does, with a deadline
    litapi_request_queues, _get_request_queue         RequestQueue stands in for the Manager's queue
    _transport, MessageTransport (send, areceive, close)   AnswerTransport stands in for the Manager's answer queues
    inference_workers, manager._process (stdlib)      the supervisor's watch and kill
    _shutdown_event                                   request_shutdown(): what LitServe's /shutdown does, for SIGTERM
    monitor_internal, uvicorn_graceful_timeout        attributes with no constructor argument, set in TriageServer
    _disable_openapi_url                              set after __init__ built the app with /openapi.json: run() then
                                                      leaves out its "Swagger UI is available" line (`ready:` names /docs)
    litserve.server._MCP_AVAILABLE                    set False in TriageServer.__init__: with the `mcp` package installed,
                                                      LitServe mounts its own MCP app at "/" (needing fastmcp: a NameError
                                                      without it); app/mcp_tools.py serves /mcp instead
    the routes "/", "/health", "/info", POST /predict take_routes(): replaced by app/api.py's own
    the workers' log line "waiting in the queue for too long"   name_the_queue_timeout()
Public hooks used instead: model_metadata= (/info), restart_workers=, timeout=, LitAPI(max_batch_size=, batch_timeout=,
api_path=), setup_auth() for the key (key_dependencies(): none at all when LitServe's is `no_auth`, a sync function
FastAPI would run in its thread pool for every request). LitServe registers its POST /predict itself (firing ON_SERVER_START) and
take_routes() swaps it for this server's. Not used: fast_queue=True does nothing in 0.2.19 (a misspelt field), and
LitServe's /health reads the Manager on the event loop (blocked under load); `middlewares=` would put LitServe's GZip
outside the guards, so they are added with FastAPI's add_middleware as before.
"""

import asyncio
import atexit
import html
import json
import logging
import os
import pickle
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import litserve as ls
import uvicorn
import zmq
import zmq.asyncio
import zmq.utils.monitor
from fastapi import Depends, HTTPException
from litserve.transport.base import MessageTransport
from litserve.utils import LitAPIStatus, ResponseBufferItem, WorkerSetupStatus

from app.guards import api_key_check

PINNED = "0.2.19"  # the LitServe version every name here was read in (requirements.txt pins it)
LITSERVE_ROUTES = ("/", "/health", "/info", "/predict")  # what LitServer.__init__ registers; take_routes() removes them
log = logging.getLogger("triage")


class RequestQueue:
    """The inference workers' request queue on ZeroMQ: the HTTP process pushes, each worker pulls (a Unix socket).

    It replaces LitServe's multiprocessing queue, whose get() takes a lock shared by every process: a worker
    killed while it waits in get(), which is most of an idle worker's life, never releases it, and its replacement
    then waits on it forever while /health said ok. A ZeroMQ socket belongs to one process, so a killed worker takes
    only the requests it had received (those get a 503, below). With no worker connected, put() refuses at once.
    LitServe's loops call get(timeout=), get(block=, timeout=) and get_nowait(), and expect queue.Empty. Its batching
    loop asks every millisecond (get(timeout=0.001)), even with nothing to do: an idle worker took 15% of a core. After
    IDLE_AFTER seconds of finding nothing, a get waits up to IDLE_WAIT instead; a request still wakes it at once. (Busy
    between two gets is not idle: a batch that took longer than IDLE_AFTER changes nothing.)
    """

    IDLE_AFTER, IDLE_WAIT = 0.05, 0.25

    def __init__(self, address: str):
        self.address, self._socket, self._pid, self._events, self.workers = address, None, None, None, 0
        self._empty_since: float | None = None  # in a worker: since when every get found nothing

    def __getstate__(self) -> dict:  # a spawned worker gets the address; sockets are made in the process that uses them
        return {"address": self.address, "_socket": None, "_pid": None, "_events": None, "workers": 0, "_empty_since": None}

    def _connected(self, kind: int) -> zmq.Socket:
        """This process's end: the HTTP process binds (PUSH), a worker connects (PULL). The binding end's monitor, which
        counts the workers, starts before the bind: the workers are already retrying their connect, and one accepted
        between a bind and a later monitor was never counted (/health said 503 for good: one start in about a hundred
        under load)."""
        if self._pid != os.getpid():  # first use in this process (the HTTP process is forked: nothing inherited is used)
            self._socket = zmq.Context.instance().socket(kind)
            self._socket.setsockopt(zmq.LINGER, 0)
            if kind == zmq.PUSH:
                self._events = self._socket.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
                self._socket.bind(self.address)
            else:
                self._socket.connect(self.address)
            self._pid = os.getpid()
        return self._socket

    def open(self) -> None:
        """Bind the HTTP process's end before the first request, so that the workers are connected by then."""
        self._connected(zmq.PUSH)

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
        if not block:
            wait = 0.0
        elif timeout is None:
            wait = None
        elif self._empty_since is not None and time.monotonic() - self._empty_since > self.IDLE_AFTER:  # idle (see above)
            wait = max(timeout, self.IDLE_WAIT)
        else:
            wait = timeout
        if not socket.poll(None if wait is None else int(wait * 1000)):
            self._empty_since = self._empty_since or time.monotonic()
            raise queue.Empty
        self._empty_since = None
        return pickle.loads(socket.recv())  # from this server's own HTTP process only (a Unix socket in a private folder)

    def get_nowait(self):
        return self.get(block=False)


class AnswerTransport(MessageTransport):
    """The answers' way back on ZeroMQ: each inference worker pushes, the HTTP process (consumer `n`) pulls on a Unix
    socket of its own, awaited on its event loop. It replaces LitServe's Manager queues, where every answer was a round
    trip from the worker to the Manager's process and, in the HTTP process, a blocking get in a thread (py-spy, bench/
    RESULTS.md section 3). A killed worker takes only the answers it had not sent; those requests get a 503 (WorkerWatch).
    """

    def __init__(self, address: str):
        self.address, self._sockets, self._pid, self._closed = address, {}, None, False

    def __getstate__(self) -> dict:  # sockets are made in the process that uses them
        return {"address": self.address, "_sockets": {}, "_pid": None, "_closed": False}

    def _socket(self, consumer_id: int, kind: int, context: zmq.Context) -> zmq.Socket:
        if self._pid != os.getpid():  # first use in this process: nothing inherited over a fork is used
            self._sockets, self._pid = {}, os.getpid()
        if consumer_id not in self._sockets:
            socket = context.socket(kind)
            socket.setsockopt(zmq.LINGER, 0)
            (socket.bind if kind == zmq.PULL else socket.connect)(f"{self.address}-{consumer_id}")
            self._sockets[consumer_id] = socket
        return self._sockets[consumer_id]

    def send(self, item, consumer_id: int) -> None:
        self._socket(consumer_id, zmq.PUSH, zmq.Context.instance()).send(pickle.dumps(item))

    async def areceive(self, consumer_id: int, timeout: float | None = None, block: bool = True):
        if self._closed:
            raise asyncio.CancelledError("transport closed")
        return pickle.loads(await self._socket(consumer_id, zmq.PULL, zmq.asyncio.Context.instance()).recv())

    def close(self, send_sentinel: bool = True) -> None:
        self._closed = True


class StartingPage:
    """What the port answers while the server starts, from a thread of the main process, on LitServe's own listening
    socket: /live 200 (the process is alive), / a page that reloads itself, anything else 503 naming what the server
    waits for ("building the artifacts: step 2 of 5, ..." from `progress`, the file builder.progress writes), with
    Retry-After. Each answer closes its connection, so no client stays on it once the HTTP process serves."""

    def __init__(self, listening, progress: Path | None):
        def waiting_for() -> str:
            with suppress(OSError, UnicodeDecodeError):
                return progress.read_text(encoding="utf-8")[:200] if progress else "starting the inference workers"
            return "starting the inference workers"

        class Answer(BaseHTTPRequestHandler):
            server_version, sys_version = "starting", ""  # not Python's version

            def do_GET(self):
                doing = waiting_for()
                if self.path.split("?")[0] == "/live":
                    self.answer(200, "text/plain", "ok")
                elif self.path.split("?")[0] == "/health":
                    self.answer(503, "text/plain", f"not ready: {doing}")
                elif "text/html" in self.headers.get("Accept", ""):
                    self.answer(503, "text/html", STARTING_PAGE.format(doing=html.escape(doing)))
                else:
                    self.answer(
                        503, "application/json", json.dumps({"detail": f"the server is starting ({doing}): retry in a few seconds"})
                    )

            do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

            def answer(self, status: int, kind: str, text: str) -> None:
                body = text.encode()
                self.send_response(status)
                for name, value in (("Content-Type", f"{kind}; charset=utf-8"), ("Content-Length", str(len(body))),
                                    ("Retry-After", "2"), ("Cache-Control", "no-store"), ("Connection", "close")):  # fmt: skip
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(listening.getsockname()[:2], Answer, bind_and_activate=False)
        self.server.socket.close()
        self.server.socket = listening.dup()  # closed by stop(); LitServe's socket stays open for its HTTP process
        self.server.request_queue_size = 2048  # uvicorn's backlog
        self.server.server_activate()  # listen(): uvicorn binds without it, so the port refused connections until now
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.1,), name="starting-page", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()


STARTING_PAGE = """<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="2"><title>Starting</title>
<body style="font-family:sans-serif;margin:4em">The server is starting: {doing}.<p>This page reloads itself every two seconds."""


class TriageServer(ls.LitServer):
    """LitServer with this server's request queue, a ready line, a supervisor of its helpers and a draining shutdown.

    `watch` (app/health.py's Watch, set by build_server) runs in the HTTP process; main.py sets `ready_message`."""

    ready_message = "ready"
    watch = None
    stopping = False  # set when a graceful shutdown begins: the helpers' ends are expected from then on

    def __init__(self, *args, graceful_timeout: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.temporary: list[str] = []  # folders to remove even when the server stops with os._exit (main.py adds its own)
        self.uvicorn_graceful_timeout = graceful_timeout  # LitServe's attribute: what a SIGTERM waits for requests in flight
        self.monitor_internal = 0.5  # LitServe's attribute (so spelt): seconds between its checks that the workers are alive
        self._disable_openapi_url = True  # the app has its /openapi.json: this only drops run()'s Swagger line (`ready:` names /docs)
        ls.server._MCP_AVAILABLE = False  # LitServe's own MCP app at "/" (see above): /mcp is app/mcp_tools.py's
        self.alongside: list = []  # async context managers the HTTP process runs while it serves (main.py: the UI)
        self.progress: Path | None = None  # where a build says how far it is (main.py: TRIAGE_BUILD_PROGRESS)
        self.starting: StartingPage | None = None
        self.shadow = None  # app/shadow.py's Shadow when a candidate runs in shadow (main.py)

    def _init_manager(self, num_api_servers: int):
        """Replaces: the Manager's request queue (a blocking round trip per put; a lock a killed worker keeps), and its
        answer queues. With: RequestQueue, in every slot LitServe reads it from (litapi_request_queues, via
        _get_request_queue), and AnswerTransport as `_transport` (the workers get it as an argument)."""
        manager = super()._init_manager(num_api_servers)
        folder = tempfile.mkdtemp(prefix="triage-queue-")  # private (0700): only this user's processes reach the socket
        self.temporary.append(folder)
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        self.request_queue = RequestQueue(f"ipc://{folder}/requests")
        for path in self.litapi_request_queues:
            self.litapi_request_queues[path] = self.request_queue
        self._transport = AnswerTransport(f"ipc://{folder}/answers")
        return manager

    @asynccontextmanager
    async def lifespan(self, app):
        """Adds to LitServe's lifespan (its response reader), in the HTTP process: the queue's end, the watch behind
        /health, then `alongside`. No public hook runs code in the HTTP process once it starts (ON_SERVER_START fires in
        __init__)."""
        async with super().lifespan(app):
            self.request_queue.open()
            async with self.watch.running(), AsyncExitStack() as stack:
                for context in self.alongside:
                    await stack.enter_async_context(context())
                yield

    def run(self, *args, **kwargs):
        """LitServe binds the port, then starts the HTTP process only once every inference worker is ready (a first start
        builds the artifacts there: minutes). Meanwhile StartingPage answers on the same socket."""
        bind = uvicorn.Config.bind_socket

        def bind_and_answer(config):
            uvicorn.Config.bind_socket = bind  # once: the HTTP process's uvicorn uses the socket given to it
            socket = bind(config)
            self.starting = StartingPage(socket, self.progress)
            return socket

        uvicorn.Config.bind_socket = bind_and_answer
        try:
            return super().run(*args, **kwargs)
        finally:
            uvicorn.Config.bind_socket = bind
            if self.starting:
                self.starting.stop()

    def _start_server(self, *args, **kwargs):
        """Adds the `ready:` line: LitServe calls this once the workers are ready; no callback fires then. StartingPage
        stops: the HTTP process accepts from now on (a connection made meanwhile waits in the socket's backlog)."""
        started = super()._start_server(*args, **kwargs)
        if self.starting:
            self.starting.stop()
        log.info(self.ready_message)
        return started

    def _start_worker_monitoring(self, manager, uvicorn_workers):
        """Adds to LitServe's monitor (it replaces dead inference workers) a watch on what cannot be replaced."""
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
        os._exit(1)  # the other children watch this process (health.watch_parent) and end with it

    def _perform_graceful_shutdown(self, manager, uvicorn_workers, shutdown_reason="normal"):
        """Replaces the order: the API servers stop accepting and answer what is in flight while the inference workers
        still run (uvicorn's graceful shutdown, bounded by uvicorn_graceful_timeout); then LitServe's own stops the
        workers. Reached too when the manager dies under LitServe's wait for its shutdown event: the supervisor's case."""
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
        for worker in self.inference_workers:  # nothing in flight now: each exits like a program (worker_signals)
            if worker.is_alive():
                os.kill(worker.pid, WORKER_STOP)
        for worker in self.inference_workers:
            worker.join(5)  # LitServe's own stop then finds them gone (its SIGTERM they ignore: see worker_signals)
        super()._perform_graceful_shutdown(manager, alive, shutdown_reason)


def workers_ready(server: ls.LitServer) -> bool:
    """Every inference worker has finished its setup (LitServe's shared status, a round trip to its manager: call it off
    the event loop). Raises OSError or EOFError when the manager is gone."""
    status = dict(server.workers_setup_status)
    return bool(status) and all(v == WorkerSetupStatus.READY for v in status.values())


async def ask_worker(server: ls.LitServer, request, timeout: float):
    """Send `request` through the workers' queue and wait at most `timeout` seconds for what the worker's encode_response
    gave (TimeoutError after): LitServe's RegularRequestHandler, with a deadline. A worker's error comes back as an
    HTTPException: 504 for a request that waited too long in the queue, 503 for one whose worker died."""
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


def key_dependencies(server: ls.LitServer, api: ls.LitAPI | None = None) -> list:
    """The route dependencies that check the API key: LitServe's (setup_auth), or none when it has no check to make."""
    auth = server.setup_auth(api)
    if auth is ls.server.api_key_auth:  # LitServe's compares str: a key outside ASCII never matched; the same on UTF-8 bytes
        auth = api_key_check(ls.server.LIT_SERVER_API_KEY)
    return [] if auth is ls.server.no_auth else [Depends(auth)]


def take_routes(server: ls.LitServer) -> dict:
    """Remove the routes LitServe registered ("/", "/health", "/info", POST /predict) and return them by path: "/" becomes
    the UI, and app/api.py registers its own /health (open, answered from memory), /predict (a deadline, documented) and
    /info (LitServe's endpoint, documented)."""
    routes = server.app.router.routes
    taken = {r.path: r for r in routes if getattr(r, "path", None) in LITSERVE_ROUTES}
    routes[:] = [r for r in routes if getattr(r, "path", None) not in LITSERVE_ROUTES]
    return taken


def request_shutdown(server: ls.LitServer) -> bool:
    """Stop the server as LitServe's own /shutdown does (its shutdown event), from a thread: the main thread is waiting on
    that event in `run`. False while the server is still starting (no event yet). The helpers' ends are expected from
    now on: the HTTP process, signalled with the whole group, may be done draining before the main thread wakes."""
    if server._shutdown_event is None:
        return False
    server.stopping = True
    threading.Thread(target=server._shutdown_event.set).start()
    return True


WORKER_STOP = signal.SIGUSR1  # how the main process stops an inference worker once nothing is in flight


def worker_signals() -> None:
    """In an inference worker: SIGTERM and SIGINT are ignored, WORKER_STOP exits like a program (what the worker holds,
    tqdm's lock or a named semaphore, is released; killed outright it would leave a "leaked semaphore" warning). A
    supervisor (systemd, `kill -TERM -PGID`) or a terminal's Ctrl-C signals the whole process group: the main process
    drains the requests in flight, which need this worker, and then stops it. LitServe's own stop sends SIGTERM:
    TriageServer sends WORKER_STOP first."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(WORKER_STOP, lambda *_: sys.exit(0))


def name_the_queue_timeout(seconds: float) -> None:
    """In an inference worker: LitServe's loops log a request that waited too long with advice to pass `LitServe(...,
    timeout=30)`; say this server's setting (TRIAGE_TIMEOUT) instead."""

    def line(record: logging.LogRecord) -> bool:
        if "waiting in the queue for too long" in str(record.msg):
            record.msg, record.args = "a request waited in the queue longer than TRIAGE_TIMEOUT (%g s): answered 504", (seconds,)
        return True

    logging.getLogger("litserve.loops.simple_loops").addFilter(line)
