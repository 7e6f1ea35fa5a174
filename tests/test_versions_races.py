"""Promote and rollback at once, from real processes started together (each runs `python -m loop`'s main once every
process is ready): none is lost, and what they leave is what some serial order of them gives, each command printing
the state it produced. The versions are made in seconds (conftest.fake_version): a build plays no part here."""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import fake_version

import model
from building import files, versions

pytestmark = pytest.mark.shapeless  # the versions' lock and record, whatever the pipeline

ROUNDS = 30
WORKER = """
import contextlib, io, json, os, sys, time
from loop import commands
folder, me, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
for r in range(rounds):
    open(os.path.join(folder, f"ready-{me}-{r}"), "w").close()
    while not os.path.exists(os.path.join(folder, f"go-{r}")):
        time.sleep(0.0002)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = commands.main(sys.argv[4:])
        except SystemExit as exit:  # what `python -m loop` exits with: a code, or a message and 1
            code = exit.code if isinstance(exit.code, int) else print(exit.code, file=sys.stderr) or 1
    print(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue()}), flush=True)
    open(os.path.join(folder, f"done-{me}-{r}"), "w").close()
"""


def together(folder: Path, commands: list[list[str]], rounds: int, before, after) -> list[tuple[list[dict], Any]]:
    """Each of `commands` run by `python -m loop`'s main in a process of its own, `rounds` times: every round, once all
    are ready, `before()` sets the scene and all are let go at the same moment; once all are done, `after()` looks.
    Per round: each command's exit code, output and error output, and what `after()` saw."""
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(folder), str(i), str(rounds), *command], cwd=model.ROOT, stdout=subprocess.PIPE, text=True
        )
        for i, command in enumerate(commands)
    ]
    seen = []
    try:
        for r in range(rounds):
            for step in ("ready", "done"):
                until = time.monotonic() + 60
                for i, worker in enumerate(workers):
                    while not (folder / f"{step}-{i}-{r}").exists():
                        assert worker.poll() is None and time.monotonic() < until, f"worker {i} stopped or hung in round {r}"
                        time.sleep(0.001)
                if step == "ready":
                    before()
                    (folder / f"go-{r}").touch()
            seen.append(after())
        said = [[json.loads(line) for line in worker.communicate(timeout=60)[0].splitlines()] for worker in workers]
        assert all(w.returncode == 0 for w in workers)
        return [([said[i][r] for i in range(len(commands))], seen[r]) for r in range(rounds)]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()


def then(state: dict, command: list[str]) -> dict:
    """What `command` (promote --force NAME, or rollback) makes of `state`."""
    if command[0] == "promote":
        return {"served": command[1], "history": [*state["history"], state["served"] or ""]}
    *history, previous = state["history"]
    return {"served": previous or None, "history": history}


def serial_order(start: dict, done: list[tuple[list[str], dict]], final: dict) -> list | None:
    """An order of the commands `done` (each with the state it printed) in which, run one after another from `start`,
    each produces the state it printed and the last leaves `final`; None when there is none."""
    if not done:
        return [] if start == final else None
    for i, (command, printed) in enumerate(done):
        if then(start, command) == printed:
            rest = serial_order(printed, done[:i] + done[i + 1 :], final)
            if rest is not None:
                return [command, *rest]
    return None


def test_promotions_and_rollbacks_at_once_lose_nothing(loop):
    kept = [fake_version(loop / "versions", f"weights {i}".encode()) for i in range(5)]
    for name in kept[:3]:
        versions.promote(name, force=True)
    start = versions.state()  # kept[2] served, 3 to roll back through: the rollbacks below never run out
    assert start == {"served": kept[2], "history": ["", kept[0], kept[1]]}
    commands = [
        ["promote", kept[3], "--force"],
        ["promote", kept[4], "--force"],
        ["promote", kept[0], "--force"],
        ["rollback"],
        ["rollback"],
    ]
    every = together(loop, commands, ROUNDS, lambda: files.write_atomic(versions.served_file(), json.dumps(start)), versions.state)
    for done, final in every:
        for command, d in zip(commands, done, strict=True):
            assert d["code"] == 0, (command, d["err"])
        printed = [(command[:2], json.loads(d["out"].splitlines()[-1])) for command, d in zip(commands, done, strict=True)]
        assert len(final["history"]) == len(start["history"]) + 3 - 2, (final, printed)  # no promotion, no rollback lost
        assert serial_order(start, printed, final) is not None, f"no serial order gives what they printed and left: {printed}, {final}"
    switches = (loop / "versions" / "switches.log").read_text().splitlines()
    assert len(switches) == 3 + ROUNDS * len(commands)  # the log of every switch only grows


@pytest.mark.parametrize("contenders", [2, 3])
def test_only_one_of_two_gated_promotions_at_once_wins(loop, contenders):
    """Two versions, each gated against artifacts/: promoted at once, one is served and the other refused (its gate was
    against what is served no longer), every round."""
    kept = [fake_version(loop / "versions", f"weights {i}".encode()) for i in range(2)]
    for name in kept:
        record = {"candidate": name, "passed": True, "against": "artifacts", "sha256": versions.sealed(loop / "versions" / name)}
        (loop / "versions" / name / "gate.json").write_text(json.dumps(record))
    commands = [["promote", kept[i % 2]] for i in range(contenders)]
    for done, final in together(loop, commands, ROUNDS, lambda: versions.served_file().unlink(missing_ok=True), versions.state):
        won = [c for c, d in zip(commands, done, strict=True) if d["code"] == 0]
        assert len(won) == 1, done
        assert all("did not pass its gate against what is served now" in d["err"] for d in done if d["code"] != 0), done
        assert final == {"served": won[0][1], "history": [""]}
