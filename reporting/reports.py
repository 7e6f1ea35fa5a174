"""What a batch report says and shows, computed from a scored CSV alone: the summary (tallies, metrics, the
comparison of two variants or against a baseline), its figures, and the HTML page (reporting/templates/report.html).
Everything here is derived from the contract (building/contract.py): no field of the worked example is named.

The summary's keys (the .json beside a scored CSV, what `batch.report` returns; the app reads them from this list):

    always       rows, errors, error_rows [{row, field, <text field>, error}] (the first 200; field: the Input
                 field the error names, "" where the pipeline failed), error_rows_more (failed, not listed), tallies
                 {field: {value: rows}} (every enum or bool output but the label and the needs-a-person field), numbers {field: {rows, mean,
                 min, max}} (every number output but the probability), elapsed_s, rows_per_s, title,
                 input, flags, compare_flags, columns {Input field: its column in the scored CSV}, text_column,
                 label_column, slice_columns, pipeline_version, version, model, encoder, data, artifacts_built_at,
                 outputs {".csv", ".html", ".json": file names}; resumed_from_row, shards when a run resumed or merged
    a label      label (the field's name), label_distribution {value: rows}                     (contract.label())
    and a label  metrics {labelled_rows, accuracy, macro_f1, per_class {class: {precision, recall, f1, support}} (only
    column       classes with rows), confusion_matrix {labels, rows_expected_columns_predicted}}, misclassified_rows,
                 misclassified_total, per_slice {column: [{<column>, [<label>,] rows, correct, accuracy}]}
    probability  probability (the field's name), probability_mean, probability_histogram {bin_edges, counts}
    needs_person needs_person (the field's name), needs_person_share
    --compare    compare {B's own keys above from rows to per_slice, agreement (share of rows where every output field
                 agrees), agreement_per_field {field: share}, differing_rows, differing_total (rows where any output
                 field differs), differing_per_field {field: rows}}
    --baseline   baseline {baseline, field, changed (rows where any output field changed), fixed, broken,
                 changed_unlabelled, still_wrong, changed_other_fields (the label kept, another field changed),
                 changed_per_field, rows {fixed, broken, changed_unlabelled, changed_other_fields}, sides {baseline,
                 now}, metric_deltas}

Listed rows: misclassified_rows {row, <text field>, expected, <label>, <probability>}; differing_rows {row, <text
field>, fields, A {field: its cells in a line}, B {...}}; baseline rows {row, <text field>, fields, expected, before,
now} (the label's values; changed_other_fields and without a label: before {field: ...}, now {field: ...}).
`failed_rows()` gives the first rows that failed as people read them (row, field, why) and how many more.
`<text field>` is contract.text_field(), or every Input field where it has none. `figures()` gives the app three
plotly figures in this order, None where the pipeline has none: label distribution, probability, confusion matrix.
Before issue 33: category_distribution, mean_confidence, confidence_histogram, needs_human_share, per_intent,
team_distribution (gone: a free-text field) and compare.agreement (the label's; now agreement_per_field[label]).

The scored CSV's output columns come from `model.Output`'s schema alone (`field_columns`): a scalar, enum, bool or
optional field is one column of its name (an empty cell for None); a nested model is flattened into <field>_<sub>
(recursively); a list of models gives <field>_count and its first item's fields as <field>_first_<sub>; a list of
strings or numbers is one cell, its items joined by "; " (`list_cell`; a JSON array where that would not read back,
`list_value` reads both); a dict, or anything else, is JSON. Then `error`.

Nothing here writes a file: `batch.py` streams, scores and writes; it calls `summary()`, `report_html()` and, for the
edge cases, `case_rows()`, `cases_summary()` and `cases_html()`. Because a summary needs only the scored CSV, shards
scored apart merge into the same report (`batch.merge`), and the app's Batch tab draws the same figures (plotly's,
`figures()`; the HTML page draws `charts()` in HTML and CSS, a few kilobytes where plotly's script weighs 4.8 MB).

A report names files by their names, never by a path: a report made on a server (the app's uploads) or from
`batch.py /abs/path/x.csv` is shared, and its folders are nobody's business.
"""

import functools
import itertools
import json
import math
import typing
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from pydantic import BaseModel

import model
from building import builder, contract, files

MAX_LISTED_ROWS = 200  # misclassified, differing or failing rows kept in the summary
FAILED_SHOWN = 20  # failing rows the HTML page (and the app's Batch tab) lists; the JSON keeps MAX_LISTED_ROWS, the CSV all
HISTOGRAM_BINS = 20
COMPARE_PREFIX = "compare_"  # the second variant's columns in a scored CSV
LIST_SEPARATOR = "; "  # between the items of a list of strings or numbers in one cell


class BatchInputError(ValueError):
    """The input file (or a baseline) as a whole cannot be used (exit status 2 on the command line). Defined here,
    where a baseline can be refused; callers know it as `batch.BatchInputError`, the same class."""


# ---------------------------------------------------------------------------------------------
# The scored CSV's columns, from the Output schema alone
# ---------------------------------------------------------------------------------------------
def _shape(annotation) -> tuple[str, Any]:
    """How a field is written: ("model", the model), ("models", the item's model), ("list", None) for a list of
    strings, numbers, enums or bools, ("json", None) for a dict or anything nested otherwise, ("scalar", None)."""
    base = contract.base_type(annotation)
    if contract.model_of(base):
        return "model", base
    origin, args = typing.get_origin(base), typing.get_args(base)
    if origin in (list, tuple, set, frozenset) and args:
        item = contract.model_of(args[0])
        if item:
            return "models", item
        return ("list", None) if contract.is_scalar(args[0]) else ("json", None)
    if origin is not None or base in (list, tuple, set, frozenset, dict) or base is Any:
        return ("scalar", None) if contract.is_scalar(base) else ("json", None)
    return "scalar", None


def _columns(name: str, annotation, seen: tuple = ()) -> list[str]:
    kind, inner = _shape(annotation)
    if kind == "model" and inner not in seen:  # a nested model: <field>_<sub>, for each of its fields
        return [c for sub, f in inner.model_fields.items() for c in _columns(f"{name}_{sub}", f.annotation, (*seen, inner))]
    if kind == "models" and inner not in seen:  # hits -> hits_count, hits_first_id, hits_first_score, ...
        return [f"{name}_count", *_columns(f"{name}_first", inner, seen)]
    return [name]


def field_columns() -> dict[str, list[str]]:
    """Each Output field (the trace aside) and its columns in a scored CSV, in the schema's order."""
    return dict(_layout(model.Output)[0])


def output_columns() -> list[str]:
    """Every output column of a scored CSV, `error` last."""
    return list(_layout(model.Output)[1])


def list_cell(items: list) -> str:
    """A list of strings or numbers as one cell: its items joined by "; ", or a JSON array where that would not read
    back (an item empty, holding ";", with a space at either end, or the first starting with "["). Empty: ""."""
    texts = [json.dumps(i) if isinstance(i, bool) else str(i) for i in items]
    plain = all(t and ";" not in t and t == t.strip() for t in texts) and not (texts and texts[0].startswith("["))
    return LIST_SEPARATOR.join(texts) if plain else json.dumps(items, ensure_ascii=False)


def list_value(cell: str) -> list:
    """A `list_cell` read back: the items as strings (a JSON array's as it holds them); pydantic gives them their type."""
    if not cell:
        return []
    return json.loads(cell) if cell.startswith("[") else cell.split(LIST_SEPARATOR)


def _writer(name: str, annotation, seen: tuple = ()) -> Callable[[Any, dict], None]:
    """What writes a field's JSON value (model_dump(mode="json")) into a row's cells, as `_columns` lays them out."""
    kind, inner = _shape(annotation)
    if kind == "model" and inner not in seen:
        subs = [(sub, _writer(f"{name}_{sub}", f.annotation, (*seen, inner))) for sub, f in inner.model_fields.items()]

        def write(value, row):
            for sub, writer in subs:
                writer((value or {}).get(sub), row)

    elif kind == "models" and inner not in seen:
        first = _writer(f"{name}_first", inner, seen)

        def write(value, row):
            row[f"{name}_count"] = "" if value is None else len(value)
            first(value[0] if value else None, row)

    else:

        def write(value, row):
            if value is None:
                row[name] = ""  # None is an empty cell, not "nan"
            elif kind == "list":
                row[name] = list_cell(value)
            else:
                row[name] = json.dumps(value, ensure_ascii=False) if kind == "json" or isinstance(value, dict | list) else value

    return write


@functools.cache
def _layout(output: type[BaseModel]) -> tuple[dict[str, list[str]], list[str], list[tuple[str, Callable]]]:
    """The columns by field, every output column, and each field's writer: worked out once from the schema, not once a row."""
    fields = contract.output_fields()
    columns = {name: _columns(name, field.annotation) for name, field in fields.items()}
    return columns, [*itertools.chain.from_iterable(columns.values()), "error"], [(n, _writer(n, f.annotation)) for n, f in fields.items()]


def flatten(answer: BaseModel) -> dict[str, Any]:
    """One scored row's output columns from an answer (`model.Output`), as `field_columns` lays them out."""
    _, columns, writers = _layout(model.Output)
    dumped, row = answer.model_dump(mode="json", include={name for name, _ in writers}), dict.fromkeys(columns, "")
    for name, write in writers:
        write(dumped.get(name), row)
    return row


def written_name(column: str) -> str:
    """An input column as a scored CSV names it: one named like an output (or compare_...) is kept as input_<name>."""
    return f"input_{column}" if column in output_columns() or column.startswith(COMPARE_PREFIX) else column


# ---------------------------------------------------------------------------------------------
# Reading back what the project wrote
# ---------------------------------------------------------------------------------------------
def read_report(path: str | Path, chunk_size: int):
    """A CSV this project wrote (a scored report, a shard's, a baseline) in string chunks, each cell and column name as it
    was before `files.spreadsheet_safe` quoted it. Never for the user's input, which is read as it is."""
    for chunk in pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=chunk_size):
        chunk = chunk.map(files.spreadsheet_text)
        chunk.columns = [files.spreadsheet_text(name) for name in chunk.columns]
        yield chunk


# ---------------------------------------------------------------------------------------------
# What the contract says a report shows
# ---------------------------------------------------------------------------------------------
def _values(field: str) -> list[str]:
    """The values an enum, Literal or bool Output field can take, in the schema's order; [] for anything else."""
    annotation = model.Output.model_fields[field].annotation
    return ["True", "False"] if contract.base_type(annotation) is bool else [str(v) for v in contract.choices(annotation)]


def label_values() -> list[str]:
    """The label's classes from the schema (an enum's or a Literal's values), or [] when it is free text or absent."""
    return _values(contract.label()) if contract.label() else []


def tallied() -> list[str]:
    """The enum and bool Output fields (one column each) that get a tally, the label and the needs-a-person field aside."""
    skip = {contract.label(), contract.needs_person()}
    return [name for name, columns in field_columns().items() if columns == [name] and name not in skip and _values(name)]


def numbered() -> list[str]:
    """The number Output fields (one column each) that get a mean, a minimum and a maximum, the probability aside."""
    fields = model.Output.model_fields
    kept = [name for name, columns in field_columns().items() if columns == [name] and name != contract.probability()]
    return [name for name in kept if contract.base_type(fields[name].annotation) in (int, float)]


ACRONYMS = {"pii": "PII", "id": "ID", "ids": "IDs", "url": "URL"}  # as the app's labels write them (app/render.py)


def _in_words(name: str) -> str:
    """A code name in words: `first_name` -> "First name", `source_url` -> "Source URL"."""
    text = " ".join(ACRONYMS.get(w, w) for w in str(name).split("_"))
    return text[:1].upper() + text[1:]


def _field(name: str):
    """The schema's field of that name (the Output's, else the Input's), or None."""
    return contract.output_fields().get(name) or model.Input.model_fields.get(name)


def words(name: str) -> str:
    """A field's name as a heading: the schema's `title` where it has one, else its name in words (`_in_words`)."""
    field = _field(name)
    return field.title if field is not None and field.title else _in_words(name)


def value_words(name: str | None, value: Any) -> Any:
    """A field's value as people read it: "yes"/"no" for a bool, an enum's or a Literal's value in words
    (`account_access` -> "Account access"), anything else as it is. Tables and figures for people; never the JSON."""
    field = _field(name) if name else None
    if field is None or value is None or value == "":
        return value
    if contract.base_type(field.annotation) is bool:
        return {"True": "yes", "False": "no", True: "yes", False: "no"}.get(value, value)
    return _in_words(value) if str(value) in map(str, contract.choices(field.annotation)) else value


def counted(n: int, noun: str) -> str:
    """`1 row`, `2 rows`."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _failure(cell: str) -> tuple[str, str]:
    """An error cell split into the Input fields it names ("" where the pipeline itself failed) and why:
    `row 3: channel: Input should be ...` -> ("channel", "Input should be ..."); several fields joined by ", "."""
    why = cell.split(": ", 1)[1] if cell.startswith("row ") and ": " in cell else cell
    parts = [part.partition(": ") for part in why.split("; ")]
    if all(sep and head.split(".")[0] in model.Input.model_fields for head, sep, _ in parts):
        return ", ".join(dict.fromkeys(head for head, _, _ in parts)), why if len(parts) > 1 else parts[0][2]
    return "", why


def failed_rows(source: dict[str, Any] | pd.DataFrame, limit: int = FAILED_SHOWN, prefix: str = "") -> dict[str, Any]:
    """The rows that failed, for a table people read: {"rows": the first `limit` as {row, field, why}, "more": how
    many others failed}. `row` numbers a row as its error cell does (1: the first row after the header); `field` is
    the Input field the error names, "" where the pipeline itself failed. `source`: a summary (or its "compare", B's),
    or a scored CSV as a frame of strings (`read_report`; `prefix` "compare_" for B's errors). The app's Batch tab
    calls it too."""
    if isinstance(source, pd.DataFrame):
        cells = source[source[prefix + "error"] != ""][prefix + "error"]
        listed, total = [(_row_number(cell, i), cell) for i, cell in cells.head(limit).items()], len(cells)
    else:
        listed, total = [(item["row"], item["error"]) for item in source.get("error_rows", [])[:limit]], source.get("errors", 0)
    rows = [{"row": row, **dict(zip(("field", "why"), _failure(cell), strict=True))} for row, cell in listed]
    return {"rows": rows, "more": total - len(rows)}


def _row_number(cell: str, index: Any) -> int:
    """The row an error cell names (`row 3: ...`), else the frame's index + 1."""
    head = cell.split(":", 1)[0]
    return int(head[4:]) if head.startswith("row ") and head[4:].isdigit() else int(index) + 1


def _shown(row: pd.Series, columns: dict[str, str]) -> dict[str, Any]:
    """What a table shows of an input row: its text field (contract.text_field()), else every Input field given."""
    text = contract.text_field()
    named = {text: columns[text]} if text in columns else columns
    return {field: str(row[column])[:300] for field, column in named.items()}


# ---------------------------------------------------------------------------------------------
# The summary: one pass over the scored CSV, tallied per variant
# ---------------------------------------------------------------------------------------------
def summary(
    scored_csv: str | Path,
    columns: dict[str, str],
    label_column: str | None,
    *,
    slices: list[str] = (),
    elapsed_s: float,
    run: dict[str, Any],
    output_path: str | Path,
    baseline: str | Path | None = None,
) -> dict[str, Any]:
    """The summary of a scored CSV, read in chunks (its keys: this module's docstring). `columns`: each Input field's
    column and `label_column` the label's, `slices` the columns to split accuracy by, all as the scored CSV names them.
    `run` is what was run; `baseline` an earlier scored CSV of the same input, compared row by row (`compare_baseline`)."""
    scored_csv, output_path = Path(scored_csv), Path(output_path)
    label_column = label_column if contract.label() else None
    variants = {"": _Tally(columns, label_column, slices), COMPARE_PREFIX: _Tally(columns, label_column, slices)}
    fields = field_columns()
    agreement, per_field, differing, compared = Counter(), Counter(), [], False
    for chunk in read_report(scored_csv, 4096):
        compared = compared or COMPARE_PREFIX + "error" in chunk
        for prefix, tally in variants.items():
            if prefix == "" or compared:
                tally.add(chunk, prefix)
        if compared:
            both = (chunk.error == "") & (chunk[COMPARE_PREFIX + "error"] == "")
            same = {field: _same(chunk, chunk, cols, COMPARE_PREFIX) for field, cols in fields.items()}
            every = pd.concat(same.values(), axis=1).all(axis=1) if same else both
            agreement.update({"rows": int(both.sum()), "": int((both & every).sum())})
            agreement.update({field: int((both & s).sum()) for field, s in same.items()})
            per_field.update({field: int((both & ~s).sum()) for field, s in same.items()})
            for i, row in chunk[both & ~every].iterrows():
                if len(differing) < MAX_LISTED_ROWS:
                    differing.append(_differing(row, i, columns, [f for f, s in same.items() if not s[i]]))
    out = {
        **variants[""].summary(),
        "elapsed_s": round(elapsed_s, 3),
        "rows_per_s": round(variants[""].rows / elapsed_s, 1) if elapsed_s > 0 else None,
        "title": contract.title(),
        "columns": columns,
        "text_column": columns.get(contract.text_field()),
        "label_column": label_column,
        "slice_columns": list(slices),
        **run,
        **_pipeline(),
        "outputs": {kind: output_path.with_suffix(kind).name for kind in (".csv", ".html", ".json")},
    }
    if compared:
        share = {k: round(n / agreement["rows"], 4) if agreement["rows"] else None for k, n in agreement.items() if k != "rows"}
        out["compare"] = {
            **variants[COMPARE_PREFIX].summary(),
            "agreement": share.pop(""),
            "agreement_per_field": share,
            "differing_rows": differing,
            "differing_total": agreement["rows"] - agreement[""],
            "differing_per_field": {field: per_field[field] for field in fields},
        }
    if baseline is not None:
        out["baseline"] = compare_baseline(scored_csv, baseline, columns, label_column, out)
    return out


def _pipeline() -> dict[str, Any]:
    """Which pipeline answered: its version, the artifacts' version, what they were built from."""
    manifest = builder.manifest()
    return {
        "pipeline_version": manifest.get("pipeline_version", model.PIPELINE_VERSION),
        "version": manifest.get("version", "artifacts"),  # the version that answered (versions.py)
        **{k: manifest.get(k) for k in ("model", "encoder", "data")},
        "artifacts_built_at": manifest.get("built_at"),
    }


def _same(a: pd.DataFrame, b: pd.DataFrame, columns: list[str], b_prefix: str = "") -> pd.Series:
    """Rows where every one of `columns` holds the same cell in `a` and in `b` (its columns prefixed `b_prefix`)."""
    same = pd.Series(True, index=a.index)
    for column in columns:
        same &= a[column].to_numpy() == b[b_prefix + column].to_numpy()
    return same


def _field_text(row: pd.Series, field: str, prefix: str = "") -> str:
    """A field's cells in one line, cut at 200 characters: the cell itself, or `sub=value` for each non-empty column of
    a flattened field (articles_first_id -> first_id=...)."""
    columns = field_columns()[field]
    if columns == [field]:
        text = row[prefix + field]
    else:
        text = ", ".join(f"{c.removeprefix(field + '_')}={row[prefix + c]}" for c in columns if row[prefix + c] != "")
    return text if len(text) <= 200 else text[:199] + "…"


def _differing(row: pd.Series, index: int, columns: dict[str, str], fields: list[str]) -> dict[str, Any]:
    """A row where A and B differ: which fields, and what each variant says of them ({field: its cells in a line})."""
    a, b = ({f: _field_text(row, f, prefix) for f in fields} for prefix in ("", COMPARE_PREFIX))
    return {"row": int(index) + 1, **_shown(row, columns), "fields": ", ".join(fields), "A": a, "B": b}


class _Tally:
    """Running counts for one variant: what the summary and the plots need, never the rows themselves."""

    def __init__(self, columns: dict[str, str], label_column: str | None, slices: list[str]):
        self.columns, self.label_column, self.slices = columns, label_column, list(slices) if label_column else []
        self.rows = self.errors = 0
        self.error_rows: list[dict] = []
        self.label, self.probability, self.needs_person = contract.label(), contract.probability(), contract.needs_person()
        self.counts = {field: Counter() for field in [self.label, *tallied()] if field}
        self.pairs = Counter()
        self.probability_sum, self.probability_rows = 0.0, 0
        self.histogram = [0] * HISTOGRAM_BINS  # probabilities in bins of 1 / HISTOGRAM_BINS
        self.needs_person_rows = 0
        self.misclassified: list[dict] = []
        self.misclassified_total = 0
        self.per_slice = {column: Counter() for column in self.slices}  # (value, expected, right) -> rows
        self.numbers = {field: [0, 0.0, math.inf, -math.inf] for field in numbered()}  # rows, sum, min, max

    def add(self, chunk: pd.DataFrame, prefix: str) -> None:
        self.rows += len(chunk)
        ok = chunk[chunk[prefix + "error"] == ""]
        self.errors += len(chunk) - len(ok)
        for i, row in chunk[chunk[prefix + "error"] != ""].head(MAX_LISTED_ROWS - len(self.error_rows)).iterrows():
            cell = row[prefix + "error"]
            why = cell.removeprefix(f"row {int(i) + 1}: ")
            self.error_rows.append({"row": int(i) + 1, "field": _failure(cell)[0], **_shown(row, self.columns), "error": why})
        for field, counts in self.counts.items():
            counts.update(value for value in ok[prefix + field] if value != "")  # none is no value
        if self.probability:
            values = pd.to_numeric(ok[prefix + self.probability], errors="coerce").dropna()
            self.probability_sum += float(values.sum())
            self.probability_rows += len(values)
            for k in (values * HISTOGRAM_BINS).astype(int).clip(lower=0, upper=HISTOGRAM_BINS - 1):
                self.histogram[k] += 1
        for field, (n, total, low, high) in self.numbers.items():
            values = pd.to_numeric(ok[prefix + field], errors="coerce").dropna()
            if len(values):
                self.numbers[field] = [n + len(values), total + float(values.sum()), min(low, values.min()), max(high, values.max())]
        if self.needs_person:
            self.needs_person_rows += int((ok[prefix + self.needs_person] == "True").sum())
        if self.label_column:
            labelled = ok[ok[self.label_column] != ""]
            expected, answered = labelled[self.label_column], labelled[prefix + self.label]
            self.pairs.update(zip(expected, answered, strict=True))
            right = expected == answered
            self.misclassified_total += int((~right).sum())
            for column, counts in self.per_slice.items():
                named = labelled[column] != ""
                counts.update(zip(labelled[column][named], expected[named], right[named], strict=True))
            for i, row in labelled[~right].head(MAX_LISTED_ROWS - len(self.misclassified)).iterrows():
                self.misclassified.append(self._listed(row, i, prefix))

    def _listed(self, row: pd.Series, index: int, prefix: str) -> dict[str, Any]:
        item = {"row": int(index) + 1, **_shown(row, self.columns), "expected": row[self.label_column]}
        item[self.label] = row[prefix + self.label]
        if self.probability:
            item[self.probability] = _number(row[prefix + self.probability])
        return item

    def summary(self) -> dict[str, Any]:
        scored = self.rows - self.errors
        out = {"rows": self.rows, "errors": self.errors, "error_rows": self.error_rows}
        out["error_rows_more"] = self.errors - len(self.error_rows)  # failed too, not listed here: the CSV lists every one
        out["tallies"] = {field: _ordered(self.counts[field], _values(field)) for field in tallied()}
        if self.numbers:
            numbers = {f: (n, t, lo, hi) for f, (n, t, lo, hi) in self.numbers.items() if n}
            out["numbers"] = {f: {"rows": n, "mean": round(t / n, 4), "min": lo, "max": hi} for f, (n, t, lo, hi) in numbers.items()}
        if self.label:
            out |= {"label": self.label, "label_distribution": _ordered(self.counts[self.label], label_values())}
        if self.probability:
            mean = round(self.probability_sum / self.probability_rows, 4) if self.probability_rows else None
            edges = [k / HISTOGRAM_BINS for k in range(HISTOGRAM_BINS + 1)]
            out |= {"probability": self.probability, "probability_mean": mean}
            out["probability_histogram"] = {"bin_edges": edges, "counts": self.histogram}
        if self.needs_person:
            share = round(self.needs_person_rows / scored, 4) if scored else None
            out |= {"needs_person": self.needs_person, "needs_person_share": share}
        if self.label_column:
            out["metrics"] = metrics(self.pairs)
            out["misclassified_rows"] = self.misclassified
            out["misclassified_total"] = self.misclassified_total
            out["per_slice"] = {column: per_slice(column, counts, self.label) for column, counts in self.per_slice.items() if counts}
        return out


def _number(cell: str) -> float | str:
    """A cell holding a number as that number (the JSON's rows show numbers as numbers), anything else as it is."""
    try:
        return float(cell)
    except ValueError:
        return cell


def _ordered(counts: Counter, values: list[str]) -> dict[str, int]:
    """Counts by value, most common first (the schema's order among equals: a stable report)."""
    known = {v: counts[v] for v in values if counts[v]}
    return dict(sorted({**known, **{v: n for v, n in counts.items() if v not in known}}.items(), key=lambda vn: -vn[1]))


def per_slice(column: str, counts: Counter, label: str) -> list[dict[str, Any]]:
    """Accuracy for each value of a slice column from counts of (value, expected, right): rows, correct, accuracy; a
    slice that nests in the label (each value within one class, as sub-classes within classes) also names the class."""
    classes: dict[str, set] = {}
    for value, expected, _ in counts:
        classes.setdefault(value, set()).add(expected)
    nested = all(len(c) == 1 for c in classes.values())
    rows = []
    for value in sorted(classes, key=lambda v: (sorted(classes[v])[0], v) if nested else v):
        right = sum(n for (v, _, r), n in counts.items() if v == value and r)
        total = sum(n for (v, _, _), n in counts.items() if v == value)
        row = {column: value, label: next(iter(classes[value]))} if nested else {column: value}
        rows.append(row | {"rows": total, "correct": right, "accuracy": round(right / total, 4)})
    return rows


def metrics(pairs: Counter) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support (the classes with rows, expected or answered) and the
    confusion matrix (every class of the schema, then any other value seen) from (expected, answered) counts."""
    labels = label_values()
    labels += sorted({v for pair in pairs for v in pair} - set(labels))
    total = sum(pairs.values())
    per_class = {}
    for label in labels:
        predicted = sum(n for (_, p), n in pairs.items() if p == label)
        support = sum(n for (e, _), n in pairs.items() if e == label)
        if not predicted and not support:
            continue  # no row expects or gets it: nothing to say, not 0.0
        tp = pairs[(label, label)]
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "support": support}
    return {
        "labelled_rows": total,
        "accuracy": round(sum(pairs[(label, label)] for label in labels) / total, 4) if total else None,
        "macro_f1": round(sum(m["f1"] for m in per_class.values()) / len(per_class), 4) if per_class else None,
        "per_class": per_class,
        "confusion_matrix": {"labels": labels, "rows_expected_columns_predicted": [[pairs[(e, p)] for p in labels] for e in labels]},
    }


# ---------------------------------------------------------------------------------------------
# Against a baseline: an earlier scored CSV of the same input
# ---------------------------------------------------------------------------------------------
def compare_baseline(scored_csv: Path, baseline_csv: str | Path, columns: dict[str, str], label_column: str | None, summary: dict) -> dict:
    """This run against an earlier scored CSV of the same input (from any earlier pipeline version), row by row: the
    rows whose answer changed in any field both reports hold (`changed`); those whose label changed split into fixed
    (was wrong, now right), broken (was right, now wrong), still wrong and changed-unlabelled (no expected value), the
    others `changed_other_fields` (without a label every change is changed-unlabelled); how many rows changed in each
    field; the per-class metric deltas; and which pipeline, model and data each side came from."""
    baseline_csv, label = Path(baseline_csv), contract.label()
    try:
        before_summary = json.loads(baseline_csv.with_suffix(".json").read_text())
    except (OSError, ValueError):
        before_summary = {}
    counts, per_field = Counter(), Counter()
    rows = {"fixed": [], "broken": [], "changed_unlabelled": [], "changed_other_fields": []}
    before_pairs = Counter()  # (expected, answered) in the baseline, for the metric deltas
    try:
        for now, before in itertools.zip_longest(read_report(scored_csv, 4096), read_report(baseline_csv, 4096)):
            if now is None or before is None or len(now) != len(before) or (label and label not in before):
                raise BatchInputError(f"{baseline_csv.name}: not a scored report of the same input (rows or columns differ)")
            both = (now.error == "") & (before.error == "")
            if label_column and label_column in before:
                labelled = before[both & (before[label_column] != "")]
                before_pairs.update(zip(labelled[label_column], labelled[label], strict=True))
            fields = {f: cols for f, cols in field_columns().items() if all(c in before for c in cols)}  # what both reports hold
            same = {f: _same(now, before, cols) for f, cols in fields.items()}
            per_field.update({f: int((both & ~s).sum()) for f, s in same.items()})
            kept = pd.concat(same.values(), axis=1).all(axis=1) if same else pd.Series(True, index=now.index)
            for i, row in now[both & ~kept].iterrows():  # any field changed, not only the label
                differ = [f for f, s in same.items() if not s[i]]
                if label in differ:
                    expected, was, answer = row[label_column] if label_column else "", before[label][i], row[label]
                    kind, item = _change(expected, was, answer), {"expected": expected, "before": was, "now": answer}
                else:
                    kind = "changed_other_fields" if label else "changed_unlabelled"
                    item = {side: {f: _field_text(r, f) for f in differ} for side, r in (("before", before.loc[i]), ("now", row))}
                counts[kind] += 1
                if kind in rows and len(rows[kind]) < MAX_LISTED_ROWS:
                    rows[kind].append({"row": int(i) + 1, **_shown(row, columns), "fields": ", ".join(differ), **item})
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as error:
        raise BatchInputError(f"{baseline_csv.name}: cannot read the baseline ({error})") from None
    sides = ("pipeline_version", "model", "encoder", "data", "artifacts_built_at")
    out = {
        "baseline": baseline_csv.name,
        "field": label,
        "changed": sum(counts.values()),
        **{kind: counts[kind] for kind in ("fixed", "broken", "changed_unlabelled", "still_wrong", "changed_other_fields")},
        "changed_per_field": {f: n for f, n in per_field.items() if n},
        "rows": rows,
        "sides": {"baseline": {k: before_summary.get(k) for k in sides}, "now": {k: summary.get(k) for k in sides}},
    }
    if summary.get("metrics") and before_pairs:
        was, now = metrics(before_pairs), summary["metrics"]
        if was["accuracy"] is not None and now["accuracy"] is not None:
            out["metric_deltas"] = {
                "accuracy": round(now["accuracy"] - was["accuracy"], 4),
                "macro_f1": round(now["macro_f1"] - was["macro_f1"], 4),
                "per_class_f1": {c: round(m["f1"] - was["per_class"].get(c, {"f1": 0.0})["f1"], 4) for c, m in now["per_class"].items()},
            }
    return out


def _change(label: str, before: str, now: str) -> str:
    """How a row whose label changed counts: against its expected value when it has one."""
    if not label:
        return "changed_unlabelled"
    return "fixed" if now == label else "broken" if before == label else "still_wrong"


# ---------------------------------------------------------------------------------------------
# Shown: figures and the HTML page
# ---------------------------------------------------------------------------------------------
def _variants(summary: dict[str, Any]) -> dict[str, dict]:
    """The summaries to draw, by name: the pipeline's, or A and B when comparing."""
    return {"A (flags)": summary, "B (compare flags)": summary["compare"]} if "compare" in summary else {"pipeline": summary}


def _bars(title: str, distributions: list[dict[str, int]], field: str, series: list[str]) -> dict:
    """A bar chart of a field's counts by value (the schema's values first, then any other seen; in words), one bar per
    variant."""
    values = _values(field)
    values += sorted({v for d in distributions for v in d} - set(values))
    counts = {v: [d.get(v, 0) for d in distributions] for v in values}
    top = max((max(row) for row in counts.values()), default=0) or 1
    rows = [{"label": value_words(field, v), "values": [(n, round(90 * n / top, 1)) for n in row]} for v, row in counts.items()]
    return {"kind": "bars", "title": title, "series": series, "rows": rows}


def charts(summary: dict[str, Any]) -> list[dict]:
    """The HTML page's figures as numbers that reporting/templates/report.html draws in HTML and CSS, no script: bars of
    the label's values, columns of the probability histogram, bars of every other tally and, when labelled, the
    confusion matrix; B beside A when comparing. Lengths are percentages of the largest value; a matrix cell's shade is
    its count over the matrix's largest."""
    variants = _variants(summary)
    series, out = list(variants), []
    if "label_distribution" in summary:
        title = f"{words(summary['label'])} distribution"
        out.append(_bars(title, [v["label_distribution"] for v in variants.values()], summary["label"], series))
    if "probability_histogram" in summary:
        histograms = [v["probability_histogram"]["counts"] for v in variants.values()]
        top = max(max(h) for h in histograms) or 1
        edges = summary["probability_histogram"]["bin_edges"]
        columns = [
            {"label": f"{lo:.2f} to {hi:.2f}", "values": [(counted(h[k], "row"), round(100 * h[k] / top, 1)) for h in histograms]}
            for k, (lo, hi) in enumerate(itertools.pairwise(edges))
        ]
        name, top = words(summary["probability"]), counted(top, "row")
        out.append({"kind": "columns", "title": name, "series": series, "columns": columns, "top": top, "axis": _lower(name)})
    for field in summary.get("tallies", {}):
        out.append(_bars(words(field), [v["tallies"].get(field, {}) for v in variants.values()], field, series))
    if summary.get("metrics"):
        matrices = []
        for name, v in variants.items():
            cm = v["metrics"]["confusion_matrix"]
            cells = cm["rows_expected_columns_predicted"]
            top = max((max(row) for row in cells), default=0) or 1
            labels = [value_words(summary["label"], label) for label in cm["labels"]]
            rows = [(label, [(n, round(n / top, 2)) for n in row]) for label, row in zip(labels, cells, strict=True)]
            matrices.append({"name": name, "labels": labels, "rows": rows})
        out.append({"kind": "matrix", "title": "Confusion matrix (rows: expected, columns: predicted)", "matrices": matrices})
    return out


def figures(summary: dict[str, Any]) -> list:
    """Plotly figures from a summary alone, for the app's Batch tab, always three, None where the pipeline has no such
    thing: the label's distribution, the probability histogram, the confusion matrix (with a label column); variant B
    beside A when comparing. The HTML page draws the same (and the other tallies) from `charts()`."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    variants = _variants(summary)
    out = [None, None, None]
    if "label_distribution" in summary:
        values = label_values()
        values += sorted({c for v in variants.values() for c in v["label_distribution"]} - set(values))
        shown = [value_words(summary["label"], c) for c in values]  # in words, as the HTML's
        bars = go.Figure([go.Bar(name=n, x=shown, y=[v["label_distribution"].get(c, 0) for c in values]) for n, v in variants.items()])
        bars.update_layout(title=f"{words(summary['label'])} distribution", barmode="group", yaxis_title="rows")
        out[0] = bars
    if "probability_histogram" in summary:
        hist = go.Figure()
        for name, v in variants.items():
            edges = v["probability_histogram"]["bin_edges"]
            centres = [(lo + hi) / 2 for lo, hi in itertools.pairwise(edges)]
            hist.add_bar(name=name, x=centres, y=v["probability_histogram"]["counts"], width=edges[1] - edges[0], opacity=0.7)
        axis = words(summary["probability"])
        hist.update_layout(title=axis, barmode="overlay", xaxis_title=axis, yaxis_title="rows", xaxis_range=[0, 1])
        out[1] = hist
    if summary.get("metrics"):
        heat = make_subplots(rows=1, cols=len(variants), subplot_titles=list(variants))
        for col, v in enumerate(variants.values(), start=1):
            cm = v["metrics"]["confusion_matrix"]
            z = cm["rows_expected_columns_predicted"]
            labels = [value_words(summary["label"], c) for c in cm["labels"]]
            heatmap = go.Heatmap(z=z, x=labels, y=labels, colorscale="Blues", showscale=False, text=z, texttemplate="%{text}")
            heat.add_trace(heatmap, row=1, col=col)
        heat.update_layout(title="Confusion matrix (rows: expected, columns: predicted)", height=520)
        heat.update_yaxes(autorange="reversed")
        out[2] = heat
    return out


def report_html(summary: dict[str, Any]) -> str:
    """The report as one self-contained HTML page (reporting/templates/report.html): cards, figures drawn in HTML and CSS
    (`charts()`), tables and run metadata; no script but the sort on a column header, nothing fetched. Words, not code
    names: fields by their titles, enum values in words, booleans yes/no (`for_people`); the JSON keeps the names."""
    tables = []
    label = summary.get("label")
    if summary.get("metrics"):
        per_class = [_per_class(label, c, m) for c, m in summary["metrics"]["per_class"].items()]
        tables.append(table(f"Per {_lower(words(label))}", per_class, len(per_class)))
    for column, rows in summary.get("per_slice", {}).items():
        tables.append(table(f"Per {_lower(words(column))}", rows, len(rows)))
    if "misclassified_rows" in summary:
        answered = [{"predicted" if k == label else k: v for k, v in row.items()} for row in summary["misclassified_rows"]]
        tables.append(table("Misclassified rows", answered, summary["misclassified_total"]))  # "Expected" beside "Predicted"
    if summary["errors"]:
        tables.append(_failed_table("Rows with errors", summary))
    if "compare" in summary:
        b = summary["compare"]
        if b["errors"] and b["error_rows"] != summary["error_rows"]:
            tables.append(_failed_table("Rows with errors in B", b))
        tables.append(_per_field_table("A and B field by field", b.get("differing_per_field", {}), b["agreement_per_field"]))
        tables.append(table("Rows where A and B differ", b["differing_rows"], b["differing_total"]))
    if "baseline" in summary:
        changes = summary["baseline"]
        tables.append(_per_field_table("Changed since the baseline, field by field", changes["changed_per_field"]))
        for kind, title in (("broken", "Broken since the baseline (was right, now wrong)"), ("fixed", "Fixed since the baseline")):
            if changes["field"]:
                tables.append(table(title, changes["rows"][kind], changes[kind]))
        title = "Changed since the baseline, no label" if changes["field"] else "Changed since the baseline"
        tables.append(table(title, changes["rows"]["changed_unlabelled"], changes["changed_unlabelled"]))
        if changes["field"]:
            title = f"Changed since the baseline in other fields than the {_lower(words(changes['field']))}"
            tables.append(table(title, changes["rows"].get("changed_other_fields", []), changes.get("changed_other_fields", 0)))
    return page(
        title=Path(summary["input"]).name,
        card_groups=_summary_cards(summary),
        notes=[f"{counted(summary['rows'], 'row')} in {summary['elapsed_s']} s ({summary['rows_per_s']} rows/s)."],
        charts=charts(summary),
        tables=[{**t, "rows": for_people(t["rows"], label)} for t in tables],
        metadata=_metadata(summary),
    )


def _lower(text: str) -> str:
    """Words in the middle of a sentence: "Needs human" -> "needs human"; "PII masked" stays."""
    return text if text[:2].isupper() else text[:1].lower() + text[1:]


def _per_class(label: str, value: str, m: dict[str, Any]) -> dict[str, Any]:
    """A class's row of the per-class table: recall says "no rows" where no row expects the class (not 0.0)."""
    return {label: value, **m, "recall": m["recall"] if m["support"] else "no rows"}


def _failed_table(title: str, variant: dict[str, Any]) -> dict:
    """The first FAILED_SHOWN rows that failed (`failed_rows`): row, field, why, and the row's text; how many more."""
    failed, texts = failed_rows(variant), {item["row"]: item for item in variant["error_rows"]}
    shown = [{k: v for k, v in texts[r["row"]].items() if k not in ("row", "field", "error")} for r in failed["rows"]]
    rows = [{"row": r["row"], "field": r["field"], **s, "why": r["why"]} for r, s in zip(failed["rows"], shown, strict=True)]
    more = f"and {counted(failed['more'], 'more row')}: the scored CSV's error column lists every one" if failed["more"] else ""
    return table(title, rows, variant["errors"], note=more)


def _per_field_table(title: str, differing: dict[str, int], agreement: dict[str, float] | None = None) -> dict:
    """Each output field and the rows where it differs (and, comparing A and B, the share of rows where it agrees)."""
    rows = [{"field": f, "rows that differ": n} for f, n in differing.items()]  # the field in words: `for_people`
    if agreement:
        rows = [row | {"agreement": agreement.get(f)} for row, f in zip(rows, differing, strict=True)]
    return table(title, rows, len(rows))


def for_people(rows: list[dict[str, Any]], label: str | None = None) -> list[dict[str, Any]]:
    """A table's rows as people read them: each column named in words (a field by its title), a field's values in words
    (`value_words`; `expected`, `predicted`, `before` and `now` hold the label's), a list of fields as their titles, and what a
    variant says of several fields ({field: text}) as "Title: text" lines."""

    def cell(key: str, value: Any) -> Any:
        if isinstance(value, dict):
            return "; ".join(f"{words(f)}: {value_words(f, v) if v != '' else '(none)'}" for f, v in value.items())
        if key == "fields":
            return ", ".join(words(f) for f in value.split(", ")) if value else value
        if key == "field":
            return words(value) if value else "(the pipeline)"
        return value_words(label if key in ("expected", "predicted", "before", "now") else key, value)

    return [{words(k): cell(k, v) for k, v in row.items()} for row in rows]


def page(title: str, card_groups: list[dict], tables: list[dict], metadata: dict, charts: list[dict] = (), notes: list[str] = ()) -> str:
    """reporting/templates/report.html filled in, every value escaped; headed "<the pipeline's title> report: <title>"."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    environment.tests["unbreakable"] = _unbreakable
    return environment.get_template("report.html").render(
        heading=f"{contract.title()} report", title=title, card_groups=card_groups, notes=notes, charts=charts, tables=tables,
        metadata=json.dumps(metadata, indent=2, default=str),
    )  # fmt: skip


def _unbreakable(value: Any) -> bool:
    """A cell holding a word too long for a column (a URL, a long id): the page lets it wrap anywhere."""
    return isinstance(value, str) and any(len(word) > 20 for word in value.split())


def table(title: str, rows: list[dict], total: int, note: str = "") -> dict:
    """A table of the page: its title, the rows shown, how many there are in all and a line under it."""
    return {"title": title, "rows": rows, "total": total, "note": note}


def cards(title: str, items: list[tuple[str, Any]], notes: list[str] = ()) -> dict:
    """A heading and a row of summary cards (value over name) for the page, with lines of text under them."""
    return {"title": title, "cards": items, "notes": list(notes)}


_METADATA = ["input", "flags", "compare_flags", "pipeline_version", "version", "model", "encoder", "data", "artifacts_built_at"]
_METADATA += ["columns", "label_column", "slice_columns"]


def _metadata(summary: dict[str, Any]) -> dict[str, Any]:
    """What the run was: input, flags, pipeline, model and data (and, with a baseline, where each side came from)."""
    out = {k: summary[k] for k in _METADATA if k in summary}
    if "baseline" in summary:
        out["baseline"] = {"file": Path(summary["baseline"]["baseline"]).name, **summary["baseline"]["sides"]}
    return out


_METRIC_WORDS = {"accuracy": "accuracy", "macro_f1": "macro-F1"}


def _short(number: float) -> str:
    return f"{number:,.4g}" if abs(number) < 1e5 else f"{number:,.0f}"


def _summary_cards(summary: dict[str, Any]) -> list[dict]:
    def variant_cards(s: dict[str, Any], name: str) -> dict:
        items = [("rows", s["rows"]), ("errors", s["errors"])]
        if "probability" in s:
            items.append((f"mean {_lower(words(s['probability']))}", s["probability_mean"]))
        if "needs_person" in s:
            items.append(("needs a person", f"{s['needs_person_share']:.1%}" if s["needs_person_share"] is not None else "n/a"))
        if s.get("metrics"):
            items += [("accuracy", s["metrics"]["accuracy"]), ("macro-F1", s["metrics"]["macro_f1"])]
        for field, n in s.get("numbers", {}).items():
            items.append((f"{_lower(words(field))}: mean (min to max)", f"{_short(n['mean'])} ({_short(n['min'])} to {_short(n['max'])})"))
        return cards(name, items)

    out = [variant_cards(summary, "A (flags)" if "compare" in summary else "Summary")]
    if "compare" in summary:
        b = summary["compare"]
        out.append(variant_cards(b, "B (compare flags)"))
        items = [("every field", b["agreement"]), *((_lower(words(f)), share) for f, share in b["agreement_per_field"].items())]
        notes = [f"A and B differ in {counted(b['differing_total'], 'row')}, in any field (the table below says which)."]
        out.append(cards("Agreement between A and B (share of rows both answered)", items, notes))
    if "baseline" in summary:
        b = summary["baseline"]
        deltas = b.get("metric_deltas", {})
        items = [("rows changed, any field", b["changed"])]
        items += [("fixed", b["fixed"]), ("broken", b["broken"]), ("changed, no label", b["changed_unlabelled"])] if b["field"] else []
        items += [(f"{_lower(words(f))} changed", n) for f, n in b["changed_per_field"].items()]
        items += [(f"{_METRIC_WORDS[k]} change", f"{v:+.4f}") for k, v in deltas.items() if k in _METRIC_WORDS]
        out.append(cards(f"Against the baseline {Path(b['baseline']).name}", items))
    return out


# ---------------------------------------------------------------------------------------------
# The edge cases against the pipeline now (`batch.py --cases`, `snakemake regressions`)
# ---------------------------------------------------------------------------------------------
CASE_TABLES = {
    "broken": "Newly broken: fixed cases the pipeline now gets wrong",
    "newly fixed": "Newly fixed: mark them fixed",
    "open": "Still open",
}
_CASE_META = ("id", "verdict", "status", "source", "created_at", "note")


def _case_column(field: str) -> str:
    """An Input field's column in the cases CSV: its name, or input_<name> where a case's own column has that name."""
    return f"input_{field}" if field in _CASE_META else field


def _cell(value: Any) -> Any:
    """A value as one CSV cell: lists and dicts as JSON."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value


def case_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row a case (`edge_cases.check_cases`'s results): the case and its input's fields, its verdict, and for each
    field it expects: expected_<field>, <field>_when_flagged (the answer when flagged), now_<field> (the answer now)."""
    rows = []
    for r in results:
        case, then, now = r["case"], r["case"].answer or {}, r["answer_now"]
        given = case.ticket.model_dump(mode="json")
        expected = case.expected.model_dump(mode="json")
        rows.append(
            {
                "id": case.id,
                "verdict": r["verdict"],
                **{k: getattr(case, k) for k in ("status", "source", "created_at")},
                **{_case_column(k): _cell(v) for k, v in given.items()},
                **{f"expected_{k}": _cell(v) for k, v in expected.items()},
                **{f"{k}_when_flagged": _cell(then.get(k)) for k in expected},
                **{f"now_{k}": _cell(v) for k, v in now.items()},
                "note": case.note,
            }
        )
    return rows


def _case_shown(row: dict[str, Any]) -> dict[str, Any]:
    """A case's row as the HTML table shows it: its input (the text field, else every field), what it expects, what
    the pipeline says now and said when flagged, field by field."""
    text = contract.text_field()
    every = "; ".join(f"{k}: {row[_case_column(k)]}" for k in model.Input.model_fields)
    shown = {text: row[_case_column(text)]} if text else {"input": every}
    expected = [k.removeprefix("expected_") for k, v in row.items() if k.startswith("expected_") and v is not None]
    out = {"id": row["id"], "status": row["status"], **shown}

    def said(column: str) -> str:  # "label: Value in words, other field: yes"
        return ", ".join(f"{_lower(words(k))}: {value_words(k, row.get(column.format(k)))}" for k in expected)

    out["expected"], out["now"] = said("expected_{}"), said("now_{}")
    if (probability := contract.probability()) and f"now_{probability}" in row:
        out[f"{_lower(words(probability))} now"] = row[f"now_{probability}"]
    out["when flagged"] = said("{}_when_flagged")
    out["note"] = row["note"]
    out["flagged"] = f"{(row['created_at'] or '')[:16].replace('T', ' ')} ({row['source']})"  # 2026-11-26 21:10 (file)
    return out


def cases_summary(rows: list[dict[str, Any]], counts: dict[str, int], store: str | Path, output_path: str | Path) -> dict[str, Any]:
    """How many cases have each verdict (`counts`, from `edge_cases.verdict_counts`), the first rows of each that
    needs a look, the store and the pipeline they were run against."""
    output_path = Path(output_path)
    pipeline = _pipeline()
    return {
        "cases": len(rows),
        **counts,
        "store": Path(store).name,
        "listed": {v: [r for r in rows if r["verdict"] == v][:MAX_LISTED_ROWS] for v in ("broken", "newly fixed", "open")},
        **{k: pipeline[k] for k in ("pipeline_version", "model", "encoder", "data", "version")},
        "outputs": {kind: output_path.with_suffix(kind).name for kind in (".csv", ".html", ".json")},
    }


def cases_html(summary: dict[str, Any], counts: dict[str, int]) -> str:
    """The edge-case report as one HTML page: the counts as cards, a table for each verdict that needs a look, one
    column a question (what was expected, what the pipeline says now) where the CSV has one a field."""
    return page(
        title="edge cases",
        card_groups=[cards("Edge cases now", list(counts.items()))],
        tables=[table(title, for_people([_case_shown(r) for r in summary["listed"][v]]), counts[v]) for v, title in CASE_TABLES.items()],
        metadata={k: summary[k] for k in ("store", "pipeline_version", "model", "encoder", "data")},
    )
