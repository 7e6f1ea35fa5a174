"""What the page shows, from the pipeline's values: an answer at a glance, its tables, one panel per step, the
differences between two variants, a batch summary's headline, the edge cases' rows, the API examples. No layout of
the page and no listeners: app/ui.py places these."""

import json
import re
from typing import Any

import gradio as gr
import pandas as pd
from pydantic import BaseModel

import model
from loop import edge_cases, review


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


ACRONYMS = {"pii": "PII", "id": "ID", "ids": "IDs", "vip": "VIP", "url": "URL"}


def label_of(name: str, field=None) -> str:
    """A field's or a value's label in words: a pydantic field's `title` where it has one, else its name: `customer_tier`
    -> "Customer tier", `mask_pii` -> "Mask PII", `web_form` -> "Web form", `vip` -> "VIP"."""
    if field is not None and field.title:
        return field.title
    words = " ".join(ACRONYMS.get(w, w) for w in name.split("_"))
    return words[:1].upper() + words[1:]


def answer_table(answer: BaseModel) -> pd.DataFrame:
    """Every field of an answer (its trace aside), labelled in words, each value as a person reads it: a field added to
    the schema is a new row, with nothing to change here."""
    shown = answer.model_dump(mode="json", exclude={"trace"})
    labels = [label_of(k, type(answer).model_fields[k]) for k in shown]
    return pd.DataFrame({"field": labels, "value": [_short(v) for v in shown.values()]})


def orders_table(result: model.Triage) -> pd.DataFrame:
    rows = [(o, "known order") for o in result.order_ids.known] + [(o, "no such order") for o in result.order_ids.unknown]
    return pd.DataFrame(rows, columns=["order number", "status"])


def articles_table(articles: list) -> pd.DataFrame:
    rows = [{"id": a["id"], "title": a["title"], "category": a["category"], "score": round(a["score"], 3)} for a in articles]
    return pd.DataFrame(rows, columns=["id", "title", "category", "score"])


LONG_TEXT = 80  # characters: a longer string is shown in a text box, not a table cell


def show_value(value: Any, label: str) -> None:
    """A step's output or details, readably: tables for records and for flat mappings, text, or JSON. Never a Markdown:
    inside gr.render, a Markdown that the next ticket's render puts a table in its place was handed that table's value
    in the browser (`TypeError: e.trim is not a function`, Gradio 6.31, tests/test_browser.py)."""
    value = rounded(value)
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        gr.Dataframe(pd.DataFrame(value), label=label, interactive=False, wrap=True)
    elif isinstance(value, dict) and value and not any(isinstance(v, (dict, list)) for v in value.values()):
        short = {k: v for k, v in value.items() if not (isinstance(v, str) and len(v) > LONG_TEXT)}
        if short:
            rows = pd.DataFrame({"name": list(short), "value": [str(v) for v in short.values()]})
            gr.Dataframe(rows, label=label, interactive=False, wrap=True)
        for name, text in value.items():  # long texts (a reply) in a box of their own, not cut in a table cell
            if name not in short:
                show_value(text, f"{label}: {name}")
    elif isinstance(value, str):
        gr.Textbox(value=value, label=label, interactive=False, lines=min(10, 2 + len(value) // 100))
    elif value in (None, {}, []):
        gr.Textbox(value="nothing", label=label, interactive=False)
    else:
        gr.JSON(value=value if isinstance(value, (dict, list)) else {label: value}, label=label)


def step_panels(trace: list[dict] | None) -> None:
    """One closed accordion per step of the trace, titled with its name and time; called inside gr.render."""
    if not trace:
        gr.Textbox(value="Triage a ticket to see each step of the pipeline here.", show_label=False, interactive=False)
        return
    for number, step in enumerate(trace, start=1):
        title = f"{number}. {step['step']} · {step['ms']:.1f} ms" + (" · skipped" if step.get("skipped") else "")
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
                    show_value(value, name)


# ---------------------------------------------------------------------------------------------
# Comparing two variants
# ---------------------------------------------------------------------------------------------
def differences(a: model.Triage, b: model.Triage) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Field by field and step by step, with what differs marked."""
    da, db = a.model_dump(mode="json", exclude={"trace"}), b.model_dump(mode="json", exclude={"trace"})
    fields = [
        {"field": label_of(k, field), "A": _short(da[k]), "B": _short(db[k]), "differs": "◆ differs" if da[k] != db[k] else ""}
        for k, field in type(a).model_fields.items()
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
    """A value as a cell a person reads: words, a tick, or nothing; never `None`, `True` or JSON."""
    if value is None or value == [] or value == {}:
        return ""
    if isinstance(value, bool):
        return "✓ yes" if value else "no"
    if isinstance(value, list):
        value = ", ".join(v["id"] if isinstance(v, dict) and "id" in v else _short(v) for v in value)
    elif isinstance(value, dict):
        value = "; ".join(f"{k.replace('_', ' ')}: {_short(v)}" for k, v in value.items() if _short(v))
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


def client_example(base_url: str = "http://localhost:7860") -> str:
    """A gradio_client example for the page's own Triage button, with named parameters (tests/test_ui.py runs it)."""
    ticket = model.Ticket.model_config["json_schema_extra"]["examples"][0]
    named = "".join(f"    {k}={json.dumps(v)},\n" for k, v in {**ticket, "top_k": 2}.items())
    return (
        "from gradio_client import Client\n\n"
        f'client = Client("{base_url}/")\n'
        "glance, fields, probabilities, reply, orders, articles, answer = client.predict(\n"
        f'{named}    api_name="/triage",\n'
        ")\n"
        'print(answer["category"], answer["team"], answer["needs_human"])\n'
    )


def flags_table(schema: type[BaseModel]) -> pd.DataFrame:
    """Each flag with its default (as JSON) and description."""
    rows = [{"flag": name, "default": json.dumps(f.default), "description": f.description} for name, f in schema.model_fields.items()]
    return pd.DataFrame(rows)


def batch_headline(summary: dict) -> str:
    parts = [f"**{summary['rows']} rows**, {summary['errors']} errors, {summary['rows_per_s']} rows/s"]
    if summary.get("metrics"):
        parts.append(f"accuracy **{summary['metrics']['accuracy']}**, macro-F1 {summary['metrics']['macro_f1']}")
    if summary.get("needs_human_share") is not None:
        parts.append(f"{summary['needs_human_share']:.0%} need a person")
    if "compare" in summary:
        b = summary["compare"]
        if b.get("agreement") is not None:
            parts.append(f"A and B agree on the category of **{b['agreement']:.0%}** of rows")
        if b.get("needs_human_share") is not None:
            parts.append(f"with B {b['needs_human_share']:.0%} need a person")
    if "baseline" in summary:
        b = summary["baseline"]
        parts.append(
            f"against the baseline: **{b['fixed']} fixed, {b['broken']} broken**, {b['changed_unlabelled']} changed without a label"
        )
    return " · ".join(parts)


# ---------------------------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------------------------
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
                "category when flagged": (case.answer or {}).get("category", ""),
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
        f"**{counts['broken']} newly broken** · {counts['newly fixed']} newly fixed"
        + (f" · {counts['training']} training examples (never counted as fixed)" if counts["training"] else "")
    )
    if store.skipped:  # lines of the store that are no edge case: named, for someone to mend by hand
        lines = ", ".join(str(s["line"]) for s in store.skipped[:10]) + (" ..." if len(store.skipped) > 10 else "")
        headline += f"\n\n{len(store.skipped)} lines of the store skipped as no edge case (lines {lines}): see `python -m loop cases check`"
    return headline, rows


def under_both(rows: list[dict], version: str) -> pd.DataFrame:
    """Each suite case's verdict on the served version (`rows`, from check_all) and on `version`, run in a process of
    its own (gate.side); the cases whose verdicts differ first."""
    from building import versions
    from loop import gate

    try:
        other = {c["id"]: c for c in gate.side(versions.folder(version), [], sets=False)["cases"]}
    except versions.VersionError as error:
        raise gr.Error(str(error)) from None
    both = []
    for r in rows:
        if r["id"] in other:
            theirs = other[r["id"]]
            both.append({"text": r["text"], "expected": r["expected"], "served": r["verdict"], version: theirs["verdict"]})
            both[-1].update(answer=theirs["now"], id=r["id"])
    both.sort(key=lambda r: r["served"] == r[version])
    return pd.DataFrame(both, columns=["text", "expected", "served", version, "answer", "id"])


def gate_report(version: str) -> tuple[str, pd.DataFrame]:
    """The last gate verdict of `version` (its gate.json, written by `python -m loop gate`): the verdict and every
    regression, each set's deltas with their intervals and McNemar's test, and the tickets whose answer changes."""
    from building import versions
    from loop import gate

    try:
        verdict = json.loads((versions.folder(version) / "gate.json").read_text())
    except versions.VersionError as error:
        raise gr.Error(str(error)) from None
    except (OSError, ValueError):
        raise gr.Error(f"{version} has not been through the gate: python -m loop gate {version}") from None
    significance = verdict["settings"]["significance"]
    said = [f"**{version} {'passes' if verdict['passed'] else 'fails'} the gate** against {verdict['against']}"]
    said += [f"- refused: {literal(f)}" for f in verdict["failures"]] or [f"- no significant regression at {significance} on any set"]
    said += ["", *gate.table(verdict["sets"], significance, shown=literal)]
    changed = [{"set": name} | row for name, s in verdict["sets"].items() for row in s["changed_rows"]]
    return "\n".join(said), pd.DataFrame(changed, columns=["set", "row", "text", "expected", "served", "candidate", "change"])


SUITE_COLUMNS = ["verdict", "text", "expected", "category when flagged", "now", "source", "status", "id", "note"]


def filter_cases(rows: list[dict], verdict: str, source: str) -> pd.DataFrame:
    keep = [r for r in rows if verdict in ("all", r["verdict"]) and source in ("all", r["source"])]
    return pd.DataFrame(keep, columns=SUITE_COLUMNS)


QUEUE_COLUMNS = ["state", "text", "expected", "category when flagged", "times", "source", "by", "id", "note"]


def review_queue(state: str) -> tuple[str, pd.DataFrame]:
    """The review queue: a headline with the count of each state, and the cases in `state` (oldest first, up to 500)."""
    try:
        counts = review.counts()
        page, total = review.cases(state, limit=500)
    except review.QueueUnavailable as error:
        raise gr.Error(str(error)) from None
    rows = []
    for f in page:
        case = f.case
        extra = ", ".join(f"{k}={v}" for k, v in case.expected.model_dump(mode="json", exclude_none=True).items() if k != "category")
        rows.append(
            {
                "state": f.state,
                "text": case.ticket.text,
                "expected": case.expected.category.value + (f" ({extra})" if extra else ""),
                "category when flagged": (case.answer or {}).get("category", ""),
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
