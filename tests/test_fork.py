"""Your pipeline, not ours: a pipeline of another shape runs in every face with no edit outside the engineer's files.

Each project is a copy of this one in which README's "Your own pipeline" steps are followed: model.py, recipe.py and
data/ replaced by a fork's (tests/forks/expense: a required float with bounds, an enum, a bool; the label `verdict`;
outputs of list[str], a list of numbers, a list of models, a nested model with numbers, a dict; no encoder), and
nothing else changed. The worked example runs the same test, as the copy with its own files. Every face is the
repository's own: the build, the API (/predict, /info, /docs' example, /health, /metrics), gradio_client on every
public endpoint, the page's tabs in a real browser, batch.py's report, Snakemake, and the loop from a flag to a
promotion and back.
"""

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import requests
from conftest import ROOT, SHOTS, Server, with_this_python
from gradio_client import Client
from gradio_client.exceptions import AppError

FORKS = {"worked-example": None, "expense": ROOT / "tests" / "forks" / "expense"}
ENGINEERS_FILES = ("model.py", "recipe.py", "data")  # what README's "Your own pipeline" says a forker replaces
MACHINERY_TESTS = [  # the tests of the machinery, drawn from the contract: they come with a fork and pass on it
    *("test_api", "test_faults", "test_heal", "test_start", "test_litserve_internals", "test_generic", "test_layout"),
    *("test_batch", "test_batch_faults", "test_iteration", "test_reports_browser"),
    *("test_gate", "test_edge_cases", "test_review", "test_store_faults", "test_versions", "test_slurm"),
    *("test_review_races", "test_versions_races", "test_app_bounds", "test_mcp", "test_shadow_review"),
]


def copied(target, fork) -> None:
    """The project's files as git sees them into `target`, with the fork's model.py, recipe.py and data/ instead."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in listed.stdout.splitlines():
        if (ROOT / name).is_file() and not (fork and name.startswith("data/")):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    if fork is None:
        if (ROOT / "artifacts").is_dir():  # the encoder's export is reused; the rest is rebuilt by the build below
            shutil.copytree(ROOT / "artifacts", target / "artifacts")
        return
    for name in ENGINEERS_FILES:
        if (fork / name).is_dir():
            shutil.copytree(fork / name, target / name)
        else:
            shutil.copy2(fork / name, target / name)


@pytest.fixture(scope="module", params=sorted(FORKS))
def project(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(request.param)
    root, scratch = base / "project", base / "scratch"  # what runs leaves the copy's own tree alone
    root.mkdir()
    scratch.mkdir()
    copied(root, FORKS[request.param])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIAGE_", "LIT_SERVER"))}
    env |= {"TRIAGE_VERSIONS_DIR": str(scratch / "versions"), "TRIAGE_EDGE_CASES": str(scratch / "cases.csv")}
    env |= {
        "TRIAGE_FLAG_RATE": "1000",
        "TRIAGE_DATABASE_URL": f"sqlite:///{scratch / 'queue.db'}",
        "TRIAGE_ENCODER": os.environ.get("TRIAGE_ENCODER", "onnx-int8"),
    }
    return {"name": request.param, "root": root, "env": env, "contract": contract_of(root, env)}


def contract_of(root, env) -> dict:
    """What the copy's model.py declares, read through the contract in the copy's own interpreter."""
    code = (
        "import json, model; from building import contract as c; contract = c.check() or {"
        "'example': c.input_example(), 'label': c.label(), 'sets': {k: str(v) for k, v in c.labelled_sets().items()},"
        "'outputs': list(c.output_fields()), 'expected': model.Expected.model_json_schema(),"
        "'numbers': [n for n, f in c.output_fields().items() if c.base_type(f.annotation) in (int, float) and n != c.probability()]"
        "}; print(json.dumps(contract))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def run(project, *command, timeout=900) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, *command], cwd=project["root"], env=project["env"], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{' '.join(command)} exit {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def built(project):
    """`python -m building build` in the copy: the artifacts the copy's recipe.py declares, evaluated."""
    done = run(project, "-m", "building", "build")
    manifest = json.loads((project["root"] / "artifacts" / "manifest.json").read_text())
    return {"printed": done.stdout, "manifest": manifest}


@pytest.fixture(scope="module")
def server(project, built):
    running = Server(root=project["root"], **{k: v for k, v in project["env"].items() if k.startswith("TRIAGE_")})
    yield running
    running.stop()


def test_only_the_engineers_files_differ(project):
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True)
    faces = [n for n in listed.stdout.splitlines() if (ROOT / n).is_file() and not n.startswith(ENGINEERS_FILES)]
    differ = [n for n in faces if (ROOT / n).read_bytes() != (project["root"] / n).read_bytes()]
    assert differ == []


def test_the_build_makes_and_evaluates_the_recipes_artifacts(project, built):
    manifest, contract = built["manifest"], project["contract"]
    assert manifest["artifacts"] and all(size["bytes"] > 0 for size in manifest["artifacts"].values())
    first = next(iter(contract["sets"]))
    assert manifest[first]["rows"] == len(pd.read_csv(contract["sets"][first])) and 0.5 < manifest[first]["accuracy"] <= 1.0


def test_the_api_answers_documents_and_counts(project, server):
    contract = project["contract"]
    answer = requests.post(f"{server.url}/predict", json=contract["example"], timeout=60)
    assert answer.status_code == 200, answer.text
    assert sorted(answer.json()) == sorted(contract["outputs"]) or set(contract["outputs"]) <= set(answer.json())
    spec = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    examples = [e["value"] for e in body.get("examples", {}).values()] or [body.get("example")]
    schema = body["schema"]
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].split("/")[-1]]
    examples = [e for e in examples if e] + schema.get("examples", [])
    assert examples, "the API documents no example of a request"
    for example in examples:  # what /docs offers to try executes
        tried = requests.post(f"{server.url}/predict", json=example, timeout=60)
        assert tried.status_code == 200, tried.text
    info = requests.get(f"{server.url}/info", timeout=10)
    assert info.status_code == 200 and info.json()
    assert requests.get(f"{server.url}/health", timeout=10).status_code == 200
    metrics = requests.get(f"{server.url}/metrics", timeout=10)
    assert metrics.status_code == 200 and "_answers" in metrics.text


def test_gradio_client_calls_every_public_endpoint_by_name(project, server):
    contract, client = project["contract"], Client(f"{server.url}/", verbose=False)
    example, expected = contract["example"], {f"expected_{k}": v for k, v in contract["expected"]["examples"][0].items()}
    answer = client.predict(**example, api_name="/run")[-1]
    assert set(contract["outputs"]) <= set(answer)
    headline, by_field, *_, a, b = client.predict(**example, api_name="/compare")
    assert {k: v for k, v in a.items() if k != "trace"} == {k: v for k, v in b.items() if k != "trace"}
    assert "0 of" in headline and len(by_field["data"]) == len(contract["outputs"])
    assert "case `" in client.predict(**example, **expected, api_name="/flag_case")
    assert "case `" in client.predict(**example, **expected, note="B's", variant="B", api_name="/flag_compare_case")
    headline, *_, files, summary = client.predict(use_eval=True, api_name="/batch_report")
    first = next(iter(contract["sets"]))
    assert summary["rows"] == len(pd.read_csv(contract["sets"][first])) and len(files) == 3 and "accuracy" in headline
    assert "flagged for review" in client.predict(api_name="/save_misclassified")
    headline, _ = client.predict(api_name="/edge_cases")
    assert "cases" in headline
    said, queue, _ = client.predict(state="pending", api_name="/review_queue")
    assert f"{len(queue['data'])} pending" in said and len(queue["data"]) >= 2
    for name in ("/gate_report", "/edge_cases_on_both"):  # no candidate yet: an error that says what to do
        with pytest.raises(AppError, match=r"candidate|gate|version"):
            client.predict(version="none", api_name=name)
    named = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert named == {"/run", "/compare", "/flag_case", "/flag_compare_case", "/batch_report", "/save_misclassified", "/edge_cases"} | {
        "/edge_cases_on_both",
        "/gate_report",
        "/review_queue",
        "/live_record",
    }, named
    assert "has answered no request in shadow yet" in client.predict(version="none", api_name="/live_record")[0]


def test_batch_scores_a_labelled_set_into_a_report_with_metrics(project, built):
    contract = project["contract"]
    name, path = next(iter(contract["sets"].items()))
    out = project["root"].parent / "scratch" / "report" / f"{name}.csv"
    run(project, "batch.py", path, "-o", str(out), "--quiet")
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["rows"] == len(pd.read_csv(path)) and summary["metrics"]["accuracy"] == built["manifest"][name]["accuracy"]
    assert sorted(summary.get("numbers", {})) == sorted(contract["numbers"])  # every number output: mean, min, max
    html = out.with_suffix(".html").read_text()
    assert "<html" in html and contract["label"] in html


def test_the_loop_from_a_flag_to_a_promotion_and_back(project, server):
    spec = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    case = {"ticket": project["contract"]["example"], "expected": project["contract"]["expected"]["examples"][0], "note": "a fork's case"}
    saved = requests.post(f"{server.url}/cases", json=case, timeout=60)
    assert saved.status_code in (200, 201), saved.text  # 200: the Run tab's flag of the same case, merged
    case_id = saved.json()["case"]["id"]
    assert "/cases" in spec["paths"]
    run(project, "-m", "loop", "cases", "accept", case_id, "--train", "--by", "tester")
    built = run(project, "-m", "loop", "candidate")
    version = json.loads(built.stdout[built.stdout.index("{") :])["version"]
    run(project, "-m", "loop", "gate", version)
    run(project, "-m", "loop", "promote", version)
    versions = run(project, "-m", "loop", "versions").stdout
    assert version in versions
    run(project, "-m", "loop", "rollback")


def test_snakemake_reports_from_a_clone_without_artifacts(project, tmp_path):
    if project["name"] == "worked-example":
        pytest.skip("tests/test_batch.py and tests/test_iteration.py run the worked example's Snakemake rules")
    clone = tmp_path / "clone"
    copied(clone, FORKS[project["name"]])
    name = next(iter(project["contract"]["sets"]))
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "-c1", f"reports/{name}.html", "-q"],
        cwd=clone,
        env=with_this_python(**{k: v for k, v in project["env"].items() if k != "TRIAGE_VERSIONS_DIR"}),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert (clone / "reports" / f"{name}.html").exists() and (clone / "artifacts" / "manifest.json").exists()


def test_every_tab_in_a_real_browser_without_console_errors(project, server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(f"{server.url}/")
        page.get_by_role("tab").first.wait_for(timeout=60_000)
        tabs = [t.inner_text() for t in page.get_by_role("tab").all()]
        assert len(tabs) >= 5, tabs
        page.locator(".gallery-item, tbody tr").first.click()  # the first example fills the input
        page.get_by_role("button", name="Run", exact=True).first.click()
        page.get_by_text("1. ").first.wait_for(timeout=60_000)  # the first step's panel: an answer came back
        for tab in tabs:
            page.get_by_role("tab", name=tab).click()
            page.wait_for_timeout(1500)
            page.screenshot(path=SHOTS / f"fork-{project['name']}-{tab.lower().replace(' ', '-')}.png", full_page=True)
    finally:
        page.close()
    assert not errors, errors


def test_the_machinerys_own_tests_pass_on_the_fork(project):
    """README's step 4: the tests of the machinery take their inputs from the contract, so they come with the fork."""
    if project["name"] == "worked-example":
        pytest.skip("on the worked example they are the suite itself")
    root = project["root"]
    for command in (["git", "init", "-q"], ["git", "add", "-A"]):  # a fork is a git checkout (tests/test_layout.py reads it)
        subprocess.run(command, cwd=root, check=True, capture_output=True, timeout=120)
    env = {k: v for k, v in project["env"].items() if not k.startswith("TRIAGE_")}
    files = [f"tests/{name}.py" for name in MACHINERY_TESTS]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not shapeless", *files],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
