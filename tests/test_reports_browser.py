"""The HTML reports in a real browser (Debian's Chromium through Playwright) at 1400 px: they fit the window (a long
input, a long id wraps inside its cell), draw their figures without a script library and log no error.

Machinery tests: the inputs, flags and expected answers come from the pipeline's contract (conftest's helpers), so
they pass on a fork's pipeline too."""

import shutil
from pathlib import Path

from conftest import SHOTS, changing_flags, expected_not_matching, labelled_mix, labelled_row, relabelled, text_field, with_text, write_rows

import batch
from building import contract
from loop import edge_cases

WIDTH = 1400
LONG = "https://example.com/orders/" + "x7" * 60  # one 147-character word: it can only wrap inside its cell


def opened(browser, path: Path, shot: str) -> tuple:
    """The page at 1400 px: its scroll width, what it logged as errors, and the page (a screenshot saved)."""
    page = browser.new_context(viewport={"width": WIDTH, "height": 1000}, java_script_enabled=True).new_page()
    errors = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(str(error)))
    requests = []
    page.on("request", lambda request: request.url.startswith("file://") or requests.append(request.url))
    page.goto(path.as_uri())
    page.screenshot(path=SHOTS / shot, full_page=True)
    return page.evaluate("document.documentElement.scrollWidth"), errors + requests, page


def test_batch_report_fits_the_window(browser, tmp_path):
    text, given = text_field(), labelled_mix(3)  # three labelled rows, as many classes as they hold
    long = labelled_row({**given[0]["row"], text: f"{given[0]['row'][text]} {LONG} says nothing"})
    rows = relabelled([long], right=False) + given[1:]  # the first misclassified: listed with its long text
    cells = [{**r["row"], "ticket_id": ticket_id} for r, ticket_id in zip(rows, [LONG, "b", "c"], strict=True)]
    source = write_rows(tmp_path / "tickets.csv", cells)
    compare = changing_flags([r["input"] for r in rows])
    summary = batch.report(source, tmp_path / "r.csv", compare=compare, progress=False)
    width, errors, page = opened(browser, tmp_path / "r.html", "batch-report.png")
    assert width <= WIDTH and errors == []
    figures = 3 + len(summary["tallies"])  # the label's values, the probability, each other tally, the confusion matrix
    assert page.locator("figure.chart").count() == figures and page.locator("table.matrix").count() == 2  # A and B
    assert page.locator(".bar").first.bounding_box()["width"] > 0 and page.get_by_text(LONG[:40], exact=False).count() >= 1
    per_class = page.locator("table.sortable").first
    per_class.get_by_role("columnheader", name="f1").click()  # the sort on a column header still works
    shown = [float(t) for t in per_class.locator("tbody td:nth-child(4)").all_inner_texts()]
    assert len(shown) == len(summary["metrics"]["per_class"]) > 1 and shown == sorted(shown)  # only the classes with rows


def test_case_report_fits_the_window(browser, tmp_path, monkeypatch):
    store = tmp_path / "store" / "edge_cases.csv"
    store.parent.mkdir()
    if edge_cases.cases_file().exists():  # the pipeline's own cases too, whatever they are
        shutil.copy(edge_cases.cases_file(), store)
    monkeypatch.setenv("TRIAGE_EDGE_CASES", str(store))
    ticket = with_text(f"Thanks, lovely service {LONG}")
    expected = expected_not_matching(contract.run(ticket))  # an answer the pipeline does not give: the case stays open
    case = {"ticket": ticket, "expected": expected, "note": LONG, "source": "file"}
    edge_cases.save_cases([case], path=store)
    summary = batch.cases_report(tmp_path / "cases.csv")
    assert summary["open"] >= 1 and summary["store"] == "edge_cases.csv"
    width, errors, page = opened(browser, tmp_path / "cases.html", "case-report.png")
    assert width <= WIDTH and errors == []
    assert page.get_by_role("heading", name="Still open").count() == 1
    assert str(tmp_path) not in (tmp_path / "cases.html").read_text() + (tmp_path / "cases.json").read_text()
