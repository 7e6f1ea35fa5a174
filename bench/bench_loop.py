"""The loop learns a new voice: the outside-voice experiment on the project's own second evaluation set.

    python bench/bench_loop.py [--out bench/out/loop.json] [--accept misclassified all]

Method (the commands a user runs, in a scratch copy of data/ and every store, so nothing of the repository changes):
- data/eval_style.csv (other voices than train.csv) is split in halves, each holding half of every category: half A
  plays the outside tickets, half B stays the second evaluation set (never trained on);
- `python -m building build` builds the served version; `batch.py A.csv --save-misclassified` flags A's wrong answers
  (`--accept all`: `python -m loop cases import A.csv` flags every ticket of A instead);
  `python -m loop cases accept ... --train` accepts every flag as a training example; `python -m loop candidate`
  builds a candidate from train.csv plus those cases; `python -m loop gate NAME` judges it on eval.csv and on half B;
- the gate's report gives, per set, both sides' accuracy with the delta's bootstrap interval and McNemar's test; the
  classifier settings that cross-validation chose for each side come from the manifests. For comparison, the verdict
  of the gate as it was before (refuse when macro-F1 drops more than 0.01 or any class F1 more than 0.05) is computed
  from the same answers.
Prints a Markdown table and writes the figures as JSON.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OLD_LIMITS = {"macro_f1": 0.01, "class_f1": 0.05}  # the absolute thresholds the gate had before


STARTED = time.perf_counter()


def stage(what: str) -> None:
    """A line as each stage starts, flushed at once (to stderr: stdout is the result), so minutes of work are not silent."""
    print(f"[{time.perf_counter() - STARTED:5.0f} s] {what}", file=sys.stderr, flush=True)


def command(*args: str, env: dict) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


def experiment(scratch: Path, accept: str) -> dict:
    data = scratch / "data"
    shutil.copytree(ROOT / "data", data)
    if (ROOT / "artifacts").is_dir():  # the ONNX encoder is reused; the rest is built for the scratch data
        shutil.copytree(ROOT / "artifacts", scratch / "artifacts", ignore=shutil.ignore_patterns(".*"))
    style = pd.read_csv(data / "eval_style.csv", dtype=str)
    outside = style.groupby("expected_category").cumcount() % 2 == 0
    style[outside].to_csv(scratch / "outside.csv", index=False)
    style[~outside].to_csv(data / "eval_style.csv", index=False)
    shutil.copy(data / "edge_cases.csv", scratch / "cases.csv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    env |= {
        "TRIAGE_DATA_DIR": str(data),
        "TRIAGE_ARTIFACTS_DIR": str(scratch / "artifacts"),
        "TRIAGE_VERSIONS_DIR": str(scratch / "versions"),
        "TRIAGE_EDGE_CASES": str(scratch / "cases.csv"),
        "TRIAGE_DATABASE_URL": f"sqlite:///{scratch / 'review.sqlite3'}",
    }
    stage(f"accepting {accept}: building the artifacts on half the style set")
    command("-m", "building", "build", env=env)
    stage(f"accepting {accept}: flagging, accepting as training, a candidate, its gate")
    if accept == "misclassified":
        report = ("-o", str(scratch / "outside-report.csv"), "--quiet", "--save-misclassified")
        command("batch.py", str(scratch / "outside.csv"), *report, env=env)
    else:
        command("-m", "loop", "cases", "import", str(scratch / "outside.csv"), env=env)
    queue = command("-m", "loop", "cases", "queue", env=env).splitlines()
    ids = [line.split()[1] for line in queue if line.startswith("pending")]
    command("-m", "loop", "cases", "accept", *ids, "--train", "--by", "bench", env=env)
    version = json.loads(command("-m", "loop", "candidate", env=env))["version"]
    command("-m", "loop", "gate", version, env=env)
    verdict = json.loads((scratch / "versions" / version / "gate.json").read_text())
    served = json.loads((scratch / "artifacts" / "manifest.json").read_text())["classifier"]
    candidate = json.loads((scratch / "versions" / version / "manifest.json").read_text())["classifier"]
    old_refusals = [
        f"{name}: {what}"
        for name, s in verdict["sets"].items()
        for what, drop, limit in [
            ("macro-F1", -s["deltas"]["macro_f1"]["delta"], OLD_LIMITS["macro_f1"]),
            ("worst class F1", -min(d["delta"] for d in s["deltas"]["class_f1"].values()), OLD_LIMITS["class_f1"]),
        ]
        if drop > limit
    ]
    settings = ("C", "class_weight", "train_rows")
    return {
        "accepted": accept,
        "outside_rows": int(outside.sum()),
        "flagged_and_accepted": len(ids),
        "classifier": {"served": {k: served[k] for k in settings}, "candidate": {k: candidate[k] for k in settings}},
        "gate": {"passed": verdict["passed"], "failures": verdict["failures"], "settings": verdict["settings"]},
        "old_gate_would_refuse": old_refusals,
        "sets": {
            name: {"rows": s["rows"], "served": s["served"], "candidate": s["candidate"], "deltas": s["deltas"], "mcnemar": s["mcnemar"]}
            for name, s in verdict["sets"].items()
        },
    }


def table(result: dict) -> str:
    from loop import gate  # the gate's own table, to three digits

    return "\n".join(gate.table(result["sets"], result["gate"]["settings"]["significance"], digits=3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "loop.json")
    parser.add_argument("--accept", nargs="+", choices=["misclassified", "all"], default=["misclassified", "all"])
    args = parser.parse_args()
    results = []
    for accept in args.accept:
        with tempfile.TemporaryDirectory(prefix="bench-loop-") as scratch:
            results.append(experiment(Path(scratch), accept))
        result = results[-1]
        which = "every ticket" if accept == "all" else "the misclassified tickets"
        print(f"\nAccepted as training: {which} of half A ({result['flagged_and_accepted']} of {result['outside_rows']})")
        print(table(result))
        print(json.dumps({k: result[k] for k in ("classifier", "gate", "old_gate_would_refuse")}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
