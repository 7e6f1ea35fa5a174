"""The Gradio Blocks app for project owners: a thin client of model.py and batch.py.

    python -m app.ui [--port 7861]          # the UI alone, for development
    python app/main.py                      # the UI and the HTTP API in one server

Every control and panel is derived from the pipeline's own schemas and trace: a new flag gets a
control, a new step gets a panel, and nothing here changes.
"""

import argparse
import json
import os
import re
import shutil
import tempfile
import time
import typing
from enum import Enum
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no version check calling out to the network

import gradio as gr
import pandas as pd
from pydantic import BaseModel, ValidationError

import batch
import edge_cases
import model

TITLE = "Support-ticket triage"
INTRO = (
    "Routes an online shop's customer messages to the right team, links the order numbers they mention, "
    "and answers from the help centre when that is safe. Every step of the pipeline is shown below."
)
THEME = gr.themes.Soft(primary_hue="indigo")
CSS = ".step-panel .label-wrap span { font-family: ui-monospace, monospace; } footer { display: none !important; }"


# ---------------------------------------------------------------------------------------------
# Controls derived from pydantic fields
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


def as_dict(schema: type[BaseModel], values) -> dict:
    """The values of `controls(schema)`, in their order, as a dict by field name."""
    return dict(zip(schema.model_fields, values, strict=True))


def flag_sets(schema: type[BaseModel], title_b: str, is_open: bool) -> tuple[dict, dict]:
    """Two sets of flag controls side by side, A and B, for comparing variants."""
    with gr.Row():
        with gr.Column(), gr.Accordion("Flags A", open=is_open):
            a = controls(schema)
        with gr.Column(), gr.Accordion(title_b, open=is_open):
            b = controls(schema)
    return a, b


def rounded(value: Any) -> Any:
    """Floats rounded for reading; everything else as it is."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Rendering a result and its trace
# ---------------------------------------------------------------------------------------------
def at_a_glance(result: model.Triage) -> str:
    human = "**a person answers**" if result.needs_human else "**answered automatically**"
    return (
        f"### {result.category.value.replace('_', ' ')} → team **{result.team}**\n"
        f"Urgency **{result.urgency.value}** · confidence **{result.confidence:.2f}** · {human}"
    )


def orders_table(result: model.Triage) -> pd.DataFrame:
    rows = [(o, "known order") for o in result.order_ids.known] + [(o, "no such order") for o in result.order_ids.unknown]
    return pd.DataFrame(rows, columns=["order number", "status"])


def articles_table(articles: list) -> pd.DataFrame:
    rows = [{"id": a["id"], "title": a["title"], "category": a["category"], "score": round(a["score"], 3)} for a in articles]
    return pd.DataFrame(rows, columns=["id", "title", "category", "score"])


LONG_TEXT = 80  # characters: a longer string is shown in a text box, not a table cell


def show_value(value: Any, label: str) -> None:
    """A step's output or details, readably: tables for records and for flat mappings, text, or JSON."""
    value = rounded(value)
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        gr.Dataframe(pd.DataFrame(value), label=label, interactive=False, wrap=True)
    elif isinstance(value, dict) and value and not any(isinstance(v, (dict, list)) for v in value.values()):
        short = {k: v for k, v in value.items() if not (isinstance(v, str) and len(v) > LONG_TEXT)}
        if short:
            gr.Dataframe(
                pd.DataFrame({"name": list(short), "value": [str(v) for v in short.values()]}), label=label, interactive=False, wrap=True
            )
        for key, text in value.items():  # long texts (a reply) in a box of their own, not cut in a table cell
            if key not in short:
                show_value(text, f"{label}: {key}")
    elif isinstance(value, str):
        gr.Textbox(value=value, label=label, interactive=False, lines=min(10, 2 + len(value) // 100))
    elif value in (None, {}, []):
        gr.Markdown(f"*{label}: nothing*")
    else:
        gr.JSON(value=value if isinstance(value, (dict, list)) else {label: value}, label=label)


def step_panels(trace: list[dict] | None) -> None:
    """One closed accordion per step of the trace, titled with its name and time; called inside gr.render."""
    if not trace:
        gr.Markdown("*Run a ticket to see each step of the pipeline here.*")
        return
    for number, step in enumerate(trace, start=1):
        title = f"{number}. {step['step']} · {step['ms']:.1f} ms" + (" · skipped" if step.get("skipped") else "")
        with gr.Accordion(title, open=False, elem_classes=["step-panel"]):
            if step.get("skipped"):
                gr.Markdown(f"Skipped by a flag: `{step['skipped']}`")
                continue
            show_value(step["output"], "output")
            details = step.get("details") or {}
            plain = {k: v for k, v in details.items() if not isinstance(v, (dict, list))}
            if plain:  # the scalar details together in one small table
                show_value(plain, "details")
            for key, value in details.items():
                if key not in plain:
                    show_value(value, key)


# ---------------------------------------------------------------------------------------------
# Comparing two variants
# ---------------------------------------------------------------------------------------------
def differences(a: model.Triage, b: model.Triage) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Field by field and step by step, with what differs marked."""
    da, db = a.model_dump(mode="json", exclude={"trace"}), b.model_dump(mode="json", exclude={"trace"})
    fields = [
        {"field": k, "A": _short(da[k]), "B": _short(db[k]), "differs": "◆ differs" if da[k] != db[k] else ""}
        for k in model.Triage.model_fields
        if k != "trace"
    ]
    steps = []
    tb = {s.step: s for s in b.trace or []}
    for s in a.trace or []:
        other = tb.get(s.step)
        same = other is not None and (s.output, s.details, s.skipped) == (other.output, other.details, other.skipped)
        steps.append(
            {
                "step": s.step,
                "A": "skipped" if s.skipped else f"{s.ms:.1f} ms",
                "B": "missing" if other is None else ("skipped" if other.skipped else f"{other.ms:.1f} ms"),
                "differs": "" if same else "◆ differs",
            }
        )
    return pd.DataFrame(fields), pd.DataFrame(steps)


def _short(value: Any) -> str:
    if isinstance(value, list):
        value = ", ".join(v["id"] if isinstance(v, dict) and "id" in v else str(v) for v in value)
    elif isinstance(value, dict):
        value = json.dumps(value)
    text = str(rounded(value))
    return text if len(text) <= 120 else text[:117] + "..."


# ---------------------------------------------------------------------------------------------
# API examples, built from the schemas
# ---------------------------------------------------------------------------------------------
def api_examples(base_url: str = "http://localhost:7860") -> tuple[str, str]:
    """A curl and a Python (requests) example for POST /predict."""
    body = {**model.Ticket.model_config["json_schema_extra"]["examples"][0], "flags": {"top_k": 2}}
    curl = f"curl -s -X POST {base_url}/predict -H 'Content-Type: application/json' \\\n  -d '{json.dumps(body)}'"
    python = (
        "import requests\n\n"
        f"body = {json.dumps(body)}\n"
        f'response = requests.post("{base_url}/predict", json=body, timeout=30)\n'
        "response.raise_for_status()\n"
        "triage = response.json()\n"
        'print(triage["category"], triage["team"], triage["needs_human"])\n'
    )
    return curl, python


# ---------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------
def examples(n_per_category: int = 1) -> list[str]:
    frame = pd.read_csv(model.DATA_DIR / "eval.csv")
    return frame.groupby("expected_category").head(n_per_category).text.tolist()


# ---------------------------------------------------------------------------------------------
# Edge cases: flag from the Triage and Compare tabs, run them all on the Edge cases tab
# ---------------------------------------------------------------------------------------------
EITHER, ANY = "either", "any"


def expected_controls() -> list[gr.components.Component]:
    """The expected answer of a case (model.Expected): category, and optionally needs_human and urgency; a note."""
    with gr.Row():
        category = gr.Dropdown([c.value for c in model.Category], value=None, label="expected category")
        needs_human = gr.Dropdown([EITHER, "yes", "no"], value=EITHER, label="a person must answer")
        urgency = gr.Dropdown([ANY, *[u.value for u in model.Urgency]], value=ANY, label="expected urgency")
    note = gr.Textbox(label="note", placeholder="why this case matters", lines=1)
    keep_pii = gr.Checkbox(value=False, label="save the text as written (by default e-mail, phone and card numbers are masked first)")
    return [category, needs_human, urgency, note, keep_pii]


def save_flagged(ticket: dict, flags: dict, category, needs_human, urgency, note, keep_pii, who: str | None) -> str:
    """Save one case flagged in the app; says what was saved."""
    if not category:
        raise gr.Error("Choose the expected category first.")
    expected = {
        "category": category,
        "needs_human": {"yes": True, "no": False}.get(needs_human),
        "urgency": None if urgency == ANY else urgency,
    }
    case = {"ticket": ticket, "flags": flags, "expected": expected, "note": note or "", "source": "ui", "keep_pii": bool(keep_pii)}
    try:
        ((saved, new),) = edge_cases.save_cases([case], created_by=who)
    except ValidationError as error:
        raise gr.Error(model.error_message(error)) from None
    except edge_cases.StoreUnavailable as error:  # a full disk, or a store that is a folder: say so, nothing was saved
        raise gr.Error(str(error)) from None
    if saved.status == model.CaseStatus.open:
        state = f"open: the pipeline answers {saved.answer['category']} today"
    else:
        state = "fixed: the pipeline gets it right today, so a change that breaks it is a regression"
    return f"{'Saved' if new else 'Already saved'} as case `{saved.id}` ({state}). Text saved: {literal(saved.ticket.text[:120])}"


def literal(text: str) -> str:
    """`text` shown as written inside Markdown, as a code span (fenced by more backticks than any run in it): a ticket's
    `![x](http://...)`, `<b>` or bare URL stays text, never an image the browser fetches, markup or a link."""
    fence = "`" * (max(map(len, re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}"


def check_all() -> tuple[str, list[dict]]:
    """Every edge case against the pipeline now: a headline with the counts, and one row a case."""
    try:
        store = edge_cases.read_cases()
        results = edge_cases.check_cases(store.cases)
    except edge_cases.StoreUnavailable as error:
        raise gr.Error(str(error)) from None
    rows = []
    for r in results:
        case, now = r["case"], r["answer_now"]
        extra = ", ".join(f"{k}={v}" for k, v in case.expected.model_dump(mode="json", exclude_none=True).items() if k != "category")
        rows.append(
            {
                "verdict": r["verdict"],
                "text": case.ticket.text,
                "expected": case.expected.category.value + (f" ({extra})" if extra else ""),
                "when flagged": (case.answer or {}).get("category", ""),
                "now": f"{now['category']} ({now['confidence']:.2f})",
                "source": case.source.value,
                "status": case.status.value,
                "id": case.id,
                "note": case.note,
            }
        )
    counts = edge_cases.verdict_counts(rows)
    headline = (
        f"**{len(rows)} cases**: {counts['fixed']} fixed · {counts['open']} still open · "
        f"**{counts['broken']} newly broken** · {counts['newly fixed']} newly fixed (mark them: `python model.py cases fix ID`)"
    )
    if store.skipped:  # lines of the store that are no edge case: named, for someone to mend by hand
        lines = ", ".join(str(s["line"]) for s in store.skipped[:10]) + (" ..." if len(store.skipped) > 10 else "")
        headline += (
            f"\n\n{len(store.skipped)} lines of the store skipped as no edge case (lines {lines}): see `python model.py cases check`"
        )
    return headline, rows


def filter_cases(rows: list[dict], verdict: str, source: str) -> pd.DataFrame:
    keep = [r for r in rows if verdict in ("all", r["verdict"]) and source in ("all", r["source"])]
    return pd.DataFrame(keep, columns=["verdict", "text", "expected", "when flagged", "now", "source", "status", "id", "note"])


def build(run=None, flags_schema: type[BaseModel] | None = None, api_url: str = "http://localhost:7860") -> gr.Blocks:
    """The Blocks app. `run` and `flags_schema` default to the pipeline's own (tests pass variants)."""
    run = run or (lambda ticket, flags, debug: model.run(ticket, flags, debug=debug))
    flags_schema = flags_schema or model.Flags

    def triage(*values):
        n = len(model.Ticket.model_fields)
        ticket, flags = as_dict(model.Ticket, values[:n]), as_dict(flags_schema, values[n:])
        try:
            result = run(ticket, flags, True)
        except ValidationError as error:
            raise gr.Error(model.error_message(error)) from None
        trace = [s.model_dump(mode="json") for s in result.trace]
        labels = next((s["details"].get("probabilities") for s in trace if s["step"] == "classify"), None)
        return (
            at_a_glance(result),
            labels or {result.category.value: result.confidence},
            result.reply or "(no automatic reply: a person answers)",
            orders_table(result),
            articles_table([a.model_dump(mode="json") for a in result.articles]),
            trace,
            result.model_dump(mode="json", exclude={"trace"}),
        )

    def two_flag_sets(values) -> tuple[dict, dict]:  # the values of flag_sets' controls, as two dicts
        n = len(flags_schema.model_fields)
        return as_dict(flags_schema, values[:n]), as_dict(flags_schema, values[n:])

    def compare(text, *values):
        flags_a, flags_b = two_flag_sets(values)
        try:
            a, b = run({"text": text}, flags_a, True), run({"text": text}, flags_b, True)
        except ValidationError as error:
            raise gr.Error(model.error_message(error)) from None
        fields, steps = differences(a, b)
        n_diff = int((fields.differs != "").sum())
        headline = f"**{n_diff} of {len(fields)} fields differ** between A and B; steps that differ are marked below."
        return headline, fields, steps, a.model_dump(mode="json"), b.model_dump(mode="json")

    def batch_report(upload, use_eval_set, with_compare, baseline, *values, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        flags_a, flags_b = two_flag_sets(values)
        flags_b = flags_b if with_compare else None
        if not use_eval_set and not upload:  # a message for the person, not an error for the server's log
            message = "Upload a CSV file with a 'text' column, or tick 'Use the bundled evaluation set'."
            gr.Warning(message)
            return (message, None, None, None, None, None, None)
        source = model.DATA_DIR / "eval.csv" if use_eval_set else upload
        out_dir = report_dir()
        name = Path(source).stem
        try:
            summary = batch.report(source, out_dir / f"{name}-report.csv", flags=flags_a, compare=flags_b, progress=True, baseline=baseline)
        except batch.BatchInputError as error:
            shutil.rmtree(out_dir, ignore_errors=True)
            message = str(error).replace(str(source), Path(source).name)
            raise gr.Error(message.replace(str(baseline), Path(baseline).name) if baseline else message) from None
        except ValidationError as error:
            raise gr.Error(model.error_message(error)) from None
        figures = batch.figures(summary) + [None] * 3
        files = [summary["outputs"][k] for k in (".csv", ".html", ".json")]
        return (batch_headline(summary), *figures[:3], files, summary, (files[0], summary, flags_a))  # the last stays on the server

    with gr.Blocks(title=TITLE, delete_cache=(3600, 3600)) as demo:  # uploads and reports go after an hour: the disk never fills
        gr.Markdown(f"# {TITLE}\n{INTRO}")
        with gr.Tab("Triage"):
            with gr.Row():
                with gr.Column(scale=3):
                    ticket_inputs = controls(model.Ticket)
                    with gr.Accordion("Feature flags", open=False):
                        flag_inputs = controls(flags_schema)
                    go = gr.Button("Triage", variant="primary")
                    gr.Examples(examples(), inputs=[ticket_inputs["text"]], label="Example tickets")
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
            trace_state = gr.State([])
            answer = gr.JSON(visible=False)

            @gr.render(inputs=trace_state)
            def _panels(trace):
                step_panels(trace)

            go.click(
                triage,
                inputs=[*ticket_inputs.values(), *flag_inputs.values()],
                outputs=[glance, probabilities, reply, orders, articles, trace_state, answer],
                api_name="triage",
            )
            with gr.Accordion("Flag this case: the pipeline got it wrong, or must keep getting it right", open=False):
                expected = expected_controls()
                flag_go = gr.Button("Flag this case")
                flagged = gr.Markdown()
            answer.change(lambda a: (a or {}).get("category"), answer, expected[0], api_visibility="private")  # preset: the answer given

            def flag_triage(request: gr.Request, *values):
                n, m = len(model.Ticket.model_fields), len(flags_schema.model_fields)
                ticket, flags = as_dict(model.Ticket, values[:n]), as_dict(flags_schema, values[n : n + m])
                return save_flagged(ticket, flags, *values[n + m :], getattr(request, "username", None))

            flag_go.click(flag_triage, [*ticket_inputs.values(), *flag_inputs.values(), *expected], flagged, api_name="flag_case")

        with gr.Tab("Compare"):
            gr.Markdown("The same ticket under two sets of flags, A and B: what a flag changes, field by field and step by step.")
            compare_text = gr.Textbox(label="text", lines=3, placeholder="Type or paste a customer message")
            flags_a, flags_b = flag_sets(flags_schema, "Flags B", is_open=True)
            compare_go = gr.Button("Compare", variant="primary")
            compare_headline = gr.Markdown()
            compare_fields = gr.Dataframe(label="Fields", interactive=False, wrap=True, column_widths=["14%", "38%", "38%", "10%"])
            compare_steps = gr.Dataframe(label="Steps", interactive=False)
            with gr.Row():
                result_a, result_b = gr.JSON(label="A"), gr.JSON(label="B")
            compare_go.click(
                compare,
                inputs=[compare_text, *flags_a.values(), *flags_b.values()],
                outputs=[compare_headline, compare_fields, compare_steps, result_a, result_b],
                api_name="compare",
            )
            with gr.Accordion("Flag this case, with the flags of A or B", open=False):
                variant = gr.Radio(["A", "B"], value="A", label="variant")
                compare_expected = expected_controls()
                compare_flag_go = gr.Button("Flag this case")
                compare_flagged = gr.Markdown()
            result_a.change(lambda a: (a or {}).get("category"), result_a, compare_expected[0], api_visibility="private")

            def flag_compare(request: gr.Request, text, which, *values):
                flags_a, flags_b = two_flag_sets(values[: 2 * len(flags_schema.model_fields)])
                flags = flags_a if which == "A" else flags_b
                rest = values[2 * len(flags_schema.model_fields) :]
                return save_flagged({"text": text}, flags, *rest, getattr(request, "username", None))

            compare_flag_go.click(
                flag_compare,
                [compare_text, variant, *flags_a.values(), *flags_b.values(), *compare_expected],
                compare_flagged,
                api_name="flag_compare_case",
            )

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
            batch_a, batch_b = flag_sets(flags_schema, "Flags B (used when comparing)", is_open=False)
            batch_go = gr.Button("Run batch report", variant="primary")
            batch_summary = gr.Markdown()
            report_files = gr.File(label="Report files (CSV, HTML, JSON)", file_count="multiple", interactive=False)
            plots = [gr.Plot(label=label) for label in ("Categories", "Confidence", "Confusion matrix")]
            with gr.Row():
                save_wrong = gr.Button("Save the misclassified rows as edge cases")
                saved_wrong = gr.Markdown()
            batch_json = gr.JSON(label="Summary")
            last_report = gr.State(None)  # the scored CSV's path lives on the server, never sent by a client
            batch_go.click(
                batch_report,
                inputs=[upload, use_eval, with_compare, baseline, *batch_a.values(), *batch_b.values()],
                outputs=[batch_summary, *plots, report_files, batch_json, last_report],
                api_name="batch_report",
            )

            def save_misclassified(report, request: gr.Request):
                if report is None or not Path(report[0]).exists():
                    return "Run a report on a labelled CSV first (an `expected_category` column)."
                path, summary, flags = report
                try:
                    saved = batch.save_misclassified(path, summary, model.Flags.model_validate(flags), getattr(request, "username", None))
                except (batch.BatchInputError, ValidationError, edge_cases.StoreUnavailable) as error:
                    raise gr.Error(str(error)) from None
                new = sum(is_new for _, is_new in saved)
                return f"{new} misclassified rows saved as edge cases ({len(saved) - new} were already there); see the Edge cases tab."

            save_wrong.click(save_misclassified, last_report, saved_wrong, api_name="save_misclassified")

        with gr.Tab("Edge cases") as cases_tab:
            gr.Markdown(
                "Every case flagged from the app, the API (`POST /cases`) or a file, run against the pipeline as it is now. "
                "A *fixed* case the pipeline now gets wrong is **newly broken**: a regression."
            )
            with gr.Row():
                verdict_filter = gr.Dropdown(["all", "broken", "newly fixed", "open", "fixed"], value="all", label="verdict")
                source_filter = gr.Dropdown(["all", *[s.value for s in model.CaseSource]], value="all", label="source")
                cases_go = gr.Button("Run every case", variant="primary")
            cases_headline = gr.Markdown()
            cases_rows = gr.State([])
            widths = ["8%", "30%", "12%", "10%", "12%", "6%", "6%", "7%", "9%"]  # every column on the screen
            cases_table = gr.Dataframe(interactive=False, wrap=True, label="Cases", column_widths=widths)
            filters = [cases_rows, verdict_filter, source_filter]

            def run_cases(verdict, source):
                headline, rows = check_all()
                return headline, rows, filter_cases(rows, verdict, source)

            outputs = [cases_headline, cases_rows, cases_table]
            cases_go.click(run_cases, [verdict_filter, source_filter], outputs, api_name="edge_cases")
            cases_tab.select(run_cases, [verdict_filter, source_filter], outputs, api_visibility="private")
            for control in (verdict_filter, source_filter):
                control.change(filter_cases, filters, cases_table, api_visibility="private")

        with gr.Tab("API"):
            curl, python = api_examples(api_url)
            gr.Markdown(
                f"The same pipeline is served over HTTP by the one server (`python app/main.py`). "
                f"Interactive documentation: [{api_url}/docs]({api_url}/docs) · schema: `{api_url}/openapi.json` · "
                f"readiness: `{api_url}/health` · settings: `{api_url}/info`."
            )
            gr.Code(curl, language="shell", label="curl")
            gr.Code(python, language="python", label="Python (requests)")
            gr.Markdown("Flags, all optional:")
            gr.Dataframe(
                pd.DataFrame(
                    [
                        {"flag": name, "default": json.dumps(f.default), "description": f.description}
                        for name, f in flags_schema.model_fields.items()
                    ]
                ),
                interactive=False,
                wrap=True,
            )
    return demo


def uploaded(path: str | Path) -> Path:
    """The path of a file uploaded to this app, refusing any other: links and `..` resolved first, URLs refused.
    The message names nothing on the server."""
    folder = Path(gr.utils.get_upload_folder()).resolve()
    given = Path(str(path))
    resolved = given.resolve()
    if given.is_symlink() or not resolved.is_relative_to(folder) or not resolved.is_file():
        raise gr.Error("Only a CSV file uploaded on this page can be scored: upload it again.")
    return resolved


def only_uploads(component: gr.File) -> gr.File:
    """Make a file input take only files uploaded to this app. A client can name any server path (or a URL)
    in the FileData it sends, and a Gradio app mounted on another server copies it into its cache unchecked;
    here the path is checked before that copy. (On the instance: a subclass would make Gradio write a .pyi.)"""
    copy, async_copy = component.move_resource_to_block_cache, component.async_move_resource_to_block_cache

    async def async_checked(path):
        return await async_copy(uploaded(path))

    component.move_resource_to_block_cache = lambda path: copy(uploaded(path))
    component.async_move_resource_to_block_cache = async_checked
    return component


def report_dir(max_age_s: float = 3600) -> Path:
    """A new folder for one batch report. Gradio serves a copy, so folders older than an hour are removed."""
    parent = Path(tempfile.gettempdir()) / "triage-reports"
    parent.mkdir(exist_ok=True)
    for old in parent.iterdir():
        if time.time() - old.stat().st_mtime > max_age_s:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=parent))


def batch_headline(summary: dict) -> str:
    parts = [f"**{summary['rows']} rows**, {summary['errors']} errors, {summary['rows_per_s']} rows/s"]
    if summary.get("metrics"):
        parts.append(f"accuracy **{summary['metrics']['accuracy']}**, macro-F1 {summary['metrics']['macro_f1']}")
    if summary.get("needs_human_share") is not None:
        parts.append(f"{summary['needs_human_share']:.0%} need a person")
    if "compare" in summary:
        parts.append(f"A and B agree on **{summary['compare']['agreement']}** of rows")
    if "baseline" in summary:
        b = summary["baseline"]
        parts.append(
            f"against the baseline: **{b['fixed']} fixed, {b['broken']} broken**, {b['changed_unlabelled']} changed without a label"
        )
    return " · ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the Gradio app alone (development).")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7861")))
    args = parser.parse_args()
    build().launch(server_name=args.host, server_port=args.port, theme=THEME, css=CSS)


if __name__ == "__main__":
    main()
