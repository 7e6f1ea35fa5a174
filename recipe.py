"""What the steps run on: the artifacts built from data/ (`python -m building build`), and how they are read back.

    articles.csv  --encoder-->  article_vectors --> article_index    articles.faiss, articles.json
    train.csv     --encoder-->  trained_classifier                  classifier.npz
    orders.py     ----------->  order_filter                        orders.bloom

This is the engineer's file, beside model.py: the build machinery (building/builder.py) hashes DATA into the
fingerprint, exports the sentence encoder when ENCODER (int8: calibrated on `calibration_texts`), calls `build` on a
staging folder, records every file it wrote with its size and SHA-256, and gives `load`'s result to `model.install`.
Each function returns what it is named for; `build` does the writes. Nothing is pickled.
"""

import csv
import importlib.metadata
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

import model

log = logging.getLogger("triage")
# name -> file in model.DATA_DIR (or an absolute path) the artifacts are built from: a change to one rebuilds them
DATA = {"articles": "articles.csv", "train": "train.csv", "orders": os.environ.get("TRIAGE_ORDERS_FILE", "orders.py")}
ENCODER = True  # the machinery makes the sentence encoder (TRIAGE_ENCODER) and hands it to build() and load()
# The classifier's settings are chosen at each build by cross-validation on train.csv plus the training cases: every
# combination, CV_FOLDS folds stratified by category and voice, scored by macro-F1 averaged over the voices
CLASSIFIER_GRID = {"C": (1.0, 3.0, 10.0, 30.0), "class_weight": (None, "balanced")}
CV_FOLDS = 4
BLOOM_FALSE_POSITIVES = 0.001


def calibration_texts(data: dict[str, Path]) -> list[str]:
    """The texts the int8 encoder's fixed scales are calibrated on: the normalized training tickets."""
    with open(data["train"], newline="", encoding="utf-8") as f:
        return [model.normalize(row["text"])[0] for row in csv.DictReader(f)]


# ---------------------------------------------------------------------------------------------
# The artifacts, one function each
# ---------------------------------------------------------------------------------------------
def article_vectors(articles, encoder) -> np.ndarray:
    """An article is found by its title as much as by its body: the normalized sum of both embeddings."""
    vectors = encoder.encode(list(articles.title)) + encoder.encode(list(articles.title + ". " + articles.body))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def article_index(article_vectors: np.ndarray):
    """Exact inner-product search over the articles (48 of them: no approximate index needed)."""
    import faiss

    index = faiss.IndexFlatIP(article_vectors.shape[1])
    index.add(article_vectors)
    return index


def trained_classifier(train, encoder) -> tuple[model.LinearClassifier, dict[str, Any]]:
    """Logistic regression on the embeddings of the normalized training tickets (and training cases), as plain arrays,
    with the settings `chosen_settings` finds best; returns it and what was chosen, and why (for the manifest)."""
    from sklearn.linear_model import LogisticRegression

    vectors = encoder.encode([model.normalize(t)[0] for t in train.text])
    chosen = chosen_settings(vectors, train.category.to_numpy(), train.voice.to_numpy())
    classifier = LogisticRegression(**chosen["settings"], max_iter=5000).fit(vectors, train.category)
    return model.LinearClassifier(classifier.coef_, classifier.intercept_, classifier.classes_.astype(str)), chosen


def chosen_settings(vectors: np.ndarray, labels: np.ndarray, voices: np.ndarray) -> dict[str, Any]:
    """The classifier's settings (C, class weights) that cross-validate best: folds stratified by category and voice
    (train.csv, the training cases), each fold scored by macro-F1 averaged over the voices, so that a new voice of a
    few dozen cases weighs as much as the 948 training tickets and neither swamps the choice. Ties go to the first."""
    import itertools

    from joblib import Parallel, delayed
    from sklearn.model_selection import StratifiedKFold

    strata = np.char.add(labels.astype(str), np.char.add("|", voices.astype(str)))
    if min(np.unique(strata, return_counts=True)[1]) < CV_FOLDS:  # a voice too small to be in every fold
        strata = labels
    scored = np.unique(voices, return_counts=True)
    voices_scored = [v for v, n in zip(*scored, strict=True) if n >= 4 * CV_FOLDS] or [None]  # a voice of a handful: all rows as one
    folds = list(StratifiedKFold(CV_FOLDS, shuffle=True, random_state=0).split(vectors, strata))
    grid = [dict(zip(CLASSIFIER_GRID, values, strict=True)) for values in itertools.product(*CLASSIFIER_GRID.values())]
    scores = Parallel(n_jobs=min(2, os.cpu_count() or 1), prefer="threads")(  # threads: a daemonic worker may build too
        delayed(_cv_score)(vectors, labels, voices, folds, settings, voices_scored) for settings in grid
    )
    best = int(np.argmax(scores))
    return {
        "settings": grid[best],
        "cv": {"folds": CV_FOLDS, "metric": "macro-F1, mean over voices", "voices": {str(v): int(n) for v, n in zip(*scored, strict=True)}}
        | {"score": round(scores[best], 4), "grid": [{**g, "score": round(s, 4)} for g, s in zip(grid, scores, strict=True)]},
    }


def _cv_score(vectors, labels, voices, folds, settings: dict, voices_scored: list) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    scores = []
    for fit, held in folds:
        predicted = LogisticRegression(**settings, max_iter=5000).fit(vectors[fit], labels[fit]).predict(vectors[held])
        for voice in voices_scored:
            mine = slice(None) if voice is None else voices[held] == voice
            scores.append(f1_score(labels[held][mine], predicted[mine], average="macro", zero_division=0))
    return float(np.mean(scores))


def order_numbers(path: Path) -> list[str]:
    """Every order number the shop knows: from data/orders.py (a seeded generator), or a file with one a line."""
    if path.suffix == ".py":  # the bundled seeded generator
        spec = importlib.util.spec_from_file_location("triage_orders", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.order_numbers()
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def order_filter(orders: list[str]):
    """A Bloom filter of the order numbers (0.1 % false positives), hashed with `model.order_hash`."""
    import rbloom

    bloom = rbloom.Bloom(len(orders), BLOOM_FALSE_POSITIVES, model.order_hash)
    bloom.update(orders)
    return bloom


# ---------------------------------------------------------------------------------------------
# Building and loading: what the machinery calls
# ---------------------------------------------------------------------------------------------
def build(data: dict[str, Path], training: list[tuple[BaseModel, BaseModel]], encoder, out: Path) -> dict[str, Any]:
    """The index, the classifier (on train.csv and the training cases, `(ticket, expected)` pairs) and the Bloom
    filter, written into `out`; returns what the manifest records about them."""
    import faiss
    import pandas as pd

    articles = pd.read_csv(data["articles"], dtype=str)
    train = pd.read_csv(data["train"], dtype=str).assign(voice="train.csv")
    cases = pd.DataFrame({"text": [t.text for t, _ in training], "category": [e.category.value for _, e in training]})
    train = pd.concat([train, cases.assign(voice="training cases")], ignore_index=True)
    index, orders = article_index(article_vectors(articles, encoder)), order_numbers(data["orders"])
    grid = len(CLASSIFIER_GRID["C"]) * len(CLASSIFIER_GRID["class_weight"])
    log.info("artifacts: the classifier on %d tickets, its settings chosen of %d by %d-fold CV", len(train), grid, CV_FOLDS)
    classifier, chosen = trained_classifier(train, encoder)
    log.info("artifacts: chose C %s, class weights %s", chosen["settings"]["C"], chosen["settings"]["class_weight"])

    faiss.write_index(index, str(out / "articles.faiss"))
    articles[["id", "title", "category", "body"]].to_json(out / "articles.json", orient="records", indent=1)
    np.savez(out / "classifier.npz", coef=classifier.coef, intercept=classifier.intercept, classes=classifier.classes_)
    order_filter(orders).save(str(out / "orders.bloom"))
    return {
        "versions": {p: importlib.metadata.version(p) for p in ("faiss-cpu", "scikit-learn", "rbloom")},
        "classifier": {"type": "LogisticRegression", **chosen["settings"], "train_rows": len(train), "cv": chosen["cv"]},
        "index": {"type": "IndexFlatIP", "articles": len(articles), "dims": index.d},
        "bloom": {"items": len(orders), "false_positive_rate": BLOOM_FALSE_POSITIVES},
    }


def load(folder: Path, manifest: dict, encoder) -> model.Resources:
    """The artifacts in `folder`, ready for `model.install`; a ValueError naming what does not fit together.
    A folder holds all it needs: a version outlives the data it came from."""
    import faiss
    import rbloom

    faiss.omp_set_num_threads(1)  # 48 articles: a search takes microseconds; OpenMP threads would only spin against the encoder's
    saved_articles = json.loads((folder / "articles.json").read_text())  # with their bodies, for the replies
    articles = [{k: a[k] for k in ("id", "title", "category")} for a in saved_articles]
    with np.load(folder / "classifier.npz", allow_pickle=False) as saved:  # plain arrays, never a pickle
        classifier = model.LinearClassifier(saved["coef"], saved["intercept"], saved["classes"])
    loaded = model.Resources(
        encoder=encoder,
        index=faiss.read_index(str(folder / "articles.faiss")),
        articles=articles,
        articles_by_id={a["id"]: a for a in saved_articles},
        classifier=classifier,
        bloom=rbloom.Bloom.load(str(folder / "orders.bloom"), model.order_hash),
        manifest=manifest,
    )
    problem = shape_problem(loaded)
    if problem:  # hashes prove the files are the ones the manifest names, not that they fit together
        raise ValueError(problem)
    return loaded


def shape_problem(res: model.Resources) -> str | None:
    """None when the artifacts fit together; else what does not, named: the encoder's width, the index's and the
    classifier's, the classifier's classes against `Category`, the index's size against the articles."""
    width = res.encoder.encode(["shape check"]).shape[-1]
    coef, intercept, classes = res.classifier
    if res.index.d != width:
        return f"articles.faiss holds {res.index.d}-dimensional vectors, the encoder makes {width}"
    if coef.ndim != 2 or coef.shape[1] != width or intercept.shape != (coef.shape[0],) or len(classes) != coef.shape[0]:
        return f"classifier.npz has weights {coef.shape}, intercept {intercept.shape} and {len(classes)} classes; the encoder makes {width}"
    if sorted(map(str, classes)) != sorted(c.value for c in model.Category):
        return f"classifier.npz knows the classes {sorted(map(str, classes))}, the pipeline {sorted(c.value for c in model.Category)}"
    if res.index.ntotal != len(res.articles) or len(res.articles_by_id) != len(res.articles):
        return f"articles.faiss holds {res.index.ntotal} vectors for {len(res.articles)} articles in articles.json"
    return None
