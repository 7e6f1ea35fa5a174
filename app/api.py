"""The HTTP API for the application team: a LitServe wrapper of `model.run_batch` (debug off).

POST /predict takes one input (model.Input, with optional flags) and returns the pipeline's answer (model.Output).
Concurrent requests are batched into one `run_batch` call; each keeps its own flags. The request and response schemas
are the pipeline's own pydantic models, so /docs and /openapi.json show the real fields; everything else it says of the
pipeline (title, /info, the /health canary, the examples) comes from the contract (building/contract.py).
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
    LIT_SERVER_API_KEY      when set, /predict, /info, /cases and /mcp need the header X-API-Key (401); /health stays open
    TRIAGE_REVIEW_KEY       the header X-Review-Key that POST /cases/review needs (default: LIT_SERVER_API_KEY)
    TRIAGE_DATABASE_URL, TRIAGE_DATABASE_WAIT, TRIAGE_FLAG_RATE, TRIAGE_MAX_PENDING   the review queue (review.py)

Faults: a killed inference worker is replaced (restart_workers), at any moment, idle or busy; the requests
it held get a JSON 503 and /health says 503 until the new one answers. Every /predict has a deadline
(TRIAGE_TIMEOUT plus the time a batch may take): past it, a 504, never a hang. /health is 200 only while
requests go through end to end (answers, or a canary input, came back within the last seconds). The HTTP
process and LitServe's manager cannot be replaced: if either dies, the whole server exits with status 1
for its supervisor to restart it. Every child ends when the main process dies, however it dies. SIGTERM
drains: the server stops accepting, answers what is in flight, then stops the workers.

This file reads: the LitAPI (four hooks), schemas, routes, build_server. Beside it: app/litserve_internals.py (every
use of LitServe's internals, pinned by a test), app/guards.py (the ASGI guards), app/health.py (what /health knows).
"""

import asyncio
import importlib
import json
import math
import multiprocessing
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import litserve as ls
from fastapi import HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

import model
from app import observe
from app.guards import RequestGuard, WorkerWatch, header_bytes, same_secret
from app.health import HEALTH_FRESH, Watch, watch_parent
from app.litserve_internals import TriageServer, ask_worker, key_dependencies, name_the_queue_timeout, take_routes, worker_signals
from building import builder, contract
from loop import edge_cases

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
API_PATHS = ("/predict", "/cases", "/cases/review", "/mcp")
RUN_SECONDS = 10  # beyond its time in the queue (TRIAGE_TIMEOUT), the most a request's batch may take before its 504


class PredictRequest(model.Input):
    """One input to the pipeline, and optionally the feature flags to run it with."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [contract.input_example()]})  # the Input's own
    flags: model.Flags = Field(default_factory=model.Flags, description="Feature flags; every one is optional.")


class Canary(PredictRequest):
    """The input /health sends through the queue and the pipeline, like a client's (left out of the answer metrics)."""


class Answer(NamedTuple):
    """What a worker sends back for one request: the answer's JSON text (or an error's body) and the size of the batch
    it was answered in (for the request log)."""

    body: str | dict[str, str]
    batch_size: int


class TriageAPI(ls.LitAPI):
    def setup(self, device):
        worker_signals()  # a signal to the whole process group is the main process's: it drains, then stops this one
        watch_parent(multiprocessing.parent_process().pid)
        name_the_queue_timeout(SETTINGS["timeout"])
        builder.ready()  # load the artifacts (built if missing) before /health says ready
        observe.safely(observe.WORKER_STARTS.inc)

    def decode_request(self, request: PredictRequest):
        return request

    def predict(self, requests):
        batched = isinstance(requests, list)
        requests = requests if batched else [requests]
        inputs = [model.Input.model_validate(r.model_dump(exclude={"flags"})) for r in requests]
        timings: dict[str, float] = {}
        results = contract.run_each(inputs, [r.flags for r in requests], timings)  # one failure fails one request
        customers = [result for r, result in zip(requests, results, strict=True) if not isinstance(r, Canary)]
        if customers:
            observe.observe_batch(len(customers), timings, customers)
        self.batch_size = len(inputs)  # encode_response runs next, once per answer of this batch
        return results if batched else results[0]

    def encode_response(self, result) -> Answer:
        """The answer as JSON text, written here in the worker: the API process passes it on without validating
        or serializing it again. An input the pipeline failed on gets an error (a 500 for that request only)."""
        if isinstance(result, Exception):
            return Answer({"detail": f"the pipeline failed on this input: {type(result).__name__}"}, self.batch_size)
        return Answer(result.model_dump_json(), self.batch_size)


# --- schemas: errors, /info, edge cases -----------------------------------------------------------------
class Problem(BaseModel):
    detail: str = Field(
        description="What is wrong, in one sentence.",
        examples=["credentials missing or wrong: send the header X-API-Key, or log in to the app at /"],
    )


class FieldProblem(BaseModel):
    type: str = Field(examples=["dict_type"])
    loc: list[str | int] = Field(description="Where: body, then the field's path.", examples=[["body", "flags"]])
    msg: str = Field(examples=["Input should be a valid dictionary"])
    input: Any = Field(None, description="What was sent there, shortened to 100 characters.")


class FieldProblems(BaseModel):
    detail: list[FieldProblem]


ERRORS = {  # every error a client of /predict or /cases can get, each with its JSON body
    400: ("The body could not be read: it is not UTF-8.", Problem),
    401: ("The API key is missing or wrong (only when the server has LIT_SERVER_API_KEY set).", Problem),
    403: ("Reviewing over HTTP is off: the server has no reviewer key (TRIAGE_REVIEW_KEY or LIT_SERVER_API_KEY).", Problem),
    408: (f"The request body stalled or took longer than TRIAGE_BODY_TIMEOUT ({SETTINGS['body_timeout']:g} s).", Problem),
    409: ("A case to decide is no longer pending: another reviewer decided it first (named, with how), or it is not queued.", Problem),
    413: (f"The request body is larger than TRIAGE_MAX_BODY_BYTES ({SETTINGS['max_body_bytes']} bytes).", Problem),
    422: ("A field is missing, unknown or out of bounds: each problem names its field.", FieldProblems),
    429: ("Too many flags from this client in the last minute (only without an API key): retry after Retry-After seconds.", Problem),
    500: ("The pipeline failed on this input (other requests in the same batch are answered).", Problem),
    503: (
        "The server is at its connection limit, or the inference worker stopped and is being replaced: retry. On /cases: the "
        "review database or the suite file cannot be used (unreachable, locked past TRIAGE_DATABASE_WAIT, removed, a folder, "
        "unreadable); nothing was saved.",
        Problem,
    ),
    504: (
        f"The request waited longer than TRIAGE_TIMEOUT ({SETTINGS['timeout']:g} s) in the queue, or got no answer within "
        f"{SETTINGS['timeout'] + RUN_SECONDS:g} s in all (a stuck worker).",
        Problem,
    ),
    507: (
        "The review queue holds TRIAGE_MAX_PENDING pending cases (only without an API key), or the suite file's disk is full: "
        "nothing was saved; GET /cases keeps working.",
        Problem,
    ),
}


def error_responses(*codes: int) -> dict[int, dict]:
    return {code: {"description": ERRORS[code][0], "model": ERRORS[code][1]} for code in codes}


class ServerInfo(BaseModel):
    model: dict[str, Any] = Field(
        description="title, pipeline_version, version (the served one: versions.py), what it was built from (model, encoder, "
        "data), label (the labelled field and its values), labelled_sets (each with its rows and metrics), flags, batching, "
        "max_body_bytes"
    )
    server: dict[str, Any] = Field(description="LitServe's own: devices, workers, timeout")


class SkippedLine(BaseModel):
    line: int = Field(description="The line's number in the store's CSV (1 is the header).")
    problem: str = Field(examples=["6 cells where the header has 21 (a torn or hand-edited line)"])


class CasePage(BaseModel):
    total: int = Field(description="Cases in the store.")
    offset: int
    limit: int
    cases: list[edge_cases.EdgeCase]
    skipped: list[SkippedLine] = Field(
        [], description="Lines of the store that are no edge case (torn, not UTF-8, a missing cell, a value the schema refuses): skipped."
    )


class CaseSaved(BaseModel):
    id: str = Field(description="The case's id (the same input, flags and expected answer always give the same id).")
    new: bool = Field(description="False when the same case was already flagged: it is not repeated, only counted.")
    state: str = Field(description="`pending`: waiting for a reviewer; `already flagged`: see GET /cases for its state.")
    case: edge_cases.EdgeCase


class CaseState(StrEnum):
    suite = "suite"
    pending = "pending"
    accepted = "accepted"
    rejected = "rejected"


class QueuedCase(BaseModel):
    state: str = Field(description="pending, accepted or rejected")
    times_flagged: int = Field(description="How often the same case was flagged.")
    case: edge_cases.EdgeCase
    reviewed_by: str | None = Field(None, description="Decided: the reviewer.")
    reviewed_at: str | None = Field(None, description="Decided: when (UTC, ISO 8601).")
    suite_id: str | None = Field(None, description="Accepted: the case's id in the suite (another when the reviewer changed the answer).")


class QueuePage(BaseModel):
    state: str
    total: int = Field(description="Cases in this state.")
    offset: int
    limit: int
    counts: dict[str, int] = Field(description="Cases in each state of the queue.")
    cases: list[QueuedCase]


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[str] = Field(min_length=1, max_length=500, description="Ids of pending cases (from GET /cases?state=pending).")
    accept: bool = Field(description="true: into the regression suite; false: rejected.")
    expected: model.Expected | None = Field(None, description="Accept only: the right answer as the reviewer sets it.")
    train: bool = Field(False, description="Accept only: as training examples (candidates learn from them; never counted as fixed).")
    reviewer: str | None = Field(None, max_length=100, description="The reviewer's name, kept with the decision.")


class Reviewed(BaseModel):
    changed: int = Field(description="Cases accepted or rejected by this call (those not pending are left alone).")
    accepted: list[str] = Field([], description="The accepted cases' ids in the suite (new ones when `expected` changed them).")
    suite_ids: dict[str, str] = Field({}, description="Each accepted case's id in the queue and its id in the suite.")
    counts: dict[str, int]


# --- routes ---------------------------------------------------------------------------------------------
def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 naming each field, with long or unprintable inputs shortened (never a 500, never the whole body echoed). A body
    that is no JSON says so: where it broke and what was sent (FastAPI gives `{}`), or the Content-Type it came with (FastAPI
    gives a bytes repr)."""
    detail = []
    for e in error.errors():
        problem = {"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"], "input": shorten(e.get("input"))}
        if e["type"] == "json_invalid":  # loc ("body", position), input {}: the body as sent instead
            problem |= {
                "loc": ["body"],
                "msg": f"invalid JSON: {str(e['ctx']['error']).removesuffix(' at')} at character {e['loc'][1]}",  # "starting at"
                "input": shorten(error.body),
            }
        elif isinstance(e.get("input"), bytes):  # not sent as JSON: FastAPI passed the raw bytes on
            kind = request.headers.get("content-type") or "no Content-Type"
            problem["msg"] = f"the body must be a JSON object sent as Content-Type: application/json, not {kind}"
        detail.append(problem)
    return JSONResponse({"detail": detail}, status_code=422)


async def unreadable_body(request: Request, error: StarletteHTTPException):
    """FastAPI's 400 for a body it could not read says only "There was an error parsing the body": say why (a body that
    is not UTF-8, the usual case). Every other HTTPException is answered as FastAPI would."""
    from fastapi.exception_handlers import http_exception_handler

    cause = error.__cause__
    if error.status_code == 400 and isinstance(cause, UnicodeDecodeError):
        detail = f"the body is not UTF-8: byte 0x{cause.object[cause.start]:02x} at position {cause.start}; send JSON encoded as UTF-8"
        return JSONResponse({"detail": detail}, status_code=400)
    return await http_exception_handler(request, error)


def shorten(value, limit: int = 100):
    """A JSON-safe, short copy of a client's input for an error body."""
    if isinstance(value, bytes):  # a body that is no JSON: as text, not a Python repr
        value = value.decode("utf-8", "backslashreplace")
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


def refuse_other_methods(app) -> None:
    """Each route's path answers the methods it does not take with 405, `Allow` and a JSON body. Without this, the UI
    mounted at / takes them: GET /predict was Gradio's 404 page."""
    allowed: dict[str, set[str]] = {}
    for route in app.router.routes:
        if isinstance(route, APIRoute):
            allowed.setdefault(route.path, set()).update(route.methods)

    def refusal(allow: str):
        def refuse():
            raise HTTPException(405, detail=f"method not allowed here; allowed: {allow}", headers={"Allow": allow})

        return refuse

    for path, methods in allowed.items():
        allow = ", ".join(sorted(methods))
        others = sorted({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} - methods)
        app.add_api_route(path, refusal(allow), methods=others, include_in_schema=False)


def add_predict_route(server: TriageServer, api: TriageAPI) -> None:
    """POST /predict, as LitServe's own, except that: the answer has a deadline (504 past it, never a hang), the worker's
    JSON is sent as it is (FastAPI would validate and serialize it a second time in this process), and it is documented
    with every response."""

    async def predict(request: PredictRequest, http: Request) -> model.Output:
        deadline = server.timeout + RUN_SECONDS
        try:
            answer = await ask_worker(server, request, deadline)
        except TimeoutError:
            return JSONResponse({"detail": f"no answer within {deadline:g} s: the inference worker is stuck or far behind"}, 504)
        http.state.batch_size = answer.batch_size
        if isinstance(answer.body, str):
            server.watch.answered()
            if server.shadow:  # a sample to the candidate in shadow, never waited for (app/shadow.py)
                server.shadow.offer(request, answer.body, trusted=bool(os.environ.get("LIT_SERVER_API_KEY")))  # as flag_case's
            return Response(answer.body, media_type="application/json")
        return JSONResponse(answer.body, status_code=500)

    server.app.add_api_route(
        api.api_path,
        predict,
        methods=["POST"],
        dependencies=key_dependencies(server, api),
        summary="Run the pipeline on one input",
        description=f"{contract.intro()} The pipeline's answer for one input, every field as the response schema says. "
        "Requests that arrive together are batched; each keeps its own flags, and its answer is the same as alone.",
        tags=["pipeline"],
        responses=error_responses(400, 401, 408, 413, 422, 500, 503, 504),
    )


_imported = []  # review.py once its import is complete (sys.modules has it half-imported while another thread runs it)


async def review_queue():
    """loop.review, imported at the first call, off the event loop: neither /predict nor the inference workers need it,
    and it weighs half a second at start."""
    if not _imported:
        _imported.append(await asyncio.to_thread(importlib.import_module, "loop.review"))
    return _imported[0]


async def flag_case(case: edge_cases.EdgeCase, client: str) -> CaseSaved:
    """What POST /cases does, and the MCP tool that flags (app/mcp_tools.py): the case into the review queue, with the
    same limits (without an API key: TRIAGE_FLAG_RATE per `client`, TRIAGE_MAX_PENDING, personal data masked). Each
    refusal is an HTTPException with its status and a one-line detail."""
    review = await review_queue()
    trusted = bool(os.environ.get("LIT_SERVER_API_KEY"))  # every caller got past the key: no rate limit, may keep PII
    case = case.model_copy(update={"source": edge_cases.CaseSource.api})
    try:
        flagged = await review.call(review.flag, [case], client=client, trusted=trusted)
    except ValidationError as error:  # say, a text of nothing but control characters: empty once cleaned
        raise HTTPException(422, detail=f"{contract.error_message(error)} (after cleaning the text)") from None
    except review.TooManyFlags as error:
        raise HTTPException(429, detail=str(error), headers={"Retry-After": str(error.retry_after)}) from None
    except review.QueueFull as error:
        raise HTTPException(507, detail=str(error)) from None
    except review.QueueUnavailable as error:
        raise HTTPException(503, detail=str(error)) from None
    ((saved, new),) = flagged
    return CaseSaved(id=saved.id, new=new, state="pending" if new else "already flagged", case=saved)


def add_case_routes(server: ls.LitServer) -> None:
    """POST /cases flags an edge case into the review queue (review.py); GET /cases lists the suite or the queue;
    POST /cases/review accepts or rejects flagged cases, with the reviewer's key. The routes are async: their work runs
    on the queue's own threads (review.call), never on those that answer /health, /predict and the app."""
    auth = key_dependencies(server)  # the API key, when one is set

    async def post_case(case: edge_cases.EdgeCase, request: Request, response: Response) -> CaseSaved:
        saved = await flag_case(case, client_of(request))
        response.status_code = 201 if saved.new else 200
        return saved

    async def get_cases(
        state: Annotated[CaseState, Query(description="`suite`: the regression suite file; else the queue's")] = CaseState.suite,
        offset: int = Query(0, ge=0, le=2**62),  # a database takes a 64-bit offset, not any integer
        limit: int = Query(50, ge=1, le=500),
    ) -> CasePage | QueuePage:
        review = await review_queue()

        def page() -> CasePage | QueuePage:
            if state == CaseState.suite:
                store = edge_cases.read_cases()
                page = store.cases[offset : offset + limit]
                return CasePage(total=len(store.cases), offset=offset, limit=limit, cases=page, skipped=store.skipped)
            queued, total = review.cases(state.value, offset, limit)
            cases = [QueuedCase(**f._asdict()) for f in queued]
            return QueuePage(state=state.value, total=total, offset=offset, limit=limit, counts=review.counts(), cases=cases)

        try:
            return await review.call(page)
        except (edge_cases.StoreUnavailable, review.QueueUnavailable) as error:
            raise HTTPException(503, detail=str(error)) from None

    async def post_review(decision: Decision, request: Request) -> Reviewed:
        review = await review_queue()
        key = os.environ.get("TRIAGE_REVIEW_KEY") or os.environ.get("LIT_SERVER_API_KEY")
        if not key:
            raise HTTPException(403, detail="reviewing over HTTP is off: set TRIAGE_REVIEW_KEY (or LIT_SERVER_API_KEY) on the "
                                "server, or run python -m loop cases accept|reject on its machine")  # fmt: skip
        if not same_secret(header_bytes(request, "x-review-key"), key):  # in any Unicode: UTF-8 bytes compared
            raise HTTPException(401, detail="the header X-Review-Key is missing or wrong")
        reviewer = decision.reviewer or "api"

        def decide() -> Reviewed:
            if decision.accept:
                accepted = review.accept(decision.ids, reviewer, expected=decision.expected, train=decision.train)
                linked = dict(zip(dict.fromkeys(decision.ids), [c.id for c in accepted], strict=True))
                return Reviewed(changed=len(accepted), accepted=[c.id for c in accepted], suite_ids=linked, counts=review.counts())
            return Reviewed(changed=review.reject(decision.ids, reviewer), counts=review.counts())

        try:
            return await review.call(decide)
        except review.NotPending as error:
            raise HTTPException(409, detail=str(error)) from None
        except review.QueueUnavailable as error:
            raise HTTPException(503, detail=str(error)) from None
        except edge_cases.StoreFull as error:
            raise HTTPException(507, detail=str(error)) from None
        except edge_cases.StoreUnavailable as error:
            raise HTTPException(503, detail=str(error)) from None

    server.app.add_api_route(
        "/cases",
        post_case,
        methods=["POST"],
        status_code=201,
        dependencies=auth,
        summary="Flag an edge case",
        description="Puts an input with its expected answer in the review queue, pending until a reviewer accepts it into the "
        "regression suite or rejects it: 201 with the case id, or 200 when the same case was already flagged (counted once "
        "more). Without an API key on the server, each client may flag TRIAGE_FLAG_RATE cases a minute (429) and the queue "
        "holds TRIAGE_MAX_PENDING pending cases (507); e-mail, phone and card numbers are masked.",
        tags=["edge cases"],
        responses={
            200: {"description": "The same case was already flagged", "model": CaseSaved},
            **error_responses(400, 401, 408, 413, 422, 429, 503, 507),
        },
    )
    server.app.add_api_route(
        "/cases",
        get_cases,
        methods=["GET"],
        dependencies=auth,
        summary="List the edge cases, oldest first",
        description="`state=suite` (the default): a page of the regression suite, `skipped` naming the file's bad lines. "
        "`state=pending|accepted|rejected`: a page of the review queue, with the counts of each state.",
        tags=["edge cases"],
        responses=error_responses(401, 422, 503),
    )
    server.app.add_api_route(
        "/cases/review",
        post_review,
        methods=["POST"],
        dependencies=auth,
        summary="Accept or reject flagged cases (reviewers)",
        description="With the header X-Review-Key (TRIAGE_REVIEW_KEY, or else LIT_SERVER_API_KEY): `accept: true` exports "
        "pending cases to the regression suite file, with `expected` when given (the reviewer's answer); `accept: false` "
        "rejects them. A case is decided once: when one of the ids is not pending (another reviewer was first), nothing "
        "changes and the answer is 409 naming who decided it and how. 403 when the server has no reviewer key.",
        tags=["edge cases"],
        responses=error_responses(400, 401, 403, 408, 409, 413, 422, 503, 507),
    )


def client_of(request: Request) -> str:
    """Who is flagging, for the rate limit: the client's address (behind a proxy, its first X-Forwarded-For hop when
    TRIAGE_TRUST_PROXY=1)."""
    forwarded = request.headers.get("x-forwarded-for", "") if os.environ.get("TRIAGE_TRUST_PROXY") == "1" else ""
    return forwarded.split(",")[0].strip()[:200] or (request.client.host if request.client else "no address")


def add_service_routes(server: TriageServer, litserve_info) -> None:
    """/health (from memory, never behind the key), /live, /metrics and /info (LitServe's endpoint, documented)."""

    def ready() -> PlainTextResponse:
        return PlainTextResponse("ok") if server.watch.ok else PlainTextResponse("not ready", 503)

    server.app.add_api_route(  # never behind the API key: load balancers and Kubernetes probe it
        "/health",
        ready,
        methods=["GET"],
        summary="Ready?",
        description=f"`ok` while requests go through end to end: every inference worker is ready and an answer (a client's, or "
        f"a canary's: the Input's own example, sent every second) came back within the last {HEALTH_FRESH} s ({RUN_SECONDS} s while "
        "clients' requests are in flight: a batch may take that long). 503 `not ready` otherwise: starting, "
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
        "answers by the pipeline's label and whether a person must answer (where it has them), worker starts. Counts and "
        "timings only, never an input's text; open like /health.",
        tags=["service"],
        response_class=PlainTextResponse,
    )
    server.app.add_api_route(
        "/info",
        litserve_info.endpoint,
        methods=["GET"],
        dependencies=key_dependencies(server),  # LitServe's own compares the key as str: one outside ASCII never matched
        summary="What is serving",
        description="The pipeline's title and version, what it was built from (model, encoder, data hashes), its label with "
        "the label's values, each labelled set's rows and metrics, every flag with its default and bounds, and the batching "
        "settings.",
        tags=["service"],
        response_model=ServerInfo,
        responses=error_responses(401),
    )


def info() -> dict:
    """What /info reports, from the contract: the pipeline's title and version, what it was built from, its label and the
    label's values (an enum's), each labelled set's rows and metrics (from the artifacts' manifest, as of the start),
    the flags with defaults and bounds, batching."""
    label, manifest = contract.label(), saved_manifest()
    values = None
    if label and contract.is_enum(model.Output.model_fields[label].annotation):
        values = [v.value for v in contract.base_type(model.Output.model_fields[label].annotation)]
    return {
        "title": contract.title(),
        "pipeline_version": model.PIPELINE_VERSION,
        **builder.served(),
        "shadow": os.environ.get("TRIAGE_SHADOW") or None,  # the candidate in shadow (main.py sets it), or None
        "label": {"field": label, "values": values} if label else None,
        "labelled_sets": {name: manifest.get(name, {}) for name in contract.labelled_sets()},
        "flags": model.Flags.model_json_schema()["properties"],
        "batching": {k: SETTINGS[k] for k in ("max_batch_size", "batch_timeout", "timeout", "workers")},
        "max_body_bytes": SETTINGS["max_body_bytes"],
    }


def saved_manifest() -> dict:
    """The served artifacts' manifest as saved, without loading or building anything; {} before the first build."""
    try:
        return json.loads((builder.ARTIFACTS_DIR / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


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
            title=f"{contract.title()} API",
            swagger_js_url="/docs-static/swagger-ui-bundle.js",
            swagger_css_url="/docs-static/swagger-ui.css",
            swagger_favicon_url="/docs-static/favicon.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
        )

    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)


def build_server() -> TriageServer:
    """The LitServer with /predict, /cases, /health (always open), /live, /metrics, /info and /mcp (app/mcp_tools.py);
    main.py mounts the UI on it."""
    api = TriageAPI(max_batch_size=SETTINGS["max_batch_size"], batch_timeout=SETTINGS["batch_timeout"], api_path="/predict")
    server = TriageServer(
        api,
        accelerator="cpu",
        workers_per_device=SETTINGS["workers"],
        timeout=SETTINGS["timeout"],
        model_metadata=info(),
        restart_workers=True,  # a dead inference worker is replaced, not the end of the server
        graceful_timeout=SETTINGS["graceful_timeout"],  # what a SIGTERM waits for requests in flight
    )
    server.watch = Watch(server, canary=Canary.model_validate(contract.input_example()), busy_fresh=RUN_SECONDS)
    litserve_routes = take_routes(server)  # "/" becomes the UI; /predict, /health and /info are this server's
    add_predict_route(server, api)
    add_case_routes(server)
    self_hosted_docs(server.app)
    add_service_routes(server, litserve_routes["/info"])
    from app import mcp_tools  # here, not at the top: the inference workers import this module, and mcp weighs 0.6 s

    mcp_tools.add_mcp_route(server)
    refuse_other_methods(server.app)  # last: every route is in
    server.app.add_middleware(WorkerWatch, watch=server.watch)
    server.app.add_middleware(  # outside WorkerWatch
        RequestGuard, max_size=SETTINGS["max_body_bytes"], timeout=SETTINGS["body_timeout"], paths=API_PATHS
    )
    server.app.add_middleware(observe.Observe)  # outside both: their 408, 413 and 503 are counted and logged too
    server.app.add_exception_handler(RequestValidationError, validation_error)
    server.app.add_exception_handler(StarletteHTTPException, unreadable_body)  # what FastAPI's body parsing raises
    server.app.title, server.app.version = f"{contract.title()} API", model.PIPELINE_VERSION
    server.app.description = f"{contract.intro()}\n\nRun the pipeline (POST /predict) and flag edge cases (/cases). The app is at /."
    return server
