"""The ASGI guards in front of the app, outermost first: KeyGate (credentials), then, inside app/observe.py's Observe,
RequestGuard (a body's size and time) and WorkerWatch (a request whose worker died). Each answers with a JSON body."""

import asyncio
import json
import secrets
from http.cookies import CookieError, SimpleCookie

from fastapi import HTTPException, Request
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Receive, Scope, Send


def same_secret(given: str | bytes | None, wanted: str) -> bool:
    """Whether a credential is the one wanted, in constant time, in any Unicode: both compared as UTF-8 bytes (a header
    arrives as bytes: `given` as they came; secrets.compare_digest takes no str outside ASCII)."""
    if given is None:
        return False
    given = given if isinstance(given, bytes) else given.encode("utf-8", "surrogateescape")
    return secrets.compare_digest(given, wanted.encode("utf-8", "surrogateescape"))


def header_bytes(request, name: str) -> bytes:
    """A request header's value as the client sent it (Starlette decodes headers as Latin-1, which this undoes)."""
    return request.headers.get(name, "").encode("latin-1")


def api_key_check(key: str):
    """The API key's route dependency: LitServe's own (`api_key_auth`) compares str, so a key outside ASCII never
    matched; this compares the header's bytes with the key's UTF-8."""

    async def check(request: Request) -> None:  # async: FastAPI runs a sync dependency in its thread pool
        if not same_secret(header_bytes(request, "x-api-key"), key):
            raise HTTPException(401, detail="the header X-API-Key is missing or wrong")

    return check


async def send_json(send: Send, status: int, body: dict, headers: list | None = None) -> None:
    start = {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), *(headers or [])]}
    await send(start)
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


class KeyGate:
    """With credentials set, nothing but /health, /metrics, the API docs and the UI's login page answers without them.

    A request passes with the header X-API-Key (API and UI alike: for the UI it stands for a login) or
    with the UI's login session (Gradio's cookie). Everything else, Gradio's own routes included, gets 401.
    Without an API key (a UI password alone) only the UI is behind the login: the API's own routes (/predict, /info,
    /cases, ...: every route of the app but the UI mounted beside them) stay as open as with no credentials.
    """

    OPEN = frozenset(
        {"/health", "/live", "/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json"}
        | {"/", "/login", "/login/", "/favicon.ico", "/theme.css"}
    )
    OPEN_PREFIXES = ("/assets/", "/static/", "/svelte/", "/gradio_api/theme.css", "/manifest.json", "/pwa_icon", "/docs-static/")

    def __init__(self, app: ASGIApp, key: str | None, ui=None):
        self.app, self.key, self.ui = app, key, ui  # ui: app/late_ui.py's LateUI (its Gradio app once loaded), or None
        self.token = secrets.token_urlsafe(24)  # the UI session that a valid X-API-Key stands for

    @property
    def gradio(self):
        gradio = self.ui and self.ui.gradio
        if gradio is not None:
            gradio.tokens.setdefault(self.token, "api-key")
        return gradio

    @staticmethod
    def login_check(key: str | None, user: str, password: str | None):
        """Gradio's `auth` function: the UI's own user and password, or any name with the API key as password."""

        def check(username: str, given: str) -> bool:
            as_user = password is not None and same_secret(username, user) and same_secret(given, password)
            return as_user or (key is not None and same_secret(given, key))

        return check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.OPEN or scope["path"].startswith(self.OPEN_PREFIXES):
            return await self.app(scope, receive, send)
        if self.key is None and self._api_route(scope):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.key is not None and same_secret(headers.get(b"x-api-key", b""), self.key):
            if (gradio := self.gradio) is not None:  # Gradio checks its own cookie: give it the session the key stands for
                cookie = f"access-token-unsecure-{gradio.cookie_id}={self.token}".encode()
                rest = [(k, v) for k, v in scope["headers"] if k != b"cookie"]
                scope = {**scope, "headers": [*rest, (b"cookie", b"; ".join(filter(None, [headers.get(b"cookie"), cookie])))]}
            return await self.app(scope, receive, send)
        if self._session(headers.get(b"cookie", b"").decode("latin-1")):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        await send_json(send, 401, {"detail": "credentials missing or wrong: send the header X-API-Key, or log in to the app at /"})

    @staticmethod
    def _api_route(scope: Scope) -> bool:
        """Whether the request is for one of the API's routes, not the UI mounted beside them (Starlette puts the app in
        the scope before any middleware runs)."""
        routes = scope["app"].router.routes if "app" in scope else []
        return any(not isinstance(r, Mount) and r.matches(scope)[0] != Match.NONE for r in routes)

    def _session(self, cookie_header: str) -> bool:
        gradio = self.gradio
        if gradio is None or not cookie_header:
            return False
        cookies = SimpleCookie()
        try:
            cookies.load(cookie_header)
        except CookieError:
            return False
        names = (f"access-token-{gradio.cookie_id}", f"access-token-unsecure-{gradio.cookie_id}")
        return any(name in cookies and gradio.tokens.get(cookies[name].value) for name in names)


class RequestGuard:
    """Bodies that stall or never end: every request body must keep arriving (a gap over `timeout` seconds
    gives 408); on `paths` (the API's) the whole body must arrive within `timeout` and hold at most `max_size`
    bytes (413). Bounds how long a slow or stalled client can hold a connection."""

    def __init__(self, app: ASGIApp, max_size: int, timeout: float, paths: tuple[str, ...]):
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

    LitServe (restart_workers=True) replaces a dead worker; `watch` (app/health.py) sees its end of the queue close or
    its status turn to starting, and cancels the requests in flight then (`watch.holding`: their tasks, no new task
    per request), which get the 503 here.
    """

    def __init__(self, app: ASGIApp, watch, paths: tuple[str, ...] = ("/predict",)):
        self.app, self.watch, self.paths = app, watch, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        task, started = asyncio.current_task(), False

        async def tracked_send(message: dict) -> None:
            nonlocal started
            started = True
            await send(message)

        self.watch.holding[task] = False
        try:
            await self.app(scope, receive, tracked_send)
        except asyncio.CancelledError:
            if not self.watch.holding.get(task) or task.uncancel():  # cancelled for another reason: as it was
                raise
            if not started:
                detail = "the inference worker handling this request stopped; it is being replaced: retry in a few seconds"
                await send_json(send, 503, {"detail": detail})
        finally:
            self.watch.holding.pop(task, None)
