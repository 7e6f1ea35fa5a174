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
    LIT_SERVER_API_KEY      when set, /predict and /info need the header X-API-Key (401); /health stays open
"""

import json
import os

import litserve as ls
from pydantic import ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

import model

SETTINGS = {
    "max_batch_size": int(os.environ.get("TRIAGE_MAX_BATCH_SIZE", "32")),
    "batch_timeout": float(os.environ.get("TRIAGE_BATCH_TIMEOUT", "0.005")),
    "timeout": float(os.environ.get("TRIAGE_TIMEOUT", "30")),
    "workers": int(os.environ.get("TRIAGE_WORKERS", "1")),
    "max_body_bytes": int(os.environ.get("TRIAGE_MAX_BODY_BYTES", str(64 * 1024))),
}


class TriageRequest(model.Ticket):
    """A ticket to triage, and optionally the feature flags to run the pipeline with."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{**model.Ticket.model_config["json_schema_extra"]["examples"][0], "flags": {"top_k": 2}}]},
    )
    flags: model.Flags = Field(default_factory=model.Flags, description="Feature flags; every one is optional.")


class TriageAPI(ls.LitAPI):
    def setup(self, device):
        model.resources()  # load the model and artifacts (built if missing) before /health says ready

    def decode_request(self, request: TriageRequest):
        return request

    def predict(self, requests):
        batched = isinstance(requests, list)
        requests = requests if batched else [requests]
        tickets = [model.Ticket.model_validate(r.model_dump(exclude={"flags"})) for r in requests]
        results = [_answer(r) for r in model.run_each(tickets, [r.flags for r in requests])]  # one failure fails one request
        return results if batched else results[0]

    def encode_response(self, output) -> model.Triage:
        return output


def _answer(result):
    if isinstance(result, Exception):  # fails FastAPI's response validation: a 500 for this request only
        return {"detail": f"the pipeline failed on this ticket: {type(result).__name__}"}
    return result


class BodyLimit:
    """413 for a request body over `max_size` bytes on the API paths (the UI's uploads are not limited here)."""

    def __init__(self, app: ASGIApp, max_size: int, paths: tuple[str, ...]):
        self.app, self.max_size, self.paths = app, max_size, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and int(declared) > self.max_size:
            return await self._reject(send)
        body, more = [], True
        while more:  # read the body (chunked or not) up to the limit, then replay it
            message = await receive()
            body.append(message.get("body", b""))
            more = message.get("more_body", False)
            if sum(map(len, body)) > self.max_size:
                return await self._reject(send)
        replay = iter([{"type": "http.request", "body": b"".join(body), "more_body": False}])

        async def replayed() -> dict:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)

    async def _reject(self, send: Send) -> None:
        detail = json.dumps({"detail": f"request body is larger than {self.max_size} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": detail})


def info() -> dict:
    """What /info reports: pipeline, model, categories, flags with defaults and bounds, batching."""
    fingerprint = model.fingerprint()
    return {
        "pipeline_version": model.PIPELINE_VERSION,
        "model": fingerprint["model"],
        "data": fingerprint["data"],
        "categories": {c.value: model.TEAMS[c] for c in model.Category},
        "flags": model.Flags.model_json_schema()["properties"],
        "batching": {k: SETTINGS[k] for k in ("max_batch_size", "batch_timeout", "timeout", "workers")},
        "max_body_bytes": SETTINGS["max_body_bytes"],
    }


def build_server() -> ls.LitServer:
    """The LitServer with /predict, /health (always open) and /info; main.py mounts the UI on it."""
    api = TriageAPI(max_batch_size=SETTINGS["max_batch_size"], batch_timeout=SETTINGS["batch_timeout"], api_path="/predict")
    server = ls.LitServer(
        api,
        accelerator="cpu",
        workers_per_device=SETTINGS["workers"],
        timeout=SETTINGS["timeout"],
        model_metadata=info(),
        fast_queue=True,
        middlewares=[(BodyLimit, {"max_size": SETTINGS["max_body_bytes"], "paths": ("/predict",)})],
    )
    server.uvicorn_graceful_timeout = 2  # open UI connections must not hold a shutdown for 30 s
    routes = server.app.router.routes
    health = next(r for r in routes if getattr(r, "path", None) == "/health")
    routes[:] = [r for r in routes if getattr(r, "path", None) not in ("/", "/health")]  # "/" becomes the UI
    server.app.add_api_route("/health", health.endpoint, methods=["GET"], include_in_schema=False)  # no API key
    return server
