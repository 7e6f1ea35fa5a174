"""The data the pipeline learns from and is judged on: the files' shape, the intents of data/INTENTS.md, the second
evaluation set (data/eval_style.csv) kept apart from the training set, and per-intent accuracy in batch reports."""

import json
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pytest

import model
from building import builder

DATA = model.DATA_DIR
CATEGORIES = {c.value for c in model.Category}
MIN_TRAIN_ROWS_PER_INTENT = 8
MAX_COSINE_TO_TRAIN = 0.95  # an eval_style ticket this close to a training ticket would be a paraphrase of it


def read(name: str) -> pd.DataFrame:
    return pd.read_csv(DATA / name, dtype=str, keep_default_na=False)


def intents() -> dict[str, str]:
    """data/INTENTS.md as {intent: category}: an intent is a line "- `name`: ..." under a heading "## category"."""
    found, category = {}, None
    for line in (DATA / "INTENTS.md").read_text().splitlines():
        if heading := re.match(r"## (\w+)", line):
            category = heading.group(1)
        elif item := re.match(r"- `(\w+)`: \S", line):
            assert category is not None, f"{item.group(1)} is listed before any category"
            assert item.group(1) not in found, f"intent {item.group(1)} is listed twice"
            found[item.group(1)] = category
    return found


def normalized(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def test_intents_document_covers_every_category_with_three_to_six_intents():
    per_category = Counter(intents().values())
    assert set(per_category) == CATEGORIES
    assert all(3 <= n <= 6 for n in per_category.values()), per_category


def test_train_schema():
    train = read("train.csv")
    assert list(train.columns[:3]) == ["text", "category", "intent"]
    assert (train.text.str.strip() != "").all()
    assert set(train.category) <= CATEGORIES
    assert train.category.value_counts().min() >= 60
    duplicates = train.text.map(normalized).duplicated(keep=False)
    assert not duplicates.any(), f"duplicated training tickets: {list(train.text[duplicates])}"


def test_eval_style_schema():
    style = read("eval_style.csv")
    assert list(style.columns) == ["text", "expected_category", "intent"]
    assert 160 <= len(style) <= 240 and (style.text.str.strip() != "").all()
    per_category = style.expected_category.value_counts()
    assert set(per_category.index) == CATEGORIES and per_category.between(20, 30).all(), per_category.to_dict()
    assert not style.text.map(normalized).duplicated().any()


@pytest.mark.parametrize(("name", "label"), [("train.csv", "category"), ("eval_style.csv", "expected_category")])
def test_every_intent_is_listed_under_its_category(name, label):
    listed, frame = intents(), read(name)
    unknown = sorted(set(frame.intent) - set(listed))
    assert not unknown, f"{name}: intents not in INTENTS.md: {unknown}"
    misplaced = frame[[listed[i] != c for i, c in zip(frame.intent, frame[label], strict=True)]]
    assert misplaced.empty, f"{name}: rows whose intent belongs to another category: {misplaced.values.tolist()[:5]}"


def test_every_intent_has_enough_training_rows():
    counts = read("train.csv").intent.value_counts()
    few = {i: int(counts.get(i, 0)) for i in intents() if counts.get(i, 0) < MIN_TRAIN_ROWS_PER_INTENT}
    assert not few, f"intents with fewer than {MIN_TRAIN_ROWS_PER_INTENT} training rows: {few}"


def test_eval_style_is_not_in_the_training_set():
    train, style = read("train.csv"), read("eval_style.csv")
    same = set(style.text.map(normalized)) & set(train.text.map(normalized))
    assert not same, f"eval_style tickets also in train.csv: {sorted(same)}"
    train_vectors, _ = model.embed(list(train.text))
    style_vectors, _ = model.embed(list(style.text))
    similarity = np.asarray(style_vectors) @ np.asarray(train_vectors).T  # unit vectors: cosine similarity
    nearest = similarity.max(axis=1)
    close = [
        (style.text[i], train.text[int(similarity[i].argmax())], round(float(nearest[i]), 3))
        for i in np.flatnonzero(nearest >= MAX_COSINE_TO_TRAIN)
    ]
    assert not close, f"eval_style tickets near a training ticket (cosine >= {MAX_COSINE_TO_TRAIN}): {close}"


def test_eval_style_accuracy_is_recorded_in_the_manifest():
    manifest = builder.manifest()
    if "eval_style" not in manifest:
        pytest.skip("the manifest has no 'eval_style' key: this build does not evaluate data/eval_style.csv")
    recorded = manifest["eval_style"]
    assert recorded["rows"] == len(read("eval_style.csv"))
    assert recorded["accuracy"] >= 0.90, recorded


def test_batch_report_shows_accuracy_per_intent(tmp_path):
    style = read("eval_style.csv")
    sample = style.groupby("expected_category").head(2).reset_index(drop=True)  # 16 tickets, two a category
    sample.to_csv(tmp_path / "tickets.csv", index=False)
    out = tmp_path / "scored.csv"
    command = [sys.executable, "batch.py", tmp_path / "tickets.csv", "-o", out, "--quiet", "--slice", "intent"]
    result = subprocess.run(command, cwd=model.ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.with_suffix(".json").read_text())
    scored = pd.read_csv(out, dtype=str, keep_default_na=False)
    table = {row["intent"]: row for row in summary["per_slice"]["intent"]}
    assert set(table) == set(sample.intent) and sum(row["rows"] for row in table.values()) == len(sample)
    for intent, part in scored.groupby("intent"):
        right = int((part.category == part.expected_category).sum())
        assert table[intent]["correct"] == right and table[intent]["accuracy"] == round(right / len(part), 4)
        assert table[intent]["category"] == part.expected_category.iloc[0]
    page = out.with_suffix(".html").read_text()
    assert "Per intent" in page and all(intent in page for intent in table)
    without = tmp_path / "plain.csv"
    sample.drop(columns="intent").to_csv(without, index=False)
    result = subprocess.run(
        [*command[:2], without, "-o", tmp_path / "plain_scored.csv", "--quiet"], cwd=model.ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "intent" not in json.loads((tmp_path / "plain_scored.json").read_text()).get("per_slice", {})
