"""The Gradio page for project owners, in reading order: a thin client of model.py and batch.py.

    python -m app.ui [--port 7861]          # the UI alone, for development
    python app/main.py                      # the UI and the HTTP API in one server

`build()` is the page: a title, then one function per tab, each laying out its components, then wiring its
listeners. A public endpoint takes its inputs by name (`inputs_kwargs={"text": box, ...}` hands the handler
`data["text"]`), and those names are what gradio_client sees: a ticket's fields and the flags by their schema names
(model.Ticket, model.Flags), variant B's flags as `b_<flag>`, an expected answer as `expected_<field>`. Positional
calls still work, in the order listed. A handler returns `{component: value}`. What a result looks like is in
app/render.py, the upload guards in app/uploads.py. Every control and panel is derived from the pipeline's own
schemas and trace: a new flag gets a control (and a parameter), a new step gets a panel, and nothing here changes.
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
import model
from app.render import (
    QUEUE_COLUMNS,
    SUITE_COLUMNS,
    answer_table,
    api_examples,
    articles_table,
    at_a_glance,
    batch_headline,
    check_all,
    client_example,
    differences,
    filter_cases,
    flags_table,
    gate_report,
    label_of,
    literal,
    orders_table,
    review_queue,
    step_panels,
    under_both,
)
from app.uploads import only_uploads, report_dir
from building import builder, versions
from loop import edge_cases, gate, review
from loop.commands import counted
from reporting import reports

TITLE = "Support-ticket triage"
INTRO = (
    "Routes an online shop's customer messages to the right team, links the order numbers they mention, "
    "and answers from the help centre when that is safe."
)
THEME = gr.themes.Soft(primary_hue="indigo")
CSS = """
.step-panel .label-wrap span { font-family: ui-monospace, monospace; }
footer { display: none !important; }
.cases td, .cases th { word-break: normal !important; overflow-wrap: normal !important; }
.legend, .confirmation { font-size: var(--text-sm); }
"""


def pipeline(ticket: dict, flags: dict, debug: bool) -> model.Triage:
    builder.ready()  # loaded in this process on first use
    return model.run(ticket, flags, debug=debug)


def build(run=None, flags_schema: type[BaseModel] | None = None, api_url: str = "http://localhost:7860") -> gr.Blocks:
    """The Blocks app. `run` and `flags_schema` default to the pipeline's own (tests pass variants)."""
    run = run or pipeline
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
        gr.Markdown("One ticket through the pipeline: the answer, then every step in its own panel.")
        with gr.Row():
            with gr.Column(scale=3):
                ticket = ticket_controls()
                with gr.Accordion("Feature flags", open=False):
                    flags = controls(flags_schema)
                go = gr.Button("Triage", variant="primary")
                gr.Examples(examples(), inputs=[ticket["text"]], label="Example tickets")
            with gr.Column(scale=4):
                glance = gr.Markdown("### Triage a ticket to see the answer")
                fields = gr.Dataframe(
                    label="The answer, field by field",
                    interactive=False,
                    wrap=True,
                    headers=["field", "value"],  # before the first answer too, never "1, 2"
                    column_widths=["30%", "70%"],
                )
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
            flag_go, flagged = flag_button()

    def triage(**data):
        try:
            result = run(values(ticket, data), values(flags, data), True)
        except ValidationError as error:
            raise gr.Error(model.error_message(error)) from None
        steps = [s.model_dump(mode="json") for s in result.trace]
        step, key = model.PROBABILITIES
        labels = next((s["details"].get(key) for s in steps if s["step"] == step), None)
        return {
            glance: at_a_glance(result),
            fields: answer_table(result),
            probabilities: labels or {result.category.value: result.confidence},
            reply: result.reply or "(no automatic reply: a person answers)",
            orders: orders_table(result),
            articles: articles_table([a.model_dump(mode="json") for a in result.articles]),
            trace: steps,
            answer: result.model_dump(mode="json", exclude={"trace"}),
        }

    def flag(request: gr.Request, **data):
        return save_flagged(values(ticket, data), values(flags, data), data, request)

    given = {**ticket, **flags}
    outputs = [glance, fields, probabilities, reply, orders, articles, trace, answer]
    go.click(triage, inputs_kwargs=given, outputs=outputs, api_name="triage")
    label = model.expected_column()  # the expected answer starts as the pipeline's
    answer.change(lambda a: (a or {}).get(model.LABEL), answer, expected[label], api_visibility="private")
    flag_go.click(flag, inputs_kwargs=given | expected, outputs=flagged, api_name="flag_case")


def compare_tab(run, flags_schema: type[BaseModel]) -> None:
    """One ticket under two sets of flags, A and B, and flagging the case with either."""
    with gr.Tab("Compare") as tab:
        gr.Markdown(
            "The same ticket under two sets of flags, A and B, or on two versions (B on a candidate: `.venv/bin/python "
            "-m loop candidate`): what changes, field by field and step by step. B starts as A without automatic replies."
        )
        ticket = ticket_controls()
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
        with gr.Column(visible=False) as compared:  # shown once there is something to compare: no placeholder headers
            fields = gr.Dataframe(label="Fields", interactive=False, wrap=True, column_widths=["14%", "38%", "38%", "10%"])
            steps = gr.Dataframe(label="Steps", interactive=False)
        with gr.Accordion("Both answers in full (JSON)", open=False), gr.Row():
            result_a, result_b = gr.JSON(label="A"), gr.JSON(label="B")
        with gr.Accordion("Flag this case, with the flags of A or B", open=False):
            variant = gr.Radio(["A", "B"], value="A", label="Variant", info="whose flags the case keeps")
            expected = expected_controls()
            flag_go, flagged = flag_button()

    def compare(**data):
        on, given = data["b_version"] or "served", values(ticket, data)
        try:
            a, flags = run(given, values(flags_a, data), True), values(flags_b, data, "b_")
            b = run(given, flags, True) if on == "served" else gate.one_ticket(on, given, flags)
        except ValidationError as error:
            raise gr.Error(model.error_message(error)) from None
        except versions.VersionError as error:
            raise gr.Error(str(error)) from None
        by_field, by_step = differences(a, b)
        n_diff = int((by_field.differs != "").sum())
        sides = "A and B" if on == "served" else f"A (served) and B (version {on})"
        same = (
            " (B's flags are A's: change one of B's to compare variants)"
            if on == "served" and values(flags_a, data) == values(flags_b, data, "b_")
            else ""
        )
        return {
            headline: f"**{n_diff} of {len(by_field)} fields differ** between {sides}{same}; steps that differ are marked below.",
            fields: by_field,
            steps: by_step,
            compared: gr.Column(visible=True),
            result_a: a.model_dump(mode="json"),
            result_b: b.model_dump(mode="json"),
        }

    def flag(request: gr.Request, **data):
        flags = values(flags_a, data) if data["variant"] == "A" else values(flags_b, data, "b_")
        return save_flagged(values(ticket, data), flags, data, request)

    both = {**ticket, **flags_a, **prefixed(flags_b, "b_")}
    go.click(
        compare,
        inputs_kwargs=both | {"b_version": version_b},
        outputs=[headline, fields, steps, result_a, result_b, compared],
        api_name="compare",
    )
    tab.select(lambda: gr.Dropdown(choices=["served", *versions.listing()]), None, version_b, api_visibility="private")
    result_a.change(lambda a: (a or {}).get(model.LABEL), result_a, expected[model.expected_column()], api_visibility="private")
    flag_inputs = {**ticket, "variant": variant, **flags_a, **prefixed(flags_b, "b_"), **expected}
    flag_go.click(flag, inputs_kwargs=flag_inputs, outputs=flagged, api_name="flag_compare_case")


def batch_tab(flags_schema: type[BaseModel]) -> None:
    """A CSV of tickets scored into report files, optionally against variant B or a baseline."""
    with gr.Tab("Batch"):
        others = ", ".join(f"`{name}`" for name in model.Ticket.model_fields if name != "text")
        gr.Markdown(
            f"Score a CSV of tickets: a `text` column, and optionally the ticket's other fields by name ({others}; an empty "
            f"cell takes the default). An `{model.expected_column()}` column adds accuracy and a confusion matrix."
        )
        with gr.Row():
            upload = only_uploads(gr.File(label="CSV file", file_types=[".csv"], type="filepath"))
            baseline = only_uploads(
                gr.File(label="Baseline (optional): an earlier scored CSV of the same input", file_types=[".csv"], type="filepath")
            )
            with gr.Column():
                use_eval = gr.Checkbox(label="Use the bundled evaluation set (data/eval.csv) instead", value=False)
                with_compare = gr.Checkbox(
                    label="Also score variant B and compare", value=False, info="B starts as A without automatic replies"
                )
        flags_a, flags_b = flag_sets(flags_schema, "Flags B (used when comparing)", is_open=False)
        go = gr.Button("Run batch report", variant="primary")
        headline = gr.Markdown()
        files = gr.File(label="Report files (CSV, HTML, JSON)", file_count="multiple", interactive=False)
        plots = [gr.Plot(label=label) for label in ("Categories", "Confidence", "Confusion matrix")]
        with gr.Row():
            save_wrong = gr.Button("Save the misclassified rows as edge cases")
            saved_wrong = gr.Markdown()
        with gr.Accordion("Summary (JSON)", open=False):
            summary = gr.JSON(label="Summary")
        last_report = gr.State(None)  # the scored CSV's path lives on the server, never sent by a client

    report_outputs = [headline, *plots, files, summary, last_report]

    def report(file=None, baseline=None, progress=gr.Progress(track_tqdm=True), **data):  # noqa: B008  (files: optional for clients)
        flags = values(flags_a, data)
        if not data["use_eval"] and not file:  # a message for the person where the eye is, not an error for the server's log
            message = "Upload a CSV file with a 'text' column, or tick 'Use the bundled evaluation set'."
            return {headline: message} | dict.fromkeys(report_outputs[1:])  # and the last report's outputs cleared
        source = model.DATA_DIR / "eval.csv" if data["use_eval"] else file
        out_dir = report_dir()
        try:
            scored = batch.report(
                source,
                out_dir / f"{Path(source).stem}-report.csv",
                flags=flags,
                compare=values(flags_b, data, "b_") if data["compare"] else None,
                progress=True,
                baseline=baseline,
            )
        except batch.BatchInputError as error:
            shutil.rmtree(out_dir, ignore_errors=True)
            message = str(error).replace(str(source), Path(source).name)
            raise gr.Error(message.replace(str(baseline), Path(baseline).name) if baseline else message) from None
        except ValidationError as error:
            raise gr.Error(model.error_message(error)) from None
        paths = [scored["outputs"][k] for k in (".csv", ".html", ".json")]
        figures = reports.figures(scored) + [None] * 3  # a plot without its figure is emptied
        return {
            headline: batch_headline(scored),
            **dict(zip(plots, figures[:3], strict=True)),
            files: paths,
            summary: scored | {"outputs": {k: Path(v).name for k, v in scored["outputs"].items()}},  # names, never server paths
            last_report: (paths[0], scored, flags),  # stays on the server
        }

    def save_misclassified(last, request: gr.Request):
        if last is None or not Path(last[0]).exists():
            return f"Run a report on a labelled CSV first (an `{model.expected_column()}` column)."
        path, scored, flags = last
        who = who_flags(request)
        try:
            saved = batch.save_misclassified(path, scored, model.Flags.model_validate(flags), **who)
        except (batch.BatchInputError, ValidationError, review.QueueUnavailable) as error:
            raise gr.Error(str(error)) from None
        new = sum(is_new for _, is_new in saved)
        return f"{new} misclassified rows flagged for review ({len(saved) - new} were already flagged); see the Edge cases tab."

    report_inputs = {"file": upload, "use_eval": use_eval, "compare": with_compare, "baseline": baseline}
    go.click(report, inputs_kwargs=report_inputs | flags_a | prefixed(flags_b, "b_"), outputs=report_outputs, api_name="batch_report")
    save_wrong.click(save_misclassified, last_report, saved_wrong, api_name="save_misclassified")


CASE_COLUMNS = {  # column: what it says (the Edge cases tab's legend)
    "verdict": "what the pipeline does with the case now: fixed, open (still wrong), newly broken, newly fixed, training",
    "status": "what the suite file records (fixed or open) until someone marks it again",
    "category when flagged": "the pipeline's answer when the case was flagged",
}


def cases_tab() -> None:
    """The regression suite run against the pipeline now, filtered by verdict and source; then the review queue, where
    flags wait until a logged-in reviewer accepts them into the suite or rejects them."""
    with gr.Tab("Edge cases") as tab:
        gr.Markdown(
            "The **regression suite** (`data/edge_cases.csv`, reviewed in git like code): every accepted case run against the "
            "pipeline as it is now. A *fixed* case the pipeline now gets wrong is **newly broken**: a regression."
        )
        with gr.Row():
            verdict = gr.Dropdown(
                ["all", "broken", "newly fixed", "open", "fixed", "training"],
                value="all",
                label="Verdict",
                info="what the pipeline does with a case now",
            )
            sources = ["all", *[s.value for s in model.CaseSource]]
            source = gr.Dropdown(sources, value="all", label="Source", info="where the case was flagged")
            go = gr.Button("Run every case", variant="primary")
        headline = gr.Markdown()
        rows = gr.State([])
        widths = ["8%", "24%", "12%", "12%", "12%", "6%", "6%", "10%", "10%"]  # at 1400 px: ids and categories whole
        table = gr.Dataframe(
            headers=SUITE_COLUMNS, interactive=False, wrap=True, label="Cases", column_widths=widths, max_height=900, elem_classes=["cases"]
        )
        gr.Markdown(" · ".join(f"**{k}**: {v}" for k, v in CASE_COLUMNS.items()), elem_classes=["legend"])
        with gr.Row(visible=False) as marking:  # shown to a logged-in user only; the handler checks again
            mark_key = gr.Textbox(type="password", label="Reviewer key", info="only where the server sets TRIAGE_REVIEW_KEY")
            mark = gr.Button("Mark the newly fixed cases fixed", variant="primary")
            marked = gr.Markdown(elem_classes=["confirmation"])
        with gr.Row():
            other = gr.Dropdown(  # a name that is no version's is refused by versions.folder, with a message
                ["none", *versions.listing()],
                value="none",
                label="Each case's verdict on a candidate too",
                info="a candidate version to run every case on too",
                allow_custom_value=True,
            )
            go_both = gr.Button("Run every case on both")
            go_gate = gr.Button("Its gate report")
        gate_said = gr.Markdown()
        with gr.Column(visible=False) as shown_gate:
            gate_changed = gr.Dataframe(
                interactive=False,
                wrap=True,
                label="Tickets whose answer the candidate changes",
                column_widths=["9%", "5%", "44%", "12%", "11%", "11%", "8%"],
                max_height=600,
            )
        with gr.Column(visible=False) as shown_both:  # no placeholder headers before a run
            both = gr.Dataframe(
                interactive=False,
                wrap=True,
                label="Under both versions",
                column_widths=["40%", "14%", "12%", "12%", "12%", "10%"],
                max_height=900,
            )

        gr.Markdown(
            "### Review queue\nCases flagged from the Triage, Compare and Batch tabs, the API (`POST /cases`) or a file wait "
            "here: a flag is not a test until a reviewer accepts it into the suite (with the answer they set) or rejects it."
        )
        with gr.Row():
            state = gr.Dropdown(list(review.STATES), value="pending", label="State", info="which cases of the queue to show")
            show = gr.Button("Show the queue")
        queue_headline = gr.Markdown()
        queue_widths = ["7%", "26%", "12%", "12%", "5%", "6%", "7%", "10%", "15%"]
        queue = gr.Dataframe(
            headers=QUEUE_COLUMNS,
            interactive=False,
            wrap=True,
            label="Review queue",
            column_widths=queue_widths,
            max_height=900,
            elem_classes=["cases"],
        )
        with gr.Group(visible=False) as reviewing:  # shown to a logged-in user only; the handler checks again
            with gr.Row():
                chosen = gr.Dropdown([], multiselect=True, label="Pending cases to decide on")
                answer = gr.Dropdown([("as flagged", "as flagged"), *words(model.Category)], value="as flagged", label="Expected category")
                review_key = gr.Textbox(type="password", label="Reviewer key", info="only where the server sets TRIAGE_REVIEW_KEY")
            with gr.Row():
                accept = gr.Button("Accept into the suite", variant="primary")
                train = gr.Button("Accept as a training example")
                reject = gr.Button("Reject", variant="stop")
            decided = gr.Markdown()

    def run_cases(verdict, source, request: gr.Request):
        counts, every = check_all()
        return {
            headline: counts,
            rows: every,
            table: filter_cases(every, verdict, source),
            marking: gr.Row(visible=reviewer_of(request) is not None),
        }

    def refilter(data):
        return filter_cases(data[rows], data[verdict], data[source])

    def run_both(verdict, source, version, request: gr.Request):
        if version == "none":
            raise gr.Error("Choose a candidate version first (python -m loop candidate makes one).")
        listed = run_cases(verdict, source, request)
        return listed | {both: under_both(listed[rows], version), shown_both: gr.Column(visible=True)}

    def show_gate(version):
        said, changed = gate_report(version)
        return {gate_said: said, gate_changed: changed, shown_gate: gr.Column(visible=True)}

    def show_queue(state, request: gr.Request):
        said, listed = review_queue(state)
        pending = listed if state == "pending" else review_queue("pending")[1]
        choices = [(f"{i} · {t[:60]}", i) for i, t in zip(pending["id"], pending["text"], strict=True)]
        return {
            queue_headline: said,
            queue: listed,
            reviewing: gr.Group(visible=reviewer_of(request) is not None),
            chosen: gr.Dropdown(choices=choices, value=[]),
        }

    def reviewer(request: gr.Request, key: str | None) -> str:
        """The logged-in reviewer, when the reviewer key (where the server sets one) is right; else an error."""
        name, wanted = reviewer_of(request), os.environ.get("TRIAGE_REVIEW_KEY")
        if name is None or (wanted and not secrets.compare_digest(key or "", wanted)):
            raise gr.Error("Reviewing needs a logged-in reviewer (and the reviewer key, where the server sets one).")
        return name

    def decide(data, request: gr.Request, accepting: bool, training: bool = False):
        who = reviewer(request, data[review_key])
        if not data[chosen]:
            raise gr.Error("Choose the pending cases to decide on first.")
        expected = None if data[answer] == "as flagged" else {"category": data[answer]}
        try:
            if accepting:
                accepted = review.accept(data[chosen], who, expected=expected, train=training)
                said = f"{counted(len(accepted))} accepted into the suite{' as training examples' if training else ''}."
            else:
                said = f"{counted(review.reject(data[chosen], who))} rejected."
        except (review.QueueUnavailable, edge_cases.StoreUnavailable) as error:
            raise gr.Error(str(error)) from None
        return {decided: said, **show_queue(data[state], request)}

    def accept_cases(data, request: gr.Request):
        return decide(data, request, accepting=True)

    def train_cases(data, request: gr.Request):
        return decide(data, request, accepting=True, training=True)

    def reject_cases(data, request: gr.Request):
        return decide(data, request, accepting=False)

    def mark_fixed(data, request: gr.Request):
        """`cases fix` as a button: only the cases the pipeline gets right now (verdict newly fixed) are marked."""
        reviewer(request, data[mark_key])
        _, every = check_all()
        ids = [r["id"] for r in every if r["verdict"] == "newly fixed"]
        try:
            n = edge_cases.set_case_status(ids, model.CaseStatus.fixed) if ids else 0
        except edge_cases.StoreUnavailable as error:
            raise gr.Error(str(error)) from None
        return {
            marked: f"{counted(n)} marked fixed." if n else "No newly fixed case to mark.",
            **run_cases(data[verdict], data[source], request),
        }

    listing = [headline, rows, table, marking]
    go.click(run_cases, inputs_kwargs={"verdict": verdict, "source": source}, outputs=listing, api_name="edge_cases")
    tab.select(run_cases, [verdict, source], listing, api_visibility="private")
    for control_ in (verdict, source):
        control_.change(refilter, {rows, verdict, source}, table, api_visibility="private")
    both_inputs = {"verdict": verdict, "source": source, "version": other}
    go_both.click(run_both, inputs_kwargs=both_inputs, outputs=[*listing, both, shown_both], api_name="edge_cases_on_both")
    go_gate.click(show_gate, inputs_kwargs={"version": other}, outputs=[gate_said, gate_changed, shown_gate], api_name="gate_report")
    tab.select(lambda: gr.Dropdown(choices=["none", *versions.listing()]), None, other, api_visibility="private")
    queue_outputs = [queue_headline, queue, reviewing, chosen]
    show.click(show_queue, inputs_kwargs={"state": state}, outputs=queue_outputs, api_name="review_queue")
    for event in (state.change, tab.select):
        event(show_queue, [state], queue_outputs, api_visibility="private")
    deciding = {state, chosen, answer, review_key}
    accept.click(accept_cases, deciding, [decided, *queue_outputs], api_visibility="private")  # the handler checks the login
    train.click(train_cases, deciding, [decided, *queue_outputs], api_visibility="private")
    reject.click(reject_cases, deciding, [decided, *queue_outputs], api_visibility="private")
    mark.click(mark_fixed, {mark_key, verdict, source}, [marked, *listing], api_visibility="private")


def api_tab(url: str, flags_schema: type[BaseModel]) -> None:
    """How to call the same pipeline over HTTP, or through the page's own endpoints with gradio_client."""
    with gr.Tab("API"):
        (curl, python), client = api_examples(url), client_example(url)
        gr.Markdown(
            f"The same pipeline is served over HTTP by the one server (`.venv/bin/python app/main.py`). "
            f"Interactive documentation: [{url}/docs]({url}/docs) · schema: `{url}/openapi.json` · "
            f"readiness: `{url}/health` · settings: `{url}/info`."
        )
        gr.Code(curl, language="shell", label="curl")
        gr.Code(python, language="python", label="Python (requests)")
        gr.Code(client, language="python", label="Python (gradio_client): this page's buttons, by name")
        gr.Markdown(
            f"gradio_client takes a ticket's fields and the flags by name ({', '.join(f'`{n}`' for n in model.Ticket.model_fields)}, "
            f"`{next(iter(flags_schema.model_fields))}`, ...); "
            "on `/compare` and `/batch_report` variant B's flags are `b_top_k`, `b_auto_reply` and so on. "
            "`client.view_api()` lists every endpoint and its parameters. Flags, all optional:"
        )
        gr.Dataframe(flags_table(flags_schema), interactive=False, wrap=True)


# ---------------------------------------------------------------------------------------------
# Parts of the page: controls derived from pydantic fields, the expected answer of a case
# ---------------------------------------------------------------------------------------------
B_DEFAULTS = {"auto_reply": False}  # variant B starts as A with this changed, where the schema has the flag


def control(name: str, field, value=None) -> gr.components.Component:
    """A Gradio input for one pydantic field: checkbox, slider, number, dropdown or textbox. The label is the name in
    words (`label_of`), the description the small print; a dropdown shows its values in words. gradio_client calls the
    parameter by the field's name (the API tab lists them)."""
    info, label = field.description, label_of(name, field)
    annotation, default = field.annotation, field.default if value is None else value
    bounds = {type(m).__name__: m for m in field.metadata}
    if annotation is bool:
        return gr.Checkbox(value=default, label=label, info=info)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return gr.Dropdown(choices=words(annotation), value=annotation(default).value, label=label, info=info)
    if annotation in (int, float):
        low, high = getattr(bounds.get("Ge"), "ge", None), getattr(bounds.get("Le"), "le", None)
        if low is not None and high is not None:
            step = 1 if annotation is int else 0.05
            return gr.Slider(minimum=low, maximum=high, step=step, value=default, label=label, info=info)
        return gr.Number(value=default, label=label, info=info, precision=0 if annotation is int else None)
    if typing.get_origin(annotation) is typing.Annotated or annotation is str:
        return gr.Textbox(label=label, info=info, lines=4, placeholder="Type or paste a customer message")
    raise TypeError(f"no control for field {name!r} of type {annotation!r}")


def controls(schema: type[BaseModel], **values) -> dict[str, gr.components.Component]:
    """One control per field of `schema`, keyed by the field's name; `values` overrides defaults."""
    return {name: control(name, field, values.get(name)) for name, field in schema.model_fields.items()}


def ticket_controls() -> dict[str, gr.components.Component]:
    """A ticket's controls (model.Ticket): the text, then its other fields side by side."""
    fields = model.Ticket.model_fields
    text = control("text", fields["text"])
    with gr.Row():
        return {"text": text} | {name: control(name, field) for name, field in fields.items() if name != "text"}


def prefixed(components: dict[str, gr.components.Component], prefix: str) -> dict[str, gr.components.Component]:
    return {prefix + name: component for name, component in components.items()}


def values(components: dict[str, gr.components.Component], data: dict, prefix: str = "") -> dict:
    """What a handler's `data` (its keyword arguments) holds for `components` (from `controls`), by field name."""
    return {name: data[prefix + name] for name in components}


def flag_sets(schema: type[BaseModel], title_b: str, is_open: bool) -> tuple[dict, dict]:
    """Two sets of flag controls side by side, A and B, for comparing variants; B starts as A with B_DEFAULTS."""
    with gr.Row():
        with gr.Column(), gr.Accordion("Flags A", open=is_open):
            a = controls(schema)
        with gr.Column(), gr.Accordion(title_b, open=is_open):
            b = controls(schema, **{k: v for k, v in B_DEFAULTS.items() if k in schema.model_fields})
    return a, b


def examples(n_per_category: int = 1) -> list[str]:
    frame = pd.read_csv(model.DATA_DIR / "eval.csv")
    return frame.groupby(model.expected_column()).head(n_per_category).text.tolist()


EITHER, ANY = "either", "any"


def words(kind: type[Enum]) -> list[tuple[str, str]]:
    """A dropdown's choices for an enum: each value shown in words (`order_status` -> "Order status")."""
    return [(label_of(e.value), e.value) for e in kind]


def expected_controls() -> dict[str, gr.components.Component]:
    """The expected answer of a case (model.Expected): category, and optionally needs_human and urgency; a note. Keyed by
    the parameter names clients use."""
    with gr.Row():
        category = gr.Dropdown(words(model.Category), value=None, label="Expected category", info="the right answer")
        needs_human = gr.Dropdown([EITHER, "yes", "no"], value=EITHER, label="A person must answer", info="or either is right")
        urgency = gr.Dropdown([ANY, *words(model.Urgency)], value=ANY, label="Expected urgency", info="or any is right")
    note = gr.Textbox("", label="Note", placeholder="why this case matters", lines=1)
    keep_pii = gr.Checkbox(
        value=False,
        label="Save the text as written",
        info="by default e-mail, phone and card numbers are masked first",
    )
    return {
        model.expected_column(): category,
        "expected_needs_human": needs_human,
        "expected_urgency": urgency,
        "note": note,
        "keep_pii": keep_pii,
    }


def flag_button() -> tuple[gr.Button, gr.Markdown]:
    """The flag button with its confirmation right beside it, where the eye is."""
    with gr.Row():
        go = gr.Button("Flag this case", scale=1)
        said = gr.Markdown(elem_classes=["confirmation"])
    return go, said


def save_flagged(ticket: dict, flags: dict, expected: dict, request: gr.Request) -> str:
    """Save one case flagged on the Triage or Compare tab (`expected`: the values of `expected_controls`, by name); says
    what was saved."""
    if not expected[model.expected_column()]:
        raise gr.Error(f"Choose the expected {model.LABEL} first.")
    answer = {
        model.LABEL: expected[model.expected_column()],
        "needs_human": {"yes": True, "no": False}.get(expected["expected_needs_human"]),
        "urgency": None if expected["expected_urgency"] in (ANY, None) else expected["expected_urgency"],
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


def reviewer_of(request: gr.Request | None) -> str | None:
    return getattr(request, "username", None)


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
