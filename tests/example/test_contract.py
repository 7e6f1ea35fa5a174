"""The contract of model.py: README's "Changing the pipeline" edits, applied to model.py alone in a copy of the project,
reach every face with no other file changed: a new input field (an enum with a default), a feature flag, a step with
its debug output and an output field."""

import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import requests
from conftest import ROOT, SHOTS, Server
from gradio_client import Client
from playwright.sync_api import expect

EDIT = re.compile(r'```python\n# model\.py, (before|after) the line starting "(.+?)"\n(.*?)```', re.S)
LONG = "My parcel has not arrived and I would like to know where it is, since it was due on Monday. " * 2  # 38 words


def readme_edits() -> list[tuple[str, str, str]]:
    """The edits README's "Changing the pipeline" section shows: (before or after, the anchor line's start, the lines)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Changing the pipeline") :]
    return EDIT.findall(section[: section.index("\n## ", 3)])


def changed(source: str, edits: list[tuple[str, str, str]]) -> str:
    """`source` with each edit made at its anchor, which must be on exactly one line."""
    lines = source.split("\n")
    for where, start, block in edits:
        at = [i for i, line in enumerate(lines) if line.strip().startswith(start)]
        assert len(at) == 1, f"README's edit anchor {start!r} is on {len(at)} lines of model.py, not one"
        position = at[0] + (where == "after")
        added = block.split("\n")[:-1]
        top_level = not added[0].startswith(" ")  # a class or function: two blank lines after it, as ruff formats model.py
        lines[position:position] = added + ["", ""] * top_level
    return "\n".join(lines)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the project (its files as git sees them, and artifacts/ for the encoder) with model.py edited."""
    copy = tmp_path_factory.mktemp("evolved")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in listed.stdout.splitlines():
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    if (ROOT / "artifacts").is_dir():  # an unchanged encoder is reused; the rest is rebuilt for the new model.py
        shutil.copytree(ROOT / "artifacts", copy / "artifacts")
    edits = readme_edits()
    assert len(edits) == 7, f"README's 'Changing the pipeline' shows {len(edits)} edits of model.py"
    (copy / "model.py").write_text(changed((ROOT / "model.py").read_text(), edits))
    return copy


@pytest.fixture(scope="module")
def environment():
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_") or k == "TRIAGE_VERSIONS_DIR"}
    return env | {"TRIAGE_ENCODER": os.environ.get("TRIAGE_ENCODER", "onnx-int8")}


@pytest.fixture(scope="module")
def scored(project, environment):
    """batch.py of the copy on tickets with a `language` column: German, none (the default) and a bad value."""
    pd.DataFrame({"text": [LONG, "I cannot log in", "hallo"], "language": ["de", "", "fr"]}).to_csv(project / "in.csv", index=False)
    command = [sys.executable, "batch.py", "in.csv", "-o", "out.csv", "--quiet", "--flag", "max_words=20"]
    subprocess.run(command, cwd=project, env=environment, check=True, timeout=600, capture_output=True)
    return pd.read_csv(project / "out.csv", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def server(project, environment, scored):  # after batch.py: the copy's artifacts are built by then
    scratch = project / "scratch"
    scratch.mkdir()
    running = Server(root=project, TRIAGE_EDGE_CASES=str(scratch / "cases.csv"), TRIAGE_DATABASE_URL=f"sqlite:///{scratch / 'q.db'}")
    yield running
    running.stop()


def test_only_model_py_changed(project):
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True)
    differ = [n for n in listed.stdout.splitlines() if (ROOT / n).is_file() and (ROOT / n).read_bytes() != (project / n).read_bytes()]
    assert differ == ["model.py"]  # every face is the repository's own


def test_batch_reads_the_new_column_and_reports_the_new_output(scored):
    assert "long_ticket" in scored.columns and list(scored.language) == ["de", "", "fr"]
    assert list(scored.long_ticket[:2]) == ["True", "False"] and scored.error[2].startswith("row 3: language: Input should be 'en' or 'de'")


def test_the_api_accepts_and_documents_the_new_field_flag_and_output(server):
    schema = requests.get(f"{server.url}/openapi.json", timeout=10).json()["components"]["schemas"]
    assert "language" in schema["PredictRequest"]["properties"] and schema["Language"]["enum"] == ["en", "de"]
    assert "max_words" in schema["Flags"]["properties"] and "long_ticket" in schema["Triage"]["required"]
    answer = requests.post(f"{server.url}/predict", json={"text": LONG, "language": "de", "flags": {"max_words": 20}}, timeout=60)
    assert answer.status_code == 200 and answer.json()["long_ticket"] is True
    refused = requests.post(f"{server.url}/predict", json={"text": LONG, "language": "fr"}, timeout=60)
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "language"]


def test_gradio_client_calls_the_new_parameters_by_name_and_compares_the_flag(server):
    client = Client(f"{server.url}/", verbose=False)
    _, fields, *_, answer = client.predict(text=LONG, language="de", max_words=20, api_name="/run")
    assert answer["long_ticket"] is True and ["Long ticket", "yes"] in fields["data"]
    _, by_field, by_step, *_ = client.predict(text=LONG, language="de", max_words=100, b_max_words=20, api_name="/compare")
    assert ["Long ticket", "no", "yes", "◆ differs"] in by_field["data"]
    assert "Measure" in [row[0] for row in by_step["data"]]  # the step's name in words
    said = client.predict(text=LONG, language="de", expected_category="order_status", api_name="/flag_case")
    case_id = re.search(r"case `(\w+)`", said).group(1)
    pending = requests.get(f"{server.url}/cases", params={"state": "pending"}, timeout=10).json()["cases"]
    assert [c["case"]["ticket"]["language"] for c in pending if c["case"]["id"] == case_id] == ["de"]


def test_flagging_over_http_keeps_the_new_field_into_the_suite(server):
    case = {"ticket": {"text": "Wo ist mein Paket?", "language": "de"}, "expected": {"category": "order_status"}}
    saved = requests.post(f"{server.url}/cases", json=case, timeout=30)
    assert saved.status_code == 201 and saved.json()["case"]["ticket"]["language"] == "de"
    wrong = requests.post(f"{server.url}/cases", json={**case, "ticket": {"text": "x", "language": "fr"}}, timeout=30)
    assert wrong.status_code == 422


def test_the_page_shows_the_new_control_step_and_output(server, browser, project):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{server.url}/")
        expect(page.get_by_label("Language").first).to_be_visible(timeout=60_000)
        page.get_by_label("text").first.fill(LONG)
        page.get_by_role("button", name="Run", exact=True).click()
        panel = page.get_by_text("7. Measure")
        panel.wait_for(timeout=60_000)
        expect(page.get_by_text("Long ticket", exact=True).first).to_be_visible()
        panel.click()
        expect(page.get_by_text("Words", exact=True).filter(visible=True).first).to_be_visible()
        page.screenshot(path=SHOTS / "evolved-triage.png", full_page=True)
    finally:
        page.close()
