"""Smoke tests: a few real inputs through every face of a deployed instance, non-interactively, against a URL.

    TRIAGE_SMOKE_URL=https://<user>-<space>.hf.space python -m pytest -m smoke

/health; /predict with the README's example and one plain ticket per category, each answer a valid `model.Triage`; a
422 naming the field; /info naming a version; /metrics counting these calls; the app through gradio_client (Triage by
named parameters, Compare, a small Batch upload whose report downloads). LIT_SERVER_API_KEY, when set, is sent as
X-API-Key (the API and the app alike); HF_TOKEN (a private Space) as a bearer token. Nothing is written to the
deployment unless TRIAGE_SMOKE_FLAG=1: then one case is flagged, and it must wait in the review queue (pending), never
reach the regression suite. TRIAGE_SMOKE_WAIT (default 300 s) is how long a sleeping Space may take to wake. Without
TRIAGE_SMOKE_URL the smoke tests are skipped.

The last tests here are not smoke tests: they run the smoke tests against a server the suite starts, so they cannot rot.
"""

import csv
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree

import pytest
import requests
from conftest import Server, free_port
from gradio_client import Client, handle_file
from prometheus_client.parser import text_string_to_metric_families

import model
from app.render import label_of

URL = os.environ.get("TRIAGE_SMOKE_URL", "").rstrip("/")
HEADERS = {"X-API-Key": key} if (key := os.environ.get("LIT_SERVER_API_KEY")) else {}
if token := os.environ.get("HF_TOKEN"):  # a private Space: Hugging Face's own access check, in front of the app
    HEADERS["Authorization"] = f"Bearer {token}"
TIMEOUT = 120  # seconds for one call: a deployment on a small machine, batching with other clients
HEADER_VARIABLES = ("LIT_SERVER_API_KEY", "HF_TOKEN")
SMOKE_TESTS = 17  # how many the self-test below expects to run

smoke = pytest.mark.smoke
README_BODY = re.search(r"^body = (\{.*\})$", (model.ROOT / "README.md").read_text(), re.M).group(1)  # the Python example's


def plain_tickets() -> dict[str, str]:
    """The first plain ticket of each category in the evaluation set (the pipeline gets every plain one right)."""
    with open(model.DATA_DIR / "eval.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["difficulty"] == "plain"]
    return {category: next(r["text"] for r in rows if r["expected_category"] == category) for category in model.Category}


@pytest.fixture(scope="module")
def api() -> requests.Session:
    """An HTTP session to the deployment (with the key, when one is given), once /health says it is ready."""
    if not URL:
        pytest.skip("TRIAGE_SMOKE_URL is not set: no deployment to smoke-test")
    session = requests.Session()
    session.headers.update(HEADERS)
    deadline = time.time() + float(os.environ.get("TRIAGE_SMOKE_WAIT", "300"))
    while time.time() < deadline:  # a sleeping Space wakes on a request: wait for it, then let each test judge
        try:
            if requests.get(f"{URL}/health", timeout=10).status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(5)
    return session


@pytest.fixture(scope="module")
def app(api, tmp_path_factory) -> Client:
    """The Gradio app through gradio_client, once / is past its 503 "starting" (the UI loads after the API); report files
    download into a temporary folder."""
    deadline = time.time() + float(os.environ.get("TRIAGE_SMOKE_WAIT", "300"))
    while time.time() < deadline and api.get(f"{URL}/", timeout=TIMEOUT).status_code == 503:
        time.sleep(1)
    return Client(f"{URL}/", headers=HEADERS, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def predict(api: requests.Session, body) -> requests.Response:
    return api.post(f"{URL}/predict", json=body, timeout=TIMEOUT)


def requests_counted(api: requests.Session, status: int) -> float:
    """triage_requests_total for /predict with this status, from /metrics."""
    text = api.get(f"{URL}/metrics", timeout=TIMEOUT).text
    samples = (s for family in text_string_to_metric_families(text) for s in family.samples)
    return sum(s.value for s in samples if s.name == "triage_requests_total" and s.labels == {"route": "/predict", "status": str(status)})


# --- the HTTP API ----------------------------------------------------------------------------------------------------------
@smoke
def test_health_says_ok_without_a_key(api):
    response = requests.get(f"{URL}/health", timeout=TIMEOUT)  # as a load balancer asks: no headers
    assert (response.status_code, response.text) == (200, "ok")


@smoke
def test_the_readme_example(api):
    response = predict(api, json.loads(README_BODY))
    assert response.status_code == 200, response.text
    answer = model.Triage.model_validate(response.json())
    assert answer.category == "order_status" and answer.order_ids.known == ["75983714"] and len(answer.articles) == model.Flags().top_k


@smoke
@pytest.mark.parametrize(("category", "text"), plain_tickets().items())
def test_one_ticket_per_category(api, category, text):
    response = predict(api, {"text": text})
    assert response.status_code == 200, response.text
    answer = model.Triage.model_validate(response.json())
    assert (answer.category, answer.team) == (category, model.TEAMS[category]), text


@smoke
def test_a_bad_body_is_422_naming_the_field(api):
    response = predict(api, {"text": "Where is my order?", "flags": {"top_k": 0}})
    assert response.status_code == 422, response.text
    assert ["body", "flags", "top_k"] in [problem["loc"] for problem in response.json()["detail"]]


@smoke
def test_info_names_the_version(api):
    response = api.get(f"{URL}/info", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    served = response.json()["model"]
    assert served["version"] and served["pipeline_version"] and set(served["label"]["values"]) == set(model.Category)


@smoke
def test_metrics_count_the_calls(api):
    """At least these calls (other clients of the deployment may add theirs)."""
    before = {status: requests_counted(api, status) for status in (200, 422)}
    assert predict(api, {"text": "I was charged twice"}).status_code == 200
    assert predict(api, {"text": "I was charged twice"}).status_code == 200
    assert predict(api, {"text": ""}).status_code == 422
    after = {status: requests_counted(api, status) for status in (200, 422)}
    assert after[200] - before[200] >= 2 and after[422] - before[422] >= 1, (before, after)


@smoke
def test_a_flag_waits_in_the_review_queue(api):
    if os.environ.get("TRIAGE_SMOKE_FLAG") != "1":
        pytest.skip("TRIAGE_SMOKE_FLAG is not 1: nothing is flagged")
    when = datetime.now(UTC).isoformat(timespec="seconds")  # a new case every run, so the answer is always "pending"
    case = {"ticket": {"text": f"Smoke test at {when}: where is my order 75983714?"}, "expected": {"category": "order_status"}}
    response = api.post(f"{URL}/cases", json={**case, "note": "smoke test: reject it"}, timeout=TIMEOUT)
    assert response.status_code == 201, response.text
    assert response.json()["state"] == "pending"


# --- the app, through gradio_client --------------------------------------------------------------------------------------
@smoke
def test_app_triage_by_name_answers_as_the_api(app, api):
    ticket = {"text": "Where is my order 75983714? It was due on Monday.", "channel": "email", "customer_tier": "vip"}
    *_, answer = app.predict(**ticket, top_k=2, api_name="/run")
    answer = model.Triage.model_validate(answer)
    served = model.Triage.model_validate(predict(api, {**ticket, "flags": {"top_k": 2}}).json())
    assert answer.model_dump(exclude={"confidence", "articles"}) == served.model_dump(exclude={"confidence", "articles"})
    assert [a.id for a in answer.articles] == [a.id for a in served.articles] and len(answer.articles) == 2


@smoke
def test_app_compare(app):
    headline, fields, _steps, a, b = app.predict(text="How do I reset my password?", b_auto_reply=False, api_name="/compare")
    a, b = model.Triage.model_validate(a), model.Triage.model_validate(b)
    assert a.category == b.category == "account_access" and b.reply is None and b.needs_human
    differing = {row[0] for row in fields["data"] if row[3]}
    labels = {k: label_of(k, model.Triage.model_fields[k]) for k in ("reply", "needs_human")}  # rows are labelled in words
    assert differing == {labels[k] for k in labels if getattr(a, k) != getattr(b, k)} and "differ" in headline


@smoke
def test_app_batch_report_downloads(app, tmp_path):
    tickets = list(plain_tickets().items())[:3]
    source = tmp_path / "tickets.csv"
    with open(source, "w", newline="") as f:
        csv.writer(f).writerows([("text", "expected_category"), *((text, category) for category, text in tickets)])
    headline, *_plots, files, summary = app.predict(file=handle_file(str(source)), api_name="/batch_report")
    assert summary["rows"] == 3 and summary["errors"] == 0, headline
    downloaded = {path.rsplit(".", 1)[1]: path for path in files}
    assert sorted(downloaded) == ["csv", "html", "json"]
    with open(downloaded["csv"], newline="") as f:
        assert [row["category"] for row in csv.DictReader(f)] == [category for category, _ in tickets]
    assert "<html" in Path(downloaded["html"]).read_text().lower()


# --- not smoke tests: the smoke tests against a server started here ------------------------------------------------------
def run_smoke(tmp_path, **env) -> tuple[subprocess.CompletedProcess, dict[str, int]]:
    """`python -m pytest -m smoke` on this file in a subprocess, with `env`: its output and junit counts."""
    report = tmp_path / "smoke.xml"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_SMOKE") and k not in HEADER_VARIABLES}
    command = [sys.executable, "-m", "pytest", "-m", "smoke", "-p", "no:cacheprovider", f"--junitxml={report}", __file__]
    run = subprocess.run(command, cwd=model.ROOT, env={**environment, **env}, capture_output=True, text=True, timeout=600)
    suite = ElementTree.parse(report).getroot().find("testsuite")
    counts = {k: int(suite.get(k)) for k in ("tests", "failures", "errors", "skipped")}
    return run, {"tests": counts["tests"], "failed": counts["failures"] + counts["errors"], "skipped": counts["skipped"]}


def test_the_smoke_tests_pass_against_a_server_started_here(tmp_path):
    """By the same code path as against a real URL, with an API key (sent by both the HTTP and the app's client) and a flag
    (into the server's temporary review queue: conftest's Server keeps its state out of the checkout)."""
    server = Server(log=tmp_path / "server.log", LIT_SERVER_API_KEY="smoke-key")
    try:
        run, counts = run_smoke(tmp_path, TRIAGE_SMOKE_URL=server.url, LIT_SERVER_API_KEY="smoke-key", TRIAGE_SMOKE_FLAG="1")
    finally:
        server.stop()
    said = f"{run.stdout[-5000:]}\nthe server's log:\n{server.log.read_text()[-3000:]}"
    assert run.returncode == 0 and counts == {"tests": SMOKE_TESTS, "failed": 0, "skipped": 0}, said


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, {"tests": SMOKE_TESTS, "failed": 0, "skipped": SMOKE_TESTS}),  # the README's test command: skipped
        ({"TRIAGE_SMOKE_URL": "http://127.0.0.1:{port}", "TRIAGE_SMOKE_WAIT": "0", "TRIAGE_SMOKE_FLAG": "1"},  # nothing there
         {"tests": SMOKE_TESTS, "failed": SMOKE_TESTS, "skipped": 0}),
    ],
    ids=["no-url", "down"],
)  # fmt: skip
def test_the_smoke_tests_skip_without_a_url_and_fail_without_a_deployment(tmp_path, env, expected):
    run, counts = run_smoke(tmp_path, **{k: v.format(port=free_port()) for k, v in env.items()})
    assert counts == expected, run.stdout[-5000:]
    if env:
        assert run.returncode == 1
    else:
        assert run.returncode == 0 and "TRIAGE_SMOKE_URL is not set" in run.stdout + run.stderr
