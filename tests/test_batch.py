"""batch.py as a library and a CLI: outputs, order, metrics, flags, comparison, bad input, shards, Snakemake.

These test the machinery: their inputs, flags and expected answers come from the pipeline's contract (its labelled
set, its schemas: conftest's helpers), so they pass on a fork's pipeline too. What the worked example answers (its
rules, its columns) is tested in tests/example/test_triage_batch.py.
"""

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from typing import Any, Literal, get_origin

import pandas as pd
import pytest
from conftest import (
    SNAKEMAKE,
    answers,
    changing_flags,
    flag_pairs,
    invalid_values,
    labelled_mix,
    labelled_row,
    longest_text,
    relabelled,
    text_field,
    with_this_python,
    write_rows,
)
from pydantic import BaseModel, TypeAdapter

import batch
import model
import recipe
from building import builder, contract, encoders
from reporting import reports

ROOT = model.ROOT
LABEL, EXPECTED = contract.label(), contract.expected_column()
TICKETS = labelled_mix(8)  # eight rows of the pipeline's labelled set (labelled_rows' shape), as many labels as they hold


def cells(rows: list[dict], **columns) -> list[dict]:
    """Labelled rows as a table's cells (the labelled set's own columns), with `columns` added (one value a row)."""
    out = [dict(r["row"]) for r in rows]
    for name, values in columns.items():
        for row, value in zip(out, values, strict=True):
            row[name] = value
    return out


def write_csv(path, rows: list[dict], **columns):
    """Labelled rows (labelled_rows' shape) as a CSV file, `columns` added."""
    return write_rows(path, cells(rows, **columns))


def numbered(rows: list[dict]) -> list[dict]:
    """`rows` each made distinct: ` (i)` after its text."""
    text = text_field()
    return [labelled_row({**r["row"], text: f"{r['row'][text]} ({i})"}) for i, r in enumerate(rows)]


def read(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def read_back(path):
    """A CSV this project wrote, each cell as it was before it was made spreadsheet-safe."""
    return pd.concat(batch.read_report(path, 1000))


def run_cli(*args, env: dict | None = None):
    return subprocess.run([sys.executable, "batch.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def options(option: str, flags: dict) -> list[str]:
    """`--flag KEY=VALUE ...` (or `--compare`) for `flags`."""
    return [part for pair in flag_pairs(flags) for part in (option, pair)]


def scored_outputs(path, prefix: str = "") -> list[dict]:
    """A scored CSV's output cells (the `error` column aside), row by row, as the report wrote them."""
    frame = read_back(path)
    return [{c: row[prefix + c] for c in batch.OUTPUT_COLUMNS[:-1]} for row in frame.to_dict("records")]


def expected_outputs(given: list[dict], flags: dict | None = None, chunk: int = batch.CHUNK_SIZE) -> list[dict]:
    """The output cells a scored CSV must hold for `given` inputs, scored in chunks of `chunk` rows as a report does."""
    found = []
    for start in range(0, len(given), chunk):
        found += [
            {c: "" if v is None else str(v) for c, v in reports.flatten(a).items() if c != "error"}
            for a in answers(given[start : start + chunk], flags)
        ]
    return found


def inputs_of(rows: list[dict]) -> list[dict]:
    return [r["input"] for r in rows]


@pytest.fixture
def tickets_csv(tmp_path):
    return write_csv(tmp_path / "tickets.csv", TICKETS, ticket_id=[f"id-{i}" for i in range(len(TICKETS))])


# --- outputs -------------------------------------------------------------------------------------
def test_cli_writes_csv_html_and_json_in_input_order(tickets_csv, tmp_path):
    result = run_cli(tickets_csv, "-o", tmp_path / "out" / "scored.csv", "--quiet", "--chunk-size", "3")
    assert result.returncode == 0, result.stderr
    assert "8 rows, 0 errors" in result.stdout
    scored = read(tmp_path / "out" / "scored.csv")
    assert list(scored.ticket_id) == [f"id-{i}" for i in range(8)]
    header = list(read(tickets_csv).columns)
    assert list(scored.columns[: len(header)]) == [reports.written_name(c) for c in header]  # the input's columns first, kept
    assert list(scored.columns[len(header) :]) == batch.OUTPUT_COLUMNS and batch.OUTPUT_COLUMNS[-1] == "error"
    assert set(reports.field_columns()) == set(contract.output_fields())  # every output field has its columns
    assert scored_outputs(tmp_path / "out" / "scored.csv") == expected_outputs(inputs_of(TICKETS), chunk=3)  # each row its own answer
    summary = json.loads((tmp_path / "out" / "scored.json").read_text())
    assert summary["rows"] == 8 and summary["errors"] == 0 and summary["label_column"] == EXPECTED
    assert set(summary["data"]) >= set(recipe.DATA) and summary["data"] == builder.manifest()["data"]  # what answered
    if recipe.ENCODER:
        assert summary["model"]["sha256"] == encoders.OFFICIAL_MODEL_SHA256
    assert f"{reports.words(LABEL)} distribution" in (tmp_path / "out" / "scored.html").read_text()


def test_html_report_holds_the_figures(tickets_csv, tmp_path):
    summary = batch.report(tickets_csv, tmp_path / "r.csv", progress=False)
    page = (tmp_path / "r.html").read_text()
    # the label's values, the probability, each other enum or bool, the confusion matrix: HTML and CSS
    figures = 1 + ("probability_histogram" in summary) + len(summary["tallies"]) + 1
    assert page.count('<figure class="chart') == figures and all(reports.words(field) in page for field in summary["tallies"])
    assert f"{reports.words(LABEL)} distribution" in page and "Confusion matrix" in page and "Misclassified rows" in page
    assert "src=" not in page and "plotly" not in page.lower() and len(page) < 40_000  # nothing to fetch, kilobytes not MB
    assert summary["pipeline_version"] in page
    if recipe.ENCODER:
        assert encoders.OFFICIAL_MODEL_SHA256 in page
    counts = summary["metrics"]["confusion_matrix"]
    diagonal = sum(counts["rows_expected_columns_predicted"][k][k] for k in range(len(counts["labels"])))
    matrix = page[page.index('<table class="matrix">') : page.index("</table>", page.index('<table class="matrix">'))]
    cells_shown = [int(c.split(">")[1].split("<")[0]) for c in matrix.split("<td")[1:]]
    assert sum(cells_shown) == 8 and sum(cells_shown[k * (len(counts["labels"]) + 1)] for k in range(len(counts["labels"]))) == diagonal


def test_html_report_grows_with_its_rows(tmp_path):
    """No fixed weight (plotly.js was 4.8 MB whatever the rows): the page is its figures and the rows it lists."""
    small = write_csv(tmp_path / "small.csv", relabelled(TICKETS[:2], right=False))  # every row misclassified
    large = write_csv(tmp_path / "large.csv", relabelled(numbered(TICKETS * 5), right=False))
    batch.report(small, tmp_path / "small-report.csv", progress=False)
    batch.report(large, tmp_path / "large-report.csv", progress=False)
    sizes = [(tmp_path / f"{name}-report.html").stat().st_size for name in ("small", "large")]
    assert sizes[0] < 25_000 and sizes[1] - sizes[0] > 35 * 50  # 38 more misclassified rows listed, 50 bytes or more each


def test_reports_name_the_input_never_its_folder(tmp_path):
    """A report is shared: it names its input (and a baseline) by file name, whether the path was absolute (the app's
    uploads live in /tmp/gradio/<hash>/) or relative; none of its files holds the folders' paths."""
    inputs, outputs = tmp_path / "uploads" / "f00d1e" / "in", tmp_path / "s3rv3d" / "reports"
    inputs.mkdir(parents=True)
    source = write_csv(inputs / "eval_slice.csv", TICKETS)
    result = run_cli(source.resolve(), "-o", outputs / "first.csv", "--quiet")
    assert result.returncode == 0, result.stderr
    shutil.copy(outputs / "first.csv", inputs / "earlier.csv")
    compare = changing_flags(inputs_of(TICKETS))
    summary = batch.report(source, outputs / "second.csv", baseline=inputs / "earlier.csv", compare=compare, progress=False)
    assert summary["outputs"][".html"] == str(outputs / "second.html")  # the caller (the app) gets where the files are
    for name in ("first", "second"):
        written = json.loads((outputs / f"{name}.json").read_text())
        assert written["input"] == "eval_slice.csv" and written["outputs"][".html"] == f"{name}.html"
        for suffix in (".csv", ".json", ".html"):
            text = (outputs / name).with_suffix(suffix).read_text()
            assert str(tmp_path) not in text and "f00d1e" not in text and "s3rv3d" not in text, (name, suffix)
    assert written["baseline"]["baseline"] == "earlier.csv"
    assert f"{contract.title()} report: eval_slice.csv" in (outputs / "second.html").read_text()


def test_library_report_summary(tickets_csv, tmp_path):
    summary = batch.report(tickets_csv, tmp_path / "r.csv", progress=False)
    assert summary["label"] == LABEL and sum(summary["label_distribution"].values()) == 8
    fields, kind = contract.output_fields(), lambda field: contract.base_type(field.annotation)
    enums_and_bools = {
        name
        for name, field in fields.items()
        if name not in (LABEL, contract.needs_person())
        and (kind(field) is bool or contract.is_enum(kind(field)) or get_origin(kind(field)) is Literal)
    }
    assert set(summary["tallies"]) == enums_and_bools and all(sum(t.values()) == 8 for t in summary["tallies"].values())
    if contract.probability():
        assert summary["probability"] == contract.probability() and 0 < summary["probability_mean"] <= 1
    if contract.needs_person():
        assert summary["needs_person"] == contract.needs_person() and 0 <= summary["needs_person_share"] <= 1
    else:
        assert "needs_person_share" not in summary
    metrics = summary["metrics"]
    assert metrics["labelled_rows"] == 8
    got = [str(a.model_dump(mode="json")[LABEL]) for a in answers(inputs_of(TICKETS))]
    correct = sum(g == r["expected"][LABEL] for g, r in zip(got, TICKETS, strict=True))
    assert metrics["accuracy"] == round(correct / 8, 4)
    assert summary["misclassified_total"] == 8 - correct


def test_the_batch_tabs_figures_say_words_not_code_names(tickets_csv, tmp_path):
    """The label's values on the bars and the confusion matrix, and the probability's axis, in words, as the HTML's."""
    summary = batch.report(tickets_csv, tmp_path / "r.csv", progress=False)
    bars, hist, heat = reports.figures(summary)
    values = [str(v) for v in contract.choices(model.Output.model_fields[LABEL].annotation)]
    assert not values or list(bars.data[0].x) == [reports.value_words(LABEL, v) for v in values]
    assert heat is None or set(heat.data[0].x) <= {reports.value_words(LABEL, v) for v in values}
    if hist is not None:
        assert hist.layout.xaxis.title.text == reports.words(summary["probability"])


def test_metrics_against_a_hand_computed_example():
    pairs = Counter({("yes", "yes"): 3, ("yes", "no"): 1, ("no", "no"): 2, ("no", "yes"): 2})
    m = reports.metrics(pairs)
    assert m["accuracy"] == round(5 / 8, 4)
    # yes: precision 3/5, recall 3/4, F1 = 2*.6*.75/1.35 = 0.6667; no: precision 2/3, recall 2/4, F1 = 0.5714
    assert m["per_class"]["yes"] == {"precision": 0.6, "recall": 0.75, "f1": 0.6667, "support": 4}
    assert m["per_class"]["no"] == {"precision": 0.6667, "recall": 0.5, "f1": 0.5714, "support": 4}
    assert m["macro_f1"] == round((0.6667 + 0.5714) / 2, 4)  # over the classes present
    assert set(m["per_class"]) == {"yes", "no"}  # a class no row expects or gets is not listed as 0.0
    labels = m["confusion_matrix"]["labels"]
    cm = m["confusion_matrix"]["rows_expected_columns_predicted"]
    assert cm[labels.index("yes")][labels.index("no")] == 1 and cm[labels.index("no")][labels.index("yes")] == 2


def test_no_label_column_means_no_metrics(tmp_path):
    path = write_rows(tmp_path / "t.csv", [{k: v for k, v in row.items() if k != EXPECTED} for row in cells(TICKETS[:3])])
    summary = batch.report(path, tmp_path / "r.csv", progress=False)
    assert "metrics" not in summary and summary["label_column"] is None and summary["rows"] == 3


def test_text_and_label_columns_can_be_named(tmp_path):
    text = text_field()
    renamed = {text: "message", EXPECTED: LABEL}  # the label's column named like the label: an output's name
    path = write_rows(tmp_path / "t.csv", [{renamed.get(k, k): v for k, v in row.items()} for row in cells(TICKETS[:3])])
    result = run_cli(path, "-o", tmp_path / "r.csv", "--text-column", "message", "--label-column", LABEL, "--quiet")
    assert result.returncode == 0, result.stderr
    scored = read_back(tmp_path / "r.csv")
    assert list(scored[f"input_{LABEL}"]) == [r["expected"][LABEL] for r in TICKETS[:3]]  # the input's own column is kept
    assert list(scored.message) == [r["row"][text] for r in TICKETS[:3]]
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["labelled_rows"] == 3


def test_limit_and_chunk_size(tickets_csv, tmp_path):
    result = run_cli(tickets_csv, "-o", tmp_path / "r.csv", "--limit", "5", "--chunk-size", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    assert list(read(tmp_path / "r.csv").ticket_id) == [f"id-{i}" for i in range(5)]


# --- flags and comparison --------------------------------------------------------------------------
def test_flag_changes_the_outputs(tickets_csv, tmp_path):
    flags = changing_flags(inputs_of(TICKETS))  # flags under which some answer differs from the defaults'
    result = run_cli(tickets_csv, "-o", tmp_path / "r.csv", *options("--flag", flags), "--quiet")
    assert result.returncode == 0, result.stderr
    scored = scored_outputs(tmp_path / "r.csv")
    assert scored == expected_outputs(inputs_of(TICKETS), flags) != expected_outputs(inputs_of(TICKETS))
    assert json.loads((tmp_path / "r.json").read_text())["flags"] == model.Flags(**flags).model_dump(mode="json")


def test_compare_reports_both_variants(tickets_csv, tmp_path):
    flags = changing_flags(inputs_of(TICKETS))
    result = run_cli(tickets_csv, "-o", tmp_path / "r.csv", *options("--compare", flags), "--quiet")
    assert result.returncode == 0, result.stderr
    a, b_cells = scored_outputs(tmp_path / "r.csv"), scored_outputs(tmp_path / "r.csv", reports.COMPARE_PREFIX)
    assert a == expected_outputs(inputs_of(TICKETS)) and b_cells == expected_outputs(inputs_of(TICKETS), flags)
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["compare_flags"] == model.Flags(**flags).model_dump(mode="json")
    assert summary["flags"] == model.Flags().model_dump(mode="json")
    b = summary["compare"]
    assert set(b["agreement_per_field"]) == set(contract.output_fields()) and "metrics" in b  # every output field, not only the label
    fields = reports.field_columns()
    differ = [[f for f, columns in fields.items() if any(x[c] != y[c] for c in columns)] for x, y in zip(a, b_cells, strict=True)]
    for field in fields:
        assert b["agreement_per_field"][field] == round(sum(field not in d for d in differ) / 8, 4), field
    answered = sum(bool(d) for d in differ)
    assert b["differing_total"] == answered > 0 and b["agreement"] == round(1 - answered / 8, 4)
    assert [row["fields"] for row in b["differing_rows"]] == [", ".join(d) for d in differ if d]
    assert b["differing_per_field"] == {field: sum(field in d for d in differ) for field in fields}  # field by field
    page = (tmp_path / "r.html").read_text()
    assert "B (compare flags)" in page and f"Rows where A and B differ ({answered})" in page
    assert f"A and B field by field ({len(fields)})" in page
    assert f"A and B differ in {answered} row{'' if answered == 1 else 's'}" in result.stdout  # the line the run prints


def test_compare_lists_rows_that_differ(tickets_csv, tmp_path):
    flags = changing_flags(inputs_of(TICKETS))
    summary = batch.report(tickets_csv, tmp_path / "r.csv", compare=flags, progress=False)
    assert 0 < summary["compare"]["differing_total"] == len(summary["compare"]["differing_rows"])
    same = batch.report(tickets_csv, tmp_path / "r2.csv", flags=flags, compare=flags, progress=False)  # B is A
    assert same["compare"]["differing_total"] == 0 and set(same["compare"]["agreement_per_field"].values()) == {1.0}


def _bad_flags() -> list[tuple[list[str], str]]:
    """Options that give a flag wrongly, drawn from model.Flags (conftest's invalid_values): an unknown flag, a word
    for a bool, a number out of its bounds (--flag and --compare), a pair without `=`; each with the words of its line."""
    invalid = invalid_values(model.Flags)
    words = [(n, v) for n, v in invalid if isinstance(v, str) and model.Flags.model_fields[n].annotation is bool]
    bounds = [(n, v) for n, v in invalid if isinstance(v, int | float) and not isinstance(v, bool)]
    cases = [(["--flag", "no_such=1"], "--flag no_such: unknown flag")]
    for option, (name, value) in zip(("--flag", "--compare"), bounds[:1] + bounds[-1:], strict=False):  # two, or one
        cases.append(([option, f"{name}={value}"], f"{option} {name}={str(value)!r}"))
    cases += [(["--flag", f"{n}={v}"], f"--flag {n}={v!r}") for n, v in words[:1]]
    return [*cases, (["--flag", next(iter(model.Flags.model_fields))], "expected KEY=VALUE"), (["--chunk-size", "0"], "--chunk-size")]


@pytest.mark.parametrize(("args", "message"), _bad_flags())
def test_bad_flags_exit_2_naming_them(tickets_csv, tmp_path, args, message):
    result = run_cli(tickets_csv, "-o", tmp_path / "r.csv", "--quiet", *args)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "r.csv").exists()


# --- bad input ------------------------------------------------------------------------------------
def test_bad_rows_get_an_error_and_keep_their_place(tmp_path):
    text = text_field()
    good = TICKETS[:2]
    bad = [v for n, v in invalid_values(model.Input, good[1]["input"]) if n == text and isinstance(v, str)]  # "", "   ", too long
    rows = [good[0]["row"], *({**good[1]["row"], text: v} for v in bad), good[1]["row"]]
    path = write_rows(tmp_path / "t.csv", rows)
    result = run_cli(path, "-o", tmp_path / "r.csv", "--quiet")
    assert result.returncode == 0, result.stderr
    scored = read(tmp_path / "r.csv")
    n = len(rows)
    assert bad and len(scored) == n and list(scored[EXPECTED]) == [r[EXPECTED] for r in rows]
    assert list(scored.error == "") == [True, *[False] * len(bad), True]
    assert all(scored.error[i].startswith(f"row {i + 1}: {text}: ") for i in range(1, n - 1))  # its number and the field
    if "x" * (longest_text() + 1) in bad:
        assert f"at most {longest_text()} characters" in scored.error[bad.index("x" * (longest_text() + 1)) + 1]
    answered = expected_outputs([good[0]["input"], good[1]["input"]])
    assert scored[LABEL][1] == "" and [scored[LABEL][0], scored[LABEL][n - 1]] == [a[LABEL] for a in answered]
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["rows"] == n and summary["errors"] == len(bad) and summary["metrics"]["labelled_rows"] == 2
    assert [(r["row"], r[text][:3]) for r in summary["error_rows"]] == [(i + 2, v[:3]) for i, v in enumerate(bad)]  # in the JSON too
    assert summary["error_rows"][0]["error"] == scored.error[1].removeprefix("row 2: ")
    assert f"Rows with errors ({len(bad)})" in (tmp_path / "r.html").read_text()


def test_failed_rows_are_listed_in_the_json_the_html_and_the_line_first_n_and_a_count(tmp_path):
    """Which rows failed, the field and why, where the eye is: the JSON, the HTML (the first FAILED_SHOWN and how many
    more) and the run's line; `failed_rows` gives the same from the summary or the scored CSV (the app's Batch tab)."""
    text, shown = text_field(), reports.FAILED_SHOWN
    bad = next(v for n, v in invalid_values(model.Input, TICKETS[0]["input"]) if n == text and isinstance(v, str))
    rows = [TICKETS[0]["row"], *({**TICKETS[1]["row"], text: bad} for _ in range(shown + 3)), TICKETS[2]["row"]]
    result = run_cli(write_rows(tmp_path / "t.csv", rows), "-o", tmp_path / "r.csv", "--quiet")
    assert result.returncode == 0, result.stderr
    assert f"{shown + 3} errors (rows 2, 3, 4, 5, 6, ...)" in result.stdout
    summary = json.loads((tmp_path / "r.json").read_text())
    assert [(r["row"], r["field"]) for r in summary["error_rows"]] == [(k, text) for k in range(2, shown + 5)]
    assert summary["error_rows_more"] == 0
    failed = reports.failed_rows(summary)
    why = summary["error_rows"][0]["error"].removeprefix(f"{text}: ")
    assert failed == {"rows": [{"row": k, "field": text, "why": why} for k in range(2, shown + 2)], "more": 3}
    assert reports.failed_rows(read_back(tmp_path / "r.csv")) == failed  # from the scored CSV alone, the same
    assert reports.failed_rows(summary, 2) == {"rows": failed["rows"][:2], "more": shown + 1}
    page = (tmp_path / "r.html").read_text()
    table = page[page.index(f"Rows with errors (first {shown} of {shown + 3})") :]
    assert "and 3 more rows" in table and table.count(why) == shown and f"<td>{reports.words(text)}</td>" in table


def test_a_failure_of_the_pipeline_names_no_field():
    frame = pd.DataFrame({"error": ["", "row 2: RuntimeError: boom", f"row 3: {text_field()}: too long"]}, index=[5, 6, 7])
    rows = reports.failed_rows(frame)["rows"]
    assert rows == [{"row": 2, "field": "", "why": "RuntimeError: boom"}, {"row": 3, "field": text_field(), "why": "too long"}]


def test_the_html_report_says_words_not_code_names(tmp_path):
    """Field titles and enum values in words, booleans yes/no, counted nouns right, a class no row expects says "no
    rows" where its recall would be 0.0; the Run section (machine-readable metadata) keeps the code names."""
    one = reports.label_values()[0]  # every row expects one class: the others answered are expected by no row
    flags = changing_flags(inputs_of(TICKETS))
    source = write_csv(tmp_path / "t.csv", TICKETS, **{EXPECTED: [one] * len(TICKETS)})
    batch.report(source, tmp_path / "r.csv", compare=flags, progress=False)
    page = (tmp_path / "r.html").read_text().replace("<wbr>", "")
    body = page[page.index("<body>") : page.index("<h2>Run</h2>")]
    fields = {**contract.output_fields(), **model.Input.model_fields}
    coded = [name for name in fields if "_" in name] + [str(v) for f in fields.values() for v in contract.choices(f.annotation)]
    assert not [name for name in coded if "_" in name and re.search(rf"[>\s]{re.escape(name)}[<:,\s]", body)]
    assert not re.search(r"<td>(True|False)</td>|: (True|False)\b", body) and not re.search(r"\b1 rows\b", body)
    assert all(reports.words(f) in body for f in json.loads((tmp_path / "r.json").read_text())["compare"]["agreement_per_field"])
    per_class = body[body.index(f"Per {reports.words(LABEL).lower()}") :].split("</table>")[0]
    cells = [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in per_class.split("<tr>")[2:]]  # class, precision, recall, F1, support
    assert cells and all((recall == "no rows") == (support == "0") for _, _, recall, _, support in cells)
    assert any(support == "0" for *_, support in cells)  # a class answered that no row expects
    misclassified = body[body.index("Misclassified rows") :].split("</tr>")[0]
    assert "Expected" in misclassified and "Predicted" in misclassified  # the answer beside the expected one, each named so


def test_a_failing_row_does_not_cost_the_others(monkeypatch):
    text = text_field()
    real_run_batch = model.run_batch

    def run_batch(tickets, flags=None, debug=False, timings=None):  # the pipeline fails on one input, so on any batch holding it
        if any(getattr(model.Input.model_validate(t), text) == "boom" for t in tickets):
            raise RuntimeError("boom inside the pipeline")
        return real_run_batch(tickets, flags, debug, timings)

    given = [TICKETS[0]["input"], {**TICKETS[1]["input"], text: "boom"}, TICKETS[2]["input"]]
    answered = [expected_outputs([one])[0] for one in (given[0], given[2])]  # one at a time, as a failing batch is retried
    monkeypatch.setattr(model, "run_batch", run_batch)
    rows = batch.score_chunk(given, model.Flags())
    assert [r["error"] for r in rows] == ["", "row 2: RuntimeError: boom inside the pipeline", ""]
    assert str(rows[2][LABEL]) == answered[1][LABEL] and rows[1][LABEL] == ""


def _bad_files() -> list[tuple[bytes, str]]:
    required = next(name for name, field in model.Input.model_fields.items() if field.is_required())
    header = ",".join(model.Input.model_fields)
    too_many = ",".join("a" * (len(model.Input.model_fields) + 3))
    return [
        (b"", "the file is empty"),
        (b"  \n\n", "the file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "not a CSV file"),
        (f"{header}\nun caf\u00e9 tr\u00e8s cher\n".encode("latin-1"), "not UTF-8"),
        (b"message,label\nhello,yes\n", f"no {required!r} column"),
        (f"{header}\nhello\n{too_many}\n".encode(), "not a readable CSV"),
    ]


@pytest.mark.parametrize(("content", "message"), _bad_files())
def test_bad_files_exit_2_with_one_clear_line(tmp_path, content, message):
    path = tmp_path / "in.csv"
    path.write_bytes(content)
    result = run_cli(path, "-o", tmp_path / "r.csv", "--quiet")
    assert result.returncode == 2, result.stdout
    assert message in result.stderr and result.stderr.startswith("batch.py: error:") and result.stderr.count("\n") == 1


def test_missing_file_exits_2(tmp_path):
    result = run_cli(tmp_path / "nope.csv", "-o", tmp_path / "r.csv")
    assert result.returncode == 2 and "no such file" in result.stderr


def test_utf8_with_bom_is_read(tmp_path):
    path = write_csv(tmp_path / "bom.csv", TICKETS[:1])
    path.write_bytes(path.read_text().encode("utf-8-sig"))  # the first column's name behind a byte-order mark
    summary = batch.report(path, tmp_path / "r.csv", progress=False)
    answer = expected_outputs(inputs_of(TICKETS[:1]))[0][LABEL]
    assert summary["rows"] == 1 and summary["errors"] == 0 and summary["label_distribution"] == {answer: 1}
    assert summary["metrics"]["labelled_rows"] == 1


def test_header_only_gives_an_empty_report(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text(",".join([*TICKETS[0]["row"]]) + "\n")
    result = run_cli(path, "-o", tmp_path / "r.csv", "--quiet")
    assert result.returncode == 0, result.stderr
    scored = read(tmp_path / "r.csv")
    assert len(scored) == 0 and LABEL in scored.columns and "error" in scored.columns
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["rows"] == 0 and summary["metrics"]["accuracy"] is None
    assert (tmp_path / "r.html").exists()


# --- shards ---------------------------------------------------------------------------------------
def assert_same_scores(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Two scored CSVs hold the same cells, numbers within 1e-3 (an answer scored in another batch may differ in its
    last digits); every other cell exactly."""
    assert list(a.columns) == list(b.columns)
    for column in a.columns:
        x, y = pd.to_numeric(a[column], errors="coerce"), pd.to_numeric(b[column], errors="coerce")
        numbers = x.notna() & y.notna()
        assert list(a[column][~numbers]) == list(b[column][~numbers]), column
        assert ((x[numbers] - y[numbers]).abs() <= 1e-3).all(), column


def test_sharded_run_equals_the_unsharded_one(tmp_path):
    rows = numbered(TICKETS * 3)
    path = write_csv(tmp_path / "t.csv", rows)
    compare = changing_flags(inputs_of(TICKETS))
    whole = batch.report(path, tmp_path / "whole.csv", compare=compare, progress=False)
    shards = [tmp_path / f"{k}-of-3.csv" for k in (1, 2, 3)]
    batch.split(path, shards)
    assert [len(read(s)) for s in shards] == [8, 8, 8]
    scored = []
    for shard in shards:
        batch.report(shard, shard.with_suffix(".scored.csv"), compare=compare, progress=False, html_report=False)
        scored.append(shard.with_suffix(".scored.csv"))
    merged = batch.merge(scored, tmp_path / "merged.csv")
    a, b = read_back(tmp_path / "whole.csv"), read_back(tmp_path / "merged.csv")
    text = text_field()
    assert list(a[text]) == [r["row"][text] for r in rows] == list(b[text])
    assert_same_scores(a, b)
    assert merged["rows"] == whole["rows"] == 24 and merged["shards"] == 3
    assert merged["metrics"]["per_class"] == whole["metrics"]["per_class"]


def test_split_handles_more_shards_than_rows(tmp_path):
    path = write_csv(tmp_path / "t.csv", TICKETS[:2])
    shards = [tmp_path / f"{k}.csv" for k in range(3)]
    batch.split(path, shards)
    assert sum(len(read(s)) for s in shards) == 2 and all(list(read(s).columns) == list(read(path).columns) for s in shards)


def test_snakemake_report_and_scatter_gather(tmp_path):
    (tmp_path / "in").mkdir()
    write_csv(tmp_path / "in" / "tiny.csv", TICKETS)
    config = [f"inputs={tmp_path}/in", f"reports={tmp_path}/out", f"shards_dir={tmp_path}/shards"]
    targets = [f"{tmp_path}/out/tiny.csv", f"{tmp_path}/out/tiny.sharded.csv"]
    command = [*SNAKEMAKE, "-c2", *targets, "--set-scatter", "split=2", "--config", *config, "--quiet", "all"]
    result = subprocess.run(command, cwd=ROOT, env=with_this_python(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = read_back(tmp_path / "out" / "tiny.csv"), read_back(tmp_path / "out" / "tiny.sharded.csv")
    assert list(a[LABEL]) == list(b[LABEL]) and list(a[text_field()]) == [r["row"][text_field()] for r in TICKETS]
    assert len(list((tmp_path / "shards" / "tiny").glob("*-of-2.scored.csv"))) == 2
    assert (tmp_path / "out" / "tiny.sharded.html").exists()


def test_cluster_profiles_dry_run(tmp_path):
    shutil.copytree(model.DATA_DIR, tmp_path / "data")  # the cluster's shared storage holds data/
    write_csv(tmp_path / "data" / "tiny.csv", TICKETS)
    local = ["--config", f"inputs={tmp_path}/data", f"reports={tmp_path}/out", f"shards_dir={tmp_path}/shards"]
    for name, target, extra in [
        ("slurm", f"{tmp_path}/out/tiny.sharded.csv", local),
        ("kubernetes", "reports/tiny.sharded.csv", ["--default-storage-prefix", str(tmp_path)]),  # the shared volume
    ]:
        command = [*SNAKEMAKE, "--profile", f"profiles/{name}", "-n", target, "--set-scatter", "split=4", *extra]
        result = subprocess.run(command, cwd=ROOT, env=with_this_python(), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (name, result.stderr[-3000:])
        assert "score_shard        4" in result.stdout + result.stderr, name


def test_the_html_report_shows_ticket_text_as_text(tmp_path):
    """reporting/templates/report.html escapes every value: an input's markup is shown, never run."""
    text = text_field()
    markup = "<script>alert('x')</script><img src=http://127.0.0.1:1/t.png> my order never came"
    row = relabelled([labelled_row({**TICKETS[0]["row"], text: markup})], right=False)  # misclassified: listed with its text
    batch.report(write_csv(tmp_path / "x.csv", row), tmp_path / "r.csv", progress=False)
    page = (tmp_path / "r.html").read_text()
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&lt;img src=http://127.0.0.1:1/t.png&gt;" in page  # a misclassified row
    assert "<img src=http://127.0.0.1:1" not in page and "alert('x')" not in page


# --- every field type, any input shape, optional parts of the contract ----------------------------
class Link(BaseModel):
    url: str
    score: float


class Scores(BaseModel):
    low: float
    high: float | None = None
    best: Link | None = None


class Shaped(BaseModel):
    """An answer of another shape: a Literal, numbers, optionals, a bool, lists of text, numbers and models, a nested
    model with numbers, a dict."""

    verdict: Literal["keep", "remove"]
    score: int
    note: str | None
    published: bool
    reasons: list[str]
    weights: list[float]
    links: list[Link]
    scores: Scores
    extra: dict[str, Any]


SHAPED = [
    Shaped(
        verdict="keep", score=4, note=None, published=True, reasons=["too short", "a; b", "[x]", " pad"], weights=[0.5, -1.0],
        links=[Link(url="https://a.example", score=0.9), Link(url="b", score=0.1)],
        scores=Scores(low=0.1, high=2.5, best=Link(url="c", score=1.0)), extra={"k": [1, 2]},
    ),
    Shaped(verdict="remove", score=1, note="n", published=False, reasons=[], weights=[], links=[], scores=Scores(low=0.0), extra={}),
    Shaped(verdict="keep", score=2, note="", published=False, reasons=[""], weights=[3.0], links=[], scores=Scores(low=1.0), extra={}),
]  # fmt: skip


@pytest.fixture
def shaped(monkeypatch):
    """The pipeline's Output is `Shaped`, and it has no label, probability or needs-a-person field."""
    for name in ("LABEL", "PROBABILITY", "NEEDS_PERSON"):
        monkeypatch.setattr(model, name, None)
    monkeypatch.setattr(model, "Output", Shaped)


def test_every_output_type_has_its_columns_and_reads_back(shaped):
    assert reports.field_columns() == {
        "verdict": ["verdict"],
        "score": ["score"],
        "note": ["note"],
        "published": ["published"],
        "reasons": ["reasons"],
        "weights": ["weights"],
        "links": ["links_count", "links_first_url", "links_first_score"],
        "scores": ["scores_low", "scores_high", "scores_best_url", "scores_best_score"],
        "extra": ["extra"],
    }
    rows = [reports.flatten(answer) for answer in SHAPED]
    assert rows[0]["weights"] == "0.5; -1.0" and rows[1]["reasons"] == "" and rows[0]["note"] == "" == rows[2]["note"]
    assert rows[0]["links_count"] == 2 and rows[0]["links_first_url"] == "https://a.example" and rows[1]["links_first_url"] == ""
    assert rows[0]["scores_best_score"] == 1.0 and rows[1]["scores_high"] == "" and json.loads(rows[0]["extra"]) == {"k": [1, 2]}
    for answer, row in zip(SHAPED, rows, strict=True):  # a list of text or numbers reads back exactly, whatever it holds
        for name in ("reasons", "weights"):
            assert TypeAdapter(Shaped.model_fields[name].annotation).validate_python(reports.list_value(row[name])) == getattr(answer, name)


def test_a_pipeline_without_label_probability_or_person_gets_a_report_of_its_own(shaped, tmp_path):
    rows = [{"text": f"input {i}", **reports.flatten(a)} for i, a in enumerate(SHAPED)]
    b = [{**reports.flatten(a.model_copy(update={"published": True})), "error": ""} for a in SHAPED]  # B publishes all
    frame = pd.DataFrame(rows).join(pd.DataFrame(b).add_prefix(reports.COMPARE_PREFIX))
    given = next(iter(model.Input.model_fields))  # an error names an Input field
    frame.loc[1, "error"] = f"row 2: {given}: Input should be a valid integer"
    frame.to_csv(tmp_path / "scored.csv", index=False)
    run = {"input": "x.csv", "flags": {}, "compare_flags": {}}
    summary = reports.summary(tmp_path / "scored.csv", {"text": "text"}, None, elapsed_s=1.0, run=run, output_path=tmp_path / "r.csv")
    for key in ("label", "label_distribution", "metrics", "probability_histogram", "probability_mean", "needs_person_share"):
        assert key not in summary, key
    assert summary["tallies"] == {"verdict": {"keep": 2}, "published": {"True": 1, "False": 1}}  # rows without an error
    assert summary["error_rows"] == [{"row": 2, "field": given, "text": "input 1", "error": f"{given}: Input should be a valid integer"}]
    assert summary["compare"]["agreement_per_field"] == {f: 1.0 if f != "published" else 0.5 for f in reports.field_columns()}
    assert summary["compare"]["differing_rows"][0]["fields"] == "published"
    page = reports.report_html(summary)
    assert "Confusion" not in page and "Verdict" in page and "Published" in page and "Rows with errors (1)" in page


def test_input_columns_are_named_by_field_and_a_missing_required_one_is_named(tmp_path):
    text = text_field()
    path = write_rows(tmp_path / "t.csv", [{("message" if k == text else k): v for k, v in row.items()} for row in cells(TICKETS[:2])])
    result = run_cli(path, "-o", tmp_path / "r.csv", "--quiet")
    assert result.returncode == 2 and f"no {text!r} column for the input's required field {text!r}" in result.stderr
    assert f"--column {text}=COLUMN" in result.stderr and result.stderr.count("\n") == 1
    assert run_cli(path, "-o", tmp_path / "r.csv", "--quiet", "--column", f"{text}=message").returncode == 0
    assert json.loads((tmp_path / "r.json").read_text())["columns"][text] == "message"
    for option, message in ((["--column", "nope=message"], "--column nope: not a field of the input"), (["--column", "x"], "FIELD=COLUMN")):
        result = run_cli(path, "-o", tmp_path / "r2.csv", "--quiet", *option)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_slices_split_the_accuracy(tickets_csv, tmp_path):
    summary = batch.report(tickets_csv, tmp_path / "r.csv", slices=["ticket_id"], progress=False)
    table = summary["per_slice"]["ticket_id"]
    assert sorted(row["ticket_id"] for row in table) == [f"id-{i}" for i in range(8)]  # each in one class: it names it
    assert all(row["rows"] == 1 and row[contract.label()] for row in table) and "Per ticket ID" in (tmp_path / "r.html").read_text()
    with pytest.raises(batch.BatchInputError, match="no slice column 'nope'"):
        batch.report(tickets_csv, tmp_path / "r.csv", slices=["nope"], progress=False)
