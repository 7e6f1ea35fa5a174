"""What the server knows of its own health: `Watch` behind /health (workers ready, answers coming back, the event loop
turning), the probe port (TRIAGE_PROBE_PORT) and `watch_parent`, by which every child ends with the main process."""

import asyncio
import math
import os
import threading
import time
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fastapi import HTTPException

from app.litserve_internals import ask_worker, workers_ready

HEALTH_FRESH = 3  # seconds: /health is 200 while an answer (a request's, or the canary's) came back this recently


class Watch:
    """The HTTP process's view of the workers, kept fresh in the background so that /health answers at once, even
    under load: whether every worker is ready (LitServe's shared status, read off the event loop), whether answers
    come back (a client's, or else `canary`, the Input's own example sent through the same queue every second), and the requests in
    flight (`holding`: task -> cancelled for a lost worker), which it cancels each time a worker is lost: WorkerWatch
    answers them 503."""

    probe_address: tuple[str, int] | None = None  # (host, TRIAGE_PROBE_PORT): main.py sets it when that is set

    def __init__(self, server, canary, busy_fresh: float, interval: float = 0.2):
        self.server, self.canary, self.busy_fresh, self.interval = server, canary, busy_fresh, interval
        self.holding: dict[asyncio.Task, bool] = {}
        self.workers_ready, self.last_answer, self.next_canary, self.beat = False, -math.inf, -math.inf, time.monotonic()

    @asynccontextmanager
    async def running(self):
        """In the HTTP process, while it serves: the watch, and the probe port when there is one."""
        self.beat = time.monotonic()
        task = asyncio.get_running_loop().create_task(self.run())
        if self.probe_address:
            serve_probes(self, *self.probe_address)
        yield
        task.cancel()

    def answered(self) -> None:
        self.last_answer = time.monotonic()

    @property
    def ok(self) -> bool:
        """Every worker ready, the event loop turning, and an answer back within HEALTH_FRESH seconds; while clients'
        requests are in flight, within `busy_fresh` (the time a request's deadline allows its batch): one batch of 32
        long inputs took 2.6 s on two quiet cores (the worked example), and a busy worker is not a stuck one."""
        fresh = self.busy_fresh if self.holding else HEALTH_FRESH
        return self.workers_ready and time.monotonic() - self.last_answer < fresh and self.alive

    @property
    def alive(self) -> bool:
        """The event loop turns: `run` beat within the last seconds (what the probe port's /live tells)."""
        return time.monotonic() - self.beat < HEALTH_FRESH

    async def run(self) -> None:
        self._beating = asyncio.ensure_future(self._heartbeat())  # kept: a task nobody holds may be collected
        canary, workers = None, len(self.server.inference_workers)
        while True:
            try:
                ready = self.server.request_queue.connected() == workers and await asyncio.to_thread(workers_ready, self.server)
            except (OSError, EOFError):  # LitServe's manager is gone: shutting down, or the main process stops the server
                ready = False
            if self.workers_ready and not ready:
                for task in self.holding:
                    self.holding[task] = True
                    task.cancel()
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
            answer = await ask_worker(self.server, self.canary, HEALTH_FRESH)
        except (HTTPException, TimeoutError):  # a stuck worker: wait before the next, not to pile canaries in its queue
            self.next_canary = time.monotonic() + 10
            return
        if isinstance(answer.body, str):  # the pipeline's answer, not its error
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


def watch_parent(parent: int, interval: float = 0.5) -> None:
    """End this process once `parent` is gone (the main process killed outright, even with SIGKILL): no orphan keeps
    the port, a worker or the queues after it. A thread rather than a parent-death signal, which Linux sends when the
    *thread* that started the child ends (LitServe restarts workers from a thread)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()
