"""The encoders: ONNX Runtime float32 gives PyTorch's embeddings, the int8 default is batch-independent and as accurate,
and the processes that serve never import torch."""

import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from conftest import Server, example_input, free_port

import model
from building import builder, encoders
from building.files import sha256_file

ROOT = model.ROOT


@pytest.fixture(scope="module")
def eval_texts() -> list[str]:
    return [model.normalize(t)[0] for t in pd.read_csv(model.DATA_DIR / "eval.csv", dtype=str).text]


@pytest.fixture(scope="module")
def torch_vectors(eval_texts) -> np.ndarray:
    return encoders.TorchEncoder(*encoders.model_source()).encode(eval_texts)


def test_the_default_encoder_is_int8_onnx_and_recorded():
    assert os.environ.get("TRIAGE_ENCODER") in (None, "onnx-int8"), "run the suite with the default encoder"
    manifest = builder.ready().manifest
    assert manifest["encoder"]["name"] == "onnx-int8" and isinstance(builder.ready().encoder, encoders.OnnxEncoder)
    assert {"encoder.onnx", "tokenizer.json"} <= set(manifest["artifacts"])
    assert manifest["encoder"]["model_sha256"] == encoders.OFFICIAL_MODEL_SHA256


def test_float32_onnx_gives_pytorchs_embeddings(tmp_path, eval_texts, torch_vectors):
    subprocess.run([sys.executable, "-m", "building", "export-onnx", str(tmp_path)], cwd=ROOT, check=True, capture_output=True)
    vectors = encoders.OnnxEncoder(tmp_path / "encoder.onnx", tmp_path / "tokenizer.json").encode(eval_texts)
    cosine = (vectors * torch_vectors).sum(axis=1)
    assert cosine.min() >= 0.9999, cosine.min()


def test_int8_embeddings_stay_close_to_pytorchs(eval_texts, torch_vectors):
    cosine = (builder.ready().encoder.encode(eval_texts) * torch_vectors).sum(axis=1)
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.97, (cosine.mean(), cosine.min())


def test_an_embedding_does_not_depend_on_its_batch(eval_texts):
    """Bit for bit: alone, in a shuffled batch of all eval tickets, and padded beside the longest ticket."""
    encoder = builder.ready().encoder
    together = encoder.encode(eval_texts)
    order = list(range(len(eval_texts)))
    random.Random(7).shuffle(order)
    shuffled = encoder.encode([eval_texts[i] for i in order])
    longest = max(eval_texts, key=len)
    for k, i in enumerate(order):
        alone = encoder.encode([eval_texts[i]])[0]
        assert np.array_equal(alone, together[i]) and np.array_equal(alone, shuffled[k]), eval_texts[i]
        assert np.array_equal(alone, encoder.encode([eval_texts[i], longest])[0])


def test_texts_run_in_groups_of_similar_length():
    """Sorted by token count; a group holds at most ONNX_BATCH_SIZE texts and pads at most ONNX_PADDING times its real
    tokens; four short and four long tickets (a server batch) run as two groups, not one padded to the longest."""
    assert encoders.length_groups([90, 8, 100, 9, 95, 10, 100, 8]) == [[1, 7, 3, 5], [0, 4, 2, 6]]
    lengths = np.random.default_rng(0).integers(3, 200, 500).tolist()
    groups = encoders.length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(500))
    assert [lengths[i] for g in groups for i in g] == sorted(lengths)
    for group in groups:
        tokens = [lengths[i] for i in group]
        assert len(group) <= encoders.ONNX_BATCH_SIZE
        assert len(group) == 1 or len(group) * max(tokens) <= encoders.ONNX_PADDING * sum(tokens)
    assert encoders.length_groups([7] * 40) == [list(range(16)), list(range(16, 32)), list(range(32, 40))]


def test_a_batch_is_padded_to_its_longest_text_only():
    """Padding costs: a batch of short tickets runs at their length, never at the saved tokenizer's 128 tokens
    (an encoder that padded every batch to 128 ran 9x slower, with the same answers)."""
    encoder = builder.ready().encoder
    texts = ["hi", "where is my parcel"]
    lengths = [len(encoder.tokenizer.encode(t)) for t in texts]
    assert encoder.inputs(texts)["input_ids"].shape == (2, max(lengths)) and max(lengths) < 16, lengths


def test_run_equals_run_batch_for_every_eval_ticket_in_a_shuffled_batch():
    tickets = list(pd.read_csv(model.DATA_DIR / "eval.csv", dtype=str).text)
    order = list(range(len(tickets)))
    random.Random(11).shuffle(order)
    batched = model.run_batch([tickets[i] for i in order])
    for k, i in enumerate(order):
        assert model.run(tickets[i]) == batched[k], tickets[i]


def test_an_unknown_encoder_is_refused_naming_the_choices():
    done = subprocess.run(
        [sys.executable, "-m", "building", "eval"],
        cwd=ROOT,
        env={**os.environ, "TRIAGE_ENCODER": "tensorflow"},
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "TRIAGE_ENCODER='tensorflow'" in done.stderr and "onnx-int8, onnx, torch" in done.stderr


def test_the_torch_encoder_builds_its_own_artifacts_and_the_default_is_as_accurate(tmp_path):
    """TRIAGE_ENCODER=torch still works (the reference), and the default's accuracy is within 0.01 of it. Built by a
    server's first start, which answers from its first second while it builds (issue 35): /live 200, /health and
    /predict 503 naming the build's step, / a page that reloads itself; never a refused connection once it answered."""
    port, seen, started = free_port(), [], threading.Event()

    def ask() -> None:
        while not started.is_set():
            try:
                seen.append((requests.get(f"http://127.0.0.1:{port}/live", timeout=5).status_code, "live"))
                health = requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
                seen.append((health.status_code, health.text))
                answer = requests.post(f"http://127.0.0.1:{port}/predict", json=example_input(), timeout=5)
                seen.append((answer.status_code, answer.json()["detail"] if answer.status_code == 503 else "answered"))
                page = requests.get(f"http://127.0.0.1:{port}/", headers={"accept": "text/html"}, timeout=5)
                seen.append((page.status_code, "reloads" if 'http-equiv="refresh"' in page.text else page.text[:200]))
            except requests.ConnectionError:
                seen.append(("refused", ""))
            time.sleep(0.5)

    asking = threading.Thread(target=ask)
    asking.start()
    try:
        server = Server(port=port, wait_for_ui=False, TRIAGE_ENCODER="torch", TRIAGE_ARTIFACTS_DIR=str(tmp_path))
    finally:
        started.set()
        asking.join()
    server.stop()
    answered = seen[next(i for i, (status, _) in enumerate(seen) if status != "refused") :]
    assert ("refused", "") not in answered, seen  # once it answered, it always did
    building = [text for status, text in answered if status == 503 and "building the artifacts: step" in text]
    assert any(re.fullmatch(r"not ready: building the artifacts: step \d of \d, .+", text) for text in building), seen
    assert any(text.startswith("the server is starting (building the artifacts: step ") for text in building), seen
    assert (200, "live") in answered and (503, "reloads") in answered, seen
    torch_manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert torch_manifest["encoder"]["name"] == "torch" and "encoder.onnx" not in torch_manifest["artifacts"]
    assert not (tmp_path / "encoder.onnx").exists()
    default = builder.ready().manifest["eval"]
    assert abs(default["accuracy"] - torch_manifest["eval"]["accuracy"]) <= 0.01, (default, torch_manifest["eval"])


def test_batch_py_never_imports_torch(tmp_path):
    source = tmp_path / "tickets.csv"
    pd.read_csv(model.DATA_DIR / "eval.csv").head(20).to_csv(source, index=False)
    code = (
        "import sys, batch; code = batch.main([sys.argv[1], '-o', sys.argv[2]]); "
        "print(code, sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(source), str(tmp_path / "out.csv")], cwd=ROOT, capture_output=True, text=True)
    assert done.stdout.split("\n")[-2] == "0 []", done.stdout + done.stderr
    assert Path(tmp_path / "out.csv").is_file()


def test_workers_times_threads_fit_the_cores_the_process_may_use(monkeypatch):
    """By default each of TRIAGE_WORKERS workers gets its share of the usable cores (at least one); TRIAGE_ORT_THREADS overrides."""
    cores = len(os.sched_getaffinity(0))
    files = builder.ARTIFACTS_DIR / "encoder.onnx", builder.ARTIFACTS_DIR / "tokenizer.json"
    builder.ready()  # the artifacts exist
    for workers, threads in ((None, cores), ("1", cores), ("2", max(1, cores // 2)), (str(cores * 4), 1)):
        monkeypatch.delenv("TRIAGE_ORT_THREADS", raising=False)
        if workers is None:
            monkeypatch.delenv("TRIAGE_WORKERS", raising=False)
        else:
            monkeypatch.setenv("TRIAGE_WORKERS", workers)
        assert encoders.OnnxEncoder(*files).session.get_session_options().intra_op_num_threads == threads, (workers, cores)
    monkeypatch.setenv("TRIAGE_ORT_THREADS", "3")
    assert encoders.OnnxEncoder(*files).session.get_session_options().intra_op_num_threads == 3
    code = (
        "import os; from building import encoders; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); print(encoders.ort_threads())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRIAGE_WORKERS", "TRIAGE_ORT_THREADS")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "1", done.stdout + done.stderr  # a process pinned to one core runs one thread


def narrow_onnx(path: Path, vocabulary: int, width: int = 8) -> None:
    """An ONNX encoder of the wrong shape: the exported one's inputs and output, `width`-dimensional token vectors."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    names = ["input_ids", "attention_mask", "token_type_ids"]
    table = numpy_helper.from_array(np.random.default_rng(0).standard_normal((vocabulary, width)).astype(np.float32), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["tokens"])],
        "narrow",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "tokens"]) for n in names],
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", "tokens", width])],
        [table],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_a_resealed_encoder_of_the_wrong_shape_is_exported_again_never_trained_around(tmp_path, monkeypatch):
    """encoder.onnx replaced by one of another width, the manifest's hashes edited to match: the hashes pass, so only the
    shape tells. It is neither loaded nor reused by the rebuild (which trained the rest around it): exported again from
    the packaged model, and the log names it. Float32 ONNX (TRIAGE_ENCODER=onnx), the quicker export: one build."""
    from tokenizers import Tokenizer

    folder = tmp_path / "artifacts"
    builder.ready()
    shutil.copytree(builder.ARTIFACTS_DIR, folder, ignore=shutil.ignore_patterns(".*"))
    narrow_onnx(folder / "encoder.onnx", Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size())
    monkeypatch.setenv("TRIAGE_ENCODER", "onnx")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["encoder"] = builder.encoder_record(manifest["data"])  # as a float32 build records it: fresh, and reusable
    narrow = folder / "encoder.onnx"
    manifest["artifacts"]["encoder.onnx"] = {"bytes": narrow.stat().st_size, "sha256": sha256_file(narrow)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    resealed = manifest["artifacts"]["encoder.onnx"]["sha256"]

    env = {**os.environ, "TRIAGE_ARTIFACTS_DIR": str(folder)}
    done = subprocess.run([sys.executable, "-m", "building", "eval"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rebuilt = json.loads((folder / "manifest.json").read_text())
    assert rebuilt["artifacts"]["encoder.onnx"]["sha256"] == sha256_file(folder / "encoder.onnx") != resealed, done.stderr
    served = encoders.OnnxEncoder(folder / "encoder.onnx", folder / "tokenizer.json")
    model_dir = encoders.model_source()[0]
    assert served.encode(["a text"]).shape == (1, encoders.model_width(model_dir)) and encoders.model_width(model_dir) != 8
    assert f"{folder / 'encoder.onnx'} is not reused: it gives 8-dimensional vectors, the embedding model" in done.stderr, done.stderr
