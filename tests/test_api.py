"""The one server over real HTTP: /predict, errors, batching, API key, timeouts, the UI at /, shutdown.

Machinery: every input, flag and expected answer comes from the pipeline's contract (tests/conftest.py's helpers), so
a fork runs these as they are; the worked example's own fields and figures are tests/example/test_triage_api.py's."""

import json
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import psutil
import pytest
import requests
from conftest import (
    Server,
    approximately,
    changed_flags,
    edge_values,
    example_input,
    flag_variants,
    inputs,
    invalid_input,
    invalid_values,
    label_values,
    long_input,
    slow_pipeline,
)
from gradio_client import Client

import model
import recipe
from app import render, ui
from building import builder, contract, encoders

FIRST = next(iter(model.Input.model_fields))  # the Input's first field: what a malformed body names


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(log=tmp_path_factory.mktemp("server") / "server.log")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    """An API key, one request per batch, a 0.5 s queue timeout and a pipeline of 50 ms an input at least, so the queue
    can overflow."""
    slow = slow_pipeline(tmp_path_factory.mktemp("slow"))
    s = Server(LIT_SERVER_API_KEY="sesame", TRIAGE_MAX_BATCH_SIZE="1", TRIAGE_TIMEOUT="0.5", **slow)
    yield s
    s.stop()


def predict(server, body, **kwargs):
    return requests.post(f"{server.url}/predict", json=body, timeout=60, **kwargs)


def same_answer(http: dict, local) -> None:
    """The server's answer is the pipeline's own for that input and flags (floats within 1e-3: another batch)."""
    assert http == approximately(local.model_dump(mode="json"))


def without_flags(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "flags"}


# --- /predict ----------------------------------------------------------------------------------
def test_an_input_gets_the_same_answer_as_the_pipeline_alone(server):
    body = {**example_input(), "flags": changed_flags()}
    response = predict(server, body)
    assert response.status_code == 200, response.text
    same_answer(response.json(), contract.run(example_input(), changed_flags()))
    assert response.json().get("trace") is None


def bad_bodies() -> list[tuple[object, str]]:
    """Bodies /predict must refuse, each with the field its 422 names: each required field missing, each value the
    schemas refuse (conftest.invalid_values), an unknown flag, flags that are no object, an unknown field, no object."""
    example = example_input()
    bodies = [(without(example, name), name) for name, field in model.Input.model_fields.items() if field.is_required()]
    bodies += [({**example, name: value}, name) for name, value in invalid_values(model.Input, example)]
    bodies += [({**example, "flags": {name: value}}, name) for name, value in invalid_values(model.Flags)]
    if model.Flags.model_config.get("extra") == "forbid":
        bodies.append(({**example, "flags": {"no_such_flag": True}}, "no_such_flag"))
    return [*bodies, ({**example, "flags": "all"}, "flags"), ({**example, "extra": 1}, "extra"), ([1, 2, 3], "body")]


def without(body: dict, name: str) -> dict:
    return {k: v for k, v in body.items() if k != name}


@pytest.mark.quick
@pytest.mark.parametrize(("body", "field"), bad_bodies(), ids=lambda v: str(v)[:40] if isinstance(v, str) else None)
def test_bad_input_is_422_naming_the_field(server, body, field):
    response = predict(server, body)
    assert response.status_code == 422, response.text
    assert field in {str(part) for error in response.json()["detail"] for part in error["loc"]}


def test_malformed_json_is_422(server):
    sent = f'{{"{FIRST}": "hi"'  # the object never closes
    response = requests.post(f"{server.url}/predict", data=sent.encode(), headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 422 and "json" in response.text.lower()
    (problem,) = response.json()["detail"]  # where it broke and what was sent, not FastAPI's `"input": {}`
    assert problem["loc"] == ["body"] and problem["input"] == sent and f"at character {len(sent)}" in problem["msg"], problem


def test_an_unterminated_string_says_where_it_starts_in_one_at(server):
    sent = f'{{"{FIRST}": "hi'  # Python's JSON error reads "Unterminated string starting at", then the place
    response = requests.post(f"{server.url}/predict", data=sent.encode(), headers={"Content-Type": "application/json"}, timeout=30)
    (problem,) = response.json()["detail"]
    assert "starting at character" in problem["msg"] and " at at " not in problem["msg"], problem


def test_a_body_that_is_not_utf8_is_400_saying_so(server):
    start, json_type = f'{{"{FIRST}": "'.encode(), {"Content-Type": "application/json"}
    response = requests.post(f"{server.url}/predict", data=start + b'\xff\xfe"}', headers=json_type, timeout=30)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"the body is not UTF-8: byte 0xff at position {len(start)}"), response.text
    assert "400" in requests.get(f"{server.url}/openapi.json", timeout=30).json()["paths"]["/predict"]["post"]["responses"]


def test_a_form_encoded_body_is_422_naming_the_content_type(server):
    response = requests.post(f"{server.url}/predict", data={FIRST: "hi there"}, timeout=30)
    (problem,) = response.json()["detail"]
    assert response.status_code == 422 and problem["input"] == f"{FIRST}=hi+there", problem  # text, never a bytes repr "b'...'"
    assert "application/json" in problem["msg"] and "application/x-www-form-urlencoded" in problem["msg"], problem


@pytest.mark.parametrize(
    ("method", "path", "allow"), [("GET", "/predict", "POST"), ("DELETE", "/cases", "GET, POST"), ("POST", "/health", "GET")]
)
def test_a_method_a_path_does_not_take_is_405_with_allow(server, method, path, allow):
    """The UI mounted at / must not take them (GET /predict was Gradio's 404)."""
    response = requests.request(method, f"{server.url}{path}", timeout=30)
    assert response.status_code == 405 and response.headers["Allow"] == allow, (response.status_code, response.text[:200])
    assert allow in response.json()["detail"]


def test_a_body_over_the_limit_is_413(server):
    response = requests.post(f"{server.url}/predict", json={**example_input(), FIRST: "x" * 100_000}, timeout=30)
    assert response.status_code == 413 and "larger than" in response.json()["detail"]


ODD_TEXTS = [
    "\x00\x01 null bytes \ud7ff and emoji 🚀🚀 and RTL \u202e text",
    "1234567812345678 9999999999999999999999 #00000000",
    "<script>alert(1)</script> ' OR 1=1 --",
]


def accepted(body: dict) -> bool:
    """Whether the schemas take `body` (an odd text may break a fork's own rules for a field)."""
    try:
        model.Input.model_validate(without_flags(body))
        model.Flags.model_validate(body.get("flags", {}))
    except ValueError:  # pydantic's ValidationError
        return False
    return True


def odd_bodies() -> list[dict]:
    """Valid bodies at the edges: odd text in each text field, each input value and each flag at its edges, and the
    longest text with every flag at its lower edges, then at its upper ones."""
    example = example_input()
    texts = [name for name, field in model.Input.model_fields.items() if contract.base_type(field.annotation) is str]
    bodies = [{**example, name: text} for name in texts for text in ODD_TEXTS]
    bodies += [{**example, name: value} for name, value in edge_values(model.Input, example)]
    bodies += [{**example, "flags": flags} for flags in flag_variants()]
    edges = edge_values(model.Flags)
    bodies += [{**long_input(), "flags": dict(edges[::-1])}, {**long_input(), "flags": dict(edges)}]
    return [body for body in bodies if accepted(body)]


def test_nothing_a_client_sends_gives_a_500(server):
    bodies = odd_bodies()
    assert len(bodies) > 3, bodies
    for body in bodies:
        response = predict(server, body)
        assert response.status_code == 200, (body, response.text[:300])
        model.Output.model_validate(response.json())
    assert requests.get(f"{server.url}/health", timeout=5).status_code == 200  # the worker is still alive


def test_32_concurrent_requests_each_get_their_own_answer(server):
    """Batched together, each request keeps its own flags: its answer is the pipeline's for that input and flags alone."""
    variants = flag_variants()
    bodies = [{**one, "flags": variants[i % len(variants)]} for i, one in enumerate(inputs(32))]
    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(lambda b: predict(server, b), bodies))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    alone = [contract.run(without_flags(body), body["flags"]) for body in bodies]
    for response, answer in zip(responses, alone, strict=True):
        same_answer(response.json(), answer)
    unflagged = [contract.run(without_flags(body)) for body in bodies]
    assert alone != unflagged  # the flags change answers here: a request answered with another's flags would show


# --- self-description ----------------------------------------------------------------------------
def resolved(spec: dict, schema: dict) -> dict:
    """A schema of the spec, its `$ref` followed."""
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].split("/")[-1]]
    return schema


def documented_bounds(shown: dict, field) -> None:
    """A field's schema in the spec says its bounds and its description, as the pydantic field sets them."""
    for constraint in field.metadata:
        for bound, key in (("ge", "minimum"), ("le", "maximum"), ("gt", "exclusiveMinimum"), ("lt", "exclusiveMaximum")):
            if getattr(constraint, bound, None) is not None:
                assert shown[key] == getattr(constraint, bound), (key, shown)
        for bound, key in (("min_length", "minLength"), ("max_length", "maxLength")):
            if getattr(constraint, bound, None) is not None:
                assert shown[key] == getattr(constraint, bound), (key, shown)
    assert shown.get("description") == field.description, shown


def test_openapi_holds_the_request_and_response_schemas(server):
    spec = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    request = spec["components"]["schemas"]["PredictRequest"]
    assert set(request["properties"]) == {*model.Input.model_fields, "flags"}
    for name, field in model.Input.model_fields.items():
        documented_bounds(request["properties"][name], field)
    flags = resolved(spec, request["properties"]["flags"])
    assert set(flags["properties"]) == set(model.Flags.model_fields)
    for name, field in model.Flags.model_fields.items():
        documented_bounds(flags["properties"][name], field)
    answer = spec["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(resolved(spec, answer)["properties"]) == set(model.Output.model_fields)
    assert request["examples"] == [contract.input_example()]  # the schema's own example, which executes
    assert predict(server, request["examples"][0]).status_code == 200
    assert requests.get(f"{server.url}/docs", timeout=10).status_code == 200


def test_openapi_describes_every_operation_and_every_response(server):
    spec = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    assert spec["info"]["title"] == f"{contract.title()} API" and spec["info"]["version"] == model.PIPELINE_VERSION
    operations = {(method, path): op for path, ops in spec["paths"].items() for method, op in ops.items()}
    assert set(operations) >= {("post", "/predict"), ("get", "/health"), ("get", "/info"), ("post", "/cases"), ("get", "/cases")}
    for key, op in operations.items():
        assert op.get("summary") and op.get("description") and op.get("tags"), key
    predict = operations[("post", "/predict")]["responses"]
    assert {"200", "401", "413", "422", "503", "504"} <= set(predict)
    assert set(resolved(spec, predict["200"]["content"]["application/json"]["schema"])["properties"]) == set(model.Output.model_fields)
    for code in ("401", "413", "503", "504"):
        assert predict[code]["content"]["application/json"]["schema"]["$ref"].endswith("/Problem"), code
    assert predict["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/FieldProblems")
    # the documented 422 body is the one a client gets
    body = requests.post(f"{server.url}/predict", json=invalid_input()[0], timeout=10).json()
    assert set(body) == {"detail"} and set(body["detail"][0]) == set(spec["components"]["schemas"]["FieldProblem"]["properties"])


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus's text format (0 when absent)."""
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.startswith(name) and _canonical(sample) == wanted:
            return float(value)
    return 0.0


def _canonical(sample: str) -> str:
    name, _, labels = sample.partition("{")
    return name + ("{" + ",".join(sorted(labels.rstrip("}").split(","))) + "}" if labels else "")


def answer_labels(answer: dict) -> dict[str, str]:
    """What /metrics counts an answer by: its label's value, and whether a person must answer (where the pipeline has them)."""
    fields = {"label": contract.label(), "needs_person": contract.needs_person()}
    values = {name: answer[field] for name, field in fields.items() if field}
    return {name: str(v).lower() if isinstance(v, bool) else str(v) for name, v in values.items()}


def test_metrics_move_with_requests(server):
    before = requests.get(f"{server.url}/metrics", timeout=10)
    assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
    answers = [requests.post(f"{server.url}/predict", json=example_input(), timeout=30) for _ in range(3)]
    requests.post(f"{server.url}/predict", json=invalid_input()[0], timeout=30)  # a 422
    timings: dict[str, float] = {}
    contract.run_each([model.Input.model_validate(example_input())], None, timings)
    step = next(iter(timings))  # a step the worker times
    after = requests.get(f"{server.url}/metrics", timeout=10).text
    old = before.text
    for name, labels, grew in [
        ("triage_requests_total", {"route": "/predict", "status": "200"}, 3),
        ("triage_requests_total", {"route": "/predict", "status": "422"}, 1),
        ("triage_request_seconds_count", {"route": "/predict"}, 4),
        ("triage_batch_size_count", {}, None),  # the worker's (another process): 3 requests, in 1 to 3 batches
        ("triage_step_seconds_count", {"step": step}, None),
        ("triage_answers_total", answer_labels(answers[0].json()), 3),
    ]:
        delta = metric(after, name, **labels) - metric(old, name, **labels)
        assert delta == grew if grew is not None else 1 <= delta <= 3, (name, labels, delta)
    assert metric(after, "triage_worker_starts_total") >= 1
    assert "triage_requests_in_flight" in after


def test_request_ids_are_echoed_and_logged_as_json(server):
    sent = requests.post(f"{server.url}/predict", json=example_input(), headers={"X-Request-ID": "request-42.a"}, timeout=30)
    assert sent.headers["X-Request-ID"] == "request-42.a"
    made = requests.post(f"{server.url}/predict", json=example_input(), timeout=30).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    bad = requests.get(f"{server.url}/info", headers={"X-Request-ID": 'evil" injected'}, timeout=30).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", bad)  # not a safe id: replaced, never logged as sent
    deadline = time.time() + 10
    while time.time() < deadline and bad not in server.log.read_text():
        time.sleep(0.2)
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    by_id = {line["request_id"]: line for line in lines}
    assert by_id["request-42.a"]["status"] == 200 and by_id["request-42.a"]["path"] == "/predict"
    assert by_id["request-42.a"]["batch_size"] >= 1 and by_id["request-42.a"]["ms"] > 0
    assert by_id[made]["method"] == "POST" and by_id[bad]["path"] == "/info" and "batch_size" not in by_id[bad]
    assert "evil" not in server.log.read_text()


def test_start_up_talks(server):
    log = server.log.read_text()
    url = f"http://127.0.0.1:{server.port}"
    assert "pipeline ready in" in log and f"ready: the API at {url}/predict, its docs at {url}/docs" in log
    assert log.count(f"{url}/docs") == 1, log  # LitServe's own "Swagger UI is available at" line is left out
    assert log.index("ready: the API") < log.index(f"ready: the app at {url}/")  # the UI loads while the API answers


def test_an_input_the_pipeline_fails_on_gets_a_500_alone(monkeypatch):
    """The worker writes each answer's JSON; an input that fails gets its own error, the others their answers."""
    from app.api import PredictRequest, TriageAPI

    good = contract.run(contract.input_example())
    monkeypatch.setattr(contract, "run_each", lambda inputs, flags, timings: [good, RuntimeError("boom")])
    api = TriageAPI()
    one = PredictRequest.model_validate(contract.input_example())
    answers = [api.encode_response(a) for a in api.predict([one, one])]
    assert model.Output.model_validate_json(answers[0][0]) == good and answers[0][1] == 2  # the answer, and its batch's size
    assert answers[1] == ({"detail": "the pipeline failed on this input: RuntimeError"}, 2)


def test_info_and_health(server):
    info = requests.get(f"{server.url}/info", timeout=10).json()["model"]
    assert info["pipeline_version"] == model.PIPELINE_VERSION and info["title"] == contract.title()
    if recipe.ENCODER:
        assert info["model"]["sha256"] == encoders.OFFICIAL_MODEL_SHA256 and info["encoder"]["name"] == builder.encoder_name()
    else:
        assert info["model"] is None and info["encoder"] is None
    label = contract.label()
    values = label_values() if label and contract.is_enum(model.Output.model_fields[label].annotation) else None
    assert info["label"] == ({"field": label, "values": values} if label else None)
    assert set(info["labelled_sets"]) == set(contract.labelled_sets())
    for name, path in contract.labelled_sets().items():
        shown = info["labelled_sets"][name]
        assert shown["rows"] == len(pd.read_csv(path)) and 0 <= shown["accuracy"] <= 1, (name, shown)
    defaults = model.Flags().model_dump(mode="json")
    for name, field in model.Flags.model_fields.items():
        assert info["flags"][name]["default"] == defaults[name], name
        documented_bounds(info["flags"][name], field)
    assert info["batching"]["max_batch_size"] >= 8
    assert requests.get(f"{server.url}/health", timeout=5).text == "ok"


def test_no_serving_process_loads_torch(server):
    """The API process, the inference worker and the UI run on ONNX Runtime where the pipeline has an encoder: libtorch is
    mapped by none of them."""
    requests.post(f"{server.url}/predict", json=example_input(), timeout=30).raise_for_status()
    tree = server.tree()
    assert len(tree) >= 2  # the server and at least its inference worker
    maps = {p.pid: Path(f"/proc/{p.pid}/maps").read_text() for p in tree}
    if recipe.ENCODER:
        assert any("onnxruntime" in m for m in maps.values())  # the worker answered on ONNX Runtime
    assert not [pid for pid, m in maps.items() if "libtorch" in m]


# --- the UI on the same server ---------------------------------------------------------------------
def test_the_ui_is_served_at_the_root(server):
    page = requests.get(f"{server.url}/", timeout=30)
    assert page.status_code == 200 and "gradio" in page.text.lower()
    client = Client(f"{server.url}/", verbose=False)
    *_, answer = client.submit(**example_input(), api_name="/run").result(timeout=120)
    assert answer == approximately(contract.run(example_input()).model_dump(mode="json", exclude={"trace"}))


# --- the API tab's examples (README's: tests/example/test_triage_api.py), run as written -------------------------
def test_the_curl_example_runs_as_written(server):
    curl, _ = ui.api_examples(server.url)
    out = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(out) == contract.run(contract.input_example()).model_dump(mode="json")


def test_the_python_example_runs_as_written(server, capsys):
    _, python = ui.api_examples(server.url)
    exec(python, {})
    expected = contract.run(contract.input_example()).model_dump(mode="json")
    assert capsys.readouterr().out.split() == [str(expected[name]) for name in render.key_fields()]


# --- API key, timeouts, shutdown ----------------------------------------------------------------------
def test_api_key(strict_server):
    for headers in ({}, {"X-API-Key": "wrong"}):  # the same answer for both, and it says so
        refused = predict(strict_server, example_input(), headers=headers)
        assert refused.status_code == 401 and "missing or wrong" in refused.json()["detail"], refused.text
    assert predict(strict_server, example_input(), headers={"X-API-Key": "sesame"}).status_code == 200
    assert requests.get(f"{strict_server.url}/health", timeout=5).status_code == 200  # open to load balancers
    assert requests.get(f"{strict_server.url}/info", timeout=5).status_code == 401


def test_requests_that_wait_too_long_get_504_and_the_server_goes_on(strict_server):
    body = long_input()
    with ThreadPoolExecutor(48) as pool:
        codes = list(pool.map(lambda _: predict(strict_server, body, headers={"X-API-Key": "sesame"}).status_code, range(48)))
    assert set(codes) <= {200, 504} and 504 in codes, codes
    timed_out = predict(strict_server, body, headers={"X-API-Key": "sesame"})
    assert timed_out.status_code == 200  # the queue drained: serving goes on


def test_sigterm_stops_the_whole_tree_within_seconds():
    s = Server()
    processes = s.tree()
    assert len(processes) >= 2  # the main process and at least one worker
    seconds = s.stop()
    assert seconds < 10, seconds
    assert not [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
