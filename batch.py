"""Batch reports for domain experts: a CSV of inputs in; a scored CSV, an HTML report and a JSON summary out.

    python batch.py data/<labelled set>.csv -o reports/scored.csv   # also writes reports/scored.html and .json
    python batch.py inputs.csv -o reports/out.csv --column FIELD=COLUMN --flag KEY=VALUE --compare KEY=VALUE

Everything is read from the contract (building/contract.py), never a field of the worked example: each row is the
pipeline's whole Input (`contract.input_from_row`: every field from the column of its name, or the column
`--column FIELD=COLUMN` names; `--text-column COLUMN` is short for the Input's text field; a missing column or an
empty cell takes the field's default, a missing column of a required field stops the run naming it); the output
columns come from the Output's schema (`reports.field_columns`: the rule for each type is in reporting/reports.py);
the label's expected column is `expected_<label>` (or `--label-column`).

Read top to bottom: the arguments (`main`, one function per command), the run (`report()`, for this CLI and the
app's Batch tab), streaming the input, scoring it, the state that lets a killed run resume, and writing. The input
is streamed in chunks through `model.run_batch` (debug off), so memory stays flat however long the file is. Every
input row gives exactly one output row, in order; a row the pipeline cannot take (a value out of bounds, ...) keeps
its columns and gets an `error` (its number and the field), listed in the JSON and the HTML too. What the report says
and shows (tallies, metrics, comparisons, figures, the HTML page) is computed from the scored CSV alone by
`reports.py`, which is what lets `merge()` join shards scored in parallel into the same report.

Nothing is destroyed: the input is never an output; every file is written under a temporary name and
renamed when complete (a killed run leaves the previous report, or none, under the final name); one
run at a time may write an output (a lock beside it); `--resume` continues a killed run from its last
complete chunk (`OUT.csv.partial` and its `.json` state, checked against the partial file), giving the same CSV as
an uninterrupted run. Every CSV cell written is spreadsheet-safe (`files.spreadsheet_safe`: no formula runs when an
expert opens it) and read back exactly (`read_report`); the user's input is read as it is.
"""

import argparse
import contextlib
import csv
import hashlib
import io
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError
from tqdm import tqdm

import model
from building import builder, contract, files
from loop import edge_cases, review
from loop.commands import counted, interpreter
from loop.edge_cases import EdgeCase
from reporting import reports
from reporting.reports import COMPARE_PREFIX, BatchInputError, read_report

CHUNK_SIZE = 2048  # rows per run_batch call: big enough to batch well, small enough to keep memory flat


# ---------------------------------------------------------------------------------------------
# Arguments: one function per command
# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    try:
        if args.chunk_size < 1 or (args.limit is not None and args.limit < 0):
            raise BatchInputError("--chunk-size must be at least 1 and --limit at least 0")
        if args.cases:
            return cmd_cases(args)
        if not args.input:
            raise BatchInputError("give an input CSV (or --cases)")
        return cmd_merge(args) if args.merge else cmd_report(args)
    except BatchInputError as error:
        print(f"batch.py: error: {error}", file=sys.stderr)
        return 2


def arguments() -> argparse.ArgumentParser:
    about = f"{contract.title()}: a CSV of inputs into a scored CSV, an HTML report and a JSON summary."
    parser = argparse.ArgumentParser(description=about)
    parser.add_argument("input", nargs="*", help="the input CSV (with --merge: the scored shards, in order)")
    parser.add_argument("-o", "--output", required=True, help="the scored CSV to write; .html and .json go beside it")
    fields = ", ".join(model.Input.model_fields)
    parser.add_argument(
        "--column", action="append", default=[], metavar="FIELD=COLUMN", help=f"the column of an input field ({fields}), repeatable"
    )
    text, label, slices = contract.text_field(), contract.label(), ", ".join(contract.slices()) or "none"
    text_help = f"short for --column {text}=COLUMN" if text else "(the input has no text field)"
    parser.add_argument("--text-column", metavar="COLUMN", help=text_help)
    label_help = f"the right {label}'s column (default: {contract.expected_column()} when present)" if label else "(no label)"
    parser.add_argument("--label-column", metavar="COLUMN", help=label_help)
    slice_help = f"a column to split accuracy by, repeatable (default: {slices}, when present)"
    parser.add_argument("--slice", action="append", metavar="COLUMN", help=slice_help)
    parser.add_argument("--flag", action="append", default=[], metavar="KEY=VALUE", help="a pipeline flag, repeatable")
    parser.add_argument("--compare", action="append", default=[], metavar="KEY=VALUE", help="score a variant with these flags changed")
    parser.add_argument("--chunk-size", type=int, default=CHUNK_SIZE)
    parser.add_argument("--limit", type=int, default=None, help="score only the first N rows")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--no-html", action="store_true", help="skip the HTML report (for shards)")
    parser.add_argument("--merge", action="store_true", help="merge scored shards into one report")
    parser.add_argument("--cases", action="store_true", help="no input: run every edge case and report fixed, open, broken")
    parser.add_argument("--resume", action="store_true", help="continue a run that was killed, from its last complete chunk")
    parser.add_argument("--baseline", metavar="OLD.csv", help="an earlier scored CSV of the same input: report what changed since")
    parser.add_argument("--save-misclassified", action="store_true", help="flag the misclassified rows into the review queue (review.py)")
    return parser


def cmd_report(args) -> int:
    """One input CSV scored into a report (and, with --save-misclassified, its misclassified rows flagged for review)."""
    if len(args.input) != 1:
        raise BatchInputError("give one input CSV (several only with --merge)")
    flags = parse_flags(args.flag)
    compare = parse_flags(args.compare, base=flags, option="--compare") if args.compare else None
    summary = report(
        args.input[0],
        args.output,
        columns=parse_columns(args.column),
        text_column=args.text_column,
        label_column=args.label_column,
        slices=args.slice,
        flags=flags,
        compare=compare,
        chunk_size=args.chunk_size,
        limit=args.limit,
        progress=False if args.quiet else None,
        html_report=not args.no_html,
        resume=args.resume,
        baseline=args.baseline,
    )
    if args.save_misclassified:
        saved = save_misclassified(args.output, summary, flags, created_by=os.environ.get("USER"))
        print(f"{counted(sum(new for _, new in saved), 'misclassified row')} flagged for review -> {review.where()}")
        print(f"next: {interpreter()} -m loop cases queue", file=sys.stderr)  # pasted without the venv, it still works
    return _finished(summary, args)


def cmd_merge(args) -> int:
    """Scored shards merged into one report."""
    return _finished(merge(args.input, args.output, html_report=not args.no_html), args)


def cmd_cases(args) -> int:
    """Every edge case against the pipeline now, as a report; 0 whatever the verdicts."""
    summary = cases_report(args.output)
    print(json.dumps({k: summary[k] for k in ("cases", "fixed", "open", "broken", "newly fixed")}) + f" -> {args.output}")
    if summary["broken"]:
        print(f"next: {interpreter()} -m loop cases check", file=sys.stderr)
    return 0  # the report is the product; `python -m loop cases check` exits 1 on a broken case


def _finished(summary: dict[str, Any], args) -> int:
    """The one line a finished report prints."""
    accuracy = summary.get("metrics", {}).get("accuracy")
    failed = reports.failed_rows(summary, 5)
    rows = ", ".join(str(r["row"]) for r in failed["rows"]) + (", ..." if failed["more"] else "")
    print(
        f"{counted(summary['rows'], 'row')}, {counted(summary['errors'], 'error')}"
        + (f" (row{'s' if summary['errors'] > 1 else ''} {rows})" if failed["rows"] else "")
        + f", {summary['rows_per_s']} rows/s"
        + (f", accuracy {accuracy}" if accuracy is not None else "")
        + (f", A and B differ in {counted(summary['compare']['differing_total'], 'row')}" if "compare" in summary else "")
        + f" -> {args.output} (+ .json{'' if args.no_html else ', .html'})"
    )
    return 0


def parse_columns(pairs: list[str]) -> dict[str, str]:
    """`["FIELD=COLUMN", ...]` -> {field: column}; raises BatchInputError naming a pair that is not one."""
    columns = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep or not field or not column:
            raise BatchInputError(f"--column {pair!r}: expected FIELD=COLUMN")
        columns[field] = column
    return columns


def parse_flags(pairs: list[str], base: model.Flags | None = None, option: str = "--flag") -> model.Flags:
    """`["name=5", "other=false"]` -> Flags, on top of `base`. Raises BatchInputError naming the key."""
    values = (base or model.Flags()).model_dump()
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise BatchInputError(f"{option} {pair!r}: expected KEY=VALUE")
        if key not in model.Flags.model_fields:
            raise BatchInputError(f"{option} {key}: unknown flag (known: {', '.join(model.Flags.model_fields)})")
        values[key] = value  # pydantic turns "false", "5", "0.7" into the flag's type, or says why not
    try:
        return model.Flags.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        raise BatchInputError(f"{option} {first['loc'][0]}={first['input']!r}: {first['msg']}") from None


# ---------------------------------------------------------------------------------------------
# The run: one input CSV to a scored CSV, its .json summary and .html report
# ---------------------------------------------------------------------------------------------
def report(
    input_path: str | Path,
    output_path: str | Path,
    *,
    columns: dict[str, str] | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    slices: list[str] | None = None,
    flags: model.Flags | dict | None = None,
    compare: model.Flags | dict | None = None,
    chunk_size: int = CHUNK_SIZE,
    limit: int | None = None,
    progress: bool | None = None,
    html_report: bool = True,
    resume: bool = False,
    baseline: str | Path | None = None,
) -> dict[str, Any]:
    """Score a CSV into `output_path` (.csv) and write the .json summary and .html report beside it.

    Returns the summary. `columns` maps Input fields to the input's columns where they are not named as the fields
    (`text_column`: the text field's); `label_column` is the label's expected column (default: expected_<label> when
    present), `slices` the columns accuracy is split by (default: the contract's slices present). `compare` is a
    second set of flags: every row is scored with both, the variant's columns prefixed `compare_`. `resume` continues
    a run that was killed, from its last complete chunk. `baseline` is an earlier scored CSV of the same input: the
    report adds what changed. Raises BatchInputError when the file cannot be used or the report cannot be written.
    """
    columns = wanted_columns(columns, text_column)
    if label_column is not None and not contract.label():
        raise BatchInputError(f"--label-column {label_column}: the pipeline has no label (model.py's LABEL)")
    flags = model.Flags.model_validate(flags or {})
    compare = model.Flags.model_validate(compare) if compare is not None else None
    output_path = Path(output_path)
    check_file(input_path)
    if baseline is not None and _rows(check_file(baseline)) != _rows(input_path):  # before scoring anything
        raise BatchInputError(f"{Path(baseline).name}: not a scored report of the same input (rows or columns differ)")
    check_output(output_path, [input_path, *([baseline, Path(baseline).with_suffix(".json")] if baseline else [])])  # and its summary
    partial = output_path.with_name(output_path.name + ".partial")
    with writing(output_path):
        identity = {
            "input": _identity(input_path),
            "settings": [columns, label_column, slices, flags.model_dump(), compare and compare.model_dump(), chunk_size, limit],
            "pipeline": builder.fingerprint(),
        }
        state, written = (_resumable(partial, identity) if resume else None) or (
            {**identity, "rows_done": 0, "bytes_done": 0, "sha256": "", "elapsed_s": 0.0},
            hashlib.sha256(),
        )
        builder.ready()  # load the artifacts before the clock starts: elapsed_s is scoring time
        try:
            columns, label_column, slices = _score(
                input_path,
                partial,
                state,
                written,
                columns=columns,
                label_column=label_column,
                slices=slices,
                flags=flags,
                compare=compare,
                chunk_size=chunk_size,
                limit=limit,
                progress=progress,
            )
            run = {"input": Path(input_path).name, "flags": flags.model_dump(), "compare_flags": compare.model_dump() if compare else None}
            if state["resumed_from_row"]:
                run["resumed_from_row"] = state["resumed_from_row"]
            summary = summarize(partial, columns, label_column, state["elapsed_s"], run, html_report, output_path, baseline, slices)
            os.replace(partial, output_path)  # last: the report is complete
        except BatchInputError:
            partial.unlink(missing_ok=True)  # the input is unusable: nothing to resume
            _state_path(partial).unlink(missing_ok=True)
            raise
        except OSError as error:  # disk full, folder gone, ...: what was scored stays for --resume
            raise BatchInputError(f"{error.filename or output_path}: cannot write the report ({error.strerror})") from None
        _state_path(partial).unlink(missing_ok=True)
    return summary


# ---------------------------------------------------------------------------------------------
# Streaming the input
# ---------------------------------------------------------------------------------------------
def check_file(path: str | Path) -> Path:
    """Fail fast, with one clear line, on a file that is missing, empty, binary or not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise BatchInputError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head.strip():
        raise BatchInputError(f"{path}: the file is empty")
    if b"\x00" in head:
        raise BatchInputError(f"{path}: not a CSV file (a NUL byte on line {_nul_line(path)}: binary data, or not UTF-8)")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 4:  # not just a character cut at the 4 KiB boundary
            raise BatchInputError(f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8 CSV") from None
    return path


def read_chunks(path: str | Path, chunk_size: int):
    """The CSV as string DataFrames of `chunk_size` rows; a file that is not a usable CSV raises BatchInputError."""
    path = check_file(path)
    try:
        header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        named = [name for name in (header.iloc[0] if len(header) else []) if name]  # pandas renames a repeated name text.1
        if any("\x00" in name for name in named):
            raise BatchInputError(f"{path}: not a CSV file (a NUL byte on line {_nul_line(path)})")
        if repeated := sorted({name for name in named if named.count(name) > 1}):
            raise BatchInputError(f"{path}: the column {', '.join(map(repr, repeated))} appears more than once; name each column once")
        for chunk in pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", chunksize=chunk_size):
            if "\x00" in "".join(chunk.to_numpy().ravel().tolist()):  # past the head check_file reads; every cell is a str
                raise BatchInputError(f"{path}: not a CSV file (a NUL byte on line {_nul_line(path)})")
            yield chunk
    except UnicodeDecodeError:
        raise BatchInputError(f"{path}: not UTF-8 text; save it as UTF-8 CSV") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise BatchInputError(f"{path}: not a readable CSV file ({str(error).strip()})") from None


def _nul_line(path: str | Path) -> int:
    """The line (from 1) holding the file's first NUL byte."""
    line = 1
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            if (at := block.find(b"\x00")) >= 0:
                return line + block.count(b"\n", 0, at)
            line += block.count(b"\n")
    return line


def _rows(path: str | Path) -> int:
    """Rows of a CSV as a CSV reader counts them (a text may hold line breaks); a file it cannot read raises BatchInputError."""
    return sum(len(chunk) for chunk in read_chunks(path, 65536))


def count_rows(path: str | Path) -> int:
    """Lines after the header: the progress bar's total (exact unless texts hold line breaks)."""
    with open(path, "rb") as f:
        return max(sum(1 for _ in f) - 1, 0)


# ---------------------------------------------------------------------------------------------
# Scoring: output columns derived from the Output schema (reports.field_columns), chunks through the pipeline
# ---------------------------------------------------------------------------------------------
OUTPUT_COLUMNS = reports.output_columns()
flatten = reports.flatten  # one answer's output columns


def wanted_columns(columns: dict[str, str] | None, text_column: str | None = None) -> dict[str, str]:
    """The input columns asked for, by Input field: `columns`, and `text_column` for the Input's text field. Raises
    BatchInputError naming a field the Input does not have."""
    columns = dict(columns or {})
    if text_column is not None:
        if contract.text_field() is None:
            raise BatchInputError(f"--text-column {text_column}: the input has no text field; name columns with --column FIELD=COLUMN")
        columns[contract.text_field()] = text_column
    for field in columns:
        if field not in model.Input.model_fields:
            raise BatchInputError(f"--column {field}: not a field of the input (fields: {', '.join(model.Input.model_fields)})")
    return columns


def score_chunk(rows: list[dict[str, str]], flags: model.Flags, columns: dict[str, str] | None = None, first_row: int = 1) -> list[dict]:
    """Output columns for each input row (its cells by column name), numbered from `first_row`. The input is every field
    of `model.Input` (`contract.input_from_row`: each from the column `columns` names, else the column of its name, an
    empty cell the field's default). A row that fails gets `error` (its number and the field) and empty outputs."""
    scored: list[dict[str, Any] | None] = [None] * len(rows)
    valid: dict[int, Any] = {}
    for i, row in enumerate(rows):
        try:
            valid[i] = contract.input_from_row(row, columns)
        except ValidationError as error:
            scored[i] = _error_row(error, first_row + i)
    results = contract.run_each(list(valid.values()), flags)  # a failing row cannot cost the chunk
    for i, result in zip(valid, results, strict=True):
        scored[i] = _error_row(result, first_row + i) if isinstance(result, Exception) else flatten(result)
    return scored


def _error_row(error: Exception, row: int) -> dict[str, Any]:
    message = contract.error_message(error) if isinstance(error, ValidationError) else f"{type(error).__name__}: {error}"
    return {**dict.fromkeys(OUTPUT_COLUMNS, ""), "error": f"row {row}: {message}"}


def _score(input_path, partial, state, written, *, columns, label_column, slices, flags, compare, chunk_size, limit, progress):
    """Stream the input through the pipeline into `partial`, from the row `state` says the last run stopped at.

    After each chunk the rows are flushed to disk and the state (rows and bytes done, the SHA-256 of those bytes, kept
    running in `written`) saved beside them, so a killed run can continue from its last complete chunk. Every text cell
    is written spreadsheet-safe (`files.spreadsheet_safe`). Returns the Input's columns (by field), the label's column
    and the slice columns, as the scored CSV names them.
    """
    show = sys.stderr.isatty() if progress is None else progress
    total = None  # the bar's, counted (a second read of the input) only when a bar is shown
    if show:
        total = min(count_rows(input_path), limit) if limit is not None else count_rows(input_path)
    done = state["resumed_from_row"] = state["rows_done"]
    started, elapsed_before = time.perf_counter(), state["elapsed_s"]
    header = None
    with (
        open(partial, "r+b" if done else "wb") as out,
        tqdm(total=total, initial=done, unit="rows", disable=not show) as bar,
    ):
        out.truncate(state["bytes_done"])  # drop whatever the killed run wrote after its last complete chunk
        out.seek(state["bytes_done"])
        seen = 0
        for chunk in read_chunks(input_path, chunk_size):
            if header is None:
                header = list(chunk.columns)
                columns, label_column, slices = _input_columns(input_path, header, columns, label_column, slices)  # as the input names them
                # an input column named like an output (say the label's) keeps its values as input_<name>
                renamed = {c: reports.written_name(c) for c in header if reports.written_name(c) != c}
                if not done:
                    outputs = OUTPUT_COLUMNS + ([COMPARE_PREFIX + c for c in OUTPUT_COLUMNS] if compare is not None else [])
                    _write_rows(out, written, [[renamed.get(c, c) for c in header] + outputs])
            if limit is not None:
                chunk = chunk.iloc[: max(limit - seen, 0)]
            if chunk.empty:
                break
            seen += len(chunk)
            if seen <= done:  # scored by the run that was killed
                continue
            rows, first = chunk.to_dict("records"), int(chunk.index[0]) + 1  # by the input's own column names
            scored = pd.DataFrame(score_chunk(rows, flags, columns, first), index=chunk.index)
            if compare is not None:
                variant = pd.DataFrame(score_chunk(rows, compare, columns, first), index=chunk.index).add_prefix(COMPARE_PREFIX)
                scored = scored.join(variant)
            _write_rows(out, written, chunk.rename(columns=renamed).join(scored).itertuples(index=False))
            out.flush()
            os.fsync(out.fileno())
            elapsed = elapsed_before + time.perf_counter() - started
            state.update(rows_done=seen, bytes_done=out.tell(), sha256=written.hexdigest(), elapsed_s=elapsed)
            files.write_atomic(_state_path(partial), json.dumps(state))
            bar.update(len(chunk))
        if header is None:  # the file has no header at all
            raise BatchInputError(f"{input_path}: the file is empty")
    state["elapsed_s"] = elapsed_before + time.perf_counter() - started
    named = {c: renamed.get(c, c) for c in header}
    return {f: named[c] for f, c in columns.items()}, label_column and named[label_column], [named[c] for c in slices]


def _input_columns(path, header: list[str], wanted: dict[str, str], label_column: str | None, slices: list[str] | None):
    """Each Input field's column in the input (the one `wanted` names, else the field's own name), the label's and the
    slices': a field whose column is missing takes its default, unless it is required or its column was asked for; a
    label or slice column asked for must be there. Else BatchInputError naming the column and how to map it."""
    listed = ", ".join(header) or "none"
    columns = {}
    for name, field in model.Input.model_fields.items():
        column = wanted.get(name, name)
        if column in header:
            columns[name] = column
        elif field.is_required() or name in wanted:
            how = f"--column {name}=COLUMN" + (" (or --text-column COLUMN)" if name == contract.text_field() else "")
            what = f"the input's {'required ' if field.is_required() else ''}field {name!r}"
            raise BatchInputError(f"{path}: no {column!r} column for {what} (columns: {listed}); name its column with {how}")
    if label_column is not None and label_column not in header:
        raise BatchInputError(f"{path}: no label column {label_column!r} (columns: {listed})")
    if label_column is None and contract.label() and contract.expected_column() in header:
        label_column = contract.expected_column()
    if missing := [c for c in slices or () if c not in header]:
        raise BatchInputError(f"{path}: no slice column {missing[0]!r} (columns: {listed})")
    return columns, label_column, list(slices) if slices is not None else [c for c in contract.slices() if c in header]


# ---------------------------------------------------------------------------------------------
# Resuming: the state a killed run left, trusted only as far as its partial output confirms it
# ---------------------------------------------------------------------------------------------
def _identity(path: str | Path) -> dict[str, Any]:
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _state_path(partial: Path) -> Path:
    return partial.with_name(partial.name + ".json")


def _resumable(partial: Path, identity: dict[str, Any]) -> tuple[dict[str, Any], Any] | None:
    """The saved state of a killed run of this same job and the running hash of what it wrote, or None (after saying
    why) when it cannot be continued. The state is trusted only as far as the partial output confirms it: the rows,
    bytes and SHA-256 it records must be those of the partial output's first `bytes_done` bytes."""
    try:
        state = json.loads(_state_path(partial).read_text())
    except FileNotFoundError:
        return None  # nothing to resume: start from the first row
    except (OSError, ValueError):
        state = None
    if not _well_formed(state):
        why = "its saved state is unreadable"
    elif changed := [key for key in identity if state.get(key) != identity[key]]:
        why = ", ".join(changed) + " changed since the killed run"
    else:
        written, rows = _written(partial, state["bytes_done"])
        if written is not None and (rows, written.hexdigest()) == (state["rows_done"], state["sha256"]):
            return state, written
        why = "the partial output does not match its saved state"
    print(f"batch.py: cannot resume ({why}): starting from the first row", file=sys.stderr)
    return None


def _well_formed(state: Any) -> bool:
    """A state as `_score` saves it: a JSON object with whole, non-negative rows and bytes, a hash and a finite time."""
    kinds = {"rows_done": (int,), "bytes_done": (int,), "sha256": (str,), "elapsed_s": (int, float)}  # exact types: no bool
    if not isinstance(state, dict) or any(type(state.get(key)) not in types for key, types in kinds.items()):
        return False
    return state["rows_done"] >= 0 and state["bytes_done"] >= 0 and 0 <= state["elapsed_s"] < math.inf


def _written(partial: Path, size: int) -> tuple[Any, int]:
    """The SHA-256 (a hashlib object, to go on with) of the partial output's first `size` bytes and the CSV rows they
    hold after the header; (None, 0) when the file is shorter, missing or not a CSV the project wrote."""
    written = hashlib.sha256()

    def lines(f):
        left = size
        for line in f:
            line = line[:left]
            left -= len(line)
            written.update(line)
            yield line.decode("utf-8")
            if not left:
                return

    try:
        if partial.stat().st_size < size:
            return None, 0
        with open(partial, "rb") as f:
            rows = sum(1 for _ in csv.reader(lines(f))) - 1
    except (OSError, ValueError, csv.Error):
        return None, 0
    return written, rows


# ---------------------------------------------------------------------------------------------
# Writing: rows, the summary and report beside them, and what may be written at all
# ---------------------------------------------------------------------------------------------
def _write_rows(out, written, rows) -> None:
    """CSV rows, every text cell spreadsheet-safe, appended to the binary file `out` and to `written`, its running hash."""
    text = io.StringIO()
    csv.writer(text).writerows([files.spreadsheet_safe(cell) for cell in row] for row in rows)
    data = text.getvalue().encode("utf-8")
    out.write(data)
    written.update(data)


def summarize(
    scored_csv: str | Path,
    columns: dict[str, str],
    label_column: str | None,
    elapsed_s: float,
    run: dict[str, Any],
    html_report: bool = True,
    output_path: str | Path | None = None,
    baseline: str | Path | None = None,
    slices: list[str] = (),
) -> dict[str, Any]:
    """The scored CSV's summary (`reports.summary`; `columns`, `label_column` and `slices` as the scored CSV names them),
    written as .json (and the .html report) beside `output_path` (default: the scored CSV itself), each under a
    temporary name first. `baseline`: an earlier scored CSV of the same input, compared row by row. Returns the summary,
    its `outputs` the paths of the files written (the files themselves name each other by name only: they are shared,
    their folder is not)."""
    output_path = Path(output_path or scored_csv)
    summary = reports.summary(
        scored_csv, columns, label_column, slices=slices, elapsed_s=elapsed_s, run=run, output_path=output_path, baseline=baseline
    )
    files.write_atomic(output_path.with_suffix(".json"), json.dumps(summary, indent=2, default=str) + "\n")
    if html_report:
        files.write_atomic(output_path.with_suffix(".html"), reports.report_html(summary))
    return {**summary, "outputs": {kind: str(output_path.with_suffix(kind)) for kind in summary["outputs"]}}


def check_output(output_path: Path, inputs: list[str | Path]) -> None:
    """Refuse, before anything is touched, an output that is an input, a folder, or in a folder that cannot be written,
    and any file the run writes (the report, its .json and .html, the partial output, its state, the lock) that is an
    input or exists as anything but a regular file (a device, a FIFO, a folder)."""
    partial = output_path.with_name(output_path.name + ".partial")
    lock = output_path.with_name(f".{output_path.name}.lock")  # files.file_lock's name
    outputs = [output_path, output_path.with_suffix(".json"), output_path.with_suffix(".html"), partial, _state_path(partial), lock]
    for given in inputs:
        for out in outputs:
            if out.resolve() == Path(given).resolve() or (out.exists() and Path(given).exists() and os.path.samefile(out, given)):
                what = "" if out == output_path else f", and a report on {output_path.name} writes it"
                raise BatchInputError(f"{out}: this is the input {given}{what}; choose another output, the input is never overwritten")
    if output_path.is_dir():
        raise BatchInputError(f"{output_path}: is a folder; give the report's file name, such as {output_path / 'report.csv'}")
    if output_path.suffix in (".json", ".html"):  # the report's .json or .html would be written over the CSV
        raise BatchInputError(f"{output_path}: the report's {output_path.suffix} would replace it; give a name ending in .csv")
    for out in outputs:
        if out.is_symlink():  # a rename would replace the link itself (as root, -o /dev/stdout replaced /dev's own link)
            raise BatchInputError(f"{out}: is a symbolic link (to {os.readlink(out)}); give the file's own path")
        if kind := _not_regular(out):
            raise BatchInputError(f"{out}: is {kind}, not a regular file; batch.py writes its reports only to regular files")
    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BatchInputError(f"{output_path.parent}: cannot create the output folder ({error.strerror})") from None
    if not os.access(output_path.parent, os.W_OK):
        raise BatchInputError(f"{output_path.parent}: the output folder is not writable")


def _not_regular(path: Path) -> str | None:
    """What `path` is when it exists as anything but a regular file (links followed: /dev/stdout counts), else None."""
    if not path.exists() or path.is_file():
        return None
    if path.is_dir():
        return "a folder"
    if path.is_fifo():
        return "a FIFO (named pipe)"
    return "a device" if path.is_char_device() or path.is_block_device() else "a socket"


@contextlib.contextmanager
def writing(output_path: Path):
    """Hold the output's lock (a hidden file beside it, gone when the run ends) for the whole run; a second writer fails
    at once."""
    try:
        with files.only_writer(output_path):
            yield
    except BlockingIOError:
        raise BatchInputError(f"{output_path}: another run is writing this report now; wait for it, or choose another output") from None
    except OSError as error:
        if error.filename and Path(error.filename).name == f".{output_path.name}.lock":
            raise BatchInputError(f"{output_path}: cannot lock the output ({error.strerror})") from None
        raise


# ---------------------------------------------------------------------------------------------
# Shards: split a CSV into N contiguous parts, score them anywhere, merge them back in order
# ---------------------------------------------------------------------------------------------
def split(input_path: str | Path, outputs: list[str | Path], chunk_size: int = 4096) -> None:
    """Split a CSV into len(outputs) contiguous shards with the header in each (empty shards too). A shard is the
    user's input in parts, read as input: its cells are copied as they are (quoting them would change the inputs)."""
    total, n = count_rows(input_path), len(outputs)
    bounds = [round(total * k / n) for k in range(n + 1)]
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(open(path, "w", newline="", encoding="utf-8")) for path in outputs]
        seen, header = 0, None
        for chunk in read_chunks(input_path, chunk_size):
            header = list(chunk.columns)
            for k, f in enumerate(files):
                part = chunk.iloc[max(bounds[k] - seen, 0) : max(bounds[k + 1] - seen, 0)]
                if f.tell() == 0:
                    csv.writer(f).writerow(header)
                csv.writer(f).writerows(part.itertuples(index=False))
            seen += len(chunk)
        if header is None:
            raise BatchInputError(f"{input_path}: the file is empty")


def merge(scored_shards: list[str | Path], output_path: str | Path, html_report: bool = True) -> dict[str, Any]:
    """Concatenate scored shards (each with its .json) into one report, as if scored in one run."""
    output_path = Path(output_path)
    check_output(output_path, [*scored_shards, *(Path(s).with_suffix(".json") for s in scored_shards)])  # and their summaries
    partial = output_path.with_name(output_path.name + ".partial")
    with writing(output_path):
        try:
            shards = [json.loads(Path(s).with_suffix(".json").read_text()) for s in scored_shards]
            with open(partial, "wb") as out:
                for k, shard in enumerate(scored_shards):
                    with open(shard, "rb") as f:
                        if k:
                            f.readline()  # each shard repeats the header
                        out.writelines(f)
            first = shards[0]
            run = {"input": first["input"], "flags": first["flags"], "compare_flags": first["compare_flags"], "shards": len(shards)}
            elapsed = max(s["elapsed_s"] for s in shards)  # shards run side by side
            summary = summarize(
                partial, first["columns"], first["label_column"], elapsed, run, html_report, output_path, slices=first["slice_columns"]
            )
            os.replace(partial, output_path)
        except (OSError, ValueError, KeyError) as error:
            partial.unlink(missing_ok=True)
            what = f"{error.filename}: {error.strerror}" if isinstance(error, OSError) else f"a shard's summary is unreadable ({error})"
            raise BatchInputError(f"cannot merge into {output_path}: {what}") from None
    return summary


# ---------------------------------------------------------------------------------------------
# Edge cases from a report, and the report of every edge case
# ---------------------------------------------------------------------------------------------
def save_misclassified(
    scored_csv: str | Path, summary: dict[str, Any], flags: model.Flags, created_by: str | None = None, client=None, trusted=True
) -> list[tuple[EdgeCase, bool]]:
    """Every misclassified row of a labelled report (its expected value one of the label's classes), flagged into the
    review queue (from a file; duplicates merge), in one transaction. From the app without a key (`trusted=False`) the
    queue's rate and cap apply (review.py)."""
    label, column = contract.label(), summary.get("label_column")
    if not label or not column:
        wanted = f"{contract.expected_column()}, or --label-column" if label else "and the pipeline has no label"
        raise BatchInputError(f"--save-misclassified needs a label column ({wanted})")
    classes = reports.label_values()
    note = f"misclassified in the batch report of {Path(summary['input']).name}"
    cases = []
    for chunk in read_report(scored_csv, CHUNK_SIZE):
        wrong = chunk[(chunk.error == "") & (chunk[column] != "") & (chunk[column] != chunk[label])]
        if classes:
            wrong = wrong[wrong[column].isin(classes)]
        for row in wrong.to_dict("records"):
            given = contract.input_from_row(row, summary["columns"])  # every Input field, as it was scored
            cases.append({"ticket": given, "flags": flags, "expected": {label: row[column]}, "note": note, "source": "file"})
    return review.flag(cases, created_by, client=client, trusted=trusted) if cases else []


def cases_report(output_path: str | Path) -> dict[str, Any]:
    """Every edge case against the pipeline now (edge_cases.check_cases): a CSV with one row a case, a JSON with the
    counts of fixed / still open / newly broken / newly fixed, and an HTML report; what `snakemake regressions` writes."""
    output_path = Path(output_path)
    check_output(output_path, [edge_cases.cases_file()])
    results = edge_cases.check_cases()
    rows, counts = reports.case_rows(results), edge_cases.verdict_counts(results)
    summary = reports.cases_summary(rows, counts, edge_cases.cases_file(), output_path)
    with writing(output_path):
        cells = pd.DataFrame(rows).fillna("").map(files.spreadsheet_safe)  # the store's texts and notes run no formula
        files.write_atomic(output_path, cells.rename(columns=files.spreadsheet_safe).to_csv(index=False))
        files.write_atomic(output_path.with_suffix(".json"), json.dumps(summary, indent=2, default=str) + "\n")
        files.write_atomic(output_path.with_suffix(".html"), reports.cases_html(summary, counts))
    return summary


if __name__ == "__main__":
    sys.exit(main())
