"""The Gradio page for project owners, in reading order: a thin client of model.py and batch.py.

    python -m app.ui [--port 7861]          # the UI alone, for development
    python app/main.py                      # the UI and the HTTP API in one server

`build()` is the page: a title, then one function per tab, each laying out its components, then wiring its
listeners. A handler reads its inputs by component (`inputs={a, b}` hands it `data[a]`) and returns
`{component: value}`. A public endpoint takes its inputs in the order of the page (tests/test_ui.py calls them by
position); where clients' order differs from the page's, the listener says so and lists it. What a result looks like
is in app/render.py, the upload guards in app/uploads.py. Every control and panel is derived from the pipeline's
own schemas and trace: a new flag gets a control, a new step gets a panel, and nothing here changes.
"""

import argparse
import os
import secrets
import shutil
import typing
from enum import Enum
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no version check calling out to the network

import gradio as gr
import pandas as pd
from pydantic import BaseModel, ValidationError

import batch
import edge_cases
import gate
import model
import reporting
import review
import versions
from app.render import (
    api_examples,
    articles_table,
    at_a_glance,
    batch_headline,
    check_all,
    differences,
    filter_cases,
    flags_table,
    literal,
    orders_table,
    review_queue,
    step_panels,
    under_both,
)
from app.uploads import only_uploads, report_dir

TITLE = "Support-ticket triage"
INTRO = (
    "Routes an online shop's customer messages to the right team, links the order numbers they mention, "
    "and answers from the help centre when that is safe. Every step of the pipeline is shown below."
)
THEME = gr.themes.Soft(primary_hue="indigo")
CSS = ".step-panel .label-wrap span { font-family: ui-monospace, monospace; } footer { display: none !important; }"


def build(run=None, flags_schema: type[BaseModel] | None = None, api_url: str = "http://localhost:7860") -> gr.Blocks:
    """The Blocks app. `run` and `flags_schema` default to the pipeline's own (tests pass variants)."""
    run = run or (lambda ticket, flags, debug: model.run(ticket, flags, debug=debug))
    flags_schema = flags_schema or model.Flags
    with gr.Blocks(title=TITLE, delete_cache=(3600, 3600)) as demo:  # uploads and reports go after an hour: the disk never fills
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        triage_tab(run, flags_schema)
        compare_tab(run, flags_schema)
        batch_tab(flags_schema)
        cases_tab()
        api_tab(api_url, flags_schema)
    return demo


def triage_tab(run, flags_schema: type[BaseModel]) -> None:
    """One ticket: the answer, each step in its own panel, and flagging the case."""
    with gr.Tab("Triage"):
        with gr.Row():
            with gr.Column(scale=3):
                ticket = controls(model.Ticket)
                with gr.Accordion("Feature flags", open=False):
                    flags = controls(flags_schema)
                go = gr.Button("Triage", variant="primary")
                gr.Examples(examples(), inputs=[ticket["text"]], label="Example tickets")
            with gr.Column(scale=4):
                glance = gr.Markdown("### Triage a ticket to see the answer")
                probabilities = gr.Label(label="Category (class probabilities)", num_top_classes=4)
                reply = gr.Textbox(label="Reply", lines=5, interactive=False)
                articles = gr.Dataframe(
                    label="Help-centre articles",
                    interactive=False,
                    wrap=True,
                    headers=["id", "title", "category", "score"],
                    column_widths=["14%", "50%", "22%", "14%"],
                )
                orders = gr.Dataframe(label="Order numbers found", interactive=False, headers=["order number", "status"])
        gr.Markdown("## Step by step")
        trace = gr.State([])
        answer = gr.JSON(visible=False)

        @gr.render(inputs=trace)
        def _panels(steps):
            step_panels(steps)

        with gr.Accordion("Flag this case: the pipeline got it wrong, or must keep getting it right", open=False):
            expected = expected_controls()
            flag_go = gr.Button("Flag this case")
            flagged = gr.Markdown()

    def triage(data):
        try:
            result = run(values(ticket, data), values(flags, data), True)
        except ValidationError as error:
            raise gr.Error(model.error_message(error)) from None
        steps = [s.model_dump(mode="json") for s in result.trace]
        labels = next((s["details"].get("probabilities") for s in steps if s["step"] == "classify"), None)
        return {
            glance: at_a_glance(result),
            probabilities: labels or {result.category.value: result.confidence},
            reply: result.reply or "(no automatic reply: a person answers)",
            orders: orders_table(result),
            articles: articles_table([a.model_dump(mode="json") for a in result.articles]),
            trace: steps,
            answer: result.model_dump(mode="json", exclude={"trace"}),
        }

    def flag(data, request: gr.Request):
        return save_flagged(values(ticket, data), values(flags, data), values(expected, data), request)

    given = {*ticket.values(), *flags.values()}
    go.click(triage, given, [glance, probabilities, reply, orders, articles, trace, answer], api_name="triage")
    answer.change(lambda a: (a or {}).get("category"), answer, expected["category"], api_visibility="private")  # preset: the answer given
    flag_go.click(flag, given | set(expected.values()), flagged, api_name="flag_case")


def compare_tab(run, flags_schema: type[BaseModel]) -> None:
    """One ticket under two sets of flags, A and B, and flagging the case with either."""
    with gr.Tab("Compare") as tab:
        gr.Markdown(
            "The same ticket under two sets of flags, A and B, or on two versions (B on a candidate: `python model.py "
            "candidate`): what changes, field by field and step by step."
        )
        text = gr.Textbox(label="text", lines=3, placeholder="Type or paste a customer message")
        flags_a, flags_b = flag_sets(flags_schema, "Flags B", is_open=True)
        version_b = gr.Dropdown(  # a name that is no version's is refused by versions.folder, with a message
            ["served", *versions.listing()],
            value="served",
            label="B runs on",
            info="the served version, or a candidate version",
            allow_custom_value=True,
        )
        go = gr.Button("Compare", variant="primary")
        headline = gr.Markdown()
        fields = gr.Dataframe(label="Fields", interactive=False, wrap=True, column_widths=["14%", "38%", "38%", "10%"])
        steps = gr.Dataframe(label="Steps", interactive=False)
        with gr.Row():
            result_a, result_b = gr.JSON(label="A"), gr.JSON(label="B")
        with gr.Accordion("Flag this case, with the flags of A or B", open=False):
            variant = gr.Radio(["A", "B"], value="A", label="variant")
            expected = expected_controls()
            flag_go = gr.Button("Flag this case")
            flagged = gr.Markdown()

    def compare(data):
        on = data.get(version_b) or "served"
        try:
            a = run({"text": data[text]}, values(flags_a, data), True)
            if on == "served":
                b = run({"text": data[text]}, values(flags_b, data), True)
            else:
                b = gate.one_ticket(on, {"text": data[text]}, values(flags_b, data))
        except ValidationError as error:
            raise gr.Error(model.error_message(error)) from None
        except versions.VersionError as error:
            raise gr.Error(str(error)) from None
        by_field, by_step = differences(a, b)
        n_diff = int((by_field.differs != "").sum())
        sides = "A and B" if on == "served" else f"A (served) and B (version {on})"
        return {
            headline: f"**{n_diff} of {len(by_field)} fields differ** between {sides}; steps that differ are marked below.",
            fields: by_field,
            steps: by_step,
            result_a: a.model_dump(mode="json"),
            result_b: b.model_dump(mode="json"),
        }

    flag_inputs = [text, variant, *flags_a.values(), *flags_b.values(), *expected.values()]  # clients' order: the variant second

    def flag(request: gr.Request, *inputs):
        data = dict(zip(flag_inputs, inputs, strict=True))
        flags = values(flags_a if data[variant] == "A" else flags_b, data)
        return save_flagged({"text": data[text]}, flags, values(expected, data), request)

    go.click(
        compare, {text, *flags_a.values(), *flags_b.values(), version_b}, [headline, fields, steps, result_a, result_b], api_name="compare"
    )
    tab.select(lambda: gr.Dropdown(choices=["served", *versions.listing()]), None, version_b, api_visibility="private")
    result_a.change(lambda a: (a or {}).get("category"), result_a, expected["category"], api_visibility="private")
    flag_go.click(flag, flag_inputs, flagged, api_name="flag_compare_case")


def batch_tab(flags_schema: type[BaseModel]) -> None:
    """A CSV of tickets scored into report files, optionally against variant B or a baseline."""
    with gr.Tab("Batch"):
        gr.Markdown("Score a CSV of tickets (a `text` column; an `expected_category` column adds accuracy and a confusion matrix).")
        with gr.Row():
            upload = only_uploads(gr.File(label="CSV file", file_types=[".csv"], type="filepath"))
            baseline = only_uploads(
                gr.File(label="Baseline (optional): an earlier scored CSV of the same input", file_types=[".csv"], type="filepath")
            )
            with gr.Column():
                use_eval = gr.Checkbox(label="Use the bundled evaluation set (data/eval.csv) instead", value=False)
                with_compare = gr.Checkbox(label="Also score variant B and compare", value=False)
        flags_a, flags_b = flag_sets(flags_schema, "Flags B (used when comparing)", is_open=False)
        go = gr.Button("Run batch report", variant="primary")
        headline = gr.Markdown()
        files = gr.File(label="Report files (CSV, HTML, JSON)", file_count="multiple", interactive=False)
        plots = [gr.Plot(label=label) for label in ("Categories", "Confidence", "Confusion matrix")]
        with gr.Row():
            save_wrong = gr.Button("Save the misclassified rows as edge cases")
            saved_wrong = gr.Markdown()
        summary = gr.JSON(label="Summary")
        last_report = gr.State(None)  # the scored CSV's path lives on the server, never sent by a client

    report_inputs = [upload, use_eval, with_compare, baseline, *flags_a.values(), *flags_b.values()]  # clients' order: baseline fourth
    report_outputs = [headline, *plots, files, summary, last_report]

    def report(*inputs, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        data = dict(zip(report_inputs, inputs, strict=True))
        flags = values(flags_a, data)
        if not data[use_eval] and not data[upload]:  # a message for the person, not an error for the server's log
            message = "Upload a CSV file with a 'text' column, or tick 'Use the bundled evaluation set'."
            gr.Warning(message)
            return {headline: message} | dict.fromkeys(report_outputs[1:])  # and the last report's outputs cleared
        source, base = model.DATA_DIR / "eval.csv" if data[use_eval] else data[upload], data[baseline]
        out_dir = report_dir()
        try:
            scored = batch.report(
                source,
                out_dir / f"{Path(source).stem}-report.csv",
                flags=flags,
                compare=values(flags_b, data) if data[with_compare] else None,
                progress=True,
                baseline=base,
            )
        except batch.BatchInputError as error:
            shutil.rmtree(out_dir, ignore_errors=True)
            message = str(error).replace(str(source), Path(source).name)
            raise gr.Error(message.replace(str(base), Path(base).name) if base else message) from None
        except ValidationError as error:
            raise gr.Error(model.error_message(error)) from None
        paths = [scored["outputs"][k] for k in (".csv", ".html", ".json")]
        figures = reporting.figures(scored) + [None] * 3  # a plot without its figure is emptied
        return {
            headline: batch_headline(scored),
            **dict(zip(plots, figures[:3], strict=True)),
            files: paths,
            summary: scored,
            last_report: (paths[0], scored, flags),  # stays on the server
        }

    def save_misclassified(last, request: gr.Request):
        if last is None or not Path(last[0]).exists():
            return "Run a report on a labelled CSV first (an `expected_category` column)."
        path, scored, flags = last
        who = who_flags(request)
        try:
            saved = batch.save_misclassified(path, scored, model.Flags.model_validate(flags), **who)
        except (batch.BatchInputError, ValidationError, review.QueueUnavailable) as error:
            raise gr.Error(str(error)) from None
        new = sum(is_new for _, is_new in saved)
        return f"{new} misclassified rows flagged for review ({len(saved) - new} were already flagged); see the Edge cases tab."

    go.click(report, report_inputs, report_outputs, api_name="batch_report")
    save_wrong.click(save_misclassified, last_report, saved_wrong, api_name="save_misclassified")


def cases_tab() -> None:
    """The regression suite run against the pipeline now, filtered by verdict and source; then the review queue, where
    flags wait until a logged-in reviewer accepts them into the suite or rejects them."""
    with gr.Tab("Edge cases") as tab:
        gr.Markdown(
            "The **regression suite** (`data/edge_cases.csv`, reviewed in git like code): every accepted case run against the "
            "pipeline as it is now. A *fixed* case the pipeline now gets wrong is **newly broken**: a regression."
        )
        with gr.Row():
            verdict = gr.Dropdown(["all", "broken", "newly fixed", "open", "fixed", "training"], value="all", label="verdict")
            source = gr.Dropdown(["all", *[s.value for s in model.CaseSource]], value="all", label="source")
            go = gr.Button("Run every case", variant="primary")
        headline = gr.Markdown()
        rows = gr.State([])
        widths = ["8%", "30%", "12%", "10%", "12%", "6%", "6%", "7%", "9%"]  # every column on the screen
        table = gr.Dataframe(interactive=False, wrap=True, label="Cases", column_widths=widths)
        with gr.Row():
            other = gr.Dropdown(  # a name that is no version's is refused by versions.folder, with a message
                ["none", *versions.listing()], value="none", label="each case's verdict on a candidate too", allow_custom_value=True
            )
            go_both = gr.Button("Run every case on both")
        both = gr.Dataframe(
            interactive=False, wrap=True, label="Under both versions", column_widths=["40%", "14%", "12%", "12%", "12%", "10%"]
        )

        gr.Markdown(
            "### Review queue\nCases flagged from the Triage, Compare and Batch tabs, the API (`POST /cases`) or a file wait "
            "here: a flag is not a test until a reviewer accepts it into the suite (with the answer they set) or rejects it."
        )
        with gr.Row():
            state = gr.Dropdown(list(review.STATES), value="pending", label="state")
            show = gr.Button("Show the queue")
        queue_headline = gr.Markdown()
        queue_widths = ["7%", "31%", "12%", "9%", "5%", "6%", "7%", "9%", "14%"]
        queue = gr.Dataframe(interactive=False, wrap=True, label="Review queue", column_widths=queue_widths)
        with gr.Group(visible=False) as reviewing:  # shown to a logged-in user only; the handler checks again
            with gr.Row():
                chosen = gr.Dropdown([], multiselect=True, label="pending cases to decide on")
                answer = gr.Dropdown(["as flagged", *[c.value for c in model.Category]], value="as flagged", label="expected category")
                review_key = gr.Textbox(type="password", label="reviewer key", info="only where the server sets TRIAGE_REVIEW_KEY")
            with gr.Row():
                accept = gr.Button("Accept into the suite", variant="primary")
                train = gr.Button("Accept as a training example")
                reject = gr.Button("Reject", variant="stop")
            decided = gr.Markdown()

    def run_cases(data):
        counts, every = check_all()
        return {headline: counts, rows: every, table: filter_cases(every, data[verdict], data[source])}

    def refilter(data):
        return filter_cases(data[rows], data[verdict], data[source])

    def run_both(data):
        if data[other] == "none":
            raise gr.Error("Choose a candidate version first (python model.py candidate makes one).")
        counts, every = check_all()
        return {
            headline: counts,
            rows: every,
            table: filter_cases(every, data[verdict], data[source]),
            both: under_both(every, data[other]),
        }

    def show_queue(data, request: gr.Request):
        said, listed = review_queue(data[state])
        pending = listed if data[state] == "pending" else review_queue("pending")[1]
        choices = [(f"{i} · {t[:60]}", i) for i, t in zip(pending["id"], pending["text"], strict=True)]
        return {
            queue_headline: said,
            queue: listed,
            reviewing: gr.Group(visible=getattr(request, "username", None) is not None),
            chosen: gr.Dropdown(choices=choices, value=[]),
        }

    def decide(data, request: gr.Request, accepting: bool, training: bool = False):
        reviewer = getattr(request, "username", None)
        key = os.environ.get("TRIAGE_REVIEW_KEY")
        if reviewer is None or (key and not secrets.compare_digest(data[review_key] or "", key)):
            raise gr.Error("Reviewing needs a logged-in reviewer (and the reviewer key, where the server sets one).")
        if not data[chosen]:
            raise gr.Error("Choose the pending cases to decide on first.")
        expected = None if data[answer] == "as flagged" else {"category": data[answer]}
        try:
            if accepting:
                accepted = review.accept(data[chosen], reviewer, expected=expected, train=training)
                said = f"{len(accepted)} cases accepted into the suite{' as training examples' if training else ''}."
            else:
                said = f"{review.reject(data[chosen], reviewer)} cases rejected."
        except (review.QueueUnavailable, edge_cases.StoreUnavailable) as error:
            raise gr.Error(str(error)) from None
        return {decided: said, **show_queue(data, request)}

    def accept_cases(data, request: gr.Request):
        return decide(data, request, accepting=True)

    def train_cases(data, request: gr.Request):
        return decide(data, request, accepting=True, training=True)

    def reject_cases(data, request: gr.Request):
        return decide(data, request, accepting=False)

    go.click(run_cases, {verdict, source}, [headline, rows, table], api_name="edge_cases")
    tab.select(run_cases, {verdict, source}, [headline, rows, table], api_visibility="private")
    for control in (verdict, source):
        control.change(refilter, {rows, verdict, source}, table, api_visibility="private")
    go_both.click(run_both, {verdict, source, other}, [headline, rows, table, both], api_name="edge_cases_on_both")
    tab.select(lambda: gr.Dropdown(choices=["none", *versions.listing()]), None, other, api_visibility="private")
    queue_outputs = [queue_headline, queue, reviewing, chosen]
    show.click(show_queue, {state}, queue_outputs, api_name="review_queue")
    for event in (state.change, tab.select):
        event(show_queue, {state}, queue_outputs, api_visibility="private")
    deciding = {state, chosen, answer, review_key}
    accept.click(accept_cases, deciding, [decided, *queue_outputs], api_visibility="private")  # the handler checks the login
    train.click(train_cases, deciding, [decided, *queue_outputs], api_visibility="private")
    reject.click(reject_cases, deciding, [decided, *queue_outputs], api_visibility="private")


def api_tab(url: str, flags_schema: type[BaseModel]) -> None:
    """How to call the same pipeline over HTTP."""
    with gr.Tab("API"):
        curl, python = api_examples(url)
        gr.Markdown(
            f"The same pipeline is served over HTTP by the one server (`python app/main.py`). "
            f"Interactive documentation: [{url}/docs]({url}/docs) · schema: `{url}/openapi.json` · "
            f"readiness: `{url}/health` · settings: `{url}/info`."
        )
        gr.Code(curl, language="shell", label="curl")
        gr.Code(python, language="python", label="Python (requests)")
        gr.Markdown("Flags, all optional:")
        gr.Dataframe(flags_table(flags_schema), interactive=False, wrap=True)


# ---------------------------------------------------------------------------------------------
# Parts of the page: controls derived from pydantic fields, the expected answer of a case
# ---------------------------------------------------------------------------------------------
def control(name: str, field) -> gr.components.Component:
    """A Gradio input for one pydantic field: checkbox, slider, number, dropdown or textbox."""
    label = field.description or name
    annotation, default = field.annotation, field.default
    bounds = {type(m).__name__: m for m in field.metadata}
    if annotation is bool:
        return gr.Checkbox(value=default, label=name, info=label)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return gr.Dropdown(choices=[e.value for e in annotation], value=default.value, label=name, info=label)
    if annotation in (int, float):
        low, high = getattr(bounds.get("Ge"), "ge", None), getattr(bounds.get("Le"), "le", None)
        if low is not None and high is not None:
            step = 1 if annotation is int else 0.05
            return gr.Slider(minimum=low, maximum=high, step=step, value=default, label=name, info=label)
        return gr.Number(value=default, label=name, info=label, precision=0 if annotation is int else None)
    if typing.get_origin(annotation) is typing.Annotated or annotation is str:
        return gr.Textbox(label=name, info=label, lines=4, placeholder="Type or paste a customer message")
    raise TypeError(f"no control for field {name!r} of type {annotation!r}")


def controls(schema: type[BaseModel]) -> dict[str, gr.components.Component]:
    return {name: control(name, field) for name, field in schema.model_fields.items()}


def values(components: dict[str, gr.components.Component], data: dict) -> dict:
    """What a handler's `data` holds for `components` (from `controls` or `expected_controls`), by name."""
    return {name: data[component] for name, component in components.items()}


def flag_sets(schema: type[BaseModel], title_b: str, is_open: bool) -> tuple[dict, dict]:
    """Two sets of flag controls side by side, A and B, for comparing variants."""
    with gr.Row():
        with gr.Column(), gr.Accordion("Flags A", open=is_open):
            a = controls(schema)
        with gr.Column(), gr.Accordion(title_b, open=is_open):
            b = controls(schema)
    return a, b


def examples(n_per_category: int = 1) -> list[str]:
    frame = pd.read_csv(model.DATA_DIR / "eval.csv")
    return frame.groupby("expected_category").head(n_per_category).text.tolist()


EITHER, ANY = "either", "any"


def expected_controls() -> dict[str, gr.components.Component]:
    """The expected answer of a case (model.Expected): category, and optionally needs_human and urgency; a note."""
    with gr.Row():
        category = gr.Dropdown([c.value for c in model.Category], value=None, label="expected category")
        needs_human = gr.Dropdown([EITHER, "yes", "no"], value=EITHER, label="a person must answer")
        urgency = gr.Dropdown([ANY, *[u.value for u in model.Urgency]], value=ANY, label="expected urgency")
    note = gr.Textbox(label="note", placeholder="why this case matters", lines=1)
    keep_pii = gr.Checkbox(value=False, label="save the text as written (by default e-mail, phone and card numbers are masked first)")
    return {"category": category, "needs_human": needs_human, "urgency": urgency, "note": note, "keep_pii": keep_pii}


def save_flagged(ticket: dict, flags: dict, expected: dict, request: gr.Request) -> str:
    """Save one case flagged on the Triage or Compare tab (`expected`: the values of `expected_controls`); says what
    was saved."""
    if not expected["category"]:
        raise gr.Error("Choose the expected category first.")
    answer = {
        "category": expected["category"],
        "needs_human": {"yes": True, "no": False}.get(expected["needs_human"]),
        "urgency": None if expected["urgency"] == ANY else expected["urgency"],
    }
    case = {
        "ticket": ticket,
        "flags": flags,
        "expected": answer,
        "note": expected["note"] or "",
        "source": "ui",
        "keep_pii": bool(expected["keep_pii"]),
    }
    try:
        ((saved, new),) = review.flag([case], **who_flags(request))
    except ValidationError as error:
        raise gr.Error(model.error_message(error)) from None
    except review.QueueUnavailable as error:  # too many flags, a full queue, a database that does not answer: nothing saved
        raise gr.Error(str(error)) from None
    if saved.status == model.CaseStatus.open:
        state = f"the pipeline answers {saved.answer['category']} today"
    else:
        state = "the pipeline gets it right today; accepted, a change that breaks it is a regression"
    said = "Flagged" if new else "Already flagged"
    return f"{said} as case `{saved.id}`: it waits for a reviewer ({state}). Text kept: {literal(saved.ticket.text[:120])}"


def who_flags(request: gr.Request | None) -> dict:
    """Who is flagging, for the review queue: a logged-in user (the app has a key) is trusted; anyone else is held to the
    queue's rate limit and cap, by address."""
    user = getattr(request, "username", None)
    client = getattr(getattr(request, "client", None), "host", None)
    return {"created_by": user, "client": client, "trusted": user is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the Gradio app alone (development).")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7861")))
    args = parser.parse_args()
    build().launch(server_name=args.host, server_port=args.port, theme=THEME, css=CSS)


if __name__ == "__main__":
    main()
