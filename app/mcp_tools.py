"""The pipeline as tools for agents: MCP (Model Context Protocol) over streamable HTTP at /mcp, on the API's port.

Two tools, both read from the contract, so that a fork's pipeline gets its own:
    <title>              runs the pipeline on one input: its schema is POST /predict's body (the Input's fields and
                         `flags`), its answer the Output as /predict gives it, from the inference workers (never run here)
    flag_<title>_case    POST /cases: the same body, the same limits (app/api.py's flag_case)
The UI's events are not tools (Gradio's mcp_server stays off). With LIT_SERVER_API_KEY set, /mcp needs the header
X-API-Key like /predict (401 without it).

Built on the mcp package's low-level `Server`: its MCPServer derives a tool's schema from a Python function's signature,
while these schemas are the pipeline's pydantic models, known once model.py is read (the low-level server takes them as
they are). Stateless, with JSON answers: each POST is one request and its answer, no session to keep, so replicas behind
a load balancer need no affinity and a SIGTERM's drain waits for no open stream. No DNS-rebinding check of Host: the
server's other routes have none, and a Space's or a proxy's host name would be refused.
"""

import json
import os
import re

from fastapi import HTTPException
from mcp import types
from mcp.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import BaseModel, ValidationError
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

import model
from app.api import RUN_SECONDS, SETTINGS, CaseSaved, PredictRequest, client_of, flag_case
from app.guards import same_secret, send_json
from app.litserve_internals import TriageServer, ask_worker
from building import contract
from loop.edge_cases import EdgeCase

PATH = "/mcp"


def first_line(schema: type[BaseModel]) -> str:
    """A schema's docstring's first line, as a sentence of a tool's description ("" for none)."""
    line = next(iter((schema.__doc__ or "").strip().splitlines()), "")
    return line if not line or line.endswith((".", "!", "?")) else f"{line}."


def tool_names() -> tuple[str, str]:
    """The run tool's name (the pipeline's title as a tool name: `Expense approval` -> `expense_approval`) and the flag
    tool's."""
    name = re.sub(r"[^a-z0-9]+", "_", contract.title().lower()).strip("_")[:100] or "pipeline"
    return name, f"flag_{name}_case"


def tools() -> list[types.Tool]:
    """The two tools, each described from the contract: the pipeline's intro and its schemas' docstrings."""
    run, flag = tool_names()
    title = contract.title()
    masked = " and personal data is masked" if contract.masking() else ""
    return [
        types.Tool(
            name=run,
            title=title,
            description=f"{contract.intro()} Input: {first_line(model.Input)} Flags are optional, each with its default. "
            f"{first_line(model.Output)} It is what POST /predict answers.",
            input_schema=PredictRequest.model_json_schema(),
            output_schema=model.Output.model_json_schema(mode="serialization"),
        ),
        types.Tool(
            name=flag,
            title=f"Flag a case of {title}",
            description=f"Puts a case of {title} in the review queue: an input, the flags it ran with and the right answer "
            f"(`expected`). {first_line(model.Expected)} The case waits until a reviewer accepts it into the regression "
            "suite or rejects it; the same case flagged again is counted, not repeated. It is what POST /cases does: without "
            f"an API key on the server, each client may flag a few cases a minute{masked}.",
            input_schema=EdgeCase.model_json_schema(),
            output_schema=CaseSaved.model_json_schema(mode="serialization"),
        ),
    ]


def answered(body: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=body)], structured_content=json.loads(body))


def refused(detail: str) -> types.CallToolResult:
    """A tool's error as the agent reads it: one line, what /predict or /cases would say in its `detail`."""
    return types.CallToolResult(content=[types.TextContent(type="text", text=detail)], is_error=True)


async def pipeline_answer(server: TriageServer, request: PredictRequest) -> types.CallToolResult:
    """POST /predict's way: through the workers' queue, with the same deadline (TRIAGE_TIMEOUT plus a batch's time)."""
    deadline = server.timeout + RUN_SECONDS
    try:
        answer = await ask_worker(server, request, deadline)
    except TimeoutError:
        return refused(f"no answer within {deadline:g} s: the inference worker is stuck or far behind")
    if not isinstance(answer.body, str):  # the pipeline failed on this input
        return refused(answer.body["detail"])
    server.watch.answered()
    return answered(answer.body)


def mcp_server(server: TriageServer) -> Server:
    run, flag = tool_names()

    async def list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools())

    async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        arguments = params.arguments or {}
        try:
            if params.name == run:
                return await pipeline_answer(server, PredictRequest.model_validate(arguments))
            if params.name == flag:
                saved = await flag_case(EdgeCase.model_validate(arguments), client_of(ctx.request))
                return answered(saved.model_dump_json())
        except ValidationError as error:  # what /predict's and /cases' 422 name: each field and its problem
            return refused(contract.error_message(error))
        except HTTPException as error:  # 503, 504 from the workers; 429, 503, 507 from the review queue
            return refused(error.detail)
        return refused(f"no tool named {params.name!r}: the tools are {run} and {flag}")

    return Server(run, title=contract.title(), description=contract.intro(), version=model.PIPELINE_VERSION,
                  on_list_tools=list_tools, on_call_tool=call_tool)  # fmt: skip


class KeyedEndpoint:
    """/mcp behind the API key when one is set (X-API-Key compared as /predict's check does: UTF-8 bytes, constant time),
    POST only: a stateless server has nothing to push, so the event stream a GET would open stays silent and holds its
    connection, and a SIGTERM's drain, until the client leaves; the protocol lets a server answer GET 405 instead."""

    def __init__(self, sessions: StreamableHTTPSessionManager, key: str | None):
        self.sessions, self.key = sessions, key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key and not same_secret(dict(scope["headers"]).get(b"x-api-key", b""), self.key):
            return await send_json(send, 401, {"detail": "the header X-API-Key is missing or wrong"})
        if scope["method"] != "POST":
            return await send_json(send, 405, {"detail": "method not allowed here; allowed: POST"}, [(b"allow", b"POST")])
        await self.sessions.handle_request(scope, receive, send)


def add_mcp_route(server: TriageServer) -> None:
    """/mcp on the server's app (before the UI that main.py mounts at /); its session manager runs in the HTTP process's
    lifespan, beside the UI (`server.alongside`). The body limit is the API's (TRIAGE_MAX_BODY_BYTES)."""
    sessions = StreamableHTTPSessionManager(
        mcp_server(server),
        stateless=True,
        json_response=True,
        security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        max_request_body_size=SETTINGS["max_body_bytes"],
    )
    server.app.router.routes.append(Route(PATH, KeyedEndpoint(sessions, os.environ.get("LIT_SERVER_API_KEY") or None)))
    server.alongside.append(sessions.run)
