"""The one server over real HTTP: /predict, errors, batching, API key, timeouts, the UI at /, shutdown."""

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
from conftest import Server
from gradio_client import Client

import model
from app import render, ui
from building import builder, contract, encoders

ROOT = model.ROOT


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(log=tmp_path_factory.mktemp("server") / "server.log")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def strict_server():
    """An API key, one request per batch and a 0.5 s queue timeout, so the queue can overflow."""
    s = Server(LIT_SERVER_API_KEY="sesame", TRIAGE_MAX_BATCH_SIZE="1", TRIAGE_TIMEOUT="0.5")
    yield s
    s.stop()


def predict(server, body, **kwargs):
    return requests.post(f"{server.url}/predict", json=body, timeout=60, **kwargs)


def same_answer(http: dict, local: model.Triage) -> None:
    expected = local.model_dump(mode="json")
    assert {k: v for k, v in http.items() if k not in ("confidence", "articles")} == {
        k: v for k, v in expected.items() if k not in ("confidence", "articles")
    }
    assert http["confidence"] == pytest.approx(expected["confidence"], abs=1e-3)
    assert [a["id"] for a in http["articles"]] == [a["id"] for a in expected["articles"]]


# --- /predict ----------------------------------------------------------------------------------
def test_a_ticket_gets_the_same_answer_as_model_run(server):
    body = {"text": "I was charged twice for order 75983714", "channel": "email", "flags": {"top_k": 2}}
    response = predict(server, body)
    assert response.status_code == 200, response.text
    same_answer(response.json(), model.run({"text": body["text"], "channel": "email"}, {"top_k": 2}))
    assert response.json()["trace"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "text"),
        ({"text": 42}, "text"),
        ({"text": ""}, "text"),
        ({"text": "   "}, "text"),
        ({"text": "x" * 5001}, "text"),
        ({"text": "hi", "channel": "pigeon"}, "channel"),
        ({"text": "hi", "flags": {"top_k": 0}}, "top_k"),
        ({"text": "hi", "flags": {"min_confidence": 7}}, "min_confidence"),
        ({"text": "hi", "flags": {"no_such_flag": True}}, "no_such_flag"),
        ({"text": "hi", "flags": "all"}, "flags"),
        ({"text": "hi", "extra": 1}, "extra"),
        ([1, 2, 3], "body"),
    ],
)
def test_bad_input_is_422_naming_the_field(server, body, field):
    response = predict(server, body)
    assert response.status_code == 422, response.text
    assert field in {str(part) for error in response.json()["detail"] for part in error["loc"]}


def test_malformed_json_is_422(server):
    response = requests.post(f"{server.url}/predict", data=b'{"text": "hi"', headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 422 and "json" in response.text.lower()
    (problem,) = response.json()["detail"]  # where it broke and what was sent, not FastAPI's `"input": {}`
    assert problem["loc"] == ["body"] and problem["input"] == '{"text": "hi"' and "at character 13" in problem["msg"], problem


def test_a_body_that_is_not_utf8_is_400_saying_so(server):
    body, json_type = b'{"text": "\xff\xfe"}', {"Content-Type": "application/json"}
    response = requests.post(f"{server.url}/predict", data=body, headers=json_type, timeout=30)
    assert response.status_code == 400 and response.json()["detail"].startswith("the body is not UTF-8: byte 0xff at position 10")
    assert "400" in requests.get(f"{server.url}/openapi.json", timeout=30).json()["paths"]["/predict"]["post"]["responses"]


def test_a_form_encoded_body_is_422_naming_the_content_type(server):
    response = requests.post(f"{server.url}/predict", data={"text": "hi there"}, timeout=30)
    (problem,) = response.json()["detail"]
    assert response.status_code == 422 and problem["input"] == "text=hi+there", problem  # text, never a bytes repr "b'...'"
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
    response = requests.post(f"{server.url}/predict", json={"text": "x" * 100_000}, timeout=30)
    assert response.status_code == 413 and "larger than" in response.json()["detail"]


def test_nothing_a_client_sends_gives_a_500(server):
    odd = [
        {"text": "\x00\x01 null bytes \ud7ff and emoji 🚀🚀 and RTL \u202e text"},
        {"text": "1234567812345678 9999999999999999999999 #00000000"},
        {"text": "a" * 5000, "flags": {"top_k": 10, "min_confidence": 0, "min_article_score": 1}},
        {"text": "<script>alert(1)</script> ' OR 1=1 --", "customer_tier": "vip"},
    ]
    for body in odd:
        assert predict(server, body).status_code == 200, body
    assert requests.get(f"{server.url}/health", timeout=5).status_code == 200  # the worker is still alive


def test_32_concurrent_requests_each_get_their_own_answer(server):
    frame = pd.read_csv(model.DATA_DIR / "eval.csv")
    bodies = [{"text": t, "flags": {"top_k": 1 + i % 4, "auto_reply": i % 3 != 0}} for i, t in enumerate(frame.text[:32])]
    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(lambda b: predict(server, b), bodies))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    for body, response in zip(bodies, responses, strict=True):
        same_answer(response.json(), model.run(body["text"], body["flags"]))
        assert len(response.json()["articles"]) == body["flags"]["top_k"]


# --- self-description ----------------------------------------------------------------------------
def test_openapi_holds_the_request_and_response_schemas(server):
    spec = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    schemas = spec["components"]["schemas"]
    request = schemas["PredictRequest"]
    assert set(request["properties"]) == {"text", "channel", "customer_tier", "flags"}
    assert request["properties"]["text"]["maxLength"] == 5000 and "description" in request["properties"]["text"]
    assert set(schemas["Flags"]["properties"]) == set(model.Flags.model_fields)
    assert schemas["Flags"]["properties"]["top_k"]["maximum"] == 10
    assert {"category", "confidence", "team", "needs_human", "reply"} <= set(schemas["Triage"]["properties"])
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
    assert predict["200"]["content"]["application/json"]["schema"]["$ref"].endswith(f"/{model.Output.__name__}")
    for code in ("401", "413", "503", "504"):
        assert predict[code]["content"]["application/json"]["schema"]["$ref"].endswith("/Problem"), code
    assert predict["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/FieldProblems")
    # the documented 422 body is the one a client gets
    body = requests.post(f"{server.url}/predict", json={"text": ""}, timeout=10).json()
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


def test_metrics_move_with_requests(server):
    before = requests.get(f"{server.url}/metrics", timeout=10)
    assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
    body = {"text": "I was charged twice for my order 75983714, please refund one payment"}
    answers = [requests.post(f"{server.url}/predict", json=body, timeout=30) for _ in range(3)]
    requests.post(f"{server.url}/predict", json={"text": ""}, timeout=30)  # a 422
    category = answers[0].json()["category"]
    after = requests.get(f"{server.url}/metrics", timeout=10).text
    old = before.text
    for name, labels, grew in [
        ("triage_requests_total", {"route": "/predict", "status": "200"}, 3),
        ("triage_requests_total", {"route": "/predict", "status": "422"}, 1),
        ("triage_request_seconds_count", {"route": "/predict"}, 4),
        ("triage_batch_size_count", {}, None),  # the worker's (another process): 3 requests, in 1 to 3 batches
        ("triage_step_seconds_count", {"step": "embed"}, None),
        ("triage_answers_total", {"label": category, "needs_person": str(answers[0].json()["needs_human"]).lower()}, 3),
    ]:
        delta = metric(after, name, **labels) - metric(old, name, **labels)
        assert delta == grew if grew is not None else 1 <= delta <= 3, (name, labels, delta)
    assert metric(after, "triage_worker_starts_total") >= 1
    assert "triage_requests_in_flight" in after


def test_request_ids_are_echoed_and_logged_as_json(server):
    sent = requests.post(f"{server.url}/predict", json={"text": "Where is my parcel?"}, headers={"X-Request-ID": "ticket-42.a"}, timeout=30)
    assert sent.headers["X-Request-ID"] == "ticket-42.a"
    made = requests.post(f"{server.url}/predict", json={"text": "Where is my parcel?"}, timeout=30).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    bad = requests.get(f"{server.url}/info", headers={"X-Request-ID": 'evil" injected'}, timeout=30).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", bad)  # not a safe id: replaced, never logged as sent
    deadline = time.time() + 10
    while time.time() < deadline and bad not in server.log.read_text():
        time.sleep(0.2)
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    by_id = {line["request_id"]: line for line in lines}
    assert by_id["ticket-42.a"]["status"] == 200 and by_id["ticket-42.a"]["path"] == "/predict"
    assert by_id["ticket-42.a"]["batch_size"] >= 1 and by_id["ticket-42.a"]["ms"] > 0
    assert by_id[made]["method"] == "POST" and by_id[bad]["path"] == "/info" and "batch_size" not in by_id[bad]
    assert "evil" not in server.log.read_text()


def test_start_up_talks(server):
    log = server.log.read_text()
    url = f"http://127.0.0.1:{server.port}"
    assert "pipeline ready in" in log and f"ready: the API at {url}/predict, its docs at {url}/docs" in log
    assert log.count(f"{url}/docs") == 1, log  # LitServe's own "Swagger UI is available at" line is left out
    assert log.index("ready: the API") < log.index(f"ready: the app at {url}/")  # the UI loads while the API answers


def test_a_ticket_the_pipeline_fails_on_gets_a_500_alone(monkeypatch):
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
    assert info["pipeline_version"] == model.PIPELINE_VERSION
    assert info["model"]["sha256"] == encoders.OFFICIAL_MODEL_SHA256
    assert info["title"] == contract.title() and info["label"] == {"field": "category", "values": [c.value for c in model.Category]}
    assert set(info["labelled_sets"]) == set(contract.labelled_sets()) and info["labelled_sets"]["eval"]["accuracy"] >= 0.8
    assert info["flags"]["top_k"]["default"] == 3 and info["flags"]["top_k"]["maximum"] == 10
    assert info["batching"]["max_batch_size"] >= 8
    assert info["encoder"]["name"] == builder.encoder_name()
    assert requests.get(f"{server.url}/health", timeout=5).text == "ok"


def test_no_serving_process_loads_torch(server):
    """The API process, the inference worker and the UI run on ONNX Runtime: libtorch is mapped by none of them."""
    requests.post(f"{server.url}/predict", json={"text": "Where is my order 75983714?"}, timeout=30).raise_for_status()
    tree = server.tree()
    assert len(tree) >= 2  # the server and at least its inference worker
    maps = {p.pid: Path(f"/proc/{p.pid}/maps").read_text() for p in tree}
    assert any("onnxruntime" in m for m in maps.values())  # the worker answered on ONNX Runtime
    assert not [pid for pid, m in maps.items() if "libtorch" in m]


# --- the UI on the same server ---------------------------------------------------------------------
def test_the_ui_is_served_at_the_root(server):
    page = requests.get(f"{server.url}/", timeout=30)
    assert page.status_code == 200 and "gradio" in page.text.lower()
    client = Client(f"{server.url}/", verbose=False)
    args = ["Please cancel my order 75983714", "web_form", "standard", *model.Flags().model_dump().values()]
    *_, answer = client.submit(*args, api_name="/run").result(timeout=120)
    assert answer["category"] == model.run("Please cancel my order 75983714").category.value


# --- the documented examples, run as written --------------------------------------------------------
def documented(language: str) -> str:
    readme = (ROOT / "README.md").read_text()
    return re.search(rf"<!-- api-example:{language} -->\n```\w+\n(.*?)```", readme, re.S).group(1)


def test_readme_examples_are_the_ui_examples():
    curl, python = ui.api_examples()
    assert documented("curl").strip() == curl.strip() and documented("python").strip() == python.strip()


def test_readme_curl_example_runs_as_written(server):
    command = documented("curl").replace("http://localhost:7860", server.url)
    out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, check=True).stdout
    assert json.loads(out) == contract.run(contract.input_example()).model_dump(mode="json")


def test_readme_python_example_runs_as_written(server, capsys):
    exec(documented("python").replace("http://localhost:7860", server.url), {})
    expected = contract.run(contract.input_example()).model_dump(mode="json")
    assert capsys.readouterr().out.split() == [str(expected[name]) for name in render.key_fields()]


# --- API key, timeouts, shutdown ----------------------------------------------------------------------
def test_api_key(strict_server):
    for headers in ({}, {"X-API-Key": "wrong"}):  # the same answer for both, and it says so
        refused = predict(strict_server, {"text": "hi"}, headers=headers)
        assert refused.status_code == 401 and "missing or wrong" in refused.json()["detail"], refused.text
    assert predict(strict_server, {"text": "hi"}, headers={"X-API-Key": "sesame"}).status_code == 200
    assert requests.get(f"{strict_server.url}/health", timeout=5).status_code == 200  # open to load balancers
    assert requests.get(f"{strict_server.url}/info", timeout=5).status_code == 401


def test_requests_that_wait_too_long_get_504_and_the_server_goes_on(strict_server):
    body = {"text": "My parcel has not arrived and nobody answers my emails. " * 80}
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
