"""The review queue under races and faults, with real processes and real HTTP (issue 34): two reviewers deciding one
case, a locked database, a database file removed under a running server, refused flags that must cost nothing.
Inputs and expected answers come from the pipeline's contract (conftest's helpers), so these run on a fork's too."""

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from conftest import ROOT, Server, expected_example, other_value, slow_pipeline, with_text

import model
from building import contract
from loop import edge_cases, review

ROUNDS = 24


def case(text: str) -> dict:
    return {"ticket": with_text(text), "expected": expected_example()}


def answers() -> tuple[dict, dict]:
    """Two expected answers that contradict each other: the example's, and the example with another label."""
    first = expected_example()
    label = contract.label()
    return first, {**first, label: other_value(model.Expected.model_fields[label].annotation, first[label])}


def agree(suite: Path, decided: dict[str, tuple[str, str, dict | None]]) -> None:
    """Queue and suite agree: each case `decided` ({queue id: (state, reviewer, expected when accepted)}) is in that
    state by that reviewer, and the suite holds exactly one case for each accepted one (linked by suite_id, with the
    winner's answer) and none for a rejected one."""
    queued = {f.case.id: f for f in review.cases(limit=500)[0]}
    in_suite = edge_cases.load_cases(suite)
    assert len({c.id for c in in_suite}) == len(in_suite), "a case twice in the suite"
    by_ticket = {}
    for c in in_suite:
        by_ticket.setdefault(c.ticket.model_dump_json(), []).append(c)
    for queue_id, (state, reviewer, expected) in decided.items():
        f = queued[queue_id]
        assert (f.state, f.reviewed_by) == (state, reviewer), (queue_id, f.state, f.reviewed_by, state, reviewer)
        there = by_ticket.get(f.case.ticket.model_dump_json(), [])
        if state == "rejected":
            assert there == [] and f.suite_id is None, (queue_id, there)
        else:
            (one,) = there
            assert one.id == f.suite_id and one.expected.model_dump(mode="json", exclude_none=True) == expected, (queue_id, one)


# --- two reviewers at the command line ----------------------------------------------------------------------------
REVIEWER = """
import contextlib, io, json, sys, time
from pathlib import Path
from loop import commands
name, start, decisions = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
while time.time() < start:
    time.sleep(0.001)
done = []
for queue_id, args in decisions:
    said = io.StringIO()
    with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = commands.main(["cases", *args, queue_id, "--by", name])
        except SystemExit as stop:
            code, message = (1, str(stop.code)) if isinstance(stop.code, str) else (stop.code, "")
            said.write(message)
    done.append([queue_id, code, said.getvalue()])
print(json.dumps(done))
"""


def expect_args(expected: dict) -> list[str]:
    return [a for k, v in expected.items() for a in ("--expect", f"{k}={'yes' if v is True else 'no' if v is False else v}")]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_two_reviewers_at_the_command_line_decide_each_case_once(database, loop, request, monkeypatch):
    """Two processes run `python -m loop cases accept|reject` (its main) on the same cases in the same order, started
    at the same instant: for each case one wins and the other exits 1 naming the winner; queue and suite agree."""
    if database == "postgresql":
        monkeypatch.setenv("TRIAGE_DATABASE_URL", request.getfixturevalue("postgres").url)
    ids = [c.id for c, _ in review.flag([case(f"Race at the command line, round {i}") for i in range(ROUNDS)], trusted=True)]
    mine, theirs = answers()
    plans = {
        "ana": [(i, ["accept", *expect_args(mine)]) for i in ids],
        "bo": [
            (i, ["accept", *expect_args(theirs)] if n % 2 else ["reject"]) for n, i in enumerate(ids)
        ],  # accept against accept, and against reject
    }
    start = time.time() + 4  # both ready (imports done) before then
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-c", REVIEWER, name, str(start), json.dumps(plan)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, plan in plans.items()
    }
    results = {name: p.communicate(timeout=240) for name, p in processes.items()}
    assert all(p.returncode == 0 for p in processes.values()), {n: err[-2000:] for n, (_, err) in results.items()}
    outcomes = {name: {i: (code, said) for i, code, said in json.loads(out.splitlines()[-1])} for name, (out, _) in results.items()}
    decided = {}
    for n, queue_id in enumerate(ids):
        (ana_code, ana_said), (bo_code, bo_said) = outcomes["ana"][queue_id], outcomes["bo"][queue_id]
        assert sorted([ana_code, bo_code]) == [0, 1], (queue_id, ana_said, bo_said)
        winner, loser_said = ("ana", bo_said) if ana_code == 0 else ("bo", ana_said)
        state = "accepted" if winner == "ana" or n % 2 else "rejected"
        assert f"{queue_id} was {state} by {winner} at " in loser_said and "nothing changed" in loser_said, loser_said
        decided[queue_id] = (state, winner, None if state == "rejected" else (mine if winner == "ana" else theirs))
    agree(loop / "suite.csv", decided)


def test_the_command_line_says_who_decided_first(loop):
    """The real command: the second decision exits 1, naming the first, and changes nothing."""
    ((flagged, _),) = review.flag([case("Decided at the command line")], trusted=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-m", "loop", "cases"]
    first = subprocess.run([*run, "reject", flagged.id, "--by", "ana"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert first.returncode == 0 and "1 case rejected" in first.stdout, first.stderr
    second = subprocess.run([*run, "accept", flagged.id, "--by", "bo"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert second.returncode == 1 and f"{flagged.id} was rejected by ana at " in second.stderr and "Traceback" not in second.stderr
    assert edge_cases.load_cases() == [] and review.counts() == {"pending": 0, "accepted": 0, "rejected": 1}


# --- two reviewers over HTTP ----------------------------------------------------------------------------------------
def test_two_reviewers_over_http_decide_each_case_once(loop):
    """Two reviewers send their decisions on each case at the same instant to a real server: one gets 200, the other
    409 naming the winner; an accept's answer names the case's id in the suite; queue and suite agree."""
    server = Server(
        wait_for_ui=False, TRIAGE_REVIEW_KEY="r", TRIAGE_FLAG_RATE="1000", TRIAGE_DATABASE_URL=os.environ["TRIAGE_DATABASE_URL"],
        TRIAGE_EDGE_CASES=os.environ["TRIAGE_EDGE_CASES"],
    )  # fmt: skip
    try:  # the first calls at once, while review.py is being imported for the first: none sees it half-imported (a 500)
        with ThreadPoolExecutor(8) as pool:
            first = list(pool.map(lambda _: requests.get(f"{server.url}/cases", params={"state": "pending"}, timeout=60), range(8)))
        assert [r.status_code for r in first] == [200] * 8, [r.text for r in first]
        flagged = [requests.post(f"{server.url}/cases", json=case(f"Race over HTTP, round {i}"), timeout=60) for i in range(ROUNDS)]
        assert [r.status_code for r in flagged] == [201] * ROUNDS, flagged[-1].text
        ids = [r.json()["id"] for r in flagged]
        mine, theirs = answers()

        def decide(queue_id: str, reviewer: str, body: dict, barrier: threading.Barrier) -> requests.Response:
            barrier.wait()
            body = {"ids": [queue_id], "reviewer": reviewer, **body}
            return requests.post(f"{server.url}/cases/review", json=body, headers={"X-Review-Key": "r"}, timeout=60)

        decided = {}
        with ThreadPoolExecutor(2) as pool:
            for n, queue_id in enumerate(ids):
                barrier = threading.Barrier(2)
                theirs_body = {"accept": True, "expected": theirs} if n % 2 else {"accept": False}
                ana = pool.submit(decide, queue_id, "ana", {"accept": True, "expected": mine}, barrier)
                bo = pool.submit(decide, queue_id, "bo", theirs_body, barrier)
                ana, bo = ana.result(), bo.result()
                assert sorted([ana.status_code, bo.status_code]) == [200, 409], (ana.text, bo.text)
                (winner, won), lost = (("ana", ana), bo) if ana.status_code == 200 else (("bo", bo), ana)
                state = "accepted" if winner == "ana" or n % 2 else "rejected"
                assert lost.json()["detail"].startswith(f"{queue_id} was {state} by {winner} at "), lost.text
                assert won.json()["changed"] == 1
                if state == "accepted":
                    assert won.json()["suite_ids"] == {queue_id: won.json()["accepted"][0]}
                decided[queue_id] = (state, winner, None if state == "rejected" else (mine if winner == "ana" else theirs))
        listed = requests.get(f"{server.url}/cases", params={"state": "accepted", "limit": 500}, timeout=60).json()
        suite = {c.ticket.model_dump_json(): c.id for c in edge_cases.load_cases()}
        assert {c["case"]["id"]: c["suite_id"] for c in listed["cases"]} == {
            c["case"]["id"]: suite[model.Input.model_validate(c["case"]["ticket"]).model_dump_json()] for c in listed["cases"]
        }
    finally:
        server.stop()
    agree(loop / "suite.csv", decided)


# --- the database under faults, under a running server --------------------------------------------------------------
HOLD_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
"""


def test_a_locked_removed_or_abused_queue_never_stalls_the_server(loop):
    """Another process holds the SQLite file's write lock: /health and /live answer at once under many flags, each flag
    is refused (503) within TRIAGE_DATABASE_WAIT, and flags work again once the lock goes. Refused flags (429) cost no
    pipeline run (it takes half a second here). The file removed under the server: 503 naming it, never a 201."""
    database = loop / "review.sqlite3"
    server = Server(
        wait_for_ui=False, TRIAGE_DATABASE_WAIT="2", TRIAGE_FLAG_RATE="2", TRIAGE_TRUST_PROXY="1",
        TRIAGE_DATABASE_URL=os.environ["TRIAGE_DATABASE_URL"], TRIAGE_EDGE_CASES=os.environ["TRIAGE_EDGE_CASES"],
        **slow_pipeline(loop, seconds=0.5),
    )  # fmt: skip
    try:

        def flag(text: str, client: str) -> tuple[requests.Response, float]:
            start = time.perf_counter()
            said = requests.post(f"{server.url}/cases", json=case(text), headers={"X-Forwarded-For": client}, timeout=120)
            return said, time.perf_counter() - start

        assert flag("Before the lock", "10.0.0.1")[0].status_code == 201  # the pipeline loaded in the HTTP process too
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(database)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout.readline() == "locked\n"
            with ThreadPoolExecutor(60) as pool:
                flags = [pool.submit(flag, f"Locked out {i}", f"10.1.{i}.1") for i in range(60)]
                probes = []
                while not all(f.done() for f in flags):
                    for path in ("/health", "/live"):
                        start = time.perf_counter()
                        status = requests.get(f"{server.url}{path}", timeout=30).status_code
                        probes.append((path, status, time.perf_counter() - start))
                    time.sleep(0.1)
                refused = [f.result() for f in flags]
        finally:
            holder.communicate("\n", timeout=10)
        assert len(probes) >= 5 and max(seconds for _, _, seconds in probes) < 1.0, probes
        assert {status for _, status, _ in probes} == {200}, probes
        assert {r.status_code for r, _ in refused} == {503}, {r.text for r, _ in refused}
        assert max(seconds for _, seconds in refused) < 2 + 0.5 + 3, sorted(seconds for _, seconds in refused)[-5:]
        details = {r.json()["detail"] for r, _ in refused}
        assert any("TRIAGE_DATABASE_WAIT" in d for d in details) and all(str(loop) not in d for d in details), details
        assert flag("After the lock", "10.0.0.1")[0].status_code == 201

        late = [flag(f"One too many {i}", "10.0.0.1") for i in range(5)]  # 10.0.0.1 flagged 2 in this minute
        assert {r.status_code for r, _ in late} == {429} and max(seconds for _, seconds in late) < 0.5, late

        for leftover in loop.glob("review.sqlite3*"):
            leftover.unlink()
        gone = [flag(f"After the file went {i}", f"10.2.{i}.1")[0] for i in range(3)]
        listed = requests.get(f"{server.url}/cases", params={"state": "pending"}, timeout=60)
        for said in [*gone, listed]:
            assert said.status_code == 503 and "review.sqlite3 was removed or replaced" in said.json()["detail"], said.text
            assert str(loop) not in said.text
        assert not database.exists()  # nothing was written, to the old file or a new one
    finally:
        server.stop()
