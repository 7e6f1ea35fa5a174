"""The one server: the LitServe API and the Gradio app on one port (also the Hugging Face Space's app file).

    python app/main.py [--host 0.0.0.0] [--port 7860] [--no-ui]
    python -m app.main

The UI is at /, the API at /predict, /docs, /openapi.json, /health and /info, its MCP tools for agents at /mcp
(app/mcp_tools.py). The port answers from the first second:
while the inference workers start (a first start builds the artifacts: minutes), /live says ok and everything else 503
naming what it waits for, "building the artifacts: step 3 of 6, ..." (StartingPage in app/litserve_internals.py). The
API answers next; the UI loads beside it in the HTTP process (app/late_ui.py: / says 503 "starting" for those seconds).
Host and port default to GRADIO_SERVER_NAME and GRADIO_SERVER_PORT (0.0.0.0:7860, as Spaces expect). Ctrl-C or
SIGTERM, to this process or to its whole process group, drains and stops the whole process tree. The server serves,
in every process, the version it found served as it started (a promotion takes effect at the next start), and runs
the candidate versions/shadow.json names, if any, in shadow (app/shadow.py).

Credentials (environment variables). With LIT_SERVER_API_KEY set, nothing but /health, the API docs
(/docs, /openapi.json) and the UI's login page answers without credentials: the API takes the header
X-API-Key; the UI a login (Gradio's), as TRIAGE_UI_USER / TRIAGE_UI_PASSWORD or any name with the API
key as password, or the same X-API-Key header (gradio_client's `headers=`). TRIAGE_UI_PASSWORD alone
puts only the UI behind the login. With neither, the app is the open demo. TRIAGE_MAX_UPLOAD_MB caps
an upload (default 50).
"""

import argparse
import atexit
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python app/main.py` puts app/ on the path, not the repository root
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TRIAGE_ORT_SPINNING", "0")  # ONNX Runtime's idle threads would spin against the HTTP process (bench/RESULTS.md)
METRICS_DIR = None
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:  # every process of this server writes its metrics here; /metrics adds them up
    METRICS_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="triage-metrics-")
    atexit.register(shutil.rmtree, METRICS_DIR, ignore_errors=True)
logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
logging.getLogger("triage").setLevel(logging.INFO)
logging.getLogger("triage.access").handlers[:] = [logging.StreamHandler()]  # the request log: bare JSON lines
logging.getLogger("triage.access").propagate = False
log = logging.getLogger("triage")

from fastapi import FastAPI  # noqa: E402

from building import contract  # noqa: E402

try:  # before anything reads model.py: a part of the contract missing or ill-shaped is one line, not a traceback
    contract.check()
except contract.ContractError as error:
    sys.exit(f"cannot start: {error}")

from building import builder, versions  # noqa: E402
from building.files import pasteable  # noqa: E402

if builder.UNSERVABLE:  # a served.json that cannot be read: one line, not a traceback, and never artifacts/ instead
    sys.exit(pasteable(f"cannot start: {builder.UNSERVABLE}"))

import recipe  # noqa: E402
from app import shadow  # noqa: E402
from app.api import SETTINGS, build_server  # noqa: E402  (the inference workers re-import this module: keep it light)
from app.guards import KeyGate  # noqa: E402
from app.health import watch_parent  # noqa: E402
from app.late_ui import LateUI  # noqa: E402
from app.litserve_internals import request_shutdown  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=f"Serve {contract.title()}: the API and the UI on one port.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--no-ui", action="store_true", help="serve the API only")
    args = parser.parse_args(argv)
    # The folder this server serves, resolved once (as builder was imported): every process it starts or restarts (the
    # spawned inference workers import anew) serves this one, whatever is promoted meanwhile: that takes effect at the
    # next start, and /info, /metrics, the UI and /predict name and use the same version
    os.environ["TRIAGE_ARTIFACTS_DIR"] = str(builder.ARTIFACTS_DIR.absolute())

    key, ui_user, ui_password = (os.environ.get(v) or None for v in ("LIT_SERVER_API_KEY", "TRIAGE_UI_USER", "TRIAGE_UI_PASSWORD"))
    guarded = bool(key or ui_password)  # KeyGate in front, and the UI behind a login
    public = f"http://{'localhost' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    log.info(
        "starting: %d inference worker(s) on the %s encoder%s",
        SETTINGS["workers"],
        builder.encoder_name() if recipe.ENCODER else "no",
        "" if args.no_ui else ", and the UI",
    )
    candidate = in_shadow()
    os.environ["TRIAGE_SHADOW"] = candidate or ""  # /info names it; every process of this server sees the same
    try:
        if versions.name_of(builder.ARTIFACTS_DIR):  # a version as built and as its gate judged it, or one line here
            versions.unchanged(builder.ARTIFACTS_DIR)
        server = build_server()
    except versions.VersionError as error:  # the served version's folder is gone, broken or changed
        sys.exit(pasteable(f"cannot start: {error}"))  # its advice (python -m loop ...) as this shell can paste it
    if METRICS_DIR:  # made above: removed however the server stops, os._exit included
        server.temporary.append(METRICS_DIR)
    starting = tempfile.mkdtemp(prefix="triage-start-")  # a build in a worker says how far it is here; the port's page reads it
    server.temporary.append(starting)
    atexit.register(shutil.rmtree, starting, ignore_errors=True)
    server.progress = Path(starting) / "progress"
    os.environ["TRIAGE_BUILD_PROGRESS"] = str(server.progress)
    if candidate:  # one more process, for the candidate in shadow (app/shadow.py)
        server.shadow = shadow.start(candidate, builder.served()["version"], starting)
    server.ready_message = f"ready: the API at {public}/predict, its docs at {public}/docs"
    if os.environ.get("TRIAGE_PROBE_PORT"):  # /health and /live for Kubernetes, answered at once under any load
        server.watch.probe_address = (args.host, int(os.environ["TRIAGE_PROBE_PORT"]))

    def build_ui() -> FastAPI:  # in the HTTP process, in a thread, while the API already answers: Gradio takes seconds
        import gradio as gr

        from app import ui

        login = KeyGate.login_check(key, ui_user or "triage", ui_password) if guarded else None
        upload_mb = int(os.environ.get("TRIAGE_MAX_UPLOAD_MB", "50"))
        return gr.mount_gradio_app(
            FastAPI(),
            ui.build(api_url=public),
            path="/",
            theme=ui.THEME,
            css=ui.CSS,
            auth=login,
            auth_message="Log in with the app's user name and password, or with any name and the API key as password.",
            max_file_size=f"{upload_mb}mb",
            show_error=False,  # an unexpected error's message may name server paths: clients get gr.Error messages only
        )

    late = None if args.no_ui else LateUI(build_ui, ready_message=f"ready: the app at {public}/")
    if late:
        server.app.mount("/", late)
        server.alongside.append(late.serving)
    if guarded:
        server.app.add_middleware(KeyGate, key=key, ui=late)

    main_pid = os.getpid()

    def forked() -> None:
        """In a process forked from this one (the HTTP process, LitServe's manager): it ends when this one dies, however
        it dies (the spawned inference workers watch it themselves: TriageAPI.setup), so a restart on the same port
        works; and it leaves SIGTERM and SIGINT to this one. systemd, many supervisors and a terminal's Ctrl-C signal
        the whole process group: the manager would die under requests in flight. The HTTP process's uvicorn installs
        its own handlers as it starts serving: from anyone, a signal only makes it drain, as this one asks it to."""
        if os.getppid() == main_pid:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            watch_parent(main_pid)

    os.register_at_fork(after_in_child=forked)

    def on_stop(signum, frame):  # drain, then stop the whole tree: no orphans, no traceback
        if os.getpid() == main_pid and not request_shutdown(server):  # still starting
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_stop)  # from a supervisor, to this process or to its whole group: the same drain
    signal.signal(signal.SIGINT, on_stop)  # Ctrl-C: the same (a terminal sends it to the whole group: the others ignore it)
    server.run(
        host=args.host,
        port=args.port,
        num_api_servers=1,
        generate_client_file=False,
        limit_concurrency=SETTINGS["max_connections"],
        access_log=False,  # app/observe.py writes one JSON line per API request instead
    )


def in_shadow() -> str | None:
    """The version to run in shadow from this start (versions/shadow.json), as it was built; a shadow that cannot run is a
    warning, never a reason not to serve."""
    try:
        candidate = versions.shadowed()
        if candidate and candidate != versions.name_of(builder.ARTIFACTS_DIR):
            versions.intact(candidate)
            return candidate
    except versions.VersionError as error:
        log.warning("shadow: none this time: %s", error)
    return None


if __name__ == "__mp_main__":  # an inference worker (spawned: it imports this file): a signal to the group is for the main process
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
elif __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C before the server was up: one line, no traceback
        log.info("stopped before the server was ready")
        sys.exit(130)
