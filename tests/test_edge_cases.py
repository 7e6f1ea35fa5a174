"""Edge cases: the regression suite over data/edge_cases.csv, the store (masking, duplicates, concurrency,
import, status), and POST/GET /cases over HTTP. Inputs, flags and expected answers come from the pipeline's contract
(conftest's helpers), so these run on a fork's pipeline too; the worked example's own cases: tests/example/."""

import csv
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import (
    Server,
    example_input,
    expected_cells,
    expected_example,
    expected_matching,
    expected_more,
    expected_not_matching,
    invalid_input,
    label_values,
    labelled_rows,
    optional_input_field,
    other_value,
    text_field,
    with_text,
    write_rows,
)
from pydantic import ValidationError

import model
from building import contract
from loop import edge_cases
from loop.edge_cases import CaseStatus, EdgeCase

ROOT = model.ROOT


def regressions(results: list[dict]) -> list[str]:
    """Fixed cases the pipeline now gets wrong, one line each."""
    return [
        f"{r['id']}: expected {r['case'].expected.model_dump(exclude_none=True)}, got {r['answer_now']}: "
        f"{edge_cases.input_text(r['case'].ticket)!r}"
        for r in results
        if r["verdict"] == "broken"
    ]


def answered(one: dict) -> dict:
    """The pipeline's answer now for an input, as JSON."""
    return contract.run(one).model_dump(mode="json")


# --- the regression suite ---------------------------------------------------------------------------
def test_no_fixed_edge_case_is_broken():
    """Every case in the store (whatever it holds), in one run_batch call: a fixed case that fails is a regression."""
    results = edge_cases.check_cases()
    assert len(results) == len(edge_cases.load_cases())
    assert not regressions(results), "\n".join(regressions(results))
    newly_fixed = [r["id"] for r in results if r["verdict"] == "newly fixed"]
    if newly_fixed:  # good news, said where the engineer sees it
        warnings.warn(f"open edge cases now pass (mark them fixed: python -m loop cases fix {' '.join(newly_fixed)})", stacklevel=1)


def test_a_broken_fixed_case_is_a_regression(tmp_path, monkeypatch):
    """A test double of the pipeline that answers one label value to everything: every fixed case expecting another is
    broken; an open case, and a training example even when it was right, never is."""
    store, label = tmp_path / "cases.csv", contract.label()
    one_each = {r["expected"][label]: r for r in labelled_rows()}.values()  # a row of each label value
    cases = [{"ticket": r["input"], "expected": r["expected"]} for r in one_each]
    example = example_input()
    cases.append({"ticket": example, "expected": expected_matching(answered(example)), "train": True})
    saved = [c for c, _ in edge_cases.save_cases(cases, path=store)]
    real, always = model.run_batch, expected_not_matching(answered(example))[label]  # wrong for the training example

    def always_the_same(inputs, flags=None, debug=False, timings=None):
        return [model.Output.model_validate({**r.model_dump(), label: always}) for r in real(inputs, flags, debug)]

    monkeypatch.setattr(model, "run_batch", always_the_same)
    broken = {r["id"] for r in edge_cases.check_cases(edge_cases.load_cases(store)) if r["verdict"] == "broken"}
    fixed_elsewhere = {c.id for c in saved if c.status == CaseStatus.fixed and not c.train and getattr(c.expected, label) != always}
    assert broken == fixed_elsewhere and broken
    assert saved[-1].status == CaseStatus.fixed and saved[-1].id not in broken  # the training example


def test_cases_check_command_exits_1_on_a_regression(tmp_path):
    store, label = tmp_path / "cases.csv", contract.label()
    example = example_input()
    ((saved, _),) = edge_cases.save_cases([{"ticket": example, "expected": expected_matching(answered(example))}], path=store)
    assert saved.status == CaseStatus.fixed
    rows = list(csv.DictReader(store.open(newline="")))
    rows[0][contract.expected_column()] = expected_not_matching(answered(example))[label]  # edited by hand to a wrong answer
    write_rows(store, rows)
    env = {"TRIAGE_EDGE_CASES": str(store), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "loop", "cases", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "broken" in out.stdout and '"broken": 1' in out.stdout, out.stdout + out.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "loop", "cases", "check", "--all"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert saved.id in listed.stdout  # every case's id, as `cases fix` and `reopen` say to look them up


# --- the store --------------------------------------------------------------------------------------------
def test_save_cleans_the_text_records_the_answer_and_merges_duplicates(tmp_path):
    """The text as the pipeline's clean_text leaves it (personal data masked), unless keep_pii; the answer of now."""
    store, field, label = tmp_path / "cases.csv", text_field(), contract.label()
    written = f"Write to jo@example.com: {example_input()[field]}"
    case = {"ticket": with_text(written), "expected": expected_example(), "note": "n"}
    ((first, new),) = edge_cases.save_cases([case], created_by="owner", path=store)
    assert new and getattr(first.ticket, field) == contract.clean_text(written, masked=True)
    assert first.answer[label] == answered(first.ticket.model_dump())[label] and first.created_by == "owner"
    assert set(first.answer) == set(edge_cases.ANSWER_FIELDS)
    assert first.pipeline_version == model.PIPELINE_VERSION and first.artifacts == edge_cases.artifacts_fingerprint()
    assert first.status == (CaseStatus.fixed if contract.matches(first.expected, contract.run(first.ticket)) else CaseStatus.open)
    ((again, new_again),) = edge_cases.save_cases([case], path=store)
    assert not new_again and again.id == first.id and len(edge_cases.load_cases(store)) == 1
    ((kept, _),) = edge_cases.save_cases([{**case, "keep_pii": True}], path=store)
    assert getattr(kept.ticket, field) == contract.clean_text(written, masked=False)
    masked = contract.clean_text(written, masked=True) != contract.clean_text(written, masked=False)
    assert len(edge_cases.load_cases(store)) == (2 if masked else 1)  # another text, another case
    loaded = edge_cases.load_cases(store)[0]
    assert loaded.model_dump(exclude={"keep_pii"}) == first.model_dump(exclude={"keep_pii"})


def test_an_older_store_gains_a_column_for_a_new_input_field_and_keeps_its_rows(tmp_path):
    store, name = tmp_path / "cases.csv", optional_input_field()
    field = model.Input.model_fields[name]
    ((old, _),) = edge_cases.save_cases([{"ticket": example_input(), "expected": expected_example()}], path=store)
    columns, cells = csv.reader(store.open(newline=""))
    keep = [i for i, c in enumerate(columns) if c != name]  # the store as written before the field existed
    write_rows(store, [dict(zip([columns[i] for i in keep], [cells[i] for i in keep], strict=True))])
    default = model.Input.model_validate({**example_input(), name: field.default}).model_dump(mode="json")[name]
    assert edge_cases.load_cases(store)[0].ticket.model_dump(mode="json")[name] == default  # a missing column: the default
    other = other_value(field.annotation, default)
    edge_cases.save_cases(
        [{"ticket": with_text("another one", {**example_input(), name: other}), "expected": expected_example()}], path=store
    )
    assert store.read_text().splitlines()[0].endswith(f",{name}")
    assert [c.ticket.model_dump(mode="json")[name] for c in edge_cases.load_cases(store)] == [default, other]
    assert edge_cases.load_cases(store)[0].id == old.id and not edge_cases.read_cases(store).skipped


def test_an_open_case_and_its_status(tmp_path):
    store, example = tmp_path / "cases.csv", example_input()
    ((saved, _),) = edge_cases.save_cases([{"ticket": example, "expected": expected_not_matching(answered(example))}], path=store)
    assert saved.status == CaseStatus.open
    assert edge_cases.set_case_status([saved.id], CaseStatus.fixed, path=store) == 1
    assert edge_cases.load_cases(store)[0].status == CaseStatus.fixed
    assert edge_cases.check_cases(edge_cases.load_cases(store))[0]["verdict"] == "broken"


def test_expected_fields_are_checked():
    """Every field an expected answer gives must equal the answer's; a field it leaves out (None) is not judged."""
    answer = contract.run(example_input())
    now = answer.model_dump(mode="json")
    given = {name: now[name] for name in model.Expected.model_fields if name in now}
    assert contract.matches(model.Expected.model_validate(given), answer)
    assert contract.matches(model.Expected.model_validate(expected_matching(answer)), answer)
    assert not contract.matches(model.Expected.model_validate({**given, **expected_not_matching(answer)}), answer)
    _, more = expected_more()
    if more:  # one other field wrong is enough
        wrong = {**given, more: other_value(model.Expected.model_fields[more].annotation, now[more])}
        assert not contract.matches(model.Expected.model_validate(wrong), answer)


def test_concurrent_flagging_loses_nothing_and_duplicates_nothing(tmp_path):
    store, field = tmp_path / "cases.csv", text_field()
    cases = [{"ticket": with_text(f"Number {i}: {example_input()[field]}"), "expected": expected_example()} for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda c: edge_cases.save_cases([c], path=store), cases + cases))  # each case twice, all at once
    saved = edge_cases.load_cases(store)
    assert sorted(getattr(c.ticket, field) for c in saved) == sorted(c["ticket"][field] for c in cases)
    assert store.read_text().count("\n") == 17  # the header and one line a case: nothing torn, nothing repeated


def test_import_a_csv_of_cases(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIAGE_EDGE_CASES", str(tmp_path / "cases.csv"))
    monkeypatch.setenv("TRIAGE_DATABASE_URL", f"sqlite:///{tmp_path / 'review.sqlite3'}")
    source, label = tmp_path / "mine.csv", contract.label()
    expected = expected_cells(expected_example())
    write_rows(source, [{**with_text(f"{example_input()[text_field()]}, from an expert"), **expected, "note": "from an expert"}])
    out = subprocess.run(
        [sys.executable, "-m", "loop", "cases", "import", "--accept", str(source)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )  # --accept: straight into the suite, as a reviewer (without it, into the review queue: tests/test_review.py)
    assert out.returncode == 0 and "1 new case," in out.stdout, out.stderr
    (case,) = edge_cases.load_cases(tmp_path / "cases.csv")
    assert (
        case.source == "file"
        and case.note == "from an expert"
        and case.expected.model_dump(mode="json")[label] == expected_example()[label]
    )
    bad, _ = invalid_input()
    write_rows(source, [{**bad, **expected}])
    with pytest.raises(ValueError, match="line 2"):
        edge_cases.import_cases(source)


# --- over HTTP ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cases_server(tmp_path_factory):
    store = tmp_path_factory.mktemp("cases") / "cases.csv"
    s = Server(LIT_SERVER_API_KEY="sesame", TRIAGE_EDGE_CASES=str(store))
    s.store = store
    yield s
    s.stop()


def test_post_and_get_cases_over_http(cases_server):
    url, key, field, label = f"{cases_server.url}/cases", {"X-API-Key": "sesame"}, text_field(), contract.label()
    body = {"ticket": with_text(f"Over HTTP: {example_input()[field]}"), "expected": expected_example(), "note": "n"}
    assert requests.post(url, json=body, timeout=60).status_code == 401
    assert requests.get(url, timeout=60).status_code == 401
    created = requests.post(url, json=body, headers=key, timeout=120)
    assert created.status_code == 201, created.text
    case = EdgeCase.model_validate(created.json()["case"])
    assert case.source == "api" and case.id == created.json()["id"] and case.answer[label] in label_values()
    assert created.json()["state"] == "pending"
    again = requests.post(url, json=body, headers=key, timeout=60)
    assert again.status_code == 200 and again.json() == {**created.json(), "new": False, "state": "already flagged"}
    listed = requests.get(url, params={"limit": 5, "state": "pending"}, headers=key, timeout=60).json()
    assert listed["total"] >= 1 and case.id in {c["case"]["id"] for c in listed["cases"]}
    assert case.id not in {c["id"] for c in requests.get(url, headers=key, timeout=60).json()["cases"]}  # not in the suite yet
    try:  # a text that cleaning empties, where the field needs one
        model.Input.model_validate(with_text(""))
    except ValidationError:
        empty = requests.post(url, json={**body, "ticket": with_text("\x00\x01")}, headers=key, timeout=60)
        assert empty.status_code == 422 and field in empty.json()["detail"], empty.text
    bad = requests.post(url, json={**body, "expected": {label: {"not": "a value"}}}, headers=key, timeout=60)
    assert bad.status_code == 422 and ["body", "expected", label] in [e["loc"] for e in bad.json()["detail"]]
    spec = requests.get(f"{cases_server.url}/openapi.json", timeout=60).json()
    assert {"post", "get"} <= set(spec["paths"]["/cases"]) and "examples" in spec["components"]["schemas"]["EdgeCase"]


def test_16_clients_flagging_at_once(cases_server):
    url, key, field = f"{cases_server.url}/cases", {"X-API-Key": "sesame"}, text_field()
    bodies = [{"ticket": with_text(f"Client {i}: {example_input()[field]}"), "expected": expected_example()} for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda b: requests.post(url, json=b, headers=key, timeout=120).status_code, bodies + bodies))
    assert sorted(codes) == [200] * 16 + [201] * 16
    queue = requests.get(url, params={"state": "pending", "limit": 500}, headers=key, timeout=60).json()["cases"]
    flagged = sorted((c["case"]["ticket"][field], c["times_flagged"]) for c in queue if c["case"]["ticket"][field].startswith("Client"))
    assert flagged == sorted((b["ticket"][field], 2) for b in bodies)


def test_a_reviewer_accepts_and_rejects_over_http(cases_server):
    url, key = f"{cases_server.url}/cases", {"X-API-Key": "sesame"}
    ids = [
        requests.post(url, json={"ticket": with_text(text), "expected": expected_example()}, headers=key, timeout=120).json()["id"]
        for text in ("A reviewer keeps this one", "asdf qwer junk")
    ]
    reviewers, _ = expected_more()  # the reviewer's own answer, with a field more than the flag's
    decision = {"ids": ids[:1], "accept": True, "expected": reviewers, "reviewer": "ana"}
    assert requests.post(f"{url}/review", json=decision, headers=key, timeout=60).status_code == 401  # the reviewer's key is apart
    wrong = requests.post(f"{url}/review", json=decision, headers={**key, "X-Review-Key": "guess"}, timeout=60)
    assert wrong.status_code == 401 and "X-Review-Key" in wrong.json()["detail"]
    reviewer = {**key, "X-Review-Key": "sesame"}  # TRIAGE_REVIEW_KEY unset: the API key is the reviewer's
    done = requests.post(f"{url}/review", json=decision, headers=reviewer, timeout=120)
    assert done.status_code == 200 and done.json()["changed"] == 1, done.text
    rejected = requests.post(f"{url}/review", json={"ids": ids[1:], "accept": False}, headers=reviewer, timeout=60).json()
    assert rejected["changed"] == 1 and rejected["counts"]["rejected"] >= 1
    (in_suite,) = [c for c in edge_cases.load_cases(cases_server.store) if c.id == done.json()["accepted"][0]]
    assert in_suite.created_by == "ana" and in_suite.expected.model_dump(mode="json", exclude_none=True) == reviewers
    again = requests.post(f"{url}/review", json={**decision, "ids": ids}, headers=reviewer, timeout=60)
    assert again.status_code == 409 and f"{ids[0]} was accepted by ana at " in again.json()["detail"]  # neither is pending any more


def test_what_is_saved_can_always_be_read_back(tmp_path):
    """Control characters, NUL bytes and line breaks (as schemathesis sends them) never make the store unreadable."""
    store, field = tmp_path / "cases.csv", text_field()
    try:
        model.Input.model_validate(with_text(""))
    except ValidationError:
        with pytest.raises(ValidationError, match=field):  # nothing left once cleaned
            edge_cases.save_cases([{"ticket": with_text("\x00\x01\x02"), "expected": expected_example()}], path=store)
        assert not store.exists()
    text, note = "a\x00b\r\nc \u202e jo@example.com", "x\x00y\nz"
    odd = {"ticket": with_text(text), "expected": expected_example(), "note": note, "keep_pii": True}
    ((saved, _),) = edge_cases.save_cases([odd], path=store)
    (loaded,) = edge_cases.load_cases(store)
    assert getattr(loaded.ticket, field) == getattr(saved.ticket, field) == contract.clean_text(text, masked=False)
    assert loaded.note == contract.clean_text(note, masked=False)
    assert not any(c in getattr(loaded.ticket, field) + loaded.note for c in "\x00\r\n\u202e")
