"""What the worked example's candidates learn from training cases (triage): a misrouted ticket, and a new voice (half
of data/eval_style.csv). A fork rewrites these; the loop's machinery is tested in tests/test_versions.py."""

import json
import shutil
import subprocess
import sys

import pandas as pd

import model
from building import builder, contract
from loop import edge_cases, gate, review

ROOT = model.ROOT
MISROUTED = "Lovely toaster, just far too noisy for our kitchen, so it is going back"  # a return the model calls feedback


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loop", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def candidate() -> str:
    done = cli("candidate")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)["version"]


def test_a_misrouted_ticket_accepted_for_training_is_learned(loop):
    assert model.run(MISROUTED).category == "feedback"
    texts = [MISROUTED, "Gorgeous lamp but the colour clashes with everything, so I'm sending it back for my money"]
    flags = review.flag([{"ticket": {"text": t}, "expected": {"category": "returns_refunds"}} for t in texts], client="owner")
    (flagged, _), (also, _) = flags  # one case alone moves two rows of eval.csv and fails the gate; with a second, none move
    done = cli("cases", "accept", flagged.id, also.id, "--train", "--by", "ana")
    assert done.returncode == 0, done.stderr[-2000:]
    version = candidate()
    gated = cli("gate", version)
    assert gated.returncode == 0 and "passes the gate against artifacts" in gated.stdout, gated.stdout + gated.stderr
    verdict = json.loads((loop / "versions" / version / "gate.json").read_text())
    assert flagged.id in [c["id"] for c in verdict["cases"]["training_learned"]] and verdict["cases"]["would_break"] == []
    assert verdict["sides"]["served"]["data"]["train"] == verdict["sides"]["candidate"]["data"]["train"]
    assert gate.one_ticket(version, {"text": MISROUTED}).category == "returns_refunds"
    assert model.run(MISROUTED).category == "feedback"  # what is served is untouched until a promote


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
