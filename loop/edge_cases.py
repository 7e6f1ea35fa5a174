"""The edge-case store: cases flagged from every face, kept in one append-only CSV, run as a regression suite.

    python -m loop cases check              # every case against the pipeline as it is now (exit 1 on a regression)
    python -m loop cases import FILE.csv     # add cases from a CSV (the input's fields, expected_<field>, ...)
    python -m loop cases fix|reopen ID ...   # mark cases fixed or open

A case (`EdgeCase`) is an input, its flags and the answer a person expects (model.Expected). `save_cases` records the
pipeline's answer at the time and appends new cases atomically under a lock; `read_cases` reads the store,
skipping (and naming) every line that is no edge case; `check_cases` runs them all and gives each a verdict.
Every cell is written spreadsheet-safe. The store is data/edge_cases.csv, or TRIAGE_EDGE_CASES.

The store's columns come from the contract: the input's fields by name, `expected_<field>` for each field of
model.Expected, `answer_<field>` for the answer kept (the expected fields and the label's probability).
"""

import csv
import errno
import hashlib
import json
import os
import re
import threading
import time
import typing
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

import model
from building import builder, contract
from building.files import file_lock, spreadsheet_safe, spreadsheet_text
from model import PIPELINE_VERSION, Expected, Flags, Input


class CaseSource(StrEnum):
    ui = "ui"
    api = "api"
    file = "file"
    shadow = "shadow"  # a reviewer's verdict on a disagreement of a candidate in shadow (review.judge_shadow)


class CaseStatus(StrEnum):
    open = "open"  # the pipeline still gets it wrong
    fixed = "fixed"  # the pipeline gets it right: a regression if that ever changes


def _example() -> dict:
    expected = (Expected.model_config.get("json_schema_extra") or {}).get("examples") or [None]
    return {"examples": [{"ticket": contract.input_example(), "expected": expected[0], "note": "why this case matters"}]}


class EdgeCase(BaseModel):
    """An input whose right answer someone knows, kept so every later version of the pipeline is judged on it.

    Clients send the input (`ticket`, the name kept for the API), flags, expected answer, note, source and keep_pii;
    the store fills the rest: the id, when and by whom, and the pipeline's answer at that moment with its version and
    artifacts.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=_example())
    ticket: Input
    flags: Flags = Field(default_factory=Flags, description="The flags the pipeline ran with.")
    expected: Expected
    note: Annotated[str, AfterValidator(lambda note: contract.clean_text(note, masked=False))] = Field(
        "", max_length=1000, description="Why this case matters (one line: control characters and line breaks become spaces)."
    )
    source: CaseSource = Field(CaseSource.api, description="Where the case was flagged.")
    keep_pii: bool = Field(False, description="Save the text as written; by default it goes through the pipeline's clean_text first.")
    train: bool = Field(False, description="A training example: candidates learn from it, so it never counts as fixed.")
    id: str | None = Field(None, description="Set by the store: the same input, flags and expected answer give the same id.")
    status: CaseStatus | None = Field(None, description="Set by the store: open while the pipeline gets it wrong, else fixed.")
    created_at: str | None = Field(None, description="Set by the store (UTC, ISO 8601).")
    created_by: str | None = Field(None, description="Set by the store: the login name, where there is one.")
    answer: dict[str, Any] | None = Field(None, description="Set by the store: the pipeline's answer when the case was saved.")
    pipeline_version: str | None = Field(None, description="Set by the store.")
    artifacts: str | None = Field(None, description="Set by the store: a fingerprint of the artifacts that gave the answer.")


def _answer_fields() -> tuple[str, ...]:
    """The answer's fields a case keeps: the expected answer's, and the label's probability right after the label."""
    fields = list(Expected.model_fields)
    kept = contract.probability()
    if kept and kept not in fields:
        fields.insert(fields.index(contract.label()) + 1 if contract.label() in fields else len(fields), kept)
    return tuple(fields)


ANSWER_FIELDS = _answer_fields()
ANSWER_PREFIX = "answer_"
TEXT_FIELDS = [name for name, field in Input.model_fields.items() if contract.base_type(field.annotation) is str]  # cleaned, masked
OWN_COLUMNS = ("id", "status", "source", "created_at", "created_by", "flags", "note", "pipeline_version", "artifacts", "train")
CASE_COLUMNS = [
    *OWN_COLUMNS[:5],
    *Input.model_fields,  # the input's fields by name
    "flags",
    *(contract.expected_column(name) for name in Expected.model_fields),
    "note",
    *(ANSWER_PREFIX + name for name in ANSWER_FIELDS),
    *OWN_COLUMNS[-3:],
]
if set(Input.model_fields) & set(OWN_COLUMNS):  # one column, two meanings: a store that cannot be read back
    clash = sorted(set(Input.model_fields) & set(OWN_COLUMNS))[0]
    raise contract.ContractError(f"model.py: Input.{clash} has the name of a column the edge-case store keeps itself ({contract.WHERE})")
HEADER_COLUMNS = [  # the columns that tell the store's header from a row
    contract.text_field() or next(iter(Input.model_fields)),
    contract.expected_column(contract.label() or next(iter(Expected.model_fields), "")),
]
VERDICTS = {(True, True): "fixed", (True, False): "broken", (False, True): "newly fixed", (False, False): "open"}  # (was fixed, right now)


def cases_file() -> Path:
    """The edge-case store: data/edge_cases.csv, or TRIAGE_EDGE_CASES (a Space points it at persistent storage)."""
    return Path(os.environ.get("TRIAGE_EDGE_CASES", model.DATA_DIR / "edge_cases.csv"))


class StoreUnavailable(RuntimeError):
    """The edge-case store cannot be used: its path is a folder, or it cannot be read or written (HTTP 503)."""


class StoreFull(StoreUnavailable):
    """No space left for the edge-case store: the write was undone, nothing was saved (HTTP 507)."""


class CaseStore(NamedTuple):
    cases: list[EdgeCase]  # oldest first
    skipped: list[dict[str, Any]]  # each line that is no edge case: {"line": 7, "problem": "..."}


class _View:
    """What this process has parsed of one store file: everything up to `offset`, where its last complete line ends."""

    def __init__(self, key: tuple[int, int]):
        self.key = key  # (st_dev, st_ino): another file at the path (set_case_status puts one there) is read afresh
        self.offset, self.lines, self.last_line = 0, 0, b""  # last_line ends at offset: gone or changed, the file is read afresh
        self.header: list[str] | None = None
        self.cases: list[EdgeCase] = []
        self.skipped: list[dict[str, Any]] = []

    def still_in(self, fd: int) -> bool:
        """Whether the last line read still ends at `offset` in the open file (not so once it was rewritten or cut)."""
        return os.pread(fd, len(self.last_line), self.offset - len(self.last_line)) == self.last_line


_views: dict[Path, _View] = {}  # one a store path, for read_cases
_views_lock = threading.Lock()


def recorded(cases: list[EdgeCase | dict], created_by: str | None = None) -> list[EdgeCase]:
    """Each case as a store keeps it: the input's text fields and the note as `contract.clean_text` leaves them (clean
    unicode; personal data masked unless `keep_pii`), its id, and the pipeline's answer now with its version and
    artifacts. A ValidationError names what cannot be kept (ticket.<field>, note)."""
    cases = [EdgeCase.model_validate(c) for c in cases]
    cases = [
        EdgeCase.model_validate(
            {**c.model_dump(), "ticket": _cleaned(c.ticket, not c.keep_pii), "note": contract.clean_text(c.note, not c.keep_pii)}
        )
        for c in cases
    ]
    tickets = [c.ticket for c in cases]
    builder.ready()
    answers = model.run_batch(tickets, [c.flags for c in cases])
    stamp, fingerprint_now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), artifacts_fingerprint()
    return [
        case.model_copy(
            update={
                "ticket": ticket,
                "id": _case_id(ticket, case.flags, case.expected),
                "status": CaseStatus.fixed if contract.matches(case.expected, answer) else CaseStatus.open,
                "created_at": case.created_at or stamp,  # a flag accepted from the queue keeps the time it was flagged
                "created_by": created_by,
                "answer": answer.model_dump(mode="json", include=set(ANSWER_FIELDS)),
                "pipeline_version": PIPELINE_VERSION,
                "artifacts": fingerprint_now,
            }
        )
        for case, ticket, answer in zip(cases, tickets, answers, strict=True)
    ]


def _cleaned(one: BaseModel, masked: bool) -> dict[str, Any]:
    """An input's fields, each text field through `contract.clean_text` (personal data masked when `masked`)."""
    values = one.model_dump()
    return values | {name: contract.clean_text(values[name], masked) for name in TEXT_FIELDS if isinstance(values[name], str)}


def save_cases(cases: list[EdgeCase | dict], created_by: str | None = None, path: Path | None = None) -> list[tuple[EdgeCase, bool]]:
    """Append cases to the suite (`recorded`: masked, with the pipeline's answer now), atomically under a lock.

    An exact duplicate (same input, flags and expected answer, so the same id) is not repeated. Returns each case as
    saved and whether it was new. On a full disk nothing is written (StoreFull); a store that cannot be used at all
    raises StoreUnavailable. Flags from the faces go to the review queue (review.py); this is what accepting one does.
    """
    return append_recorded(recorded(cases, created_by), path)


def append_recorded(cases: list[EdgeCase], path: Path | None = None) -> list[tuple[EdgeCase, bool]]:
    """Append cases as `recorded` gave them to the suite, as `save_cases` does, without running the pipeline again
    (review.accept runs it before it takes its locks)."""
    path = path or cases_file()
    try:
        with file_lock(path):
            _widen(path)
            saved = {c.id: c for c in read_cases(path).cases}
            out = []
            for case in cases:
                out.append((saved[case.id], False) if case.id in saved else (case, True))
                saved.setdefault(case.id, case)
            _append_cases(path, [case for case, new in out if new])
    except OSError as error:  # the lock file could not be made
        raise _store_error(error) from None
    return out


def read_cases(path: Path | None = None) -> CaseStore:
    """Every case in the store, oldest first, and each line skipped as no edge case (torn, not UTF-8, a missing
    column, a value its field does not take, ...) with its number and what is wrong. No file: no cases.

    The parsed cases stay in this process: a later call reads only the bytes appended since, and the whole file
    again only when another file took its place or its last line read is no longer there (set_case_status rewrote
    it, or it was cut). A last line without its line end is read each time and kept once it is complete. A folder
    or an unreadable file raises StoreUnavailable.
    """
    path = Path(path or cases_file())
    with _views_lock:
        try:
            with open(path, "rb") as f:
                stat, view = os.fstat(f.fileno()), _views.get(path)
                if view is None or view.key != (stat.st_dev, stat.st_ino) or not view.still_in(f.fileno()):
                    view = _views[path] = _View((stat.st_dev, stat.st_ino))
                f.seek(view.offset)
                data = f.read()
        except FileNotFoundError:
            _views.pop(path, None)
            return CaseStore([], [])
        except OSError as error:  # a folder, no permission, an I/O error
            raise _store_error(error) from None
        end = data.rfind(b"\n") + 1
        if end:
            lines = data[:end].split(b"\n")[:-1]
            view.header, cases, skipped = _parse_lines(lines, view.lines + 1, view.header)
            view.cases += cases
            view.skipped += skipped
            view.offset, view.lines, view.last_line = view.offset + end, view.lines + len(lines), lines[-1] + b"\n"
        cases, skipped = list(view.cases), list(view.skipped)
        if data[end:]:  # a last line without its line end (a hand edit, or a write in progress): not kept yet
            _, more, problems = _parse_lines([data[end:]], view.lines + 1, view.header)
            cases, skipped = cases + more, skipped + problems
    return CaseStore(cases, skipped)


def load_cases(path: Path | None = None) -> list[EdgeCase]:
    """Every case in the store, oldest first (none when the file does not exist); bad lines are skipped (read_cases)."""
    return read_cases(path).cases


def set_case_status(ids: list[str], status: CaseStatus, path: Path | None = None) -> int:
    """Mark cases open or fixed (say, once a fix makes them pass). Returns how many changed (`mark_cases`)."""
    return mark_cases(ids, path, status=CaseStatus(status))


def mark_cases(ids: list[str], path: Path | None = None, **update) -> int:
    """Set fields of suite cases (`status`, `train`). The store is rewritten atomically (a new file takes its place),
    every other line kept as it was, bad ones included. Returns how many changed."""
    path = path or cases_file()
    with file_lock(path):
        try:
            lines = path.read_bytes().split(b"\n")
        except FileNotFoundError:
            return 0
        except OSError as error:
            raise _store_error(error) from None
        header, _ = _header(lines[0])
        if "train" in update and "train" not in header:
            raise StoreUnavailable(f"{path} has no `train` column: add it to the header (and a cell to each row)")
        changed = 0
        for number, raw in enumerate(lines[1:], start=1):
            try:
                case = _parse_line(raw, header)
            except ValueError:
                continue  # a bad line stays as it is, for a person to mend
            if case is not None and case.id in ids and any(getattr(case, k) != v for k, v in update.items()):
                lines[number] = _csv_line(_case_row(case.model_copy(update=update), header)).removesuffix(b"\n")
                changed += 1
        if changed:
            _replace(path, b"\n".join(lines))
    return changed


def check_cases(cases: list[EdgeCase] | None = None) -> list[dict[str, Any]]:
    """Every case against the pipeline as it is now, in one `run_batch` call. Each gets a verdict:
    `fixed` (right, as before), `open` (still wrong), `broken` (a fixed case now wrong: a regression),
    `newly fixed` (an open case now right: mark it fixed), or `training` for a training example: candidates learn
    from it, so getting it right proves nothing and it is never counted as fixed or broken."""
    cases = load_cases() if cases is None else cases
    builder.ready()
    answers = model.run_batch([c.ticket for c in cases], [c.flags for c in cases])
    results = []
    for case, answer in zip(cases, answers, strict=True):
        verdict = "training" if case.train else VERDICTS[(case.status == CaseStatus.fixed, contract.matches(case.expected, answer))]
        now = answer.model_dump(mode="json", include=set(ANSWER_FIELDS))
        results.append({"id": case.id, "verdict": verdict, "case": case, "answer_now": now})
    return results


def verdict_counts(results: list[dict[str, Any]]) -> dict[str, int]:
    """How many results have each verdict, in the order a reader wants them."""
    return {v: sum(r["verdict"] == v for r in results) for v in ("fixed", "open", "broken", "newly fixed", "training")}


def input_text(one: BaseModel) -> str:
    """What a table or a line shows of an input: its text field (`contract.text_field()`), else the input as JSON."""
    field = contract.text_field()
    return str(getattr(one, field)) if field else one.model_dump_json()


def in_words(values: dict[str, Any]) -> str:
    """An answer's fields in a few words: the label's value alone, then `field=value` for each other one given."""
    label = contract.label()
    words = [str(values[label])] if values.get(label) is not None else []
    return " ".join(words + [f"{k}={v}" for k, v in values.items() if k != label and v is not None])


def artifacts_fingerprint() -> str:
    """A short fingerprint of what gives the answers: the code, data, model and every artifact file."""
    saved = builder.ready().manifest
    parts = {k: saved.get(k) for k in ("pipeline_version", "code", "data", "model", "artifacts")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _case_id(ticket: BaseModel, flags: Flags, expected: Expected) -> str:
    key = json.dumps([ticket.model_dump(mode="json"), flags.model_dump(mode="json"), expected.model_dump(mode="json")], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _case_row(case: EdgeCase, columns: list[str] = CASE_COLUMNS) -> list[str]:
    """A case's cells in the order of `columns`, each spreadsheet-safe and on one line."""
    flags = case.flags.model_dump(mode="json", exclude_defaults=True)
    values = {
        **case.model_dump(
            mode="json", include={"id", "status", "source", "created_at", "created_by", "note", "pipeline_version", "artifacts"}
        ),
        "train": "true" if case.train else "",
        **case.ticket.model_dump(mode="json"),
        "flags": json.dumps(flags) if flags else "",
        **{contract.expected_column(k): v for k, v in case.expected.model_dump(mode="json").items()},
        **{ANSWER_PREFIX + k: v for k, v in (case.answer or {}).items()},
    }
    cells = ["" if values.get(c) is None else re.sub(r"[\r\n]", " ", _cell(values[c])) for c in columns]  # one row, one line
    return [spreadsheet_safe(cell) for cell in cells]


def _cell(value: Any) -> str:
    """A JSON value as a cell: lists and objects as JSON, everything else as text (True, 0.4887, billing)."""
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def _structured(annotation) -> bool:
    """Whether a field's cell holds JSON: a list, dict, tuple or set, or a model."""
    base = contract.base_type(annotation)
    return typing.get_origin(base) in (list, dict, tuple, set) or base in (list, dict, tuple, set) or contract.model_of(base) is not None


def cell_value(annotation, cell: str) -> Any:
    """What pydantic validates for a field of type `annotation` from a cell: the JSON it holds for a structured field,
    else the text (pydantic reads numbers, bools and enums from text)."""
    return json.loads(cell) if _structured(annotation) else cell


def expected_from(cells: dict[str, str]) -> dict[str, Any]:
    """An expected answer from text by field name (empty cells left out, so a field takes its default): for
    `Expected.model_validate`, whose ValidationError names the field."""
    fields = Expected.model_fields
    return {name: cell_value(fields[name].annotation, cell) if name in fields else cell for name, cell in cells.items() if cell}


def _answer_from(row: dict[str, str]) -> dict[str, Any] | None:
    """The answer kept in a row's answer_<field> cells, each read as the Output field's type (as JSON); None when no
    answer was kept. ValueError naming the cell that is not its field's type."""
    cells = {name: row.get(ANSWER_PREFIX + name) or None for name in ANSWER_FIELDS}
    if all(cell is None for cell in cells.values()):
        return None
    answer = {}
    for name, cell in cells.items():
        annotation = model.Output.model_fields[name].annotation
        try:
            adapter = TypeAdapter(annotation)
            answer[name] = None if cell is None else adapter.dump_python(adapter.validate_python(cell_value(annotation, cell)), mode="json")
        except (ValidationError, ValueError) as error:
            message = contract.error_message(error) if isinstance(error, ValidationError) else str(error)
            raise ValueError(f"{ANSWER_PREFIX}{name}: {message.removeprefix(': ')}") from None
    return answer


def _case_from_row(row: dict[str, str]) -> EdgeCase:
    row = {k: spreadsheet_text(v) for k, v in row.items()}  # what spreadsheet_safe quoted, as it was

    def value(column: str) -> str | None:
        return row.get(column) or None

    expected = {name: row.get(contract.expected_column(name)) for name in Expected.model_fields}
    return EdgeCase.model_validate(
        {
            "ticket": contract.input_from_row(row),
            "flags": Flags.model_validate(json.loads(value("flags") or "{}")),
            "expected": expected_from(expected),
            "note": row.get("note") or "",
            "source": value("source") or CaseSource.file,
            "id": value("id"),
            "status": value("status") or CaseStatus.open,
            "created_at": value("created_at"),
            "created_by": value("created_by"),
            "answer": _answer_from(row),
            "pipeline_version": value("pipeline_version"),
            "artifacts": value("artifacts"),
            "train": (value("train") or "").strip().lower() in ("true", "1", "yes"),
        }
    )


def _csv_line(cells: list[str]) -> bytes:
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue().encode("utf-8")


def _fields(raw: bytes) -> list[str]:
    """The cells of one line of the store (no cells for a blank line); ValueError when it is not CSV text."""

    try:
        line = raw.removesuffix(b"\r").decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text (byte {error.start + 1})") from None
    try:
        return next(csv.reader([line]), [])
    except csv.Error as error:
        raise ValueError(f"not a CSV line ({error})") from None


def _header(raw: bytes) -> tuple[list[str], str | None]:
    """The store's columns from its first line; when that is no header, the store's own columns and why."""
    try:
        columns = _fields(raw)
    except ValueError as error:
        return CASE_COLUMNS, f"{error}; the rows are read in the store's own column order"
    if not set(HEADER_COLUMNS) <= set(columns):
        what = " and ".join(HEADER_COLUMNS)
        return CASE_COLUMNS, f"not a header (no {what} columns); the rows are read in the store's own column order"
    return columns, None


def _parse_line(raw: bytes, header: list[str]) -> EdgeCase | None:
    """One line of the store as a case (None for a blank line); ValueError saying what is wrong with it."""
    cells = _fields(raw)
    if not cells:
        return None
    if len(cells) != len(header):
        raise ValueError(f"{len(cells)} cells where the header has {len(header)} (a torn or hand-edited line)")
    try:
        return _case_from_row(dict(zip(header, cells, strict=True)))
    except ValidationError as error:
        raise ValueError(contract.error_message(error)) from None
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{type(error).__name__}: {error}") from None


def _parse_lines(lines: list[bytes], first: int, header: list[str] | None) -> tuple[list[str], list[EdgeCase], list[dict[str, Any]]]:
    """Lines of the store, numbered from `first` (line 1 is the header): the header, the cases, the lines skipped."""
    cases, skipped = [], []
    for number, raw in enumerate(lines, start=first):
        if number == 1:
            header, problem = _header(raw)
        else:
            try:
                case, problem = _parse_line(raw, header), None
            except ValueError as error:
                case, problem = None, str(error)
            if case is not None:
                cases.append(case)
        if problem:
            skipped.append({"line": number, "problem": problem})
    return header, cases, skipped


def _store_error(error: OSError) -> StoreUnavailable:
    """What a client is told when the store met an OSError (no path in it: it may go out over HTTP)."""
    reason = (error.strerror or str(error)).lower()
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFull(f"the edge-case store is full: {reason}; nothing was saved")
    return StoreUnavailable(f"the edge-case store cannot be used: {reason}")


def _widen(path: Path) -> None:
    """Give an older store a column for each field the input has gained since (model.Input), so that a new case keeps
    it: the file is rewritten atomically, each whole row with an empty cell there (its default), every other line kept."""
    try:
        with open(path, "rb") as f:
            header, problem = _header(f.readline().rstrip(b"\n"))  # the header alone: a store is read whole only to widen it
            missing = [name for name in Input.model_fields if name not in header]
            if problem or not missing:
                return
            f.seek(0)
            lines = f.read().split(b"\n")
    except FileNotFoundError:
        return
    except OSError as error:
        raise _store_error(error) from None
    lines[0] = _csv_line([*header, *missing]).removesuffix(b"\n")
    for number, raw in enumerate(lines[1:], start=1):
        try:
            whole = len(_fields(raw)) == len(header)
        except ValueError:
            whole = False
        if whole:
            lines[number] = raw.removesuffix(b"\r") + b"," * len(missing)
    _replace(path, b"\n".join(lines))


def _replace(path: Path, data: bytes) -> None:
    """`path` holds `data` from now on, all at once: written under a temporary name, flushed, renamed over it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise _store_error(error) from None


def _append_cases(path: Path, cases: list[EdgeCase]) -> None:
    """One write with O_APPEND (the header first for a new file), flushed to disk: all of it or nothing. When the write
    fails (a full disk) the file is cut back to its size before, so no torn row stays; a last line left without its
    line end by anything else is ended first, so that the new rows stay whole."""
    if not cases:
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as error:
        raise _store_error(error) from None
    try:
        size = os.fstat(fd).st_size
        header = _header(os.pread(fd, 4096, 0).split(b"\n")[0])[0] if size else CASE_COLUMNS  # an older file keeps its columns
        if any(c.train for c in cases) and "train" not in header:
            raise StoreUnavailable(f"{path} has no `train` column for a training example: add it to the header (and a cell to each row)")
        data = b"".join(_csv_line(_case_row(c, header)) for c in cases)
        if size == 0:
            data = _csv_line(CASE_COLUMNS) + data
        elif os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        try:
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        except OSError as error:
            os.ftruncate(fd, size)
            raise _store_error(error) from None
    finally:
        os.close(fd)


def import_cases(path: Path, created_by: str | None = None) -> list[tuple[EdgeCase, bool]]:
    """The cases of a CSV (`cases_in_csv`) saved straight into the suite, as a reviewer does."""
    return save_cases(cases_in_csv(path), created_by)


def cases_in_csv(path: Path) -> list[EdgeCase]:
    """Edge cases from a CSV with the store's columns (`CASE_COLUMNS`): the input's fields by name (a required one at
    least), an `expected_<field>` column for each required field of the expected answer, and optionally the others,
    flags as JSON and a note; marked as from a file."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    cases = []
    for number, row in enumerate(rows, start=2):
        try:
            case = _case_from_row(row)
        except (ValidationError, ValueError, TypeError, KeyError) as error:
            said = contract.error_message(error) if isinstance(error, ValidationError) else error  # one line, naming the field
            raise ValueError(f"{path}, line {number}: not an edge case ({said})") from None
        cases.append(case.model_copy(update={"source": CaseSource.file, "keep_pii": False}))
    return cases
