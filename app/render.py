"""What the page shows, from the pipeline's values: an answer at a glance, its tables and panels, one panel per step,
the differences between two variants, a batch summary's headline, the edge cases' rows, the API examples. No layout of
the page and no listeners: app/ui.py places these. Everything is read from the contract (building/contract.py) and the
pipeline's schemas: a field is shown as its type suggests, never by its name."""

import ast
import json
import re
import tempfile
import typing
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from pydantic import BaseModel

import model
from building import contract, versions
from loop import edge_cases, review
from loop.commands import counted
from reporting import reports

ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])(?:/[^/\s'\"`()\[\],;]+){2,}/?")  # /a/b and longer, never a URL's path


def public(message: str) -> str:
    """An error's message as a client may see it: the server's folders (the versions', the project's, the home and
    temporary ones) left out of every path, any other absolute path cut to its name. A message names what is wrong
    (a version, a file), never where the server keeps it."""
    folders = [versions.versions_dir(), model.ROOT, Path(gr.utils.get_upload_folder()), Path(tempfile.gettempdir()), Path.home()]
    for folder in sorted({str(f) for p in folders for f in (p, p.resolve())} - {"/"}, key=len, reverse=True):
        message = message.replace(folder + "/", "").replace(folder, Path(folder).name)
    return ABSOLUTE_PATH.sub(lambda m: Path(m.group()).name, message)


def refusal(error: Exception | str) -> gr.Error:
    """The gr.Error a handler raises for `error`: its message, public (no server path)."""
    return gr.Error(public(str(error)))


def version_folder(version: str) -> Path:
    """The folder of a version a client named; gr.Error when the name is no version's or no such version exists."""
    try:
        folder = versions.folder(version)
    except versions.VersionError as error:
        raise refusal(error) from None
    if not folder.is_dir():
        raise gr.Error(f"no version {version}: python -m loop versions lists them")
    return folder


def rounded(value: Any) -> Any:
    """Floats rounded for reading; everything else as it is."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


ACRONYMS = {"pii": "PII", "id": "ID", "ids": "IDs", "url": "URL"}


def label_of(name: str, field=None) -> str:
    """A field's or a value's label in words: a pydantic field's `title` where it has one, else its name: `unit_price`
    -> "Unit price", `source_url` -> "Source URL", `item_ids` -> "Item IDs"."""
    if field is not None and field.title:
        return field.title
    words = " ".join(ACRONYMS.get(w, w) for w in str(name).split("_"))
    return words[:1].upper() + words[1:]


def value_words(value: Any, field=None) -> str:
    """A value as a person reads it: an enum's or a Literal's value in words (`web_form` -> "Web form"), a bool as
    yes or no, nothing for None; anything else as a cell shows it (`_short`)."""
    if field is not None and value is not None and contract.choices(field.annotation):
        return label_of(str(value))
    return _short(value)


def in_words(name: str, field=None) -> str:
    """`label_of` in the middle of a sentence: "expected unit price", "item IDs"."""
    words = label_of(name, field)
    return words if words[:2].isupper() else words[:1].lower() + words[1:]


# ---------------------------------------------------------------------------------------------
# The shapes of the answer: which fields are scalars for the headline, which get a panel of their own
# ---------------------------------------------------------------------------------------------


def panel_kind(field) -> str | None:
    """How an output field gets a panel of its own: `records` (a list of models: a table, the model's fields as columns),
    `fields` (a nested model: a field/value table), `prose` (a list of scalars, joined; or an optional string, such as a
    long answer written out), `json` (dicts and anything else); None for a scalar, which the answer's table and headline show."""
    base = contract.base_type(field.annotation)
    if typing.get_origin(base) is list:
        (item,) = typing.get_args(base) or (Any,)
        return "records" if contract.model_of(item) else "prose" if contract.is_scalar(item) else "json"
    if contract.model_of(base):
        return "fields"
    if base is str and contract.is_optional(field.annotation):
        return "prose"
    return None if contract.is_scalar(base) else "json"


def panel_fields() -> dict[str, Any]:
    """The output fields that get a panel of their own, in the schema's order, by name: (field, kind)."""
    kinds = {name: (field, panel_kind(field)) for name, field in contract.output_fields().items()}
    return {name: (field, kind) for name, (field, kind) in kinds.items() if kind}


def record_columns(field) -> list[str]:
    """A list of models' table columns: the model's fields, in words."""
    return [label_of(name, f) for name, f in _record_fields(field).items()]


def _record_fields(field) -> dict[str, Any]:
    (item,) = typing.get_args(contract.base_type(field.annotation))
    return contract.model_of(item).model_fields


def panel_value(field, kind: str, value: Any) -> Any:
    """What a panel shows of `value` (the field's JSON value)."""
    if kind == "records":
        fields = _record_fields(field)
        rows = [[_cell(row.get(name), f) for name, f in fields.items()] for row in value or []]
        return pd.DataFrame(rows, columns=record_columns(field))
    if kind == "fields":
        shown = contract.model_of(field.annotation).model_fields
        value = value or {}
        labels = [label_of(k, shown.get(k)) for k in value]
        return pd.DataFrame({"field": labels, "value": [value_words(v, shown.get(k)) for k, v in value.items()]})
    if kind == "prose":
        return ", ".join(str(_cell(v)) for v in value) if isinstance(value, list) else value or ""
    return value if isinstance(value, (dict, list)) else {"value": value}


def _cell(value: Any, field=None) -> Any:
    """A table cell: a number as a number (rounded), anything else in words."""
    return rounded(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value_words(value, field)


def has_probabilities() -> bool:
    """Whether the answer has class probabilities to show: every class's (PROBABILITIES) or the label's (PROBABILITY)."""
    return bool(contract.probabilities() or (contract.label() and contract.probability()))


def class_probabilities(answer: BaseModel, trace: list[dict]) -> dict[str, float] | None:
    """Every class's probability from the debug trace (PROBABILITIES), else the label's own (PROBABILITY)."""
    if contract.probabilities():
        step, key = contract.probabilities()
        found = next((s["details"].get(key) for s in trace if s["step"] == step), None)
        if found:
            return {label_of(str(k)): v for k, v in found.items()}  # each class in words, as the headline names it
    label, probability = contract.label(), contract.probability()
    if label and probability:
        return {label_of(str(answer.model_dump(mode="json")[label])): getattr(answer, probability)}
    return None


def headline_fields() -> list[str]:
    """The output's scalar fields a headline names: the label first, its probability, the needs-person field; else, or
    after them, the first few other scalars."""
    named = [n for n in (contract.label(), contract.probability(), contract.needs_person()) if n]
    others = [
        n
        for n, f in contract.output_fields().items()
        if n not in named and panel_kind(f) is None and not contract.is_optional(f.annotation)
    ]
    return named + others[: 3 if named else 4]


def key_fields() -> list[str]:
    """The few fields an example prints of an answer: the label and the needs-person field, else the first scalars."""
    named = [n for n in (contract.label(), contract.needs_person()) if n]
    return named or headline_fields()[:3]


# ---------------------------------------------------------------------------------------------
# Rendering a result and its trace
# ---------------------------------------------------------------------------------------------
def at_a_glance(result: BaseModel) -> str:
    """The answer in two lines: the label's value as the heading (where there is a label), then its probability, a few
    other scalar fields and whether a person must answer."""
    shown, fields = result.model_dump(mode="json"), contract.output_fields()
    label, probability, person = contract.label(), contract.probability(), contract.needs_person()
    parts = []
    for name in headline_fields():
        if name not in (label, person):
            value = f"{shown[name]:.2f}" if name == probability else value_words(shown[name], fields[name])
            parts.append(f"{label_of(name, fields[name])} **{value}**")
    if person:
        parts.append("**a person must answer**" if shown[person] else "**no person needed**")
    return f"### {label_of(str(shown[label])) if label else 'The answer'}\n" + " · ".join(parts)


def answer_table(answer: BaseModel) -> pd.DataFrame:
    """Every field of an answer (its trace aside), labelled in words, each value as a person reads it: a field added to
    the schema is a new row, with nothing to change here."""
    shown, fields = answer.model_dump(mode="json", exclude={"trace"}), type(answer).model_fields
    labels = [label_of(k, fields[k]) for k in shown]
    return pd.DataFrame({"field": labels, "value": [value_words(v, fields[k]) for k, v in shown.items()]})


LONG_TEXT = 80  # characters: a longer string is shown in a text box, not a table cell


def show_value(value: Any, label: str) -> None:
    """A step's output or details, readably: tables for records and for flat mappings, text, or JSON. Never a Markdown:
    inside gr.render, a Markdown that the next input's render puts a table in its place was handed that table's value
    in the browser (`TypeError: e.trim is not a function`, Gradio 6.31, tests/test_browser.py)."""
    value, fields = rounded(value), contract.output_fields()  # a value named as an output field is shown as the answer's
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        rows = pd.DataFrame([{label_of(k): _cell(v, fields.get(k)) for k, v in row.items()} for row in value])
        gr.Dataframe(rows, label=label, interactive=False, wrap=True)
    elif isinstance(value, dict) and value and not any(isinstance(v, (dict, list)) for v in value.values()):
        short = {k: v for k, v in value.items() if not (isinstance(v, str) and len(v) > LONG_TEXT)}
        if short:  # names in words, values as cells say them: `Mask PII yes`, `Reply` empty, never `True`, `None`
            rows = pd.DataFrame({"name": [label_of(k) for k in short], "value": [str(_cell(v, fields.get(k))) for k, v in short.items()]})
            gr.Dataframe(rows, label=label, interactive=False, wrap=True)
        for name, long in value.items():  # long texts in a box of their own, not cut in a table cell
            if name not in short:
                show_value(long, f"{label}: {label_of(name)}")
    elif isinstance(value, str):
        gr.Textbox(value=value, label=label, interactive=False, lines=min(10, 2 + len(value) // 100))
    elif value in (None, {}, []):
        gr.Textbox(value="nothing", label=label, interactive=False)
    else:
        gr.JSON(value=value if isinstance(value, (dict, list)) else {label: value}, label=label)


def step_panels(trace: list[dict] | None) -> None:
    """One closed accordion per step of the trace, titled with its name and time; called inside gr.render."""
    if not trace:
        gr.Textbox(value="Run an input to see each step of the pipeline here.", show_label=False, interactive=False)
        return
    for number, step in enumerate(trace, start=1):
        title = f"{number}. {label_of(step['step'])} · {step['ms']:.1f} ms" + (" · skipped" if step.get("skipped") else "")
        with gr.Accordion(title, open=False, elem_classes=["step-panel"]):
            if step.get("skipped"):
                gr.Textbox(value=step["skipped"], label="skipped by a flag", interactive=False)
                continue
            show_value(step["output"], "output")
            details = step.get("details") or {}
            plain = {k: v for k, v in details.items() if not isinstance(v, (dict, list))}
            if plain:  # the scalar details together in one small table
                show_value(plain, "details")
            for name, value in details.items():
                if name not in plain:
                    show_value(value, label_of(name))


# ---------------------------------------------------------------------------------------------
# Comparing two variants
# ---------------------------------------------------------------------------------------------
def differences(a: BaseModel, b: BaseModel) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Field by field and step by step, with what differs marked."""
    da, db = a.model_dump(mode="json", exclude={"trace"}), b.model_dump(mode="json", exclude={"trace"})
    fields = [
        {
            "field": label_of(k, field),
            "A": value_words(da[k], field),
            "B": value_words(db[k], field),
            "differs": "◆ differs" if da[k] != db[k] else "",
        }
        for k, field in type(a).model_fields.items()
        if k != "trace"
    ]
    steps = []
    tb = {s.step: s for s in getattr(b, "trace", None) or []}
    for s in getattr(a, "trace", None) or []:
        other = tb.get(s.step)
        same = other is not None and (s.output, s.details, s.skipped) == (other.output, other.details, other.skipped)
        steps.append(
            {
                "step": label_of(s.step),
                "A": "skipped" if s.skipped else f"{s.ms:.1f} ms",
                "B": "missing" if other is None else ("skipped" if other.skipped else f"{other.ms:.1f} ms"),
                "differs": "" if same else "◆ differs",
            }
        )
    return pd.DataFrame(fields), pd.DataFrame(steps, columns=["step", "A", "B", "differs"])


def flag_differences(schema: type[BaseModel], a: dict, b: dict) -> str:
    """The flags on which B differs from A, by their titles, each with both values (`**Auto reply** (A yes, B no)`);
    empty where they agree. `a`, `b`: flags as given (a default left out)."""
    fa, fb = (schema.model_validate(given).model_dump(mode="json") for given in (a, b))
    fields = schema.model_fields
    return ", ".join(
        f"**{label_of(n, f)}** (A {value_words(fa[n], f)}, B {value_words(fb[n], f)})" for n, f in fields.items() if fa[n] != fb[n]
    )


def _short(value: Any) -> str:
    """A value as a cell a person reads: words, yes or no, or nothing; never `None`, `True` or JSON."""
    if value is None or value == [] or value == {}:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        value = ", ".join(v["id"] if isinstance(v, dict) and "id" in v else _short(v) for v in value)
    elif isinstance(value, dict):
        value = "; ".join(f"{in_words(k)}: {_short(v)}" for k, v in value.items() if _short(v))
    shown = str(rounded(value))
    return shown if len(shown) <= 120 else shown[:117] + "..."


# ---------------------------------------------------------------------------------------------
# API examples, built from the schemas
# ---------------------------------------------------------------------------------------------
def _python(value: Any) -> str:
    """`value` written as Python: as JSON where that reads the same in Python (strings, numbers, lists), else repr."""
    written = json.dumps(value)
    try:
        return written if ast.literal_eval(written) == value else repr(value)
    except (ValueError, SyntaxError):
        return repr(value)


def api_examples(base_url: str = "http://localhost:7860") -> tuple[str, str]:
    """A curl and a Python (requests) example for POST /predict: the Input's own example."""
    body = contract.input_example()
    printed = ", ".join(f'answer["{k}"]' for k in key_fields())
    curl = f"curl -s -X POST {base_url}/predict -H 'Content-Type: application/json' \\\n  -d '{json.dumps(body)}'"
    python = (
        "import requests\n\n"
        f"body = {_python(body)}\n"
        f'response = requests.post("{base_url}/predict", json=body, timeout=30)\n'
        "response.raise_for_status()\n"
        "answer = response.json()\n"
        f"print({printed})\n"
    )
    return curl, python


def run_outputs() -> list[str]:
    """The names of what the page's Run button (api_name "/run") returns to gradio_client, in order."""
    return ["glance", "fields", *(["probabilities"] if has_probabilities() else []), *panel_fields(), "answer"]


def client_example(base_url: str = "http://localhost:7860") -> str:
    """A gradio_client example for the page's own Run button, with named parameters (tests/test_ui.py runs it)."""
    named = "".join(f"    {k}={_python(v)},\n" for k, v in contract.input_example().items())
    printed = ", ".join(f'answer["{k}"]' for k in key_fields())
    return (
        "from gradio_client import Client\n\n"
        f'client = Client("{base_url}/")\n'
        f"{', '.join(run_outputs())} = client.predict(\n"
        f'{named}    api_name="/run",\n'
        ")\n"
        f"print({printed})\n"
    )


def flags_table(schema: type[BaseModel]) -> pd.DataFrame:
    """Each flag with its default (as JSON) and description."""
    rows = [{"flag": name, "default": json.dumps(f.default), "description": f.description} for name, f in schema.model_fields.items()]
    return pd.DataFrame(rows, columns=["flag", "default", "description"])


def batch_headline(summary: dict) -> str:
    """A batch summary in a line: rows and speed; accuracy where labelled; the share a person must answer where the
    pipeline has that notion; variant B and the baseline where there are."""
    parts = [f"**{counted(summary['rows'], 'row')}**, {counted(summary['errors'], 'error')}, {summary['rows_per_s']} rows/s"]
    if summary.get("metrics"):
        parts.append(f"accuracy **{summary['metrics']['accuracy']}**, macro-F1 {summary['metrics']['macro_f1']}")
    if summary.get(PERSON_SHARE) is not None:
        parts.append(f"{summary[PERSON_SHARE]:.0%} need a person")
    if "compare" in summary:
        b = summary["compare"]
        parts.append(compare_said(b, summary["rows"] - summary["errors"]))
        if b.get(PERSON_SHARE) is not None:
            parts.append(f"with B {b[PERSON_SHARE]:.0%} need a person")
    if "baseline" in summary:
        b = summary["baseline"]
        parts.append(
            f"against the baseline: **{b['fixed']} fixed, {b['broken']} broken**, {b['changed_unlabelled']} changed without a label"
        )
    return " · ".join(parts)


def compare_said(compared: dict, scored: int) -> str:
    """How A and B differ over a batch, on any output field, not only the label: the rows where some field differs,
    and the fields that differ, in words, each with the rows where it differs (else its share of agreeing rows)."""
    fields = contract.output_fields()
    per_field, counts = compared.get("agreement_per_field") or {}, compared.get("differing_per_field") or {}
    differing = [f for f, share in per_field.items() if share is not None and share < 1]
    total = compared.get("differing_total")
    if total is None and compared.get("agreement") is not None:
        total = round((1 - compared["agreement"]) * scored)
    if not total and not differing:
        return "A and B agree on every field of every row"

    def field_said(f: str) -> str:
        return f"{label_of(f, fields.get(f))} ({counted(counts[f], 'row') if f in counts else f'{per_field[f]:.0%} agree'})"

    which = ", ".join(map(field_said, differing))
    rows = f"**{counted(total, 'row')}** of {scored}" if total is not None else "some rows"
    return f"A and B differ on {rows}" + (f": {which}" if which else "")


PERSON_SHARE = "needs_person_share"  # the summary's share of answers a person must answer (reporting/reports.py lists its keys)


ERROR_COLUMNS = ["row", "field", "why"]
SHOWN_ERRORS = reports.FAILED_SHOWN  # the Batch tab lists the first rows that failed, as the HTML page does; the CSV has all


def failed_rows(summary: dict, limit: int = SHOWN_ERRORS) -> tuple[str, pd.DataFrame]:
    """The rows a batch could not score: a line with their count, and a table of the first `limit`, each with its row
    number (as the report numbers rows), the fields it names and why, in words (reports.failed_rows, whose fields are
    code names)."""
    failed, fields = reports.failed_rows(summary, limit), model.Input.model_fields

    def named(name: str) -> str:
        return label_of(name, fields.get(name.split(".")[0]))

    def why(said: str) -> str:  # `unit_price: Input should be ...; note: ...` as `Unit price: ...; Note: ...`
        parts = [part.partition(": ") for part in said.split("; ")]
        return "; ".join(
            f"{named(head)}: {rest}" if sep and head.split(".")[0] in fields else head + sep + rest for head, sep, rest in parts
        )

    rows = [
        {"row": r["row"], "field": ", ".join(map(named, filter(None, r["field"].split(", ")))), "why": why(r["why"])}
        for r in failed["rows"]
    ]
    total = len(rows) + failed["more"]
    if not total:
        return "", pd.DataFrame(rows, columns=ERROR_COLUMNS)
    shown = f"the first {len(rows)}" if failed["more"] else "each"
    said = f"**{counted(total, 'row')} could not be scored**: {shown} below, every one in the report's CSV (its `error` column)."
    return said, pd.DataFrame(rows, columns=ERROR_COLUMNS)


def allowed_values(schema: type[BaseModel] | None = None) -> pd.DataFrame:
    """Each input column a CSV may have: the field's column name as the CSV must spell it, whether it is required, and
    what it takes: an enum's or a Literal's values as the CSV must spell them, each with its words (`web_form` (Web
    form)), else the field's type; its default."""
    rows = []
    for name, field in (schema or model.Input).model_fields.items():
        values = contract.choices(field.annotation)
        base = contract.base_type(field.annotation)
        if values:
            takes = ", ".join(f"{v} ({label_of(str(v))})" if label_of(str(v)) != str(v) else str(v) for v in values)
        else:
            takes = "yes or no (true/false)" if base is bool else {str: "text", int: "a whole number", float: "a number"}.get(base, "JSON")
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        default = getattr(default, "value", default)  # an enum's default as the CSV spells it
        rows.append(
            {
                "column": name,
                "field": label_of(name, field),
                "required": _short(field.is_required()),
                "values": takes,
                "default": _short(default),
            }
        )
    return pd.DataFrame(rows, columns=["column", "field", "required", "values", "default"])


# ---------------------------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------------------------
def literal(said: str) -> str:
    """`text` shown as written inside Markdown, as a code span (fenced by more backticks than any run in it): an input's
    `![x](http://...)`, `<b>` or bare URL stays text, never an image the browser fetches, markup or a link."""
    fence = "`" * (max(map(len, re.findall(r"`+", said)), default=0) + 1)
    return f"{fence} {said} {fence}"


TEXT = contract.text_field() or "input"  # the tables' column for a case's input: its text field, or every field
WHEN_FLAGGED = f"{in_words(contract.label()) if contract.label() else 'answer'} when flagged"


def input_shown(one: BaseModel) -> str:
    """What a table shows of an input: its text field, else its fields in a line."""
    return getattr(one, TEXT) if contract.text_field() else _short(one.model_dump(mode="json"))


def expected_shown(expected: BaseModel) -> str:
    """An expected answer in a cell, in words: the label's value, then any other field it sets: `Approve (risk: low)`."""
    given, fields = expected.model_dump(mode="json", exclude_none=True), type(expected).model_fields
    label = contract.label()
    head = value_words(given.pop(label), fields[label]) if label in given else ""
    extra = ", ".join(f"{in_words(k, fields[k])}: {value_words(v, fields[k])}" for k, v in given.items())  # "yes", "no"
    return f"{head} ({extra})" if head and extra else head or extra


def answer_shown(answer: dict | None, with_probability: bool = False) -> str:
    """An answer (a dict of its fields, as the store keeps it) in a cell: the label's value (with its probability), else
    the fields an expected answer may set."""
    if not answer:
        return ""
    label, probability, fields = contract.label(), contract.probability(), contract.output_fields()
    if label:
        said = value_words(answer.get(label), fields[label])
        has = with_probability and probability and isinstance(answer.get(probability), (int, float))
        return f"{said} ({answer[probability]:.2f})" if has else said
    return ", ".join(f"{in_words(n, fields[n])}: {value_words(answer[n], fields[n])}" for n in model.Expected.model_fields if n in answer)


def check_all() -> tuple[str, list[dict]]:
    """Every edge case against the pipeline now: a headline with the counts, and one row a case."""
    try:
        store = edge_cases.read_cases()
        results = edge_cases.check_cases(store.cases)
    except edge_cases.StoreUnavailable as error:
        raise refusal(error) from None
    rows = []
    for r in results:
        case = r["case"]
        rows.append(
            {
                "verdict": r["verdict"],
                TEXT: input_shown(case.ticket),
                "expected": expected_shown(case.expected),
                WHEN_FLAGGED: answer_shown(case.answer),
                "now": answer_shown(r["answer_now"], with_probability=True),
                "source": case.source.value,
                "status": case.status.value,
                "id": case.id,
                "note": case.note,
            }
        )
    counts = edge_cases.verdict_counts(rows)
    headline = (
        f"**{counted(len(rows))}**: {counts['fixed']} fixed · {counts['open']} still open · "
        f"**{counts['broken']} newly broken** · {counts['newly fixed']} newly fixed"
        + (f" · {counted(counts['training'], 'training example')} (never counted as fixed)" if counts["training"] else "")
    )
    if store.skipped:  # lines of the store that are no edge case: named, for someone to mend by hand
        lines = ", ".join(str(s["line"]) for s in store.skipped[:10]) + (" ..." if len(store.skipped) > 10 else "")
        n = len(store.skipped)
        said = f"{counted(n, 'line')} of the store skipped as no edge case ({'line' if n == 1 else 'lines'} {lines})"
        headline += f"\n\n{said}: see `python -m loop cases check`"
    return headline, rows


def under_both(rows: list[dict], version: str) -> list[dict]:
    """Each suite case's verdict on the served version (`rows`, from check_all) and on `version`, run in a process of
    its own (gate.side), with `version`'s answer on what the case expects: one row a case, for `both_table`."""
    from loop import gate

    try:
        other = {c["id"]: c for c in gate.side(version_folder(version), [], sets=False)["cases"]}
    except versions.VersionError as error:
        raise refusal(error) from None
    both = []
    for r in rows:
        if r["id"] in other:
            theirs = other[r["id"]]
            both.append({**r, "version": version, "candidate": theirs["verdict"], "answer": answer_words(theirs.get("now"))})
    return both


def both_table(both: list[dict], verdict: str = "all", source: str = "all") -> pd.DataFrame:
    """The cases under both versions (`under_both`) that the tab's filters keep: a verdict on either version, a source;
    the cases whose verdicts differ first. Each column says whose it is: the served version's verdict, the candidate's
    verdict and its answer (on the fields the case expects)."""
    version = both[0]["version"] if both else "the candidate"
    on, answer = f"verdict on {version}", f"answer on {version}"
    kept = [r for r in both if verdict in ("all", r["verdict"], r["candidate"]) and source in ("all", r["source"])]
    shown = [
        {TEXT: r[TEXT], "expected": r["expected"], "verdict served": r["verdict"], on: r["candidate"], answer: r["answer"], "id": r["id"]}
        for r in kept
    ]
    shown.sort(key=lambda r: r["verdict served"] == r[on])
    return pd.DataFrame(shown, columns=[TEXT, "expected", "verdict served", on, answer, "id"])


def answer_words(said: str | None) -> str:
    """An answer as loop/edge_cases.py:in_words writes it (`billing needs_human=True`), in the words of the tables
    (`Billing (needs human: yes)`)."""
    fields, label = contract.output_fields(), contract.label()
    head, extra = "", []
    for word in (said or "").split(" "):
        name, is_pair, value = word.partition("=")
        if is_pair and name in fields:
            field, base = fields[name], contract.base_type(fields[name].annotation)
            extra.append(f"{in_words(name, field)}: {value_words(value == 'True' if base is bool else value, field)}")
        elif word:
            head = f"{head} {word}".strip()
    head = value_words(head, fields[label]) if head and label else head
    return f"{head} ({', '.join(extra)})" if head and extra else head or ", ".join(extra)


def gate_report(version: str) -> tuple[str, pd.DataFrame]:
    """The last gate verdict of `version` (its gate.json, written by `python -m loop gate`): the verdict and every
    regression, each set's deltas with their intervals and McNemar's test, and the inputs whose answer changes."""
    from loop import gate

    try:
        verdict = json.loads((version_folder(version) / "gate.json").read_text())
    except (OSError, ValueError):
        raise gr.Error(f"{version} has not been through the gate: python -m loop gate {version}") from None
    try:
        significance = verdict["settings"]["significance"]
        said = [f"**{version} {'passes' if verdict['passed'] else 'fails'} the gate** against {verdict['against']}"]
        said += [f"- refused: {literal(f)}" for f in verdict["failures"]] or [f"- no significant regression at {significance} on any set"]
        said += ["", *gate.table(verdict["sets"], significance, shown=literal)]
        changed = [{"set": name} | row for name, s in verdict["sets"].items() for row in s["changed_rows"]]
        label = contract.output_fields().get(contract.label() or "")
        for row in changed:  # the label's values in words, as in every other table
            row |= {k: value_words(row[k], label) for k in ("expected", "served", "candidate") if k in row and label}
    except (KeyError, TypeError, AttributeError, ValueError):
        raise gr.Error(f"{version}'s gate.json is not a gate record: python -m loop gate {version} writes it again") from None
    columns = [*changed[0]] if changed else ["set", "row", TEXT, "expected", "served", "candidate", "change"]
    return "\n".join(said), pd.DataFrame(changed, columns=columns)


SUITE_COLUMNS = ["verdict", TEXT, "expected", WHEN_FLAGGED, "now", "source", "status", "id", "note"]


def filter_cases(rows: list[dict], verdict: str, source: str) -> pd.DataFrame:
    keep = [r for r in rows if verdict in ("all", r["verdict"]) and source in ("all", r["source"])]
    return pd.DataFrame(keep, columns=SUITE_COLUMNS)


QUEUE_COLUMNS = ["state", TEXT, "expected", WHEN_FLAGGED, "times", "source", "by", "id", "note"]


def review_queue(state: str) -> tuple[str, pd.DataFrame]:
    """The review queue: a headline with the count of each state, and the cases in `state` (oldest first, up to 500)."""
    try:
        counts = review.counts()
        page, total = review.cases(state, limit=500)
    except review.QueueUnavailable as error:
        raise refusal(error) from None
    rows = []
    for f in page:
        case = f.case
        rows.append(
            {
                "state": f.state,
                TEXT: input_shown(case.ticket),
                "expected": expected_shown(case.expected),
                WHEN_FLAGGED: answer_shown(case.answer),
                "times": f.times_flagged,
                "source": case.source.value,
                "by": case.created_by or "",
                "id": case.id,
                "note": case.note,
            }
        )
    headline = (
        f"**Review queue: {counts['pending']} pending** · {counts['accepted']} accepted into the suite · {counts['rejected']} "
        f"rejected. Showing {len(rows)} of {total} {state}."
    )
    return headline, pd.DataFrame(rows, columns=QUEUE_COLUMNS)


LIVE_COLUMNS = ["id", TEXT, "differs on", "served answer", "candidate answer", "right"]


def live_record(version: str) -> tuple[str, pd.DataFrame]:
    """A candidate's live record in shadow (review.shadow_record): a headline with the requests it answered, the share
    on which each output field agrees and the verdicts, and its newest disagreements (up to 200), each side's values of
    the fields that differ."""
    try:
        record = review.shadow_record(version, listed=200)
    except review.QueueUnavailable as error:
        raise refusal(error) from None
    fields = contract.output_fields()
    if not record["requests"]:
        said = f"{literal(version)} has answered no request in shadow yet (`python -m loop shadow VERSION`, then restart the server)."
        return said, pd.DataFrame(columns=LIVE_COLUMNS)
    agreement = ", ".join(f"{in_words(f, fields[f])} {share:.0%}" for f, share in record["agreement"].items())
    judged = record["judged"]
    failed = f", {record['failed']} failed" if record["failed"] else ""
    said = (
        f"{literal(version)} **in shadow: {counted(record['requests'], 'request')}**, {record['all_fields_agree']} with every field "
        f"agreeing{failed}. Agreement: {agreement}. **{counted(record['to_judge'], 'disagreement')} to judge** (on a field "
        f"an edge case can expect; pairs that differ only elsewhere count above, unlisted). Disagreements judged: served right "
        f"{judged['served']}, candidate right {judged['candidate']}, neither {judged['neither']}."
    )
    rows = []
    for d in record["disagreements"]:
        one = model.Input.model_validate({k: v for k, v in d["input"].items() if k != "flags"})
        shown = {side: "; ".join(f"{label_of(f, fields.get(f))}: {value_words(d[side].get(f), fields.get(f))}" for f in d["fields"])
                 for side in ("served_answer", "candidate_answer")}  # fmt: skip
        differs = ", ".join(in_words(f, fields.get(f)) for f in d["fields"])
        right = {"served": "the served version", "candidate": "the candidate", "neither": "neither"}.get(d["right"], "")
        rows.append([d["id"], input_shown(one), differs, shown["served_answer"], shown["candidate_answer"], right])
    return said, pd.DataFrame(rows, columns=LIVE_COLUMNS)
