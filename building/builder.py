"""The build machinery: data/ in, artifacts/ out (`python -m building build`), around the engineer's recipe.py.

    recipe.DATA files   --recipe.build-->            the recipe's artifact files (say, an index, a classifier)
    the embedding model --export_onnx-->             encoder.onnx, tokenizer.json (when recipe.ENCODER; int8:
                                                     calibrated on recipe.calibration_texts)
    all of it           --manifest, written last-->  manifest.json: fingerprint, every file's size and SHA-256,
                                                     the evaluation on each of model.LABELLED_SETS

`build_artifacts` locks, builds into a staging folder, renames the files into place, installs `recipe.load`'s result
in `model` and evaluates it, and writes the manifest last, which marks the build complete. `ready()` is what every
face calls before its first input: it installs in `model` the saved artifacts when the manifest's fingerprint (data,
model, encoder and code) matches and every file has its recorded SHA-256, else a fresh build. model.py never imports
this module: it only runs on what is installed (whatever `recipe.load` returns, with the manifest as `.manifest`).
"""

import contextlib
import hashlib
import importlib.metadata
import itertools
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

import model
import recipe
from building import contract, files, versions
from building.contract import ContractError
from building.encoders import ModelError, OnnxEncoder, TorchEncoder, load_encoder, model_source, width_problem
from building.files import sha256_file

log = logging.getLogger("triage")
CODE_FILES = ("model.py", "recipe.py", "building/builder.py", "building/encoders.py")  # what the artifacts are built and loaded by
MANIFEST_KEYS = ("pipeline_version", "code", "data", "model", "encoder", "built_at", "artifacts", "version", "based_on", "training_cases")


# ---------------------------------------------------------------------------------------------
# Where: the artifacts' folder, the encoder, the data
# ---------------------------------------------------------------------------------------------
# What the steps run on: TRIAGE_ARTIFACTS_DIR, else the promoted version's folder (versions.py), else artifacts/ (from data/).
# A server resolves it once and sets TRIAGE_ARTIFACTS_DIR for the processes it starts (app/main.py): one version for life
# A served.json that cannot be read leaves artifacts/ in its place and UNSERVABLE saying why: whatever would serve,
# build or load raises it (servable()), while commands that serve nothing (the review queue) still work
def _served_folder() -> tuple[Path, str | None]:
    if os.environ.get("TRIAGE_ARTIFACTS_DIR"):
        return Path(os.environ["TRIAGE_ARTIFACTS_DIR"]), None
    try:
        return versions.served_dir() or model.ROOT / "artifacts", None
    except versions.VersionError as error:
        return model.ROOT / "artifacts", str(error)


ARTIFACTS_DIR, UNSERVABLE = _served_folder()


def servable() -> None:
    """Raise VersionError when served.json could not be read as this process started (UNSERVABLE)."""
    if UNSERVABLE:
        raise versions.VersionError(UNSERVABLE)


# The encoder that runs the embedding model (TRIAGE_ENCODER), when recipe.ENCODER; bench/RESULTS.md compares them:
#   onnx-int8  ONNX Runtime, weights and activations in int8 with fixed scales (the default: fastest, same accuracy)
#   onnx       ONNX Runtime, float32 (the same numbers as PyTorch)
#   torch      PyTorch through sentence-transformers (the reference; imports torch)
ENCODERS = ("onnx-int8", "onnx", "torch")
ENCODER_FILES = ("encoder.onnx", "tokenizer.json")  # the ONNX encoders' model and tokenizer


def encoder_name() -> str:
    """The encoder chosen by TRIAGE_ENCODER (default onnx-int8); an unknown name raises `ModelError`."""
    name = os.environ.get("TRIAGE_ENCODER", ENCODERS[0])
    if name not in ENCODERS:
        raise ModelError(f"TRIAGE_ENCODER={name!r} is not an encoder: choose one of {', '.join(ENCODERS)}")
    return name


def recipe_data() -> dict[str, Path]:
    """The files recipe.py builds the artifacts from (recipe.DATA, in model.DATA_DIR unless absolute)."""
    return {name: model.DATA_DIR / file for name, file in recipe.DATA.items()}


def data_files() -> dict[str, Path]:
    """The inputs the artifacts are built from and evaluated on (recipe.DATA, then the labelled sets): their hashes
    decide when to rebuild."""
    return recipe_data() | contract.labelled_sets()


def check_recipe() -> None:
    """recipe.py declares what the machinery calls; else ContractError naming the part."""
    where = contract.WHERE
    if not isinstance(getattr(recipe, "DATA", None), dict) or not isinstance(getattr(recipe, "ENCODER", None), bool):
        raise ContractError(f"recipe.py: needs DATA (a dict: name -> file in data/) and ENCODER (True or False) ({where})")
    wanted = ("build", "load", "calibration_texts") if recipe.ENCODER else ("build", "load")
    missing = [name for name in wanted if not callable(getattr(recipe, name, None))]
    if missing:
        raise ContractError(f"recipe.py: no function `{missing[0]}` ({where})")


def check_data() -> None:
    """Every file of recipe.DATA is there; else ContractError naming the first that is not."""
    absent = [f"{name}: {path}" for name, path in recipe_data().items() if not path.exists()]
    if absent:
        raise ContractError(f"recipe.py: DATA names a file that is not there ({absent[0]})")


# ---------------------------------------------------------------------------------------------
# What a build is made from
# ---------------------------------------------------------------------------------------------
def fingerprint() -> dict[str, Any]:
    """The data, model, encoder and code a build is made from: the saved artifacts are used while it is the same."""
    found = {
        "pipeline_version": model.PIPELINE_VERSION,
        "code": {file: sha256_file(model.ROOT / file) for file in CODE_FILES},
        "data": {name: sha256_file(path) for name, path in data_files().items()},
    }
    if recipe.ENCODER:
        name, sha = model_source()
        found["model"] = {"name": name if not Path(name).is_dir() else Path(name).parent.name, "sha256": sha}
        found["encoder"] = encoder_record(found["data"])  # which encoder, and what its files are made from
    return found


def encoder_record(data: dict[str, str]) -> dict[str, Any]:
    """What the chosen encoder's files are made from (int8: the calibration texts, by hash; `data` holds the data's
    hashes); an earlier build's files are reused when it is the same."""
    import inspect

    name = encoder_name()
    packages = ("sentence-transformers", "torch") if name == "torch" else ("onnxruntime", "tokenizers", "onnx", "torch")
    record = {"name": name, "model_sha256": model_source()[1], "versions": {p: importlib.metadata.version(p) for p in packages}}
    if name != "torch":
        record["exporter"] = hashlib.sha256(inspect.getsource(export_onnx).encode()).hexdigest()[:16]
    if name == "onnx-int8":
        record["calibration"] = _calibration_sha256(json.dumps(data, sort_keys=True))
    return record


_calibrations: dict[str, str] = {}


def _calibration_sha256(data_key: str) -> str:
    """The SHA-256 of recipe.calibration_texts, once per process for the same data."""
    if data_key not in _calibrations:
        texts = recipe.calibration_texts(recipe_data())
        _calibrations[data_key] = hashlib.sha256(json.dumps(texts).encode()).hexdigest()
    return _calibrations[data_key]


# ---------------------------------------------------------------------------------------------
# The encoder's files: exported once, reused while the model, the exporter and the calibration data stay the same
# ---------------------------------------------------------------------------------------------
def export_onnx(out_dir: Path, int8: bool) -> None:
    """Export the checksum-verified model to `out_dir`/encoder.onnx, with the model's tokenizer.json beside it.

    The graph gives the transformer's token vectors (pooling is done in numpy by `OnnxEncoder`). With `int8`,
    static quantization calibrated on `recipe.calibration_texts`: int8 weights (per channel) and int8 activations
    with scales fixed now, not computed per batch, so an embedding cannot depend on the rest of its batch.
    The feed-forward output projections stay float32 (their inputs, after GELU, have outliers that int8
    cannot hold: quantizing them cost 3 points of accuracy), as do the two attention products.
    Build time only (imports torch): `_build_encoder` runs it in a child process, `python -m building export-onnx DIR`.
    """
    import tempfile
    import warnings

    import onnx
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
        texts = recipe.calibration_texts(recipe_data())

        class CalibrationTexts(CalibrationDataReader):
            batches = iter([encoder.inputs(texts[i : i + 32]) for i in range(0, len(texts), 32)])

            def get_next(self):
                return next(self.batches, None)

        # reduce_range: 7-bit weights. x86 CPUs without VNNI (AVX2 only) multiply u8 by s8 in 16-bit pairs that saturate
        # at 8 bits; at 7 every CPU computes the same integers, so a build's answers do not depend on the machine's CPU
        # (at 8 bits this project's evaluation lost 5 tickets on an AVX2 machine against one with VNNI).
        quantize_static(
            str(prepared), str(out_dir / "encoder.onnx"), CalibrationTexts(), quant_format=QuantFormat.QOperator,
            op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=[n.name for n in matmuls if n.input[1] not in weights] + feed_forward_out,
        )  # fmt: skip


def _build_encoder(staging: Path, record: dict):
    """The chosen encoder, its files (if any) written to `staging`: exported afresh, or reused from the last build when
    they are what its manifest records and fit the embedding model (never kept and trained around: reused_encoder)."""
    if record["name"] == "torch":
        return TorchEncoder(*model_source())
    reused = reused_encoder(staging, record)
    if reused is not None:
        return reused
    log.info("artifacts: exporting the embedding model to ONNX (%s; takes half a minute)", record["name"])
    command = [sys.executable, "-m", "building", "export-onnx", str(staging), *(["--int8"] if record["name"] == "onnx-int8" else [])]
    env = {**os.environ, "TRIAGE_DATA_DIR": str(model.DATA_DIR)}
    done = subprocess.run(command, cwd=model.ROOT, capture_output=True, text=True, env=env)  # torch stays out of this process
    if done.returncode != 0:
        raise ModelError(f"exporting the model to ONNX failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return OnnxEncoder(staging / "encoder.onnx", staging / "tokenizer.json")


def reused_encoder(staging: Path, record: dict) -> OnnxEncoder | None:
    """The last build's encoder files, copied to `staging`, when its manifest records the same `record` and their
    hashes, and the encoder fits the embedding model (width_problem: a file replaced with its manifest edited to match
    passes the hashes); else None, after saying why when there were files to reuse."""
    try:
        previous = json.loads((ARTIFACTS_DIR / "manifest.json").read_text())
        if previous.get("encoder") != record or any(
            sha256_file(ARTIFACTS_DIR / name) != previous["artifacts"][name]["sha256"] for name in ENCODER_FILES
        ):
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    for name in ENCODER_FILES:
        shutil.copyfile(ARTIFACTS_DIR / name, staging / name)
    try:
        encoder = OnnxEncoder(staging / "encoder.onnx", staging / "tokenizer.json")
        problem = width_problem(encoder, model_source()[0])
    except Exception as error:  # any file ONNX Runtime or the tokenizer cannot read is not reused
        problem = f"it cannot be loaded ({type(error).__name__}: {error})"
    if problem is None:
        return encoder
    log.warning("artifacts: %s is not reused: %s; exporting the embedding model again", ARTIFACTS_DIR / "encoder.onnx", problem)
    return None


# ---------------------------------------------------------------------------------------------
# Building, evaluating, loading
# ---------------------------------------------------------------------------------------------
def build_artifacts() -> dict[str, Any]:
    """Build what recipe.py declares from data/, then evaluate it on each labelled set; returns the manifest.

    Safe against a crash and against other processes: one process builds at a time (a file lock), every
    file is written under a temporary name and renamed into place, and the manifest, which records each
    file's size and SHA-256, comes last. A promoted version is never rebuilt (build a candidate instead).
    """
    servable()
    if versions.name_of(ARTIFACTS_DIR):
        raise versions.VersionError(f"{ARTIFACTS_DIR} is a version, served as it was built: python -m loop candidate")
    contract.check()
    with files.file_lock(ARTIFACTS_DIR / "build"):
        return _build().manifest


def build_candidate(training: list) -> dict[str, Any]:
    """A candidate version: data/ and `training` (the suite's edge cases accepted with `train`) built into a new
    folder of versions/, beside what is served, which is not touched. Returns its manifest (`version` names it)."""
    servable()
    contract.check()
    name = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
    target = versions.folder(name)
    target.mkdir(parents=True)
    before = model._resources
    about = {"version": name, "based_on": versions.state()["served"] or "artifacts", "training_cases": [c.id for c in training]}
    try:
        built = _build(target, [(c.ticket, c.expected) for c in training], about)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # no half-built version is left to look complete
        raise
    finally:
        model.install(before)  # this process goes on with what it served before
    return built.manifest


def _build(target: Path | None = None, training: list | tuple = (), about: dict | None = None) -> Any:
    """Build into `target` (default ARTIFACTS_DIR) from data/ and `training` ((input, expected) pairs), install the
    result in `model` and evaluate it on each labelled set; the manifest, written last, gets `about` (a candidate's
    name, origin and training cases)."""
    target = target or ARTIFACTS_DIR
    sets = contract.labelled_sets()
    steps = itertools.count(1)
    progress(next(steps), "checking data/")
    check_recipe()
    check_data()
    for path in sets.values():
        labelled_frame(path)  # each set has the columns the schemas need, before minutes of building
    current = fingerprint()  # what this build is made from: recorded in the manifest
    before = _recorded_files(target)
    with tempfile.TemporaryDirectory(dir=target, prefix=".build-") as tmp:
        staging = Path(tmp)
        if recipe.ENCODER:
            progress(next(steps), f"the {current['encoder']['name']} encoder")
        encoder = _build_encoder(staging, current["encoder"]) if recipe.ENCODER else None
        progress(next(steps), "what recipe.py builds")
        built = recipe.build(recipe_data(), list(training), encoder, staging)
        clash = sorted(set(built or {}) & {*MANIFEST_KEYS, *contract.labelled_sets()})
        if clash:
            raise ContractError(f"recipe.py: build() returns {clash[0]!r}, a key the manifest keeps for itself")
        written = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        manifest = {
            **current,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **(built or {}),
            "artifacts": {name: {"bytes": (staging / name).stat().st_size, "sha256": sha256_file(staging / name)} for name in written},
            **(about or {}),
        }
        progress(next(steps), "writing the files")
        for name in written:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, target / name)
        for name in before - set(written):  # what an earlier build wrote and this one does not
            (target / name).unlink(missing_ok=True)
        loaded = load(manifest, encoder, target)
        model.install(loaded)  # the pipeline runs on what was just built: evaluate it
        for name, path in sets.items():
            progress(next(steps), f"evaluating it on {path.name}")
            log.info("artifacts: evaluating the build on %s", path.name)
            manifest[name] = evaluate(path)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(staging / "manifest.json", target / "manifest.json")  # last: marks the build complete
    return loaded


def progress(step: int, doing: str) -> None:
    """Where a build is ("building the artifacts: step 2 of 5, ..."), for the page a starting server answers with
    (app/litserve_internals.py: StartingPage reads the file TRIAGE_BUILD_PROGRESS names; the server sets it)."""
    total = 3 + bool(recipe.ENCODER) + len(contract.labelled_sets())
    path = os.environ.get("TRIAGE_BUILD_PROGRESS")
    if path:
        with contextlib.suppress(OSError):  # the server's own folder, gone when it stops: never a reason to fail a build
            files.write_atomic(Path(path), f"building the artifacts: step {step} of {total}, {doing}")


def _recorded_files(folder: Path) -> set[str]:
    """The files the manifest in `folder` records (none when it has none)."""
    try:
        recorded = set(json.loads((folder / "manifest.json").read_text())["artifacts"])
    except (OSError, ValueError, KeyError, TypeError):
        recorded = set()
    return {name for name in recorded if _inside(name)}


def _inside(name: str) -> bool:
    """Whether a file name from a manifest stays inside its folder."""
    return isinstance(name, str) and bool(name) and not Path(name).is_absolute() and ".." not in Path(name).parts


def labelled_frame(path: Path):
    """A labelled set as a table of strings; a ContractError naming the file and the column when it lacks one that
    the schemas need (each required Input field, the expected label's)."""
    import pandas as pd

    frame = pd.read_csv(path, dtype=str)
    needed = [name for name, field in model.Input.model_fields.items() if field.is_required()]
    needed += [contract.expected_column()] if contract.label() else []
    missing = [column for column in needed if column not in frame.columns]
    if missing:
        raise ContractError(f"{path}: no column {missing[0]!r} (a labelled set needs {', '.join(needed)})")
    return frame


def evaluate(path: Path | None = None) -> dict[str, Any]:
    """The full pipeline on a labelled CSV (default: the first of model.LABELLED_SETS): its rows, and with a label
    its accuracy and macro-F1, overall and per value of each of model.SLICES the table has."""
    import numpy as np
    from pydantic import TypeAdapter, ValidationError
    from sklearn.metrics import accuracy_score, f1_score

    path = path or next(iter(contract.labelled_sets().values()), None)
    if path is None:
        raise ContractError("model.py: no labelled set to evaluate (LABEL and LABELLED_SETS name none in data/)")
    frame = labelled_frame(path)
    answers = model.run_batch([contract.input_from_row(row) for row in frame.to_dict("records")])
    label = contract.label()
    if not label:
        return {"rows": len(frame)}
    adapter = TypeAdapter(model.Output.model_fields[label].annotation)
    predicted = [str(adapter.dump_python(getattr(a, label), mode="json")) for a in answers]
    try:
        expected = [str(adapter.dump_python(adapter.validate_python(cell), mode="json")) for cell in frame[contract.expected_column()]]
    except ValidationError as error:
        raise ContractError(f"{path}: a value of {contract.expected_column()} is not a {label} ({contract.error_message(error)})") from None
    metrics = {
        "rows": len(frame),
        "accuracy": round(accuracy_score(expected, predicted), 4),
        "macro_f1": round(f1_score(expected, predicted, average="macro"), 4),
    }
    right = np.array(expected) == np.array(predicted)
    for column in contract.slices():
        if column in frame:
            for value, part in frame.groupby(column):
                metrics[f"accuracy_{value}"] = round(float(right[part.index].mean()), 4)
    return metrics


def served() -> dict[str, Any]:
    """What is served, without loading it: the version's name ("artifacts" for artifacts/, built from data/) and the
    model, encoder and data it was built from (artifacts/: what it is built from now; model and encoder None without
    an encoder)."""
    servable()
    if versions.name_of(ARTIFACTS_DIR):
        try:
            saved = json.loads((ARTIFACTS_DIR / "manifest.json").read_text())
            return {"version": saved["version"], **{k: saved.get(k) for k in ("model", "encoder", "data")}}
        except (OSError, ValueError, KeyError, TypeError) as error:
            why = f"its folder {ARTIFACTS_DIR} is gone" if not ARTIFACTS_DIR.is_dir() else f"{type(error).__name__}: {error}"
            fix = "python -m loop rollback, or promote another"
            raise versions.VersionError(f"version {ARTIFACTS_DIR.name} cannot be served ({why}): {fix}") from None
    current = fingerprint()
    return {"version": "artifacts", **{k: current.get(k) for k in ("model", "encoder", "data")}}


def manifest() -> dict:
    """The artifacts' manifest (versions, hashes, eval metrics), without loading the model when it is up to date."""
    servable()
    saved = _fresh_manifest() if model._resources is None else None
    return saved if saved is not None else ready().manifest


def ready() -> Any:
    """What the pipeline runs on, installed in this process once: every face calls this before its first input
    (`load_or_build`: the saved artifacts, or a build first). Later calls return what is installed. A model.py or
    recipe.py that lacks a part of the contract raises ContractError, one line naming it."""
    with _loading:
        if model._resources is None:
            contract.check()
            check_recipe()
            start = time.perf_counter()
            model.install(load_or_build())
            saved = model.resources().manifest
            version = saved.get("version", "artifacts/, built from data/")
            scored = next(((name, path) for name, path in contract.labelled_sets().items() if "accuracy" in saved.get(name, {})), None)
            log.info(
                "pipeline ready in %.1f s: version %s, %s%s",
                time.perf_counter() - start,
                version,
                f"{encoder_name()} encoder" if recipe.ENCODER else "no encoder",
                f", accuracy {saved[scored[0]]['accuracy']} on {scored[1].name}" if scored else "",
            )
    return model.resources()


_loading = threading.Lock()


def load_or_build() -> Any:
    """The saved artifacts when they are fresh and intact; else built afresh (after waiting for a build that another
    process may be running, and looking again). A version's folder is loaded as it was built, or refused, never
    rebuilt."""
    servable()
    if versions.name_of(ARTIFACTS_DIR):
        return load_version(ARTIFACTS_DIR)
    check_data()
    loaded = _load_checked()
    if loaded is None:
        with files.file_lock(ARTIFACTS_DIR / "build"):
            loaded = _load_checked(quiet=True)
            if loaded is None:
                why = "new data, model, encoder or code" if (ARTIFACTS_DIR / "manifest.json").exists() else "none built yet"
                log.info("artifacts: building %s from %s (%s)", ARTIFACTS_DIR, model.DATA_DIR, why)
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


def _load_checked(quiet: bool = False) -> Any:
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


def load_version(folder: Path) -> Any:
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
    """None when every file the manifest records has its size and SHA-256 (and an ONNX encoder's files are among
    them); else what is wrong, naming the file."""
    recorded = manifest.get("artifacts")
    encoder = manifest.get("encoder") or {}
    needed = ENCODER_FILES if isinstance(encoder, dict) and encoder.get("name", "torch") != "torch" else ()
    if not isinstance(recorded, dict) or not set(needed) <= set(recorded) or not all(map(_inside, recorded)):
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


def load(manifest: dict, encoder=None, folder: Path | None = None) -> Any:
    """What `manifest` describes, read from `folder` (default ARTIFACTS_DIR) by `recipe.load`, with the encoder
    (`encoder`: one already made; else the folder's ONNX files, or PyTorch) when recipe.ENCODER; a ValueError when
    the files do not fit together."""
    folder = folder or ARTIFACTS_DIR
    if recipe.ENCODER and encoder is None:
        if manifest["encoder"]["name"] == "torch":
            encoder = TorchEncoder(*model_source())
        else:
            encoder = OnnxEncoder(*(folder / f for f in ENCODER_FILES))
            problem = width_problem(encoder, model_source()[0])
            if problem:  # its hashes may match a manifest edited to match it: never served, rebuilt (or refused: a version)
                raise ValueError(f"{folder / ENCODER_FILES[0]}: {problem}")
    return recipe.load(folder, manifest, encoder)
