"""A reviewer's verdict on a shadowed disagreement (review.judge_shadow): it becomes a case in the review queue, it is
decided once, it outlives the pairs' retention, and the gate reads it as its "live traffic" set (gate.live_traffic),
refusing a candidate reviewers found significantly worse. On SQLite and PostgreSQL; the pairs are drawn from the
pipeline's contract (the served answer: the pipeline's own; the candidate's: another value of the label), so these
tests run on a fork too."""

import pytest
from conftest import PAIRS, label_values, recorded_pairs

import model
from building import contract
from loop import edge_cases, gate, review


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path, monkeypatch):
    url = request.getfixturevalue("postgres").url if request.param == "postgresql" else f"sqlite:///{tmp_path / 'r.sqlite3'}"
    monkeypatch.setenv("TRIAGE_DATABASE_URL", url)
    monkeypatch.setenv("TRIAGE_EDGE_CASES", str(tmp_path / "edge_cases.csv"))
    return url


def live_verdict(candidate: str = "cand") -> dict:
    """The gate's comparison on the live traffic set alone (what gate.run adds to the labelled sets and the suite)."""
    live, record = gate.live_traffic(candidate, "artifacts")
    assert live is not None and record["requests"] == PAIRS + 1
    (served, judged) = live
    sides = ({"sets": {gate.LIVE: served}, "cases": []}, {"sets": {gate.LIVE: judged}, "cases": []})
    return gate.compare(*sides, gate.SETTINGS)


@pytest.mark.skipif(not contract.label(), reason="the gate's live traffic set compares the label")
def test_a_judged_disagreement_is_a_queued_case_decided_once(database):
    ids = recorded_pairs()
    label = contract.label()
    case = review.judge_shadow(ids[0], "served", "ana")
    (queued,), total = review.cases("pending")
    assert total == 1 and queued.case.id == case.id and queued.case.source == edge_cases.CaseSource.shadow
    served = review.shadow_record("cand", listed=100)["disagreements"][-1]
    assert served["id"] == ids[0] and served["right"] == "served"
    assert case.expected.model_dump(mode="json")[label] == served["served_answer"][label]  # the served side's label
    with pytest.raises(review.NotPending, match=f"judged by ana .*served is right, case {case.id}"):
        review.judge_shadow(ids[0], "candidate", "bo")  # decided once: the first verdict holds
    assert review.counts()["pending"] == 1
    with pytest.raises(ValueError, match="give the right answer"):
        review.judge_shadow(ids[1], "neither", "ana")
    with pytest.raises(ValueError, match="one of served, candidate, neither"):
        review.judge_shadow(ids[1], "both", "ana")
    with pytest.raises(review.NotPending, match="no shadowed request"):
        review.judge_shadow(10**6, "served", "ana")
    agreeing = max(ids) + 1  # the pair whose answers agree: nothing to judge
    with pytest.raises(ValueError, match="agree: there is nothing to judge"):
        review.judge_shadow(agreeing, "served", "ana")
    right = next(v for v in label_values() if v not in (served["served_answer"][label], served["candidate_answer"][label]))
    given = review.judge_shadow(ids[1], "neither", "ana", expected={label: right})
    assert given.expected.model_dump(mode="json")[label] == right
    assert review.shadow_record("cand")["judged"] == {"served": 1, "candidate": 0, "neither": 1}


@pytest.mark.skipif(not contract.label(), reason="the gate's live traffic set compares the label")
def test_the_gate_refuses_a_candidate_reviewers_found_worse_on_live_traffic(database, monkeypatch):
    ids = recorded_pairs()
    for pair in ids[:6]:  # six disagreements where the served version was right: broken by the candidate
        review.judge_shadow(pair, "served", "ana")
    monkeypatch.setenv("TRIAGE_SHADOW_KEEP", "1")  # retention drops the pairs; the verdicts, the gate's evidence, stay
    review.record_shadow([{"candidate": "other", "served": "artifacts", "at": 99.0, "input_json": "{}", "served_json": "{}",
                           "candidate_json": "{}", "differs": ""}])  # fmt: skip
    assert review.shadow_record("cand")["requests"] == 0 and len(review.live_evidence("cand", "artifacts")) == 6
    monkeypatch.setenv("TRIAGE_SHADOW_KEEP", "10000")
    recorded_pairs()  # the record again, for live_verdict's count
    verdict = live_verdict()
    live = verdict["sets"][gate.LIVE]
    assert live["mcnemar"]["broken"] == 6 and live["mcnemar"]["fixed"] == 0 and live["rows"] == 6
    assert not verdict["passed"] and any(f.startswith(f"{gate.LIVE}: accuracy down") for f in verdict["failures"])
    assert {r["row"] for r in live["changed_rows"]} == set(ids[:6]) and {r["change"] for r in live["changed_rows"]} == {"broken"}
    assert review.live_evidence("cand", "another-served-version") == []  # evidence against what is served now only


@pytest.mark.skipif(not contract.label(), reason="the gate's live traffic set compares the label")
def test_the_gate_passes_a_candidate_reviewers_found_right(database):
    ids = recorded_pairs()
    for pair in ids[:6]:
        review.judge_shadow(pair, "candidate", "ana")
    verdict = live_verdict()
    assert verdict["passed"], verdict["failures"]
    test = verdict["sets"][gate.LIVE]["mcnemar"]
    assert (test["fixed"], test["broken"]) == (6, 0)
    assert review.counts()["pending"] == 6  # each a case in the queue, waiting for a reviewer to accept it into the suite


def test_no_live_set_without_a_verdict(database):
    live, record = gate.live_traffic("cand", "artifacts")
    assert live is None and record["requests"] == 0 and record["judged"] == dict.fromkeys(review.SIDES, 0)


def test_a_pair_that_differs_only_where_no_case_expects_is_counted_not_listed_nor_judged(database):
    other = next((f for f in contract.output_fields() if f not in model.Expected.model_fields), None)
    if other is None:
        pytest.skip("every output field is one a case can expect")
    pair = {"candidate": "cand", "served": "artifacts", "at": 1.0, "input_json": "{}", "served_json": "{}", "candidate_json": "{}"}
    review.record_shadow([pair | {"differs": other}])
    record = review.shadow_record("cand")
    assert record["requests"] == 1 and record["agreement"][other] == 0 and record["to_judge"] == 0 and record["disagreements"] == []
    with pytest.raises(ValueError, match=f"differ only on {other}, which no case expects"):
        review.judge_shadow(1, "served", "ana")  # the database's first pair
