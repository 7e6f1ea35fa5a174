"""batch.py as a library and a CLI: outputs, order, metrics, flags, comparison, bad input, shards, Snakemake."""

import json
import shutil
import subprocess
import sys
from collections import Counter
from typing import Any, Literal

import pandas as pd
import pytest
from conftest import SNAKEMAKE, with_this_python
from pydantic import BaseModel, TypeAdapter

import batch
import model
from building import contract, encoders
from reporting import reports

ROOT = model.ROOT
TICKETS = [
    ("Where is my order 75983714? It should have arrived on Monday", "order_status"),
    ("I was charged twice for the same order", "billing"),
    ("How do I reset my password?", "account_access"),
    ("The app crashes every time I open it", "technical_issue"),
    ("Please cancel my order, I ordered the wrong size", "cancel_order"),
    ("Do you have the blue sweater in XL?", "product_info"),
    ("I want to return the shoes, they are too small", "returns_refunds"),
    ("Your delivery driver was wonderful, thank you!", "feedback"),
]


def write_csv(path, rows, columns=("text", "expected_category")):
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


def read(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def run_cli(*args):
    return subprocess.run([sys.executable, "batch.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture
def tickets_csv(tmp_path):
    rows = [(t, c, f"id-{i}") for i, (t, c) in enumerate(TICKETS)]
    return write_csv(tmp_path / "tickets.csv", rows, ("text", "expected_category", "ticket_id"))


# --- outputs -------------------------------------------------------------------------------------
def test_cli_writes_csv_html_and_json_in_input_order(tickets_csv, tmp_path):
    result = run_cli(tickets_csv, "-o", tmp_path / "out" / "scored.csv", "--quiet", "--chunk-size", "3")
    assert result.returncode == 0, result.stderr
    assert "8 rows, 0 errors" in result.stdout
    scored = read(tmp_path / "out" / "scored.csv")
    assert list(scored.ticket_id) == [f"id-{i}" for i in range(8)]
    assert list(scored.columns[:3]) == ["text", "expected_category", "ticket_id"]
    for column in ["category", "confidence", "team", "urgency", "order_ids_known", "articles_count", "articles_first_id", "reply"]:
        assert column in scored.columns
    assert list(scored.columns[3:]) == batch.OUTPUT_COLUMNS and batch.OUTPUT_COLUMNS[-1] == "error"
    assert scored.order_ids_known[0] == "75983714"
    singles = [model.run(t) for t, _ in TICKETS]
    assert list(scored.category) == [r.category.value for r in singles]
    summary = json.loads((tmp_path / "out" / "scored.json").read_text())
    assert summary["rows"] == 8 and summary["errors"] == 0 and summary["label_column"] == "expected_category"
    assert summary["model"]["sha256"] == encoders.OFFICIAL_MODEL_SHA256 and set(summary["data"]) >= {"train", "eval", "articles"}
    assert "Category distribution" in (tmp_path / "out" / "scored.html").read_text()


def test_html_report_holds_the_figures(tickets_csv, tmp_path):
    summary = batch.report(tickets_csv, tmp_path / "r.csv", progress=False)
    page = (tmp_path / "r.html").read_text()
    figures = 3 + len(summary["tallies"])  # categories, confidence, each other enum or bool, confusion matrix: HTML and CSS
    assert page.count('<figure class="chart') == figures and "Urgency" in page
    assert "Category distribution" in page and "Confusion matrix" in page and "Misclassified rows" in page
    assert "src=" not in page and "plotly" not in page.lower() and len(page) < 40_000  # nothing to fetch, kilobytes not MB
    assert encoders.OFFICIAL_MODEL_SHA256 in page
    counts = summary["metrics"]["confusion_matrix"]
    diagonal = sum(counts["rows_expected_columns_predicted"][k][k] for k in range(len(counts["labels"])))
    matrix = page[page.index('<table class="matrix">') : page.index("</table>", page.index('<table class="matrix">'))]
    cells = [int(c.split(">")[1].split("<")[0]) for c in matrix.split("<td")[1:]]
    assert sum(cells) == 8 and sum(cells[k * (len(counts["labels"]) + 1)] for k in range(len(counts["labels"]))) == diagonal


def test_html_report_grows_with_its_rows(tmp_path):
    """No fixed weight (plotly.js was 4.8 MB whatever the rows): the page is its figures and the rows it lists."""
    small = write_csv(tmp_path / "small.csv", [(t, "feedback") for t, _ in TICKETS[:2]])
    large = write_csv(tmp_path / "large.csv", [(f"{t} ({i})", "feedback") for i, (t, _) in enumerate(TICKETS * 5)])
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
    summary = batch.report(source, outputs / "second.csv", baseline=inputs / "earlier.csv", compare={"top_k": 1}, progress=False)
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
    assert summary["label"] == "category" and sum(summary["label_distribution"].values()) == 8
    assert set(summary["tallies"]) == {"urgency"} and sum(summary["tallies"]["urgency"].values()) == 8  # enums and bools
    assert summary["probability"] == "confidence" and 0 < summary["probability_mean"] <= 1
    assert summary["needs_person"] == "needs_human" and 0 <= summary["needs_person_share"] <= 1
    metrics = summary["metrics"]
    assert metrics["labelled_rows"] == 8
    correct = sum(r.category.value == c for r, (_, c) in zip(model.run_batch([t for t, _ in TICKETS]), TICKETS, strict=True))
    assert metrics["accuracy"] == round(correct / 8, 4)
    assert summary["misclassified_total"] == 8 - correct


def test_metrics_against_a_hand_computed_example():
    pairs = Counter({("billing", "billing"): 3, ("billing", "feedback"): 1, ("feedback", "feedback"): 2, ("feedback", "billing"): 2})
    m = reports.metrics(pairs)
    assert m["accuracy"] == round(5 / 8, 4)
    # billing: precision 3/5, recall 3/4, F1 = 2*.6*.75/1.35 = 0.6667; feedback: precision 2/3, recall 2/4, F1 = 0.5714
    assert m["per_class"]["billing"] == {"precision": 0.6, "recall": 0.75, "f1": 0.6667, "support": 4}
    assert m["per_class"]["feedback"] == {"precision": 0.6667, "recall": 0.5, "f1": 0.5714, "support": 4}
    assert m["macro_f1"] == round((0.6667 + 0.5714) / 2, 4)  # over the classes present
    assert set(m["per_class"]) == {"billing", "feedback"}  # a class no row expects or gets is not listed as 0.0
    labels = m["confusion_matrix"]["labels"]
    cm = m["confusion_matrix"]["rows_expected_columns_predicted"]
    assert cm[labels.index("billing")][labels.index("feedback")] == 1 and cm[labels.index("feedback")][labels.index("billing")] == 2


def test_no_label_column_means_no_metrics(tmp_path):
    path = write_csv(tmp_path / "t.csv", [(t,) for t, _ in TICKETS[:3]], ("text",))
    summary = batch.report(path, tmp_path / "r.csv", progress=False)
    assert "metrics" not in summary and summary["label_column"] is None and summary["rows"] == 3


def test_text_and_label_columns_can_be_named(tmp_path):
    path = write_csv(tmp_path / "t.csv", TICKETS[:3], ("message", "category"))
    result = run_cli(path, "-o", tmp_path / "r.csv", "--text-column", "message", "--label-column", "category", "--quiet")
    assert result.returncode == 0, result.stderr
    scored = read(tmp_path / "r.csv")
    assert list(scored.input_category) == [c for _, c in TICKETS[:3]]  # the input's own "category" is kept
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["labelled_rows"] == 3


def test_limit_and_chunk_size(tickets_csv, tmp_path):
    result = run_cli(tickets_csv, "-o", tmp_path / "r.csv", "--limit", "5", "--chunk-size", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    assert list(read(tmp_path / "r.csv").ticket_id) == [f"id-{i}" for i in range(5)]


# --- flags and comparison --------------------------------------------------------------------------
def test_flag_changes_the_outputs(tickets_csv, tmp_path):
    result = run_cli(tickets_csv, "-o", tmp_path / "r.csv", "--flag", "auto_reply=false", "--flag", "lookup_orders=false", "--quiet")
    assert result.returncode == 0, result.stderr
    scored = read(tmp_path / "r.csv")
    assert set(scored.needs_human) == {"True"} and set(scored.reply) == {""}
    assert scored.order_ids_known[0] == ""
    assert json.loads((tmp_path / "r.json").read_text())["flags"]["auto_reply"] is False


def test_compare_reports_both_variants(tickets_csv, tmp_path):
    result = run_cli(tickets_csv, "-o", tmp_path / "r.csv", "--compare", "auto_reply=false", "--quiet")
    assert result.returncode == 0, result.stderr
    scored = read(tmp_path / "r.csv")
    assert set(scored.compare_needs_human) == {"True"}
    assert list(scored.compare_category) == list(scored.category)
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["compare_flags"]["auto_reply"] is False and summary["flags"]["auto_reply"] is True
    b = summary["compare"]
    assert b["needs_person_share"] == 1.0 and b["agreement_per_field"]["category"] == 1.0 and "metrics" in b
    assert set(b["agreement_per_field"]) == set(contract.output_fields())  # every output field, not only the label
    answered = (scored.needs_human == "False").sum()  # A replies to these; B sends them to a person
    assert b["differing_total"] == answered > 0 and b["agreement"] == round(1 - answered / 8, 4)
    assert {row["fields"] for row in b["differing_rows"]} == {"reply, needs_human"}
    page = (tmp_path / "r.html").read_text()
    assert "B (compare flags)" in page and f"Rows where A and B differ ({answered})" in page


def test_compare_lists_rows_that_differ(tickets_csv, tmp_path):
    summary = batch.report(tickets_csv, tmp_path / "r.csv", compare={"mask_pii": False, "top_k": 1}, progress=False)
    assert summary["compare"]["differing_total"] == len(summary["compare"]["differing_rows"])
    differing = batch.report(tickets_csv, tmp_path / "r2.csv", flags={"top_k": 3}, compare={"min_confidence": 1.0}, progress=False)
    assert differing["compare"]["agreement_per_field"]["category"] == 1.0 and differing["compare"]["needs_person_share"] == 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--flag", "no_such=1"], "--flag no_such: unknown flag"),
        (["--flag", "top_k=99"], "--flag top_k='99'"),
        (["--flag", "auto_reply=perhaps"], "--flag auto_reply='perhaps'"),
        (["--flag", "top_k"], "expected KEY=VALUE"),
        (["--compare", "min_confidence=2"], "--compare min_confidence='2'"),
        (["--chunk-size", "0"], "--chunk-size"),
    ],
)
def test_bad_flags_exit_2_naming_them(tickets_csv, tmp_path, args, message):
    result = run_cli(tickets_csv, "-o", tmp_path / "r.csv", "--quiet", *args)
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "r.csv").exists()


# --- bad input ------------------------------------------------------------------------------------
def test_bad_rows_get_an_error_and_keep_their_place(tmp_path):
    rows = [
        ("Where is my parcel?", "order_status"),
        ("", "billing"),
        ("   ", "billing"),
        ("x" * 5001, "feedback"),
        ("I can't log in", "account_access"),
    ]
    path = write_csv(tmp_path / "t.csv", rows)
    result = run_cli(path, "-o", tmp_path / "r.csv", "--quiet")
    assert result.returncode == 0, result.stderr
    scored = read(tmp_path / "r.csv")
    assert len(scored) == 5 and list(scored.expected_category) == [c for _, c in rows]
    assert list(scored.error == "") == [True, False, False, False, True]
    assert "text: String should have at least 1 character" in scored.error[1]
    assert "at most 5000 characters" in scored.error[3]
    assert scored.category[1] == "" and scored.category[4] == "account_access"
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["rows"] == 5 and summary["errors"] == 3 and summary["metrics"]["labelled_rows"] == 2
    assert [(r["row"], r["text"][:3]) for r in summary["error_rows"]] == [(2, ""), (3, "   "), (4, "xxx")]  # in the JSON too
    assert summary["error_rows"][0]["error"] == "text: String should have at least 1 character"
    assert "Rows with errors (3)" in (tmp_path / "r.html").read_text()


def test_a_failing_row_does_not_cost_the_others(monkeypatch):
    real_run_batch = model.run_batch

    def run_batch(tickets, flags=None, debug=False, timings=None):  # the pipeline fails on one ticket, so on any batch holding it
        if any("boom" in model.Input.model_validate(t).text for t in tickets):
            raise RuntimeError("boom inside the pipeline")
        return real_run_batch(tickets, flags, debug, timings)

    monkeypatch.setattr(model, "run_batch", run_batch)
    rows = batch.score_chunk([{"text": t} for t in ("Where is my parcel?", "boom", "I can't log in")], model.Flags())
    assert [r["error"] for r in rows] == ["", "row 2: RuntimeError: boom inside the pipeline", ""]
    assert rows[2]["category"] == "account_access" and rows[1]["category"] == ""


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"  \n\n", "the file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "not a CSV file"),
        ("text\nun caf\u00e9 tr\u00e8s cher\n".encode("latin-1"), "not UTF-8"),
        (b"message,label\nhello,billing\n", "no 'text' column"),
        (b"text,label\nhello,billing\na,b,c,d,e\n", "not a readable CSV"),
    ],
)
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
    path = tmp_path / "bom.csv"
    path.write_bytes("text\nI can't log in to my account\n".encode("utf-8-sig"))
    summary = batch.report(path, tmp_path / "r.csv", progress=False)
    assert summary["rows"] == 1 and summary["label_distribution"] == {"account_access": 1}


def test_header_only_gives_an_empty_report(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("text,expected_category\n")
    result = run_cli(path, "-o", tmp_path / "r.csv", "--quiet")
    assert result.returncode == 0, result.stderr
    scored = read(tmp_path / "r.csv")
    assert len(scored) == 0 and "category" in scored.columns and "error" in scored.columns
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["rows"] == 0 and summary["metrics"]["accuracy"] is None
    assert (tmp_path / "r.html").exists()


# --- shards ---------------------------------------------------------------------------------------
def test_sharded_run_equals_the_unsharded_one(tmp_path):
    rows = [(f"{t} ({i})", c) for i, (t, c) in enumerate(TICKETS * 3)]
    path = write_csv(tmp_path / "t.csv", rows)
    whole = batch.report(path, tmp_path / "whole.csv", compare={"auto_reply": False}, progress=False)
    shards = [tmp_path / f"{k}-of-3.csv" for k in (1, 2, 3)]
    batch.split(path, shards)
    assert [len(read(s)) for s in shards] == [8, 8, 8]
    scored = []
    for shard in shards:
        batch.report(shard, shard.with_suffix(".scored.csv"), compare={"auto_reply": False}, progress=False, html_report=False)
        scored.append(shard.with_suffix(".scored.csv"))
    merged = batch.merge(scored, tmp_path / "merged.csv")
    a, b = read(tmp_path / "whole.csv"), read(tmp_path / "merged.csv")
    assert list(a.columns) == list(b.columns) and list(a.text) == [t for t, _ in rows] == list(b.text)
    close = ["confidence", "articles_first_score", "compare_confidence", "compare_articles_first_score"]
    pd.testing.assert_frame_equal(a.drop(columns=close), b.drop(columns=close))
    pd.testing.assert_frame_equal(a[close].astype(float), b[close].astype(float), atol=1e-3)
    assert merged["rows"] == whole["rows"] == 24 and merged["shards"] == 3
    assert merged["metrics"]["per_class"] == whole["metrics"]["per_class"]


def test_split_handles_more_shards_than_rows(tmp_path):
    path = write_csv(tmp_path / "t.csv", TICKETS[:2])
    shards = [tmp_path / f"{k}.csv" for k in range(3)]
    batch.split(path, shards)
    assert sum(len(read(s)) for s in shards) == 2 and all(list(read(s).columns) == ["text", "expected_category"] for s in shards)


def test_snakemake_report_and_scatter_gather(tmp_path):
    (tmp_path / "in").mkdir()
    write_csv(tmp_path / "in" / "tiny.csv", TICKETS)
    config = [f"inputs={tmp_path}/in", f"reports={tmp_path}/out", f"shards_dir={tmp_path}/shards"]
    targets = [f"{tmp_path}/out/tiny.csv", f"{tmp_path}/out/tiny.sharded.csv"]
    command = [*SNAKEMAKE, "-c2", *targets, "--set-scatter", "split=2", "--config", *config, "--quiet", "all"]
    result = subprocess.run(command, cwd=ROOT, env=with_this_python(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = read(tmp_path / "out" / "tiny.csv"), read(tmp_path / "out" / "tiny.sharded.csv")
    assert list(a.category) == list(b.category) and list(a.text) == [t for t, _ in TICKETS]
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
    """reporting/templates/report.html escapes every value: a ticket's markup is shown, never run (only plotly's figures are HTML)."""
    source = tmp_path / "x.csv"
    ticket = "<script>alert('x')</script><img src=http://127.0.0.1:1/t.png> my order never came"
    pd.DataFrame({"text": [ticket], "expected_category": ["billing"]}).to_csv(source, index=False)
    batch.report(source, tmp_path / "r.csv", progress=False)
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
    frame.loc[1, "error"] = "row 2: score: Input should be a valid integer"
    frame.to_csv(tmp_path / "scored.csv", index=False)
    run = {"input": "x.csv", "flags": {}, "compare_flags": {}}
    summary = reports.summary(tmp_path / "scored.csv", {"text": "text"}, None, elapsed_s=1.0, run=run, output_path=tmp_path / "r.csv")
    for key in ("label", "label_distribution", "metrics", "probability_histogram", "probability_mean", "needs_person_share"):
        assert key not in summary, key
    assert summary["tallies"] == {"verdict": {"keep": 2}, "published": {"True": 1, "False": 1}}  # rows without an error
    assert summary["error_rows"] == [{"row": 2, "text": "input 1", "error": "score: Input should be a valid integer"}]
    assert summary["compare"]["agreement_per_field"] == {f: 1.0 if f != "published" else 0.5 for f in reports.field_columns()}
    assert summary["compare"]["differing_rows"][0]["fields"] == "published"
    page = reports.report_html(summary)
    assert "Confusion" not in page and "Verdict" in page and "Published" in page and "Rows with errors (1)" in page


def test_input_columns_are_named_by_field_and_a_missing_required_one_is_named(tmp_path):
    text = contract.text_field()
    path = write_csv(tmp_path / "t.csv", TICKETS[:2], ("message", "expected_category"))
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
    assert all(row["rows"] == 1 and row[contract.label()] for row in table) and "Per ticket id" in (tmp_path / "r.html").read_text()
    with pytest.raises(batch.BatchInputError, match="no slice column 'nope'"):
        batch.report(tickets_csv, tmp_path / "r.csv", slices=["nope"], progress=False)
