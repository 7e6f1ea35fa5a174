"""The worked example's content as the API serves it (triage's fields, flags, bounds and accuracy): a fork rewrites these.

The machinery's own tests of the API (tests/test_api.py) take their inputs, flags and expected answers from the
pipeline's contract; these are the ones that name triage's, and README's examples (README documents the worked example)."""

import json
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
import requests
from conftest import Server

import model
from app import render, ui
from building import builder, contract, encoders

ROOT = model.ROOT


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(log=tmp_path_factory.mktemp("server") / "server.log")
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


def test_32_concurrent_requests_each_get_their_own_answer(server):
    frame = pd.read_csv(model.DATA_DIR / "eval.csv")
    bodies = [{"text": t, "flags": {"top_k": 1 + i % 4, "auto_reply": i % 3 != 0}} for i, t in enumerate(frame.text[:32])]
    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(lambda b: predict(server, b), bodies))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    for body, response in zip(bodies, responses, strict=True):
        same_answer(response.json(), model.run(body["text"], body["flags"]))
        assert len(response.json()["articles"]) == body["flags"]["top_k"]


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
