"""The HTML reports in a real browser (Debian's Chromium through Playwright) at 1400 px: they fit the window (a long
ticket, a long id wraps inside its cell), draw their figures without a script library and log no error."""

import shutil
from pathlib import Path

import pandas as pd
from conftest import SHOTS

import batch
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
    rows = [
        (f"Where is my order? The tracking page {LONG} says nothing", "billing"),  # misclassified: listed with its text
        ("I was charged twice for the same order", "billing"),
        ("The app crashes every time I open it", "technical_issue"),
    ]
    source = tmp_path / "tickets.csv"
    pd.DataFrame(rows, columns=["text", "expected_category"]).assign(ticket_id=[LONG, "b", "c"]).to_csv(source, index=False)
    summary = batch.report(source, tmp_path / "r.csv", compare={"top_k": 1, "min_confidence": 0.9}, progress=False)
    width, errors, page = opened(browser, tmp_path / "r.html", "batch-report.png")
    assert width <= WIDTH and errors == []
    figures = 3 + len(summary["tallies"])  # the label's values, the probability, each other tally, the confusion matrix
    assert page.locator("figure.chart").count() == figures and page.locator("table.matrix").count() == 2  # A and B
    assert page.locator(".bar").first.bounding_box()["width"] > 0 and page.get_by_text(LONG[:40], exact=False).count() >= 1
    per_category = page.locator("table.sortable").first
    per_category.get_by_role("columnheader", name="f1").click()  # the sort on a column header still works
    shown = [float(t) for t in per_category.locator("tbody td:nth-child(4)").all_inner_texts()]
    assert len(shown) == len(summary["metrics"]["per_class"]) > 1 and shown == sorted(shown)  # only the classes with rows


def test_case_report_fits_the_window(browser, tmp_path, monkeypatch):
    store = tmp_path / "store" / "edge_cases.csv"
    store.parent.mkdir()
    shutil.copy(edge_cases.cases_file(), store)
    monkeypatch.setenv("TRIAGE_EDGE_CASES", str(store))
    case = {"ticket": {"text": f"Thanks, lovely service {LONG}"}, "expected": {"category": "billing"}, "note": LONG, "source": "file"}
    edge_cases.save_cases([case], path=store)
    summary = batch.cases_report(tmp_path / "cases.csv")
    assert summary["open"] >= 1 and summary["store"] == "edge_cases.csv"
    width, errors, page = opened(browser, tmp_path / "cases.html", "case-report.png")
    assert width <= WIDTH and errors == []
    assert page.get_by_role("heading", name="Still open").count() == 1
    assert str(tmp_path) not in (tmp_path / "cases.html").read_text() + (tmp_path / "cases.json").read_text()
