"""What the service tells its operators: Prometheus metrics at /metrics, one JSON log line per API request.

Metrics (prometheus-client). The API-server process counts requests, their latency and the requests in
flight; the inference workers count batch sizes, seconds per pipeline step, the answers (by the pipeline's
label and whether a person must answer, where its contract has them: `triage_answers_total{label=...,
needs_person=...}`), and their own starts (a start beyond the first of each worker is a restart). With
several processes, each writes to PROMETHEUS_MULTIPROC_DIR (app/main.py sets it to a fresh temporary folder
before anything forks) and /metrics adds them up. /metrics holds counts and timings, never an input's text, and is open like
/health, so that a Prometheus scraper needs no key; expose the port to the cluster only. Metrics never take
the service down: a write that fails (a full disk under PROMETHEUS_MULTIPROC_DIR) is logged once and counted
in `triage_metrics_write_failures_total` (kept in memory), and the request is served.

Logs: one JSON line per request to /predict, /cases and /info on the `triage.access` logger: time,
request id, method, path, status, milliseconds and, for /predict, the size of the batch it ran in.
A client's `X-Request-ID` (up to 128 letters, digits and `._:-`) is used and echoed; otherwise one is made.
"""

import contextlib
import json
import logging
import mmap
import os
import re
import struct
import time

import prometheus_client.values
from fastapi import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.mmap_dict import _INITIAL_MMAP_SIZE, MmapedDict
from starlette.types import ASGIApp, Receive, Scope, Send

from building import contract, versions

LOGGED_PATHS = ("/predict", "/cases", "/cases/review", "/info", "/mcp")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
access_log = logging.getLogger("triage.access")
log = logging.getLogger("triage")


class AllocatedMmapedDict(MmapedDict):
    """prometheus-client's metric file with its disk space taken before it is used. The library makes and grows the
    file with truncate(), which leaves a hole: on a full disk, the first write through the memory map into that hole
    kills the process with SIGBUS (seen: the HTTP process died, a zombie held the port). posix_fallocate turns that
    into an OSError (ENOSPC); from then on this process keeps its metrics in memory (counted, logged once, missing
    from /metrics) and serves on. Replaces prometheus_client.values.MmapedDict (0.26)."""

    def __init__(self, filename, read_mode=False):
        try:
            if not read_mode:
                fd = os.open(filename, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    os.posix_fallocate(fd, 0, max(os.fstat(fd).st_size, _INITIAL_MMAP_SIZE))
                finally:
                    os.close(fd)
            super().__init__(filename, read_mode)
        except OSError as error:
            write_failed(error)
            with contextlib.suppress(OSError):  # an empty file would stop /metrics from reading the others
                if os.path.getsize(filename) == 0:
                    os.unlink(filename)
            self._f, self._fname, self._positions, self._used, self._capacity = None, filename, {}, 8, _INITIAL_MMAP_SIZE
            self._m = mmap.mmap(-1, self._capacity)
            self._m[0:4] = struct.pack("i", self._used)

    def _init_value(self, key):
        capacity, needed = self._capacity, self._used + len(key.encode("utf-8")) + 28  # an entry: length, key, padding, two doubles
        while needed > capacity:
            capacity *= 2
        if capacity > self._capacity:
            try:
                if self._f is None:
                    raise OSError("kept in memory")
                os.posix_fallocate(self._f.fileno(), 0, capacity)
            except OSError as error:
                if self._f is not None:
                    write_failed(error)
                    self._f.close()
                    self._f = None
                memory = mmap.mmap(-1, capacity)
                memory[: self._used] = self._m[: self._used]
                self._m, self._capacity = memory, capacity
        super()._init_value(key)


prometheus_client.values.MmapedDict = AllocatedMmapedDict  # before the first metric below opens its file
write_failures = 0


def write_failed(error: Exception) -> None:
    global write_failures
    write_failures += 1
    if write_failures == 1:
        where = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "memory")
        log.error("metrics: cannot write to %s (%s); requests are served, this process's metrics are kept in memory", where, error)


def safely(update, *args) -> None:
    """One metrics update; a failure is counted and logged once, never raised: metrics never fail a request."""
    try:
        update(*args)
    except Exception as error:  # a full disk is handled above; anything else the library raises must not fail a request
        write_failed(error)


class WriteFailures:
    """A collector: this process's failed metric writes, kept in memory (the disk may be what failed)."""

    def collect(self):
        yield CounterMetricFamily("triage_metrics_write_failures", "Metrics updates the HTTP process could not write.", write_failures)


class ReviewQueue:
    """A collector: the review queue's cases by state, read from its database at each scrape (so, with one PostgreSQL,
    every replica's flags); `triage_review_database_up` is 0 when the database did not answer."""

    def collect(self):
        from loop import review

        up = GaugeMetricFamily("triage_review_database_up", "1 when the review queue's database answered this scrape.")
        try:
            counts = review.counts()
        except review.QueueUnavailable:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        cases = GaugeMetricFamily("triage_review_cases", "Flagged cases in the review queue, by state.", labels=["state"])
        for state, count in counts.items():
            cases.add_metric([state], count)
        yield cases


class ServedVersion:
    """A collector: which version this server serves (versions.py; "artifacts" for artifacts/, built from data/)."""

    def collect(self):
        from building import builder

        info = GaugeMetricFamily("triage_version_info", "The version this server serves.", labels=["version"])
        info.add_metric([versions.name_of(builder.ARTIFACTS_DIR) or "artifacts"], 1)
        yield info


REQUESTS = Counter("triage_requests", "HTTP requests answered, by route and status.", ["route", "status"])
LATENCY = Histogram(
    "triage_request_seconds", "Time to answer an HTTP request, by route.", ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)  # fmt: skip
IN_FLIGHT = Gauge("triage_requests_in_flight", "HTTP requests being answered now.", multiprocess_mode="livesum")
BATCH_SIZE = Histogram("triage_batch_size", "Inputs per run_batch call in the inference worker.", buckets=(1, 2, 4, 8, 16, 32, 64))
STEP_SECONDS = Histogram(
    "triage_step_seconds", "Seconds per pipeline step, per batch.", ["step"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)  # fmt: skip
ANSWER_FIELDS = {k: v for k, v in (("label", contract.label()), ("needs_person", contract.needs_person())) if v}  # -> Output field
ANSWERS = Counter(
    "triage_answers", "Inputs answered, by the pipeline's label and whether a person must answer (where it has them).", list(ANSWER_FIELDS)
)
FAILURES = Counter("triage_pipeline_failures", "Inputs the pipeline failed on (each got a 500).")
WORKER_STARTS = Counter("triage_worker_starts", "Inference worker starts: beyond one per worker, each is a restart.")
SHADOWED = Counter("triage_shadowed", "Requests the candidate in shadow answered too (python -m loop shadow; app/shadow.py).")
SHADOW_DROPPED = Counter("triage_shadow_dropped", "Requests not shadowed: the candidate fell behind or its process is down.")
SHADOW_FIELDS = Counter("triage_shadow_fields", "Shadowed requests by output field and whether the candidate agreed.", ["field", "agreed"])


def route_of(path: str) -> str:
    """A bounded label: the API's routes by name, everything else (the UI, its assets) as `ui`."""
    return path if path in (*LOGGED_PATHS, "/health", "/live", "/metrics", "/docs", "/openapi.json") else "ui"


def metrics() -> Response:
    """GET /metrics: every process's metrics, in Prometheus's text format."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(WriteFailures())
    return Response(generate_latest(registry) + generate_latest(review_registry), media_type=CONTENT_TYPE_LATEST)


review_registry = CollectorRegistry()  # read at each scrape, in the HTTP process
review_registry.register(ReviewQueue())
review_registry.register(ServedVersion())


def observe_batch(size: int, step_seconds: dict[str, float], answers: list) -> None:
    """Called by the inference worker after each batch."""
    safely(BATCH_SIZE.observe, size)
    for step, seconds in step_seconds.items():
        safely(lambda step=step, seconds=seconds: STEP_SECONDS.labels(step).observe(seconds))
    for answer in answers:
        if isinstance(answer, Exception):
            safely(FAILURES.inc)
        else:
            safely(lambda answer=answer: (ANSWERS.labels(*answer_labels(answer)) if ANSWER_FIELDS else ANSWERS).inc())


def answer_labels(answer) -> list[str]:
    """An answer's metric labels: the label's value, and "true" or "false" for the needs-person field."""
    cells = [getattr(answer, field) for field in ANSWER_FIELDS.values()]
    return [str(v).lower() if isinstance(v, bool) else str(getattr(v, "value", v)) for v in cells]


class Observe:
    """ASGI middleware: the request id (echoed in `X-Request-ID`), the request metrics and the JSON log line."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        sent = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent if REQUEST_ID.fullmatch(sent) else os.urandom(16).hex()  # uuid4().hex's form, without the object
        scope.setdefault("state", {})["request_id"] = request_id
        status, start = 500, time.perf_counter()

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        safely(IN_FLIGHT.inc)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            safely(IN_FLIGHT.dec)
            seconds, route = time.perf_counter() - start, route_of(scope["path"])
            safely(lambda: REQUESTS.labels(route, str(status)).inc())
            safely(lambda: LATENCY.labels(route).observe(seconds))
            if route in LOGGED_PATHS:
                line = {
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "ms": round(seconds * 1000, 1),
                }
                if "batch_size" in scope["state"]:
                    line["batch_size"] = scope["state"]["batch_size"]
                access_log.info(json.dumps(line))
