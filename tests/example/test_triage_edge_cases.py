"""The worked example's edge cases (triage): its starter set in data/edge_cases.csv, the counts README gives of it, and
the rules of its expected answer. A fork rewrites these; the store's machinery is tested in tests/test_edge_cases.py."""

import re

import pytest

import model
from building import contract
from loop import edge_cases
from loop.edge_cases import CaseStatus

ROOT = model.ROOT


def test_the_starter_set_has_open_and_fixed_cases():
    cases = edge_cases.load_cases()
    assert {c.status for c in cases} == {CaseStatus.open, CaseStatus.fixed}
    assert len({c.id for c in cases}) == len(cases)  # no duplicates
    assert all(c.answer and c.pipeline_version and c.artifacts for c in cases)


def test_expected_fields_are_checked():
    text = "My account was hacked and someone is placing orders!!"
    answer = model.run(text)
    assert contract.matches(model.Expected(category=answer.category, urgency="high", needs_human=True), answer)
    assert not contract.matches(model.Expected(category=answer.category, urgency="low"), answer)
    with pytest.raises(ValueError, match="unknown team"):
        model.Expected(category="billing", team="marketing")


def test_the_readme_counts_the_starter_set():
    """The starter set is the store's first cases (the store only grows at its end: what a reviewer accepts since, a
    training example included, comes after them)."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    total, fixed, still_open = map(int, re.search(r"starter set holds (\d+) cases.*?\((\d+) fixed, (\d+) open", readme).groups())
    starter = edge_cases.load_cases()[:total]
    counted = (len(starter), sum(c.status == "fixed" for c in starter), sum(c.status == "open" for c in starter))
    assert (total, fixed, still_open) == counted
