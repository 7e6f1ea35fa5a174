"""The gate: may a candidate version replace the one served? (`python -m loop gate ID [--batch FILE.csv ...]`)

Both sides answer the same questions, each in a process of its own (TRIAGE_ARTIFACTS_DIR names its folder): every
evaluation set (data/eval.csv, and data/eval_style.csv when there), the regression suite's cases, and any labelled
batch given. Then, on each set, paired statistics say whether a change is more than noise (on 160 tickets one ticket
is 0.006 of accuracy):

- an exact McNemar test on the tickets whose right-or-wrong changed: fixed (served wrong, candidate right) against
  broken (the other way); under no change each is a coin toss, so P(at least `broken` of the `broken + fixed`) is the
  chance of a regression this large by luck;
- bootstrap confidence intervals (the tickets resampled with replacement, the same draw for both sides) for the
  deltas of accuracy, macro-F1 and each class's F1; the per-class intervals are Bonferroni-widened, one test per class.

A candidate is refused only for a significant regression, on any set: McNemar's one-sided p below `significance`, or
a macro-F1 or class-F1 interval wholly below zero; or for fixed edge cases it would break (`max_broken_cases`). Each
setting is in config.yaml's `gate:`. The report (gate.json and gate.html in the candidate's folder, and the command's
output) gives every interval and the changed tickets; the command exits 1 naming each regression.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

import model
from building import builder, versions
from loop import edge_cases
from reporting import reports

SETTINGS = {"max_broken_cases": 0, "significance": 0.05, "bootstrap_samples": 2000}  # config.yaml's `gate:` overrides


def settings() -> dict[str, float]:
    import yaml

    configured = yaml.safe_load((model.ROOT / "config.yaml").read_text()).get("gate") or {}
    unknown = set(configured) - set(SETTINGS)
    if unknown:
        raise ValueError(f"config.yaml: gate has no setting {sorted(unknown)}; known: {sorted(SETTINGS)}")
    chosen = {**SETTINGS, **configured}
    if not 0 < chosen["significance"] < 0.5 or int(chosen["bootstrap_samples"]) < 100:
        raise ValueError("config.yaml: gate's significance must be between 0 and 0.5, bootstrap_samples at least 100")
    return chosen


# --- one side's answers, in its own process ---------------------------------------------------------------------
def answers(batches: list[str], sets: bool = True) -> dict[str, Any]:
    """What the pipeline of this process (TRIAGE_ARTIFACTS_DIR) answers: evaluation sets and batches (unless `sets` is
    false: the suite's cases alone), and the suite's cases."""
    import pandas as pd

    saved = builder.ready().manifest
    named = {name: path for name, path in builder.data_files().items() if name in ("eval", "eval_style")} if sets else {}
    named.update({f"batch {Path(b).name}": Path(b) for b in batches})
    labelled = {}
    for name, path in named.items():
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        label = model.expected_column() if model.expected_column() in frame else model.LABEL
        tickets = [model.ticket_from_row(row) for row in frame.to_dict("records")]  # every Ticket field, as batch.py reads it
        predicted = [str(getattr(r, model.LABEL)) for r in model.run_batch(tickets)]
        labelled[name] = {"text": list(frame.text), "expected": list(frame[label]), "predicted": predicted}
    cases = [
        {"id": r["id"], "verdict": r["verdict"], "right": r["case"].expected.category.value == r["answer_now"]["category"]}
        | {"text": r["case"].ticket.text, "expected": r["case"].expected.category.value, "now": r["answer_now"]["category"]}
        for r in edge_cases.check_cases()
    ]
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
def paired(expected: list[str], served: list[str], candidate: list[str], significance: float, samples: int) -> dict[str, Any]:
    """Paired statistics of one set's answers by both sides (see the module's docstring): each side's accuracy, macro-F1
    and per-class F1; McNemar's exact test; bootstrap intervals for every delta; and the regressions that are
    significant, each as a sentence with its interval."""
    from scipy.stats import binomtest

    classes = sorted(set(expected))  # the classes this set labels
    y, a, b = (np.asarray(v) for v in (expected, served, candidate))
    broken, fixed = int(((a == y) & (b != y)).sum()), int(((a != y) & (b == y)).sum())
    p_worse = binomtest(broken, broken + fixed, 0.5, alternative="greater").pvalue if broken + fixed else 1.0
    p_two = binomtest(broken, broken + fixed, 0.5).pvalue if broken + fixed else 1.0
    draws = np.random.default_rng(0).integers(0, len(y), size=(samples, len(y)))  # the same tickets for both sides
    point, boot = {}, {}
    for side, predicted in (("served", a), ("candidate", b)):
        point[side] = _scores(y[None, :], predicted[None, :], classes)
        boot[side] = _scores(y[draws], predicted[draws], classes)

    def interval(key: str, level: float) -> dict[str, float]:
        delta = boot["candidate"][key] - boot["served"][key]
        low, high = np.quantile(delta, [level / 2, 1 - level / 2], axis=0)
        return {"delta": round(float(point["candidate"][key][0] - point["served"][key][0]), 4), "low": round(float(low), 4)} | {
            "high": round(float(high), 4)
        }

    per_class = significance / len(classes)  # Bonferroni: one test per class
    deltas = {"accuracy": interval("accuracy", significance), "macro_f1": interval("macro_f1", significance)}
    deltas["class_f1"] = {c: interval(f"f1 {c}", per_class) for c in classes}
    level = f"{1 - significance:.0%}"
    regressions = []
    if broken > fixed and p_worse < significance:
        d = deltas["accuracy"]
        regressions.append(
            f"accuracy down {-d['delta']:.4f} ({level} CI {d['low']:+.4f} to {d['high']:+.4f}): {broken} tickets broken, "
            f"{fixed} fixed, McNemar p = {p_worse:.4f} < {significance}"
        )
    if deltas["macro_f1"]["high"] < 0:
        d = deltas["macro_f1"]
        regressions.append(f"macro-F1 down {-d['delta']:.4f} ({level} CI {d['low']:+.4f} to {d['high']:+.4f}, wholly below 0)")
    for c, d in deltas["class_f1"].items():
        if d["high"] < 0:
            regressions.append(
                f"F1 of {c} down {-d['delta']:.4f} ({1 - per_class:.2%} CI {d['low']:+.4f} to {d['high']:+.4f}, wholly below 0)"
            )
    summary = {
        side: {"accuracy": round(float(v["accuracy"][0]), 4), "macro_f1": round(float(v["macro_f1"][0]), 4)} for side, v in point.items()
    }
    for side, v in point.items():
        summary[side]["class_f1"] = {c: round(float(v[f"f1 {c}"][0]), 4) for c in classes}
    mcnemar = {"fixed": fixed, "broken": broken, "p_worse": round(float(p_worse), 4), "p_two_sided": round(float(p_two), 4)}
    return summary | {"deltas": deltas, "mcnemar": mcnemar, "regressions": regressions, "rows": len(y)}


def _scores(expected: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict[str, np.ndarray]:
    """Accuracy, macro-F1 and each class's F1 of every row of a (draws x tickets) array pair, as sklearn computes them."""
    scores = {"accuracy": (expected == predicted).mean(axis=1)}
    for c in classes:
        tp = ((expected == c) & (predicted == c)).sum(axis=1)
        wrong = (expected == c).sum(axis=1) + (predicted == c).sum(axis=1)  # 2 tp + fp + fn
        scores[f"f1 {c}"] = np.divide(2 * tp, wrong, out=np.zeros(len(tp)), where=wrong > 0)
    scores["macro_f1"] = np.mean([scores[f"f1 {c}"] for c in classes], axis=0)
    return scores


def change(expected: str, served: str, candidate: str) -> str:
    return "fixed" if candidate == expected else "broken" if served == expected else "changed"


def compare(served: dict, candidate: dict, chosen: dict[str, float]) -> dict[str, Any]:
    """The gate's verdict and everything it saw: per set, both sides' scores, the deltas with their intervals, McNemar's
    test and the tickets whose answer changes; the edge cases."""
    sets, failures = {}, []
    for name, now in served["sets"].items():
        new = candidate["sets"][name]
        stats = paired(now["expected"], now["predicted"], new["predicted"], chosen["significance"], int(chosen["bootstrap_samples"]))
        rows = [
            {"row": i + 1, "text": t[:200], "expected": e, "served": a, "candidate": b, "change": change(e, a, b)}
            for i, (t, e, a, b) in enumerate(zip(now["text"], now["expected"], now["predicted"], new["predicted"], strict=True))
            if a != b
        ]
        sets[name] = stats | {"changed_rows": rows}
        failures += [f"{name}: {regression}" for regression in stats["regressions"]]
    was = {c["id"]: c for c in served["cases"]}
    cases = {
        "would_break": [c for c in candidate["cases"] if c["verdict"] == "broken"],
        "fixes": [c for c in candidate["cases"] if c["verdict"] == "newly fixed"],
        "training_learned": [c for c in candidate["cases"] if c["verdict"] == "training" and c["right"]],
        "training_not_learned": [c for c in candidate["cases"] if c["verdict"] == "training" and not c["right"]],
        "newly_wrong_against_served": [c for c in candidate["cases"] if not c["right"] and was.get(c["id"], {}).get("right")],
    }
    if len(cases["would_break"]) > chosen["max_broken_cases"]:
        failures.append(f"{len(cases['would_break'])} fixed edge cases would break (max_broken_cases {chosen['max_broken_cases']})")
    return {"passed": not failures, "failures": failures, "settings": chosen, "sets": sets, "cases": cases}


def run(version: str, batches: list[str] = ()) -> dict[str, Any]:
    """Judge `version` against what is served now; its report goes to the candidate's folder (gate.json, gate.html)."""
    folder = versions.folder(version)
    if not (folder / "manifest.json").is_file():
        raise versions.VersionError(f"no version {version}: see python -m loop versions")
    served_name = versions.state()["served"] or "artifacts"
    served_folder = versions.served_dir() or builder.ARTIFACTS_DIR
    chosen = settings()
    served, candidate = side(served_folder, list(batches)), side(folder, list(batches))
    verdict = compare(served, candidate, chosen) | {"candidate": version, "against": served_name, "batches": [str(b) for b in batches]}
    verdict["sides"] = {"served": served["about"], "candidate": candidate["about"]}  # version, pipeline, data hashes, encoder
    (folder / "gate.html").write_text(html(verdict))
    (folder / "gate.json").write_text(json.dumps(verdict, indent=2) + "\n")
    return verdict


def described(name: str, s: dict[str, Any], significance: float) -> str:
    """One set's result in a line: both sides, the deltas with their intervals, McNemar's counts and p."""
    acc, f1, test = s["deltas"]["accuracy"], s["deltas"]["macro_f1"], s["mcnemar"]
    return (
        f"{name} ({s['rows']} tickets): accuracy {s['served']['accuracy']:.4f} -> {s['candidate']['accuracy']:.4f} "
        f"({acc['delta']:+.4f}, {1 - significance:.0%} CI {acc['low']:+.4f} to {acc['high']:+.4f}); macro-F1 "
        f"{s['served']['macro_f1']:.4f} -> {s['candidate']['macro_f1']:.4f} ({f1['delta']:+.4f}, CI {f1['low']:+.4f} to "
        f"{f1['high']:+.4f}); {test['fixed']} fixed, {test['broken']} broken (McNemar p = {test['p_two_sided']:.4f}); "
        f"{len(s['changed_rows'])} answers change"
    )


def table(sets: dict[str, Any], significance: float, digits: int = 4, shown=str) -> list[str]:
    """Each set's result as a row of a Markdown table: both sides' accuracy, the deltas with their intervals, McNemar's
    counts and p (`shown` writes a set's name: the app shows it as code)."""
    level, f = f"{1 - significance:.0%} CI", f"+.{digits}f"
    lines = [f"| set | tickets | accuracy served → candidate | Δ accuracy, {level} | Δ macro-F1, {level} | fixed / broken, McNemar p |"]
    lines.append("|---|---|---|---|---|---|")
    for name, s in sets.items():
        acc, f1, test = s["deltas"]["accuracy"], s["deltas"]["macro_f1"], s["mcnemar"]
        lines.append(
            f"| {shown(name)} | {s['rows']} | {s['served']['accuracy']:.{digits}f} → {s['candidate']['accuracy']:.{digits}f} | "
            f"{acc['delta']:{f}} [{acc['low']:{f}}, {acc['high']:{f}}] | {f1['delta']:{f}} [{f1['low']:{f}}, {f1['high']:{f}}] | "
            f"{test['fixed']} / {test['broken']}, p = {test['p_two_sided']:.{digits}f} |"
        )
    return lines


def html(verdict: dict[str, Any]) -> str:
    """The promotion report: the verdict, per set both sides' scores and every delta with its interval, the cases, the
    tickets whose answer changes."""
    significance = verdict["settings"]["significance"]
    groups = [
        reports.cards(
            "Verdict",
            [("verdict", "passes the gate" if verdict["passed"] else "fails the gate"), ("against", verdict["against"])],
            verdict["failures"] or [f"no significant regression at {significance} on any set"],
        )
    ]
    tables = []
    for name, s in verdict["sets"].items():
        acc, f1, test = s["deltas"]["accuracy"], s["deltas"]["macro_f1"], s["mcnemar"]
        items = [(f"{k} served → candidate", f"{s['served'][k]:.4f} → {s['candidate'][k]:.4f}") for k in ("accuracy", "macro_f1")]
        items += [
            (f"accuracy Δ, {1 - significance:.0%} CI", f"{acc['delta']:+.4f} [{acc['low']:+.4f}, {acc['high']:+.4f}]"),
            (f"macro-F1 Δ, {1 - significance:.0%} CI", f"{f1['delta']:+.4f} [{f1['low']:+.4f}, {f1['high']:+.4f}]"),
            ("fixed / broken (McNemar p)", f"{test['fixed']} / {test['broken']} (p = {test['p_two_sided']:.4f})"),
        ]
        groups.append(reports.cards(name, items, s["regressions"]))
        per_class = [
            {"class": c, "served": s["served"]["class_f1"][c], "candidate": s["candidate"]["class_f1"][c]}
            | {"delta": d["delta"], "low": d["low"], "high": d["high"]}
            for c, d in s["deltas"]["class_f1"].items()
        ]
        tables.append(reports.table(f"{name}: F1 per class, delta with its Bonferroni interval", per_class, len(per_class)))
        tables.append(reports.table(f"{name}: tickets whose answer changes", s["changed_rows"][:200], len(s["changed_rows"])))
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
        {k: verdict[k] for k in ("candidate", "against", "settings", "sides", "batches")},
    )
