"""Batch reports for domain experts: a CSV of tickets in; a scored CSV, an HTML report and a JSON summary out.

    python batch.py data/eval.csv -o reports/eval.csv            # also writes reports/eval.html and .json
    python batch.py tickets.csv -o out.csv --flag top_k=5 --compare auto_reply=false

The input is streamed in chunks through `model.run_batch` (debug off), so memory stays flat however
long the file is. Every input row gives exactly one output row, in order; a row the pipeline cannot
take (empty text, too long, ...) keeps its columns and gets an `error`. `report()` does the work for
this CLI and for the app's batch tab. The summary and the HTML are computed from the scored CSV alone,
which is what lets `merge()` join shards scored in parallel into the same report.

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
import itertools
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from pydantic import BaseModel, ValidationError
from tqdm import tqdm

import builder
import edge_cases
import files
import model

CHUNK_SIZE = 2048  # rows per run_batch call: big enough to batch well, small enough to keep memory flat
MAX_LISTED_ROWS = 200  # misclassified or differing rows kept in the summary
HISTOGRAM_BINS = 20
COMPARE_PREFIX = "compare_"


class BatchInputError(ValueError):
    """The input file as a whole cannot be used (exit status 2 on the command line)."""


# ---------------------------------------------------------------------------------------------
# Output columns, derived from the Triage schema
# ---------------------------------------------------------------------------------------------
def _output_columns() -> list[str]:
    columns = []
    for name, field in model.Triage.model_fields.items():
        annotation = field.annotation
        if name == "trace":
            continue
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):  # order_ids -> order_ids_known, ...
            columns += [f"{name}_{sub}" for sub in annotation.model_fields]
        elif getattr(annotation, "__origin__", None) is list:  # articles -> top_article_id, ...
            item = annotation.__args__[0]
            columns += [f"top_{name.removesuffix('s')}_{sub}" for sub in item.model_fields]
        else:
            columns.append(name)
    return [*columns, "error"]


OUTPUT_COLUMNS = _output_columns()


def flatten(triage: model.Triage) -> dict[str, Any]:
    """One CSV row from a Triage: lists joined by spaces, the best article's fields as top_article_*."""
    row: dict[str, Any] = {}
    for name, value in triage.model_dump(mode="json", exclude={"trace"}).items():
        if isinstance(value, dict):
            row.update({f"{name}_{k}": " ".join(v) for k, v in value.items()})
        elif isinstance(value, list):
            row.update({f"top_{name.removesuffix('s')}_{k}": v for k, v in (value[0] if value else {}).items()})
        else:
            row[name] = value
    return {column: "" if row.get(column) is None else row[column] for column in OUTPUT_COLUMNS}  # None is empty, not "nan"


# ---------------------------------------------------------------------------------------------
# Flags from KEY=VALUE pairs
# ---------------------------------------------------------------------------------------------
def parse_flags(pairs: list[str], base: model.Flags | None = None, option: str = "--flag") -> model.Flags:
    """`["top_k=5", "auto_reply=false"]` -> Flags, on top of `base`. Raises BatchInputError naming the key."""
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
# Reading the input
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
        raise BatchInputError(f"{path}: not a CSV file (it holds binary data)")
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
            if chunk.apply(lambda column: column.str.contains("\x00", regex=False)).to_numpy().any():  # past the head check_file reads
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


def read_report(path: str | Path, chunk_size: int):
    """A CSV this project wrote (a scored report, a shard's, a baseline) in string chunks, each cell and column name as it
    was before `files.spreadsheet_safe` quoted it. Never for the user's input, which is read as it is."""
    for chunk in pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=chunk_size):
        chunk = chunk.map(files.spreadsheet_text)
        chunk.columns = [files.spreadsheet_text(name) for name in chunk.columns]
        yield chunk


def _rows(path: str | Path) -> int:
    """Rows of a CSV as a CSV reader counts them (a text may hold line breaks); a file it cannot read raises BatchInputError."""
    return sum(len(chunk) for chunk in read_chunks(path, 65536))


def count_rows(path: str | Path) -> int:
    """Lines after the header: the progress bar's total (exact unless texts hold line breaks)."""
    with open(path, "rb") as f:
        return max(sum(1 for _ in f) - 1, 0)


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------
def score_chunk(texts: list[str], flags: model.Flags) -> list[dict[str, Any]]:
    """Output columns for each text; a row that fails gets `error` and empty outputs, the others go on."""
    rows: list[dict[str, Any] | None] = [None] * len(texts)
    valid: dict[int, model.Ticket] = {}
    for i, text in enumerate(texts):
        try:
            valid[i] = model.Ticket(text=text)
        except ValidationError as error:
            rows[i] = _error_row(error)
    results = model.run_each(list(valid.values()), flags)  # a failing row cannot cost the chunk
    for i, result in zip(valid, results, strict=True):
        rows[i] = _error_row(result) if isinstance(result, Exception) else flatten(result)
    return rows


def _error_row(error: Exception) -> dict[str, Any]:
    message = model.error_message(error) if isinstance(error, ValidationError) else f"{type(error).__name__}: {error}"
    return {**dict.fromkeys(OUTPUT_COLUMNS, ""), "error": message}


def report(
    input_path: str | Path,
    output_path: str | Path,
    text_column: str = "text",
    label_column: str | None = None,
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

    Returns the summary. `compare` is a second set of flags: every row is scored with both, the
    variant's columns prefixed `compare_`. `resume` continues a run that was killed, from its last
    complete chunk. `baseline` is an earlier scored CSV of the same input: the report adds what changed.
    Raises BatchInputError when the file cannot be used or the report cannot be written.
    """
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
            "settings": [text_column, label_column, flags.model_dump(), compare and compare.model_dump(), chunk_size, limit],
            "pipeline": builder.fingerprint(),
        }
        state, written = (_resumable(partial, identity) if resume else None) or (
            {**identity, "rows_done": 0, "bytes_done": 0, "sha256": "", "elapsed_s": 0.0},
            hashlib.sha256(),
        )
        model.resources()  # load the model before the clock starts: elapsed_s is scoring time
        try:
            text_column, label_column = _score(
                input_path, partial, state, written, text_column, label_column, flags, compare, chunk_size, limit, progress
            )
            run = {"input": str(input_path), "flags": flags.model_dump(), "compare_flags": compare.model_dump() if compare else None}
            if state["resumed_from_row"]:
                run["resumed_from_row"] = state["resumed_from_row"]
            summary = summarize(partial, text_column, label_column, state["elapsed_s"], run, html_report, output_path, baseline)
            os.replace(partial, output_path)  # last: the report is complete
        except BatchInputError:
            partial.unlink(missing_ok=True)  # the input is unusable: nothing to resume
            _state_path(partial).unlink(missing_ok=True)
            raise
        except OSError as error:  # disk full, folder gone, ...: what was scored stays for --resume
            raise BatchInputError(f"{error.filename or output_path}: cannot write the report ({error.strerror})") from None
        _state_path(partial).unlink(missing_ok=True)
    return summary


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
    """Hold the output's lock (a hidden file beside it) for the whole run; a second writer fails at once."""
    from filelock import Timeout

    lock = files.file_lock(output_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise BatchInputError(f"{output_path}: another run is writing this report now; wait for it, or choose another output") from None
    except OSError as error:
        raise BatchInputError(f"{output_path}: cannot lock the output ({error.strerror})") from None
    try:
        yield
    finally:
        lock.release()


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


def _score(input_path, partial, state, written, text_column, label_column, flags, compare, chunk_size, limit, progress):
    """Stream the input through the pipeline into `partial`, from the row `state` says the last run stopped at.

    After each chunk the rows are flushed to disk and the state (rows and bytes done, the SHA-256 of those bytes, kept
    running in `written`) saved beside them, so a killed run can continue from its last complete chunk. Every text cell
    is written spreadsheet-safe (`files.spreadsheet_safe`). Returns the text and label columns as written.
    """
    total = min(count_rows(input_path), limit) if limit is not None else count_rows(input_path)
    show = sys.stderr.isatty() if progress is None else progress
    done = state["resumed_from_row"] = state["rows_done"]
    started, elapsed_before = time.perf_counter(), state["elapsed_s"]
    columns = None
    with (
        open(partial, "r+b" if done else "wb") as out,
        tqdm(total=total, initial=done, unit="rows", disable=not show) as bar,
    ):
        out.truncate(state["bytes_done"])  # drop whatever the killed run wrote after its last complete chunk
        out.seek(state["bytes_done"])
        seen = 0
        for chunk in read_chunks(input_path, chunk_size):
            if columns is None:
                columns = list(chunk.columns)
                _check_columns(input_path, columns, text_column, label_column)
                label_column = _label(columns, label_column)
                # an input column named like an output (say "category") keeps its values as input_category
                renamed = {c: f"input_{c}" for c in columns if c in OUTPUT_COLUMNS or c.startswith(COMPARE_PREFIX)}
                text_column, label_column = renamed.get(text_column, text_column), renamed.get(label_column, label_column)
                if not done:
                    header = [renamed.get(c, c) for c in columns] + OUTPUT_COLUMNS
                    _write_rows(out, written, [header + ([COMPARE_PREFIX + c for c in OUTPUT_COLUMNS] if compare is not None else [])])
            chunk = chunk.rename(columns=renamed)
            if limit is not None:
                chunk = chunk.iloc[: max(limit - seen, 0)]
            if chunk.empty:
                break
            seen += len(chunk)
            if seen <= done:  # scored by the run that was killed
                continue
            texts = chunk[text_column].tolist()
            scored = pd.DataFrame(score_chunk(texts, flags), index=chunk.index)
            if compare is not None:
                variant = pd.DataFrame(score_chunk(texts, compare), index=chunk.index).add_prefix(COMPARE_PREFIX)
                scored = scored.join(variant)
            _write_rows(out, written, chunk.join(scored).itertuples(index=False))
            out.flush()
            os.fsync(out.fileno())
            elapsed = elapsed_before + time.perf_counter() - started
            state.update(rows_done=seen, bytes_done=out.tell(), sha256=written.hexdigest(), elapsed_s=elapsed)
            files.write_atomic(_state_path(partial), json.dumps(state))
            bar.update(len(chunk))
        if columns is None:  # the file has no header at all
            raise BatchInputError(f"{input_path}: the file is empty")
    state["elapsed_s"] = elapsed_before + time.perf_counter() - started
    return text_column, label_column


def _write_rows(out, written, rows) -> None:
    """CSV rows, every text cell spreadsheet-safe, appended to the binary file `out` and to `written`, its running hash."""
    text = io.StringIO()
    csv.writer(text).writerows([files.spreadsheet_safe(cell) for cell in row] for row in rows)
    data = text.getvalue().encode("utf-8")
    out.write(data)
    written.update(data)


def _check_columns(path, columns: list[str], text_column: str, label_column: str | None) -> None:
    if text_column not in columns:
        raise BatchInputError(f"{path}: no {text_column!r} column (columns: {', '.join(columns) or 'none'}); choose one with --text-column")
    if label_column is not None and label_column not in columns:
        raise BatchInputError(f"{path}: no label column {label_column!r} (columns: {', '.join(columns)})")


def _label(columns: list[str], label_column: str | None) -> str | None:
    if label_column is not None:
        return label_column
    return "expected_category" if "expected_category" in columns else None


# ---------------------------------------------------------------------------------------------
# Summary, metrics and the HTML report: computed from the scored CSV alone
# ---------------------------------------------------------------------------------------------
def summarize(
    scored_csv: str | Path,
    text_column: str,
    label_column: str | None,
    elapsed_s: float,
    run: dict[str, Any],
    html_report: bool = True,
    output_path: str | Path | None = None,
    baseline: str | Path | None = None,
) -> dict[str, Any]:
    """Read the scored CSV in chunks and write its .json summary (and .html report) beside `output_path`
    (default: the scored CSV itself), each under a temporary name first. `baseline`: an earlier scored CSV
    of the same input, compared row by row (`compare_baseline`)."""
    scored_csv = Path(scored_csv)
    output_path = Path(output_path or scored_csv)
    variants = {"": _Tally(label_column), COMPARE_PREFIX: _Tally(label_column)}
    agreement = Counter()
    differing: list[dict] = []
    compared = False
    for chunk in read_report(scored_csv, 4096):
        compared = compared or COMPARE_PREFIX + "category" in chunk
        for prefix, tally in variants.items():
            if prefix == "" or compared:
                tally.add(chunk, prefix, text_column)
        if compared:
            both = (chunk.error == "") & (chunk[COMPARE_PREFIX + "error"] == "")
            same = chunk.category == chunk[COMPARE_PREFIX + "category"]
            agreement.update({"rows": int(both.sum()), "same": int((both & same).sum())})
            for i, row in chunk[both & ~same].iterrows():
                if len(differing) < MAX_LISTED_ROWS:
                    differing.append(_listed(row, i, text_column, label_column, with_compare=True))
    manifest = builder.manifest()
    summary = {
        **variants[""].summary(),
        "elapsed_s": round(elapsed_s, 3),
        "rows_per_s": round(variants[""].rows / elapsed_s, 1) if elapsed_s > 0 else None,
        "text_column": text_column,
        "label_column": label_column,
        **run,
        "pipeline_version": manifest["pipeline_version"],
        "model": manifest["model"],
        "encoder": manifest["encoder"],
        "data": manifest["data"],
        "artifacts_built_at": manifest["built_at"],
        "outputs": {kind: str(output_path.with_suffix(kind)) for kind in (".csv", ".html", ".json")},
    }
    if compared:
        summary["compare"] = {
            **variants[COMPARE_PREFIX].summary(),
            "agreement": round(agreement["same"] / agreement["rows"], 4) if agreement["rows"] else None,
            "differing_rows": differing,
            "differing_total": agreement["rows"] - agreement["same"],
        }
    if baseline is not None:
        summary["baseline"] = compare_baseline(scored_csv, baseline, text_column, label_column, summary)
    files.write_atomic(output_path.with_suffix(".json"), json.dumps(summary, indent=2, default=str) + "\n")
    if html_report:
        files.write_atomic(output_path.with_suffix(".html"), render_html(summary))
    return summary


def compare_baseline(scored_csv: Path, baseline_csv: str | Path, text_column: str, label_column: str | None, summary: dict) -> dict:
    """This run against an earlier scored CSV of the same input (from any earlier pipeline version), row by row:
    the rows whose category changed, split into fixed (was wrong, now right), broken (was right, now wrong) and
    changed-unlabelled, the per-class metric deltas, and which pipeline, model and data each side came from."""
    baseline_csv = Path(baseline_csv)
    try:
        before_summary = json.loads(baseline_csv.with_suffix(".json").read_text())
    except (OSError, ValueError):
        before_summary = {}
    counts, rows = Counter(), {"fixed": [], "broken": [], "changed_unlabelled": []}
    before_tally = _Tally(label_column)
    now_chunks = read_report(scored_csv, 4096)
    try:
        before_chunks = read_report(baseline_csv, 4096)
        for now, before in itertools.zip_longest(now_chunks, before_chunks):
            if now is None or before is None or len(now) != len(before) or "category" not in before:
                raise BatchInputError(f"{baseline_csv.name}: not a scored report of the same input (rows or columns differ)")
            if label_column and label_column in before:
                before_tally.add(before, "", text_column)
            changed = now[(now.category != before.category) & (now.error == "") & (before.error == "")]
            for i, row in changed.iterrows():
                was, label = before.category[i], row[label_column] if label_column else ""
                kind = _change(label, was, row.category)
                counts[kind] += 1
                if kind in rows and len(rows[kind]) < MAX_LISTED_ROWS:
                    item = {"row": int(i) + 1, "text": row[text_column][:300], "expected": label, "before": was, "now": row.category}
                    rows[kind].append(item)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as error:
        raise BatchInputError(f"{baseline_csv.name}: cannot read the baseline ({error})") from None
    out = {
        "baseline": str(baseline_csv),
        "changed": sum(counts.values()),
        **{kind: counts[kind] for kind in ("fixed", "broken", "changed_unlabelled", "still_wrong")},
        "rows": rows,
        "sides": {
            "baseline": {k: before_summary.get(k) for k in ("pipeline_version", "model", "encoder", "data", "artifacts_built_at")},
            "now": {k: summary.get(k) for k in ("pipeline_version", "model", "encoder", "data", "artifacts_built_at")},
        },
    }
    if summary.get("metrics") and before_tally.rows:
        was, now = metrics(before_tally.pairs), summary["metrics"]
        out["metric_deltas"] = {
            "accuracy": round(now["accuracy"] - was["accuracy"], 4),
            "macro_f1": round(now["macro_f1"] - was["macro_f1"], 4),
            "per_class_f1": {c: round(m["f1"] - was["per_class"].get(c, {"f1": 0.0})["f1"], 4) for c, m in now["per_class"].items()},
        }
    return out


def _change(label: str, before: str, now: str) -> str:
    """How a row whose category changed counts: against its label when it has one."""
    if not label:
        return "changed_unlabelled"
    return "fixed" if now == label else "broken" if before == label else "still_wrong"


class _Tally:
    """Running counts for one variant: what the summary and the plots need, never the rows themselves."""

    def __init__(self, label_column: str | None):
        self.label_column = label_column
        self.rows = self.errors = 0
        self.categories, self.teams, self.pairs = Counter(), Counter(), Counter()
        self.confidence_sum = 0.0
        self.histogram = [0] * HISTOGRAM_BINS  # confidence counts in bins of 0.05
        self.needs_human = 0
        self.misclassified: list[dict] = []
        self.misclassified_total = 0

    def add(self, chunk: pd.DataFrame, prefix: str, text_column: str) -> None:
        self.rows += len(chunk)
        ok = chunk[chunk[prefix + "error"] == ""]
        self.errors += len(chunk) - len(ok)
        self.categories.update(ok[prefix + "category"])
        self.teams.update(ok[prefix + "team"])
        confidences = ok[prefix + "confidence"].astype(float)
        self.confidence_sum += float(confidences.sum())
        for k in (confidences * HISTOGRAM_BINS).astype(int).clip(upper=HISTOGRAM_BINS - 1):
            self.histogram[k] += 1
        self.needs_human += int((ok[prefix + "needs_human"] == "True").sum())
        if self.label_column:
            self.pairs.update(zip(ok[self.label_column], ok[prefix + "category"], strict=True))
            wrong = ok[ok[self.label_column] != ok[prefix + "category"]]
            self.misclassified_total += len(wrong)
            for i, row in wrong.head(MAX_LISTED_ROWS - len(self.misclassified)).iterrows():
                self.misclassified.append(_listed(row, i, text_column, self.label_column, prefix=prefix))

    def summary(self) -> dict[str, Any]:
        scored = self.rows - self.errors
        out = {
            "rows": self.rows,
            "errors": self.errors,
            "category_distribution": dict(self.categories.most_common()),
            "team_distribution": dict(self.teams.most_common()),
            "mean_confidence": round(self.confidence_sum / scored, 4) if scored else None,
            "confidence_histogram": {"bin_edges": [k / HISTOGRAM_BINS for k in range(HISTOGRAM_BINS + 1)], "counts": self.histogram},
            "needs_human_share": round(self.needs_human / scored, 4) if scored else None,
        }
        if self.label_column:
            out["metrics"] = metrics(self.pairs)
            out["misclassified_rows"] = self.misclassified
            out["misclassified_total"] = self.misclassified_total
        return out


def _listed(row: pd.Series, index: int, text_column: str, label_column: str | None, prefix: str = "", with_compare=False) -> dict:
    item = {"row": int(index) + 1, "text": row[text_column][:300]}
    if label_column:
        item["expected"] = row[label_column]
    item.update({"category": row[prefix + "category"], "confidence": float(row[prefix + "confidence"])})
    if with_compare:
        item.update({"compare_category": row[COMPARE_PREFIX + "category"], "compare_confidence": float(row[COMPARE_PREFIX + "confidence"])})
    return item


def metrics(pairs: Counter) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix from (expected, predicted) counts."""
    labels = [c.value for c in model.Category] + sorted({e for e, _ in pairs} - {c.value for c in model.Category})
    total = sum(pairs.values())
    per_class = {}
    for label in labels:
        tp = pairs[(label, label)]
        predicted = sum(n for (_, p), n in pairs.items() if p == label)
        support = sum(n for (e, _), n in pairs.items() if e == label)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "support": support}
    present = [label for label in labels if per_class[label]["support"] or any(p == label for _, p in pairs)]
    return {
        "labelled_rows": total,
        "accuracy": round(sum(pairs[(label, label)] for label in labels) / total, 4) if total else None,
        "macro_f1": round(sum(per_class[label]["f1"] for label in present) / len(present), 4) if present else None,
        "per_class": per_class,
        "confusion_matrix": {"labels": labels, "rows_expected_columns_predicted": [[pairs[(e, p)] for p in labels] for e in labels]},
    }


def figures(summary: dict[str, Any]) -> list:
    """Plotly figures from a summary alone (so the app's batch tab draws the same ones): categories,
    confidence, and the confusion matrix when labelled; variant B beside A when comparing."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    variants = {"A (flags)": summary, "B (compare flags)": summary["compare"]} if "compare" in summary else {"pipeline": summary}
    categories = [c.value for c in model.Category]
    bars = go.Figure(
        [go.Bar(name=n, x=categories, y=[v["category_distribution"].get(c, 0) for c in categories]) for n, v in variants.items()]
    )
    bars.update_layout(title="Category distribution", barmode="group", yaxis_title="rows")
    hist = go.Figure()
    for name, v in variants.items():
        edges = v["confidence_histogram"]["bin_edges"]
        centres = [(lo + hi) / 2 for lo, hi in itertools.pairwise(edges)]
        hist.add_bar(name=name, x=centres, y=v["confidence_histogram"]["counts"], width=edges[1] - edges[0], opacity=0.7)
    hist.update_layout(title="Confidence", barmode="overlay", xaxis_title="confidence", yaxis_title="rows", xaxis_range=[0, 1])
    out = [bars, hist]
    if summary.get("metrics"):
        heat = make_subplots(rows=1, cols=len(variants), subplot_titles=list(variants))
        for col, v in enumerate(variants.values(), start=1):
            cm = v["metrics"]["confusion_matrix"]
            z = cm["rows_expected_columns_predicted"]
            heatmap = go.Heatmap(z=z, x=cm["labels"], y=cm["labels"], colorscale="Blues", showscale=False, text=z, texttemplate="%{text}")
            heat.add_trace(heatmap, row=1, col=col)
        heat.update_layout(title="Confusion matrix (rows: expected, columns: predicted)", height=520)
        heat.update_yaxes(autorange="reversed")
        out.append(heat)
    return out


def render_html(summary: dict[str, Any]) -> str:
    """One self-contained HTML file (templates/report.html): figures (plotly, its JavaScript inlined once), cards,
    tables and run metadata."""
    figures_html = [
        fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False}) for i, fig in enumerate(figures(summary))
    ]
    tables = []
    if summary.get("metrics"):
        per_class = [{"category": c, **m} for c, m in summary["metrics"]["per_class"].items()]
        tables.append(table("Per category", per_class, len(per_class)))
    if "misclassified_rows" in summary:
        tables.append(table("Misclassified rows", summary["misclassified_rows"], summary["misclassified_total"]))
    if "compare" in summary:
        tables.append(table("Rows where A and B differ", summary["compare"]["differing_rows"], summary["compare"]["differing_total"]))
    if "baseline" in summary:
        changes = summary["baseline"]
        for kind, title in (("broken", "Broken since the baseline (was right, now wrong)"), ("fixed", "Fixed since the baseline")):
            tables.append(table(title, changes["rows"][kind], changes[kind]))
        tables.append(table("Changed since the baseline, no label", changes["rows"]["changed_unlabelled"], changes["changed_unlabelled"]))
    return page(
        title=Path(summary["input"]).name,
        card_groups=_summary_cards(summary),
        notes=[f"{summary['rows']} rows in {summary['elapsed_s']} s ({summary['rows_per_s']} rows/s)."],
        figures=figures_html,
        tables=tables,
        metadata=_metadata(summary),
    )


def page(title: str, card_groups: list[dict], tables: list[dict], metadata: dict, figures: list[str] = (), notes: list[str] = ()) -> str:
    """templates/report.html filled in: every value escaped but the figures (plotly's own HTML)."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(model.ROOT / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    return environment.get_template("report.html").render(
        title=title, card_groups=card_groups, notes=notes, figures=figures, tables=tables,
        metadata=json.dumps(metadata, indent=2, default=str),
    )  # fmt: skip


def table(title: str, rows: list[dict], total: int) -> dict:
    """A table of the page: its title, the rows shown and how many there are in all."""
    return {"title": title, "rows": rows, "total": total}


def cards(title: str, items: list[tuple[str, Any]], notes: list[str] = ()) -> dict:
    """A heading and a row of summary cards (value over name) for the page, with lines of text under them."""
    return {"title": title, "cards": items, "notes": list(notes)}


_METADATA = ["input", "flags", "compare_flags", "pipeline_version", "model", "encoder", "data", "artifacts_built_at"]
_METADATA += ["text_column", "label_column"]


def _metadata(summary: dict[str, Any]) -> dict[str, Any]:
    """What the run was: input, flags, pipeline, model and data (and, with a baseline, where each side came from)."""
    out = {k: summary[k] for k in _METADATA if k in summary}
    if "baseline" in summary:
        out["baseline"] = {"file": summary["baseline"]["baseline"], **summary["baseline"]["sides"]}
    return out


def _summary_cards(summary: dict[str, Any]) -> list[dict]:
    def variant_cards(s: dict[str, Any], name: str, notes: list[str] = ()) -> dict:
        items = [("rows", s["rows"]), ("errors", s["errors"]), ("mean confidence", s["mean_confidence"])]
        items.append(("needs a human", f"{s['needs_human_share']:.1%}" if s["needs_human_share"] is not None else "n/a"))
        if s.get("metrics"):
            items += [("accuracy", s["metrics"]["accuracy"]), ("macro-F1", s["metrics"]["macro_f1"])]
        return cards(name, items, notes)

    out = [variant_cards(summary, "A (flags)" if "compare" in summary else "Summary")]
    if "compare" in summary:
        out.append(
            variant_cards(summary["compare"], "B (compare flags)", [f"Agreement between A and B: {summary['compare']['agreement']}"])
        )
    if "baseline" in summary:
        b = summary["baseline"]
        deltas = b.get("metric_deltas", {})
        items = [("fixed", b["fixed"]), ("broken", b["broken"]), ("changed, no label", b["changed_unlabelled"])]
        items += [(f"{k} change", f"{v:+.4f}") for k, v in deltas.items() if k != "per_class_f1"]
        out.append(cards(f"Against the baseline {Path(b['baseline']).name}", items))
    return out


# ---------------------------------------------------------------------------------------------
# Shards: split a CSV into N contiguous parts, score them anywhere, merge them back in order
# ---------------------------------------------------------------------------------------------
def split(input_path: str | Path, outputs: list[str | Path], chunk_size: int = 4096) -> None:
    """Split a CSV into len(outputs) contiguous shards with the header in each (empty shards too). A shard is the
    user's input in parts, read as input: its cells are copied as they are (quoting them would change the tickets)."""
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
            summary = summarize(partial, first["text_column"], first["label_column"], elapsed, run, html_report, output_path)
            os.replace(partial, output_path)
        except (OSError, ValueError, KeyError) as error:
            partial.unlink(missing_ok=True)
            what = f"{error.filename}: {error.strerror}" if isinstance(error, OSError) else f"a shard's summary is unreadable ({error})"
            raise BatchInputError(f"cannot merge into {output_path}: {what}") from None
    return summary


# ---------------------------------------------------------------------------------------------
# Edge cases from a report
# ---------------------------------------------------------------------------------------------
def save_misclassified(
    scored_csv: str | Path, summary: dict[str, Any], flags: model.Flags, created_by: str | None = None
) -> list[tuple[model.EdgeCase, bool]]:
    """Every misclassified row of a labelled report, saved as an edge case (from a file; duplicates are merged)."""
    label, text = summary.get("label_column"), summary["text_column"]
    if not label:
        raise BatchInputError("--save-misclassified needs a label column (expected_category, or --label-column)")
    categories = {c.value for c in model.Category}
    note = f"misclassified in the batch report of {Path(summary['input']).name}"
    saved = []
    for chunk in read_report(scored_csv, CHUNK_SIZE):
        wrong = chunk[(chunk.error == "") & (chunk[label] != chunk.category) & chunk[label].isin(categories)]
        cases = [
            {"ticket": {"text": t}, "flags": flags, "expected": {"category": e}, "note": note, "source": "file"}
            for t, e in zip(wrong[text], wrong[label], strict=True)
        ]
        saved += edge_cases.save_cases(cases, created_by) if cases else []
    return saved


def cases_report(output_path: str | Path) -> dict[str, Any]:
    """Every edge case against the pipeline now (edge_cases.check_cases): a CSV with one row a case, a JSON with the
    counts of fixed / still open / newly broken / newly fixed, and an HTML report; what `snakemake regressions` writes."""
    output_path = Path(output_path)
    check_output(output_path, [edge_cases.cases_file()])
    results = edge_cases.check_cases()
    rows = []
    for r in results:
        case, then, now = r["case"], r["case"].answer or {}, r["answer_now"]
        rows.append(
            {
                "id": case.id,
                "verdict": r["verdict"],
                "status": case.status,
                "source": case.source,
                "created_at": case.created_at,
                "text": case.ticket.text,
                **{f"expected_{k}": v for k, v in case.expected.model_dump(mode="json").items()},
                "category_when_flagged": then.get("category"),
                **{f"now_{k}": v for k, v in now.items()},
                "note": case.note,
            }
        )
    counts = edge_cases.verdict_counts(results)
    manifest = builder.manifest()
    summary = {
        "cases": len(results),
        **counts,
        "store": str(edge_cases.cases_file()),
        "listed": {v: [r for r in rows if r["verdict"] == v][:MAX_LISTED_ROWS] for v in ("broken", "newly fixed", "open")},
        **{k: manifest[k] for k in ("pipeline_version", "model", "encoder", "data")},
        "outputs": {kind: str(output_path.with_suffix(kind)) for kind in (".csv", ".html", ".json")},
    }
    with writing(output_path):
        cells = pd.DataFrame(rows).fillna("").map(files.spreadsheet_safe)  # the store's texts and notes run no formula
        files.write_atomic(output_path, cells.rename(columns=files.spreadsheet_safe).to_csv(index=False))
        files.write_atomic(output_path.with_suffix(".json"), json.dumps(summary, indent=2, default=str) + "\n")
        titles = {
            "broken": "Newly broken: fixed cases the pipeline now gets wrong",
            "newly fixed": "Newly fixed: mark them fixed",
            "open": "Still open",
        }
        html_page = page(
            title="edge cases",
            card_groups=[cards("Edge cases now", list(counts.items()))],
            tables=[table(title, summary["listed"][v], counts[v]) for v, title in titles.items()],
            metadata={k: summary[k] for k in ("store", "pipeline_version", "model", "encoder", "data")},
        )
        files.write_atomic(output_path.with_suffix(".html"), html_page)
    return summary


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Triage a CSV of tickets into a scored CSV, an HTML report and a JSON summary.")
    parser.add_argument("input", nargs="*", help="the input CSV (with --merge: the scored shards, in order)")
    parser.add_argument("-o", "--output", required=True, help="the scored CSV to write; .html and .json go beside it")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default=None, help="expected category column (default: expected_category when present)")
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
    parser.add_argument(
        "--save-misclassified", action="store_true", help="save the misclassified rows as edge cases (edge_cases.cases_file())"
    )
    args = parser.parse_args(argv)
    try:
        if args.chunk_size < 1 or (args.limit is not None and args.limit < 0):
            raise BatchInputError("--chunk-size must be at least 1 and --limit at least 0")
        if args.cases:
            summary = cases_report(args.output)
            print(json.dumps({k: summary[k] for k in ("cases", "fixed", "open", "broken", "newly fixed")}) + f" -> {args.output}")
            return 0  # the report is the product; `python model.py cases check` exits 1 on a broken case
        if not args.input:
            raise BatchInputError("give an input CSV (or --cases)")
        if args.merge:
            summary = merge(args.input, args.output, html_report=not args.no_html)
        else:
            if len(args.input) != 1:
                raise BatchInputError("give one input CSV (several only with --merge)")
            flags = parse_flags(args.flag)
            compare = parse_flags(args.compare, base=flags, option="--compare") if args.compare else None
            progress = False if args.quiet else None
            summary = report(
                args.input[0],
                args.output,
                args.text_column,
                args.label_column,
                flags,
                compare,
                args.chunk_size,
                args.limit,
                progress,
                not args.no_html,
                args.resume,
                args.baseline,
            )
            if args.save_misclassified:
                saved = save_misclassified(args.output, summary, flags)
                print(f"{sum(new for _, new in saved)} misclassified rows saved as edge cases -> {edge_cases.cases_file()}")
    except BatchInputError as error:
        print(f"batch.py: error: {error}", file=sys.stderr)
        return 2
    accuracy = summary.get("metrics", {}).get("accuracy")
    print(
        f"{summary['rows']} rows, {summary['errors']} errors, {summary['rows_per_s']} rows/s"
        + (f", accuracy {accuracy}" if accuracy is not None else "")
        + f" -> {args.output} (+ .json{'' if args.no_html else ', .html'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
