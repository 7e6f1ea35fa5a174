"""The pipeline core: each step alone, the whole pipeline with the real model, flags, trace, bad input."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

import model
import recipe
from building import builder, contract, encoders, files
from building.contract import ContractError
from model import Category, Flags, Ticket

KNOWN_ORDER = "75983714"  # in the seeded order set (data/orders.py)
UNKNOWN_ORDER = "12345678"  # not in it
STEPS = ["normalize", "find_orders", "embed", "retrieve", "classify", "decide"]


@pytest.mark.quick
# --- each step alone --------------------------------------------------------------------------
def test_normalize_masks_pii_and_cleans_text():
    text, details = model.normalize("Hi\u200b  there,\tmail bob@example.com or call +44 7700 900123", debug=True)
    assert text == "Hi there, mail [EMAIL] or call [PHONE]"
    assert [m["kind"] for m in details["masked"]] == ["email", "phone"]
    start, end = details["masked"][0]["start"], details["masked"][0]["end"]
    assert "Hi there, mail bob@example.com or call +44 7700 900123"[start:end] == "bob@example.com"


def test_normalize_masks_cards_but_keeps_order_numbers():
    text, _ = model.normalize(f"card 4111 1111 1111 1111, order {KNOWN_ORDER}")
    assert text == f"card [CARD], order {KNOWN_ORDER}"


def test_normalize_without_masking_keeps_pii():
    text, details = model.normalize("mail bob@example.com", mask_pii=False, debug=True)
    assert text == "mail bob@example.com" and details["masked"] == []


def test_steps_return_no_details_without_debug():
    assert model.normalize("mail bob@example.com")[1] == {}
    assert model.find_orders(KNOWN_ORDER)[1] == {}


def test_find_orders_splits_known_and_unknown():
    orders, details = model.find_orders(f"orders #{KNOWN_ORDER} and {UNKNOWN_ORDER}, not 123456789", debug=True)
    assert orders.known == [KNOWN_ORDER] and orders.unknown == [UNKNOWN_ORDER]
    assert details["candidates"] == [KNOWN_ORDER, UNKNOWN_ORDER]
    assert details["filter"]["items"] == 1_000_000 and details["filter"]["false_positive_rate"] == 0.001


def test_embed_gives_unit_vectors_that_put_similar_texts_close():
    vectors, details = model.embed(["I forgot my password", "I cannot remember my login password", "The sofa is blue"], debug=True)
    assert vectors.shape == (3, 384) and details["dims"] == 384
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


@pytest.mark.quick
def test_retrieve_finds_the_relevant_article():
    vectors, _ = model.embed(["How do I reset my password?"])
    hits, details = model.retrieve(vectors, top_k=4, debug=True)
    assert len(hits) == 1 and len(hits[0]) == 4 and details["articles_indexed"] == 48
    assert "KB-401" in [h.id for h in hits[0]]
    assert [h.score for h in hits[0]] == sorted((h.score for h in hits[0]), reverse=True)


def test_classify_gives_every_class_probability():
    vectors, _ = model.embed(["I was charged twice for my order", "The app crashes when I open it"])
    predictions, _ = model.classify(vectors)
    assert [p.category for p in predictions] == [Category.billing, Category.technical_issue]
    for p in predictions:
        assert set(p.probabilities) == {c.value for c in Category}
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
        assert p.confidence == max(p.probabilities.values())


def _prediction(category, confidence):
    return model.Prediction(Category(category), confidence, {category: confidence})


def _article(category, score):
    article = next(a for a in builder.ready().articles if a["category"] == category)
    return model.ArticleHit(**article, score=score)


@pytest.mark.quick
@pytest.mark.parametrize(
    ("text", "flags", "confidence", "score", "orders", "reply", "rule"),
    [
        ("how do I return this", {}, 0.9, 0.7, model.OrderIds(), True, "auto-reply from"),
        ("how do I return this", {"auto_reply": False}, 0.9, 0.7, model.OrderIds(), False, "auto_reply flag is off"),
        ("how do I return this", {}, 0.3, 0.7, model.OrderIds(), False, "below min_confidence"),
        ("how do I return this URGENT", {}, 0.9, 0.7, model.OrderIds(), False, "urgent"),
        ("how do I return this", {}, 0.9, 0.2, model.OrderIds(), False, "min_article_score"),
        ("return 12345678", {}, 0.9, 0.7, model.OrderIds(unknown=["12345678"]), False, "matches no order"),
    ],
)
def test_decide_rules(text, flags, confidence, score, orders, reply, rule):
    decision, details = model.decide(
        Ticket(text=text),
        Flags(**flags),
        _prediction("returns_refunds", confidence),
        [_article("returns_refunds", score)],
        orders,
        debug=True,
    )
    assert decision.team == "returns"
    assert (decision.reply is not None) == reply
    assert rule in details["rule"]


def test_decide_raises_urgency_for_vip_and_lowers_it_for_feedback():
    ticket = Ticket(text="a question", customer_tier="vip")
    assert model.decide(ticket, Flags(), _prediction("billing", 0.9), [], model.OrderIds())[0].urgency == "high"
    plain = Ticket(text="a question")
    assert model.decide(plain, Flags(), _prediction("feedback", 0.9), [], model.OrderIds())[0].urgency == "low"
    assert model.decide(plain, Flags(), _prediction("billing", 0.9), [], model.OrderIds())[0].urgency == "normal"


@pytest.mark.quick
# --- the pipeline end to end ------------------------------------------------------------------
def test_run_end_to_end():
    result = model.run(f"Hi, where is my order {KNOWN_ORDER}? The tracking has not moved for days")
    assert result.category == Category.order_status and result.team == "logistics"
    assert result.order_ids.known == [KNOWN_ORDER] and result.order_ids.unknown == []
    assert len(result.articles) == 3 and result.trace is None
    assert result.needs_human == (result.reply is None)


def test_run_replies_automatically_when_safe():
    result = model.run("How do I reset my password?")
    assert result.category == Category.account_access
    assert result.reply is not None and "reset" in result.reply.lower() and not result.needs_human


@pytest.mark.parametrize("channel", list(model.Channel))
def test_an_automatic_reply_fits_every_channel(channel):
    """A reply to a chat message or a web form said "reply to this e-mail"."""
    reply = model.run({"text": "How do I reset my password?", "channel": channel}).reply
    assert reply is not None and "reply to this e-mail" not in reply  # the article itself may speak of e-mail


def test_run_accepts_ticket_dict_and_string_alike():
    text = "The app crashes every time I open my basket"
    a, b, c = model.run(text), model.run({"text": text}), model.run(Ticket(text=text))
    assert a == b == c


def test_trace_has_one_entry_per_step_in_order():
    result = model.run({"text": f"refund for {KNOWN_ORDER} please, mail me at a@b.example"}, debug=True)
    assert [s.step for s in result.trace] == STEPS
    assert all(s.ms >= 0 for s in result.trace)
    by_step = {s.step: s for s in result.trace}
    assert by_step["normalize"].details["masked"][0]["kind"] == "email"
    assert by_step["classify"].details["probabilities"][result.category.value] == result.confidence
    assert [a["id"] for a in by_step["retrieve"].output] == [a.id for a in result.articles]
    assert "rule" in by_step["decide"].details


def test_run_and_run_batch_agree():
    texts = [
        "Please cancel my order",
        f"where is {KNOWN_ORDER}",
        "I want my money back for the broken kettle",
        "Do you sell this in red?",
        "thank you, great service!",
        "I was charged twice",
        "I can't log in",
        "checkout page is blank",
    ]
    flags = [Flags(), Flags(top_k=1), Flags(mask_pii=False), Flags(auto_reply=False)] * 2
    batched = model.run_batch(texts, flags, debug=True)
    for text, f, b in zip(texts, flags, batched, strict=True):
        single = model.run(text, f, debug=True)
        assert single.model_dump(exclude={"confidence", "articles", "trace"}) == b.model_dump(exclude={"confidence", "articles", "trace"})
        assert single.confidence == pytest.approx(b.confidence, abs=1e-3)
        assert [a.id for a in single.articles] == [a.id for a in b.articles]
        assert [s.step for s in single.trace] == [s.step for s in b.trace]


def test_run_batch_handles_empty_list_and_checks_flag_count():
    assert model.run_batch([]) == []
    with pytest.raises(ValueError, match="flags"):
        model.run_batch(["a", "b"], [Flags()])


# --- every flag changes the outcome as its name says -----------------------------------------
def _trace(result, step):
    return next(s for s in result.trace if s.step == step)


def test_flag_mask_pii():
    text = "Where is my parcel? mail me at bob@example.com"
    assert "[EMAIL]" in _trace(model.run(text, debug=True), "normalize").output
    assert "bob@example.com" in _trace(model.run(text, {"mask_pii": False}, debug=True), "normalize").output


def test_flag_lookup_orders():
    text = f"where is order {KNOWN_ORDER}"
    on, off = model.run(text, debug=True), model.run(text, {"lookup_orders": False}, debug=True)
    assert on.order_ids.known == [KNOWN_ORDER] and off.order_ids.known == []
    assert _trace(off, "find_orders").skipped == "lookup_orders=False" and _trace(on, "find_orders").skipped is None


@pytest.mark.parametrize("k", [1, 5, 10])
def test_flag_top_k(k):
    assert len(model.run("how do I return shoes", {"top_k": k}).articles) == k


def test_flags_that_stop_the_automatic_reply():
    text = "How do I reset my password?"
    assert model.run(text).reply is not None
    for flags in ({"auto_reply": False}, {"min_confidence": 1.0}, {"min_article_score": 1.0}):
        result = model.run(text, flags)
        assert result.reply is None and result.needs_human, flags


@pytest.mark.quick
# --- quality ------------------------------------------------------------------------------------
def test_accuracy_on_the_evaluation_set():
    metrics = builder.evaluate()
    assert metrics["rows"] >= 160
    assert metrics["accuracy"] >= 0.80, metrics
    assert builder.ready().manifest["eval"]["accuracy"] == metrics["accuracy"]


# --- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ticket", "flags", "field"),
    [
        ({"text": ""}, None, "text"),
        ({"text": "   \n\t "}, None, "text"),
        ({"text": "x" * 5001}, None, "text"),
        ({"text": 42}, None, "text"),
        ({"text": None}, None, "text"),
        ({}, None, "text"),
        ({"text": "hi", "channel": "pigeon"}, None, "channel"),
        ({"text": "hi", "tier": "gold"}, None, "tier"),
        ({"text": "hi"}, {"top_k": 0}, "top_k"),
        ({"text": "hi"}, {"top_k": 11}, "top_k"),
        ({"text": "hi"}, {"top_k": "many"}, "top_k"),
        ({"text": "hi"}, {"min_confidence": 1.5}, "min_confidence"),
        ({"text": "hi"}, {"mask_pii": "maybe"}, "mask_pii"),
        ({"text": "hi"}, {"no_such_flag": True}, "no_such_flag"),
    ],
)
def test_bad_input_names_the_field(ticket, flags, field):
    with pytest.raises(ValidationError) as error:
        model.run(ticket, flags)
    assert field in {str(part) for e in error.value.errors() for part in e["loc"]}


def test_text_limit_is_after_stripping():
    assert model.run({"text": "  " + "x" * 5000 + "  "}).category in Category


# --- model checksum, laziness and artifacts ----------------------------------------------------
def test_import_does_not_load_torch():
    code = "import sys, model; print('torch' in sys.modules, 'sentence_transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=model.ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_answering_loads_neither_torch_nor_scikit_learn():
    code = "import sys, model; from building import builder; builder.ready(); model.run('Where is my order?'); print(sorted({'torch', 'sklearn'} & set(sys.modules)))"  # noqa: E501
    out = subprocess.run([sys.executable, "-c", code], cwd=model.ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_plain_classifier_computes_what_scikit_learn_does():
    from sklearn.linear_model import LogisticRegression

    plain = builder.ready().classifier
    reference = LogisticRegression()
    reference.coef_, reference.intercept_, reference.classes_ = plain.coef, plain.intercept, plain.classes_
    vectors, _ = model.embed([model.normalize(t)[0] for t in pd.read_csv(model.DATA_DIR / "eval.csv").text])
    assert np.allclose(plain.predict_proba(vectors), reference.predict_proba(vectors), rtol=0, atol=1e-12)
    assert list(plain.classes_[plain.predict_proba(vectors).argmax(axis=1)]) == list(reference.predict(vectors))


def test_tampered_model_is_refused(tmp_path):
    source, sha = encoders.model_source()
    copy = tmp_path / "model"
    shutil.copytree(source, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(encoders.ModelError, match="tampered"):
        encoders.load_encoder(str(copy), sha)


def test_model_checksum_is_the_official_one_and_configurable(monkeypatch):
    assert encoders.model_source()[1] == encoders.OFFICIAL_MODEL_SHA256
    monkeypatch.setenv("TRIAGE_MODEL", "/no/such/dir")
    monkeypatch.setenv("TRIAGE_MODEL_SHA256", "0" * 64)
    with pytest.raises(encoders.ModelError, match="cannot be checked"):
        encoders.load_encoder(*encoders.model_source())


@pytest.fixture
def own_artifacts(tmp_path, monkeypatch):
    """A copy of data/ and artifacts/ in tmp_path that the pipeline uses instead (rebuilds reuse the ONNX encoder)."""
    builder.ready()
    shutil.copytree(model.DATA_DIR, tmp_path / "data")
    shutil.copytree(builder.ARTIFACTS_DIR, tmp_path / "artifacts")
    monkeypatch.setattr(model, "DATA_DIR", tmp_path / "data")
    monkeypatch.setattr(builder, "ARTIFACTS_DIR", tmp_path / "artifacts")
    monkeypatch.setattr(model, "_resources", None)
    builder.ready()  # the copy, loaded
    return tmp_path / "artifacts"


def reload() -> dict:
    """Load the artifacts afresh, as a new process would; returns the manifest in use."""
    model._resources = None
    return builder.ready().manifest


def test_artifacts_are_rebuilt_when_data_changes_recording_every_file_the_recipe_writes(tmp_path, own_artifacts, monkeypatch):
    build = recipe.build

    def with_notes(data, training, encoder, out):  # a file in a subfolder too is recorded with its size and SHA-256
        (out / "notes").mkdir()
        (out / "notes" / "about.txt").write_text("built by a test")
        return build(data, training, encoder, out)

    monkeypatch.setattr(recipe, "build", with_notes)
    before = builder.ready().manifest
    assert before["built_at"] == json.loads((tmp_path / "artifacts" / "manifest.json").read_text())["built_at"]  # loaded, not rebuilt

    with open(tmp_path / "data" / "train.csv", "a") as f:
        f.write('"my parcel never came and nobody answers my emails",order_status\n')
    after = reload()
    assert after["data"]["train"] == files.sha256_file(tmp_path / "data" / "train.csv") != before["data"]["train"]
    assert after["classifier"]["train_rows"] == before["classifier"]["train_rows"] + 1
    assert all(name in after for name in contract.labelled_sets())
    assert after["artifacts"]["notes/about.txt"]["bytes"] == len("built by a test") and builder.artifact_problem(after) is None
    (own_artifacts / "notes" / "about.txt").write_text("changed")
    assert "notes/about.txt" in builder.artifact_problem(after)


# --- artifacts hold no pickle and are checked by hash -------------------------------------------------
def test_artifacts_are_plain_files_recorded_with_size_and_sha256():
    manifest = builder.ready().manifest
    assert set(manifest["artifacts"]) == {p.name for p in builder.ARTIFACTS_DIR.iterdir() if not p.name.startswith(".")} - {"manifest.json"}
    for name, recorded in manifest["artifacts"].items():
        path = builder.ARTIFACTS_DIR / name
        assert recorded == {"bytes": path.stat().st_size, "sha256": files.sha256_file(path)}
    with np.load(builder.ARTIFACTS_DIR / "classifier.npz", allow_pickle=False) as saved:  # raises if anything is pickled
        assert set(saved.files) == {"coef", "intercept", "classes"}
    assert not [p.name for p in builder.ARTIFACTS_DIR.iterdir() if p.suffix in (".joblib", ".pkl", ".pickle")]


class _Payload:
    """Unpickling this makes a directory: the proof that a pickle ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.mkdir, (str(self.marker),))


def _break_truncate(path, _):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _break_pickle(path, tmp_path):  # a crafted classifier whose arrays are pickled objects
    payload = np.array([_Payload(tmp_path / "pwned")], dtype=object)
    with open(path, "wb") as f:
        np.savez(f, coef=payload, intercept=payload, classes=payload)


def _break_valid_but_wrong(path, _):  # loads fine and answers confidently, but wrongly
    with np.load(path) as saved:
        arrays = dict(saved)
    arrays["coef"] = arrays["coef"][::-1].copy()
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _flip_a_byte(path, _):  # same size, other content
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGES = {  # id: (file, damage)
    "truncated": ("classifier.npz", _break_truncate),
    "crafted-pickle": ("classifier.npz", _break_pickle),
    "valid-but-wrong": ("classifier.npz", _break_valid_but_wrong),
    "faiss-truncated": ("articles.faiss", _break_truncate),
    "bloom-flipped": ("orders.bloom", _flip_a_byte),
    "articles-emptied": ("articles.json", lambda p, _: p.write_text("[]")),
    "encoder": ("encoder.onnx", _flip_a_byte),
    "tokenizer": ("tokenizer.json", lambda p, _: p.write_text("{}")),
}
REBUILT = ("crafted-pickle", "encoder")  # rebuilt in full: the classifier's kind (the encoder reused), and the encoder's (exported again)


@pytest.mark.parametrize("damaged", sorted(DAMAGES))
def test_a_damaged_artifact_is_detected_and_named(own_artifacts, tmp_path, damaged):
    """What load_or_build checks before loading anything: each damage is named by its file. Rebuilding is the same code
    for every file (a build from data/), so two kinds are rebuilt below; the others would take 40 s each for nothing."""
    name, damage = DAMAGES[damaged]
    damage(own_artifacts / name, tmp_path)
    saved = json.loads((own_artifacts / "manifest.json").read_text())
    assert name in builder.artifact_problem(saved)
    assert not (tmp_path / "pwned").exists()  # no pickle was ever loaded


@pytest.mark.parametrize("damaged", REBUILT)
def test_a_damaged_artifact_is_named_and_rebuilt(own_artifacts, tmp_path, caplog, damaged):
    name, damage = DAMAGES[damaged]
    text = "I was charged twice for the same order"
    expected = model.run(text)
    damage(own_artifacts / name, tmp_path)
    with caplog.at_level("WARNING", logger="triage"):
        manifest = reload()
    assert name in caplog.text and "rebuilding" in caplog.text
    assert not (tmp_path / "pwned").exists()  # no pickle was ever loaded
    assert builder.artifact_problem(manifest) is None  # rebuilt, and now intact
    assert model.run(text) == expected


def test_a_damaged_manifest_is_rebuilt(own_artifacts):
    (own_artifacts / "manifest.json").write_text('{"pipeline_version": ')
    manifest = reload()
    assert json.loads((own_artifacts / "manifest.json").read_text())["built_at"] == manifest["built_at"]
    assert builder.artifact_problem(manifest) is None


def test_concurrent_first_builds_in_several_processes_are_safe(tmp_path):
    """Two processes start on an empty artifacts folder at once: one builds, the other waits and loads that build."""
    code = (
        "import json; from building import builder; m = builder.ready().manifest; "
        "print(json.dumps([m['built_at'], builder.artifact_problem(m)]))"
    )
    env = {**__import__("os").environ, "TRIAGE_ARTIFACTS_DIR": str(tmp_path / "artifacts")}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=model.ROOT, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs[0] == outputs[1] and outputs[0][1] is None  # one build, seen by both, intact
    recorded = json.loads((tmp_path / "artifacts" / "manifest.json").read_text())["artifacts"]
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir() if not p.name.startswith(".")) == sorted([*recorded, "manifest.json"])


# --- the machinery: the contract and recipe.py, whatever they declare ---------------------------------
def test_a_labelled_set_without_a_column_the_schemas_need_fails_naming_it(own_artifacts):
    path = next(iter(contract.labelled_sets().values()))
    frame = pd.read_csv(path, dtype=str)
    required = next(name for name, field in model.Input.model_fields.items() if field.is_required())
    for column in (contract.expected_column(), required):
        frame.drop(columns=[column]).to_csv(path, index=False)
        with pytest.raises(ContractError, match=re.escape(f"{path.name}: no column '{column}'")):
            reload()


def test_ready_checks_the_contract_and_the_recipe_first(monkeypatch):
    builder.ready()
    monkeypatch.setattr(model, "_resources", None)
    monkeypatch.setattr(model, "TITLE", None)
    with pytest.raises(ContractError, match="TITLE"):
        builder.ready()
    monkeypatch.undo()
    monkeypatch.setattr(model, "_resources", None)
    monkeypatch.setitem(recipe.DATA, "extra", "no-such-file.csv")
    with pytest.raises(ContractError, match=re.escape("no-such-file.csv")):
        builder.ready()


def test_without_a_label_the_evaluation_counts_rows_and_ready_names_no_accuracy(tmp_path, monkeypatch, caplog):
    loaded = builder.ready()
    pd.read_csv(next(iter(contract.labelled_sets().values())), dtype=str).head(5).to_csv(tmp_path / "few.csv", index=False)
    monkeypatch.setattr(model, "LABEL", None)
    assert builder.evaluate(tmp_path / "few.csv") == {"rows": 5}
    monkeypatch.setattr(model, "_resources", None)
    monkeypatch.setattr(builder, "load_or_build", lambda: loaded)
    with caplog.at_level("INFO", logger="triage"):
        builder.ready()
    assert "pipeline ready in" in caplog.text and "accuracy" not in caplog.text


def test_without_an_encoder_nothing_of_the_embedding_model_is_touched(monkeypatch):
    def untouchable():
        raise AssertionError("the embedding model was looked up")

    monkeypatch.setattr(recipe, "ENCODER", False)
    monkeypatch.setattr(builder, "model_source", untouchable)
    found = builder.fingerprint()
    assert "model" not in found and "encoder" not in found and set(found["data"]) == set(builder.data_files())


@pytest.mark.parametrize(
    "text",
    [
        "please fix it urgently",
        "I need this ASAP",
        "refund me immediately",
        "sort it out right now",
        "answer me as soon as possible",
        "this is an emergency",
        "please do it right away",
    ],
)
def test_urgent_wording_in_its_usual_forms_is_high_urgency(text):
    assert model.decide(model.Ticket(text=text), model.Flags(), _prediction("billing", 0.9), [], model.OrderIds())[0].urgency == "high"
    calm = model.decide(model.Ticket(text="please fix it"), model.Flags(), _prediction("billing", 0.9), [], model.OrderIds())
    assert calm[0].urgency == "normal"


@pytest.mark.parametrize(("channel", "urgency"), [("phone", "normal"), ("chat", "normal"), ("email", "low"), ("web_form", "low")])
def test_a_customer_waiting_live_is_never_low_urgency(channel, urgency):
    ticket = model.Ticket(text="I love the new jumper", channel=channel)
    decision, details = model.decide(ticket, model.Flags(), _prediction("feedback", 0.9), [], model.OrderIds(), debug=True)
    assert decision.urgency == urgency and (channel in details["urgency_rule"]) == (urgency == "normal")
    assert model.run({"text": "I love the new jumper, thank you", "channel": channel}).urgency == urgency
