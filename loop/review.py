"""The review queue: a flagged case waits in a database until a reviewer accepts or rejects it.

    flag (app, API, batch, import) --> pending --accept (a reviewer)--> the regression suite, data/edge_cases.csv in git
                                               --reject (a reviewer)--> rejected (kept: the same flag is not asked again)

A pending case is not a regression test: only `accept` exports it to the suite file (edge_cases.py), with the
expected answer as the reviewer sets it, so the tracked file changes only by a reviewer's hand. The database is SQLite
by default (var/review.sqlite3, which git ignores; TRIAGE_DATABASE_URL moves it) or PostgreSQL when
TRIAGE_DATABASE_URL names one (`postgresql+psycopg://user:password@host/db`): several replicas share it.
SQLAlchemy Core, one code path for both; the schema is made on first use and carries a version, upgraded in place.

Abuse is bounded for flags from clients without a key (`trusted=False`): at most TRIAGE_FLAG_RATE flags per client
per minute (TooManyFlags, HTTP 429) and at most TRIAGE_MAX_PENDING pending cases (QueueFull, 507), both checked before
the pipeline runs (a refused flag costs none). A flag of a case already there (same input, flags and expected answer)
merges into it and counts once more. Text and note are masked (personal data, by the pipeline's clean_text) unless a
trusted client asks to keep them. Every write is one transaction, taken one at a time (SQLite: BEGIN IMMEDIATE;
PostgreSQL: a transaction-level advisory lock): all of it or nothing, acknowledged once on disk (SQLite:
synchronous=FULL).

A case is decided once: accept and reject check, inside their write transaction, that every id is still pending, and
change nothing when one is not (NotPending, HTTP 409, naming who decided it and how). An accept appends to the suite
inside that transaction, just before it commits; a crash in between leaves the case in the suite and pending in the
queue, and the next decision on it finds it there (same input, flags and time of the flag) and completes that first
decision instead: queue and suite agree, nothing is added twice.

Waiting is bounded: no database call waits longer than TRIAGE_DATABASE_WAIT seconds for a lock (then 503), and a
server's routes run the queue's calls on threads of their own (`call`: CALLS_AT_ONCE of them; a call that cannot start
within TRIAGE_DATABASE_WAIT is refused, QueueBusy): a stuck database never holds the threads that serve /health,
/predict and the UI. A SQLite file removed or replaced under a running process is noticed before each write and
refused (never written to a deleted file).

Shadow candidates (app/shadow.py) keep their pairs here too (table triage_shadow: the newest TRIAGE_SHADOW_KEEP); a
reviewer's verdict on a disagreement (`judge_shadow`: which side is right) puts a case in this queue and is kept whole
in triage_shadow_judged, the gate's "live traffic" evidence (`live_evidence`).
"""

import asyncio
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from building import contract
from loop import edge_cases
from loop.edge_cases import EdgeCase
from model import ROOT, Expected

SCHEMA_VERSION = 2
UPGRADES = {1: ["ALTER TABLE triage_flags ADD COLUMN suite_id VARCHAR(12)"]}  # from each version to the next
STATES = ("pending", "accepted", "rejected")
RATE_WINDOW_S = 60
CALLS_AT_ONCE = 8  # a server process's threads for the queue's calls (`call`)

metadata = sa.MetaData()
meta = sa.Table("triage_meta", metadata, sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.String(200)))
flags = sa.Table(
    "triage_flags",
    metadata,
    sa.Column("id", sa.String(12), primary_key=True),  # the case id: the same input, flags and expected answer
    sa.Column("state", sa.String(10), nullable=False, index=True),
    sa.Column("case_json", sa.Text, nullable=False),  # the EdgeCase as recorded when first flagged
    sa.Column("client", sa.String(200)),  # who sent it (an address), for the rate limit
    sa.Column("flagged_at", sa.Float, nullable=False, index=True),  # epoch seconds of the first flag
    sa.Column("times_flagged", sa.Integer, nullable=False, server_default="1"),
    sa.Column("reviewed_by", sa.String(200)),
    sa.Column("reviewed_at", sa.String(32)),
    sa.Column("suite_id", sa.String(12)),  # accepted: the case's id in the suite (another when the reviewer changed the answer)
)
shadow = sa.Table(  # a shadowed request: what the served version answered and what the candidate in shadow answers
    "triage_shadow",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("candidate", sa.String(40), nullable=False, index=True),  # the version in shadow
    sa.Column("served", sa.String(40), nullable=False),  # the served version ("artifacts": built from data/)
    sa.Column("at", sa.Float, nullable=False),  # epoch seconds of the request
    sa.Column("input_json", sa.Text, nullable=False),  # the input and its flags, personal data masked
    sa.Column("served_json", sa.Text, nullable=False),
    sa.Column("candidate_json", sa.Text, nullable=False),  # the candidate's answer, or {"error": ...} when it failed
    sa.Column("differs", sa.Text, nullable=False),  # the output fields whose values differ, comma-separated ("" when none)
)
judged = sa.Table(  # a reviewer's verdict on a shadowed disagreement: which side is right; kept whole (retention drops pairs)
    "triage_shadow_judged",
    metadata,
    sa.Column("shadow_id", sa.Integer, primary_key=True),  # the pair's id in triage_shadow: judged once
    sa.Column("candidate", sa.String(40), nullable=False, index=True),
    sa.Column("served", sa.String(40), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("input_json", sa.Text, nullable=False),
    sa.Column("served_json", sa.Text, nullable=False),
    sa.Column("candidate_json", sa.Text, nullable=False),
    sa.Column("differs", sa.Text, nullable=False),
    sa.Column("right", sa.String(10), nullable=False),  # served, candidate or neither
    sa.Column("expected_json", sa.Text, nullable=False),  # the right answer (model.Expected)
    sa.Column("case_id", sa.String(12), nullable=False),  # the case it put in the queue
    sa.Column("reviewed_by", sa.String(200)),
    sa.Column("reviewed_at", sa.String(32), nullable=False),
)
SIDES = ("served", "candidate", "neither")


class QueueUnavailable(RuntimeError):
    """The review database cannot be reached or used (HTTP 503); nothing was written."""


class QueueBusy(QueueUnavailable):
    """A server's call waited TRIAGE_DATABASE_WAIT for one of the queue's threads, all waiting on the database (HTTP 503):
    refused, nothing written."""


class QueueFull(QueueUnavailable):
    """The pending queue is at its cap (HTTP 507); a reviewer must accept or reject cases first."""


class TooManyFlags(QueueUnavailable):
    """This client flagged too many cases in the last minute (HTTP 429)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class NotPending(QueueUnavailable):
    """A case to decide is decided already, or not in the queue (HTTP 409; the CLI exits 1): nothing was changed."""


class Flagged(NamedTuple):
    case: EdgeCase
    state: str
    times_flagged: int
    client: str | None
    reviewed_by: str | None
    reviewed_at: str | None = None
    suite_id: str | None = None  # accepted: its id in the suite


def database_url() -> str:
    return os.environ.get("TRIAGE_DATABASE_URL") or f"sqlite:///{ROOT / 'var' / 'review.sqlite3'}"


def where() -> str:
    """The database, for messages on this machine: its URL without a password."""
    return sa.make_url(database_url()).render_as_string(hide_password=True)


def name() -> str:
    """The database, for clients: a SQLite file by its name alone (no server path), else the kind and the database."""
    url = sa.make_url(database_url())
    return Path(url.database or "memory").name if url.get_backend_name() == "sqlite" else f"{url.get_backend_name()} {url.database}"


def limits() -> tuple[int, int]:
    """(flags per client per minute, pending cases at most) for clients without a key."""
    return int(os.environ.get("TRIAGE_FLAG_RATE", "20")), int(os.environ.get("TRIAGE_MAX_PENDING", "1000"))


def wait() -> float:
    """TRIAGE_DATABASE_WAIT: the seconds a database call may wait for a lock (another writer) before a 503."""
    return float(os.environ.get("TRIAGE_DATABASE_WAIT", "5"))


_engines: dict[tuple[str, int], sa.Engine] = {}
_files: dict[sa.Engine, tuple[Path, tuple[int, int]]] = {}  # a SQLite engine's file and its (st_dev, st_ino) when opened


def engine() -> sa.Engine:
    """This process's engine for `database_url()`, the schema made or upgraded on first use (a forked process makes its
    own)."""
    url = database_url()
    key = (url, os.getpid())
    if key not in _engines:
        made_url = sa.make_url(url)
        if made_url.get_backend_name() == "sqlite":
            path = Path(made_url.database) if made_url.database not in (None, "", ":memory:") else None
            if path:
                path.parent.mkdir(parents=True, exist_ok=True)
            made = sa.create_engine(url, connect_args={"timeout": wait()})
            sa.event.listen(made, "connect", _sqlite_connected)
            sa.event.listen(made, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
        else:
            path, ms = None, int(wait() * 1000)
            options = f"-c lock_timeout={ms} -c statement_timeout={ms}"  # waiting on another writer (the advisory lock) too
            made = sa.create_engine(
                url,
                pool_pre_ping=True,
                pool_size=2,
                max_overflow=2,
                pool_timeout=wait(),
                connect_args={"connect_timeout": 5, "options": options},
            )
        with _writing(made) as connection:
            metadata.create_all(connection)
            version = connection.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
            if version is None:
                connection.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
            elif int(version) > SCHEMA_VERSION:
                raise QueueUnavailable(f"the review database has schema version {version}; this code knows {SCHEMA_VERSION}: upgrade it")
            elif int(version) < SCHEMA_VERSION:
                _upgrade(connection, int(version))
        if path:
            _files[made] = (path, _identity(path))
        _engines[key] = made
    return _engines[key]


def _upgrade(connection: sa.Connection, version: int) -> None:
    """An older schema brought to SCHEMA_VERSION in place, in the transaction that found it (one process does it)."""
    for step in range(version, SCHEMA_VERSION):
        for statement in UPGRADES[step]:
            connection.exec_driver_sql(statement)
    connection.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def _same_file(bound: sa.Engine) -> None:
    """Refuse a SQLite file removed or replaced since this process opened it: its connections still hold the old one,
    and what they wrote would be gone at the next start."""
    if bound in _files:
        path, opened = _files[bound]
        if _identity(path) != opened:
            raise QueueUnavailable(
                f"the review database {name()} was removed or replaced while in use: nothing was saved; restart to use the file there now"
            )


def _sqlite_connected(connection, _record) -> None:
    """SQLAlchemy's recipe for real SQLite transactions (the driver leaves them alone, "begin" says BEGIN IMMEDIATE); a
    commit returns once it is on disk (synchronous=FULL: WAL's default NORMAL may lose the last ones at a power cut)."""
    connection.isolation_level = None
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")


_pools: dict[int, ThreadPoolExecutor] = {}  # this process's threads for the queue's calls (a forked process makes its own)


async def call(function, *args, **kwargs):
    """`function(*args, **kwargs)` (flag, accept, cases, ...) on the queue's own CALLS_AT_ONCE threads, for a server's
    async routes: the threads that answer /health, /live, /predict and the app never wait on the database, and a burst
    of flags waits its turn without holding any. A call not started within TRIAGE_DATABASE_WAIT (those before it wait
    on a locked database) is refused (QueueBusy), so that each ends within twice that, the pipeline's run aside."""
    pool = _pools.get(os.getpid()) or _pools.setdefault(os.getpid(), ThreadPoolExecutor(CALLS_AT_ONCE, thread_name_prefix="queue-calls"))
    future = pool.submit(function, *args, **kwargs)
    answer = asyncio.wrap_future(future)
    done, _ = await asyncio.wait({answer}, timeout=wait())
    if not done and future.cancel():
        raise QueueBusy(f"the review database {name()} is slow or locked ({CALLS_AT_ONCE} calls wait on it): nothing was saved; retry")
    return await answer


class _writing:
    """One write transaction at a time, across processes and replicas; a database error becomes QueueUnavailable. The
    SQLite file is checked when the transaction begins and again before it commits."""

    def __init__(self, bound: sa.Engine | None = None):
        self.bound = bound

    def __enter__(self) -> sa.Connection:
        try:
            self.engine = self.bound or engine()
            self.context = self.engine.begin()
            connection = self.context.__enter__()
        except sa.exc.SQLAlchemyError as error:
            raise _unavailable(error) from None
        try:
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7355608)")
            _same_file(self.engine)
        except BaseException as error:
            self._close(type(error), error, None)
            raise
        return connection

    def __exit__(self, kind, error, traceback):
        if error is None:
            try:
                _same_file(self.engine)
            except QueueUnavailable as gone:
                self._close(type(gone), gone, None)
                raise
        self._close(kind, error, traceback)

    def _close(self, kind, error, traceback) -> None:
        """End the transaction or connection (rolled back on `error`); a database error becomes QueueUnavailable."""
        try:
            self.context.__exit__(kind, error, traceback)
        except sa.exc.SQLAlchemyError as failed:
            raise _unavailable(failed) from None
        if isinstance(error, sa.exc.SQLAlchemyError):
            raise _unavailable(error) from None


class _reading(_writing):
    def __enter__(self) -> sa.Connection:
        try:
            self.engine = engine()
            self.context = self.engine.connect()
            connection = self.context.__enter__()
        except sa.exc.SQLAlchemyError as error:
            raise _unavailable(error) from None
        try:
            _same_file(self.engine)
        except QueueUnavailable:
            self.context.__exit__(None, None, None)
            raise
        return connection

    __exit__ = _writing._close  # a read commits nothing: no second look at the file


def _unavailable(error: Exception) -> QueueUnavailable:
    found = getattr(error, "orig", None) or error
    reason = str(found).strip().splitlines()[0][:300]
    if "database is locked" in reason or getattr(found, "sqlstate", None) in ("55P03", "57014"):  # SQLite's busy; lock, statement timeout
        reason = f"locked by another writer for longer than TRIAGE_DATABASE_WAIT, {wait():g} s"
    return QueueUnavailable(f"the review database cannot be used now ({reason}); nothing was saved")


def _upsert(connection: sa.Connection):
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(flags)
    return statement.on_conflict_do_update(index_elements=["id"], set_={"times_flagged": flags.c.times_flagged + 1})


def flag(cases: list[EdgeCase | dict], created_by: str | None = None, client: str | None = None, trusted: bool = False):
    """Put cases in the queue as pending; returns each as kept and whether it was new (a known one is merged, as kept).

    Untrusted clients (no key) cannot keep PII and are held to the rate limit and the queue's cap, checked before the
    pipeline runs and again in the write; a case a reviewer already rejected stays rejected. The pipeline runs only for
    cases not there yet. One transaction: every case is kept, or none."""
    cases = [EdgeCase.model_validate(c) for c in cases]
    cases = [c.model_copy(update={"created_at": None, **({} if trusted else {"keep_pii": False})}) for c in cases]  # the store's to set
    ids = _ids(cases)
    with _reading() as connection:
        known = _rows(connection, ids)
        _within_limits(connection, {i for i in ids if i not in known}, client, trusted)
    fresh = {i: c for i, c in zip(ids, cases, strict=True) if i not in known}
    recorded = dict(zip(fresh, edge_cases.recorded(list(fresh.values()), created_by), strict=True)) if fresh else {}
    kept = [recorded[i] if i in recorded else known[i].case for i in ids]
    with _writing() as connection:
        there = _put(connection, kept, client, trusted)
    return [(case, case.id not in there) for case in kept]


def _put(connection: sa.Connection, kept: list[EdgeCase], client: str | None, trusted: bool) -> set[str]:
    """`kept` (recorded cases) into the queue as pending, within the limits, a known one merged; returns the ids there
    before."""
    there = set(_rows(connection, [c.id for c in kept]))
    _within_limits(connection, {c.id for c in kept if c.id not in there}, client, trusted)
    now = time.time()
    for case in kept:
        row = {"id": case.id, "state": "pending", "case_json": case.model_dump_json(), "client": client, "flagged_at": now}
        connection.execute(_upsert(connection).values(**row))
    return there


def _ids(cases: list[EdgeCase]) -> list[str]:
    """The ids `edge_cases.recorded` gives `cases` (their text cleaned as it cleans it), without running the pipeline."""
    cleaned = [c.model_copy(update={"ticket": c.ticket.model_validate(edge_cases._cleaned(c.ticket, not c.keep_pii))}) for c in cases]
    return [edge_cases._case_id(c.ticket, c.flags, c.expected) for c in cleaned]


def _within_limits(connection: sa.Connection, new: set[str], client: str | None, trusted: bool) -> None:
    """Raise TooManyFlags or QueueFull when `new` cases from an untrusted client overstep its rate or the queue's cap."""
    if trusted or not new:
        return
    rate, cap = limits()
    recent = connection.execute(
        sa.select(sa.func.count()).select_from(flags).where(flags.c.client == client, flags.c.flagged_at > time.time() - RATE_WINDOW_S)
    ).scalar()
    if recent + len(new) > rate:
        message = (
            f"{client or 'this client'} flagged {recent} case{'' if recent == 1 else 's'} in the last {RATE_WINDOW_S} s and "
            f"asks for {len(new)} more; at most {rate} a minute"
        )
        raise TooManyFlags(message, retry_after=RATE_WINDOW_S)
    pending = connection.execute(sa.select(sa.func.count()).select_from(flags).where(flags.c.state == "pending")).scalar()
    if pending + len(new) > cap:
        raise QueueFull(f"{pending} cases wait for review (at most {cap}): a reviewer must accept or reject some first")


def _rows(connection: sa.Connection, ids: list[str]) -> dict[str, Flagged]:
    """Those of `ids` that are in the queue, whatever their state, by id, oldest first."""
    chosen = sa.select(flags).where(flags.c.id.in_(ids)).order_by(flags.c.flagged_at, flags.c.id)
    return {r.id: _flagged(r) for r in connection.execute(chosen)}


def counts() -> dict[str, int]:
    """How many cases are in each state."""
    with _reading() as connection:
        found = dict(connection.execute(sa.select(flags.c.state, sa.func.count()).group_by(flags.c.state)).all())
    return {state: found.get(state, 0) for state in STATES}


def cases(state: str | None = None, offset: int = 0, limit: int = 50) -> tuple[list[Flagged], int]:
    """One page of the queue, oldest first, and how many there are in all (in `state`, if given)."""
    where = [flags.c.state == state] if state else []
    with _reading() as connection:
        total = connection.execute(sa.select(sa.func.count()).select_from(flags).where(*where)).scalar()
        rows = connection.execute(sa.select(flags).where(*where).order_by(flags.c.flagged_at, flags.c.id).offset(offset).limit(limit))
        page = [_flagged(r) for r in rows]
    return page, total


def accept(ids: list[str], reviewer: str | None, expected: Expected | dict | None = None, train: bool = False) -> list[EdgeCase]:
    """Accept pending cases into the regression suite (data/edge_cases.csv), each with `expected` when given (the
    reviewer's answer) or the flagged one, as training examples with `train` (candidates learn from them; they never
    count as fixed); returns them as the suite keeps them (`suite_id` links each queued case to its suite case).

    All or nothing: when an id is not pending, before or after the pipeline ran (another reviewer was faster), nothing
    changes (NotPending names who decided it). The pipeline runs outside any lock; then one write transaction checks
    again, appends to the suite (under its file lock, an id there already not repeated) and marks the cases."""
    ids = list(dict.fromkeys(ids))
    with _reading() as connection:
        waiting = _undecided(connection, ids)
    chosen = [f.case.model_copy(update={"train": train}) for f in waiting]
    if expected:
        chosen = [c.model_copy(update={"expected": Expected.model_validate(expected)}) for c in chosen]
    recorded = edge_cases.recorded(chosen, reviewer)  # the suite's ids: another for a changed answer
    with _writing() as connection:
        _undecided(connection, ids)
        finished = _finish_interrupted(connection, waiting, [c.id for c in recorded])
        if not finished:
            saved = [case for case, _ in edge_cases.append_recorded(recorded)]
            stamp = _now()
            for flagged, case in zip(waiting, saved, strict=True):
                decided = {"state": "accepted", "reviewed_by": reviewer, "reviewed_at": stamp, "suite_id": case.id}
                connection.execute(flags.update().where(flags.c.id == flagged.case.id).values(**decided))
    if finished:
        raise NotPending(finished)
    return saved


def reject(ids: list[str], reviewer: str | None) -> int:
    """Reject pending cases; returns how many. All or nothing, as `accept`."""
    ids = list(dict.fromkeys(ids))
    with _writing() as connection:
        finished = _finish_interrupted(connection, _undecided(connection, ids), [None] * len(ids))
        if not finished:
            decided = {"state": "rejected", "reviewed_by": reviewer, "reviewed_at": _now()}
            connection.execute(flags.update().where(flags.c.id.in_(ids)).values(**decided))
    if finished:
        raise NotPending(finished)
    return len(ids)


def pending(ids: list[str]) -> list[Flagged]:
    """Those of `ids` that are pending cases, oldest first."""
    with _reading() as connection:
        chosen = sa.select(flags).where(flags.c.id.in_(ids), flags.c.state == "pending")
        rows = connection.execute(chosen.order_by(flags.c.flagged_at, flags.c.id))
        return [_flagged(r) for r in rows]


def _undecided(connection: sa.Connection, ids: list[str]) -> list[Flagged]:
    """The cases of `ids`, oldest first (the suite gets them in the queue's order), when every one is pending; else
    NotPending naming each that is not."""
    found = _rows(connection, ids)
    problems = [
        f"{i} is not in the queue"
        if i not in found
        else f"{i} was {found[i].state} by {found[i].reviewed_by or 'someone'} at {found[i].reviewed_at}"
        for i in ids
        if i not in found or found[i].state != "pending"
    ]
    if problems:
        raise NotPending(f"{'; '.join(problems)}: nothing changed")
    return list(found.values())


def _finish_interrupted(connection: sa.Connection, waiting: list[Flagged], suite_ids: list[str | None]) -> str | None:
    """An accept that appended to the suite and died before its commit left the case in the suite (the same input,
    flags and time of the flag, and no queued case linked to it) and pending here: that first decision is completed
    (marked accepted, linked) and this one is to be refused, in the words returned; None when there is none, or when
    this decision writes the very case already there (it is not added twice)."""

    def key(case: EdgeCase) -> tuple:
        return case.ticket.model_dump_json(), case.flags.model_dump_json(), case.created_at

    suite = {}
    for case in edge_cases.load_cases():
        suite.setdefault(key(case), case)
    found = {f.case.id: suite.get(key(f.case)) for f in waiting}
    candidates = [c.id for c in found.values() if c is not None]
    linked = set(connection.execute(sa.select(flags.c.suite_id).where(flags.c.suite_id.in_(candidates))).scalars())
    done = []
    for flagged, suite_id in zip(waiting, suite_ids, strict=True):
        there = found[flagged.case.id]
        if there is not None and there.id != suite_id and there.id not in linked:
            decided = {"state": "accepted", "reviewed_by": there.created_by, "reviewed_at": _now(), "suite_id": there.id}
            connection.execute(flags.update().where(flags.c.id == flagged.case.id).values(**decided))
            done.append(f"{flagged.case.id} was accepted by {there.created_by or 'someone'} as {there.id} (found in the suite)")
    return f"{'; '.join(done)}: nothing else changed" if done else None


def shadow_keep() -> int:
    """TRIAGE_SHADOW_KEEP: how many shadowed requests the database keeps, the newest (default 10000)."""
    return int(os.environ.get("TRIAGE_SHADOW_KEEP", "10000"))


def record_shadow(pairs: list[dict]) -> None:
    """Keep shadowed requests (dicts of the `shadow` table's columns but id), then drop the oldest beyond shadow_keep();
    one transaction."""
    with _writing() as connection:
        connection.execute(shadow.insert(), pairs)
        newest = sa.select(shadow.c.id).order_by(shadow.c.id.desc()).limit(shadow_keep()).subquery()
        connection.execute(shadow.delete().where(shadow.c.id.not_in(sa.select(newest.c.id))))


def shadow_record(candidate: str, listed: int = 20) -> dict:
    """The candidate's live record: how many requests, agreement on each output field (the share of requests where the
    two answers agree), how many disagree on a field a case can expect (Expected's: `to_judge`), how many reviewers
    judged and who was right, and the newest `listed` of those disagreements (id, input, both answers, the fields that
    differ, the verdict where there is one). A pair that differs only on other fields (a score, a reply's wording) is
    counted in the agreement, not listed: there is no answer to judge in it."""
    with _reading() as connection:
        rows = connection.execute(sa.select(shadow.c.differs, shadow.c.candidate_json).where(shadow.c.candidate == candidate)).all()
        newest = connection.execute(
            sa.select(shadow, judged.c.right)
            .join(judged, judged.c.shadow_id == shadow.c.id, isouter=True)
            .where(shadow.c.candidate == candidate, _judgeable())
            .order_by(shadow.c.id.desc())
            .limit(listed)
        ).all()
        by_side = sa.select(judged.c.right, sa.func.count()).where(judged.c.candidate == candidate).group_by(judged.c.right)
        verdicts = dict(connection.execute(by_side).all())
    differing = [set(filter(None, differs.split(","))) for differs, _ in rows]
    fields = list(contract.output_fields())
    return {
        "candidate": candidate,
        "requests": len(rows),
        "agreement": {f: round(sum(f not in d for d in differing) / len(rows), 4) if rows else None for f in fields},
        "all_fields_agree": sum(not d for d in differing),
        "failed": sum('"error"' in answer[:12] for _, answer in rows),
        "to_judge": sum(bool(d & set(Expected.model_fields)) for d in differing),  # differ on a field a case expects
        "judged": {side: verdicts.get(side, 0) for side in SIDES},  # reviewed disagreements, by the side found right
        "disagreements": [
            {
                "id": r.id,
                "at": r.at,
                "served": r.served,
                "input": json.loads(r.input_json),
                "fields": r.differs.split(","),
                "served_answer": json.loads(r.served_json),
                "candidate_answer": json.loads(r.candidate_json),
                "right": r.right,  # a reviewer's verdict: served, candidate, neither; None before one
            }
            for r in newest
        ],
    }


def judge_shadow(pair: int, right: str, reviewer: str | None, expected: Expected | dict | None = None) -> EdgeCase:
    """A reviewer's verdict on a shadowed disagreement: which side is `right` (served, candidate, or neither, then
    `expected` is the right answer; it may also correct a side's). It becomes a case in the review queue like any flag
    (its expected answer: the right side's values of Expected's fields that differ, and of those Expected requires),
    and evidence for the gate (`live_evidence`). Decided once (NotPending names who judged it); returns the case."""
    if right not in SIDES:
        raise ValueError(f"say which side is right: one of {', '.join(SIDES)}")
    with _reading() as connection:
        row = connection.execute(sa.select(shadow).where(shadow.c.id == pair)).first()
        _not_judged(connection, pair)
    if row is None:
        raise NotPending(f"no shadowed request {pair} (python -m loop shadow report VERSION lists them): nothing changed")
    differs = [f for f in row.differs.split(",") if f]
    if not differs:
        raise ValueError(f"the two answers to shadowed request {pair} agree: there is nothing to judge")
    if not set(differs) & set(Expected.model_fields):
        raise ValueError(f"the two answers to shadowed request {pair} differ only on {', '.join(differs)}, which no case "
                         f"expects ({', '.join(Expected.model_fields)}): there is nothing to judge")  # fmt: skip
    if expected is None and right == "neither":
        raise ValueError("neither side is right: give the right answer (--expect FIELD=VALUE)")
    if expected is None:
        answer = json.loads(row.served_json if right == "served" else row.candidate_json)
        wanted = {f: answer.get(f) for f, info in Expected.model_fields.items() if f in differs or info.is_required()}
        try:
            expected = Expected.model_validate(wanted)
        except ValueError as error:  # say, the candidate failed on it: it gives no answer to expect
            raise ValueError(f"the {right} answer cannot be the expected one ({error}): give it (--expect FIELD=VALUE)") from None
    given = json.loads(row.input_json)  # kept as the shadow kept it (keep_pii): masked unless its client was trusted
    note = f"shadow: {row.served} and {row.candidate} disagree on {', '.join(differs)}; {right} is right"
    case = EdgeCase(ticket={k: v for k, v in given.items() if k != "flags"}, flags=given.get("flags") or {},
                    expected=Expected.model_validate(expected), note=note, source=edge_cases.CaseSource.shadow,
                    keep_pii=True)  # fmt: skip
    (kept,) = edge_cases.recorded([case], reviewer)
    with _writing() as connection:
        _not_judged(connection, pair)
        _put(connection, [kept], "shadow", trusted=True)
        verdict = {c.name: getattr(row, c.name) for c in shadow.c if c.name not in ("id",)} | {"shadow_id": pair, "right": right}
        verdict |= {"expected_json": kept.expected.model_dump_json(), "case_id": kept.id, "reviewed_by": reviewer, "reviewed_at": _now()}
        connection.execute(judged.insert().values(**verdict))
    return kept


def _judgeable():
    """A shadowed pair whose answers differ on a field a case can expect (`differs` lists the fields, comma-separated)."""
    fenced = sa.literal(",") + shadow.c.differs + sa.literal(",")
    return sa.or_(*(fenced.like(f"%,{field},%") for field in Expected.model_fields))


def _not_judged(connection: sa.Connection, pair: int) -> None:
    done = connection.execute(sa.select(judged).where(judged.c.shadow_id == pair)).first()
    if done is not None:
        raise NotPending(f"shadowed request {pair} was judged by {done.reviewed_by or 'someone'} at {done.reviewed_at} "
                         f"({done.right} is right, case {done.case_id}): nothing changed")  # fmt: skip


def live_evidence(candidate: str, served: str) -> list[dict]:
    """The reviewed disagreements of `candidate` against `served` (the gate's "live traffic" set), oldest first: each
    pair's id, input, both answers and the right answer."""
    with _reading() as connection:
        chosen = sa.select(judged).where(judged.c.candidate == candidate, judged.c.served == served).order_by(judged.c.shadow_id)
        rows = connection.execute(chosen).all()
    return [
        {
            "id": r.shadow_id,
            "input": json.loads(r.input_json),
            "served_answer": json.loads(r.served_json),
            "candidate_answer": json.loads(r.candidate_json),
            "expected": json.loads(r.expected_json),
            "right": r.right,
        }
        for r in rows
    ]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _flagged(row) -> Flagged:
    return Flagged(
        EdgeCase.model_validate_json(row.case_json),
        row.state,
        row.times_flagged,
        row.client,
        row.reviewed_by,
        row.reviewed_at,
        row.suite_id,
    )
