"""The UI at /, loaded once the API already answers: importing Gradio takes seconds (bench/RESULTS.md, section 3), the API
needs none of it. So the HTTP process serves /predict and /health at once and builds the UI in a thread beside; until it
is mounted, / and Gradio's routes answer 503 "the app is starting" with Retry-After (a browser gets a page that reloads
itself). A UI that fails to load ends the server (exit status 1, its error in the log), as a failed start did before."""

import asyncio
import html
import logging
import os
import threading
from concurrent.futures import Future, InvalidStateError
from contextlib import asynccontextmanager, suppress

from starlette.types import Receive, Scope, Send

from app.guards import send_json

log = logging.getLogger("triage")
STARTING = """<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="1"><title>Starting</title>
<body style="font-family:sans-serif;margin:4em">The app is starting: this page reloads itself in a second.
The API (<a href="{root}/docs">docs</a>) already answers."""


class LateUI:
    """An ASGI app mounted at /: a 503 until `serving` has built the Gradio app, then that app. `build` (run in a thread)
    returns a FastAPI app with the Gradio app mounted (`gr.mount_gradio_app`); its lifespan, Gradio's start-up (the
    queue), runs on the server's event loop. `gradio` is the mounted Gradio app once ready (KeyGate reads it)."""

    def __init__(self, build, ready_message: str):
        self.build, self.ready_message = build, ready_message
        self.gradio = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.gradio is not None:
            return await self.gradio(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1013})  # try again later
        headers = [(b"retry-after", b"1"), (b"cache-control", b"no-store")]
        if b"text/html" in dict(scope["headers"]).get(b"accept", b""):
            await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/html"), *headers]})
            page = STARTING.format(root=html.escape(scope.get("root_path", ""), quote=True))
            return await send({"type": "http.response.body", "body": page.encode()})
        await send_json(send, 503, {"detail": "the app is starting: retry in a second (the API already answers)"}, headers)

    @asynccontextmanager
    async def serving(self):
        """In the HTTP process while it serves: the build in a daemon thread (a stop never waits for an import), then
        Gradio's own lifespan until the server stops."""
        task = asyncio.get_running_loop().create_task(self._load())
        yield
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task

    async def _load(self) -> None:
        built = Future()

        def build() -> None:
            try:
                result, error = self.build(), None
            except BaseException as failed:  # handed to the event loop, which ends the server
                result, error = None, failed
            with suppress(InvalidStateError):  # cancelled: the server stopped while the UI loaded, nothing waits for it
                if error is None:
                    built.set_result(result)
                else:
                    built.set_exception(error)

        threading.Thread(target=build, name="triage-ui", daemon=True).start()
        try:
            holder = await asyncio.wrap_future(built)
            async with holder.router.lifespan_context(holder):
                self.gradio = holder.routes[-1].app
                log.info(self.ready_message)
                await asyncio.Event().wait()  # until the server stops (cancelled)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the app (UI) failed to load: stopping the server")
            os._exit(1)  # the HTTP process: the main process's supervisor ends the whole server with status 1
