"""Closing the loop (building/versions.py, builder.build_candidate, loop/gate.py): a flagged case trains a candidate, the gate judges
it against the served version, promote serves it, rollback undoes it; a candidate trained on broken labels fails."""

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import requests
from conftest import Server, free_port

import model
from building import builder, contract, versions
from loop import edge_cases, review

ROOT = model.ROOT
MISROUTED = "Lovely toaster, just far too noisy for our kitchen, so it is going back"  # a return the model calls feedback


@pytest.fixture
def loop(tmp_path, monkeypatch):
    """A suite, a review queue and a versions folder of this test's own; children inherit them."""
    (tmp_path / "suite.csv").write_bytes((model.DATA_DIR / "edge_cases.csv").read_bytes())
    monkeypatch.setenv("TRIAGE_EDGE_CASES", str(tmp_path / "suite.csv"))
    monkeypatch.setenv("TRIAGE_VERSIONS_DIR", str(tmp_path / "versions"))
    monkeypatch.setenv("TRIAGE_DATABASE_URL", f"sqlite:///{tmp_path / 'review.sqlite3'}")
    return tmp_path


def cli(*args: str) -> subprocess.CompletedProcess:
    package = "building" if args[0] in ("build", "eval") else "loop"  # python -m building build|eval, python -m loop ...
    return subprocess.run([sys.executable, "-m", package, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def candidate() -> str:
    done = cli("candidate")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)["version"]


def test_a_version_name_is_never_a_path(loop):
    for bad in ("../artifacts", "/etc", "", "20261128-234501-3fa2c1/.."):
        with pytest.raises(versions.VersionError, match="not a version name"):
            versions.folder(bad)
    with pytest.raises(versions.VersionError, match="nothing to roll back to"):
        versions.rollback()
    (loop / "versions").mkdir()
    (loop / "versions" / "served.json").write_text("{torn")
    with pytest.raises(versions.VersionError, match="cannot be read"):
        versions.state()


def test_a_training_case_never_counts_as_fixed(loop):
    ((case, _),) = edge_cases.save_cases([{"ticket": {"text": MISROUTED}, "expected": {"category": "returns_refunds"}, "train": True}])
    (result,) = [r for r in edge_cases.check_cases() if r["id"] == case.id]
    assert result["verdict"] == "training" and edge_cases.verdict_counts([result])["training"] == 1
    assert edge_cases.load_cases()[-1].train  # kept in the suite file, read back


def test_cases_fix_refuses_a_case_that_still_fails(loop):
    ((case, _),) = edge_cases.save_cases([{"ticket": {"text": MISROUTED}, "expected": {"category": "returns_refunds"}}])
    assert case.status == "open"
    done = cli("cases", "fix", case.id)
    assert done.returncode == 1 and f"still failing {case.id}" in done.stderr and "nothing marked" in done.stderr
    assert edge_cases.load_cases()[-1].status == "open"


@pytest.mark.parametrize("action", ["fix", "reopen", "train", "accept", "reject"])
def test_a_case_command_names_an_unknown_or_missing_id(loop, action):
    for ids, said in ((["99999"], "99999"), ([], "give the ids")):
        done = cli("cases", action, *ids)
        assert done.returncode == 1 and said in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_flag_train_gate_promote_serve_roll_back(loop):
    assert model.run(MISROUTED).category == "feedback"
    texts = [MISROUTED, "Gorgeous lamp but the colour clashes with everything, so I'm sending it back for my money"]
    flags = review.flag([{"ticket": {"text": t}, "expected": {"category": "returns_refunds"}} for t in texts], client="owner")
    (flagged, _), (also, _) = flags  # one case alone moves two rows of eval.csv and fails the gate; with a second, none move
    done = cli("cases", "accept", flagged.id, also.id, "--train", "--by", "ana")
    assert done.returncode == 0, done.stderr[-2000:]
    assert versions.listing() == []  # nothing built yet

    version = candidate()
    assert json.loads((loop / "versions" / version / "manifest.json").read_text())["training_cases"] == sorted([flagged.id, also.id])
    assert versions.state()["served"] is None  # building served nothing new
    refused = cli("promote", version)
    assert refused.returncode == 1 and "has not been through the gate" in refused.stderr
    gated = cli("gate", version)
    assert gated.returncode == 0 and "passes the gate against artifacts" in gated.stdout, gated.stdout + gated.stderr
    verdict = json.loads((loop / "versions" / version / "gate.json").read_text())
    assert flagged.id in [c["id"] for c in verdict["cases"]["training_learned"]] and verdict["cases"]["would_break"] == []
    assert "Training cases it learned" in (loop / "versions" / version / "gate.html").read_text()
    assert verdict["sides"]["candidate"]["version"] == version and verdict["sides"]["served"]["version"] is None  # artifacts/
    assert verdict["sides"]["served"]["data"]["train"] == verdict["sides"]["candidate"]["data"]["train"]
    compare_on_the_app(version)
    assert cli("promote", version).returncode == 0 and versions.state()["served"] == version

    pd.DataFrame({"text": [MISROUTED], "expected_category": ["returns_refunds"]}).to_csv(loop / "one.csv", index=False)
    done = subprocess.run([sys.executable, "batch.py", loop / "one.csv", "-o", loop / "one-report.csv", "--quiet"], cwd=ROOT, timeout=300)
    assert done.returncode == 0 and json.loads((loop / "one-report.json").read_text())["version"] == version  # reports name it

    server = Server()
    try:
        info = requests.get(f"{server.url}/info", timeout=30).json()
        assert info["model"]["version"] == version
        answer = requests.post(f"{server.url}/predict", json={"text": MISROUTED}, timeout=60).json()
        assert answer["category"] == "returns_refunds"
        assert f'triage_version_info{{version="{version}"}} 1.0' in requests.get(f"{server.url}/metrics", timeout=30).text
    finally:
        server.stop()

    assert cli("rollback").returncode == 0 and versions.state()["served"] is None
    server = Server()
    try:
        assert requests.get(f"{server.url}/info", timeout=30).json()["model"]["version"] == "artifacts"
        assert requests.post(f"{server.url}/predict", json={"text": MISROUTED}, timeout=60).json()["category"] == "feedback"
    finally:
        server.stop()
    assert (loop / "versions" / version / "manifest.json").exists()  # kept, to promote again


def test_a_candidate_trained_on_broken_labels_fails_the_gate_and_cannot_be_promoted(loop):
    train = pd.read_csv(model.DATA_DIR / "train.csv", dtype=str).sample(120, random_state=1)
    classes = [c.value for c in model.Category]
    wrong = [classes[(classes.index(c) + 1) % len(classes)] for c in train.category]  # every label moved one class on
    edge_cases.save_cases(
        [{"ticket": {"text": t}, "expected": {"category": w}, "train": True} for t, w in zip(train.text, wrong, strict=True)]
    )
    version = candidate()
    gated = cli("gate", version)
    assert gated.returncode == 1 and "FAILS eval: accuracy down" in gated.stderr and "(95% CI -0." in gated.stderr, gated.stderr
    assert "McNemar p = " in gated.stderr and "fails the gate" in gated.stdout
    refused = cli("promote", version)
    assert refused.returncode == 1 and "did not pass its gate" in refused.stderr
    assert versions.state()["served"] is None and os.path.exists(loop / "versions" / version / "gate.html")


def test_a_new_voice_learned_from_cases_passes_the_gate(loop, tmp_path, monkeypatch):
    """Half of the second evaluation set (other voices than train.csv) accepted as training cases, the other half kept
    as the evaluation set: the candidate learns the cases, regresses nowhere significantly, and passes (bench/bench_loop.py
    measures what it gains)."""
    data, artifacts = tmp_path / "data", tmp_path / "artifacts"
    shutil.copytree(model.DATA_DIR, data)
    shutil.copytree(builder.ARTIFACTS_DIR, artifacts, ignore=shutil.ignore_patterns(".*"))  # its encoder is reused
    style = pd.read_csv(data / "eval_style.csv", dtype=str)
    learned = style.groupby(contract.expected_column()).cumcount() % 2 == 0  # half of each category
    style[~learned].to_csv(data / "eval_style.csv", index=False)
    monkeypatch.setenv("TRIAGE_DATA_DIR", str(data))
    monkeypatch.setenv("TRIAGE_ARTIFACTS_DIR", str(artifacts))
    cases = [
        {"ticket": {"text": t}, "expected": {"category": c}, "train": True} for t, c in style[learned][["text", "expected_category"]].values
    ]
    edge_cases.save_cases(cases)

    version = candidate()
    manifest = json.loads((loop / "versions" / version / "manifest.json").read_text())
    assert manifest["classifier"]["cv"]["voices"] == {"train.csv": 948, "training cases": len(cases)}
    gated = cli("gate", version)
    assert gated.returncode == 0 and "passes the gate" in gated.stdout, gated.stdout + gated.stderr
    verdict = json.loads((loop / "versions" / version / "gate.json").read_text())
    assert verdict["failures"] == [] and all(s["regressions"] == [] for s in verdict["sets"].values())
    assert verdict["sets"]["eval_style"]["rows"] == (~learned).sum() == 96  # the unseen half
    assert len(verdict["cases"]["training_learned"]) >= 0.9 * len(cases)  # the new voice is learned
    assert "eval_style (96 rows): accuracy" in gated.stdout and "95% CI" in gated.stdout and "McNemar p" in gated.stdout


def compare_on_the_app(version: str) -> None:
    """The Compare tab puts the served version (A) and the candidate (B) side by side on one ticket."""
    from gradio_client import Client

    from app import ui

    demo = ui.build()
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        headline, _, _, a, b = client.submit(text=MISROUTED, b_auto_reply=True, b_version=version, api_name="/compare").result(timeout=120)
        assert f"between A (served) and B (version {version})" in headline
        assert (a["category"], b["category"]) == ("feedback", "returns_refunds")
        *_, table, both = client.submit("all", "all", version, api_name="/edge_cases_on_both").result(timeout=180)
        assert both["headers"] == ["text", "expected", "served", version, "answer", "id"]
        learned = [row for row in both["data"] if row[0] == MISROUTED]
        assert [row[2:4] for row in learned] == [["training", "training"]] and len(both["data"]) == len(table["data"])
        said, changed, *_ = client.submit(version, api_name="/gate_report").result(timeout=60)  # its gate.json
        assert f"**{version} passes the gate** against artifacts" in said and "95% CI" in said and "McNemar p" in said
        assert changed["headers"] == ["set", "row", "text", "expected", "served", "candidate", "change"]
        with pytest.raises(Exception, match="not a version name"):  # a path is never run as a version
            client.submit(text=MISROUTED, b_version="../artifacts", api_name="/compare").result(timeout=120)
    finally:
        demo.close()
