"""The gate: may a candidate version replace the one served? (`python -m loop gate ID [--batch FILE.csv ...]`)

Both sides answer the same questions, each in a process of its own (TRIAGE_ARTIFACTS_DIR names its folder): every
evaluation set (data/eval.csv, and data/eval_style.csv when there), the regression suite's cases, and any labelled
batch given. The gate compares the answers: accuracy and macro-F1 with their deltas, per-class F1 deltas, the fixed
cases the candidate would break and the open ones it fixes, the training cases it learned (never counted as fixed),
and the rows of each batch whose answer changes. It passes when every threshold of config.yaml's `gate:` holds
(as MLflow's model validation and TFMA's change thresholds do, with the regression suite beside them), writes its
report (gate.json and gate.html in the candidate's folder) and exits 1 naming each threshold that failed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import model
from building import builder, versions
from loop import edge_cases
from reporting import reports

THRESHOLDS = {"max_broken_cases": 0, "max_macro_f1_drop": 0.01, "max_class_f1_drop": 0.05}  # config.yaml's `gate:` overrides


def thresholds() -> dict[str, float]:
    import yaml

    configured = yaml.safe_load((model.ROOT / "config.yaml").read_text()).get("gate") or {}
    unknown = set(configured) - set(THRESHOLDS)
    if unknown:
        raise ValueError(f"config.yaml: gate has no threshold {sorted(unknown)}; known: {sorted(THRESHOLDS)}")
    return {**THRESHOLDS, **configured}


# --- one side's answers, in its own process ---------------------------------------------------------------------
def answers(batches: list[str], sets: bool = True) -> dict[str, Any]:
    """What the pipeline of this process (TRIAGE_ARTIFACTS_DIR) answers: evaluation sets and batches (unless `sets` is
    false: the suite's cases alone), and the suite's cases."""
    import pandas as pd

    builder.ready()
    named = {name: path for name, path in builder.data_files().items() if name in ("eval", "eval_style")} if sets else {}
    named.update({f"batch {Path(b).name}": Path(b) for b in batches})
    labelled = {}
    for name, path in named.items():
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        label = "expected_category" if "expected_category" in frame else "category"
        predicted = [r.category.value for r in model.run_batch(list(frame.text))]
        labelled[name] = {"text": list(frame.text), "expected": list(frame[label]), "predicted": predicted}
    cases = [
        {"id": r["id"], "verdict": r["verdict"], "right": r["case"].expected.category.value == r["answer_now"]["category"]}
        | {"text": r["case"].ticket.text, "expected": r["case"].expected.category.value, "now": r["answer_now"]["category"]}
        for r in edge_cases.check_cases()
    ]
    saved = builder.ready().manifest
    about = {k: saved.get(k) for k in ("version", "pipeline_version", "data", "built_at")} | {"encoder": saved["encoder"]["name"]}
    return {"about": about, "sets": labelled, "cases": cases}


def in_version(folder: Path, code: str, *args: str) -> str:
    """What `code` prints, run in a process of its own on the version in `folder`; VersionError with its last line."""
    env = {**os.environ, "TRIAGE_ARTIFACTS_DIR": str(folder), "PYTHONPATH": str(model.ROOT)}
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=model.ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise versions.VersionError(f"{folder.name} could not answer: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def side(folder: Path, batches: list[str], sets: bool = True) -> dict[str, Any]:
    """`answers` of the version in `folder`."""
    code = "import json, sys; from loop import gate; json.dump(gate.answers(sys.argv[2:], sets=sys.argv[1] == 'sets'), sys.stdout)"
    return json.loads(in_version(folder, code, "sets" if sets else "cases", *batches))


def one_ticket(version: str, ticket: dict, flags: dict) -> "model.Triage":
    """One ticket answered by `version` (with its trace), in a process of its own: the app's Compare tab."""
    code = (
        "import json, sys, model; from building import builder; builder.ready(); "
        "print(model.run(json.loads(sys.argv[1]), json.loads(sys.argv[2]), debug=True).model_dump_json())"
    )
    return model.Triage.model_validate_json(in_version(versions.folder(version), code, json.dumps(ticket), json.dumps(flags)))


# --- the comparison ---------------------------------------------------------------------------------------------
def scores(labelled: dict) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, f1_score

    classes = [c.value for c in model.Category]
    per_class = f1_score(labelled["expected"], labelled["predicted"], labels=classes, average=None, zero_division=0)
    return {
        "accuracy": round(accuracy_score(labelled["expected"], labelled["predicted"]), 4),
        "macro_f1": round(f1_score(labelled["expected"], labelled["predicted"], labels=classes, average="macro", zero_division=0), 4),
        "class_f1": {c: round(float(f), 4) for c, f in zip(classes, per_class, strict=True)},
    }


def change(expected: str, served: str, candidate: str) -> str:
    return "fixed" if candidate == expected else "broken" if served == expected else "changed"


def compare(served: dict, candidate: dict, limits: dict[str, float]) -> dict[str, Any]:
    """The gate's verdict and everything it saw: per set, the scores of each side and their deltas; the cases."""
    sets, failures = {}, []
    for name, now in served["sets"].items():
        new = candidate["sets"][name]
        before, after = scores(now), scores(new)
        deltas = {c: round(after["class_f1"][c] - before["class_f1"][c], 4) for c in after["class_f1"]}
        rows = [
            {"row": i + 1, "text": t[:200], "expected": e, "served": a, "candidate": b, "change": change(e, a, b)}
            for i, (t, e, a, b) in enumerate(zip(now["text"], now["expected"], now["predicted"], new["predicted"], strict=True))
            if a != b
        ]
        sets[name] = {"served": before, "candidate": after, "class_f1_delta": deltas, "changed_rows": rows}
        drop = before["macro_f1"] - after["macro_f1"]
        if drop > limits["max_macro_f1_drop"]:
            failures.append(f"{name}: macro-F1 down {drop:.4f} (max_macro_f1_drop {limits['max_macro_f1_drop']})")
        worst = min(deltas, key=deltas.get)
        if -deltas[worst] > limits["max_class_f1_drop"]:
            failures.append(f"{name}: F1 of {worst} down {-deltas[worst]:.4f} (max_class_f1_drop {limits['max_class_f1_drop']})")
    was = {c["id"]: c for c in served["cases"]}
    cases = {
        "would_break": [c for c in candidate["cases"] if c["verdict"] == "broken"],
        "fixes": [c for c in candidate["cases"] if c["verdict"] == "newly fixed"],
        "training_learned": [c for c in candidate["cases"] if c["verdict"] == "training" and c["right"]],
        "training_not_learned": [c for c in candidate["cases"] if c["verdict"] == "training" and not c["right"]],
        "newly_wrong_against_served": [c for c in candidate["cases"] if not c["right"] and was.get(c["id"], {}).get("right")],
    }
    if len(cases["would_break"]) > limits["max_broken_cases"]:
        failures.append(f"{len(cases['would_break'])} fixed edge cases would break (max_broken_cases {limits['max_broken_cases']})")
    return {"passed": not failures, "failures": failures, "thresholds": limits, "sets": sets, "cases": cases}


def run(version: str, batches: list[str] = ()) -> dict[str, Any]:
    """Judge `version` against what is served now; its report goes to the candidate's folder (gate.json, gate.html)."""
    folder = versions.folder(version)
    if not (folder / "manifest.json").is_file():
        raise versions.VersionError(f"no version {version}: see python -m loop versions")
    served_name = versions.state()["served"] or "artifacts"
    served_folder = versions.served_dir() or model.ROOT / "artifacts"
    limits = thresholds()
    served, candidate = side(served_folder, list(batches)), side(folder, list(batches))
    verdict = compare(served, candidate, limits) | {"candidate": version, "against": served_name, "batches": [str(b) for b in batches]}
    verdict["sides"] = {"served": served["about"], "candidate": candidate["about"]}  # version, pipeline, data hashes, encoder
    (folder / "gate.html").write_text(html(verdict))
    (folder / "gate.json").write_text(json.dumps(verdict, indent=2) + "\n")
    return verdict


def html(verdict: dict[str, Any]) -> str:
    """The promotion report: the verdict, the scores of both sides per set, the cases, the rows that change."""
    groups = [
        reports.cards(
            "Verdict",
            [("verdict", "passes the gate" if verdict["passed"] else "fails the gate"), ("against", verdict["against"])],
            verdict["failures"],
        )
    ]
    for name, s in verdict["sets"].items():
        items = [(f"{k} served → candidate", f"{s['served'][k]:.4f} → {s['candidate'][k]:.4f}") for k in ("accuracy", "macro_f1")]
        groups.append(reports.cards(name, items, [f"F1 {c}: {d:+.4f}" for c, d in s["class_f1_delta"].items() if d]))
    tables = [
        reports.table(f"{name}: rows whose answer changes", s["changed_rows"][:200], len(s["changed_rows"]))
        for name, s in verdict["sets"].items()
    ]
    titles = {
        "would_break": "Fixed cases the candidate would break",
        "fixes": "Open cases the candidate fixes",
        "training_learned": "Training cases it learned (not counted as fixed)",
        "training_not_learned": "Training cases it did not learn",
    }
    tables += [reports.table(title, verdict["cases"][key], len(verdict["cases"][key])) for key, title in titles.items()]
    return reports.page(
        f"Gate: {verdict['candidate']} against {verdict['against']}",
        groups,
        tables,
        {k: verdict[k] for k in ("candidate", "against", "thresholds", "sides", "batches")},
    )
