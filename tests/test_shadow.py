"""Shadow candidates (app/shadow.py): a server answers from the served version exactly as before, and a sample of its
requests also runs on the candidate in shadow, in a process of its own; each pair is kept in the review database.
A candidate that is stopped or killed under load changes no served answer. Real processes, real HTTP.

The worked example's: the candidate is the served artifacts with the classifier's rows reversed (it answers, wrongly)."""

import json
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import requests
from conftest import ROOT, Server
from gradio_client import Client

import model
from building import builder, contract, files, versions

TEXTS = list(pd.read_csv(ROOT / "data" / "eval.csv", dtype=str).text[:30])


def version_of_artifacts(versions_dir, suffix: str, change) -> str:
    """A version kept as built: the served artifacts with `change(folder)` made to them (it returns the files it
    changed), its manifest resealed."""
    name = time.strftime("%Y%m%d-%H%M%S") + suffix
    folder = versions_dir / name
    shutil.copytree(builder.ARTIFACTS_DIR, folder, ignore=shutil.ignore_patterns(".*"))
    manifest = json.loads((folder / "manifest.json").read_text())
    for path in change(folder):
        manifest["artifacts"][path.name] = {"bytes": path.stat().st_size, "sha256": files.sha256_file(path)}
    (folder / "manifest.json").write_text(json.dumps({**manifest, "version": name}, indent=2))
    return name


def wrong_version(versions_dir) -> str:
    """The classifier's rows reversed: it answers, wrongly."""

    def reverse(folder):
        with np.load(folder / "classifier.npz") as saved:
            arrays = dict(saved)
        arrays["coef"] = arrays["coef"][::-1].copy()
        with open(folder / "classifier.npz", "wb") as f:
            np.savez(f, **arrays)
        return [folder / "classifier.npz"]

    return version_of_artifacts(versions_dir, "-5ad0c0", reverse)


def recategorized_version(versions_dir) -> str:
    """The help centre's articles filed under one category: the same categories answered, no automatic reply where the
    served version gives one (a person must answer)."""

    def refile(folder):
        articles = json.loads((folder / "articles.json").read_text())
        (folder / "articles.json").write_text(json.dumps([{**a, "category": "feedback"} for a in articles]))
        return [folder / "articles.json"]

    return version_of_artifacts(versions_dir, "-a7e1c1", refile)


@pytest.fixture(scope="module")
def shadowed(tmp_path_factory):
    """A server whose every request is shadowed (TRIAGE_SHADOW_RATE 1) on a wrong candidate, its queue small."""
    folder = tmp_path_factory.mktemp("shadow")
    env = {"TRIAGE_VERSIONS_DIR": str(folder / "versions"), "TRIAGE_DATABASE_URL": f"sqlite:///{folder / 'review.sqlite3'}"}
    builder.ready()
    name = wrong_version(folder / "versions")
    done = cli(env, "shadow", name)
    assert done.returncode == 0 and f"undo: {python()} -m loop shadow --stop" in done.stdout, done.stdout + done.stderr
    server = Server(log=folder / "server.log", TRIAGE_SHADOW_RATE="1", TRIAGE_SHADOW_QUEUE="4", **env)
    server.candidate, server.env = name, env
    yield server
    server.stop()


def cli(env: dict, *arguments: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loop", *arguments], cwd=ROOT, env={**__import__("os").environ, **env},
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def python() -> str:
    ran = __import__("pathlib").Path(sys.executable)
    return str(ran.relative_to(ROOT) if ran.is_relative_to(ROOT) else ran)


def predict(server, text: str) -> requests.Response:
    return requests.post(f"{server.url}/predict", json={"text": text}, headers=getattr(server, "headers", {}), timeout=60)


def record(server, at_least: int, within: float = 90) -> dict:
    """The candidate's live record once it holds `at_least` requests (read as `loop shadow report` does)."""
    deadline = time.time() + within
    while True:
        done = cli(server.env, "shadow", "report", server.candidate)
        said = json.loads(done.stdout)
        if said["requests"] >= at_least or time.time() > deadline:
            return said
        time.sleep(0.5)


def shadow_process(server) -> psutil.Process:
    (found,) = [p for p in psutil.Process(server.process.pid).children() if p.nice() == 10]  # the candidate's, at nice 10
    return found


def metric(server, name: str, having: str = "") -> float:
    """The sum of /metrics' samples of `name` whose line holds `having` (a label, say)."""
    text = requests.get(f"{server.url}/metrics", headers=getattr(server, "headers", {}), timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith((name + " ", name + "{")) and having in line)


def test_every_request_is_answered_by_the_served_version_and_kept_beside_the_candidates(shadowed):
    answers = [predict(shadowed, t) for t in TEXTS]
    assert [a.status_code for a in answers] == [200] * len(TEXTS)
    assert [a.json()["category"] for a in answers] == [model.run(t).category.value for t in TEXTS]  # the served version's
    said = record(shadowed, len(TEXTS) - metric(shadowed, "triage_shadow_dropped_total"))
    assert said["requests"] == len(TEXTS) - metric(shadowed, "triage_shadow_dropped_total") > 0  # each kept, or counted dropped
    assert said["candidate"] == shadowed.candidate
    assert 0 <= said["agreement"]["category"] < 1 and said["agreement"]["team"] < 1  # it answers, wrongly
    wrong = next(d for d in said["disagreements"] if "category" in d["fields"])
    assert wrong["served_answer"]["category"] != wrong["candidate_answer"]["category"]
    assert wrong["served"] == "artifacts" and wrong["input"]["text"] in [model.normalize(t)[0] for t in TEXTS]
    info = requests.get(f"{shadowed.url}/info", timeout=10).json()
    assert info["model"]["shadow"] == shadowed.candidate
    assert (
        metric(shadowed, "triage_shadowed_total") == said["requests"] and metric(shadowed, "triage_shadow_fields_total", 'agreed="no"') > 0
    )
    listed = cli(shadowed.env, "versions")
    assert f"in shadow: {shadowed.candidate}" in listed.stdout, listed.stdout + listed.stderr


def test_a_reviewer_judges_a_disagreement_the_gate_counts_it_and_promote_refuses(shadowed):
    said = record(shadowed, 1)
    wrong = next(d for d in said["disagreements"] if "category" in d["fields"] and d["right"] is None)
    app = Client(f"{shadowed.url}/", verbose=False)  # the Edge cases tab's live record, as the page shows it
    headline, table = app.predict(shadowed.candidate, api_name="/live_record")[:2]
    assert shadowed.candidate in headline and " **in shadow: " in headline and wrong["id"] in [row[0] for row in table["data"]]
    done = cli(shadowed.env, "shadow", "judge", str(wrong["id"]), "served", "--by", "ana")
    assert done.returncode == 0 and "waits in the review queue" in done.stdout, done.stdout + done.stderr
    case = done.stdout.split()[1]
    again = cli(shadowed.env, "shadow", "judge", str(wrong["id"]), "candidate", "--by", "bo")
    assert again.returncode == 1 and "was judged by ana" in again.stderr and "nothing changed" in again.stderr
    assert case in cli(shadowed.env, "cases", "queue").stdout  # a case in the queue like any flag
    assert "1 pending" in app.predict("pending", api_name="/review_queue")[0]
    gated = cli(shadowed.env, "gate", shadowed.candidate, timeout=300)
    assert gated.returncode == 1 and "live traffic (1 rows)" in gated.stdout, gated.stdout + gated.stderr  # the reversed classifier fails
    verdict = json.loads((Path(shadowed.env["TRIAGE_VERSIONS_DIR"]) / shadowed.candidate / "gate.json").read_text())
    live = verdict["sets"]["live traffic"]
    assert live["mcnemar"]["broken"] == 1 and live["changed_rows"][0]["row"] == wrong["id"]
    assert verdict["live"]["requests"] >= said["requests"] and verdict["live"]["judged"]["served"] == 1
    refused = cli(shadowed.env, "promote", shadowed.candidate)
    assert refused.returncode == 1 and "gate" in refused.stderr, refused.stdout + refused.stderr


def test_a_stopped_or_killed_candidate_changes_no_served_answer(shadowed):
    candidate = shadow_process(shadowed)
    expected = {t: model.run(t).model_dump(mode="json") for t in TEXTS[:8]}
    candidate.send_signal(signal.SIGSTOP)  # hung: its queue fills, then requests are dropped, counted
    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: predict(shadowed, TEXTS[i % 8]), range(400)))
        assert {a.status_code for a in answers} == {200}
        assert all(a.json()["category"] == expected[TEXTS[i % 8]]["category"] for i, a in enumerate(answers))
        assert metric(shadowed, "triage_shadow_dropped_total") > 0
    finally:
        candidate.send_signal(signal.SIGCONT)
    candidate.kill()  # crashed: every later request is answered, and dropped from the shadow
    psutil.wait_procs([candidate], timeout=10)  # reaped by the main process, which says so
    deadline = time.time() + 10
    while "shadow: the candidate's process ended (exit status -9)" not in shadowed.log.read_text() and time.time() < deadline:
        time.sleep(0.2)
    assert "shadow: the candidate's process ended (exit status -9)" in shadowed.log.read_text()
    dropped = metric(shadowed, "triage_shadow_dropped_total")
    assert [predict(shadowed, t).status_code for t in TEXTS[:20]] == [200] * 20
    assert metric(shadowed, "triage_shadow_dropped_total") >= dropped + 20
    assert requests.get(f"{shadowed.url}/health", timeout=5).status_code == 200


def test_a_candidate_found_right_on_live_traffic_passes_the_gate_and_is_promoted(tmp_path):
    """The whole way: serve, shadow a candidate, send traffic, a reviewer finds the candidate right on a disagreement
    (a person must answer this one), the gate judges it with its live traffic set and passes, promote serves it."""
    env = {"TRIAGE_VERSIONS_DIR": str(tmp_path / "versions"), "TRIAGE_DATABASE_URL": f"sqlite:///{tmp_path / 'r.sqlite3'}"}
    builder.ready()
    name = recategorized_version(tmp_path / "versions")
    assert cli(env, "shadow", name).returncode == 0
    server = Server(log=tmp_path / "server.log", wait_for_ui=False, TRIAGE_SHADOW_RATE="1", **env)
    try:
        answers = [predict(server, t).json() for t in TEXTS[:16]]
        replied = [a for a in answers if not a["needs_human"]]
        assert replied, answers  # the served version replies to some of them automatically
        server.env, server.candidate = env, name
        said = record(server, 16 - metric(server, "triage_shadow_dropped_total"))
        assert said["agreement"]["category"] == 1 and said["agreement"]["needs_human"] < 1
        differing = said["disagreements"][0]
        assert "needs_human" in differing["fields"] and differing["candidate_answer"]["needs_human"]
        judged = cli(env, "shadow", "judge", str(differing["id"]), "candidate", "--by", "ana")
        assert judged.returncode == 0, judged.stdout + judged.stderr
        gated = cli(env, "gate", name, timeout=300)
        assert gated.returncode == 0 and "live traffic (1 rows)" in gated.stdout, gated.stdout + gated.stderr
        verdict = json.loads((tmp_path / "versions" / name / "gate.json").read_text())
        assert verdict["passed"] and verdict["live"]["judged"]["candidate"] == 1
        promoted = cli(env, "promote", name)
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        assert f"served: {name}" in cli(env, "versions").stdout
    finally:
        server.stop()


def test_two_replicas_keep_one_record_on_postgresql_and_a_disagreement_is_judged_once(postgres, tmp_path):
    """Two servers share one PostgreSQL database and one versions folder: the candidate's record holds both replicas'
    pairs, each input masked unless its client was trusted (the second replica has an API key); two reviewers judging
    the same disagreement at once (two processes): one verdict, one case."""
    env = {"TRIAGE_VERSIONS_DIR": str(tmp_path / "versions"), "TRIAGE_DATABASE_URL": postgres.url}
    builder.ready()
    name = wrong_version(tmp_path / "versions")
    assert cli(env, "shadow", name).returncode == 0

    def replica(i: int) -> Server:
        key = {"LIT_SERVER_API_KEY": "sesame"} if i else {}
        started = Server(log=tmp_path / f"replica{i}.log", wait_for_ui=False, TRIAGE_SHADOW_RATE="1", **env, **key)
        started.headers = {"X-API-Key": "sesame"} if i else {}
        return started

    with ThreadPoolExecutor(2) as pool:  # both start at once, as replicas do
        replicas = list(pool.map(replica, range(2)))
    try:
        mailed = [f"{t} Write to jo{i}@example.com" for i, t in enumerate(TEXTS[:12])]
        for replica in replicas:
            assert [predict(replica, t).status_code for t in mailed] == [200] * 12
        dropped = sum(metric(r, "triage_shadow_dropped_total") for r in replicas)
        replicas[0].env, replicas[0].candidate = env, name
        said = record(replicas[0], 24 - dropped)
        assert said["requests"] == 24 - dropped > 12  # both replicas' pairs, in one record
        kept = [d["input"]["text"] for d in json.loads(cli(env, "shadow", "report", name).stdout)["disagreements"]]
        written = {contract.clean_text(t, masked=False) for t in mailed}  # as the pipeline cleans any text, nothing masked
        assert {t in written for t in kept} == {True, False}  # the trusted replica's as written, the other's masked
        assert all("@example.com" not in t for t in kept if t not in written)
        assert sum(metric(r, "triage_shadowed_total") for r in replicas) == said["requests"]
        wrong = next(d for d in said["disagreements"] if "category" in d["fields"])
        command, environment = [sys.executable, "-m", "loop", "shadow", "judge", str(wrong["id"])], {**__import__("os").environ, **env}
        racing = [
            subprocess.Popen([*command, side, "--by", who], cwd=ROOT, env=environment, text=True, stdout=-1, stderr=-1)  # -1: a pipe
            for side, who in (("served", "ana"), ("candidate", "bo"))
        ]
        outcomes = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in racing]
        assert sorted(code for code, _, _ in outcomes) == [0, 1], outcomes
        ((_, won, _),) = [o for o in outcomes if o[0] == 0]
        ((_, _, refused),) = [o for o in outcomes if o[0] == 1]
        assert "waits in the review queue" in won and "nothing changed" in refused
        assert sum(json.loads(cli(env, "shadow", "report", name).stdout)["judged"].values()) == 1
        queue = cli(env, "cases", "queue")
        assert won.split()[1] in queue.stdout and '"pending": 1' in queue.stdout, queue.stdout
        gated = cli(env, "gate", name, timeout=300)  # the verdict, read from PostgreSQL: the gate's live traffic set
        assert gated.returncode == 1 and "live traffic (1 rows)" in gated.stdout, gated.stdout + gated.stderr
    finally:
        for replica in replicas:
            replica.stop()


def test_shadow_is_set_stopped_and_refused_from_the_command_line(tmp_path):
    env = {"TRIAGE_VERSIONS_DIR": str(tmp_path / "versions"), "TRIAGE_DATABASE_URL": f"sqlite:///{tmp_path / 'r.sqlite3'}"}
    builder.ready()
    name = wrong_version(tmp_path / "versions")
    assert cli(env, "shadow", "../../etc").returncode == 1
    assert cli(env, "shadow", name).returncode == 0
    assert json.loads((tmp_path / "versions" / "shadow.json").read_text()) == {"shadow": name}
    assert json.loads(cli(env, "shadow").stdout) == {"shadow": name}
    assert cli(env, "shadow", "--stop").returncode == 0 and not (tmp_path / "versions" / "shadow.json").exists()
    logged = [json.loads(line) for line in (tmp_path / "versions" / "switches.log").read_text().splitlines()]
    assert [line["shadow"] for line in logged] == [name, None] and {line["command"] for line in logged} == {"shadow"}
    (tmp_path / "versions" / "shadow.json").write_text('{"shadow": "../../tmp"}')
    broken = cli(env, "versions")
    assert broken.returncode == 0 and "in shadow: none -- " in broken.stdout and "shadow.json" in broken.stdout
    assert versions.NAME.fullmatch(name)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_database_keeps_the_newest_pairs_and_the_record_counts_each_field(request, tmp_path, monkeypatch, database):
    """review.record_shadow on SQLite and PostgreSQL: the newest TRIAGE_SHADOW_KEEP pairs kept; shadow_record's agreement."""
    from loop import review

    url = request.getfixturevalue("postgres").url if database == "postgresql" else f"sqlite:///{tmp_path / 'r.sqlite3'}"
    monkeypatch.setenv("TRIAGE_DATABASE_URL", url)
    monkeypatch.setenv("TRIAGE_SHADOW_KEEP", "5")
    answer = model.run(TEXTS[0]).model_dump(mode="json")
    pair = {"candidate": "c", "served": "artifacts", "input_json": "{}", "served_json": json.dumps(answer)}
    for i in range(8):  # the last three differ in the category
        differs = "category" if i >= 5 else ""
        review.record_shadow([{**pair, "at": float(i), "candidate_json": json.dumps(answer), "differs": differs}])
    said = review.shadow_record("c")
    assert said["requests"] == 5 and said["agreement"]["category"] == 0.4 and said["agreement"]["team"] == 1.0
    assert [d["at"] for d in said["disagreements"]] == [7.0, 6.0, 5.0] and review.shadow_record("other")["requests"] == 0
