"""Expense approval: the second pipeline, of another shape than triage, read top to bottom.

An employee's expense claim goes through four steps:

    convert -> check_policy -> classify -> decide

1. convert       the amount into euros, at the rates of data/rates.csv
2. check_policy  the company's limit for an approval without a receipt, and words the policy names
3. classify      approve, review or reject (word weights learnt from data/train.csv, and from the loop's cases)
4. decide        the verdict, its reasons, and whether a receipt is needed

No encoder, no index: it builds in a second. tests/test_fork.py puts this file, recipe.py and data/ in place of the
worked example's in a copy of the project and runs every face on it.
"""

import math
import os
import re
import threading
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

PIPELINE_VERSION = "0.1.0"
ROOT = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ.get("TRIAGE_DATA_DIR", ROOT / "data"))


# ---------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------
class Currency(StrEnum):
    EUR = "EUR"
    USD = "USD"
    GBP = "GBP"


class Verdict(StrEnum):
    approve = "approve"
    review = "review"
    reject = "reject"


class Claim(BaseModel):
    """One expense claim."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"amount": 42.5, "currency": "EUR", "description": "Taxi from the airport to the client"}]},
    )
    amount: float = Field(gt=0, le=100_000, allow_inf_nan=False, description="The amount claimed, in its currency.")
    currency: Currency = Field(Currency.EUR, description="The claim's currency.")
    description: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)] = Field(
        description="What the money was spent on."
    )
    receipt: bool = Field(False, description="Whether a receipt is attached.")


class Flags(BaseModel):
    model_config = ConfigDict(extra="forbid")
    receipt_limit: float = Field(50.0, ge=0, le=1000, description="Above this many euros a claim needs a receipt.")
    strict: bool = Field(False, description="Send every claim without a receipt to review.")


class PolicyCheck(BaseModel):
    limit_eur: float = Field(description="The receipt limit that applied, in euros.")
    over_limit: bool
    ratio: float = Field(description="The amount in euros over the limit.")


class WordHit(BaseModel):
    word: str
    weight: float = Field(description="How much the word pushed towards the verdict.")


class StepTrace(BaseModel):
    step: str
    ms: float
    output: Any
    details: dict[str, Any] = Field(default_factory=dict)
    skipped: str | None = None


class Decision(BaseModel):
    """The pipeline's answer for one claim."""

    verdict: Verdict
    score: float = Field(description="The classifier's probability for the verdict, 0 to 1.")
    amount_eur: float
    reasons: list[str] = Field(description="Why, in words.")
    policy: PolicyCheck
    words: list[WordHit] = Field(description="The words that weighed most.")
    scores: list[float] = Field(description="The probability of each verdict, in the order approve, review, reject.")
    by_verdict: dict[str, float] = Field(description="The same, by verdict.")
    needs_receipt: bool
    note: str | None = Field(None, description="A word for the employee, when there is one.")
    trace: list[StepTrace] | None = None


class Expected(BaseModel):
    """The right answer for a claim: the verdict always; whether a receipt is needed where someone says."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"verdict": "review"}]})
    verdict: Verdict
    needs_receipt: bool | None = None


# ---------------------------------------------------------------------------------------------
# The contract (README "Your own pipeline")
# ---------------------------------------------------------------------------------------------
TITLE = "Expense approval"
INTRO = "Approves, reviews or rejects an employee's expense claim, and says why."
Input = Claim
Output = Decision
LABEL = "verdict"
LABELLED_SETS = {"holdout": "holdout.csv"}
SLICES = ()
PROBABILITY = "score"
NEEDS_PERSON = None
PROBABILITIES = ("classify", "probabilities")


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------
def convert(claim: Claim, debug: bool = False) -> tuple[float, dict]:
    rate = resources().rates[claim.currency.value]
    return round(claim.amount * rate, 2), ({"rate": rate} if debug else {})


def check_policy(amount_eur: float, flags: Flags, debug: bool = False) -> tuple[PolicyCheck, dict]:
    limit = flags.receipt_limit
    check = PolicyCheck(limit_eur=limit, over_limit=amount_eur > limit, ratio=round(amount_eur / limit, 3) if limit else 0.0)
    return check, ({"rule": f"receipt needed above {limit} EUR"} if debug else {})


WORD = re.compile(r"[a-z]+")


def classify(text: str, amount_eur: float, debug: bool = False) -> tuple[tuple[dict[str, float], list[WordHit]], dict]:
    weights = resources().weights
    tokens = [*WORD.findall(text.lower()), f"amount_{min(int(math.log10(max(amount_eur, 1))), 4)}"]
    totals = {v.value: weights["prior"][v.value] + sum(weights["words"].get(t, {}).get(v.value, 0.0) for t in tokens) for v in Verdict}
    top = max(totals.values())
    exp = {v: math.exp(s - top) for v, s in totals.items()}
    probs = {v: round(e / sum(exp.values()), 4) for v, e in exp.items()}
    best = max(probs, key=probs.get)
    hits = sorted(dict.fromkeys(t for t in tokens if t in weights["words"]), key=lambda t: -weights["words"][t][best])[:3]
    return (probs, [WordHit(word=t, weight=round(weights["words"][t][best], 3)) for t in hits]), (
        {"probabilities": probs, "tokens": len(tokens)} if debug else {}
    )


def decide(claim: Claim, flags: Flags, probs: dict[str, float], policy: PolicyCheck, debug: bool = False) -> tuple[tuple, dict]:
    verdict, reasons = Verdict(max(probs, key=probs.get)), []
    needs_receipt = policy.over_limit and not claim.receipt
    if needs_receipt and verdict == Verdict.approve:
        verdict, reasons = Verdict.review, ["over the receipt limit without a receipt"]
    if flags.strict and not claim.receipt and verdict == Verdict.approve:
        verdict, reasons = Verdict.review, [*reasons, "strict: no receipt"]
    reasons = reasons or [f"the words of the claim say {verdict.value}"]
    note = "Please attach a receipt." if needs_receipt else None
    return (verdict, reasons, needs_receipt, note), ({"rule": reasons[0]} if debug else {})


def run_batch(claims: list, flags=None, debug: bool = False, timings: dict[str, float] | None = None) -> list[Decision]:
    claims = [Claim.model_validate(c) for c in claims]
    flag_list = [Flags.model_validate(f or {}) for f in (flags if isinstance(flags, list) else [flags] * len(claims))]
    if len(flag_list) != len(claims):
        raise ValueError(f"flags: got {len(flag_list)} sets of flags for {len(claims)} claims")
    timings = {} if timings is None else timings
    answers = []

    def step(trace, name, fn, *args):  # one step, timed, and traced when debugging
        start = time.perf_counter()
        out, details = fn(*args, debug=debug)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
        if debug:
            trace.append(StepTrace(step=name, ms=round((time.perf_counter() - start) * 1000, 3), output=out, details=details))
        return out

    for claim, f in zip(claims, flag_list, strict=True):
        trace: list[StepTrace] = []
        amount = step(trace, "convert", convert, claim)
        policy = step(trace, "check_policy", check_policy, amount, f)
        probs, hits = step(trace, "classify", classify, claim.description, amount)
        verdict, reasons, needs_receipt, note = step(trace, "decide", decide, claim, f, probs, policy)
        answers.append(
            Decision(
                verdict=verdict,
                score=probs[verdict.value],
                amount_eur=amount,
                reasons=reasons,
                policy=policy,
                words=hits,
                scores=[probs[v.value] for v in Verdict],
                by_verdict=probs,
                needs_receipt=needs_receipt,
                note=note,
                trace=trace if debug else None,
            )
        )
    return answers


def run(claim, flags=None, debug: bool = False) -> Decision:
    return run_batch([claim], flags, debug)[0]


# ---------------------------------------------------------------------------------------------
# What the steps run on: built by recipe.py
# ---------------------------------------------------------------------------------------------
class Resources(NamedTuple):
    rates: dict[str, float]
    weights: dict
    manifest: dict


_resources: Resources | None = None
_lock = threading.RLock()


def resources() -> Resources:
    if _resources is None:
        raise RuntimeError("the pipeline has no artifacts loaded: call `from building import builder; builder.ready()` first")
    return _resources


def install(loaded: Resources | None) -> None:
    global _resources
    with _lock:
        _resources = loaded
