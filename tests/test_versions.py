"""Closing the loop (building/versions.py, builder.build_candidate, loop/gate.py): a flagged case trains a candidate, the gate judges
it against the served version, promote serves it, rollback undoes it; a candidate trained on broken labels fails.
Inputs and expected answers come from the pipeline's contract and its evaluation set (conftest's helpers), so these run
on a fork's pipeline too; what the worked example's candidates learn: tests/example/test_triage_versions.py."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import (
    Server,
    example_input,
    expected_cells,
    expected_matching,
    expected_not_matching,
    fake_version,
    free_port,
    label_values,
    labelled_rows,
    text_field,
    write_rows,
)

import model
from building import contract, versions
from building.files import sha256_file
from loop import edge_cases, review

ROOT = model.ROOT


def cli(*args: str) -> subprocess.CompletedProcess:
    package = "building" if args[0] in ("build", "eval") else "loop"  # python -m building build|eval, python -m loop ...
    return subprocess.run([sys.executable, "-m", package, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def candidate() -> str:
    done = cli("candidate")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)["version"]


def answered(one: dict) -> dict:
    """What the served pipeline (artifacts/, in this process) answers, as JSON, without the trace."""
    return contract.run(one).model_dump(mode="json", exclude={"trace"})


def judged(answer: dict) -> dict:
    """What a candidate learns shows in: the label and its probability (the whole answer where the pipeline declares
    neither). Not the rest: the order of ties, say, may differ from one process to the next."""
    fields = [f for f in (contract.label(), contract.probability()) if f] or [f for f in answer if f != "trace"]
    return {f: answer[f] for f in fields}


def close(a, b) -> bool:
    """Two answers (JSON) alike, numbers to 0.001 (two processes may sum floats in another order)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return abs(a - b) <= 1e-3
    return a == b


def misanswered(n: int) -> list[dict]:
    """Up to `n` cases the served pipeline gets wrong: rows of the evaluation set with their right answer; the
    example with a wrong one where it gets every row right."""
    rows = labelled_rows()
    answers = model.run_batch([r["input"] for r in rows])
    wrong = [
        {"ticket": r["input"], "expected": r["expected"]}
        for r, a in zip(rows, answers, strict=True)
        if not contract.matches(model.Expected.model_validate(r["expected"]), a)
    ]
    return wrong[:n] or [{"ticket": example_input(), "expected": expected_not_matching(answered(example_input()))}]


def test_a_version_name_is_never_a_path(loop):
    for bad in ("../artifacts", "/etc", "", "20261128-234501-3fa2c1/.."):
        with pytest.raises(versions.VersionError, match="not a version name"):
            versions.folder(bad)
    with pytest.raises(versions.VersionError, match="nothing to roll back to"):
        versions.rollback()
    (loop / "versions").mkdir(exist_ok=True)  # the lock of the refused rollback made it
    (loop / "versions" / "served.json").write_text("{torn")
    with pytest.raises(versions.VersionError, match="cannot be read"):
        versions.state()


def test_a_training_case_never_counts_as_fixed(loop):
    """Not even one the pipeline gets right (a regression case would be fixed)."""
    one = example_input()
    ((case, _),) = edge_cases.save_cases([{"ticket": one, "expected": expected_matching(answered(one)), "train": True}])
    (result,) = [r for r in edge_cases.check_cases() if r["id"] == case.id]
    assert result["verdict"] == "training" and edge_cases.verdict_counts([result])["training"] == 1
    assert edge_cases.load_cases()[-1].train  # kept in the suite file, read back


def test_cases_fix_refuses_a_case_that_still_fails(loop):
    one = example_input()
    ((case, _),) = edge_cases.save_cases([{"ticket": one, "expected": expected_not_matching(answered(one))}])
    assert case.status == "open"
    done = cli("cases", "fix", case.id)
    assert done.returncode == 1 and f"still failing {case.id}" in done.stderr and "nothing marked" in done.stderr
    assert edge_cases.load_cases()[-1].status == "open"


@pytest.mark.parametrize("action", ["fix", "reopen", "train", "accept", "reject"])
def test_a_case_command_names_an_unknown_or_missing_id(loop, action):
    for ids, said in ((["99999"], "99999"), ([], "give the ids")):
        done = cli("cases", action, *ids)
        assert done.returncode == 1 and said in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert action in ("accept", "reject") or "-m loop cases check --all lists them" in done.stderr, done.stderr


def test_flag_train_gate_promote_serve_roll_back(loop):
    cases = misanswered(2)  # what the served pipeline gets wrong, with the right answer
    flagged = [c for c, _ in review.flag(cases, client="owner")]
    ids = [c.id for c in flagged]
    done = cli("cases", "accept", *ids, "--train", "--by", "ana")
    assert done.returncode == 0, done.stderr[-2000:]
    assert versions.listing() == []  # nothing built yet

    version = candidate()
    assert json.loads((loop / "versions" / version / "manifest.json").read_text())["training_cases"] == sorted(ids)
    assert versions.state()["served"] is None  # building served nothing new
    refused = cli("promote", version)
    assert refused.returncode == 1 and "has not been through the gate" in refused.stderr
    gated = cli("gate", version)
    assert gated.returncode == 0 and "passes the gate against artifacts" in gated.stdout, gated.stdout + gated.stderr
    verdict = json.loads((loop / "versions" / version / "gate.json").read_text())
    assert {c["id"] for c in verdict["cases"]["training_learned"]} <= set(ids) and verdict["cases"]["would_break"] == []
    assert "Training cases it learned" in (loop / "versions" / version / "gate.html").read_text()
    assert verdict["sides"]["candidate"]["version"] == version and verdict["sides"]["served"]["version"] is None  # artifacts/
    assert verdict["sides"]["served"]["data"] == verdict["sides"]["candidate"]["data"]  # the same data/, and the cases

    from loop import gate

    probe = flagged[0].ticket.model_dump(mode="json")  # as the suite keeps it (cleaned)
    before, learned = judged(answered(probe)), judged(gate.one_ticket(version, probe).model_dump(mode="json"))
    assert not close(before, learned), "the candidate answers as the served version: nothing to tell them apart by"
    compare_on_the_app(version, probe, before, learned)
    assert cli("promote", version).returncode == 0 and versions.state()["served"] == version

    one = write_rows(loop / "one.csv", [{**probe, **expected_cells(flagged[0].expected.model_dump(mode="json", exclude_none=True))}])
    done = subprocess.run([sys.executable, "batch.py", one, "-o", loop / "one-report.csv", "--quiet"], cwd=ROOT, timeout=300)
    assert done.returncode == 0 and json.loads((loop / "one-report.json").read_text())["version"] == version  # reports name it

    server = Server()
    try:
        info = requests.get(f"{server.url}/info", timeout=30).json()
        assert info["model"]["version"] == version
        answer = requests.post(f"{server.url}/predict", json=probe, timeout=60).json()
        assert close(judged(answer), learned), (answer, learned)  # the candidate's answer, served
        assert f'triage_version_info{{version="{version}"}} 1.0' in requests.get(f"{server.url}/metrics", timeout=30).text
    finally:
        server.stop()

    assert cli("rollback").returncode == 0 and versions.state()["served"] is None
    server = Server()
    try:
        assert requests.get(f"{server.url}/info", timeout=30).json()["model"]["version"] == "artifacts"
        answer = requests.post(f"{server.url}/predict", json=probe, timeout=60).json()
        assert close(judged(answer), before), (answer, before)  # artifacts/ answers again
    finally:
        server.stop()
    assert (loop / "versions" / version / "manifest.json").exists()  # kept, to promote again


def test_a_candidate_trained_on_broken_labels_fails_the_gate_and_cannot_be_promoted(loop):
    """Every row of the evaluation set accepted as a training case with its label moved one value on, four times over
    (a number added to its text: four cases), so that they outweigh what data/ teaches whatever its size."""
    label, values, field = contract.label(), label_values(), text_field()
    (name, _), *_ = contract.labelled_sets().items()
    wrong = [
        {
            "ticket": {**r["input"], field: f"{r['input'][field]} {i}"},
            "expected": {label: values[(values.index(r["expected"][label]) + 1) % len(values)]},
            "train": True,
        }
        for r in labelled_rows()
        for i in range(4)
    ]
    edge_cases.save_cases(wrong)
    version = candidate()
    gated = cli("gate", version)
    assert gated.returncode == 1 and f"FAILS {name}: accuracy down" in gated.stderr and "(95% CI -0." in gated.stderr, gated.stderr
    assert "McNemar p = " in gated.stderr and "fails the gate" in gated.stdout
    refused = cli("promote", version)
    assert refused.returncode == 1 and "did not pass its gate" in refused.stderr
    assert versions.state()["served"] is None and os.path.exists(loop / "versions" / version / "gate.html")


def compare_on_the_app(version: str, probe: dict, served: dict, learned: dict) -> None:
    """The Compare tab puts the served version (A) and the candidate (B) side by side on one input."""
    from gradio_client import Client

    from app import ui

    demo = ui.build()
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        headline, _, _, a, b = client.submit(**probe, b_version=version, api_name="/compare").result(timeout=120)
        assert f"between A (served) and B (version {version})" in headline
        assert close(judged(a), served) and close(judged(b), learned)
        *_, table, both = client.submit("all", "all", version, api_name="/edge_cases_on_both").result(timeout=180)
        assert both["headers"] == [text_field(), "expected", "verdict served", f"verdict on {version}", f"answer on {version}", "id"]
        training = [row for row in both["data"] if row[0] == probe[text_field()]]
        assert [row[2:4] for row in training] == [["training", "training"]] and len(both["data"]) == len(table["data"])
        said, changed, *_ = client.submit(version, api_name="/gate_report").result(timeout=60)  # its gate.json
        assert f"**{version} passes the gate** against artifacts" in said and "95% CI" in said and "McNemar p" in said
        assert changed["headers"] == ["set", "row", text_field(), "expected", "served", "candidate", "change"]
        with pytest.raises(Exception, match="not a version name"):  # a path is never run as a version
            client.submit(**probe, b_version="../artifacts", api_name="/compare").result(timeout=120)
    finally:
        demo.close()


def test_versions_live_at_the_project_root(monkeypatch):
    """Where README, the configuration table and the Snakefile say, ignored by git; TRIAGE_VERSIONS_DIR moves it."""
    monkeypatch.delenv("TRIAGE_VERSIONS_DIR")
    assert versions.versions_dir() == Path(__file__).resolve().parent.parent / "versions" == ROOT / "versions"
    assert "versions/" in (ROOT / ".gitignore").read_text().split()
    monkeypatch.setenv("TRIAGE_VERSIONS_DIR", "/somewhere/else")
    assert versions.served_file() == Path("/somewhere/else/served.json")


TAMPERED = {
    "a history that is no name": '{"served": null, "history": ["abc"]}',
    "a history that is a path": '{"served": null, "history": ["../../../tmp"]}',
    "a history naming no version kept": '{"served": null, "history": ["20261128-234501-3fa2c1"]}',
    "a history that is no list": '{"served": null, "history": "abc"}',
    "a served path": '{"served": "../artifacts", "history": []}',
    "no history": '{"served": null}',
    "a list": '["20261128-234501-3fa2c1"]',
    "a number": "3",
    "torn": '{"served": nu',
}


@pytest.mark.parametrize("written", list(TAMPERED.values()), ids=list(TAMPERED))
def test_a_tampered_served_json_is_refused_in_one_line(loop, written):
    """Every command that reads which version is served refuses it, naming the file, and leaves it as it was."""
    kept = fake_version(loop / "versions")
    served = loop / "versions" / "served.json"
    served.write_text(written)
    with pytest.raises(versions.VersionError, match=re.escape("served.json")):
        versions.promote(kept, force=True)
    for command in (["rollback"], ["versions"]):
        done = cli(*command)
        assert done.returncode == 1 and done.stderr.count("\n") == 1 and "served.json" in done.stderr, (command, done.stderr)
        assert "Traceback" not in done.stderr and served.read_text() == written


def test_an_unreadable_served_json_is_named(loop):
    (loop / "versions" / "served.json").mkdir(parents=True)  # what no one can read as a file
    done = cli("rollback")
    assert done.returncode == 1 and "served.json cannot be read" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_lock_that_cannot_be_taken_is_named(loop):
    (loop / "versions" / ".served.json.lock").mkdir(parents=True)  # a folder where promote and rollback lock
    with pytest.raises(versions.VersionError, match=re.escape("served.json cannot be locked")):
        versions.rollback()


def test_a_tampered_served_json_leaves_the_queue_working(loop):
    """The review queue needs no served version: it is listed whatever served.json holds; the suite's check, which runs
    the served pipeline, is refused in one line."""
    (loop / "versions").mkdir()
    (loop / "versions" / "served.json").write_text(TAMPERED["a list"])
    listed = cli("cases", "queue")
    assert listed.returncode == 0 and '"pending": 0' in listed.stdout, listed.stderr
    checked = cli("cases", "check")
    assert checked.returncode == 1 and "served.json" in checked.stderr and "Traceback" not in checked.stderr, checked.stderr


def test_a_served_version_whose_folder_is_gone_is_named_and_rolled_back(loop):
    gone = fake_version(loop / "versions")
    versions.promote(gone, force=True)
    shutil.rmtree(loop / "versions" / gone)
    with pytest.raises(versions.VersionError, match=f"version {gone} is gone .*: python -m loop rollback"):
        versions.present(versions.served_dir())
    done = cli("rollback")
    assert done.returncode == 0 and json.loads(done.stdout.splitlines()[-1]) == {"served": None, "history": []}, done.stderr


def gated(monkeypatch, version: str) -> dict:
    """The gate's verdict on `version`, judged by the real gate.run on answers made up for the purpose (both sides alike)."""
    from loop import gate

    monkeypatch.setattr(gate, "side", lambda folder, batches, sets=True: {"about": {}, "sets": {}, "cases": []})
    return gate.run(version)


def test_promote_serves_only_what_the_gate_judged(loop, monkeypatch):
    version = fake_version(loop / "versions")
    folder = loop / "versions" / version
    verdict = gated(monkeypatch, version)
    assert verdict["passed"] and verdict["sha256"] == {name: sha256_file(folder / name) for name in ("manifest.json", "weights.bin")}
    as_judged = {name: (folder / name).read_bytes() for name in ("manifest.json", "weights.bin", "gate.json")}

    def restored():
        for name, content in as_judged.items():
            (folder / name).write_bytes(content)

    # a file changed after the gate, the manifest resealed to match: intact by its manifest, not what the gate judged
    (folder / "weights.bin").write_bytes(b"other weights")
    manifest = json.loads(as_judged["manifest.json"])
    manifest["artifacts"]["weights.bin"] = {"bytes": 13, "sha256": sha256_file(folder / "weights.bin")}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    done = cli("promote", version)
    assert done.returncode == 1 and f"{folder / 'weights.bin'} and 1 more are not what the gate judged" in done.stderr, done.stderr
    assert f"({folder / 'gate.json'})" in done.stderr and "Traceback" not in done.stderr
    restored()
    (folder / "extra.bin").write_bytes(b"read by no manifest")
    with pytest.raises(versions.VersionError, match=re.escape("extra.bin is not what the gate judged")):
        versions.promote(version)
    (folder / "extra.bin").unlink()
    # a gate.json written by hand: without the hashes, or with hashes that are not these files'
    hand_written = {"candidate": version, "passed": True, "against": "artifacts"}
    (folder / "gate.json").write_text(json.dumps(hand_written))
    with pytest.raises(versions.VersionError, match=re.escape("gate.json records no SHA-256 of the files the gate judged")):
        versions.promote(version)
    (folder / "gate.json").write_text(json.dumps(hand_written | {"sha256": {"manifest.json": "0" * 64, "weights.bin": "0" * 64}}))
    with pytest.raises(versions.VersionError, match=re.escape("weights.bin and 1 more are not what the gate judged")):
        versions.promote(version)
    assert versions.state()["served"] is None
    # --force skips the gate, never the manifest
    (folder / "weights.bin").write_bytes(b"weights, changed")
    with pytest.raises(versions.VersionError, match=re.escape("weights.bin has 16 bytes, the manifest says 7")):
        versions.promote(version, force=True)
    restored()
    (folder / "gate.json").write_text(json.dumps(hand_written))
    assert versions.promote(version, force=True)["served"] == version
    versions.rollback()
    restored()
    done = cli("promote", version)  # untouched since its gate
    assert done.returncode == 0 and json.loads(done.stdout.splitlines()[-1]) == {"served": version, "history": [""]}, done.stderr


def test_the_gate_refuses_a_candidate_changed_while_judged(loop, monkeypatch):
    from loop import gate

    version = fake_version(loop / "versions")
    folder = loop / "versions" / version

    def judged_while_changed(side_folder, batches, sets=True):
        if side_folder == folder:
            (folder / "weights.bin").write_bytes(b"changed under the gate")
        return {"about": {}, "sets": {}, "cases": []}

    monkeypatch.setattr(gate, "side", judged_while_changed)
    with pytest.raises(versions.VersionError, match="changed while the gate judged it"):
        gate.run(version)
    assert not (folder / "gate.json").exists()


def test_a_server_serves_the_version_it_started_with_in_every_process(loop):
    """A promotion takes effect at the next start. Inference workers are spawned (they import anew): one that started,
    or restarted after a crash, once a promotion was made served the new version while /info and /metrics named the
    old. Here a candidate that answers otherwise is promoted while the server starts (once its main process has chosen
    what to serve, before the workers load), and the worker is then killed: every answer stays the started version's."""
    import threading
    import time

    import psutil

    from building import builder

    label, values, field = contract.label(), label_values(), text_field()
    moved = {value: values[(i + 1) % len(values)] for i, value in enumerate(values)}
    broken = [  # the evaluation set with every label moved on, four times over: a candidate that answers otherwise
        {"ticket": {**r["input"], field: f"{r['input'][field]} {i}"}, "expected": {label: moved[r["expected"][label]]}, "train": True}
        for r in labelled_rows()
        for i in range(4)
    ]
    edge_cases.save_cases(broken)
    version = candidate()
    probes = [r["input"] for r in labelled_rows()]
    started = [judged(a.model_dump(mode="json")) for a in model.run_batch(probes)]  # artifacts/, in this process
    before = model._resources
    model.install(builder.load_version(versions.folder(version)))
    try:
        promoted = [judged(a.model_dump(mode="json")) for a in model.run_batch(probes)]
    finally:
        model.install(before)
    differ = [i for i in range(len(probes)) if not close(started[i], promoted[i])][:16]
    assert differ, "the candidate answers as artifacts/ does: nothing to tell them apart by"

    log = loop / "server.log"
    log.touch()

    def promote_once_starting() -> None:  # the main process has resolved what it serves; its workers are still to come
        deadline = time.time() + 120
        while "starting:" not in log.read_text() and time.time() < deadline:
            time.sleep(0.02)
        versions.promote(version, force=True)

    promoting = threading.Thread(target=promote_once_starting)
    promoting.start()
    server = Server(log=log, wait_for_ui=False)
    promoting.join()
    try:
        assert versions.state()["served"] == version
        for moment in ("started", "restarted"):
            assert requests.get(f"{server.url}/info", timeout=30).json()["model"]["version"] == "artifacts", moment
            assert 'triage_version_info{version="artifacts"} 1.0' in requests.get(f"{server.url}/metrics", timeout=30).text
            for i in differ:
                answer = requests.post(f"{server.url}/predict", json=probes[i], timeout=60)
                assert answer.status_code == 200, (moment, answer.status_code, answer.text)
                assert close(judged(answer.json()), started[i]), (moment, answer.json(), started[i], promoted[i])
            if moment == "started":
                (worker,) = [p for p in server.tree() if "spawn_main" in " ".join(p.cmdline())]
                worker.kill()
                psutil.wait_procs([worker], timeout=10)
                for status, within in ((503, 10), (200, 120)):  # /health sees it gone, then its replacement ready
                    deadline = time.time() + within
                    while requests.get(f"{server.url}/health", timeout=10).status_code != status and time.time() < deadline:
                        time.sleep(0.1)
                (restarted,) = [p for p in server.tree() if "spawn_main" in " ".join(p.cmdline())]
                assert restarted.pid != worker.pid and requests.get(f"{server.url}/health", timeout=10).status_code == 200
    finally:
        server.stop()
    assert "Traceback" not in log.read_text()


def test_a_server_whose_version_is_gone_stops_in_one_line(loop):
    """served.json names a version whose folder was removed: the server stops at once, naming it and the way back."""
    from conftest import fake_version

    gone = fake_version(loop / "versions")
    versions.promote(gone, force=True)
    shutil.rmtree(loop / "versions" / gone)
    command = [sys.executable, "app/main.py", "--host", "127.0.0.1", "--port", str(free_port())]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    ran = Path(sys.executable)  # the advice names it: pasted in a shell without the venv, it still works
    python = ran.relative_to(ROOT) if ran.is_relative_to(ROOT) else ran
    assert last.startswith(f"cannot start: version {gone}") and f"{python} -m loop rollback" in last, done.stderr[-3000:]


def served_as(loop, name: str) -> None:
    (loop / "versions" / "served.json").write_text(json.dumps({"served": name, "history": [""]}))


def start_refused(loop) -> str:
    """The server's start with what versions/ holds now: it must stop at once in one line; returns that line."""
    command = [sys.executable, "app/main.py", "--no-ui", "--host", "127.0.0.1", "--port", str(free_port())]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stderr.strip().splitlines()[-1]


def resealed(folder: Path, name: str, payload: bytes) -> None:
    """`name` in a version's folder replaced by `payload`, and the manifest edited to match (what a careful tamperer does)."""
    (folder / name).write_bytes(payload)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artifacts"][name] = {"bytes": len(payload), "sha256": sha256_file(folder / name)}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_served_version_changed_after_its_gate_is_not_served(loop, monkeypatch):
    """Promoted as the gate judged it, then a file changed and the manifest resealed: the server refuses it at its start
    in one line naming the file, and `versions` says so; so does a changed file the manifest no longer matches."""
    version = fake_version(loop / "versions")
    gated(monkeypatch, version)
    versions.promote(version)
    folder = loop / "versions" / version
    resealed(folder, "weights.bin", b"other weights")
    line = start_refused(loop)
    assert line.startswith(f"cannot start: version {version} cannot be served") and "weights.bin" in line, line
    assert "weights.bin is not what the gate judged" in cli("versions").stdout
    (folder / "weights.bin").write_bytes(b"different again")
    assert "weights.bin" in start_refused(loop)


@pytest.mark.parametrize("how", ["a folder copied under a new name", "a folder that links to another", "a file that links out"])
def test_a_version_is_its_own_files(loop, monkeypatch, how):
    """A version's folder holds its own files, as built under its name: a copy of another version under a new name
    (its manifest names the other), a symbolic link to another version's folder, or a file linking outside, is
    neither promoted nor served."""
    original = fake_version(loop / "versions")
    name = "20990101-000000-abcdef"
    if how == "a folder copied under a new name":
        shutil.copytree(loop / "versions" / original, loop / "versions" / name)
        problem = "manifest.json is version"
    elif how == "a folder that links to another":
        (loop / "versions" / name).symlink_to(loop / "versions" / original)
        problem = "is a symbolic link"
    else:
        shutil.copytree(loop / "versions" / original, loop / "versions" / name)
        manifest = json.loads((loop / "versions" / name / "manifest.json").read_text())
        (loop / "versions" / name / "manifest.json").write_text(json.dumps({**manifest, "version": name}))
        outside = loop / "outside.bin"
        shutil.copy(loop / "versions" / name / "weights.bin", outside)
        (loop / "versions" / name / "weights.bin").unlink()
        (loop / "versions" / name / "weights.bin").symlink_to(outside)
        problem = "is a symbolic link"
    with pytest.raises(versions.VersionError, match=problem):
        versions.promote(name, force=True)
    served_as(loop, name)
    line = start_refused(loop)
    assert line.startswith(f"cannot start: version {name} cannot be served") and problem in line, line


@pytest.mark.parametrize("kind", ["a link to a good file", "a fifo", "a link to /dev/zero"])
def test_a_served_json_that_is_no_plain_file_is_refused_at_once(loop, kind):
    """Never followed, never waited on, never read without end: one line naming the file, at once."""
    kept = fake_version(loop / "versions")
    served = loop / "versions" / "served.json"
    if kind == "a fifo":
        os.mkfifo(served)
    else:
        good = loop / "good.json"
        good.write_text(json.dumps({"served": kept, "history": [""]}))
        served.symlink_to("/dev/zero" if "zero" in kind else good)
    done = subprocess.run([sys.executable, "-m", "loop", "versions"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "served.json" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_the_switch_log_is_never_written_through_a_link(loop):
    """versions/switches.log as a symbolic link to a file elsewhere: promote refuses before switching, the file is untouched."""
    kept = fake_version(loop / "versions")
    victim = loop / "victim.txt"
    victim.write_text("mine\n")
    (loop / "versions" / "switches.log").symlink_to(victim)
    with pytest.raises(versions.VersionError, match=re.escape("switches.log cannot record a switch")):
        versions.promote(kept, force=True)
    assert victim.read_text() == "mine\n" and versions.state()["served"] is None


def test_a_printed_command_names_the_interpreter_that_ran(loop):
    """A hint can be pasted as it is, in a shell without the venv: `undo:` and a refusal's advice name the Python that
    ran the command (relative to the working folder when inside it), never a bare `python`."""
    python = str(Path(sys.executable).relative_to(ROOT)) if Path(sys.executable).is_relative_to(ROOT) else sys.executable
    done = cli("promote", fake_version(loop / "versions"), "--force")
    assert done.returncode == 0 and f"undo: {python} -m loop rollback" in done.stdout, done.stdout + done.stderr
    refused = cli("gate", "not-a-version")
    assert refused.returncode == 1 and f"see {python} -m loop versions" in refused.stderr, refused.stderr
