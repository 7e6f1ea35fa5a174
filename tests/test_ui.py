"""The Gradio app through gradio_client: run, compare and batch endpoints, bad input, derived controls and panels, and
the Gradio internals the upload guard relies on."""

import asyncio
import inspect
import json
import re
import time
from enum import StrEnum
from pathlib import Path
from typing import Literal

import gradio as gr
import pandas as pd
import pytest
from conftest import free_port
from gradio import processing_utils
from gradio_client import Client, handle_file
from pydantic import BaseModel, Field

import batch
import model
from app import render, ui, uploads
from building import contract
from loop import edge_cases, review

TIMEOUT = 120


@pytest.fixture(scope="module")
def client():
    demo = ui.build()
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    demo.close()


def triage_args(text, channel="web_form", tier="standard", **flags):
    """The Run endpoint's arguments by position: the ticket's fields, then the flags (as on the page)."""
    return [text, channel, tier, *model.Flags(**flags).model_dump().values()]


def call(client, *args, api_name, **named):
    return client.submit(*args, api_name=api_name, **named).result(timeout=TIMEOUT)


def test_every_public_endpoint_names_its_parameters_as_the_schemas_do(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    names = {api: [p["parameter_name"] for p in e["parameters"]] for api, e in endpoints.items()}
    ticket, flags = list(model.Input.model_fields), list(model.Flags.model_fields)
    expected = [*(contract.EXPECTED_PREFIX + f for f in model.Expected.model_fields), "note", "keep_pii"]
    assert names["/run"] == ticket + flags
    assert names["/flag_case"] == ticket + flags + expected
    assert names["/compare"] == [*ticket, *flags, *[f"b_{f}" for f in flags], "b_version"]
    assert names["/flag_compare_case"] == [*ticket, "variant", *flags, *[f"b_{f}" for f in flags], *expected]
    assert names["/batch_report"] == ["file", "use_eval", "compare", "baseline", *flags, *[f"b_{f}" for f in flags], "text_column"]
    assert names["/edge_cases"] == ["verdict", "source"] and names["/review_queue"] == ["state"] and names["/live_record"] == ["version"]
    assert not any(n.startswith(("param_", "data")) for ns in names.values() for n in ns), names
    defaults = {p["parameter_name"]: p for p in endpoints["/compare"]["parameters"]}
    required = [name for name, field in model.Input.model_fields.items() if field.is_required()]
    assert required and not any(defaults[name]["parameter_has_default"] for name in required)
    assert all(defaults[f"b_{f}"]["parameter_default"] == defaults[f]["parameter_default"] for f in flags)  # B starts as A
    returned = [r["label"] for r in endpoints["/run"]["returns"]]
    assert len(returned) == len(render.run_outputs()), (returned, render.run_outputs())


def test_the_api_tabs_gradio_client_example_runs_as_written(client, capsys):
    """The example on the API tab, run as a user would paste it, against this server."""
    example = ui.client_example(client.src.rstrip("/"))
    assert all(f"{name}=" in example for name in contract.input_example()) and 'api_name="/run"' in example
    exec(compile(example, "api-tab-example", "exec"), {})  # the example as written
    printed = capsys.readouterr().out.splitlines()[-1].split()  # after "Loaded as API: ..."
    expected = contract.run(contract.input_example()).model_dump(mode="json")
    assert printed == [str(expected[name]) for name in render.key_fields()]


def test_named_parameters_left_out_keep_their_defaults(client):
    *_, answer = call(client, text="How do I reset my password?", api_name="/run")
    assert answer == model.run("How do I reset my password?").model_dump(mode="json", exclude={"trace"})
    *_, fewer = call(client, text="How do I reset my password?", top_k=1, channel="chat", api_name="/run")
    assert len(fewer["articles"]) == 1
    with pytest.raises(TypeError, match="not a valid key-word argument"):
        client.predict(text="x", flavour="mint", api_name="/run")


def test_triage_endpoint_matches_model_run(client):
    text = "I was charged twice for order 75983714"
    glance, fields, label, orders, articles, reply, answer = call(client, *triage_args(text), api_name="/run")
    expected = model.run(text)
    assert fields["data"] == render.answer_table(expected).values.tolist()  # every field of the answer, in words
    category = render.label_of(expected.category.value)  # a value in words where people read; the JSON keeps the code name
    assert ["Order IDs", "known: 75983714"] in fields["data"] and ["Category", category] in fields["data"]
    assert label["label"] == category and answer["category"] == expected.category.value
    assert answer["team"] == expected.team and answer["needs_human"] == expected.needs_human
    assert glance.startswith(f"### {render.label_of(expected.category.value)}\n") and expected.team in glance
    assert reply == (expected.reply or "")  # an optional string: a text box of its own
    assert orders["headers"] == ["field", "value"] and orders["data"] == [["Known", "75983714"], ["Unknown", ""]]  # a nested model
    assert articles["headers"] == ["ID", "Title", "Category", "Score"]  # a list of models: a table, its fields as columns
    assert [row[0] for row in articles["data"]] == [a.id for a in expected.articles]
    assert [row[2] for row in articles["data"]] == [render.label_of(a.category.value) for a in expected.articles]
    assert {c["label"] for c in label["confidences"]} <= {render.label_of(c.value) for c in model.Category}


def test_triage_endpoint_passes_flags(client):
    *_, answer = call(client, *triage_args("How do I reset my password?", auto_reply=False, top_k=5), api_name="/run")
    assert answer["reply"] is None and answer["needs_human"] is True and len(answer["articles"]) == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "at least 1 character"), ("   ", "at least 1 character"), ("x" * 5001, "at most 5000")],
    ids=["empty", "blank", "long"],
)
def test_bad_ticket_gives_an_error_not_a_hang(client, text, message):
    with pytest.raises(Exception, match=message) as error:
        call(client, *triage_args(text), api_name="/run")
    assert "text" in str(error.value)


def test_out_of_range_flag_gives_an_error(client):
    args = triage_args("hello")
    args[3 + list(model.Flags.model_fields).index("top_k")] = 50
    with pytest.raises(Exception, match="greater than maximum value 10"):  # Gradio's slider checks its bounds first
        call(client, *args, api_name="/run")


@pytest.mark.quick
def test_compare_endpoint_marks_what_differs(client):
    flags_a = model.Flags().model_dump().values()
    flags_b = model.Flags(auto_reply=False).model_dump().values()
    ticket = model.Input(text="How do I reset my password?").model_dump().values()
    headline, fields, steps, a, b = call(client, *ticket, *flags_a, *flags_b, api_name="/compare")
    assert call(client, text="How do I reset my password?", b_auto_reply=False, api_name="/compare")[1] == fields  # by name
    marked = {row[0] for row in fields["data"] if row[3]}
    assert marked == {"Reply", "Needs human"}  # labelled in words
    assert [row[0] for row in steps["data"]] == [render.label_of(s.step) for s in model.run("x", debug=True).trace]
    assert {row[0] for row in steps["data"] if row[3]} == {"Decide"}
    assert a["reply"] and b["reply"] is None and "2 of" in headline
    cells = [cell for row in fields["data"] for cell in row[1:3]]
    assert not {"None", "True", "False"} & set(cells) and not any(c.startswith("{") for c in cells), cells  # words, not JSON
    said, same, *_ = call(client, text="hello", api_name="/compare")  # B starts as A
    assert not any(row[3] for row in same["data"]) and "B's flags are A's" in said


def batch_args(path, compare=False, **flags):
    """The Batch endpoint's arguments by name: the file, then A's flags; B's keep their defaults."""
    return {"file": handle_file(str(path)) if path else None, "compare": compare, **flags}


def test_batch_endpoint_files_match_batch_py(client, tmp_path):
    rows = [("Where is my parcel 75983714?", "order_status"), ("", "billing"), ("I can't log in", "account_access")]
    source = tmp_path / "tickets.csv"
    pd.DataFrame(rows, columns=["text", "expected_category"]).to_csv(source, index=False)
    headline, *_plots, files, summary = call(client, **batch_args(source), api_name="/batch_report")
    assert sorted(p.rsplit(".", 1)[1] for p in files) == ["csv", "html", "json"]
    scored = pd.read_csv(next(p for p in files if p.endswith(".csv")), dtype=str, keep_default_na=False)
    batch.report(source, tmp_path / "cli.csv", progress=False)
    expected = pd.read_csv(tmp_path / "cli.csv", dtype=str, keep_default_na=False)
    assert list(scored.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(scored.drop(columns=["confidence"]), expected.drop(columns=["confidence"]))
    assert summary["rows"] == 3 and summary["errors"] == 1 and "3 rows" in headline
    assert summary["outputs"][".csv"] == "tickets-report.csv" and "/tmp" not in str(summary)  # names, never server paths


def test_batch_endpoint_on_the_bundled_evaluation_set_with_a_comparison(client):
    headline, _failed, *plots, files, summary = call(client, use_eval=True, compare=True, b_auto_reply=False, api_name="/batch_report")
    assert len(files) == 3 and summary["rows"] == 160 and summary["metrics"]["accuracy"] >= 0.8
    assert summary["compare"]["needs_person_share"] == 1.0 and "with B 100% need a person" in headline
    assert len(plots) == ui.PLOTS and all(plots)  # the label's distribution, the probability histogram, the confusion matrix


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a CSV"),
        (b"message\nhello\n", "no 'text' column"),
    ],
)
def test_batch_endpoint_bad_files_give_a_clear_error(client, tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(Exception, match=message):
        call(client, **batch_args(path), api_name="/batch_report")


def test_batch_endpoint_without_a_file_says_what_to_do(client, capfd):
    capfd.readouterr()
    headline, *_, summary = call(client, api_name="/batch_report")
    assert headline.startswith("Upload a CSV") and summary is None
    assert "Traceback" not in capfd.readouterr().err  # a message for the person, not an error in the server's log


# --- controls derived from the schemas -------------------------------------------------------
def test_controls_follow_the_flag_schema():
    with gr.Blocks():
        controls = ui.controls(model.Flags)
        ticket = ui.controls(model.Input)
    assert list(controls) == list(model.Flags.model_fields)
    assert isinstance(controls["mask_pii"], gr.Checkbox) and controls["mask_pii"].value is True
    assert isinstance(controls["top_k"], gr.Slider) and (controls["top_k"].minimum, controls["top_k"].maximum) == (1, 10)
    assert controls["min_confidence"].info == model.Flags.model_fields["min_confidence"].description  # words, not code names
    assert (ticket["customer_tier"].label, controls["mask_pii"].label) == ("Customer tier", "Mask PII")  # words
    assert isinstance(ticket["text"], gr.Textbox) and isinstance(ticket["channel"], gr.Dropdown)
    assert [c[1] for c in ticket["channel"].choices] == [c.value for c in model.Channel]  # what a client sends
    assert ("Web form", "web_form") in ticket["channel"].choices and ("Vip", "vip") in ticket["customer_tier"].choices  # what a person sees


def test_the_page_shows_words_and_readmes_commands():
    """No control is labelled with a code name (`customer_tier`) and no dropdown shows a raw value (`web_form`, `order_status`)
    where a word will do; a command the page quotes is README's, as written."""
    demo = ui.build()
    components = list(demo.blocks.values())
    for c in components:
        if isinstance(c, (gr.Textbox, gr.Dropdown, gr.Checkbox, gr.Slider, gr.Number, gr.Radio)):
            assert c.label and "_" not in c.label, c.label
        if isinstance(c, gr.Dropdown) and not c.allow_custom_value:  # version pickers show version names
            assert all("_" not in shown for shown, _ in c.choices), (c.label, c.choices)
    readme = " ".join((model.ROOT / "README.md").read_text().split())
    quoted = [cmd for c in components if isinstance(c, gr.Markdown) for cmd in re.findall(r"`([^`]*(?:python|\.py)[^`]*)`", c.value or "")]
    assert ".venv/bin/python app/main.py" in quoted and all(cmd in readme for cmd in quoted), quoted


def test_a_new_flag_gets_a_control_without_changing_the_ui():
    class MoreFlags(model.Flags):
        shout: bool = Field(False, description="Answer in capitals.")
        temperature: float = Field(0.2, ge=0, le=2, description="How adventurous.")

    with gr.Blocks():
        controls = ui.controls(MoreFlags)
    assert isinstance(controls["shout"], gr.Checkbox) and isinstance(controls["temperature"], gr.Slider)
    assert controls["temperature"].maximum == 2


class Kind(StrEnum):
    small = "small"
    large_one = "large_one"


class Link(BaseModel):
    url: str
    score: float


class Shaped(BaseModel):
    """Every kind of field a forker's pipeline may have, as an input, an answer and an expected answer."""

    amount: float = Field(ge=0, le=5000, description="Required, bounded, no default.")
    stars: int = Field(ge=1, le=5)
    count: int
    kind: Kind | None = None
    size: Literal["s", "m"] = "s"
    urgent: bool | None = None
    note: str | None = None
    tags: list[str] = []
    scores: list[float] = []
    links: list[Link] = []
    best: Link | None = None
    extra: dict[str, int] = {}


def test_every_field_type_gets_a_control_and_its_value_back():
    with gr.Blocks():
        made = ui.controls(Shaped)
        expected = {name: ui.expected_control(name, field) for name, field in Shaped.model_fields.items()}
    assert isinstance(made["amount"], gr.Slider) and (made["amount"].minimum, made["amount"].maximum) == (0, 5000)
    assert isinstance(made["count"], gr.Number) and made["count"].value is None  # required, no default: empty, no 500
    assert isinstance(made["kind"], gr.Dropdown) and ("Large one", "large_one") in made["kind"].choices
    assert isinstance(made["note"], gr.Textbox) and isinstance(made["urgent"], gr.Checkbox)
    assert isinstance(made["size"], gr.Dropdown) and made["size"].value == "s" and ("M", "m") in made["size"].choices
    data = {"amount": 12.5, "stars": 3, "count": 2, "kind": None, "size": "m", "urgent": True, "note": "", "tags": '["a"]', "links": ""}
    given = ui.values(Shaped, data)
    assert "note" not in given and "kind" not in given and "links" not in given  # empty: the default
    assert Shaped.model_validate(given).tags == ["a"] and given["size"] == "m"
    assert expected["urgent"].choices[0][0] == ui.EITHER and expected["kind"].value == ui.ANY
    raw = {"urgent": "no", "kind": ui.ANY, "tags": "a, b", "scores": "0.5", "note": "", "best": '{"url": "u", "score": 1}'}
    answer = {name: ui.expected_value(name, Shaped.model_fields[name], value) for name, value in raw.items()}
    assert answer == {"urgent": False, "kind": None, "tags": ["a", "b"], "scores": ["0.5"], "note": None, "best": {"url": "u", "score": 1}}


def test_every_output_shape_gets_a_panel():
    fields = Shaped.model_fields
    kinds = {name: render.panel_kind(field) for name, field in fields.items()}
    assert kinds == {
        **dict.fromkeys(["amount", "stars", "count", "kind", "size", "urgent"]),
        **{"note": "prose", "tags": "prose", "scores": "prose", "links": "records", "best": "fields", "extra": "json"},
    }
    links = render.panel_value(fields["links"], "records", [{"url": "u", "score": 0.12345}])
    assert list(links.columns) == ["URL", "Score"] and links.values.tolist() == [["u", 0.123]]  # in words
    best = render.panel_value(fields["best"], "fields", {"url": "u", "score": 1.0})
    assert best.values.tolist() == [["URL", "u"], ["Score", "1.0"]]
    assert render.panel_value(fields["scores"], "prose", [0.5, 0.25]) == "0.5, 0.25"
    assert render.panel_value(fields["note"], "prose", None) == ""


def test_api_examples_are_valid_requests():
    curl, python = ui.api_examples("http://127.0.0.1:9999")
    assert "http://127.0.0.1:9999/predict" in curl and "requests.post" in python
    body = json.loads(curl.split("-d '", 1)[1].rstrip("'"))
    assert body == contract.input_example()  # the schema's own example, nothing else
    model.Input.model_validate(body)


def test_old_report_folders_are_removed(tmp_path, monkeypatch):
    import os
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    first = uploads.report_dir()
    (first / "old-report.csv").write_text("x")
    os.utime(first, (0, 0))  # long ago
    second = uploads.report_dir()
    assert second.exists() and not first.exists() and second.parent == tmp_path / "triage-reports"


@pytest.fixture
def queue(tmp_path, monkeypatch):
    """The app (in this process) flags into a review queue of its own; the suite file stays apart."""
    monkeypatch.setenv("TRIAGE_DATABASE_URL", f"sqlite:///{tmp_path / 'review.sqlite3'}")
    monkeypatch.setenv("TRIAGE_EDGE_CASES", str(tmp_path / "cases.csv"))
    return tmp_path


def queued() -> list[edge_cases.EdgeCase]:
    return [f.case for f in review.cases(limit=500)[0]]


def test_flag_a_case_from_the_triage_and_compare_tabs(client, queue):
    text = "Mail jo@example.com: your billing team fixed my problem within a day. Thank you"
    said = call(client, *triage_args(text), "feedback", "either", "", "low", "praise that mentions billing", True, api_name="/flag_case")
    (case,) = queued()
    assert f"Flagged as case `{case.id}`" in said
    assert f"Flagged as case `{case.id}`: it waits for a reviewer" in said and case.source == "ui"
    assert case.note == "praise that mentions billing" and not (queue / "cases.csv").exists()  # a flag is not yet a test
    assert case.ticket.text.startswith("Mail [EMAIL]:") and case.expected.urgency == "low" and case.expected.needs_human is None
    assert not case.keep_pii  # asked for, but nobody is logged in: masked all the same
    assert case.answer["category"] == model.run(case.ticket.text).category.value
    again = call(
        client,
        text=text,
        expected_category="feedback",
        expected_urgency="low",
        note="praise that mentions billing",
        keep_pii=True,
        api_name="/flag_case",
    )
    assert again.startswith("Already flagged") and len(queued()) == 1 and review.cases()[0][0].times_flagged == 2

    said = call(
        client,
        text="How do I reset my password?",
        variant="B",
        b_auto_reply=False,
        expected_category="account_access",
        expected_needs_human="yes",
        api_name="/flag_compare_case",
    )
    case = queued()[-1]
    assert case.flags.auto_reply is False and case.expected.needs_human is True and case.status == "fixed" and "right today" in said
    with pytest.raises(Exception, match="expected category"):
        call(client, text=text, expected_category=None, api_name="/flag_case")


def test_the_review_queue_is_shown_by_state(client, queue):
    review.flag([{"ticket": {"text": f"Charged twice, take {i}"}, "expected": {"category": "billing"}} for i in range(3)], client="x")
    (rejected,) = [f.case.id for f in review.cases()[0][:1]]
    review.reject([rejected], "ana")
    headline, table, *_ = call(client, state="pending", api_name="/review_queue")
    assert "**Review queue: 2 pending** · 0 accepted into the suite · 1 rejected" in headline
    assert [row[0] for row in table["data"]] == ["pending", "pending"] and rejected not in str(table["data"])
    _, table, *_ = call(client, "rejected", api_name="/review_queue")
    assert [row[7] for row in table["data"]] == [rejected]


def test_edge_cases_tab_runs_every_case(client, tmp_path, monkeypatch):
    store = tmp_path / "cases.csv"
    monkeypatch.setenv("TRIAGE_EDGE_CASES", str(store))
    edge_cases.save_cases(
        [{"ticket": {"text": "How do I reset my password?"}, "expected": {"category": c}} for c in ("account_access", "billing")]
    )
    headline, table, *_ = call(client, api_name="/edge_cases")
    assert "**2 cases**: 1 fixed · 1 still open · **0 newly broken**" in headline
    assert sorted(row[0] for row in table["data"]) == ["fixed", "open"]
    _, only_open, *_ = call(client, verdict="open", api_name="/edge_cases")
    assert [row[2] for row in only_open["data"]] == ["Billing"]  # in words
    _, none_from_ui, *_ = call(client, "all", "ui", api_name="/edge_cases")  # by position too
    assert none_from_ui["data"] in ([], [[None] * 9])  # an empty table


def test_batch_endpoint_compares_with_a_baseline(client, tmp_path):
    rows = [("Where is my parcel 75983714?", "order_status"), ("I was charged twice", "billing"), ("I can't log in", "account_access")]
    source = pd.DataFrame(rows, columns=["text", "expected_category"])
    source.to_csv(tmp_path / "mine.csv", index=False)
    *_, files, _ = call(client, **batch_args(tmp_path / "mine.csv"), api_name="/batch_report")
    earlier = pd.read_csv(files[0], dtype=str, keep_default_na=False)
    assert (earlier.category == earlier.expected_category).all()
    earlier.loc[1, "category"] = "feedback"  # an earlier version got the second row wrong
    earlier.to_csv(tmp_path / "earlier.csv", index=False)
    args = batch_args(tmp_path / "mine.csv") | {"baseline": handle_file(str(tmp_path / "earlier.csv"))}
    headline, *_, summary = call(client, **args, api_name="/batch_report")
    assert (summary["baseline"]["fixed"], summary["baseline"]["broken"]) == (1, 0)
    assert "against the baseline: **1 fixed, 0 broken**" in headline


def test_batch_tab_flags_the_misclassified_rows_for_review(client, tmp_path, queue):
    client = Client(client.src, verbose=False)  # a session of its own: no report yet
    said = call(client, api_name="/save_misclassified")
    assert said.startswith("Run a report on a labelled CSV first")
    rows = [("Where is my parcel 75983714?", "feedback"), ("I was charged twice", "billing")]  # the first is labelled wrongly on purpose
    pd.DataFrame(rows, columns=["text", "expected_category"]).to_csv(tmp_path / "mine.csv", index=False)
    job = client.submit(**batch_args(tmp_path / "mine.csv"), api_name="/batch_report")
    job.result(timeout=TIMEOUT)
    said = client.submit(api_name="/save_misclassified").result(timeout=TIMEOUT)  # the same session
    (case,) = queued()
    assert said.startswith("1 misclassified row flagged for review") and case.ticket.text == rows[0][0]
    assert case.expected.category == "feedback" and not (queue / "cases.csv").exists()


def test_the_edge_cases_tab_names_lines_of_the_store_it_skipped(tmp_path, monkeypatch):
    store = tmp_path / "cases.csv"
    header, first = (model.DATA_DIR / "edge_cases.csv").read_text(encoding="utf-8").splitlines()[:2]
    store.write_text(f"{header}\n{first}\nnot,an,edge case\n", encoding="utf-8")
    monkeypatch.setenv("TRIAGE_EDGE_CASES", str(store))
    headline, rows = render.check_all()
    assert len(rows) == 1 and "1 line of the store skipped as no edge case (line 3)" in headline, headline


# --- the Gradio internals app/uploads.py:only_uploads patches ----------------------------------
def test_only_uploads_relies_on_the_gradio_it_was_read_against():
    """Fails on a Gradio upgrade, before the guard can go quiet: re-read what app/uploads.py's docstring names, then
    move GRADIO_VERSION_READ."""
    assert gr.__version__ == uploads.GRADIO_VERSION_READ, "a new Gradio: re-read what app/uploads.py names"
    for name in ("move_resource_to_block_cache", "async_move_resource_to_block_cache"):
        assert str(inspect.signature(getattr(gr.File, name))) == "(self, url_or_file_path: 'str | Path | None') -> 'str | None'"
        assert "__slots__" not in vars(gr.File) and name not in vars(gr.File)  # inherited from Block, patchable per instance
    assert "block.move_resource_to_block_cache(payload.path)" in inspect.getsource(processing_utils.move_files_to_cache)
    assert "block.async_move_resource_to_block_cache(" in inspect.getsource(processing_utils.async_move_files_to_cache)
    assert "has_launched" in inspect.getsource(processing_utils._check_allowed)  # why the guard is needed when mounted
    assert not inspect.signature(gr.utils.get_upload_folder).parameters


def test_only_uploads_refuses_a_server_file_in_gradios_own_copy_and_takes_an_upload():
    with gr.Blocks():
        component = uploads.only_uploads(gr.File(type="filepath"))
    server_file = {"path": str(model.DATA_DIR / "eval.csv"), "meta": {"_type": "gradio.FileData"}}
    with pytest.raises(gr.Error, match="Only a CSV file uploaded on this page"):
        processing_utils.move_files_to_cache(server_file, component)
    with pytest.raises(gr.Error, match="Only a CSV file uploaded on this page"):
        asyncio.run(processing_utils.async_move_files_to_cache(server_file, component))
    upload = Path(gr.utils.get_upload_folder()) / f"triage-test-{time.time_ns()}" / "mine.csv"
    upload.parent.mkdir(parents=True)
    try:
        upload.write_text("text\nhello\n")
        for moved in (
            processing_utils.move_files_to_cache({**server_file, "path": str(upload)}, component),
            asyncio.run(processing_utils.async_move_files_to_cache({**server_file, "path": str(upload)}, component)),
        ):
            assert Path(moved["path"]).read_text() == "text\nhello\n"
    finally:
        upload.unlink()
        upload.parent.rmdir()


def test_an_anonymous_call_to_the_hidden_review_endpoint_is_refused(queue):
    """The review buttons are hidden and private, yet reachable over Gradio's queue: the handler itself says no."""
    import requests

    ((flagged, _),) = review.flag([{"ticket": {"text": "Charged twice"}, "expected": {"category": "billing"}}], client="x")
    demo = ui.build()
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    try:
        index = {d.fn.__name__: i for i, d in demo.fns.items() if d.fn}

        def run(name: str, data: list) -> bytes:
            join = {"data": data, "fn_index": index[name], "session_hash": "attacker", "event_data": None, "trigger_id": None}
            requests.post(f"http://127.0.0.1:{port}/gradio_api/queue/join", json=join, timeout=30).raise_for_status()
            params = {"session_hash": "attacker"}
            with requests.get(f"http://127.0.0.1:{port}/gradio_api/queue/data", params=params, stream=True, timeout=60) as events:
                return next(line for line in events.iter_lines() if b"process_completed" in line)

        assert b'"success":true' in run("show_queue", ["pending"])  # the session now knows the pending ids
        refused = run("accept_cases", ["pending", [flagged.id], "as flagged", ""])
        assert b"Reviewing needs a logged-in reviewer" in refused, refused
        refused = run("mark_fixed", ["all", "all", ""])  # cases fix, as a button: for reviewers too
        assert b"Reviewing needs a logged-in reviewer" in refused, refused
        assert review.counts() == {"pending": 1, "accepted": 0, "rejected": 0} and not (queue / "cases.csv").exists()
    finally:
        demo.close()


# --- issue 35: errors and values where the eye is, one thing compared at a time, panels that follow, words ---------
def test_the_batch_tab_lists_the_rows_that_failed_each_with_its_field_and_why(client, tmp_path):
    """Not only "25 errors": the first 20 rows that failed, by number, field (in words) and why; a count of them all."""
    rows = [("Where is my parcel?", "email")] + [("", "email")] * 24 + [("I was charged twice", "fax")]
    pd.DataFrame(rows, columns=["text", "channel"]).to_csv(tmp_path / "bad.csv", index=False)
    headline, failed, *_, summary = call(client, **batch_args(tmp_path / "bad.csv"), api_name="/batch_report")
    assert summary["errors"] == 25 and "**25 rows could not be scored**: the first 20 below" in headline, headline
    assert failed["visible"] and failed["value"]["headers"] == render.ERROR_COLUMNS
    listed = failed["value"]["data"]
    assert len(listed) == 20 and listed[0] == [2, "Text", "String should have at least 1 character"]  # row 1 scored
    said, every = render.failed_rows(summary, limit=100)
    assert "each below" in said and [str(v) for v in every.values[-1][:2]] == ["26", "Channel"] and "web_form" in every.values[-1][2]
    good = tmp_path / "good.csv"
    pd.DataFrame({"text": ["Where is my parcel?"]}).to_csv(good, index=False)
    headline, failed, *_ = call(client, **batch_args(good), api_name="/batch_report")
    assert not failed["visible"] and "could not be scored" not in headline  # nothing failed: no table, no line


def test_the_batch_tab_takes_the_text_column_the_user_picks(client, tmp_path):
    """batch.py's --text-column as a box on the tab; the message for a CSV without the column names the box, never an
    option the tab lacks."""
    source = tmp_path / "messages.csv"
    pd.DataFrame({"message": ["I was charged twice", "Where is my parcel?"]}).to_csv(source, index=False)
    with pytest.raises(Exception, match="no 'text' column") as error:
        call(client, **batch_args(source), api_name="/batch_report")
    assert "'Text column'" in str(error.value) and "--text-column" not in str(error.value) and "--column" not in str(error.value)
    *_, summary = call(client, **batch_args(source), text_column="message", api_name="/batch_report")
    assert summary["rows"] == 2 and summary["errors"] == 0 and summary["columns"][contract.text_field()] == "message"
    assert ui.csv_columns(str(source)).choices == [("message", "message")]  # the box offers the upload's columns
    assert ui.csv_columns(None).choices == [] and ui.csv_columns(str(tmp_path / "none.csv")).choices == []


def test_the_batch_tab_shows_each_input_columns_allowed_values():
    """The CSV must say `web_form` where the Run tab shows "Web form": the tab lists both, for every enum field."""
    table = render.allowed_values()
    assert list(table["column"]) == list(model.Input.model_fields)
    channel = table.set_index("column").loc["channel"]
    assert channel["field"] == "Channel" and "web_form (Web form)" in channel["values"] and channel["default"] == "web_form"
    assert table.set_index("column").loc["text", "required"] == "yes"
    demo = ui.build()
    shown = [c.value for c in demo.blocks.values() if isinstance(c, gr.Dataframe) and c.value and "values" in c.value["headers"]]
    assert any("web_form (Web form)" in str(v["data"]) for v in shown)


def test_compare_names_the_flags_that_differ(client):
    headline, *_ = call(client, text="How do I reset my password?", b_auto_reply=False, b_top_k=5, api_name="/compare")
    assert "B's flags differ from A's: **Top k** (A 3, B 5), **Auto reply** (A yes, B no)" in headline, headline
    headline, *_ = call(client, text="How do I reset my password?", api_name="/compare")
    assert "differ from A's" not in headline and "B's flags are A's" in headline


def test_with_b_on_another_version_b_starts_with_as_flags(client):
    """The undocumented endpoint behind B's version picker: on another version B's flags become A's (so that only the
    version differs); on the served one B's flags are left as the person set them."""
    a = {**model.Flags().model_dump(), "mask_pii": False, "top_k": 5}
    assert list(call(client, *a.values(), "v7", api_name="/b_flags")) == list(a.values())
    kept = call(client, *a.values(), "served", api_name="/b_flags")
    assert list(kept) != list(a.values())


def test_after_an_error_the_panels_no_longer_show_the_previous_answer():
    """Run, Compare and Batch: a failed request (an empty text, a bad file) is followed by a listener that clears what
    the last request showed, with a note; gradio_client still gets the error (test_bad_ticket_gives_an_error_not_a_hang).
    The browser's view of it: tests/test_browser.py."""
    demo = ui.build()
    tabs = [b for b in demo.blocks.values() if isinstance(b, gr.Tab)]
    assert len({t.parent._id for t in tabs}) == 1  # one tab bar: nothing made at wiring time lands between two tabs
    deps = demo.config["dependencies"]
    for api_name in ("run", "compare", "batch_report"):
        (index,) = [i for i, d in enumerate(deps) if d["api_name"] == api_name]
        (after,) = [d for d in deps if d["trigger_after"] == deps[index]["id"] and d["trigger_only_on_failure"]]
        assert after["outputs"] == deps[index]["outputs"], api_name
        cleared = demo.fns[after["id"]].fn()
        assert {c._id for c in cleared} == set(after["outputs"])
        said = [v for v in cleared.values() if isinstance(v, str)]
        assert len(said) == 1 and ("No answer" in said[0] or "No comparison" in said[0] or "No report" in said[0]), said
        assert not any(isinstance(v, (pd.DataFrame, dict, list)) and len(v) for v in cleared.values()), cleared


def test_tables_and_panels_show_words_not_code_names(client):
    """Class probabilities, the answer's table, the step panels and the answer's headline: values and names in words,
    one boolean style, never `True`, `None` or `mask_pii`."""
    glance, fields, label, *_ = call(client, text="Where is my parcel? Order 75983714", api_name="/run")
    assert all("_" not in c["label"] for c in label["confidences"]), label
    cells = [cell for row in fields["data"] for cell in row]
    assert not {"True", "False", "None", "✓ yes"} & set(map(str, cells)) and "_" not in glance, (cells, glance)
    answer = model.run("Where is my parcel? 75983714", debug=True)
    with gr.Blocks() as shown:
        render.step_panels([s.model_dump(mode="json") for s in answer.trace])
    titles = [c.label for c in shown.blocks.values() if isinstance(c, gr.Accordion)]
    assert titles and all("_" not in t.split(" · ")[0] for t in titles), titles
    tables = [c.value for c in shown.blocks.values() if isinstance(c, gr.Dataframe)]
    words = {str(cell) for t in tables for row in t["data"] for cell in row} | {h for t in tables for h in t["headers"]}
    assert {"Mask PII", "yes", render.label_of(answer.category.value)} <= words  # a step's output named as an answer's field
    assert not {"True", "False", "None", "mask_pii", answer.category.value} & words, words
    assert render._short(True) == "yes" and render._short(False) == "no"  # one style: no tick beside a plain no
    assert "✓" not in Path(render.__file__).read_text() + Path(ui.__file__).read_text()
    assert render.answer_words("billing needs_human=True") == "Billing (needs human: yes)"
    assert "needs_human" not in render.expected_shown(model.Expected(category="billing", needs_human=True))
    assert ui.CSS.count("word-break: normal") >= 2  # a cell or a headline wraps between words, never inside one


def test_counted_nouns_are_right_for_one(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIAGE_EDGE_CASES", str(tmp_path / "cases.csv"))
    edge_cases.save_cases([{"ticket": {"text": "How do I reset my password?"}, "expected": {"category": "account_access"}, "train": True}])
    headline, _ = render.check_all()
    assert "**1 case**" in headline and "1 training example (never" in headline, headline
    assert render.batch_headline({"rows": 1, "errors": 1, "rows_per_s": 2.0}).startswith("**1 row**, 1 error,")


def test_the_under_both_versions_table_follows_the_filters_and_says_whose_answer():
    both = [
        {
            render.TEXT: "a",
            "expected": "Billing",
            "verdict": "fixed",
            "source": "ui",
            "id": "1",
            "version": "v2",
            "candidate": "broken",
            "answer": "Feedback",
        },
        {
            render.TEXT: "b",
            "expected": "Billing",
            "verdict": "fixed",
            "source": "api",
            "id": "2",
            "version": "v2",
            "candidate": "fixed",
            "answer": "Billing",
        },
        {
            render.TEXT: "c",
            "expected": "Returns",
            "verdict": "open",
            "source": "ui",
            "id": "3",
            "version": "v2",
            "candidate": "open",
            "answer": "Billing",
        },
    ]
    table = render.both_table(both)
    assert list(table.columns) == [render.TEXT, "expected", "verdict served", "verdict on v2", "answer on v2", "id"]
    assert list(table.id) == ["1", "2", "3"]  # the cases whose verdicts differ first
    assert list(render.both_table(both, "broken").id) == ["1"]  # broken on the candidate
    assert list(render.both_table(both, "fixed").id) == ["1", "2"] and list(render.both_table(both, "open", "ui").id) == ["3"]
    assert list(render.both_table(both, "all", "api").id) == ["2"]


def test_batch_compare_counts_rows_where_any_field_differs():
    compared = {"agreement": 0.5, "agreement_per_field": {"category": 1.0, "needs_human": 0.5}, "differing_total": 2}
    said = render.compare_said(compared, 4)
    assert said == "A and B differ on **2 rows** of 4: Needs human (50% agree)", said
    compared["differing_per_field"] = {"category": 0, "needs_human": 2}
    assert render.compare_said(compared, 4) == "A and B differ on **2 rows** of 4: Needs human (2 rows)"
    assert render.compare_said({"agreement": 1.0, "agreement_per_field": {"category": 1.0}, "differing_total": 0}, 4).startswith(
        "A and B agree on every field"
    )
