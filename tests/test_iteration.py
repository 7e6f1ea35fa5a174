"""Versions compared and edge cases from reports: batch.py --baseline, --save-misclassified, --cases, Snakemake.

Machinery tests: the inputs and expected answers come from the pipeline's labelled set (conftest's helpers), so they
pass on a fork's pipeline too."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import SNAKEMAKE, expected_not_matching, label_values, relabelled, right_rows, text_field, with_this_python
from test_batch import EXPECTED, LABEL, TICKETS, read, read_back, run_cli, write_csv

import batch
import model
from building import contract
from loop import edge_cases, review
from reporting import reports


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A labelled input (rows of the labelled set the pipeline gets right) and its real scored report, the baseline of
    the tests below."""
    folder = tmp_path_factory.mktemp("iteration")
    rows = right_rows(8)
    source = write_csv(folder / "tickets.csv", rows)
    assert run_cli(source, "-o", folder / "old.csv", "--quiet").returncode == 0
    return source, folder / "old.csv", rows


def test_baseline_counts_fixed_broken_and_unlabelled_rows(labelled, tmp_path):
    source, old, rows = labelled
    scored = read(old)
    assert (scored[LABEL] == scored[EXPECTED]).all()  # the rows are all right today
    edited = scored.copy()  # an "earlier version" of the pipeline: two rows wrong then
    wrong = [expected_not_matching({LABEL: scored[LABEL][k]})[LABEL] for k in (0, 1)]
    edited.loc[0, LABEL], edited.loc[1, LABEL] = wrong  # fixed since
    baseline = tmp_path / "baseline.csv"
    edited.to_csv(baseline, index=False)
    (tmp_path / "baseline.json").write_text(json.dumps({"pipeline_version": "0.9.0", "model": {"sha256": "x"}, "data": {}}))

    result = run_cli(source, "-o", tmp_path / "new.csv", "--quiet", "--baseline", baseline)
    assert result.returncode == 0, result.stderr
    changes = json.loads((tmp_path / "new.json").read_text())["baseline"]
    assert (changes["fixed"], changes["broken"], changes["changed_unlabelled"]) == (2, 0, 0)
    assert [r["row"] for r in changes["rows"]["fixed"]] == [1, 2] and changes["rows"]["fixed"][0]["before"] == wrong[0]
    assert changes["sides"]["baseline"]["pipeline_version"] == "0.9.0"
    assert changes["sides"]["now"]["pipeline_version"] == model.PIPELINE_VERSION
    assert changes["metric_deltas"]["accuracy"] == pytest.approx(2 / len(rows), abs=1e-4)
    assert "Fixed since the baseline" in (tmp_path / "new.html").read_text()

    # the other way round: the new run is the baseline of an older one, so those rows broke
    edited.to_csv(tmp_path / "older.csv", index=False)
    columns = {field: field for field in model.Input.model_fields if field in edited.columns}
    summary = batch.summarize(tmp_path / "older.csv", columns, EXPECTED, 1.0, {"input": "x"}, False, tmp_path / "o.csv", old)
    assert (summary["baseline"]["fixed"], summary["baseline"]["broken"]) == (0, 2)


def test_baseline_counts_rows_where_any_field_changed_field_by_field(labelled, tmp_path):
    """The label kept, another output field changed (say who must answer): the rows count as changed, field by field,
    listed with what each side said; not "0 changed" because only the label was compared."""
    source, old, _ = labelled
    edited = read(old)
    field = next(f for f, columns in reports.field_columns().items() if columns == [f] and f != LABEL)  # one cell, not the label
    edited.loc[[1, 3], field] = [f"earlier {value}" for value in edited[field][[1, 3]]]
    baseline = tmp_path / "baseline.csv"
    edited.to_csv(baseline, index=False)
    result = run_cli(source, "-o", tmp_path / "new.csv", "--quiet", "--baseline", baseline)
    assert result.returncode == 0, result.stderr
    changes = json.loads((tmp_path / "new.json").read_text())["baseline"]
    assert (changes["changed"], changes["changed_other_fields"], changes["fixed"], changes["broken"]) == (2, 2, 0, 0)
    assert changes["changed_per_field"] == {field: 2}
    listed = changes["rows"]["changed_other_fields"]
    assert [(r["row"], r["fields"]) for r in listed] == [(2, field), (4, field)]
    assert listed[0]["before"][field].startswith("earlier ") and not listed[0]["now"][field].startswith("earlier ")
    page = (tmp_path / "new.html").read_text()
    assert "Changed since the baseline, field by field (1)" in page and f"<td>{reports.words(field)}</td>" in page


def test_baseline_of_another_input_exits_2(labelled, tmp_path):
    _, old, rows = labelled
    other = write_csv(tmp_path / "other.csv", rows[:3])
    result = run_cli(other, "-o", tmp_path / "out.csv", "--quiet", "--baseline", old)
    assert result.returncode == 2 and "not a scored report of the same input" in result.stderr
    assert not (tmp_path / "out.csv").exists()


def test_the_baseline_is_never_overwritten(labelled, tmp_path):
    source, old, _ = labelled
    before = old.read_bytes()
    result = run_cli(source, "-o", old, "--quiet", "--baseline", old)
    assert result.returncode == 2 and "never overwritten" in result.stderr and old.read_bytes() == before


def test_save_misclassified_rows_flags_them_for_review(tmp_path, monkeypatch):
    store = tmp_path / "cases.csv"
    monkeypatch.setenv("TRIAGE_EDGE_CASES", str(store))
    monkeypatch.setenv("TRIAGE_DATABASE_URL", f"sqlite:///{tmp_path / 'review.sqlite3'}")
    value = label_values()[0]  # every row labelled with one value: every other answer is wrong
    source = write_csv(tmp_path / "x.csv", TICKETS, **{EXPECTED: [value] * len(TICKETS)})
    result = run_cli(source, "-o", tmp_path / "out.csv", "--quiet", "--save-misclassified")
    assert result.returncode == 0, result.stderr
    scored = read_back(tmp_path / "out.csv")
    wrong, text = scored[scored[LABEL] != value], text_field()
    cases = [f.case for f in review.cases(limit=500)[0]]
    assert sorted(getattr(c.ticket, text) for c in cases) == sorted(contract.clean_text(t) for t in wrong[text]) and len(cases) > 0
    assert {c.expected.model_dump(mode="json")[LABEL] for c in cases} == {value}
    assert {c.source for c in cases} == {"file"} and {c.status for c in cases} == {"open"}
    rows = f"{len(cases)} misclassified row{'' if len(cases) == 1 else 's'}"
    assert f"{rows} flagged for review" in result.stdout and not store.exists()  # not yet tests
    hint = next(line for line in result.stderr.splitlines() if line.startswith("next: "))  # the interpreter that ran
    ran = Path(sys.executable)
    assert hint == f"next: {ran.relative_to(model.ROOT) if ran.is_relative_to(model.ROOT) else ran} -m loop cases queue"
    bare = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")} | {"PATH": "/usr/bin:/bin"}
    pasted = subprocess.run(hint.removeprefix("next: "), shell=True, cwd=model.ROOT, env=bare, capture_output=True, text=True, timeout=120)
    assert pasted.returncode == 0, pasted.stderr  # pasted as it is in a shell without the venv, it works
    again = run_cli(source, "-o", tmp_path / "out.csv", "--quiet", "--save-misclassified")
    assert "0 misclassified rows flagged" in again.stdout and review.counts()["pending"] == len(cases)  # merged, not repeated


def test_cases_report_and_snakemake_regressions(tmp_path, monkeypatch):
    store = tmp_path / "cases.csv"  # a store of its own: two cases the pipeline gets right, two it gets wrong
    monkeypatch.setenv("TRIAGE_EDGE_CASES", str(store))
    rows = relabelled(TICKETS[:2], right=True) + relabelled(TICKETS[2:4], right=False)
    edge_cases.save_cases([{"ticket": r["input"], "expected": r["expected"], "note": "labelled", "source": "file"} for r in rows])
    out = tmp_path / "edge_cases.csv"
    summary = batch.cases_report(out)
    assert summary["cases"] == len(edge_cases.load_cases()) == 4 and summary["broken"] == 0
    scored = read(out)
    assert len(scored) == summary["cases"] and set(scored.verdict) <= {"fixed", "open", "broken", "newly fixed"}
    assert (scored.verdict == "open").sum() == summary["open"] == 2 and summary["fixed"] == 2
    assert "Still open" in out.with_suffix(".html").read_text()

    command = [*SNAKEMAKE, "-c1", "regressions", "--config", f"reports={tmp_path / 'reports'}", "-q"]
    done = subprocess.run(command, cwd=model.ROOT, env=with_this_python(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert pd.read_csv(tmp_path / "reports" / "edge_cases.csv").shape[0] == summary["cases"]
    assert json.loads((tmp_path / "reports" / "edge_cases.json").read_text())["broken"] == 0
