"""The review queue (review.py): flags wait as pending in a database; only a reviewer's accept writes the suite file.
Inputs and expected answers come from the pipeline's contract (conftest's helpers), so these run on a fork's too."""

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import sqlalchemy as sa
from conftest import (
    Server,
    expected_cells,
    expected_example,
    expected_more,
    invalid_input,
    other_value,
    text_field,
    with_text,
    write_rows,
)

import model
from building import contract
from loop import edge_cases, review

ROOT = model.ROOT


def case(text: str, **more) -> dict:
    """A flag of the example input with `text` in its text field, and the expected answer's example."""
    return {"ticket": with_text(text), "expected": expected_example(), **more}


def text(flagged) -> str:
    return getattr(flagged.ticket, text_field())


@pytest.fixture
def queue(tmp_path, monkeypatch):
    """A fresh SQLite queue and suite file in tmp_path."""
    monkeypatch.setenv("TRIAGE_DATABASE_URL", f"sqlite:///{tmp_path / 'review.sqlite3'}")
    monkeypatch.setenv("TRIAGE_EDGE_CASES", str(tmp_path / "suite.csv"))
    monkeypatch.setenv("TRIAGE_FLAG_RATE", "5")
    monkeypatch.setenv("TRIAGE_MAX_PENDING", "8")
    return tmp_path


def test_a_flag_waits_for_review_and_never_touches_the_suite(queue):
    written, note = "You charged me twice, write to jo@example.com", "jo@example.com says so"
    ((flagged, new),) = review.flag([case(written, note=note)], client="a")
    assert new and review.counts() == {"pending": 1, "accepted": 0, "rejected": 0}
    assert text(flagged) == contract.clean_text(written) and flagged.note == contract.clean_text(note)  # masked before it is kept
    assert not (queue / "suite.csv").exists() and edge_cases.load_cases() == []
    page, total = review.cases("pending")
    assert total == 1 and page[0].case == flagged and page[0].client == "a"


def test_what_the_store_sets_cannot_be_sent(queue):
    forged = case("Refund me now", created_at="1999-01-01T00:00:00Z", status="fixed", id="abc", answer={})
    ((kept, _),) = review.flag([forged], client="a")
    assert kept.created_at != "1999-01-01T00:00:00Z" and kept.id != "abc" and kept.answer[contract.label()] is not None


def test_without_a_key_pii_is_masked_even_when_asked_to_keep_it(queue):
    written = "Call me on +44 7700 900123 about my refund"
    ((anonymous, _),) = review.flag([case(written, keep_pii=True)], client="a")
    ((trusted, new),) = review.flag([case(f"{written}, please", keep_pii=True, note="x")], trusted=True)  # another case
    assert text(anonymous) == contract.clean_text(written, masked=True) and not anonymous.keep_pii
    assert text(trusted) == contract.clean_text(f"{written}, please", masked=False) and trusted.keep_pii and new


def test_the_same_flag_merges_and_counts(queue):
    first = review.flag([case("Refund please")], client="a")
    again = review.flag([case("Refund please")], client="b")
    assert [new for _, new in first + again] == [True, False]
    (entry,), total = review.cases()
    assert total == 1 and entry.times_flagged == 2


def test_a_client_without_a_key_is_rate_limited_and_nothing_of_the_refused_call_is_kept(queue):
    review.flag([case(f"Wrong charge number {i}") for i in range(4)], client="a")
    with pytest.raises(review.TooManyFlags, match="at most 5 a minute") as refused:
        review.flag([case("one more"), case("and another")], client="a")
    assert refused.value.retry_after > 0
    assert review.counts()["pending"] == 4  # all or nothing
    review.flag([case("another client")], client="b")  # the limit is per client
    review.flag([case(f"trusted {i}") for i in range(3)], trusted=True)  # and only for clients without a key
    assert review.counts()["pending"] == 8


def test_the_pending_queue_has_a_cap(queue):
    for client in "abcd":
        review.flag([case(f"{client} charged {i}") for i in range(2)], client=client)
    with pytest.raises(review.QueueFull, match="8 cases wait for review"):
        review.flag([case("the ninth")], client="e")
    assert review.counts()["pending"] == 8


def test_accepting_exports_the_case_to_the_suite_with_the_reviewers_answer(queue):
    saved = review.flag([case("A case a reviewer keeps"), case("junk junk")], client="a")
    keep, junk = (c.id for c, _ in saved)
    reviewers, _ = expected_more()  # the reviewer's own answer, with a field more than the flag's
    (accepted,) = review.accept([keep], "reviewer", expected=reviewers)
    assert review.reject([junk], "reviewer") == 1
    assert review.counts() == {"pending": 0, "accepted": 1, "rejected": 1}
    (in_suite,) = edge_cases.load_cases()
    assert in_suite == accepted and in_suite.expected.model_dump(mode="json", exclude_none=True) == reviewers
    assert in_suite.created_by == "reviewer"
    assert in_suite.created_at == saved[0][0].created_at  # when it was flagged, not when it was accepted
    with pytest.raises(review.NotPending, match=f"{keep} was accepted by reviewer at .*; {junk} was rejected by reviewer"):
        review.accept([keep, junk], "reviewer")  # neither is pending any more: the suite is unchanged
    assert len(edge_cases.load_cases()) == 1
    review.flag([case("junk junk")], client="z")  # flagged again after a rejection: it stays rejected
    assert review.counts()["rejected"] == 1 and review.counts()["pending"] == 0


def test_a_database_that_cannot_be_used_is_named_and_nothing_is_saved(tmp_path, monkeypatch):
    (tmp_path / "review.sqlite3").mkdir()  # a folder where the database file should be
    monkeypatch.setenv("TRIAGE_DATABASE_URL", f"sqlite:///{tmp_path / 'review.sqlite3'}")
    with pytest.raises(review.QueueUnavailable, match="the review database cannot be used now"):
        review.flag([case("hello")], client="a")


def test_a_newer_schema_is_refused(queue):
    review.counts()  # made, at this code's version
    with review.engine().begin() as connection:
        connection.execute(review.meta.update().values(value="99"))
    review._engines.clear()
    with pytest.raises(review.QueueUnavailable, match="schema version 99"):
        review.counts()


FLAGGER = """
import json, sys
from loop import review
name, cases = sys.argv[1], json.loads(sys.argv[2])
for one in cases:  # one transaction each, interleaved with the other processes
    review.flag([one], client=name, trusted=True)
print(json.dumps(review.counts()))
"""


def test_several_processes_flag_into_one_postgresql_and_nothing_is_lost_or_doubled(postgres):
    env = {**os.environ, "TRIAGE_DATABASE_URL": postgres.url, "PYTHONPATH": str(ROOT)}

    def cases(name: str) -> str:
        return json.dumps(
            [case(f"{name} was charged twice, case {i}") for i in range(8)] + [case(f"Shared complaint {i}") for i in range(4)]
        )

    processes = [
        subprocess.Popen(
            [sys.executable, "-c", FLAGGER, name, cases(name)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for name in ("one", "two", "three")
    ]
    results = [p.communicate(timeout=300) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err[-2000:] for _, err in results]
    os.environ["TRIAGE_DATABASE_URL"] = postgres.url
    try:
        page, total = review.cases(limit=500)
        assert total == 3 * 8 + 4 and len({f.case.id for f in page}) == total, (results, [text(f.case) for f in page])
        shared = [f for f in page if text(f.case).startswith("Shared")]
        assert sorted(f.times_flagged for f in shared) == [3, 3, 3, 3]
        assert json.loads(results[-1][0].splitlines()[-1])["pending"] <= total
    finally:
        del os.environ["TRIAGE_DATABASE_URL"]


def test_postgresql_going_down_is_named_and_the_queue_recovers(postgres, monkeypatch):
    monkeypatch.setenv("TRIAGE_DATABASE_URL", postgres.url)
    review.flag([case("before the outage")], trusted=True)
    postgres.stop()
    with pytest.raises(review.QueueUnavailable, match="the review database cannot be used now"):
        review.flag([case("during the outage")], trusted=True)
    postgres.start()
    review.flag([case("after the outage")], trusted=True)
    assert [text(f.case) for f in review.cases()[0]] == ["before the outage", "after the outage"]


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "loop", "cases", *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True
    )


@pytest.mark.quick
def test_a_reviewer_works_the_queue_from_the_command_line(tmp_path):
    env = {"TRIAGE_DATABASE_URL": f"sqlite:///{tmp_path / 'q.sqlite3'}", "TRIAGE_EDGE_CASES": str(tmp_path / "suite.csv")}
    expected = expected_cells(expected_example())
    old = [{**with_text("An old flag"), **expected, "note": "old flag"}, {**with_text("Another old one"), **expected, "note": ""}]
    done = cli("import", str(write_rows(tmp_path / "old_store.csv", old)), env=env)
    assert done.returncode == 0 and "2 new cases to review" in done.stdout, done.stderr[-2000:]
    assert not (tmp_path / "suite.csv").exists()  # imported into the queue, not the suite
    listed = cli("queue", env=env)
    ids = [line.split()[1] for line in listed.stdout.splitlines() if line.startswith("pending")]
    assert len(ids) == 2 and json.loads(listed.stdout.splitlines()[-1])["pending"] == 2
    reviewers, more = expected_more()  # the reviewer's answer: the label and one field more
    expect = [a for k, v in reviewers.items() for a in ("--expect", f"{k}={'yes' if v is True else v}")]
    wrongs = [(["--expect", "colour=red"], "FIELD one of")]
    if more:  # the other field alone: the expected answer is set whole, and lacks its label
        wrongs.append((expect[-2:], f"{contract.label()}: Field required"))
    for wrong, said in wrongs:
        refused = cli("accept", ids[0], *wrong, env=env)  # the expected answer is checked whole, naming the field
        assert refused.returncode == 1 and said in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    done = cli("accept", ids[0], *expect, "--by", "ana", env=env)
    assert done.returncode == 0 and "1 case accepted" in done.stdout, done.stderr[-2000:]
    refused = cli("reject", *ids, "--by", "ana", env=env)  # the first is no longer pending: nothing changes, and it is named
    assert refused.returncode == 1 and f"{ids[0]} was accepted by ana at " in refused.stderr, refused.stderr
    assert "nothing changed" in refused.stderr and "Traceback" not in refused.stderr
    assert "1 case rejected" in cli("reject", ids[1], "--by", "ana", env=env).stdout
    typo = cli("accept", "nosuchcase", env=env)
    assert typo.returncode == 1 and "nosuchcase is not in the queue: nothing changed" in typo.stderr, typo.stderr
    bad, _ = invalid_input()
    broken = write_rows(tmp_path / "broken.csv", [{**with_text("fine"), **expected}, {**bad, **expected}])
    done = cli("import", str(broken), env=env)
    assert done.returncode == 1 and "nothing imported" in done.stderr and "line 3" in done.stderr and "Traceback" not in done.stderr
    done = cli("import", str(tmp_path / "missing.csv"), env=env)
    assert done.returncode == 1 and "nothing imported" in done.stderr and "missing.csv" in done.stderr
    (kept,) = edge_cases.load_cases(tmp_path / "suite.csv")
    assert kept.created_by == "ana" and kept.expected.model_dump(mode="json", exclude_none=True) == reviewers
    assert json.loads(cli("queue", "--state", "all", env=env).stdout.splitlines()[-1]) | {"database": None} == {
        "shown": 2,
        "total": 2,
        "pending": 0,
        "accepted": 1,
        "rejected": 1,
        "database": None,
    }
    (tmp_path / "gone.sqlite3").mkdir()
    done = cli("queue", env={**env, "TRIAGE_DATABASE_URL": f"sqlite:///{tmp_path / 'gone.sqlite3'}"})
    assert done.returncode == 1 and "the review database cannot be used now" in done.stderr and "Traceback" not in done.stderr


# --- over HTTP ------------------------------------------------------------------------------------------------------
def test_an_open_demo_bounds_what_anyone_can_flag(tmp_path):
    """No key on the server: each client has a rate, the queue a cap, and nobody can review over HTTP."""
    server = Server(TRIAGE_FLAG_RATE="2", TRIAGE_MAX_PENDING="3", TRIAGE_TRUST_PROXY="1")
    try:
        url = f"{server.url}/cases"

        def flag(text: str, client: str) -> requests.Response:
            return requests.post(url, json=case(text), headers={"X-Forwarded-For": client}, timeout=120)

        assert [flag(f"Charged twice, try {i}", "10.0.0.1").status_code for i in range(2)] == [201, 201]
        too_many = flag("Charged twice, try 3", "10.0.0.1")
        assert too_many.status_code == 429 and "at most 2 a minute" in too_many.json()["detail"], too_many.text
        assert int(too_many.headers["Retry-After"]) > 0
        assert flag("Charged twice, try 1", "10.0.0.1").status_code == 200  # the same case again merges: no new row
        assert flag("A different client", "10.0.0.2").status_code == 201
        full = flag("One case too many", "10.0.0.3")
        assert full.status_code == 507 and "3 cases wait for review" in full.json()["detail"], full.text
        off = requests.post(f"{url}/review", json={"ids": ["x"], "accept": True}, headers={"X-Review-Key": ""}, timeout=60)
        assert off.status_code == 403 and "TRIAGE_REVIEW_KEY" in off.json()["detail"]
        listed = requests.get(url, params={"state": "pending"}, timeout=60).json()
        assert listed["counts"] == {"pending": 3, "accepted": 0, "rejected": 0}
        metrics = requests.get(f"{server.url}/metrics", timeout=60).text
        assert 'triage_review_cases{state="pending"} 3.0' in metrics and "triage_review_database_up 1.0" in metrics
        statuses = re.findall(r'triage_requests_total\{route="/cases",status="(\d+)"\} (\S+)', metrics)
        assert {"429", "507"} <= {status for status, _ in statuses}
    finally:
        server.stop()


def test_two_servers_share_one_postgresql_and_survive_its_outage(postgres):
    servers = [Server(TRIAGE_DATABASE_URL=postgres.url, LIT_SERVER_API_KEY="k") for _ in range(2)]
    key = {"X-API-Key": "k"}
    try:
        bodies = [(s, case(f"Server {n}, client {i}: charged twice")) for n, s in enumerate(servers) for i in range(6)]
        bodies += [(s, case("Everyone flags this one")) for s in servers for _ in range(3)]
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda sb: requests.post(f"{sb[0].url}/cases", json=sb[1], headers=key, timeout=120).status_code, bodies))
        assert sorted(codes).count(201) == 13 and sorted(codes).count(200) == 5, codes
        for s in servers:  # each replica sees every flag
            listed = requests.get(f"{s.url}/cases", params={"state": "pending", "limit": 100}, headers=key, timeout=60).json()
            assert listed["total"] == 13 and len({c["case"]["id"] for c in listed["cases"]}) == 13
            assert [c["times_flagged"] for c in listed["cases"] if c["case"]["ticket"][text_field()].startswith("Everyone")] == [6]
        postgres.stop()
        down = requests.post(f"{servers[0].url}/cases", json=case("During the outage"), headers=key, timeout=120)
        assert down.status_code == 503 and "the review database cannot be used now" in down.json()["detail"], down.text
        assert requests.get(f"{servers[1].url}/cases", params={"state": "pending"}, headers=key, timeout=60).status_code == 503
        assert "triage_review_database_up 0.0" in requests.get(f"{servers[1].url}/metrics", timeout=60).text
        assert requests.get(f"{servers[0].url}/health", timeout=10).status_code == 200  # triage itself goes on
        postgres.start()
        back = requests.post(f"{servers[1].url}/cases", json=case("After the outage"), headers=key, timeout=120)
        assert back.status_code == 201, back.text
        listed = requests.get(f"{servers[0].url}/cases", params={"state": "pending", "limit": 100}, headers=key, timeout=60).json()
        assert listed["total"] == 14 and "During the outage" not in str(listed)
    finally:
        for s in servers:
            s.stop()


# --- decisions: once, all or nothing, linked to the suite (issue 34) ------------------------------------------------
def suite_ids() -> list[str]:
    return [c.id for c in edge_cases.load_cases()]


def test_a_case_is_decided_once_and_a_call_with_one_decided_id_changes_nothing(queue):
    first, second = (c.id for c, _ in review.flag([case("Decide me"), case("And me")], client="a"))
    review.reject([first], "ana")
    for decide in (lambda: review.accept([second, first], "bo"), lambda: review.reject([second, first], "bo")):
        with pytest.raises(review.NotPending, match=f"^{first} was rejected by ana at 20[0-9-]+T[0-9:]+Z: nothing changed$"):
            decide()
    assert review.counts() == {"pending": 1, "accepted": 0, "rejected": 1} and suite_ids() == []  # `second` untouched
    with pytest.raises(review.NotPending, match="nosuch is not in the queue"):
        review.accept(["nosuch"], "bo")
    assert review.counts()["pending"] == 1


def test_an_accept_with_another_answer_links_the_queued_case_to_its_suite_case(queue):
    ((flagged, _),) = review.flag([case("Link me")], client="a")
    reviewers, _ = expected_more()
    reviewers = {
        **reviewers,
        contract.label(): other_value(model.Expected.model_fields[contract.label()].annotation, reviewers[contract.label()]),
    }
    (accepted,) = review.accept([flagged.id], "ana", expected=reviewers)
    assert accepted.id != flagged.id and suite_ids() == [accepted.id]
    ((listed, *_),), _ = review.cases("accepted")
    (entry,), _ = review.cases("accepted")
    assert listed.id == flagged.id and entry.suite_id == accepted.id and entry.reviewed_by == "ana" and entry.reviewed_at


def test_an_accept_cut_short_between_the_suite_and_the_queue_is_completed_by_the_next_decision(queue, monkeypatch):
    """The suite is appended inside the queue's transaction: a crash before its commit leaves the case in the suite and
    pending. The next decision completes that first one (nothing twice, queue and suite agree) and is refused."""
    flagged = [c for c, _ in review.flag([case("Crash one"), case("Crash two"), case("Crash three")], client="a")]
    append = edge_cases.append_recorded

    def append_then_die(cases, path=None):
        append(cases, path)
        raise KeyboardInterrupt  # as if the process died before the commit

    monkeypatch.setattr(edge_cases, "append_recorded", append_then_die)
    for one in flagged:
        with pytest.raises(KeyboardInterrupt):
            review.accept([one.id], "ana")
    monkeypatch.setattr(edge_cases, "append_recorded", append)
    assert review.counts()["pending"] == 3 and suite_ids() == [c.id for c in flagged]
    reviewers = {
        contract.label(): other_value(model.Expected.model_fields[contract.label()].annotation, expected_example()[contract.label()])
    }
    with pytest.raises(review.NotPending, match=f"{flagged[0].id} was accepted by ana as {flagged[0].id} \\(found in the suite\\)"):
        review.reject([flagged[0].id], "bo")
    with pytest.raises(review.NotPending, match=f"{flagged[1].id} was accepted by ana as {flagged[1].id}"):
        review.accept([flagged[1].id], "bo", expected=reviewers)  # another answer: the first decision stands
    (again,) = review.accept([flagged[2].id], "bo")  # the very case that is there: accepted, not added twice
    assert again.id == flagged[2].id and suite_ids() == [c.id for c in flagged]
    page, _ = review.cases("accepted")
    assert {f.case.id: f.suite_id for f in page} == {c.id: c.id for c in flagged} and review.counts()["pending"] == 0


V1_SCHEMA = """
CREATE TABLE triage_meta (key VARCHAR(64) PRIMARY KEY, value VARCHAR(200));
CREATE TABLE triage_flags (id VARCHAR(12) PRIMARY KEY, state VARCHAR(10) NOT NULL, case_json TEXT NOT NULL,
    client VARCHAR(200), flagged_at FLOAT NOT NULL, times_flagged INTEGER DEFAULT '1' NOT NULL,
    reviewed_by VARCHAR(200), reviewed_at VARCHAR(32));
INSERT INTO triage_meta VALUES ('schema_version', '1');
"""


def test_a_version_1_database_is_upgraded_in_place_on_first_use(queue):
    import sqlite3

    kept = edge_cases.recorded([case("From before the upgrade"), case("Decided before it")])
    with sqlite3.connect(queue / "review.sqlite3") as old:
        old.executescript(V1_SCHEMA)
        for state, one in zip(("pending", "accepted"), kept, strict=True):
            old.execute("INSERT INTO triage_flags VALUES (?, ?, ?, 'a', 1.0, 1, NULL, NULL)", (one.id, state, one.model_dump_json()))
    review._engines.clear()
    assert review.counts() == {"pending": 1, "accepted": 1, "rejected": 0}
    with review.engine().connect() as connection:
        assert connection.execute(sa.select(review.meta.c.value)).scalar() == str(review.SCHEMA_VERSION) == "2"
    (accepted,) = review.accept([kept[0].id], "ana")
    assert {f.case.id: f.suite_id for f in review.cases("accepted")[0]} == {kept[0].id: accepted.id, kept[1].id: None}
    review._engines.clear()
    assert review.counts()["accepted"] == 2  # opened again: upgraded once


# --- the database under faults ----------------------------------------------------------------------------------------
def test_a_flag_is_acknowledged_only_once_on_disk(queue):
    review.counts()
    with review.engine().connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_database_file_removed_or_replaced_in_use_is_refused_never_written(queue, how):
    review.flag([case("Before")], client="a")
    path = queue / "review.sqlite3"
    for leftover in queue.glob("review.sqlite3*"):
        leftover.unlink()
    if how == "replaced":
        import sqlite3

        sqlite3.connect(path).close()  # another (empty) file there now
    for call in (lambda: review.flag([case("After")], client="a"), review.counts, lambda: review.reject(["x"], "ana")):
        with pytest.raises(review.QueueUnavailable, match=r"the review database review.sqlite3 was removed or replaced while in use"):
            call()
    assert how == "replaced" or not path.exists()  # nothing made a new file behind the open one either
    review._engines.clear()  # a restart uses the file there now
    assert review.counts()["pending"] == 0


HOLD_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
"""


def test_waiting_on_a_locked_sqlite_database_is_bounded(queue, monkeypatch):
    monkeypatch.setenv("TRIAGE_DATABASE_WAIT", "1")
    review.counts()
    review._engines.clear()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(queue / "review.sqlite3")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        start = time.perf_counter()
        with pytest.raises(review.QueueUnavailable, match="locked by another writer for longer than TRIAGE_DATABASE_WAIT, 1 s"):
            review.flag([case("Locked out")], trusted=True)
        assert time.perf_counter() - start < 3

        async def many():  # as a server's routes call it, three times as many at once as it has threads
            calls = [review.call(review.flag, [case(f"Waiting {i}")], trusted=True) for i in range(3 * review.CALLS_AT_ONCE)]
            return await asyncio.gather(*calls, return_exceptions=True)

        start = time.perf_counter()
        errors = asyncio.run(many())
        assert time.perf_counter() - start < 2 * 1 + 2  # those that waited for a thread, then for the lock
        assert all(isinstance(e, review.QueueUnavailable) for e in errors), errors
        busy = [e for e in errors if isinstance(e, review.QueueBusy)]
        assert len(busy) >= review.CALLS_AT_ONCE and "review.sqlite3 is slow or locked" in str(busy[0])
    finally:
        holder.communicate("\n", timeout=10)
    review.flag([case("After the lock")], trusted=True)
    assert review.counts()["pending"] == 1


def test_waiting_on_a_locked_postgresql_is_bounded(postgres, monkeypatch):
    monkeypatch.setenv("TRIAGE_DATABASE_URL", postgres.url)
    monkeypatch.setenv("TRIAGE_DATABASE_WAIT", "1")
    review.counts()
    other = sa.create_engine(postgres.url)
    with other.connect() as holder, ThreadPoolExecutor(1) as pool:
        holder.exec_driver_sql("SELECT pg_advisory_lock(7355608)")  # the queue's write lock, held by another session
        try:
            locked_out = pool.submit(review.flag, [case("Locked out")], trusted=True)
            with pytest.raises(review.QueueUnavailable, match="locked by another writer for longer than TRIAGE_DATABASE_WAIT, 1 s"):
                locked_out.result(timeout=3)  # a TimeoutError here: it would wait for as long as the lock is held
            assert review.counts()["pending"] == 0  # reading goes on
        finally:
            holder.exec_driver_sql("SELECT pg_advisory_unlock(7355608)")
    other.dispose()
    review.flag([case("After the lock")], trusted=True)
    assert review.counts()["pending"] == 1


def test_a_refused_flag_costs_no_pipeline_run(queue, monkeypatch):
    monkeypatch.setenv("TRIAGE_FLAG_RATE", "2")
    calls = []
    run_batch = model.run_batch
    monkeypatch.setattr(model, "run_batch", lambda *args, **kwargs: calls.append(1) or run_batch(*args, **kwargs))
    ((first, _),) = review.flag([case("One")], client="a")
    review.flag([case("Two")], client="a")
    assert len(calls) == 2
    for i in range(20):
        with pytest.raises(review.TooManyFlags):
            review.flag([case(f"Refused {i}")], client="a")
    monkeypatch.setenv("TRIAGE_MAX_PENDING", "2")
    with pytest.raises(review.QueueFull):
        review.flag([case("Over the cap")], client="b")
    assert len(calls) == 2  # refused before the pipeline ran
    ((again, new),) = review.flag([case("One")], client="a")  # a known case merges, as kept, without a run either
    assert not new and again == first and len(calls) == 2
    assert review._ids([edge_cases.EdgeCase.model_validate(case("One"))]) == [first.id]
