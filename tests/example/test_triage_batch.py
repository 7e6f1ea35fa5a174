"""The worked example's content as batch.py reports it (triage's columns, its flags' rules, an order number, what it
answers): a fork rewrites these.

The machinery's own tests of batch.py (tests/test_batch.py, test_batch_faults.py, test_iteration.py) take their
inputs, flags and expected answers from the pipeline's contract; these are the ones that name triage's."""

import json

import pandas as pd
import pytest
from test_batch import read, run_cli

import batch
import model
from building import contract, encoders

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


@pytest.fixture
def tickets_csv(tmp_path):
    rows = [(t, c, f"id-{i}") for i, (t, c) in enumerate(TICKETS)]
    return write_csv(tmp_path / "tickets.csv", rows, ("text", "expected_category", "ticket_id"))


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


def test_utf8_with_bom_is_read(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("text\nI can't log in to my account\n".encode("utf-8-sig"))
    summary = batch.report(path, tmp_path / "r.csv", progress=False)
    assert summary["rows"] == 1 and summary["label_distribution"] == {"account_access": 1}


def test_empty_values_are_empty_not_nan(tmp_path):
    source = write_csv(tmp_path / "x.csv", [("My parcel never arrived and I am furious!!", "order_status")] * 3)
    result = run_cli(source, "-o", tmp_path / "out.csv", "--quiet", "--flag", "auto_reply=false")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "out.csv").read_text()
    scored = read(tmp_path / "out.csv")
    assert (scored.reply == "").all() and (scored.needs_human == "True").all()
    assert "nan" not in text.lower().replace("nancy", "")
