"""The edge-case store under faults (issue 15): a full disk (a real small tmpfs), bad lines, a folder where the store
should be, growth, PII in the note, spreadsheet formulas; through the store's functions and over HTTP. Inputs and
expected answers come from the pipeline's contract (conftest's helpers), so these run on a fork's pipeline too."""

import contextlib
import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from conftest import Server, expected_example, expected_not_matching, longest_text, text_field, with_text
from pydantic import TypeAdapter, ValidationError

import model
from building import contract
from loop import edge_cases
from loop.edge_cases import CaseStatus

ROOT = model.ROOT


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str = "64k"):
    """A real tmpfs of `size` mounted at `folder`: yields None, or why it could not be mounted (not root, no mount)."""
    if os.geteuid() != 0:
        yield "mounting a tmpfs needs root"
        return
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
    if mount.returncode:
        yield f"mount -t tmpfs failed: {mount.stderr.strip()}"
        return
    try:
        yield None
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Write a file in `folder` until the disk is full; returns it (delete it to free the space)."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"x" * 1024)
    return filler


def case(text: str, **more) -> dict:
    """A case of the example input with `text` in its text field, and the expected answer's example."""
    return {"ticket": with_text(text), "expected": expected_example(), **more}


def wrong_case(text: str) -> dict:
    """A case the pipeline gets wrong now (open when saved)."""
    return {**case(text), "expected": expected_not_matching(contract.run(with_text(text)))}


def big(text: str) -> list[dict]:
    """Cases whose rows together hold 4,800 characters of text (as few as the text field's length allows): saved at
    once they need a fresh page of the tmpfs, whatever the store's slack."""
    size = min(longest_text(), 4800)
    return [case((f"{i} {text} " + "x" * size)[:size]) for i in range(-(-4800 // size))]


def text(one) -> str:
    return getattr(one.ticket, text_field())


def bad_lines(header: str, good_row: str) -> list[tuple[bytes, str]]:
    """Bad lines made from a good one, each with a word its problem must name: torn, binary, a missing cell, a value its
    field does not take (the label's, or else an input field's)."""
    columns, cells = next(csv.reader([header])), next(csv.reader([good_row]))
    first = columns.index(next(iter(model.Input.model_fields)))
    missing = cells[:first] + cells[first + 1 :]  # an input field's cell left out: every later cell one column to the left
    refused = [contract.expected_column()] if contract.label() else []
    refused += [name for name, field in model.Input.model_fields.items() if not accepts(field.annotation, "not_a_value")]
    where = columns.index(refused[0])
    unknown = [*cells[:where], "not_a_value", *cells[where + 1 :]]

    def line(cells: list[str]) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(cells)
        return buffer.getvalue().encode()

    return [
        (good_row.encode()[:50] + b"\n", "cells"),  # torn: the first 50 bytes of a row
        (b"\x89PNG\r\n\x1a\n", "UTF-8"),  # binary (and its \r\n\x1a\n ends two lines: the second is \x1a alone)
        (line(missing), f"{len(missing)} cells"),  # one fewer than the header's
        (line(unknown), refused[0].removeprefix(contract.EXPECTED_PREFIX)),
    ]


def accepts(annotation, value: str) -> bool:
    try:
        TypeAdapter(annotation).validate_python(value)
    except ValidationError:
        return False
    return True


# --- the store's functions --------------------------------------------------------------------------------------
def test_a_full_disk_leaves_no_torn_row_and_saving_works_once_space_is_freed(tmp_path):
    folder = tmp_path / "disk"
    folder.mkdir()
    with small_tmpfs(folder) as why_not:
        if why_not:
            pytest.skip(why_not)
        store = folder / "edge_cases.csv"
        ((first, _),) = edge_cases.save_cases([case("The first case")], path=store)
        before = store.read_bytes()
        filler = fill(folder)
        with pytest.raises(Exception) as raised:
            edge_cases.save_cases(big("big"), path=store)
        assert store.read_bytes() == before  # all or nothing: cut back to its size before the write
        assert isinstance(raised.value, edge_cases.StoreFull), raised.value
        assert str(raised.value) == "the edge-case store is full: no space left on device; nothing was saved"
        assert edge_cases.read_cases(store) == ([first], [])
        filler.unlink()
        saved = edge_cases.save_cases(big("big"), path=store)
        assert all(new for _, new in saved) and edge_cases.read_cases(store) == ([first, *(c for c, _ in saved)], [])
        assert store.read_bytes().startswith(before) and store.read_bytes().endswith(b"\n")


def test_a_torn_last_row_left_by_a_crash_is_skipped_and_the_next_row_stays_whole(tmp_path):
    store = tmp_path / "edge_cases.csv"
    ((first, _),) = edge_cases.save_cases([case("The first case")], path=store)
    with open(store, "ab") as f:  # what the old code left on a full disk: half a row, no line end
        f.write(store.read_bytes().splitlines()[1][:70])
    assert edge_cases.load_cases(store) == [first]
    torn = edge_cases.read_cases(store)
    assert torn.cases == [first] and [s["line"] for s in torn.skipped] == [3]
    ((second, new),) = edge_cases.save_cases([case("A second case")], path=store)
    assert new and edge_cases.read_cases(store) == ([first, second], torn.skipped)


def test_bad_lines_are_skipped_and_named_and_the_rest_is_served(tmp_path):
    store = tmp_path / "edge_cases.csv"
    cases = [case("The first case"), case("A second case")]
    saved = [s for s, _ in edge_cases.save_cases(cases, path=store)]
    bad = bad_lines(*store.read_text().splitlines()[:2])
    with open(store, "ab") as f:
        f.write(b"".join(line for line, _ in bad))
    assert edge_cases.load_cases(store) == saved
    store_read = edge_cases.read_cases(store)
    assert [s["line"] for s in store_read.skipped] == [4, 5, 6, 7, 8]  # lines 2 and 3 are the cases; \x1a is line 6
    for s, (_, word) in zip([store_read.skipped[i] for i in (0, 1, 3, 4)], bad, strict=True):
        assert word in s["problem"], s
    ((third, new),) = edge_cases.save_cases([wrong_case("A third case")], path=store)  # flagging goes on
    assert new and third.status == CaseStatus.open and edge_cases.load_cases(store) == [*saved, third]
    assert edge_cases.set_case_status([third.id], CaseStatus.fixed, path=store) == 1
    lines = store.read_bytes().split(b"\n")
    assert b"\n".join(lines[3:8]) + b"\n" == b"".join(line for line, _ in bad)  # the rewrite kept the bad lines as they were
    assert edge_cases.read_cases(store).cases[-1].status == CaseStatus.fixed
    assert edge_cases.set_case_status([third.id], CaseStatus.open, path=store) == 1 and edge_cases.load_cases(store) == [*saved, third]

    out = subprocess.run(
        [sys.executable, "-m", "loop", "cases", "check"],
        cwd=ROOT,
        env={**os.environ, "TRIAGE_EDGE_CASES": str(store)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and '"skipped": 5' in out.stdout, out.stdout + out.stderr
    for number in (4, 5, 6, 7, 8):
        assert f"{store}, line {number}: skipped (" in out.stderr, out.stderr


def test_a_store_that_is_a_folder_says_so(tmp_path):
    store = tmp_path / "edge_cases.csv"
    store.mkdir()
    with pytest.raises(edge_cases.StoreUnavailable, match="is a directory"):
        edge_cases.read_cases(store)
    with pytest.raises(edge_cases.StoreUnavailable, match="is a directory"):
        edge_cases.save_cases([case("The first case")], path=store)
    out = subprocess.run(
        [sys.executable, "-m", "loop", "cases", "fix", "abc"],
        cwd=ROOT,
        env={**os.environ, "TRIAGE_EDGE_CASES": str(store)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1 and "is a directory" in out.stderr and "Traceback" not in out.stderr, out.stderr


def bytes_read() -> int:
    """Bytes this process has read so far (every read system call: files, pipes, /proc)."""
    return int(dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())["rchar"])


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs /proc/self/io (Linux) to count the bytes read")
def test_a_grown_store_is_read_only_where_it_grew(tmp_path):
    """After 1,500 cases a save and a lookup read the appended bytes, not the store; a rewrite or a cut is read afresh."""
    store = tmp_path / "edge_cases.csv"
    ((first, _),) = edge_cases.save_cases([wrong_case("The first case")], path=store)  # the pipeline is loaded now
    assert first.status == CaseStatus.open
    many = [
        first.model_copy(update={"id": f"{i:012x}", "ticket": first.ticket.model_copy(update={text_field(): f"Case {i}"})})
        for i in range(1500)
    ]
    edge_cases._append_cases(store, many)
    size = store.stat().st_size
    assert len(edge_cases.load_cases(store)) == 1501  # once, all of it

    start = bytes_read()
    ((saved, new),) = edge_cases.save_cases([case("A second case")], path=store)
    assert new and edge_cases.load_cases(store)[-1] == saved and len(edge_cases.load_cases(store)) == 1502
    assert bytes_read() - start < size / 20, f"read {bytes_read() - start} bytes of a {size}-byte store"

    assert edge_cases.set_case_status([many[0].id], CaseStatus.fixed, path=store) == 1
    start = bytes_read()
    cases = edge_cases.load_cases(store)  # another file took its place: read afresh
    assert bytes_read() - start >= size and cases[1].status == CaseStatus.fixed and len(cases) == 1502
    with open(store, "r+b") as f:  # cut in place (the same inode): read afresh
        f.truncate(len(b"".join(store.read_bytes().splitlines(keepends=True)[:11])))
    assert edge_cases.load_cases(store) == cases[:10]


def test_the_note_is_masked_like_the_text_and_formulas_are_quoted(tmp_path):
    """The note goes through the pipeline's clean_text as the text does (personal data masked) unless keep_pii; its
    length limit holds for the note as kept; a cell a spreadsheet would run as a formula is quoted."""
    store, field = tmp_path / "edge_cases.csv", text_field()
    note = "from jo@example.com, call +44 20 7946 0958, card 4111 1111 1111 1111"
    ((masked, _),) = edge_cases.save_cases([case("The first case", note=note)], path=store)
    assert masked.note == contract.clean_text(note, masked=True)
    ((kept, _),) = edge_cases.save_cases([case("The first case (kept)", note=note, keep_pii=True)], path=store)
    assert kept.note == note
    raw = store.read_text()
    assert raw.count("jo@example.com") == (1 if masked.note != note else 2)  # masked: only the case that keeps its PII
    long_note = "a@b.c " * 166  # 996 characters; masked, "[EMAIL]" is longer than "a@b.c"
    if len(contract.clean_text(long_note, masked=True)) > 1000:  # past 1,000 characters once masked
        with pytest.raises(ValidationError, match="note"):
            edge_cases.save_cases([case("The first case (long note)", note=long_note)], path=store)
    with pytest.raises(ValidationError, match="note"):
        edge_cases.save_cases([case("The first case (longer note)", note="x" * 1001)], path=store)

    formulas = ['=HYPERLINK("http://evil.example","parcel")', "+1 where is it", "-2+3 refund", "@SUM(A1) cancel", "'=quoted"]
    saved = [s for s, _ in edge_cases.save_cases([case(f, note=f) for f in formulas], path=store)]
    rows = list(csv.reader(io.StringIO(store.read_text())))
    cells = {name: [row[i] for row in rows[-len(formulas) :]] for i, name in enumerate(rows[0])}
    assert cells[field] == cells["note"] == ["'" + f for f in formulas]  # a spreadsheet shows each as text
    assert [text(c) for c in edge_cases.load_cases(store)[-len(formulas) :]] == [text(s) for s in saved] == formulas
    assert [c.note for c in edge_cases.load_cases(store)[-len(formulas) :]] == formulas


def test_the_repository_store_has_no_bad_line():
    assert edge_cases.read_cases().skipped == []


# --- over HTTP: flags wait in the review queue; a reviewer's accept is what writes the suite file ------------------------
@pytest.fixture(scope="module")
def store_server(tmp_path_factory):
    """One server for this module; its suite file lives on a real 64 KiB tmpfs where one can be mounted (the review
    queue's database stays on the ordinary disk)."""
    folder = tmp_path_factory.mktemp("store")
    with small_tmpfs(folder) as why_not:
        log = tmp_path_factory.mktemp("log") / "server.log"
        cases = {"TRIAGE_EDGE_CASES": str(folder / "edge_cases.csv"), "TRIAGE_FLAG_RATE": "1000"}  # big(): many flags a minute
        s = Server(log=log, TRIAGE_REVIEW_KEY="judge", **cases)
        s.folder, s.store, s.why_not = folder, folder / "edge_cases.csv", why_not
        try:
            yield s
        finally:
            s.stop()


def fresh(store: Path, content: bytes | None = None) -> None:
    """The store replaced: removed (a file or a folder), then written with `content` when given."""
    if store.is_dir():
        shutil.rmtree(store)
    store.unlink(missing_ok=True)
    if content is not None:
        store.write_bytes(content)


def is_json_problem(response: requests.Response, status: int, words: str) -> bool:
    return response.status_code == status and response.headers["content-type"] == "application/json" and words in response.json()["detail"]


def accepted(server, *bodies: dict) -> requests.Response:
    """Flag cases (they wait in the queue), then accept them at once as a reviewer: the answer of the accept."""
    ids = []
    for body in bodies:
        flagged = requests.post(f"{server.url}/cases", json=body, timeout=120)
        assert flagged.status_code in (200, 201), flagged.text
        ids.append(flagged.json()["id"])
    decision = {"ids": ids, "accept": True, "reviewer": "judge"}
    return requests.post(f"{server.url}/cases/review", json=decision, headers={"X-Review-Key": "judge"}, timeout=120)


def test_a_full_disk_over_http_is_a_507_and_get_keeps_working(store_server):
    if store_server.why_not:
        pytest.skip(store_server.why_not)
    url, store = f"{store_server.url}/cases", store_server.store
    fresh(store)
    assert accepted(store_server, case("The first case")).json()["changed"] == 1
    before = store.read_bytes()
    filler = fill(store_server.folder)
    try:
        full = accepted(store_server, *big("over HTTP"))
        assert is_json_problem(full, 507, "the edge-case store is full: no space left on device"), full.text
        assert store.read_bytes() == before
        listed = requests.get(url, timeout=60)
        assert listed.status_code == 200 and listed.json()["total"] == 1 and listed.json()["skipped"] == []
        assert requests.post(url, json=case("flagging goes on: the queue is elsewhere"), timeout=120).status_code == 201
    finally:
        filler.unlink()
    many = len(big("over HTTP"))
    assert accepted(store_server, *big("over HTTP")).json()["changed"] == many  # still pending after the 507: accepted now
    listed = requests.get(url, timeout=60).json()
    assert listed["total"] == 1 + many and listed["skipped"] == []


def test_bad_lines_over_http_are_skipped_and_reported(store_server):
    url, store = f"{store_server.url}/cases", store_server.store
    fresh(store)
    assert accepted(store_server, case("The first case (bad lines)")).status_code == 200
    bad = bad_lines(*store.read_text().splitlines()[:2])
    with open(store, "ab") as f:
        f.write(b"".join(line for line, _ in bad) + store.read_bytes().splitlines()[1][:70])  # and a torn last row
    listed = requests.get(url, timeout=60)
    assert listed.status_code == 200 and listed.json()["total"] == 1, listed.text
    assert [s["line"] for s in listed.json()["skipped"]] == [3, 4, 5, 6, 7, 8]
    added = accepted(store_server, case("A second case"))
    assert added.status_code == 200, added.text
    listed = requests.get(url, timeout=60).json()
    assert listed["total"] == 2 and listed["cases"][-1]["id"] == added.json()["accepted"][0]
    assert [s["line"] for s in listed["skipped"]] == [3, 4, 5, 6, 7, 8]  # the torn row got its line end; the new row its own line


def test_a_store_that_is_a_folder_is_a_503_over_http(store_server):
    url, store = f"{store_server.url}/cases", store_server.store
    fresh(store)
    store.mkdir()
    try:
        assert is_json_problem(requests.get(url, timeout=60), 503, "the edge-case store cannot be used: is a directory")
        posted = accepted(store_server, case("The first case (a folder)"))
        assert is_json_problem(posted, 503, "the edge-case store cannot be used: is a directory"), posted.text
    finally:
        fresh(store)
    assert requests.get(url, timeout=60).json()["total"] == 0


def test_the_openapi_description_names_the_store_errors(store_server):
    paths = requests.get(f"{store_server.url}/openapi.json", timeout=60).json()["paths"]
    assert {"429", "503", "507"} <= set(paths["/cases"]["post"]["responses"]) and "503" in paths["/cases"]["get"]["responses"]
    assert "full" in paths["/cases/review"]["post"]["responses"]["507"]["description"]
