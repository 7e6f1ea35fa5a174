"""Building what the pipeline runs on: data/ in, artifacts/ out (`python -m building build`).

    data/articles.csv  --encoder-->  article_vectors --> article_index   articles.faiss, articles.json
    data/train.csv     --encoder-->  trained_classifier                  classifier.npz
    data/orders.py     ----------->  order_filter                        orders.bloom
    the embedding model --------->  export_onnx (int8: calibrated on train.csv)    encoder.onnx, tokenizer.json
    all of it          ----------->  manifest_of (fingerprint, sizes, SHA-256s, evaluation)    manifest.json, last

Each function returns what it is named for; `write_artifacts` does the writes. `build_artifacts` locks, builds into
a staging folder, renames the files into place, installs the result in `model` and evaluates it, and writes the
manifest last, which marks the build complete. `ready()` is what every face calls before its first ticket: it installs
in `model` the saved artifacts when the manifest's fingerprint (data, model, encoder and code) matches and every file
has its recorded SHA-256, else a fresh build. model.py never imports this module: it only runs on what is installed.
"""

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

import model
from building import files, versions
from building.encoders import ModelError, OnnxEncoder, TorchEncoder, load_encoder, model_source
from building.files import sha256_file
from model import PIPELINE_VERSION, normalize

log = logging.getLogger("triage")
CODE_FILES = ("model.py", "building/builder.py", "building/encoders.py")  # what the artifacts are built and loaded by
# The classifier's settings are chosen at each build by cross-validation on train.csv plus the training cases: every
# combination, CV_FOLDS folds stratified by category and voice, scored by macro-F1 averaged over the voices
CLASSIFIER_GRID = {"C": (1.0, 3.0, 10.0, 30.0), "class_weight": (None, "balanced")}
CV_FOLDS = 4
BLOOM_FALSE_POSITIVES = 0.001


# ---------------------------------------------------------------------------------------------
# Where: the artifacts' folder, the encoder, the data
# ---------------------------------------------------------------------------------------------
# What the steps run on: TRIAGE_ARTIFACTS_DIR, else the promoted version's folder (versions.py), else artifacts/ (from data/)
ARTIFACTS_DIR = Path(os.environ.get("TRIAGE_ARTIFACTS_DIR") or versions.served_dir() or model.ROOT / "artifacts")
# The encoder that runs the embedding model (TRIAGE_ENCODER); bench/RESULTS.md compares them:
#   onnx-int8  ONNX Runtime, weights and activations in int8 with fixed scales (the default: fastest, same accuracy)
#   onnx       ONNX Runtime, float32 (the same numbers as PyTorch)
#   torch      PyTorch through sentence-transformers (the reference; imports torch)
ENCODERS = ("onnx-int8", "onnx", "torch")


def encoder_name() -> str:
    """The encoder chosen by TRIAGE_ENCODER (default onnx-int8); an unknown name raises `ModelError`."""
    name = os.environ.get("TRIAGE_ENCODER", ENCODERS[0])
    if name not in ENCODERS:
        raise ModelError(f"TRIAGE_ENCODER={name!r} is not an encoder: choose one of {', '.join(ENCODERS)}")
    return name


def data_files() -> dict[str, Path]:
    """The inputs the artifacts are built from; their hashes decide when to rebuild."""
    paths = {name: model.DATA_DIR / f"{name}.csv" for name in ("articles", "train", "eval", "eval_style")}
    paths = {name: path for name, path in paths.items() if name != "eval_style" or path.exists()}  # a second voice, when there
    paths["orders"] = Path(os.environ.get("TRIAGE_ORDERS_FILE", model.DATA_DIR / "orders.py"))
    return paths


ARTIFACT_FILES = ("articles.faiss", "articles.json", "classifier.npz", "orders.bloom")  # and manifest.json, written last
ENCODER_FILES = ("encoder.onnx", "tokenizer.json")  # the ONNX encoders' model and tokenizer


def artifact_files(encoder: str | None = None) -> tuple[str, ...]:
    """The files a build writes for `encoder` (default: the chosen one), manifest.json aside."""
    return ARTIFACT_FILES + (ENCODER_FILES if (encoder or encoder_name()) != "torch" else ())


# ---------------------------------------------------------------------------------------------
# What a build is made from
# ---------------------------------------------------------------------------------------------
def fingerprint() -> dict[str, Any]:
    """The data, model, encoder and code a build is made from: the saved artifacts are used while it is the same."""
    name, sha = model_source()
    data = {name: sha256_file(path) for name, path in data_files().items()}
    return {
        "pipeline_version": PIPELINE_VERSION,
        "code": {file: sha256_file(model.ROOT / file) for file in CODE_FILES},
        "data": data,
        "model": {"name": name if not Path(name).is_dir() else Path(name).parent.name, "sha256": sha},
        "encoder": encoder_record(data["train"]),  # which encoder, and what its files are made from
    }


def encoder_record(train_sha256: str) -> dict[str, Any]:
    """What the chosen encoder's files are made from (int8 calibrates on data/train.csv, whose hash is given);
    an earlier build's files are reused when it is the same."""
    import inspect

    name = encoder_name()
    packages = ("sentence-transformers", "torch") if name == "torch" else ("onnxruntime", "tokenizers", "onnx", "torch")
    record = {"name": name, "model_sha256": model_source()[1], "versions": {p: importlib.metadata.version(p) for p in packages}}
    if name != "torch":
        record["exporter"] = hashlib.sha256(inspect.getsource(export_onnx).encode()).hexdigest()[:16]
    if name == "onnx-int8":
        record["calibration"] = train_sha256
    return record


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

    vectors = encoder.encode([normalize(t)[0] for t in train.text])
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


def order_numbers() -> list[str]:
    """Every order number the shop knows: from data/orders.py (a seeded generator), or a file with one a line."""
    path = data_files()["orders"]
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


def write_artifacts(staging: Path, articles, index, classifier: model.LinearClassifier, bloom) -> None:
    """Every artifact file but the encoder's and the manifest, into `staging`. Nothing is pickled."""
    import faiss

    faiss.write_index(index, str(staging / "articles.faiss"))
    articles[["id", "title", "category", "body"]].to_json(staging / "articles.json", orient="records", indent=1)
    np.savez(staging / "classifier.npz", coef=classifier.coef, intercept=classifier.intercept, classes=classifier.classes_)
    bloom.save(str(staging / "orders.bloom"))


def manifest_of(staging: Path, current: dict, articles, train, index, orders, chosen: dict) -> dict[str, Any]:
    """What was built, from what, with which libraries; every file's size and SHA-256. `eval` is added once evaluated."""
    return {
        **current,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {p: importlib.metadata.version(p) for p in ("faiss-cpu", "scikit-learn", "rbloom")},
        "classifier": {"type": "LogisticRegression", **chosen["settings"], "train_rows": len(train), "cv": chosen["cv"]},
        "index": {"type": "IndexFlatIP", "articles": len(articles), "dims": index.d},
        "bloom": {"items": len(orders), "false_positive_rate": BLOOM_FALSE_POSITIVES},
        "artifacts": {name: {"bytes": (staging / name).stat().st_size, "sha256": sha256_file(staging / name)} for name in artifact_files()},
    }


# ---------------------------------------------------------------------------------------------
# The encoder's files: exported once, reused while the model, the exporter and the calibration data stay the same
# ---------------------------------------------------------------------------------------------
def export_onnx(out_dir: Path, int8: bool) -> None:
    """Export the checksum-verified model to `out_dir`/encoder.onnx, with the model's tokenizer.json beside it.

    The graph gives the transformer's token vectors (pooling is done in numpy by `OnnxEncoder`). With `int8`,
    static quantization calibrated on the training tickets: int8 weights (per channel) and int8 activations
    with scales fixed now, not computed per batch, so an embedding cannot depend on the rest of its batch.
    The feed-forward output projections stay float32 (their inputs, after GELU, have outliers that int8
    cannot hold: quantizing them cost 3 points of accuracy), as do the two attention products.
    Build time only (imports torch): `_build_encoder` runs it in a child process, `python -m building export-onnx DIR`.
    """
    import tempfile
    import warnings

    import onnx
    import pandas as pd
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

    warnings.filterwarnings("ignore")  # the tracer's warnings about Python control flow in transformers' code
    sentence_model = load_encoder(*model_source())  # checks the weights' SHA-256
    sentence_model.tokenizer.backend_tokenizer.save(str(out_dir / "tokenizer.json"))

    class TokenVectors(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in names)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        fp32 = Path(tmp) / "fp32.onnx" if int8 else out_dir / "encoder.onnx"
        with torch.no_grad():
            torch.onnx.export(
                TokenVectors(sentence_model[0].auto_model.eval()), example, str(fp32), input_names=names, output_names=["tokens"],
                dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "tokens"]}, opset_version=17, dynamo=False,
            )  # fmt: skip
        if not int8:
            return
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        weights = {w.name for w in graph.initializer}
        matmuls = [n for n in graph.node if n.op_type == "MatMul"]
        feed_forward_out = [n.name for n in matmuls if re.search(r"layer\.\d+/output/dense/", n.name)]
        if len(feed_forward_out) != sentence_model[0].auto_model.config.num_hidden_layers:
            raise ModelError(f"found {len(feed_forward_out)} feed-forward output layers in the exported graph: not a BERT model?")
        encoder = OnnxEncoder(fp32, out_dir / "tokenizer.json")
        texts = [normalize(t)[0] for t in pd.read_csv(data_files()["train"], dtype=str).text]

        class TrainingTickets(CalibrationDataReader):
            batches = iter([encoder.inputs(texts[i : i + 32]) for i in range(0, len(texts), 32)])

            def get_next(self):
                return next(self.batches, None)

        # reduce_range: 7-bit weights. x86 CPUs without VNNI (AVX2 only) multiply u8 by s8 in 16-bit pairs that saturate
        # at 8 bits; at 7 every CPU computes the same integers, so a build's answers do not depend on the machine's CPU
        # (at 8 bits this project's evaluation lost 5 tickets on an AVX2 machine against one with VNNI).
        quantize_static(
            str(prepared), str(out_dir / "encoder.onnx"), TrainingTickets(), quant_format=QuantFormat.QOperator,
            op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=[n.name for n in matmuls if n.input[1] not in weights] + feed_forward_out,
        )  # fmt: skip


def _build_encoder(staging: Path, record: dict):
    """The chosen encoder, its files (if any) written to `staging`: exported afresh, or reused from the last build."""
    if record["name"] == "torch":
        return TorchEncoder(*model_source())
    try:
        previous = json.loads((ARTIFACTS_DIR / "manifest.json").read_text())
        reuse = previous.get("encoder") == record and all(
            sha256_file(ARTIFACTS_DIR / name) == previous["artifacts"][name]["sha256"] for name in ENCODER_FILES
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        reuse = False
    if reuse:
        for name in ENCODER_FILES:
            shutil.copyfile(ARTIFACTS_DIR / name, staging / name)
    else:
        log.info("artifacts: exporting the embedding model to ONNX (%s; takes 10 to 20 s)", record["name"])
        command = [sys.executable, "-m", "building", "export-onnx", str(staging), *(["--int8"] if record["name"] == "onnx-int8" else [])]
        env = {**os.environ, "TRIAGE_DATA_DIR": str(model.DATA_DIR)}
        done = subprocess.run(command, cwd=model.ROOT, capture_output=True, text=True, env=env)  # torch stays out of this process
        if done.returncode != 0:
            raise ModelError(f"exporting the model to ONNX failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return OnnxEncoder(staging / "encoder.onnx", staging / "tokenizer.json")


# ---------------------------------------------------------------------------------------------
# Building, evaluating, loading
# ---------------------------------------------------------------------------------------------
def build_artifacts() -> dict[str, Any]:
    """Build the faiss index, the classifier and the Bloom filter from data/, then evaluate; returns the manifest.

    Safe against a crash and against other processes: one process builds at a time (a file lock), every
    file is written under a temporary name and renamed into place, and the manifest, which records each
    file's size and SHA-256, comes last. Nothing is pickled: the classifier is saved as plain arrays.
    A promoted version is never rebuilt (build a candidate instead).
    """
    if versions.name_of(ARTIFACTS_DIR):
        raise versions.VersionError(f"{ARTIFACTS_DIR} is a version, served as it was built: python -m loop candidate")
    with files.file_lock(ARTIFACTS_DIR / "build"):
        return _build().manifest


def build_candidate(training: list[model.EdgeCase]) -> dict[str, Any]:
    """A candidate version: data/ and `training` (the suite's edge cases accepted with `train`) built into a new
    folder of versions/, beside what is served, which is not touched. Returns its manifest (`version` names it)."""
    name = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
    target = versions.folder(name)
    target.mkdir(parents=True)
    before = model._resources
    try:
        built = _build(target, training, {"version": name, "based_on": versions.state()["served"] or "artifacts"})
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # no half-built version is left to look complete
        raise
    finally:
        model.install(before)  # this process goes on with what it served before
    return built.manifest


def _build(target: Path | None = None, training_cases=(), about: dict | None = None) -> model.Resources:
    """Build into `target` (default ARTIFACTS_DIR) from data/ and `training_cases`, install the result in `model` and
    evaluate it on each evaluation set; the manifest, written last, gets `about` (a candidate's name and origin)."""
    import pandas as pd

    target = target or ARTIFACTS_DIR
    articles = pd.read_csv(data_files()["articles"], dtype=str)
    train = pd.read_csv(data_files()["train"], dtype=str).assign(voice="train.csv")
    cases = pd.DataFrame(
        {"text": [c.ticket.text for c in training_cases], "category": [c.expected.category.value for c in training_cases]}
    ).assign(voice="training cases")
    current = fingerprint()  # what this build is made from: recorded in the manifest
    with tempfile.TemporaryDirectory(dir=target, prefix=".build-") as tmp:
        staging = Path(tmp)
        encoder = _build_encoder(staging, current["encoder"])
        index, orders = article_index(article_vectors(articles, encoder)), order_numbers()
        train = pd.concat([train, cases], ignore_index=True)
        grid = len(CLASSIFIER_GRID["C"]) * len(CLASSIFIER_GRID["class_weight"])
        log.info("artifacts: the classifier on %d tickets, its settings chosen of %d by %d-fold CV", len(train), grid, CV_FOLDS)
        classifier, chosen = trained_classifier(train, encoder)
        write_artifacts(staging, articles, index, classifier, order_filter(orders))
        manifest = manifest_of(staging, current, articles, train, index, orders, chosen)
        if about:
            manifest.update(about, training_cases=[c.id for c in training_cases])
        for name in artifact_files():
            os.replace(staging / name, target / name)
        (target / "classifier.joblib").unlink(missing_ok=True)  # the pickled classifier of earlier builds
        loaded = load(manifest, encoder, target)
        model.install(loaded)  # the pipeline runs on what was just built: evaluate it
        log.info("artifacts: evaluating the build (C %s, class weights %s)", chosen["settings"]["C"], chosen["settings"]["class_weight"])
        manifest["eval"] = evaluate()
        if "eval_style" in data_files():
            manifest["eval_style"] = evaluate(data_files()["eval_style"])
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(staging / "manifest.json", target / "manifest.json")  # last: marks the build complete
    return loaded


def evaluate(path: Path | None = None) -> dict[str, Any]:
    """Category accuracy and macro-F1 of the full pipeline on a labelled CSV (default: data/eval.csv)."""
    import pandas as pd
    from sklearn.metrics import accuracy_score, f1_score

    frame = pd.read_csv(path or data_files()["eval"], dtype=str)
    predicted = [r.category.value for r in model.run_batch(list(frame.text))]
    metrics = {
        "rows": len(frame),
        "accuracy": round(accuracy_score(frame.expected_category, predicted), 4),
        "macro_f1": round(f1_score(frame.expected_category, predicted, average="macro"), 4),
    }
    if "difficulty" in frame:
        for level, part in frame.assign(predicted=predicted).groupby("difficulty"):
            metrics[f"accuracy_{level}"] = round(float((part.expected_category == part.predicted).mean()), 4)
    return metrics


def served() -> dict[str, Any]:
    """What is served, without loading it: the version's name ("artifacts" for artifacts/, built from data/) and the
    model, encoder and data it was built from (artifacts/: what it is built from now)."""
    if versions.name_of(ARTIFACTS_DIR):
        saved = json.loads((ARTIFACTS_DIR / "manifest.json").read_text())
        return {"version": saved["version"], **{k: saved[k] for k in ("model", "encoder", "data")}}
    return {"version": "artifacts", **{k: v for k, v in fingerprint().items() if k in ("model", "encoder", "data")}}


def manifest() -> dict:
    """The artifacts' manifest (versions, hashes, eval metrics), without loading the model when it is up to date."""
    saved = _fresh_manifest() if model._resources is None else None
    return saved if saved is not None else ready().manifest


def ready() -> model.Resources:
    """What the pipeline runs on, installed in this process once: every face calls this before its first ticket
    (`load_or_build`: the saved artifacts, or a build first). Later calls return what is installed."""
    with _loading:
        if model._resources is None:
            start = time.perf_counter()
            model.install(load_or_build())
            saved = model.resources().manifest
            version = saved.get("version", "artifacts/, built from data/")
            log.info(
                "pipeline ready in %.1f s: version %s, %s encoder, accuracy %s on eval.csv",
                time.perf_counter() - start,
                version,
                encoder_name(),
                saved["eval"]["accuracy"],
            )
    return model.resources()


_loading = threading.Lock()


def load_or_build() -> model.Resources:
    """The saved artifacts when they are fresh and intact; else built afresh (after waiting for a build that another
    process may be running, and looking again). A version's folder is loaded as it was built, or refused, never
    rebuilt."""
    if versions.name_of(ARTIFACTS_DIR):
        return load_version(ARTIFACTS_DIR)
    loaded = _load_checked()
    if loaded is None:
        with files.file_lock(ARTIFACTS_DIR / "build"):
            loaded = _load_checked(quiet=True)
            if loaded is None:
                log.info("artifacts: building %s from %s (new data, model, encoder or code)", ARTIFACTS_DIR, model.DATA_DIR)
                loaded = _build()
    return loaded


def _fresh_manifest() -> dict | None:
    """The saved manifest when it matches the current data, model and code; None when missing, unreadable or stale."""
    try:
        saved = json.loads((ARTIFACTS_DIR / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    current = fingerprint()
    return saved if isinstance(saved, dict) and {k: saved.get(k) for k in current} == current else None


def _load_checked(quiet: bool = False) -> model.Resources | None:
    """The saved artifacts when they are fresh and intact; None, after saying why, when they must be built."""
    saved = _fresh_manifest()
    if saved is None:
        return None
    problem = artifact_problem(saved)
    if problem is None:
        try:
            return load(saved)
        except Exception as error:  # intact by checksum yet unreadable (say, a library changed its file format)
            problem = f"they cannot be loaded ({type(error).__name__}: {error})"
    if not quiet:
        log.warning("artifacts: %s; rebuilding them from %s", problem, model.DATA_DIR)
    return None


def load_version(folder: Path) -> model.Resources:
    """A version as it was built (its files checked against its manifest); VersionError naming what is wrong."""
    try:
        saved = json.loads((folder / "manifest.json").read_text())
        problem = artifact_problem(saved, folder)
        if problem is None:
            return load(saved, folder=folder)
    except Exception as error:  # missing, unreadable, or files that no longer fit this code
        problem = f"{type(error).__name__}: {error}"
    raise versions.VersionError(f"version {folder.name} cannot be served ({problem}): python -m loop rollback, or promote another")


def artifact_problem(manifest: dict, folder: Path | None = None) -> str | None:
    """None when every artifact file has the size and SHA-256 that the manifest records; else what is wrong, naming the file."""
    recorded = manifest.get("artifacts")
    if not isinstance(recorded, dict) or set(recorded) != set(artifact_files(manifest.get("encoder", {}).get("name"))):
        return "manifest.json records no checksums for the artifact files (an older or foreign build)"
    for name, expected in recorded.items():
        path = (folder or ARTIFACTS_DIR) / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{path} has {path.stat().st_size} bytes, the manifest says {expected['bytes']} (truncated or replaced)"
        if sha256_file(path) != expected["sha256"]:
            return f"{path} does not match its SHA-256 in the manifest (damaged or tampered with)"
    return None


def load(manifest: dict, encoder=None, folder: Path | None = None) -> model.Resources:
    """The artifacts that `manifest` describes, read from `folder` (default ARTIFACTS_DIR; `encoder`: one already made);
    a ValueError when they do not fit together. A folder holds all it needs: a version outlives the data it came from."""
    import faiss
    import rbloom

    faiss.omp_set_num_threads(1)  # 48 articles: a search takes microseconds; OpenMP threads would only spin against the encoder's
    folder = folder or ARTIFACTS_DIR
    saved_articles = json.loads((folder / "articles.json").read_text())  # with their bodies, for the replies
    articles = [{k: a[k] for k in ("id", "title", "category")} for a in saved_articles]
    with np.load(folder / "classifier.npz", allow_pickle=False) as saved:  # plain arrays, never a pickle
        classifier = model.LinearClassifier(saved["coef"], saved["intercept"], saved["classes"])
    if encoder is None:
        on_onnx = manifest["encoder"]["name"] != "torch"
        on_disk = (folder / f for f in ENCODER_FILES)
        encoder = OnnxEncoder(*on_disk) if on_onnx else TorchEncoder(*model_source())
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
