"""The one server: the LitServe API and the Gradio app on one port (also the Hugging Face Space's app file).

    python app/main.py [--host 0.0.0.0] [--port 7860] [--no-ui]
    python -m app.main

The UI is at /, the API at /predict, /docs, /openapi.json, /health and /info. Host and port default to
GRADIO_SERVER_NAME and GRADIO_SERVER_PORT (0.0.0.0:7860, as Spaces expect). Ctrl-C or SIGTERM stops
the whole process tree.
"""

import argparse
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python app/main.py` puts app/ on the path, not the repository root
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from app.api import build_server  # noqa: E402  (the inference workers re-import this module: keep it light)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the triage API and UI on one port.")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--no-ui", action="store_true", help="serve the API only")
    args = parser.parse_args(argv)

    server = build_server()
    if not args.no_ui:
        import gradio as gr

        from app import ui

        public = f"http://{'localhost' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
        gr.mount_gradio_app(server.app, ui.build(api_url=public), path="/", theme=ui.THEME, css=ui.CSS)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C: no orphans
    server.run(host=args.host, port=args.port, num_api_servers=1, generate_client_file=False)


if __name__ == "__main__":
    main()
