"""A real browser (Debian's Chromium through Playwright) drives the app as a project owner would. Every page collects
the browser's console and page errors: a test fails on any error it did not expect (`allowed`)."""

import pandas as pd
import pytest
from conftest import PAIRS, SHOTS, Server, free_port, recorded_pairs
from playwright.sync_api import expect
from pydantic import Field

import model
from app import render, ui
from building import contract
from loop import edge_cases, review


def serve(demo):
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, theme=ui.THEME, css=ui.CSS)
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def allowed() -> list[str]:
    """Substrings of console errors a test provokes on purpose (a wrong password's 401, a blocked host)."""
    return []


@pytest.fixture
def page(browser, allowed):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    yield page
    context.close()
    unexpected = [e for e in errors if not any(a in e for a in allowed)]
    assert not unexpected, f"the browser's console has errors: {unexpected}"


@pytest.mark.quick
def test_owner_triages_a_ticket_opens_a_step_and_downloads_a_batch_report(page, tmp_path):
    demo = ui.build()
    try:
        page.goto(serve(demo))
        expect(page.get_by_role("heading", name=contract.title())).to_be_visible()
        page.get_by_label("text").first.fill("The app crashes every time I open my basket, order 75983714")
        page.get_by_role("button", name="Run", exact=True).click()
        classify = page.get_by_text("5. Classify")
        classify.wait_for(timeout=60_000)
        expect(page.get_by_role("heading", name="Technical issue", exact=True).first).to_be_visible()  # the label's value, in words
        expect(page.get_by_text("Team tech_support").first).to_be_visible()
        classify.click()  # open the classify panel: every class probability is inside
        expect(page.get_by_text("LogisticRegression").filter(visible=True).first).to_be_visible()
        expect(page.get_by_text("Probabilities", exact=True).filter(visible=True).first).to_be_visible()
        page.get_by_text("2. Find orders").click()
        expect(page.get_by_text("14377592").filter(visible=True).first).to_be_visible()  # the Bloom filter's size in bits
        page.screenshot(path=SHOTS / "triage.png", full_page=True)

        source = tmp_path / "small.csv"
        pd.DataFrame({"text": ["Where is my parcel?", "I was charged twice", "cancel my order please"]}).to_csv(source, index=False)
        page.get_by_role("tab", name="Batch").click()
        page.locator('input[type=file][accept=".csv"]').first.set_input_files(source)  # the CSV upload, not a table's import
        expect(page.get_by_role("cell", name="small.csv").first).to_be_visible(timeout=60_000)  # uploaded (its name: "small" ".csv")
        page.get_by_role("button", name="Run batch report").click()
        link = page.locator('a[href$="/small-report.csv"]')
        link.wait_for(timeout=120_000)
        expect(page.get_by_text("3 rows")).to_be_visible()
        page.screenshot(path=SHOTS / "batch.png", full_page=True)
        with page.expect_download() as download:
            link.click()
        saved = tmp_path / "downloaded.csv"
        download.value.save_as(saved)
        scored = pd.read_csv(saved)
        assert list(scored.text) == ["Where is my parcel?", "I was charged twice", "cancel my order please"]
        assert list(scored.category) == [r.category.value for r in model.run_batch(list(scored.text))]
    finally:
        demo.close()


def test_a_new_step_and_flag_appear_without_changing_the_ui(page):
    class MoreFlags(model.Flags):
        shout: bool = Field(False, description="Shout the reply (a flag the UI has never seen).")

    def run(ticket, flags, debug):  # the pipeline with one more step and one more flag
        shout = flags.pop("shout")
        result = model.run(ticket, flags, debug=debug)
        step = model.StepTrace(step="dummy_step", ms=1.5, output={"shouted": shout}, details={"note": "added by the test"})
        return result.model_copy(update={"trace": [*result.trace, step]})

    demo = ui.build(run=run, flags_schema=MoreFlags)
    try:
        page.goto(serve(demo))
        page.get_by_text("Feature flags").first.click()
        page.get_by_label("shout").first.check()
        page.get_by_label("text").first.fill("Where is my order?")
        page.get_by_role("button", name="Run", exact=True).click()
        panel = page.get_by_text("7. Dummy step · 1.5 ms")
        panel.wait_for(timeout=60_000)
        panel.click()
        expect(page.get_by_text("added by the test").filter(visible=True).first).to_be_visible()
        expect(page.get_by_text("Shouted", exact=True).filter(visible=True).first).to_be_visible()
        page.screenshot(path=SHOTS / "dummy_step.png", full_page=True)
    finally:
        demo.close()


def test_with_a_key_a_person_logs_in_then_triages_and_downloads_a_report(page, tmp_path, allowed):
    """The one server with credentials: the login page loads without them, the app only after logging in."""
    allowed.append("status of 400 (Bad Request)")  # the wrong password, on purpose
    server = Server(LIT_SERVER_API_KEY="sesame", TRIAGE_UI_USER="owner", TRIAGE_UI_PASSWORD="open-sesame")
    try:
        page.goto(f"{server.url}/")
        page.get_by_label("username").fill("owner")
        page.get_by_label("password").fill("wrong")
        page.get_by_role("button", name="Login").click()
        expect(page.get_by_text("Incorrect credentials")).to_be_visible(timeout=30_000)
        page.screenshot(path=SHOTS / "login.png", full_page=True)
        page.get_by_label("username").fill("owner")  # Gradio empties the form after a failed login
        page.get_by_label("password").fill("open-sesame")
        page.get_by_role("button", name="Login").click()
        expect(page.get_by_role("heading", name=contract.title())).to_be_visible(timeout=60_000)
        page.get_by_label("text").first.fill("I was charged twice for order 75983714")
        page.get_by_role("button", name="Run", exact=True).click()
        expect(page.get_by_role("heading", name="Billing", exact=True).first).to_be_visible(timeout=60_000)

        source = tmp_path / "mine.csv"
        pd.DataFrame({"text": ["Where is my parcel?", "I was charged twice"]}).to_csv(source, index=False)
        page.get_by_role("tab", name="Batch").click()
        page.locator('input[type=file][accept=".csv"]').first.set_input_files(source)
        expect(page.get_by_text("mine.csv").filter(visible=True).first).to_be_visible(timeout=60_000)
        page.get_by_role("button", name="Run batch report").click()
        link = page.locator('a[href$="/mine-report.csv"]')
        link.wait_for(timeout=120_000)
        page.screenshot(path=SHOTS / "batch_logged_in.png", full_page=True)
        with page.expect_download() as download:
            link.click()
        saved = tmp_path / "downloaded.csv"
        download.value.save_as(saved)
        assert list(pd.read_csv(saved).text) == ["Where is my parcel?", "I was charged twice"]
    finally:
        server.stop()


def test_personal_data_after_another_ticket_leaves_the_console_clean(page):
    """Each run re-renders the step panels with other kinds of components (a table where there was "nothing"): the
    browser once threw `TypeError: e.trim is not a function` here. The page fixture fails on any console error."""
    demo = ui.build()
    try:
        page.goto(serve(demo))
        tickets = [
            ("Where is my parcel? Order 75983714", {}),
            ("Call me on +44 7700 900123 or mail jo@example.com: card 4111 1111 1111 1111 was charged twice", {}),
            ("Where is my parcel? Order 75983715", {"Lookup orders": False}),  # a step skipped
            ("Mail jo@example.com: I cannot log in to my account", {"Lookup orders": True}),
        ]
        page.get_by_text("Feature flags").first.click()
        for number, (text, flags) in enumerate(tickets):
            for label, on in flags.items():
                page.get_by_label(label).first.set_checked(on)
            page.get_by_label("Text").first.fill(text)
            page.get_by_role("button", name="Run", exact=True).click()
            masked = model.normalize(text, True)[0]  # what the normalize panel shows once this ticket's panels are drawn
            expect(page.get_by_label("output").first).to_have_value(masked, timeout=60_000)
            expect(page.get_by_text("· skipped")).to_have_count(1 if flags.get("Lookup orders") is False else 0)
            page.screenshot(path=SHOTS / f"triage-{number}.png", full_page=True)
    finally:
        demo.close()


def test_after_an_error_the_run_and_compare_tabs_no_longer_show_the_previous_answer(page, allowed):
    """An empty text after a ticket: the error is shown, and the headline, the answer's table and the step panels are
    the failed request's (cleared, with a note), not the previous ticket's."""
    allowed += ["AbortError: signal is aborted", "Connection errored out"]  # Gradio's client as the error ends its event stream
    demo = ui.build()
    try:
        page.goto(serve(demo))
        page.get_by_label("Text").first.fill("I was charged twice for order 75983714")
        page.get_by_role("button", name="Run", exact=True).click()
        expect(page.get_by_role("heading", name="Billing", exact=True).first).to_be_visible(timeout=60_000)
        page.get_by_label("Text").first.fill("")
        page.get_by_role("button", name="Run", exact=True).click()
        expect(page.get_by_role("heading", name="No answer", exact=True)).to_be_visible(timeout=60_000)
        expect(page.get_by_role("heading", name="Billing", exact=True)).to_have_count(0)
        expect(page.get_by_text("5. Classify")).to_have_count(0)
        assert "Billing" not in page.get_by_role("grid", name="The answer, field by field").inner_text()
        page.screenshot(path=SHOTS / "run-after-an-error.png", full_page=True)

        page.get_by_role("tab", name="Compare").click()
        page.get_by_label("Text").filter(visible=True).first.fill("How do I reset my password?")
        page.get_by_role("button", name="Compare", exact=True).click()
        expect(page.get_by_text("0 of 8 fields differ")).to_be_visible(timeout=60_000)
        page.get_by_label("Text").filter(visible=True).first.fill("")
        page.get_by_role("button", name="Compare", exact=True).click()
        expect(page.get_by_role("heading", name="No comparison", exact=True)).to_be_visible(timeout=60_000)
        expect(page.get_by_text("0 of 8 fields differ")).to_have_count(0)
        expect(page.get_by_role("grid", name="Fields")).to_be_hidden()
        page.goto("about:blank")  # the page's connections closed before the server is: no "Server stopped" in its console
    finally:
        demo.close()


def test_every_tab_at_1400_px_after_use(page, queue):
    """Each tab after it was used, for a person to look at (SHOTS); and the placeholders that must not show."""
    demo = ui.build()
    try:
        page.goto(serve(demo))
        page.get_by_label("Text").first.fill("I was charged twice for order 75983714, mail jo@example.com")
        page.get_by_role("button", name="Run", exact=True).click()
        expect(page.get_by_role("heading", name="Billing", exact=True).first).to_be_visible(timeout=60_000)
        page.get_by_text("Flag this case: the pipeline got it wrong").click()
        page.get_by_role("button", name="Flag this case", exact=True).first.click()
        confirmation = page.locator(".confirmation", has_text="Flagged as case").first
        expect(confirmation).to_be_visible(timeout=60_000)
        button = page.get_by_role("button", name="Flag this case", exact=True).first.bounding_box()
        assert abs(confirmation.bounding_box()["y"] - button["y"]) < 80  # beside the button, where the eye is
        page.screenshot(path=SHOTS / "tab-triage.png", full_page=True)

        page.get_by_role("tab", name="Compare").click()
        expect(page.get_by_role("grid", name="Fields")).to_be_hidden()  # no placeholder headers before a run
        page.screenshot(path=SHOTS / "tab-compare-empty.png", full_page=True)
        page.get_by_label("Text").filter(visible=True).first.fill("How do I reset my password?")
        page.get_by_label("Auto reply").filter(visible=True).nth(1).uncheck()  # B: no automatic reply
        page.get_by_role("button", name="Compare", exact=True).click()
        expect(page.get_by_text("2 of 8 fields differ")).to_be_visible(timeout=60_000)
        cells = page.get_by_role("grid", name="Fields").locator("td").all_inner_texts()
        assert not {"None", "True", "False", "null"} & {c.strip() for c in cells}, cells
        page.screenshot(path=SHOTS / "tab-compare.png", full_page=True)

        page.get_by_role("tab", name="Batch").click()
        page.get_by_role("button", name="Run batch report").click()
        expect(page.get_by_text("Upload a CSV file")).to_be_visible(timeout=60_000)
        page.get_by_label("Use the bundled evaluation set").check()
        page.get_by_label("Also score variant B").check()
        page.get_by_text("Flags B (used when comparing)").click()
        page.get_by_label("Auto reply").filter(visible=True).last.uncheck()  # B: no automatic reply
        page.get_by_role("button", name="Run batch report").click()
        expect(page.get_by_text("with B 100% need a person")).to_be_visible(timeout=180_000)  # B: no automatic reply
        expect(page.locator(".toast-body")).to_have_count(0)  # no warning left over from the first try
        page.screenshot(path=SHOTS / "tab-batch.png", full_page=True)

        page.get_by_role("tab", name="Edge cases").click()
        expect(page.get_by_text("Review queue: 1 pending")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("what the suite file records")).to_be_visible()  # verdict and status, told apart
        expect(page.get_by_role("grid", name="Under both versions")).to_be_hidden()
        page.screenshot(path=SHOTS / "tab-edge-cases.png", full_page=True)
        page.get_by_role("tab", name="API").click()
        expect(page.get_by_text('api_name="/run"').first).to_be_visible()
        page.screenshot(path=SHOTS / "tab-api.png", full_page=True)
    finally:
        demo.close()


def triage_then_open_flagging(page, url: str, text: str) -> None:
    page.goto(url)
    page.get_by_label("text").first.fill(text)
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("5. Classify").wait_for(timeout=60_000)
    page.get_by_text("Flag this case: the pipeline got it wrong").click()


@pytest.fixture
def queue(tmp_path, monkeypatch):
    """The app runs in this process: its review queue and suite file go to tmp_path."""
    monkeypatch.setenv("TRIAGE_EDGE_CASES", str(tmp_path / "cases.csv"))
    monkeypatch.setenv("TRIAGE_DATABASE_URL", f"sqlite:///{tmp_path / 'review.sqlite3'}")
    return tmp_path


def test_owner_flags_a_case_and_finds_it_in_the_edge_cases_tab(page, queue):
    demo = ui.build()
    try:
        text = "Honestly tempted to cancel, but I'd rather just know when the desk lamp turns up"
        triage_then_open_flagging(page, serve(demo), text)
        answered = model.run(text).category.value
        expect(page.get_by_label("expected category").first).to_have_value(render.label_of(answered))  # preset to the answer, in words
        page.get_by_label("expected category").first.click()
        page.get_by_role("option", name="Order status").click()
        page.get_by_label("note").first.fill("cancel mentioned but not wanted")
        page.get_by_role("button", name="Flag this case", exact=True).first.click()
        expect(page.get_by_text("Flagged as case")).to_be_visible(timeout=60_000)
        page.screenshot(path=SHOTS / "flagged.png", full_page=True)
        ((flagged, *_),) = review.cases()[0]
        assert flagged.ticket.text == text and flagged.expected.category == "order_status" and flagged.source == "ui"

        page.get_by_role("tab", name="Edge cases").click()
        expect(page.get_by_text("0 cases", exact=True)).to_be_visible(timeout=60_000)  # a flag is not a test until accepted
        expect(page.get_by_text("Review queue: 1 pending")).to_be_visible(timeout=60_000)
        note = page.get_by_role("grid", name="Review queue").get_by_text("cancel mentioned but not wanted").last
        expect(note).to_be_visible()
        table = page.get_by_role("grid", name="Review queue").bounding_box()
        box = note.bounding_box()
        assert box["x"] + box["width"] <= table["x"] + table["width"] + 1  # the last column fits on the screen
        expect(page.get_by_role("button", name="Accept into the suite")).to_be_hidden()  # nobody is logged in
        page.screenshot(path=SHOTS / "edge_cases.png", full_page=True)

        page.get_by_role("tab", name="Compare").click()
        page.get_by_label("text").filter(visible=True).first.fill("How do I reset my password?")
        expect(page.get_by_label("Auto reply").filter(visible=True).nth(1)).to_be_checked()  # B starts as A
        page.get_by_role("button", name="Compare", exact=True).click()
        expect(page.get_by_text("fields differ")).to_be_visible(timeout=60_000)
        fields = page.get_by_role("grid", name="Fields").bounding_box()
        for header in ("A", "B", "differs"):  # the point of the tab is visible, not cut off to the right
            cell = page.get_by_role("grid", name="Fields").get_by_role("columnheader", name=header, exact=True).bounding_box()
            assert cell["x"] + cell["width"] <= fields["x"] + fields["width"] + 1, header
        page.screenshot(path=SHOTS / "compare.png", full_page=True)
        page.get_by_role("tab", name="API").click()
        expect(page.get_by_text("true", exact=True).filter(visible=True).first).to_be_visible()  # flag defaults as JSON
        page.screenshot(path=SHOTS / "api.png", full_page=True)
    finally:
        demo.close()


def test_a_flagged_ticket_is_shown_as_text_never_as_an_image_markup_or_a_link(page, queue):
    demo = ui.build()
    fetched = []
    page.on("request", lambda request: fetched.append(request.url) if "127.0.0.1:1/" in request.url else None)
    try:
        text = "Where is it? ![x](http://127.0.0.1:1/t.png) <b>bold</b> http://127.0.0.1:1/track"
        triage_then_open_flagging(page, serve(demo), text)
        page.get_by_role("button", name="Flag this case", exact=True).first.click()
        expect(page.get_by_text("Flagged as case")).to_be_visible(timeout=60_000)
        confirmation = page.locator(".prose", has_text="Flagged as case").last
        expect(confirmation.locator("code").last).to_have_text(text)  # the first is the case id
        assert confirmation.locator("img, a, b").count() == 0, confirmation.inner_html()
        assert not fetched, fetched
        page.screenshot(path=SHOTS / "flagged_markup.png", full_page=True)
    finally:
        demo.close()


def reviewer_on_the_edge_cases_tab(page, demo) -> None:
    """The app served with a login; ana logged in, on the Edge cases tab."""
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True, auth=("ana", "pw"))
    page.goto(f"http://127.0.0.1:{port}/")
    page.get_by_label("username").fill("ana")
    page.get_by_label("password").fill("pw")
    page.get_by_role("button", name="Login").click()
    page.get_by_role("tab", name="Edge cases").click()


def test_a_logged_in_reviewer_accepts_a_flag_into_the_suite(page, queue):
    passing, failing = edge_cases.save_cases(
        [{"ticket": {"text": "How do I reset my password?"}, "expected": {"category": c}} for c in ("account_access", "billing")]
    )
    edge_cases.set_case_status([passing[0].id], edge_cases.CaseStatus.open)  # right now, marked open: newly fixed
    review.flag([{"ticket": {"text": "Charged twice for one desk lamp"}, "expected": {"category": "feedback"}}], client="someone")
    review.flag([{"ticket": {"text": "zzzz junk junk"}, "expected": {"category": "billing"}}], client="someone")
    demo = ui.build()
    try:
        reviewer_on_the_edge_cases_tab(page, demo)
        expect(page.get_by_text("Review queue: 2 pending")).to_be_visible(timeout=60_000)
        page.get_by_label("pending cases to decide on").click()
        page.get_by_role("option", name="Charged twice for one desk lamp", exact=False).click()
        page.get_by_label("expected category").click()  # the flag said feedback: the reviewer sets billing
        page.get_by_role("option", name="Billing", exact=True).click()  # categories in words
        page.screenshot(path=SHOTS / "review.png", full_page=True)
        page.get_by_role("button", name="Accept into the suite").click()
        expect(page.get_by_text("1 case accepted into the suite.")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Review queue: 1 pending")).to_be_visible()
        *_, in_suite = edge_cases.load_cases(queue / "cases.csv")
        assert in_suite.ticket.text == "Charged twice for one desk lamp" and in_suite.expected.category == "billing"
        assert in_suite.created_by == "ana"

        expect(page.get_by_text("1 newly fixed")).to_be_visible()
        page.get_by_role("button", name="Mark the newly fixed cases fixed").click()  # cases fix, as a button
        expect(page.get_by_text("1 case marked fixed.")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("0 newly fixed")).to_be_visible(timeout=60_000)
        status = {c.id: c.status for c in edge_cases.load_cases(queue / "cases.csv")}
        assert (status[passing[0].id], status[failing[0].id]) == ("fixed", "open")  # a case that still fails stays open
    finally:
        demo.close()


def test_api_docs_render_without_internet(page):
    """Swagger UI's files come from the server itself: /docs renders with every other host blocked."""
    server = Server(LIT_SERVER_API_KEY="sesame")  # /docs stays open with a key set
    elsewhere = []

    def only_this_server(route):
        if route.request.url.startswith(server.url):
            return route.continue_()
        elsewhere.append(route.request.url)
        return route.abort()

    try:
        page.route("**/*", only_this_server)
        page.goto(f"{server.url}/docs")
        expect(page.locator(".opblock-summary-path", has_text="/predict").first).to_be_visible(timeout=60_000)
        expect(page.locator(".opblock-summary-path", has_text="/cases").first).to_be_visible()
        expect(page.get_by_text(f"{contract.title()} API")).to_be_visible()
        page.screenshot(path=SHOTS / "docs.png", full_page=False)
        assert elsewhere == [], elsewhere
    finally:
        server.stop()


def test_a_reviewer_judges_a_live_disagreement_in_the_edge_cases_tab(page, queue, monkeypatch):
    """The Live traffic section: a candidate's record in shadow, its disagreements in words; a logged-in reviewer says
    the served version is right, and the disagreement becomes a case in the review queue."""
    monkeypatch.setenv("TRIAGE_SHADOW", "cand")  # what main.py sets for a server with a candidate in shadow
    recorded_pairs("cand")
    demo = ui.build()
    try:
        reviewer_on_the_edge_cases_tab(page, demo)
        page.get_by_role("button", name="Show its live record").click()
        expect(page.get_by_text(f"in shadow: {PAIRS + 1} requests")).to_be_visible(timeout=60_000)
        page.get_by_label("Disagreement to judge").click()
        page.get_by_role("option").first.click()
        page.screenshot(path=SHOTS / "live-traffic.png", full_page=True)
        page.get_by_role("button", name="Judge: put it in the review queue").click()
        expect(page.get_by_text("waits in the review queue")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Disagreements judged: served right 1")).to_be_visible()
        expect(page.get_by_text("Review queue: 1 pending")).to_be_visible()  # the queue below follows
        ((queued,), _) = review.cases("pending")
        assert queued.case.source == edge_cases.CaseSource.shadow and queued.case.created_by == "ana"
        page.screenshot(path=SHOTS / "live-traffic-judged.png", full_page=True)
    finally:
        demo.close()
