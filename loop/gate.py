"""The gate: may a candidate version replace the one served? (`python -m loop gate ID [--batch FILE.csv ...]`)

Both sides answer the same questions, each in a process of its own (TRIAGE_ARTIFACTS_DIR names its folder): every
labelled set the pipeline declares (`contract.labelled_sets()`), the regression suite's cases, and any labelled batch
given; a pipeline with no label is judged on the suite's cases alone. A row of a set or batch that is no valid input is
left out and named (its number and field), as batch.py does, and the rest is judged. Then, on each set, paired
statistics on the label say whether a change is more than noise (on 160 rows one row is 0.006 of accuracy):

- an exact McNemar test on the rows whose right-or-wrong changed: fixed (served wrong, candidate right) against
  broken (the other way); under no change each is a coin toss, so P(at least `broken` of the `broken + fixed`) is the
  chance of a regression this large by luck;
- bootstrap confidence intervals (the rows resampled with replacement, the same draw for both sides) for the
  deltas of accuracy, macro-F1 and each class's F1; the per-class intervals are Bonferroni-widened, one test per class.

A candidate that ran in shadow (app/shadow.py) has one more set, "live traffic": the disagreements with the served
version that reviewers judged (`python -m loop shadow judge`), each side right or wrong on the label; its record in
shadow (requests, agreement per field) is in the report too.

A candidate is refused only for a significant regression, on any set: McNemar's one-sided p below `significance`, or
a macro-F1 or class-F1 interval wholly below zero; or for fixed edge cases it would break (`max_broken_cases`). Each
setting is in config.yaml's `gate:`. The report (gate.json and gate.html in the candidate's folder, and the command's
output) gives every interval and the changed rows; the command exits 1 naming each regression.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, TypeAdapter, ValidationError

import model
from building import builder, contract, files, versions
from loop import edge_cases
from reporting import reports

SHOWN = contract.text_field() or "input"  # the column of a row's or case's input: its text field, or the input as JSON
SETTINGS = {"max_broken_cases": 0, "significance": 0.05, "bootstrap_samples": 2000}  # config.yaml's `gate:` overrides


def settings() -> dict[str, float]:
    import yaml

    configured = yaml.safe_load((model.ROOT / "config.yaml").read_text()).get("gate") or {}
    strange = set(configured) - set(SETTINGS)
    if strange:
        raise ValueError(f"config.yaml: gate has no setting {sorted(strange)}; known: {sorted(SETTINGS)}")
    chosen = {**SETTINGS, **configured}
    if not 0 < chosen["significance"] < 0.5 or int(chosen["bootstrap_samples"]) < 100:
        raise ValueError("config.yaml: gate's significance must be between 0 and 0.5, bootstrap_samples at least 100")
    return chosen


# --- one side's answers, in its own process ---------------------------------------------------------------------
def answers(batches: list[str], sets: bool = True) -> dict[str, Any]:
    """What the pipeline of this process (TRIAGE_ARTIFACTS_DIR) answers: its labelled sets and batches (unless `sets`
    is false, or it has no label: the suite's cases alone), and the suite's cases."""
    saved = builder.ready().manifest
    named = {**(contract.labelled_sets() if sets else {}), **{f"batch {Path(b).name}": Path(b) for b in batches}}
    labelled = {name: judged(path) for name, path in named.items()} if contract.label() else {}
    label, cases = contract.label(), []
    for r in edge_cases.check_cases():
        expected, now = r["case"].expected.model_dump(mode="json", exclude_none=True), r["answer_now"]
        on = {label: expected[label]} if label in expected else expected  # right or wrong: the label, where there is one
        right = all(now.get(k) == v for k, v in on.items())
        shown = {
            SHOWN: edge_cases.input_text(r["case"].ticket),
            "expected": edge_cases.in_words(on),
            "now": edge_cases.in_words({k: now.get(k) for k in on}),
        }
        cases.append({"id": r["id"], "verdict": r["verdict"], "right": right} | shown)
    about = {k: saved.get(k) for k in ("version", "pipeline_version", "data", "built_at")}
    about["encoder"] = (saved.get("encoder") or {}).get("name")  # a pipeline without an encoder has none
    return {"about": about, "sets": labelled, "cases": cases}


def judged(path: Path) -> dict[str, list]:
    """One labelled table's rows as the pipeline answers them: each row's number (from 1, as batch.py counts them),
    input (`input_text`), expected label and predicted label, as text. A row no input can be made of is left out and
    named with its number and field (`left_out`); a row the pipeline fails on is answered with its error (wrong)."""
    import pandas as pd

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    label, column = contract.label(), contract.expected_column()
    column = column if column in frame else label
    if column not in frame:
        raise ValueError(f"{Path(path).name}: no {contract.expected_column()} column (the right {label}) to judge it on")
    numbers, inputs, left_out = [], [], []
    for number, row in enumerate(frame.to_dict("records"), start=1):
        try:
            inputs.append(contract.input_from_row(row))
            numbers.append(number)
        except ValidationError as error:
            left_out.append({"row": number, "problem": contract.error_message(error)})
    results = contract.run_each(inputs)
    predicted = [f"error: {type(r).__name__}: {r}" if isinstance(r, Exception) else _label_word(getattr(r, label)) for r in results]
    expected = [_label_word(frame[column].iloc[n - 1], parse=True) for n in numbers]
    texts = [edge_cases.input_text(one) for one in inputs]
    return {"row_numbers": numbers, SHOWN: texts, "expected": expected, "predicted": predicted, "left_out": left_out}


def _label_word(value: Any, parse: bool = False) -> str:
    """A label's value as text, the same for a table's cell and the pipeline's answer (`billing`, `true`, `3`); with
    `parse`, a cell read as the label's type first (a cell that is none stays as written: it is never right)."""
    annotation = model.Output.model_fields[contract.label()].annotation
    adapter = TypeAdapter(annotation)
    try:
        value = adapter.validate_python(edge_cases.cell_value(annotation, value)) if parse else value
        value = adapter.dump_python(value, mode="json")
    except (ValidationError, ValueError):
        return str(value)
    return value if isinstance(value, str) else json.dumps(value)


def in_version(folder: Path, code: str, *args: str) -> str:
    """What `code` prints, run in a process of its own on the version in `folder`; VersionError with its last line."""
    env = {**os.environ, "TRIAGE_ARTIFACTS_DIR": str(folder), "PYTHONPATH": str(model.ROOT)}
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=model.ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:  # its last line, a VersionError's own words without the class name when it is one
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1].removeprefix("building.versions.VersionError: ")
        raise versions.VersionError(last if last.startswith(f"version {folder.name} ") else f"{folder.name} could not answer: {last}")
    return done.stdout


def side(folder: Path, batches: list[str], sets: bool = True) -> dict[str, Any]:
    """`answers` of the version in `folder`."""
    code = "import json, sys; from loop import gate; json.dump(gate.answers(sys.argv[2:], sets=sys.argv[1] == 'sets'), sys.stdout)"
    return json.loads(in_version(folder, code, "sets" if sets else "cases", *batches))


def one_ticket(version: str, ticket: dict | BaseModel, flags: dict | BaseModel | None = None) -> BaseModel:
    """One input answered by `version` (with its trace), in a process of its own: the app's Compare tab. A model.Output;
    an input or flags that are not valid raise pydantic's ValidationError here, naming the field."""
    one, flags = model.Input.model_validate(ticket), model.Flags.model_validate(flags or {})
    code = (
        "import json, sys, model; from building import builder, contract; builder.ready(); "
        "one, flags = model.Input.model_validate_json(sys.argv[1]), model.Flags.model_validate_json(sys.argv[2]); "
        "print(contract.run(one, flags, debug=True).model_dump_json())"
    )
    return model.Output.model_validate_json(in_version(versions.folder(version), code, one.model_dump_json(), flags.model_dump_json()))


# --- live traffic: what reviewers said of the candidate's disagreements in shadow (app/shadow.py) --------------
LIVE = "live traffic"


def live_traffic(version: str, served: str) -> tuple[tuple[dict, dict] | None, dict]:
    """The candidate's reviewed disagreements in shadow against `served` (review.live_evidence), as a set both sides
    answered: the label compared as on every other set (its right value: the reviewer's, or the one both sides gave);
    None without any, or without a label. And its live record (requests, agreement per field, verdicts), or the
    error that kept the review database from answering."""
    from loop import review

    try:
        record = review.shadow_record(version, listed=0)
        evidence = review.live_evidence(version, served)
    except review.QueueUnavailable as error:
        return None, {"error": f"its record in shadow cannot be read: {error}"}
    record.pop("disagreements")
    label = contract.label()
    if not label or not evidence:
        return None, record
    now = {"row_numbers": [], SHOWN: [], "expected": [], "predicted": [], "left_out": []}
    new = {"predicted": []}
    for e in evidence:
        a, b = e["served_answer"], e["candidate_answer"]
        right = e["expected"].get(label, a.get(label) if a.get(label) == b.get(label) else None)
        if right is None:
            now["left_out"].append({"row": e["id"], "problem": f"the reviewer gave no {label} and the two answers differ on it"})
            continue
        now["row_numbers"].append(e["id"])  # the shadowed request's id (python -m loop shadow report)
        now[SHOWN].append(edge_cases.input_text(model.Input.model_validate({k: v for k, v in e["input"].items() if k != "flags"})))
        now["expected"].append(word(right))  # kept as JSON: the words _label_word gives the pipeline's answers
        now["predicted"].append(word(a.get(label)))
        new["predicted"].append(f"error: {b['error']}" if "error" in b else word(b.get(label)))
    return ((now, new) if now["expected"] else None), record


def word(value: Any) -> str:
    """A label's value from an answer kept as JSON, as `_label_word` writes it."""
    return value if isinstance(value, str) else json.dumps(value)


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
    draws = np.random.default_rng(0).integers(0, len(y), size=(samples, len(y)))  # the same rows for both sides
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
            f"accuracy down {-d['delta']:.4f} ({level} CI {d['low']:+.4f} to {d['high']:+.4f}): {broken} rows broken, "
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
    """Accuracy, macro-F1 and each class's F1 of every row of a (draws x rows) array pair, as sklearn computes them."""
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
    test, the rows whose answer changes and the rows left out (no valid input); the edge cases."""
    sets, failures = {}, []
    for name, now in served["sets"].items():
        new = candidate["sets"][name]
        stats = paired(now["expected"], now["predicted"], new["predicted"], chosen["significance"], int(chosen["bootstrap_samples"]))
        numbers = now.get("row_numbers") or range(1, len(now["expected"]) + 1)
        rows = [
            {"row": n, SHOWN: t[:200], "expected": e, "served": a, "candidate": b, "change": change(e, a, b)}
            for n, t, e, a, b in zip(numbers, now[SHOWN], now["expected"], now["predicted"], new["predicted"], strict=True)
            if a != b
        ]
        sets[name] = stats | {"changed_rows": rows, "left_out": now.get("left_out", [])}
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
    """Judge `version` against what is served now; its report goes to the candidate's folder (gate.json, gate.html).
    gate.json records the SHA-256 of every file judged (`versions.sealed`), the same before and after judging: promote
    serves only those files."""
    folder = versions.intact(version)  # its files as its manifest records them
    judged_files = versions.sealed(folder)
    now = versions.state()["served"]  # read once: what the verdict is against
    served_name, served_folder = (now, versions.present(versions.folder(now))) if now else ("artifacts", builder.ARTIFACTS_DIR)
    chosen = settings()
    served, candidate = side(served_folder, list(batches)), side(folder, list(batches))
    if versions.sealed(folder) != judged_files:
        raise versions.VersionError(f"{folder} changed while the gate judged it: python -m loop gate {version}")
    live, record = live_traffic(version, served_name)
    if live:
        served["sets"][LIVE], candidate["sets"][LIVE] = live
    verdict = compare(served, candidate, chosen) | {"candidate": version, "against": served_name, "batches": [str(b) for b in batches]}
    verdict["live"] = record  # its record in shadow: requests, agreement per field, disagreements judged
    if "error" in record:
        verdict["failures"].append(f"{LIVE}: {record['error']}")
        verdict["passed"] = False
    verdict["sides"] = {"served": served["about"], "candidate": candidate["about"]}  # version, pipeline, data hashes, encoder
    verdict["sha256"] = judged_files  # every file of the candidate, its manifest.json included
    files.write_atomic(folder / "gate.html", html(verdict))
    files.write_atomic(folder / "gate.json", json.dumps(verdict, indent=2) + "\n")
    return verdict


def described(name: str, s: dict[str, Any], significance: float) -> str:
    """One set's result in a line: both sides, the deltas with their intervals, McNemar's counts and p."""
    acc, f1, test = s["deltas"]["accuracy"], s["deltas"]["macro_f1"], s["mcnemar"]
    return (
        f"{name} ({s['rows']} rows): accuracy {s['served']['accuracy']:.4f} -> {s['candidate']['accuracy']:.4f} "
        f"({acc['delta']:+.4f}, {1 - significance:.0%} CI {acc['low']:+.4f} to {acc['high']:+.4f}); macro-F1 "
        f"{s['served']['macro_f1']:.4f} -> {s['candidate']['macro_f1']:.4f} ({f1['delta']:+.4f}, CI {f1['low']:+.4f} to "
        f"{f1['high']:+.4f}); {test['fixed']} fixed, {test['broken']} broken (McNemar p = {test['p_two_sided']:.4f}); "
        f"{len(s['changed_rows'])} answers change"
    )


def table(sets: dict[str, Any], significance: float, digits: int = 4, shown=str) -> list[str]:
    """Each set's result as a row of a Markdown table: both sides' accuracy, the deltas with their intervals, McNemar's
    counts and p (`shown` writes a set's name: the app shows it as code)."""
    level, f = f"{1 - significance:.0%} CI", f"+.{digits}f"
    lines = [f"| set | rows | accuracy served → candidate | Δ accuracy, {level} | Δ macro-F1, {level} | fixed / broken, McNemar p |"]
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
    rows whose answer changes and the rows left out."""
    significance = verdict["settings"]["significance"]
    groups = [
        reports.cards(
            "Verdict",
            [("verdict", "passes the gate" if verdict["passed"] else "fails the gate"), ("against", verdict["against"])],
            verdict["failures"] or [f"no significant regression at {significance} on any set"],
        )
    ]
    live = verdict.get("live") or {}
    if live.get("requests"):  # its record in shadow: the live traffic set, if reviewers judged any, is below
        shares = ", ".join(f"{field} {share:.0%}" for field, share in live["agreement"].items())
        judged = ", ".join(f"{side} right: {n}" for side, n in live["judged"].items())
        groups.append(reports.cards("In shadow", [("requests", live["requests"]), ("every field agrees", live["all_fields_agree"])],
                                    [f"agreement: {shares}", f"disagreements judged: {judged}"]))  # fmt: skip
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
        tables.append(reports.table(f"{name}: rows whose answer changes", s["changed_rows"][:200], len(s["changed_rows"])))
        if s.get("left_out"):
            tables.append(reports.table(f"{name}: rows left out (no valid input)", s["left_out"][:200], len(s["left_out"])))
    titles = {
        "would_break": "Fixed cases the candidate would break",
        "fixes": "Open cases the candidate fixes",
        "training_learned": "Training cases it learned (not counted as fixed)",
        "training_not_learned": "Training cases it did not learn",
    }
    tables += [reports.table(heading, verdict["cases"][key], len(verdict["cases"][key])) for key, heading in titles.items()]
    return reports.page(
        f"Gate: {verdict['candidate']} against {verdict['against']}",
        groups,
        tables,
        {k: verdict[k] for k in ("candidate", "against", "settings", "sides", "batches")},
    )
