"""batch.py never destroys data: the input is never an output, writes are atomic, one writer at a time,
unwritable targets are one line, a killed run resumes to the same CSV, empty values are empty."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from test_batch import TICKETS, read, run_cli, write_csv

import batch
import model

ROOT = model.ROOT


@pytest.fixture
def big_csv(tmp_path):
    """A few hundred labelled rows: long enough to kill a run in the middle."""
    frame = pd.read_csv(model.DATA_DIR / "eval.csv", dtype=str)[["text", "expected_category"]]
    frame = pd.concat([frame] * 3, ignore_index=True)
    frame["ticket_id"] = [f"t{i}" for i in range(len(frame))]
    path = tmp_path / "big.csv"
    frame.to_csv(path, index=False)
    return path


def start_cli(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "batch.py", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(condition, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise TimeoutError("condition not met")


# --- the input is never touched ------------------------------------------------------------------
@pytest.mark.parametrize("alias", ["same", "dot-dot", "symlink", "hardlink", "json-sibling"])
def test_output_that_is_the_input_exits_2_and_touches_nothing(tmp_path, alias):
    source = write_csv(tmp_path / "x.csv", TICKETS)
    before = source.read_bytes()
    (tmp_path / "sub").mkdir()
    output = {
        "same": source,
        "dot-dot": tmp_path / "sub" / ".." / "x.csv",
        "symlink": tmp_path / "link.csv",
        "hardlink": tmp_path / "hard.csv",
        "json-sibling": None,  # set below
    }[alias]
    if alias == "symlink":
        output.symlink_to(source)
    if alias == "hardlink":
        os.link(source, output)
    given = source
    if alias == "json-sibling":  # the input is the summary's name: report x.csv would write x.json over it
        given = tmp_path / "x.json"
        given.write_bytes(before)
        output = tmp_path / "x.csv"
        source = given
    result = run_cli(given, "-o", output, "--quiet")
    assert result.returncode == 2, result.stderr
    assert "the input is never overwritten" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert source.read_bytes() == before


@pytest.mark.parametrize("where", ["folder", "parent-is-a-file", "read-only-filesystem"])
def test_unwritable_targets_exit_2_with_one_line(tmp_path, where):
    source = write_csv(tmp_path / "x.csv", TICKETS)
    (tmp_path / "a-file").write_text("x")
    output = {"folder": tmp_path, "parent-is-a-file": tmp_path / "a-file" / "out.csv", "read-only-filesystem": "/proc/triage/out.csv"}[
        where
    ]
    result = run_cli(source, "-o", output, "--quiet")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("batch.py: error:") and "Traceback" not in result.stderr, result.stderr


def test_check_file_reads_only_the_head(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "x.csv", TICKETS)
    monkeypatch.setattr(type(path), "read_bytes", lambda self: pytest.fail("read the whole file"))
    assert batch.check_file(path) == path


# --- atomic output, one writer -------------------------------------------------------------------
def test_a_killed_run_leaves_the_previous_report_and_resume_gives_the_uninterrupted_csv(big_csv, tmp_path):
    out = tmp_path / "out.csv"
    reference = tmp_path / "reference.csv"
    assert run_cli(big_csv, "-o", reference, "--quiet", "--chunk-size", "32", "--compare", "top_k=1").returncode == 0

    previous = run_cli(big_csv, "-o", out, "--quiet", "--limit", "5")  # an older, complete report under the final name
    assert previous.returncode == 0
    old = {suffix: out.with_suffix(suffix).read_bytes() for suffix in (".csv", ".json", ".html")}

    state = tmp_path / "out.csv.partial.json"
    process = start_cli(big_csv, "-o", out, "--quiet", "--chunk-size", "32", "--compare", "top_k=1")
    wait_for(lambda: state.exists() and json.loads(state.read_text())["rows_done"] >= 96)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert {suffix: out.with_suffix(suffix).read_bytes() for suffix in old} == old  # the previous report, untouched
    done = json.loads(state.read_text())["rows_done"]
    assert 96 <= done < 480 and done % 32 == 0

    resumed = run_cli(big_csv, "-o", out, "--quiet", "--chunk-size", "32", "--compare", "top_k=1", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes() == reference.read_bytes()  # no row lost, duplicated or changed
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["resumed_from_row"] == done and summary["rows"] == 480  # the killed run's rows were not scored again
    assert summary["metrics"] == json.loads(reference.with_suffix(".json").read_text())["metrics"]
    assert not (tmp_path / "out.csv.partial").exists() and not state.exists()


def test_resume_after_the_input_changed_starts_over(big_csv, tmp_path):
    out = tmp_path / "out.csv"
    state = tmp_path / "out.csv.partial.json"
    process = start_cli(big_csv, "-o", out, "--quiet", "--chunk-size", "32")
    wait_for(lambda: state.exists())
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    write_csv(big_csv, TICKETS)  # another input under the same name
    resumed = run_cli(big_csv, "-o", out, "--quiet", "--chunk-size", "32", "--resume")
    assert resumed.returncode == 0 and "cannot resume (input changed" in resumed.stderr, resumed.stderr
    assert len(read(out)) == len(TICKETS)


def test_two_writers_of_one_output_one_exits_2_and_the_report_is_whole(big_csv, tmp_path):
    out = tmp_path / "out.csv"
    first = start_cli(big_csv, "-o", out, "--quiet", "--chunk-size", "64")
    wait_for(lambda: (tmp_path / ".out.csv.lock").exists())
    time.sleep(0.5)
    second = run_cli(big_csv, "-o", out, "--quiet", "--chunk-size", "64")
    assert second.returncode == 2 and "another run is writing this report" in second.stderr, second.stderr
    assert first.wait(timeout=300) == 0
    scored = read(out)
    assert list(scored.ticket_id) == [f"t{i}" for i in range(480)] and (scored.error == "").all()
    assert json.loads(out.with_suffix(".json").read_text())["rows"] == 480


def test_empty_values_are_empty_not_nan(tmp_path):
    source = write_csv(tmp_path / "x.csv", [("My parcel never arrived and I am furious!!", "order_status")] * 3)
    result = run_cli(source, "-o", tmp_path / "out.csv", "--quiet", "--flag", "auto_reply=false")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "out.csv").read_text()
    scored = read(tmp_path / "out.csv")
    assert (scored.reply == "").all() and (scored.needs_human == "True").all()
    assert "nan" not in text.lower().replace("nancy", "")


def test_merge_is_atomic_and_refuses_a_shard_as_output(tmp_path):
    source = write_csv(tmp_path / "x.csv", TICKETS)
    shard = tmp_path / "s.csv"
    batch.report(source, shard, progress=False, html_report=False)
    with pytest.raises(batch.BatchInputError, match="never overwritten"):
        batch.merge([shard], shard)
    with pytest.raises(batch.BatchInputError, match="cannot merge"):
        batch.merge([shard, tmp_path / "missing.csv"], tmp_path / "merged.csv")
    assert not (tmp_path / "merged.csv").exists() and not (tmp_path / "merged.csv.partial").exists()
