"""Edge cases: the regression suite over data/edge_cases.csv, the store (masking, duplicates, concurrency,
import, status), and POST/GET /cases over HTTP."""

import csv
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import Server
from pydantic import ValidationError

import model
from building import contract
from loop import edge_cases
from loop.edge_cases import CaseStatus, EdgeCase

ROOT = model.ROOT


def regressions(results: list[dict]) -> list[str]:
    """Fixed cases the pipeline now gets wrong, one line each."""
    return [
        f"{r['id']}: expected {r['case'].expected.model_dump(exclude_none=True)}, got {r['answer_now']}: {r['case'].ticket.text!r}"
        for r in results
        if r["verdict"] == "broken"
    ]


# --- the regression suite ---------------------------------------------------------------------------
def test_no_fixed_edge_case_is_broken():
    """Every case in the store, in one run_batch call: a fixed case that fails is a regression."""
    results = edge_cases.check_cases()
    assert len(results) == len(edge_cases.load_cases()) >= 30
    assert not regressions(results), "\n".join(regressions(results))
    newly_fixed = [r["id"] for r in results if r["verdict"] == "newly fixed"]
    if newly_fixed:  # good news, said where the engineer sees it
        warnings.warn(f"open edge cases now pass (mark them fixed: python -m loop cases fix {' '.join(newly_fixed)})", stacklevel=1)


def test_the_starter_set_has_open_and_fixed_cases():
    cases = edge_cases.load_cases()
    assert {c.status for c in cases} == {CaseStatus.open, CaseStatus.fixed}
    assert len({c.id for c in cases}) == len(cases)  # no duplicates
    assert all(c.answer and c.pipeline_version and c.artifacts for c in cases)


def test_a_broken_fixed_case_is_a_regression(monkeypatch):
    """A test double of the pipeline that answers feedback to everything: every fixed non-feedback case is broken."""
    real = model.run_batch

    def always_feedback(tickets, flags=None, debug=False):
        return [r.model_copy(update={"category": model.Category.feedback}) for r in real(tickets, flags, debug)]

    monkeypatch.setattr(model, "run_batch", always_feedback)
    results = edge_cases.check_cases()
    broken = regressions(results)
    fixed_elsewhere = [c for c in edge_cases.load_cases() if c.status == CaseStatus.fixed and c.expected.category != "feedback"]
    assert len(broken) == len(fixed_elsewhere) > 0


def test_cases_check_command_exits_1_on_a_regression(tmp_path):
    store = tmp_path / "cases.csv"
    case = {"ticket": {"text": "How do I reset my password?"}, "expected": {"category": "account_access"}}
    ((saved, _),) = edge_cases.save_cases([case], path=store)
    assert saved.status == CaseStatus.fixed
    text = store.read_text().replace(",account_access,,,,", ",billing,,,,", 1)  # the expected answer, edited by hand to a wrong one
    store.write_text(text)
    env = {"TRIAGE_EDGE_CASES": str(store), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "loop", "cases", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "broken" in out.stdout and '"broken": 1' in out.stdout, out.stdout + out.stderr


# --- the store --------------------------------------------------------------------------------------------
def test_save_masks_pii_records_the_answer_and_merges_duplicates(tmp_path):
    store = tmp_path / "cases.csv"
    case = {"ticket": {"text": "Write to jo@example.com: where is order 75983714?"}, "expected": {"category": "order_status"}, "note": "n"}
    ((first, new),) = edge_cases.save_cases([case], created_by="owner", path=store)
    assert new and first.ticket.text == "Write to [EMAIL]: where is order 75983714?"
    assert first.answer["category"] == model.run(first.ticket.text).category.value and first.created_by == "owner"
    assert first.status == CaseStatus.fixed and first.pipeline_version == model.PIPELINE_VERSION
    ((again, new_again),) = edge_cases.save_cases([case], path=store)
    assert not new_again and again.id == first.id and len(edge_cases.load_cases(store)) == 1
    ((kept, _),) = edge_cases.save_cases([{**case, "keep_pii": True}], path=store)
    assert "jo@example.com" in kept.ticket.text and len(edge_cases.load_cases(store)) == 2
    loaded = edge_cases.load_cases(store)[0]
    assert loaded.model_dump(exclude={"keep_pii"}) == first.model_dump(exclude={"keep_pii"})


def test_an_older_store_gains_a_column_for_a_new_ticket_field_and_keeps_its_rows(tmp_path):
    store = tmp_path / "cases.csv"
    case = {"ticket": {"text": "How do I reset my password?"}, "expected": {"category": "account_access"}}
    ((old, _),) = edge_cases.save_cases([case], path=store)
    header, row = store.read_text().splitlines()
    columns, cells = header.split(","), next(csv.reader([row]))
    keep = [i for i, c in enumerate(columns) if c != "customer_tier"]  # the store as written before the field existed
    store.write_text(",".join(columns[i] for i in keep) + "\n" + ",".join(f'"{cells[i]}"' for i in keep) + "\n")
    assert edge_cases.load_cases(store)[0].ticket.customer_tier == "standard"  # a missing column: the default
    vip = {"ticket": {"text": "I cannot log in", "customer_tier": "vip"}, "expected": {"category": "account_access"}}
    edge_cases.save_cases([vip], path=store)
    assert store.read_text().splitlines()[0].endswith(",customer_tier")
    assert [c.ticket.customer_tier for c in edge_cases.load_cases(store)] == ["standard", "vip"]
    assert edge_cases.load_cases(store)[0].id == old.id and not edge_cases.read_cases(store).skipped


def test_an_open_case_and_its_status(tmp_path):
    store = tmp_path / "cases.csv"
    case = {"ticket": {"text": "How do I reset my password?"}, "expected": {"category": "billing"}}
    ((saved, _),) = edge_cases.save_cases([case], path=store)
    assert saved.status == CaseStatus.open
    assert edge_cases.set_case_status([saved.id], CaseStatus.fixed, path=store) == 1
    assert edge_cases.load_cases(store)[0].status == CaseStatus.fixed
    assert edge_cases.check_cases(edge_cases.load_cases(store))[0]["verdict"] == "broken"


def test_expected_fields_are_checked(tmp_path):
    text = "My account was hacked and someone is placing orders!!"
    answer = model.run(text)
    assert contract.matches(model.Expected(category=answer.category, urgency="high", needs_human=True), answer)
    assert not contract.matches(model.Expected(category=answer.category, urgency="low"), answer)
    with pytest.raises(ValueError, match="unknown team"):
        model.Expected(category="billing", team="marketing")


def test_concurrent_flagging_loses_nothing_and_duplicates_nothing(tmp_path):
    store = tmp_path / "cases.csv"
    cases = [{"ticket": {"text": f"Ticket number {i}: where is my parcel?"}, "expected": {"category": "order_status"}} for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda c: edge_cases.save_cases([c], path=store), cases + cases))  # each case twice, all at once
    saved = edge_cases.load_cases(store)
    assert sorted(c.ticket.text for c in saved) == sorted(c["ticket"]["text"] for c in cases)
    assert store.read_text().count("\n") == 17  # the header and one line a case: nothing torn, nothing repeated


def test_import_a_csv_of_cases(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIAGE_EDGE_CASES", str(tmp_path / "cases.csv"))
    monkeypatch.setenv("TRIAGE_DATABASE_URL", f"sqlite:///{tmp_path / 'review.sqlite3'}")
    source = tmp_path / "mine.csv"
    source.write_text(
        'text,expected_category,expected_urgency,note\n"I want my money back, the shoes pinch",returns_refunds,,from an expert\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "loop", "cases", "import", "--accept", str(source)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )  # --accept: straight into the suite, as a reviewer (without it, into the review queue: tests/test_review.py)
    assert out.returncode == 0 and "1 new case," in out.stdout, out.stderr
    (case,) = edge_cases.load_cases(tmp_path / "cases.csv")
    assert case.source == "file" and case.note == "from an expert" and case.expected.category == "returns_refunds"
    source.write_text("text,expected_category\nhello,not_a_category\n")
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
    url, key = f"{cases_server.url}/cases", {"X-API-Key": "sesame"}
    body = {
        "ticket": {"text": "I never got the parcel but you charged me. Order 75983714"},
        "expected": {"category": "billing"},
        "note": "n",
    }
    assert requests.post(url, json=body, timeout=60).status_code == 401
    assert requests.get(url, timeout=60).status_code == 401
    created = requests.post(url, json=body, headers=key, timeout=120)
    assert created.status_code == 201, created.text
    case = EdgeCase.model_validate(created.json()["case"])
    assert case.source == "api" and case.id == created.json()["id"] and case.answer["category"] in {c.value for c in model.Category}
    assert created.json()["state"] == "pending"
    again = requests.post(url, json=body, headers=key, timeout=60)
    assert again.status_code == 200 and again.json() == {**created.json(), "new": False, "state": "already flagged"}
    listed = requests.get(url, params={"limit": 5, "state": "pending"}, headers=key, timeout=60).json()
    assert listed["total"] >= 1 and case.id in {c["case"]["id"] for c in listed["cases"]}
    assert case.id not in {c["id"] for c in requests.get(url, headers=key, timeout=60).json()["cases"]}  # not in the suite yet
    empty = requests.post(url, json={"ticket": {"text": "\x00\x01"}, "expected": {"category": "billing"}}, headers=key, timeout=60)
    assert empty.status_code == 422 and "text" in empty.json()["detail"]
    bad = requests.post(url, json={"ticket": {"text": "hi"}, "expected": {"category": "nope"}}, headers=key, timeout=60)
    assert bad.status_code == 422 and ["body", "expected", "category"] in [e["loc"] for e in bad.json()["detail"]]
    spec = requests.get(f"{cases_server.url}/openapi.json", timeout=60).json()
    assert {"post", "get"} <= set(spec["paths"]["/cases"]) and "examples" in spec["components"]["schemas"]["EdgeCase"]


def test_16_clients_flagging_at_once(cases_server):
    url, key = f"{cases_server.url}/cases", {"X-API-Key": "sesame"}
    bodies = [{"ticket": {"text": f"Client {i} says the parcel is late"}, "expected": {"category": "order_status"}} for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda b: requests.post(url, json=b, headers=key, timeout=120).status_code, bodies + bodies))
    assert sorted(codes) == [200] * 16 + [201] * 16
    queue = requests.get(url, params={"state": "pending", "limit": 500}, headers=key, timeout=60).json()["cases"]
    flagged = sorted((c["case"]["ticket"]["text"], c["times_flagged"]) for c in queue if c["case"]["ticket"]["text"].startswith("Client"))
    assert flagged == sorted((b["ticket"]["text"], 2) for b in bodies)


def test_a_reviewer_accepts_and_rejects_over_http(cases_server):
    url, key = f"{cases_server.url}/cases", {"X-API-Key": "sesame"}
    ids = [
        requests.post(url, json={"ticket": {"text": text}, "expected": {"category": "billing"}}, headers=key, timeout=120).json()["id"]
        for text in ("Charged twice for one lamp", "asdf qwer junk")
    ]
    decision = {"ids": ids[:1], "accept": True, "expected": {"category": "billing", "needs_human": True}, "reviewer": "ana"}
    assert requests.post(f"{url}/review", json=decision, headers=key, timeout=60).status_code == 401  # the reviewer's key is apart
    wrong = requests.post(f"{url}/review", json=decision, headers={**key, "X-Review-Key": "guess"}, timeout=60)
    assert wrong.status_code == 401 and "X-Review-Key" in wrong.json()["detail"]
    reviewer = {**key, "X-Review-Key": "sesame"}  # TRIAGE_REVIEW_KEY unset: the API key is the reviewer's
    done = requests.post(f"{url}/review", json=decision, headers=reviewer, timeout=120)
    assert done.status_code == 200 and done.json()["changed"] == 1, done.text
    rejected = requests.post(f"{url}/review", json={"ids": ids[1:], "accept": False}, headers=reviewer, timeout=60).json()
    assert rejected["changed"] == 1 and rejected["counts"]["rejected"] >= 1
    (in_suite,) = [c for c in edge_cases.load_cases(cases_server.store) if c.id == done.json()["accepted"][0]]
    assert in_suite.created_by == "ana" and in_suite.expected.needs_human is True
    again = requests.post(f"{url}/review", json={**decision, "ids": ids}, headers=reviewer, timeout=60).json()
    assert again["changed"] == 0  # neither is pending any more


def test_the_readme_counts_the_starter_set():
    import re

    readme = " ".join((ROOT / "README.md").read_text().split())
    total, fixed, still_open = map(int, re.search(r"starter set holds (\d+) cases.*?\((\d+) fixed, (\d+) open", readme).groups())
    cases = edge_cases.load_cases()
    assert (total, fixed, still_open) == (len(cases), sum(c.status == "fixed" for c in cases), sum(c.status == "open" for c in cases))


def test_what_is_saved_can_always_be_read_back(tmp_path):
    """Control characters, NUL bytes and line breaks (as schemathesis sends them) never make the store unreadable."""
    store = tmp_path / "cases.csv"
    with pytest.raises(ValidationError, match="text"):  # nothing left once cleaned
        edge_cases.save_cases([{"ticket": {"text": "\x00\x01\x02"}, "expected": {"category": "billing"}}], path=store)
    assert not store.exists()
    odd = {
        "ticket": {"text": "a\x00b\r\nc \u202e jo@example.com"},
        "expected": {"category": "billing"},
        "note": "x\x00y\nz",
        "keep_pii": True,
    }
    ((saved, _),) = edge_cases.save_cases([odd], path=store)
    (loaded,) = edge_cases.load_cases(store)
    assert loaded.ticket.text == saved.ticket.text == "a b c jo@example.com" and loaded.note == "x y z"
