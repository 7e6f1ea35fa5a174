"""The review queue: a flagged case waits in a database until a reviewer accepts or rejects it.

    flag (app, API, batch, import) --> pending --accept (a reviewer)--> the regression suite, data/edge_cases.csv in git
                                               --reject (a reviewer)--> rejected (kept: the same flag is not asked again)

A pending case is not a regression test: only `accept` exports it to the suite file (edge_cases.py), with the
expected answer as the reviewer sets it, so the tracked file changes only by a reviewer's hand. The database is SQLite
by default (var/review.sqlite3, which git ignores; TRIAGE_DATABASE_URL moves it) or PostgreSQL when
TRIAGE_DATABASE_URL names one (`postgresql+psycopg://user:password@host/db`): several replicas share it.
SQLAlchemy Core, one code path for both; the schema is made on first use and carries a version for later migrations.

Abuse is bounded for flags from clients without a key (`trusted=False`): at most TRIAGE_FLAG_RATE flags per client
per minute (TooManyFlags, HTTP 429) and at most TRIAGE_MAX_PENDING pending cases (QueueFull, 507). A flag of a case
already there (same input, flags and expected answer) merges into it and counts once more. Text and note are masked
(personal data, by the pipeline's clean_text) unless a trusted client asks to keep them. Every write is one transaction,
taken one at a time (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-level advisory lock): all of it or nothing.
"""

import os
import time
from pathlib import Path
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from loop import edge_cases
from loop.edge_cases import EdgeCase
from model import ROOT, Expected

SCHEMA_VERSION = 1
STATES = ("pending", "accepted", "rejected")
RATE_WINDOW_S = 60

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
)


class QueueUnavailable(RuntimeError):
    """The review database cannot be reached or used (HTTP 503); nothing was written."""


class QueueFull(QueueUnavailable):
    """The pending queue is at its cap (HTTP 507); a reviewer must accept or reject cases first."""


class TooManyFlags(QueueUnavailable):
    """This client flagged too many cases in the last minute (HTTP 429)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Flagged(NamedTuple):
    case: EdgeCase
    state: str
    times_flagged: int
    client: str | None
    reviewed_by: str | None


def database_url() -> str:
    return os.environ.get("TRIAGE_DATABASE_URL") or f"sqlite:///{ROOT / 'var' / 'review.sqlite3'}"


def where() -> str:
    """The database, for messages: its URL without a password."""
    return sa.make_url(database_url()).render_as_string(hide_password=True)


def limits() -> tuple[int, int]:
    """(flags per client per minute, pending cases at most) for clients without a key."""
    return int(os.environ.get("TRIAGE_FLAG_RATE", "20")), int(os.environ.get("TRIAGE_MAX_PENDING", "1000"))


_engines: dict[tuple[str, int], sa.Engine] = {}


def engine() -> sa.Engine:
    """This process's engine for `database_url()`, the schema made on first use (a forked process makes its own)."""
    url = database_url()
    key = (url, os.getpid())
    if key not in _engines:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            made = sa.create_engine(url, connect_args={"timeout": 30})
            sa.event.listen(made, "connect", _sqlite_connected)
            sa.event.listen(made, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
        else:
            made = sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2, connect_args={"connect_timeout": 5})
        with _writing(made) as connection:
            metadata.create_all(connection)
            version = connection.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
            if version is None:
                connection.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
            elif int(version) > SCHEMA_VERSION:
                raise QueueUnavailable(f"the review database has schema version {version}; this code knows {SCHEMA_VERSION}: upgrade it")
        _engines[key] = made
    return _engines[key]


def _sqlite_connected(connection, _record) -> None:
    """SQLAlchemy's recipe for real SQLite transactions: the driver leaves them alone, "begin" says BEGIN IMMEDIATE."""
    connection.isolation_level = None
    connection.execute("PRAGMA journal_mode=WAL")


class _writing:
    """One write transaction at a time, across processes and replicas; a database error becomes QueueUnavailable."""

    def __init__(self, bound: sa.Engine | None = None):
        self.bound = bound

    def __enter__(self) -> sa.Connection:
        try:
            self.context = (self.bound or engine()).begin()
            connection = self.context.__enter__()
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7355608)")
            return connection
        except sa.exc.SQLAlchemyError as error:
            raise _unavailable(error) from None

    def __exit__(self, kind, error, traceback):
        try:
            self.context.__exit__(kind, error, traceback)
        except sa.exc.SQLAlchemyError as failed:
            raise _unavailable(failed) from None
        if isinstance(error, sa.exc.SQLAlchemyError):
            raise _unavailable(error) from None


class _reading(_writing):
    def __enter__(self) -> sa.Connection:
        try:
            self.context = engine().connect()
            return self.context.__enter__()
        except sa.exc.SQLAlchemyError as error:
            raise _unavailable(error) from None


def _unavailable(error: Exception) -> QueueUnavailable:
    reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0][:300]
    return QueueUnavailable(f"the review database cannot be used now ({reason}); nothing was saved")


def _upsert(connection: sa.Connection):
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(flags)
    return statement.on_conflict_do_update(index_elements=["id"], set_={"times_flagged": flags.c.times_flagged + 1})


def flag(cases: list[EdgeCase | dict], created_by: str | None = None, client: str | None = None, trusted: bool = False):
    """Put cases in the queue as pending; returns each as kept and whether it was new (a known one is merged).

    Untrusted clients (no key) cannot keep PII and are held to the rate limit and the queue's cap; a case a reviewer
    already rejected stays rejected. One transaction: every case is kept, or none."""
    cases = [EdgeCase.model_validate(c) for c in cases]
    cases = [c.model_copy(update={"created_at": None, **({} if trusted else {"keep_pii": False})}) for c in cases]  # the store's to set
    kept = edge_cases.recorded(cases, created_by)
    rate, cap = limits()
    now = time.time()
    with _writing() as connection:
        there = {row.id for row in connection.execute(sa.select(flags.c.id).where(flags.c.id.in_([c.id for c in kept])))}
        new = list({c.id: c for c in kept if c.id not in there}.values())
        if not trusted and new:
            recent = connection.execute(
                sa.select(sa.func.count()).select_from(flags).where(flags.c.client == client, flags.c.flagged_at > now - RATE_WINDOW_S)
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
        for case in kept:
            row = {"id": case.id, "state": "pending", "case_json": case.model_dump_json(), "client": client, "flagged_at": now}
            connection.execute(_upsert(connection).values(**row))
    return [(case, case.id not in there) for case in kept]


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
    count as fixed); returns them as the suite keeps them. An id that is not pending is skipped. The suite is written
    first: if marking them accepted then fails, accepting again adds nothing twice."""
    waiting = [f.case.model_copy(update={"train": train}) for f in pending(ids)]
    chosen = [c.model_copy(update={"expected": Expected.model_validate(expected)}) for c in waiting] if expected else waiting
    saved = [case for case, _ in edge_cases.save_cases(chosen, created_by=reviewer)] if chosen else []
    _review([c.id for c in waiting], "accepted", reviewer)
    return saved


def reject(ids: list[str], reviewer: str | None) -> int:
    """Reject pending cases; returns how many."""
    return _review(ids, "rejected", reviewer)


def pending(ids: list[str]) -> list[Flagged]:
    """Those of `ids` that are pending cases, oldest first."""
    with _reading() as connection:
        chosen = sa.select(flags).where(flags.c.id.in_(ids), flags.c.state == "pending")
        rows = connection.execute(chosen.order_by(flags.c.flagged_at, flags.c.id))
        return [_flagged(r) for r in rows]


def _review(ids: list[str], state: str, reviewer: str | None) -> int:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with _writing() as connection:
        done = connection.execute(
            flags.update()
            .where(flags.c.id.in_(ids), flags.c.state == "pending")
            .values(state=state, reviewed_by=reviewer, reviewed_at=stamp)
        )
    return done.rowcount


def _flagged(row) -> Flagged:
    return Flagged(EdgeCase.model_validate_json(row.case_json), row.state, row.times_flagged, row.client, row.reviewed_by)
