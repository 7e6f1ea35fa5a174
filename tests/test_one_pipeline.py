"""One pipeline, every face: the same ticket, with all its fields, gets the same answer from `model.run`, `run_batch`,
`POST /predict`, the app's Triage button (gradio_client), `batch.py` and the app's Batch tab."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import requests
from conftest import ROOT, Server
from gradio_client import Client, handle_file

import batch
import model
from building import contract
from reporting.reports import read_report


@pytest.fixture(scope="module")
def tickets():
    """Eval tickets, five of each category, each with another channel and customer tier."""
    frame = pd.read_csv(ROOT / "data" / "eval.csv", dtype=str).groupby(contract.expected_column()).head(5).reset_index(drop=True)
    channels, tiers = list(model.Channel), list(model.CustomerTier)
    frame["channel"] = [channels[i % len(channels)].value for i in range(len(frame))]
    frame["customer_tier"] = [tiers[i % len(tiers)].value for i in range(len(frame))]
    return frame


@pytest.fixture(scope="module")
def server():
    running = Server()
    yield running
    running.stop()


@pytest.mark.quick
def test_every_face_gives_a_ticket_the_same_answer(tickets, server, tmp_path):
    given = [contract.input_from_row(row) for row in tickets.to_dict("records")]
    assert {t.customer_tier for t in given} == set(model.CustomerTier) and {t.channel for t in given} == set(model.Channel)
    answers = [model.run(t).model_dump_json() for t in given]
    assert len({json.loads(a)["urgency"] for a in answers}) > 1  # the tiers change answers: this test would see a face drop them

    assert [r.model_dump_json() for r in model.run_batch(given)] == answers
    over_http = [requests.post(f"{server.url}/predict", json=t.model_dump(mode="json"), timeout=60) for t in given]
    assert [r.text for r in over_http] == answers  # byte for byte

    client = Client(f"{server.url}/", verbose=False)
    for ticket, answer in zip(given, answers, strict=True):
        *_, shown = client.predict(**ticket.model_dump(mode="json"), api_name="/run")
        assert shown == {k: v for k, v in json.loads(answer).items() if k != "trace"}

    source = tmp_path / "tickets.csv"
    tickets.to_csv(source, index=False)
    cli = tmp_path / "cli.csv"
    subprocess.run([sys.executable, "batch.py", str(source), "-o", str(cli), "--quiet"], cwd=ROOT, check=True, timeout=300)
    rows = next(read_report(cli, 1000)).to_dict("records")
    expected_rows = [{k: str(v) for k, v in batch.flatten(model.Triage.model_validate_json(a)).items()} for a in answers]
    assert [{k: r[k] for k in batch.OUTPUT_COLUMNS} for r in rows] == expected_rows

    *_, files, _summary = client.predict(file=handle_file(str(source)), api_name="/batch_report")
    from_tab = next(p for p in files if p.endswith(".csv"))
    assert Path(from_tab).read_bytes() == cli.read_bytes()  # the Batch tab's report is batch.py's, byte for byte


def test_a_bad_field_is_that_rows_error_with_its_number_and_field(tmp_path):
    source = tmp_path / "in.csv"
    rows = [("I cannot log in", "vip", "phone"), ("I cannot log in", "", ""), ("I cannot log in", "gold", "email")]
    pd.DataFrame(rows, columns=["text", "customer_tier", "channel"]).to_csv(source, index=False)
    batch.report(source, tmp_path / "out.csv", progress=False)
    out = next(read_report(tmp_path / "out.csv", 10))
    assert list(out.error[:2]) == ["", ""] and out.error[2].startswith("row 3: customer_tier: Input should be")
    vip, standard = model.run({"text": "I cannot log in", "customer_tier": "vip"}), model.run("I cannot log in")
    assert list(out.urgency[:2]) == [vip.urgency, standard.urgency]
    assert out.urgency[0] != out.urgency[1]  # vip is read, and an empty cell is the default
