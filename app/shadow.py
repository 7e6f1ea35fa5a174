"""Shadow candidates: the application team's live traffic judges the next version, off every response path.

    python -m loop shadow VERSION          from each server's next start, a sample of /predict's requests runs on it too
    python -m loop shadow report VERSION   its live record;  python -m loop shadow --stop

A server that starts with versions/shadow.json naming a version (read once, as served.json is) starts one more process,
`run`, at a lower priority (nice 10): it loads that version as it was built. Once /predict has answered, the HTTP process
offers the request and its answer to it, with the probability TRIAGE_SHADOW_RATE (0.2), over a ZeroMQ socket that
holds a bounded number of them (TRIAGE_SHADOW_QUEUE, 64, at each end): when it is full (the candidate fell behind) or
the process is down, the request is dropped and counted, never waited for. The shadow process runs the candidate on
what it receives, in batches, and keeps each pair in the review database (review.record_shadow): the input (masked as
an untrusted client's flag is, unless the client is trusted: the server has an API key, which every caller passed),
both answers, the fields that differ, both versions, the time; the newest TRIAGE_SHADOW_KEEP. A candidate that
crashes, hangs or is slow changes, delays and fails no served answer; /metrics counts what was shadowed and dropped,
and the agreement on each output field.
"""

import json
import logging
import math
import os
import random
import signal
import threading
import time

import zmq

from app import observe

log = logging.getLogger("triage")
BATCH = 16  # requests the candidate runs at once, at most


def settings() -> tuple[float, int]:
    """TRIAGE_SHADOW_RATE (the share of requests shadowed, 0 to 1) and TRIAGE_SHADOW_QUEUE (how many may wait)."""
    return float(os.environ.get("TRIAGE_SHADOW_RATE", "0.2")), int(os.environ.get("TRIAGE_SHADOW_QUEUE", "64"))


class Shadow:
    """The HTTP process's end: `offer` sends a sample of the answered requests to the shadow process, never waiting."""

    def __init__(self, address: str, candidate: str, served: str):
        self.address, self.candidate, self.served = address, candidate, served
        self.rate, self.bound = settings()
        self._socket, self._pid = None, None

    def __getstate__(self) -> dict:  # sockets are made in the process that uses them
        return {**self.__dict__, "_socket": None, "_pid": None}

    def offer(self, request, answer: str, trusted: bool = False) -> None:
        """`request` and its `answer` to the candidate, with the probability `rate`; `trusted`: its input is kept as
        written (a client with the API key), else masked as an untrusted client's flag is."""
        if random.random() >= self.rate:
            return
        if self._pid != os.getpid():
            self._socket = zmq.Context.instance().socket(zmq.PUSH)
            for option, value in ((zmq.LINGER, 0), (zmq.SNDHWM, self.bound), (zmq.IMMEDIATE, 1)):  # IMMEDIATE: no peer, no queue
                self._socket.setsockopt(option, value)
            self._socket.connect(self.address)
            self._pid = os.getpid()
        message = json.dumps({"at": time.time(), "request": request.model_dump(mode="json"), "answer": answer, "trusted": trusted})
        try:
            self._socket.send_string(message, zmq.NOBLOCK)
        except zmq.Again:  # the candidate fell behind, or its process is down
            observe.safely(observe.SHADOW_DROPPED.inc)


def start(candidate: str, served: str, folder: str) -> Shadow:
    """In the main process: the shadow process (spawned, as the inference workers are) and the HTTP process's end."""
    import multiprocessing

    address = f"ipc://{folder}/shadow"
    process = multiprocessing.get_context("spawn").Process(
        target=run, args=(address, candidate, served, os.getpid()), name="triage-shadow", daemon=True
    )
    process.start()

    def watch() -> None:  # reaps it, and says so: a candidate that dies is not restarted (nothing served depends on it)
        process.join()
        log.warning("shadow: the candidate's process ended (exit status %s): requests are dropped from now on", process.exitcode)

    threading.Thread(target=watch, name="shadow-watch", daemon=True).start()
    log.info("shadow: %s answers a sample of the requests too (rate %g), off the response path", candidate, settings()[0])
    return Shadow(address, candidate, served)


def run(address: str, candidate: str, served: str, parent: int) -> None:
    """The shadow process: the candidate on what the HTTP process offers, each pair kept in the review database."""
    import model
    from app.health import watch_parent
    from building import builder, contract, versions
    from loop import edge_cases, review

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a signal to the group is the main process's: this one ends with it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    watch_parent(parent)
    os.nice(10)
    socket = zmq.Context.instance().socket(zmq.PULL)
    socket.setsockopt(zmq.RCVHWM, settings()[1])
    socket.bind(address)  # before the candidate loads: what is offered meanwhile waits (within the bound)
    model.install(builder.load_version(versions.folder(candidate)))
    fields = list(contract.output_fields())
    while True:
        received = [json.loads(socket.recv_string())]
        while len(received) < BATCH and socket.poll(0):
            received.append(json.loads(socket.recv_string()))
        inputs = [model.Input.model_validate({k: v for k, v in r["request"].items() if k != "flags"}) for r in received]
        results = contract.run_each(inputs, [model.Flags.model_validate(r["request"].get("flags") or {}) for r in received], {})
        pairs = []
        for r, one, result in zip(received, inputs, results, strict=True):
            given = json.loads(r["answer"])
            now = {"error": type(result).__name__} if isinstance(result, Exception) else result.model_dump(mode="json")
            differs = [f for f in fields if not same(given.get(f), now.get(f))]
            for f in fields:
                observe.safely(observe.SHADOW_FIELDS.labels(f, "no" if f in differs else "yes").inc)
            masked = {**edge_cases._cleaned(one, not r.get("trusted")), "flags": r["request"].get("flags") or {}}
            pairs.append({"candidate": candidate, "served": served, "at": r["at"], "input_json": json.dumps(masked),
                          "served_json": r["answer"], "candidate_json": json.dumps(now), "differs": ",".join(differs)})  # fmt: skip
        try:
            review.record_shadow(pairs)
        except review.QueueUnavailable as error:  # the database is down or locked: these pairs are lost, not the server
            log.warning("shadow: %d pairs not kept: %s", len(pairs), error)
        observe.safely(observe.SHADOWED.inc, len(pairs))


def same(a, b) -> bool:
    """Two values of one output field agree: equal, numbers within a millionth (two builds' float rounding)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b, abs_tol=1e-6)
    return a == b
