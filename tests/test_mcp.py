"""The pipeline as MCP tools (app/mcp_tools.py), through the `mcp` package's own client over streamable HTTP against a
real server: the two tools and their schemas (the contract's), the run tool answering as POST /predict, the flag tool
queueing a case as POST /cases with the same limits, and the API key."""

import asyncio
import json
import subprocess
import sys

import httpx2
import litserve
import pytest
import requests
from conftest import ROOT, Server, example_input, expected_example, expected_matching, inputs, invalid_input
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

import model
from app.api import CaseSaved, PredictRequest
from app.guards import send_json
from app.mcp_tools import KeyedEndpoint, tool_names
from loop.edge_cases import EdgeCase

KEY = "mcp-test-key-ü"  # outside ASCII: compared as UTF-8 bytes, as /predict compares it
FLAG_RATE = 3


@pytest.fixture(scope="module")
def server():
    running = Server(wait_for_ui=False, TRIAGE_FLAG_RATE=str(FLAG_RATE))
    yield running
    running.stop()


def client(url: str, key: str | None = None, mode: str = "auto") -> Client:
    if key is None:
        return Client(f"{url}/mcp", mode=mode)
    return Client(streamable_http_client(f"{url}/mcp", http_client=httpx2.AsyncClient(headers={"X-API-Key": key.encode()})), mode=mode)


async def listed(url: str, key: str | None = None, mode: str = "auto") -> list:
    """The tools, as a client of the newest protocol lists them (`mode="legacy"`: of the 2025 handshake)."""
    async with client(url, key, mode) as mcp:
        return (await mcp.list_tools()).tools


async def called(url: str, name: str, arguments: dict, mode: str = "auto"):
    async with client(url, mode=mode) as mcp:
        return await mcp.call_tool(name, arguments)


def test_it_lists_exactly_the_two_tools_with_the_contract_s_schemas(server):
    tools = {tool.name: tool for tool in asyncio.run(listed(server.url))}
    run, flag = tool_names()
    assert set(tools) == {run, flag}
    schema = tools[run].input_schema
    assert set(schema["properties"]) == {*model.Input.model_fields, "flags"}
    assert set(schema["$defs"]["Flags"]["properties"]) == set(model.Flags.model_fields)
    assert schema == PredictRequest.model_json_schema()  # POST /predict's body, derived: a new Input field is in it
    assert tools[flag].input_schema == EdgeCase.model_json_schema()  # POST /cases' body
    assert tools[run].output_schema == model.Output.model_json_schema(mode="serialization")
    assert tools[flag].output_schema == CaseSaved.model_json_schema(mode="serialization")
    assert tools[run].title in tools[flag].title and model.TITLE in tools[run].title


def test_a_field_added_to_the_input_appears_in_the_run_tool_s_schema():
    """model.Input widened before app/ reads it (as an edit of model.py would): the tool's schema has the new field."""
    code = (
        "import json, model\n"
        "class Wider(model.Input):\n"
        "    added_for_this_test: int = 0\n"
        "model.Input = Wider\n"
        "from app.mcp_tools import tools\n"
        "print(json.dumps(sorted(tools()[0].input_schema['properties'])))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout.splitlines()[-1]) == sorted({*model.Input.model_fields, "added_for_this_test", "flags"})


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # the newest protocol, and the 2025 handshake most agents speak
def test_the_run_tool_answers_what_post_predict_answers(server, mode):
    given = example_input()
    result = asyncio.run(called(server.url, tool_names()[0], given, mode))
    assert not result.is_error
    expected = requests.post(f"{server.url}/predict", json=given, timeout=60).json()
    assert result.structured_content == expected and json.loads(result.content[0].text) == expected


def test_the_run_tool_refuses_a_bad_input_naming_the_field(server):
    given, field = invalid_input()
    result = asyncio.run(called(server.url, tool_names()[0], given))
    assert result.is_error and result.content[0].text.startswith(f"{field}:")
    unknown = asyncio.run(called(server.url, "no_such_tool", given))
    assert unknown.is_error and tool_names()[0] in unknown.content[0].text


def test_the_flag_tool_puts_a_case_in_the_queue(server):
    given = example_input()
    answer = requests.post(f"{server.url}/predict", json=given, timeout=60).json()
    case = {"ticket": given, "expected": expected_matching(answer), "note": "flagged by an agent"}
    first = asyncio.run(called(server.url, tool_names()[1], case))
    assert not first.is_error and first.structured_content["new"] and first.structured_content["state"] == "pending"
    pending = requests.get(f"{server.url}/cases", params={"state": "pending"}, timeout=30).json()
    assert first.structured_content["id"] in [c["case"]["id"] for c in pending["cases"]]
    again = asyncio.run(called(server.url, tool_names()[1], case)).structured_content
    assert (again["id"], again["new"], again["state"]) == (first.structured_content["id"], False, "already flagged")


def test_the_flag_tool_keeps_post_cases_limits(server):
    """Without a key, TRIAGE_FLAG_RATE flags a minute per client, MCP and HTTP together: the tool is refused, then /cases."""
    cases = [{"ticket": one, "expected": expected_example()} for one in inputs(FLAG_RATE + 1)]
    results = [asyncio.run(called(server.url, tool_names()[1], case)) for case in cases]
    refused = [r for r in results if r.is_error]
    assert refused, "the flag tool took more than TRIAGE_FLAG_RATE cases in a minute"
    post = requests.post(f"{server.url}/cases", json=cases[-1], timeout=30)
    assert post.status_code == 429 and refused[0].content[0].text.split(":")[0] == post.json()["detail"].split(":")[0]


def test_with_a_key_mcp_needs_it():
    keyed = Server(wait_for_ui=False, LIT_SERVER_API_KEY=KEY)
    try:
        for headers in ({}, {"X-API-Key": "wrong"}):
            bare = requests.post(f"{keyed.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=headers, timeout=10)
            assert bare.status_code == 401 and "X-API-Key" in bare.json()["detail"]
        with pytest.raises(ExceptionGroup) as refused:  # the client's task group holds the 401 as an MCPError
            asyncio.run(listed(keyed.url))
        assert refused.value.subgroup(MCPError) is not None
        assert {t.name for t in asyncio.run(listed(keyed.url, KEY))} == set(tool_names())
    finally:
        keyed.stop()


def test_the_route_checks_the_key_itself_in_any_unicode():
    """/mcp's own check, behind main.py's KeyGate as /predict's dependency is: UTF-8 bytes, a wrong key a 401."""

    class Sessions:  # stands for the session manager: answers whatever passes the check
        async def handle_request(self, scope, receive, send):
            await send_json(send, 200, {"passed": True})

    app = Starlette(routes=[Route("/mcp", KeyedEndpoint(Sessions(), KEY))])
    with TestClient(app) as http:
        assert http.post("/mcp", headers={"X-API-Key": KEY.encode()}).status_code == 200
        assert [http.post("/mcp", headers=h).status_code for h in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": b"\xff"})] == [401] * 3
    open_app = Starlette(routes=[Route("/mcp", KeyedEndpoint(Sessions(), None))])
    with TestClient(open_app) as http:
        assert http.post("/mcp").status_code == 200


def test_get_opens_no_stream_that_would_hold_the_connection(server):
    """Stateless, the server has nothing to push: GET /mcp is 405 at once (it opened an event stream that never ended)."""
    for method in ("GET", "DELETE"):
        answer = requests.request(method, f"{server.url}/mcp", headers={"Accept": "text/event-stream"}, timeout=10)
        assert answer.status_code == 405 and answer.headers["allow"] == "POST"
    assert {t.name for t in asyncio.run(listed(server.url, mode="legacy"))} == set(tool_names())  # the 2025 handshake's client


def test_litserve_s_own_mcp_app_is_off():
    """With the `mcp` package installed LitServe 0.2.19 mounts its own MCP app at "/" (and fails without fastmcp): the
    module flag TriageServer clears must still be what LitServe reads (app/litserve_internals.py)."""
    import inspect

    assert hasattr(litserve.server, "_MCP_AVAILABLE")
    assert "if _MCP_AVAILABLE:" in inspect.getsource(litserve.LitServer._start_server)
    assert "if _MCP_AVAILABLE:" in inspect.getsource(litserve.LitServer.lifespan)
