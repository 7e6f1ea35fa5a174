"""The Gradio page for project owners, in reading order: a thin client of the pipeline's contract and batch.py.

    python -m app.ui [--port 7861]          # the UI alone, for development
    python app/main.py                      # the UI and the HTTP API in one server

`build()` is the page: a title, then one function per tab, each laying out its components, then wiring its
listeners. A public endpoint takes its inputs by name (`inputs_kwargs={"name": box, ...}` hands the handler
`data["name"]`), and those names are what gradio_client sees: an input's fields and the flags by their schema names
(model.Input, model.Flags), variant B's flags as `b_<flag>`, an expected answer's fields as `expected_<field>`
(model.Expected). Positional calls still work, in the order listed. A handler returns `{component: value}`. What a
result looks like is in app/render.py, the upload guards in app/uploads.py. Every control and panel is derived from
the pipeline's contract (building/contract.py), its schemas and its trace: a new field gets a control or a panel, a
new flag a control (and a parameter), a new step a panel, and nothing here changes.
"""

import argparse
import json
import os
import re
import shutil
import typing
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no version check calling out to the network

import gradio as gr
import pandas as pd
from pydantic import BaseModel, ValidationError

import batch
import model
from app.guards import same_secret
from app.render import (
    ERROR_COLUMNS,
    LIVE_COLUMNS,
    QUEUE_COLUMNS,
    SUITE_COLUMNS,
    TEXT,
    WHEN_FLAGGED,
    allowed_values,
    answer_shown,
    answer_table,
    api_examples,
    at_a_glance,
    batch_headline,
    both_table,
    check_all,
    class_probabilities,
    client_example,
    differences,
    expected_shown,
    failed_rows,
    filter_cases,
    flag_differences,
    flags_table,
    gate_report,
    has_probabilities,
    in_words,
    input_shown,
    label_of,
    literal,
    live_record,
    panel_fields,
    panel_value,
    public,
    record_columns,
    refusal,
    review_queue,
    step_panels,
    under_both,
    version_folder,
)
from app.uploads import Turns, batch_limits, only_uploads, report_dir, within_limits
from building import builder, contract, versions
from loop import edge_cases, gate, review
from loop.commands import counted
from reporting import reports

THEME = gr.themes.Soft(primary_hue="indigo")
CSS = """
.step-panel .label-wrap span { font-family: ui-monospace, monospace; }
footer { display: none !important; }
.cases td, .cases th { word-break: normal !important; overflow-wrap: normal !important; }
td, th, td span, th span, .prose, .prose span, .md, .md span { word-break: normal !important; overflow-wrap: break-word !important; }
.legend, .confirmation { font-size: var(--text-sm); }
"""
PLOTS = 3  # the Batch tab's plots: reports.figures gives three, None where the pipeline has no such thing (then hidden)


def pipeline(one: dict, flags: dict, debug: bool) -> BaseModel:
    builder.ready()  # loaded in this process on first use
    return contract.run(one, flags, debug=debug)


def build(run=None, flags_schema: type[BaseModel] | None = None, api_url: str = "http://localhost:7860") -> gr.Blocks:
    """The Blocks app. `run` and `flags_schema` default to the pipeline's own (tests pass variants)."""
    contract.check()
    run = run or pipeline
    flags_schema = flags_schema or model.Flags
    with gr.Blocks(title=contract.title(), delete_cache=(3600, 3600)) as demo:  # uploads and reports go after an hour
        gr.Markdown(f"# {contract.title()}\n{contract.intro()}")
        run_tab(run, flags_schema)
        compare_tab(run, flags_schema)
        batch_tab(flags_schema)
        cases_tab()
        api_tab(api_url, flags_schema)
    return demo


def run_tab(run, flags_schema: type[BaseModel]) -> None:
    """One input: the answer, each step in its own panel, and flagging the case."""
    with gr.Tab("Run"):
        steps = ", then every step in its own panel" if contract.has_trace() else ""
        gr.Markdown(f"One input through the pipeline: the answer{steps}.")
        with gr.Row():
            with gr.Column(scale=3):
                given = input_controls()
                with gr.Accordion("Feature flags", open=False):
                    flags = controls(flags_schema)
                go = gr.Button("Run", variant="primary")
                gr.Examples(examples(), inputs=list(given.values()), label="Examples")
            with gr.Column(scale=4):
                glance = gr.Markdown("### Run an input to see the answer")
                fields = gr.Dataframe(
                    label="The answer, field by field",
                    interactive=False,
                    wrap=True,
                    headers=["field", "value"],  # before the first answer too, never "1, 2"
                    column_widths=["30%", "70%"],
                )
                panels = answer_panels()
        trace = gr.State([])
        answer = gr.JSON(visible=False)
        if contract.has_trace():
            gr.Markdown("## Step by step")

            @gr.render(inputs=trace)
            def _panels(steps):
                step_panels(steps)

        with gr.Accordion("Flag this case: the pipeline got it wrong, or must keep getting it right", open=False):
            expected = expected_controls()
            flag_go, flagged = flag_button()

    def answer_of(**data):
        try:
            result = run(values(model.Input, data), values(flags_schema, data), True)
        except ValidationError as error:
            raise gr.Error(contract.error_message(error)) from None
        steps = [s.model_dump(mode="json") for s in getattr(result, "trace", None) or []]
        dumped = result.model_dump(mode="json", exclude={"trace"})
        shown = {name: panel_value(field, kind, dumped[name]) for name, (field, kind) in panel_fields().items()}
        if "probabilities" in panels:
            shown["probabilities"] = class_probabilities(result, steps)
        return {
            glance: at_a_glance(result),
            fields: answer_table(result),
            **{panels[name]: value for name, value in shown.items()},
            trace: steps,
            answer: dumped,
        }

    def flag(request: gr.Request, **data):
        return save_flagged(values(model.Input, data), values(flags_schema, data), data, request)

    named = {**given, **flags}
    shown = [glance, fields, *panels.values(), trace, answer]
    ran = go.click(answer_of, inputs_kwargs=named, outputs=shown, api_name="run")
    ran.failure(lambda: cleared(shown, {glance: NO_ANSWER, trace: []}), None, shown, api_visibility="private")
    preset(answer, expected)
    flag_go.click(flag, inputs_kwargs=named | expected, outputs=flagged, api_name="flag_case")


def answer_panels() -> dict[str, gr.components.Component]:
    """Beside the answer's table: the class probabilities (where the pipeline has them), then one panel per output field
    that a table cell cannot show (app/render.py:panel_kind), in the schema's order; what `/run` returns between the
    table and the answer (render.run_outputs)."""
    panels = {}
    if has_probabilities():
        label = contract.label()
        panels["probabilities"] = gr.Label(
            label=f"{label_of(label)} (class probabilities)" if label else "Probabilities", num_top_classes=4
        )
    for name, (field, kind) in panel_fields().items():
        label = label_of(name, field)
        if kind == "records":
            panels[name] = gr.Dataframe(label=label, headers=record_columns(field), interactive=False, wrap=True)
        elif kind == "fields":
            panels[name] = gr.Dataframe(label=label, headers=["field", "value"], interactive=False, wrap=True, column_widths=["30%", "70%"])
        elif kind == "prose":
            long = contract.base_type(field.annotation) is str
            panels[name] = gr.Textbox(label=label, interactive=False, lines=5 if long else 2, placeholder="none")
        else:
            panels[name] = gr.JSON(label=label)
    return panels


def preset(answer: gr.JSON, expected: dict[str, gr.components.Component]) -> None:
    """The expected answer's label starts as the pipeline's answer (where there is a label): a person changes what is
    wrong."""
    label = contract.label()
    if label:
        answer.change(lambda a: (a or {}).get(label), answer, expected[contract.expected_column()], api_visibility="private")


NO_ANSWER = "### No answer\nThe last request failed: its message says why. Nothing here belongs to an earlier one."


def cleared(components: list, said: dict) -> dict:
    """What a failed request leaves in its panels: `said` where it says so, every other panel empty, so that nothing
    shown belongs to an earlier request (a `.failure` listener returns it)."""
    return {component: None for component in components} | said


STEPS_MARKED = "; steps that differ are marked below."


def compare_tab(run, flags_schema: type[BaseModel]) -> None:
    """One input under two sets of flags, A and B, and flagging the case with either."""
    with gr.Tab("Compare") as tab:
        gr.Markdown(
            "The same input under two sets of flags, A and B, or on two versions (B on a candidate: `.venv/bin/python "
            "-m loop candidate`): what changes, field by field and step by step. B starts as A: change one of B's flags, or "
            "B's version (then B's flags are set to A's, so that only the version differs)."
        )
        given = input_controls()
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
        on, one = data["b_version"] or "served", values(model.Input, data)
        flags = values(flags_schema, data, "b_")
        if on != "served":
            version_folder(on)  # a name that is no version's, or no such version: said at once
        try:
            a = run(one, values(flags_schema, data), True)
            b = run(one, flags, True) if on == "served" else gate.one_ticket(on, one, flags)
        except ValidationError as error:
            raise gr.Error(contract.error_message(error)) from None
        except versions.VersionError as error:  # a broken version: what is wrong with it, never where it lies
            raise refusal(error) from None
        by_field, by_step = differences(a, b)
        n_diff = int((by_field.differs != "").sum())
        sides = "A and B" if on == "served" else f"A (served) and B (version {on})"
        changed = flag_differences(flags_schema, values(flags_schema, data), flags)
        if changed:
            same = f"; B's flags differ from A's: {changed}"
        else:
            same = (
                " (B's flags are A's: change one of B's to compare variants)"
                if on == "served"
                else " (the same flags: only the version differs)"
            )
        return {
            headline: f"**{n_diff} of {len(by_field)} fields differ** between {sides}{same}{STEPS_MARKED if contract.has_trace() else '.'}",
            fields: by_field,
            steps: by_step,
            compared: gr.Column(visible=True),
            result_a: a.model_dump(mode="json"),
            result_b: b.model_dump(mode="json"),
        }

    def flag(request: gr.Request, **data):
        flags = values(flags_schema, data) if data["variant"] == "A" else values(flags_schema, data, "b_")
        return save_flagged(values(model.Input, data), flags, data, request)

    def b_as_a(**data):
        """With B on another version, B's flags are set to A's: the comparison is of the versions alone."""
        on_served = (data["b_version"] or "served") == "served"  # then B's flags stay as they are
        return {flags_b[name]: gr.skip() if on_served else data[name] for name in flags_b}

    both = {**given, **flags_a, **prefixed(flags_b, "b_")}
    shown = [headline, fields, steps, result_a, result_b, compared]
    compared_ = go.click(compare, inputs_kwargs=both | {"b_version": version_b}, outputs=shown, api_name="compare")

    def failed():  # its updates made when it runs: a component made here would be placed on the page, outside the tab
        return cleared(shown, {headline: NO_ANSWER.replace("No answer", "No comparison"), compared: gr.Column(visible=False)})

    compared_.failure(failed, None, shown, api_visibility="private")
    following = flags_a | {"b_version": version_b}
    version_b.change(b_as_a, inputs_kwargs=following, outputs=list(flags_b.values()), api_name="b_flags", api_visibility="undocumented")
    for control_ in flags_a.values():  # while B is on another version, its flags follow A's
        control_.change(b_as_a, inputs_kwargs=following, outputs=list(flags_b.values()), api_visibility="private")
    tab.select(lambda: gr.Dropdown(choices=["served", *versions.listing()]), None, version_b, api_visibility="private")
    preset(result_a, expected)
    flag_inputs = {**given, "variant": variant, **flags_a, **prefixed(flags_b, "b_"), **expected}
    flag_go.click(flag, inputs_kwargs=flag_inputs, outputs=flagged, api_name="flag_compare_case")


def batch_tab(flags_schema: type[BaseModel]) -> None:
    """A CSV of inputs scored into report files, optionally against variant B or a baseline."""
    evaluation = next(iter(contract.labelled_sets().values()), None)  # the first labelled set, where there is one
    with gr.Tab("Batch"):
        gr.Markdown(batch_intro())
        with gr.Accordion("The CSV's input columns and the values they take", open=True):
            gr.Dataframe(allowed_values(), interactive=False, wrap=True, column_widths=["14%", "14%", "9%", "51%", "12%"])
        with gr.Row():
            upload = only_uploads(gr.File(label="CSV file", file_types=[".csv"], type="filepath"))
            baseline = only_uploads(
                gr.File(label="Baseline (optional): an earlier scored CSV of the same input", file_types=[".csv"], type="filepath")
            )
            with gr.Column():
                use_eval = gr.Checkbox(
                    label="Use the bundled evaluation set instead",
                    info=f"data/{evaluation.name}" if evaluation else None,
                    value=False,
                    visible=evaluation is not None,
                )
                with_compare = gr.Checkbox(label="Also score variant B and compare", value=False, info="with Flags B below")
                text = contract.text_field()
                text_column = gr.Dropdown(  # batch.py's --text-column: the column that holds the input's text field
                    [],
                    value="",  # a default, so that clients may leave it out
                    label="Text column",
                    info=f"the CSV's column that holds the {in_words(text, model.Input.model_fields[text])}; empty: the one named {text}"
                    if text
                    else None,
                    allow_custom_value=True,
                    visible=text is not None,
                )
        flags_a, flags_b = flag_sets(flags_schema, "Flags B (used when comparing)", is_open=False)
        go = gr.Button("Run batch report", variant="primary")
        headline = gr.Markdown()
        failed = gr.Dataframe(
            headers=ERROR_COLUMNS, label="Rows that failed", interactive=False, wrap=True, visible=False, column_widths=["8%", "17%", "75%"]
        )
        files = gr.File(label="Report files (CSV, HTML, JSON)", file_count="multiple", interactive=False)
        plots = [gr.Plot(visible=False, show_label=False) for _ in range(PLOTS)]
        with gr.Row(visible=contract.label() is not None):
            save_wrong = gr.Button("Save the misclassified rows as edge cases")
            saved_wrong = gr.Markdown()
        with gr.Accordion("Summary (JSON)", open=False):
            summary = gr.JSON(label="Summary")
        last_report = gr.State(None)  # the scored CSV's path lives on the server, never sent by a client

    report_outputs = [headline, failed, *plots, files, summary, last_report]
    limits = batch_limits()
    turns = Turns(limits["running"], limits["waiting"])

    def report(file=None, baseline=None, progress=gr.Progress(track_tqdm=True), **data):  # noqa: B008  (files: optional for clients)
        flags = values(flags_schema, data)
        source = evaluation if data["use_eval"] and evaluation else file
        if not source:  # a message for the person where the eye is, not an error for the server's log
            message = "Upload a CSV file" + (", or tick 'Use the bundled evaluation set'." if evaluation else " first.")
            return cleared(report_outputs, {headline: message, failed: gr.Dataframe(visible=False)})  # and the last report's outputs
        with turns.turn(on_wait=lambda: progress(0, desc="waiting for another batch to finish")):
            return scored_report(source, baseline, flags, data)

    def scored_report(source, baseline, flags, data):
        try:
            for path in filter(None, [source, baseline]):  # before anything is scored
                within_limits(path, limits["rows"], limits["mb"])
        except batch.BatchInputError as error:
            raise refusal(str(error).replace(str(path), Path(path).name)) from None
        out_dir = report_dir()
        try:
            scored = batch.report(
                source,
                out_dir / f"{Path(source).stem}-report.csv",
                text_column=(data.get("text_column") or "").strip() or None,
                flags=flags,
                compare=values(flags_schema, data, "b_") if data["compare"] else None,
                progress=True,
                baseline=baseline,
            )
        except batch.BatchInputError as error:
            shutil.rmtree(out_dir, ignore_errors=True)
            message = for_the_tab(str(error).replace(str(source), Path(source).name))
            raise refusal(message.replace(str(baseline), Path(baseline).name) if baseline else message) from None
        except ValidationError as error:
            raise gr.Error(contract.error_message(error)) from None
        paths = [scored["outputs"][k] for k in (".csv", ".html", ".json")]
        figures = [*reports.figures(scored), *[None] * PLOTS][:PLOTS]
        shown = [gr.Plot(value=f, visible=f is not None) for f in figures]  # each figure has its title
        said, rows = failed_rows(scored)
        return {
            headline: batch_headline(scored) + (f"\n\n{said}" if said else ""),
            failed: gr.Dataframe(value=rows, visible=len(rows) > 0),
            **dict(zip(plots, shown, strict=True)),
            files: paths,
            summary: scored | {"outputs": {k: Path(v).name for k, v in scored["outputs"].items()}},  # names, never server paths
            last_report: (paths[0], scored, flags),  # stays on the server
        }

    def save_misclassified(last, request: gr.Request):
        if contract.label() is None:
            return "This pipeline has no label: no row is misclassified."
        if last is None or not Path(last[0]).exists():
            return f"Run a report on a labelled CSV first (an `{contract.expected_column()}` column)."
        path, scored, flags = last
        who = who_flags(request)
        try:
            saved = batch.save_misclassified(path, scored, model.Flags.model_validate(flags), **who)
        except (batch.BatchInputError, ValidationError, review.QueueUnavailable) as error:
            raise refusal(error) from None
        new = sum(is_new for _, is_new in saved)
        return f"{counted(new, 'misclassified row')} flagged for review ({len(saved) - new} already flagged); see the Edge cases tab."

    report_inputs = {"file": upload, "use_eval": use_eval, "compare": with_compare, "baseline": baseline}
    every = report_inputs | flags_a | prefixed(flags_b, "b_") | {"text_column": text_column}  # last: positional calls still work
    unbounded = {"concurrency_limit": None}  # Turns bounds it
    reported = go.click(report, inputs_kwargs=every, outputs=report_outputs, api_name="batch_report", **unbounded)

    def gone():  # its updates made when it runs: a component made here would be placed on the page, outside the tab
        return cleared(
            report_outputs, {headline: "No report: the last request failed, its message says why.", failed: gr.Dataframe(visible=False)}
        )

    reported.failure(gone, None, report_outputs, api_visibility="private")
    upload.change(csv_columns, upload, text_column, api_visibility="private")
    save_wrong.click(save_misclassified, last_report, saved_wrong, api_name="save_misclassified")


def csv_columns(path: str | None) -> gr.Dropdown:
    """The Text column's choices: the uploaded CSV's columns (its header alone is read); none where it has no header."""
    try:
        columns = list(pd.read_csv(path, nrows=0).columns) if path else []
    except (ValueError, OSError, UnicodeDecodeError):  # not a CSV: the report says so when it is run
        columns = []
    return gr.Dropdown(choices=columns, value="", allow_custom_value=True)


def for_the_tab(message: str) -> str:
    """batch.py's message as the tab says it: where it names batch.py's `--column FIELD=COLUMN` or `--text-column`, the
    tab's own way (the Text column box, or naming the column after the field)."""
    text = contract.text_field()

    def said(match: re.Match) -> str:
        field = match.group(1)
        return "pick its column under 'Text column'" if field == text else f"name the CSV's column {field}"

    return re.sub(r"name its column with --column (\w+)=COLUMN(?: \(or --text-column COLUMN\))?", said, message)


def batch_intro() -> str:
    """What the Batch tab scores: the columns it reads (the Input's fields by name) and what a label column adds."""
    columns = ", ".join(f"`{name}`" + (" (required)" if field.is_required() else "") for name, field in model.Input.model_fields.items())
    said = f"Score a CSV of inputs: a column per input field, by its name ({columns}; an empty cell takes the default)."
    if contract.label():
        said += f" An `{contract.expected_column()}` column adds accuracy and a confusion matrix."
    limits = batch_limits()
    return said + f" At most {limits['rows']:,} rows and {limits['mb']} MB a file (larger ones: `batch.py` on your own machine)."


AS_FLAGGED = "as flagged"


def review_answer(as_given: str = "as flagged") -> gr.Dropdown:
    """The reviewer's answer for the cases accepted: as flagged (`as_given` in words), or another value of the label
    (Expected's label field: its values where it is an enum). Hidden for a pipeline without a label."""
    label = contract.label()
    base = contract.base_type(model.Expected.model_fields[label].annotation) if label else None
    choices = [(as_given, AS_FLAGGED), *words(base)]
    return gr.Dropdown(
        choices,
        value=AS_FLAGGED,
        label=f"Expected {in_words(label)}" if label else "Expected answer",
        visible=label is not None,
        allow_custom_value=label is not None and not contract.choices(base),
    )


CASE_COLUMNS = {  # column: what it says (the Edge cases tab's legend)
    "verdict": "what the pipeline does with the case now: fixed, open (still wrong), newly broken, newly fixed, training",
    "status": "what the suite file records (fixed or open) until someone marks it again",
    WHEN_FLAGGED: "the pipeline's answer when the case was flagged",
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
            sources = ["all", *[s.value for s in edge_cases.CaseSource]]
            source = gr.Dropdown(sources, value="all", label="Source", info="where the case was flagged")
            go = gr.Button("Run every case", variant="primary")
        headline = gr.Markdown()
        rows, both_rows = gr.State([]), gr.State([])  # every case, and every case under both versions: the filters pick
        widths = ["8%", "24%", "12%", "12%", "12%", "6%", "6%", "10%", "10%"]  # at 1400 px: ids and labels whole
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
                label="Inputs whose answer the candidate changes",
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
            "### Review queue\nCases flagged from the Run, Compare and Batch tabs, the API (`POST /cases`) or a file wait "
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
                answer = review_answer()
                review_key = gr.Textbox(type="password", label="Reviewer key", info="only where the server sets TRIAGE_REVIEW_KEY")
            with gr.Row():
                accept = gr.Button("Accept into the suite", variant="primary")
                as_training = gr.Button("Accept as a training example")
                reject = gr.Button("Reject", variant="stop")
            decided = gr.Markdown()

        gr.Markdown(
            "### Live traffic\nA candidate in shadow (`python -m loop shadow VERSION`) answers a sample of the requests too, "
            "off the response path. Its disagreements with the served version are listed here, newest first; a reviewer says "
            "which side is right: that puts a case in the review queue, and the gate counts it (its *live traffic* set)."
        )
        with gr.Row():
            live_version = gr.Dropdown(versions.listing(), value=in_shadow(), label="Candidate", allow_custom_value=True)
            show_live = gr.Button("Show its live record")
        live_said = gr.Markdown()
        live = gr.Dataframe(
            headers=LIVE_COLUMNS,
            interactive=False,
            wrap=True,
            label="Disagreements with the served version",
            column_widths=["6%", "34%", "12%", "18%", "18%", "12%"],
            max_height=700,
            elem_classes=["cases"],
        )
        with gr.Group(visible=False) as judging:  # shown to a logged-in user only; the handler checks again
            with gr.Row():
                pair = gr.Dropdown([], label="Disagreement to judge")
                right = gr.Radio(
                    [("The served version", "served"), ("The candidate", "candidate"), ("Neither", "neither")],
                    value="served",
                    label="Which is right",
                )
                right_answer = review_answer("as the right side answered")
                judge_key = gr.Textbox(type="password", label="Reviewer key", info="only where the server sets TRIAGE_REVIEW_KEY")
            judge = gr.Button("Judge: put it in the review queue", variant="primary")
            judged_said = gr.Markdown()

    def run_cases(verdict, source, request: gr.Request):
        counts, every = check_all()
        return {
            headline: counts,
            rows: every,
            table: filter_cases(every, verdict, source),
            marking: gr.Row(visible=reviewer_of(request) is not None),
        }

    def refilter(data):
        chosen_ = data[verdict], data[source]
        return {table: filter_cases(data[rows], *chosen_), both: both_table(data[both_rows], *chosen_)}

    def run_both(verdict, source, version, request: gr.Request):
        if version == "none":
            raise gr.Error("Choose a candidate version first (python -m loop candidate makes one).")
        listed = run_cases(verdict, source, request)
        every = under_both(listed[rows], version)
        return listed | {both_rows: every, both: both_table(every, verdict, source), shown_both: gr.Column(visible=True)}

    def show_gate(version):
        said, changed = gate_report(version)
        return {gate_said: said, gate_changed: changed, shown_gate: gr.Column(visible=True)}

    def show_queue(state, request: gr.Request):
        said, listed = review_queue(state)
        pending = listed if state == "pending" else review_queue("pending")[1]
        choices = [(f"{i} · {str(t)[:60]}", i) for i, t in zip(pending["id"], pending[TEXT], strict=True)]
        return {
            queue_headline: said,
            queue: listed,
            reviewing: gr.Group(visible=reviewer_of(request) is not None),
            chosen: gr.Dropdown(choices=choices, value=[]),
        }

    def reviewer(request: gr.Request, key: str | None) -> str:
        """The logged-in reviewer, when the reviewer key (where the server sets one) is right; else an error."""
        name, wanted = reviewer_of(request), os.environ.get("TRIAGE_REVIEW_KEY")
        if name is None or (wanted and not same_secret(key or "", wanted)):
            raise gr.Error("Reviewing needs a logged-in reviewer (and the reviewer key, where the server sets one).")
        return name

    def decide(data, request: gr.Request, accepting: bool, training: bool = False):
        who = reviewer(request, data[review_key])
        if not data[chosen]:
            raise gr.Error("Choose the pending cases to decide on first.")
        expected = None if data[answer] in (AS_FLAGGED, None, "") else {contract.label(): data[answer]}
        try:
            if accepting:
                accepted = review.accept(data[chosen], who, expected=expected, train=training)
                said = f"{counted(len(accepted))} accepted into the suite{' as training examples' if training else ''}."
            else:
                said = f"{counted(review.reject(data[chosen], who))} rejected."
        except (review.QueueUnavailable, edge_cases.StoreUnavailable) as error:
            raise refusal(error) from None
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
            n = edge_cases.set_case_status(ids, edge_cases.CaseStatus.fixed) if ids else 0
        except edge_cases.StoreUnavailable as error:
            raise refusal(error) from None
        return {
            marked: f"{counted(n)} marked fixed." if n else "No newly fixed case to mark.",
            **run_cases(data[verdict], data[source], request),
        }

    def show_live_record(version, request: gr.Request):
        if not version:
            raise gr.Error("Choose a candidate: python -m loop shadow VERSION puts one in shadow.")
        said, listed = live_record(version)
        waiting = [(f"{i} · {str(t)[:60]}", str(i)) for i, t, r in zip(listed["id"], listed[TEXT], listed["right"], strict=True) if not r]
        return {
            live_said: said,
            live: listed,
            judging: gr.Group(visible=reviewer_of(request) is not None),
            pair: gr.Dropdown(choices=waiting, value=None),
        }

    def judge_pair(data, request: gr.Request):
        who = reviewer(request, data[judge_key])
        if not data[pair]:
            raise gr.Error("Choose the disagreement to judge first.")
        given = None if data[right_answer] in (AS_FLAGGED, None, "") else {contract.label(): data[right_answer]}
        try:
            case = review.judge_shadow(int(data[pair]), data[right], who, expected=given)
        except (review.QueueUnavailable, edge_cases.StoreUnavailable) as error:
            raise refusal(error) from None
        except (ValueError, ValidationError) as error:
            raise gr.Error(public(str(error))) from None
        said = f"Case `{case.id}` waits in the review queue, expecting {expected_shown(case.expected)}."
        return {judged_said: said, **show_live_record(data[live_version], request), **show_queue(data[state], request)}

    listing = [headline, rows, table, marking]
    go.click(run_cases, inputs_kwargs={"verdict": verdict, "source": source}, outputs=listing, api_name="edge_cases")
    tab.select(run_cases, [verdict, source], listing, api_visibility="private")
    for control_ in (verdict, source):
        control_.change(refilter, {rows, both_rows, verdict, source}, [table, both], api_visibility="private")
    both_inputs = {"verdict": verdict, "source": source, "version": other}
    go_both.click(run_both, inputs_kwargs=both_inputs, outputs=[*listing, both_rows, both, shown_both], api_name="edge_cases_on_both")
    go_gate.click(show_gate, inputs_kwargs={"version": other}, outputs=[gate_said, gate_changed, shown_gate], api_name="gate_report")
    tab.select(lambda: gr.Dropdown(choices=["none", *versions.listing()]), None, other, api_visibility="private")
    queue_outputs = [queue_headline, queue, reviewing, chosen]
    show.click(show_queue, inputs_kwargs={"state": state}, outputs=queue_outputs, api_name="review_queue")
    for event in (state.change, tab.select):
        event(show_queue, [state], queue_outputs, api_visibility="private")
    deciding = {state, chosen, answer, review_key}
    accept.click(accept_cases, deciding, [decided, *queue_outputs], api_visibility="private")  # the handler checks the login
    as_training.click(train_cases, deciding, [decided, *queue_outputs], api_visibility="private")
    reject.click(reject_cases, deciding, [decided, *queue_outputs], api_visibility="private")
    mark.click(mark_fixed, {mark_key, verdict, source}, [marked, *listing], api_visibility="private")
    live_outputs = [live_said, live, judging, pair]
    show_live.click(show_live_record, inputs_kwargs={"version": live_version}, outputs=live_outputs, api_name="live_record")
    tab.select(lambda: gr.Dropdown(choices=versions.listing(), value=in_shadow()), None, live_version, api_visibility="private")
    judging_inputs = {live_version, pair, right, right_answer, judge_key, state}
    judge.click(judge_pair, judging_inputs, [judged_said, *live_outputs, *queue_outputs], api_visibility="private")  # checks the login


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
        flags = list(flags_schema.model_fields)
        named = ", ".join(f"`{n}`" for n in [*model.Input.model_fields, *flags[:1]]) + (", ..." if flags else "")
        gr.Markdown(
            f"gradio_client takes an input's fields and the flags by name ({named}); on `/compare` and `/batch_report` "
            f"variant B's flags are {', '.join(f'`b_{n}`' for n in flags[:2]) or '`b_<flag>`'} and so on. "
            "`client.view_api()` lists every endpoint and its parameters. Flags, all optional:"
        )
        gr.Dataframe(flags_table(flags_schema), interactive=False, wrap=True)


# ---------------------------------------------------------------------------------------------
# Parts of the page: controls derived from pydantic fields, the expected answer of a case
# ---------------------------------------------------------------------------------------------
def bounds(field) -> tuple[float | None, float | None]:
    """A number field's inclusive bounds (ge, le), each None where the schema sets none."""
    least = next((m.ge for m in field.metadata if getattr(m, "ge", None) is not None), None)
    most = next((m.le for m in field.metadata if getattr(m, "le", None) is not None), None)
    return least, most


def control(name: str, field, value=None, lines: int = 1) -> gr.components.Component:
    """A Gradio input for one pydantic field: checkbox, slider (a number with both bounds), number, dropdown (an enum),
    textbox (a string; anything else as JSON). A field without a default starts empty. The label is the name in words
    (`label_of`), the description the small print; a dropdown shows its values in words. gradio_client calls the
    parameter by the field's name (the API tab lists them)."""
    info, label = field.description, label_of(name, field)
    base = contract.base_type(field.annotation)
    default = value if value is not None else None if field.is_required() else field.get_default(call_default_factory=True)
    if base is bool:
        return gr.Checkbox(value=bool(default), label=label, info=info)
    if contract.choices(base):
        return gr.Dropdown(choices=words(base), value=getattr(default, "value", default), label=label, info=info)
    if base in (int, float):
        least, most = bounds(field)
        if least is not None and most is not None:
            step = 1 if base is int else (most - least) / 100
            return gr.Slider(minimum=least, maximum=most, step=step, value=least if default is None else default, label=label, info=info)
        return gr.Number(value=default, label=label, info=info, precision=0 if base is int else None, minimum=least, maximum=most)
    if base is str:
        return gr.Textbox(value=default, label=label, info=info, lines=lines)
    return gr.Textbox(
        value=None if default is None else json.dumps(default), label=label, info=f"{info or ''} (as JSON)".strip(), lines=lines
    )


def controls(schema: type[BaseModel], **values) -> dict[str, gr.components.Component]:
    """One control per field of `schema`, keyed by the field's name; `values` overrides defaults."""
    return {name: control(name, field, values.get(name)) for name, field in schema.model_fields.items()}


def input_controls() -> dict[str, gr.components.Component]:
    """An input's controls (model.Input), keyed in the schema's order: its text field first and larger, then the other
    fields side by side."""
    fields, first = model.Input.model_fields, contract.text_field()
    made = {first: control(first, fields[first], lines=4)} if first else {}
    others = [name for name in fields if name != first]
    for at in range(0, len(others), PER_ROW):  # a few a row: a fourth squeezes a checkbox's help text a word a line
        with gr.Row():
            made |= {name: control(name, fields[name]) for name in others[at : at + PER_ROW]}
    return {name: made[name] for name in fields}


PER_ROW = 3  # input controls side by side


def prefixed(components: dict[str, gr.components.Component], prefix: str) -> dict[str, gr.components.Component]:
    return {prefix + name: component for name, component in components.items()}


def values(schema: type[BaseModel], data: dict, prefix: str = "") -> dict:
    """What a handler's `data` (its keyword arguments) holds for the fields of `schema` (their controls from `controls`),
    by field name: an empty optional field is left out (its default applies), a field shown as JSON is parsed."""
    given = {}
    for name, field in schema.model_fields.items():
        value = data.get(prefix + name)
        if value in (None, "") and not field.is_required():
            continue
        base = contract.base_type(field.annotation)
        if isinstance(value, str) and value and not (base is str or contract.choices(base)):
            value = parsed(name, value)
        given[name] = value
    return given


def parsed(name: str, written: str):
    try:
        return json.loads(written)
    except ValueError:
        raise gr.Error(f"{name}: not valid JSON") from None


def flag_sets(schema: type[BaseModel], title_b: str, is_open: bool) -> tuple[dict, dict]:
    """Two sets of flag controls side by side, A and B, for comparing variants; B starts as A."""
    with gr.Row():
        with gr.Column(), gr.Accordion("Flags A", open=is_open):
            a = controls(schema)
        with gr.Column(), gr.Accordion(title_b, open=is_open):
            b = controls(schema)
    return a, b


def examples(per_label: int = 1) -> list[list]:
    """The Run tab's examples: rows of the first labelled set, `per_label` of each label value; else the Input's own
    example. Each as the values of the input's controls, in order."""
    found = []
    for path in list(contract.labelled_sets().values())[:1]:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        column = contract.expected_column()
        for row in (frame.groupby(column).head(per_label) if column in frame else frame.head(per_label)).to_dict("records"):
            try:
                found.append(contract.input_from_row(row))
            except ValidationError:
                continue
    found = found or [model.Input.model_validate(contract.input_example())]
    return [list(one.model_dump(mode="json").values()) for one in found]


EITHER, ANY = "either", "any"


def words(kind) -> list[tuple[str, typing.Any]]:
    """A dropdown's choices for an enum or a Literal: each value shown in words (`large_one` -> "Large one")."""
    return [(label_of(str(v)), v) for v in contract.choices(kind)]


def expected_control(name: str, field) -> gr.components.Component:
    """The flag form's entry for one field of the expected answer (model.Expected): a required enum (the label) as a
    dropdown of its values; an optional bool as either / yes / no; an optional enum as any / its values; a number as a
    number; a string as a textbox; a list of scalars as comma-separated text; anything else as JSON. Empty or "any": any
    value is right."""
    label, info = f"Expected {in_words(name, field)}", field.description
    base, optional = contract.base_type(field.annotation), not field.is_required()
    if base is bool:
        if optional:
            return gr.Dropdown([EITHER, "yes", "no"], value=EITHER, label=label, info=info or "or either is right")
        return gr.Checkbox(value=False, label=label, info=info)
    if contract.choices(base):
        if optional:
            return gr.Dropdown([ANY, *words(base)], value=ANY, label=label, info=info or "or any is right")
        return gr.Dropdown(words(base), value=None, label=label, info=info or "the right answer")
    if base in (int, float) and not optional:
        return gr.Number(value=None, label=label, info=info, precision=0 if base is int else None)
    how = "" if base is str else " (comma-separated)" if listed(base) else "" if base in (int, float) else " (as JSON)"
    return gr.Textbox("", label=label, info=(info or ("empty: any" if optional else "")) + how or None, lines=1)


def listed(base) -> bool:
    """A list of scalars (`list[str]`, `list[float]`): entered as comma-separated text."""
    return typing.get_origin(base) is list and all(contract.is_scalar(a) for a in typing.get_args(base))


def expected_value(name: str, field, raw):
    """An expected answer's field from its form entry; None where any value is right."""
    if raw is None or (isinstance(raw, str) and raw.strip() in ("", ANY, EITHER)):
        return None
    base = contract.base_type(field.annotation)
    if base is bool and isinstance(raw, str):
        return raw == "yes"
    if isinstance(raw, str) and base is not str and not contract.choices(base):
        return [s.strip() for s in raw.split(",") if s.strip()] if listed(base) else parsed(f"expected {name}", raw)
    return raw


def expected_controls() -> dict[str, gr.components.Component]:
    """The expected answer of a case (model.Expected): one entry per field (`expected_control`), then a note and whether
    to keep personal data. Keyed by the parameter names clients use: expected_<field>, note, keep_pii."""
    with gr.Row():
        shown = {contract.EXPECTED_PREFIX + name: expected_control(name, field) for name, field in model.Expected.model_fields.items()}
    note = gr.Textbox("", label="Note", placeholder="why this case matters", lines=1)
    masking = contract.masking()  # the pipeline's clean_text, where it has one: else nothing is masked, nothing to keep
    keep_pii = gr.Checkbox(value=False, label="Save the text as written", info=f"by default: {masking}", visible=masking is not None)
    return shown | {"note": note, "keep_pii": keep_pii}


def flag_button() -> tuple[gr.Button, gr.Markdown]:
    """The flag button with its confirmation right beside it, where the eye is."""
    with gr.Row():
        go = gr.Button("Flag this case", scale=1)
        said = gr.Markdown(elem_classes=["confirmation"])
    return go, said


def save_flagged(one: dict, flags: dict, data: dict, request: gr.Request) -> str:
    """Save one case flagged on the Run or Compare tab (`data`: the values of `expected_controls`, by name); says what was
    saved."""
    label = contract.label()
    if label and data.get(contract.expected_column()) in (None, ""):
        raise gr.Error(f"Choose the expected {in_words(label)} first.")
    fields = model.Expected.model_fields.items()
    answer = {name: expected_value(name, field, data.get(contract.EXPECTED_PREFIX + name)) for name, field in fields}
    case = {
        "ticket": one,
        "flags": flags,
        "expected": {name: value for name, value in answer.items() if value is not None},
        "note": data["note"] or "",
        "source": "ui",
        "keep_pii": bool(data["keep_pii"]),
    }
    try:
        ((saved, new),) = review.flag([case], **who_flags(request))
    except ValidationError as error:
        raise gr.Error(contract.error_message(error)) from None
    except review.QueueUnavailable as error:  # too many flags, a full queue, a database that does not answer: nothing saved
        raise refusal(error) from None
    if saved.status == edge_cases.CaseStatus.open:
        state = f"the pipeline answers {answer_shown(saved.answer) or 'otherwise'} today"
    else:
        state = "the pipeline gets it right today; accepted, a change that breaks it is a regression"
    said = "Flagged" if new else "Already flagged"
    return f"{said} as case `{saved.id}`: it waits for a reviewer ({state}). Kept: {literal(input_shown(saved.ticket)[:120])}"


def in_shadow() -> str | None:
    """The version this server runs in shadow (main.py sets TRIAGE_SHADOW), else the one shadow.json names now."""
    try:
        return os.environ.get("TRIAGE_SHADOW") or versions.shadowed()
    except versions.VersionError:
        return None


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
