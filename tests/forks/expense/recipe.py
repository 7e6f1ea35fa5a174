"""What the expense pipeline runs on: the exchange rates and the word weights, built from data/ by building/."""

import csv
import json
import math
import re
from collections import Counter
from pathlib import Path

import model

DATA = {"rates": "rates.csv", "train": "train.csv"}  # in data/: a change rebuilds
ENCODER = False  # no sentence encoder


def build(data: dict[str, Path], training: list, encoder, out: Path) -> dict:
    """rates.json from rates.csv; weights.json: per word, the log-odds of each verdict (add-one smoothing) from
    train.csv and the loop's training cases."""
    with open(data["rates"], newline="") as f:
        rates = {row["currency"]: float(row["eur"]) for row in csv.DictReader(f)}
    with open(data["train"], newline="") as f:
        rows = [(row["description"], float(row["amount"]) * rates[row["currency"]], row["verdict"]) for row in csv.DictReader(f)]
    rows += [(claim.description, claim.amount * rates[claim.currency.value], expected.verdict.value) for claim, expected in training]
    verdicts = [v.value for v in model.Verdict]
    counts = {v: Counter() for v in verdicts}
    for text, amount, verdict in rows:
        counts[verdict].update([*re.findall(r"[a-z]+", text.lower()), f"amount_{min(int(math.log10(max(amount, 1))), 4)}"])
    vocabulary = sorted(set().union(*counts.values()))
    totals = {v: sum(counts[v].values()) + len(vocabulary) for v in verdicts}
    words = {w: {v: round(math.log((counts[v][w] + 1) / totals[v]), 5) for v in verdicts} for w in vocabulary}
    prior = {v: round(math.log(sum(r[2] == v for r in rows) / len(rows)), 5) for v in verdicts}
    (out / "rates.json").write_text(json.dumps(rates))
    (out / "weights.json").write_text(json.dumps({"prior": prior, "words": words}))
    return {"classifier": {"type": "word log-odds", "train_rows": len(rows), "words": len(vocabulary)}}


def load(folder: Path, manifest: dict, encoder) -> model.Resources:
    rates = json.loads((folder / "rates.json").read_text())
    weights = json.loads((folder / "weights.json").read_text())
    if set(rates) != {c.value for c in model.Currency}:
        raise ValueError(f"rates.json has rates for {sorted(rates)}, the pipeline's currencies are {[c.value for c in model.Currency]}")
    if set(weights["prior"]) != {v.value for v in model.Verdict}:
        raise ValueError(f"weights.json knows the verdicts {sorted(weights['prior'])}")
    return model.Resources(rates=rates, weights=weights, manifest=manifest)
