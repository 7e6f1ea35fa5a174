"""Support-ticket triage: the pipeline, read top to bottom.

An online shop's customer message goes through six steps:

    normalize -> find_orders -> embed -> retrieve -> classify -> decide

1. normalize     clean unicode and whitespace, mask e-mail addresses, phone and card numbers
2. find_orders   8-digit order numbers in the text, checked against a Bloom filter of all orders
3. embed         a sentence embedding (all-MiniLM-L6-v2 on ONNX Runtime, int8), batched
4. retrieve      the closest help-centre articles (faiss index over data/articles.csv)
5. classify      one of eight categories (logistic regression on embeddings of data/train.csv)
6. decide        team, urgency, and whether an automatic reply is safe or a person must answer

Every step is a plain function that can be called on its own; with `debug=True` it also returns
what it saw and did. `run()` and `run_batch()` compose them, driven by `Flags`. The schemas below
are the single source of truth for the UI, the API and the batch report. What the steps run on
(index, classifier, Bloom filter, encoder: `resources()`, at the bottom) is built from data/ by the
build (building/), which loads it: this file imports nothing of the project, everything else imports it.

    >>> import model
    >>> from building import builder
    >>> builder.ready()  # load the artifacts, or build them when missing or stale
    >>> model.run("Where is my parcel? Order 75983714").category
    <Category.order_status: 'order_status'>
"""

import hashlib
import os
import re
import threading
import time
import unicodedata
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

# ---------------------------------------------------------------------------------------------
# Configuration (environment variables override the defaults)
# ---------------------------------------------------------------------------------------------
PIPELINE_VERSION = "1.0.0"
ROOT = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ.get("TRIAGE_DATA_DIR", ROOT / "data"))  # what the artifacts are built from (building/builder.py)
MAX_TEXT_CHARS = 5000


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
    channel: Channel = Field(
        Channel.web_form, description="Where the message came from; on phone and chat the customer waits live, so never low urgency."
    )
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


class Expected(BaseModel):
    """The right answer for an edge case: the category always; the other fields only where someone says."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"category": "billing"}]})
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


# ---------------------------------------------------------------------------------------------
# The contract: everything the rest of the project reads of this file (README "Your own pipeline" lists it;
# building/contract.py checks it at build and start, naming what is missing). A fork names its own classes, fields
# and steps, and points these names at them.
# ---------------------------------------------------------------------------------------------
TITLE = "Support-ticket triage"  # the page's, the API's and the reports' title
INTRO = (
    "Routes an online shop's customer messages to the right team, links the order numbers they mention, "
    "and answers from the help centre when that is safe."
)
Input = Ticket  # required: one input (a pydantic model with one example in model_config["json_schema_extra"])
Output = Triage  # required: the answer (a pydantic model; an optional `trace: list[StepTrace] | None` for debug panels)
# Also required: Flags (above: every field with a default), Expected (above: a flagged case's right answer, any subset
# of Output's fields), run_batch (below), install/resources (bottom) and the artifacts' recipe, recipe.py.
# Optional from here: None (or leaving the name out) turns its feature off.
LABEL = "category"  # the Output field that labelled data judges (and Expected requires): accuracy, confusion matrix
LABELLED_SETS = {"eval": "eval.csv", "eval_style": "eval_style.csv"}  # data/ files with an expected_<LABEL> column
SLICES = ("difficulty",)  # columns of a labelled set that split its accuracy (accuracy_plain, accuracy_hard, ...)
PROBABILITY = "confidence"  # the Output field with the label's probability, 0 to 1: confidence figures
NEEDS_PERSON = "needs_human"  # a bool Output field, true when a person must answer: shares of "needs a person"
PROBABILITIES = ("classify", "probabilities")  # (step, key of its debug details) holding every class's probability


def clean_text(text: str, mask_pii: bool = True) -> str:
    """What a kept case's text fields and note go through before they are stored: personal data masked."""
    return normalize(text, mask_pii)[0]


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
URGENT = re.compile(  # urgent words in their usual forms, "!!", or shouting (two or more words in capitals)
    r"(?i:\b(urgent(ly)?|urgency|asap|a\.s\.a\.p|immediate(ly)?|right (now|away)|straight ?away|as soon as possible|at once"
    r"|emergency|today|hack(ed|er|ers)?|fraud(ulent)?|stolen|unauthori[sz]ed|lawyers?|chargebacks?)\b)"
    r"|!!|\b[A-Z]{2,}\b(?:\s+[A-Z]{2,}\b)+"
)
ORDER_CATEGORIES = {Category.order_status, Category.cancel_order, Category.returns_refunds}
LIVE_CHANNELS = {Channel.phone, Channel.chat}  # the customer waits on the line


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
    elif category in (Category.feedback, Category.product_info) and ticket.channel in LIVE_CHANNELS:
        urgency, why_urgency = Urgency.normal, f"{category} on {ticket.channel}: the customer waits live, so not low"
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
            f"If this does not answer your question, reply to this message and our {team} team will take it from there."
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
    resources()  # loaded before the clock starts for the first step (or a clear error)
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
# What the steps run on: built from data/ by building/builder.py, which loads them into this process
# ---------------------------------------------------------------------------------------------
class Resources(NamedTuple):
    encoder: Any  # .encode(texts) -> unit-length vectors
    index: Any  # faiss: the articles' vectors
    articles: list[dict]
    articles_by_id: dict[str, dict]
    classifier: LinearClassifier
    bloom: Any  # rbloom: every order number, hashed by order_hash
    manifest: dict  # what they were built from, and their evaluation


_resources: Resources | None = None
_lock = threading.RLock()


def resources() -> Resources:
    """What the steps run on in this process: installed by `building.builder.ready()`, which every face calls first
    (it loads the saved artifacts, or builds them when they are missing or stale). This file imports nothing of the
    project: the build and the loop import it, never the other way round."""
    if _resources is None:
        raise RuntimeError("the pipeline has no artifacts loaded: call `from building import builder; builder.ready()` first")
    return _resources


def install(loaded: Resources | None) -> None:
    """Run the steps on `loaded` from now on (None: nothing loaded); `building.builder` installs what it loads or builds."""
    global _resources
    with _lock:
        _resources = loaded
