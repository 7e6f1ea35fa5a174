"""The gate's statistics on answers made up for the purpose: noise passes, a real regression is refused with its interval,
and every figure is what scikit-learn and the binomial distribution say."""

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from loop import gate

CLASSES = [f"c{i}" for i in range(8)]
EXPECTED = [c for c in CLASSES for _ in range(20)]  # 160 rows, 20 per class (the worked example's evaluation set has that shape)


def answers(wrong: dict[int, str]) -> list[str]:
    """The expected answers, except rows `wrong` answered otherwise."""
    return [wrong.get(i, e) for i, e in enumerate(EXPECTED)]


def mcnemar_by_hand(broken: int, fixed: int) -> float:
    """P(at least `broken` of `broken + fixed` coin tosses come up broken)."""
    n = broken + fixed
    return sum(math.comb(n, k) for k in range(broken, n + 1)) / 2**n


SERVED = answers({i: "c7" for i in range(0, 160, 10)})  # 16 wrong, spread over the classes


def test_the_same_answers_change_nothing():
    stats = gate.paired(EXPECTED, SERVED, SERVED, 0.05, 500)
    assert stats["mcnemar"] == {"fixed": 0, "broken": 0, "p_worse": 1.0, "p_two_sided": 1.0}
    assert stats["deltas"]["accuracy"] == {"delta": 0.0, "low": 0.0, "high": 0.0} and stats["regressions"] == []


def test_the_point_figures_are_scikit_learns():
    candidate = answers({i: "c3" for i in range(5, 160, 7)})
    stats = gate.paired(EXPECTED, SERVED, candidate, 0.05, 500)
    for side, predicted in (("served", SERVED), ("candidate", candidate)):
        assert stats[side]["accuracy"] == round(accuracy_score(EXPECTED, predicted), 4)
        assert stats[side]["macro_f1"] == round(f1_score(EXPECTED, predicted, average="macro"), 4)
        per_class = f1_score(EXPECTED, predicted, labels=CLASSES, average=None)
        assert stats[side]["class_f1"] == {c: round(float(f), 4) for c, f in zip(CLASSES, per_class, strict=True)}
    d = stats["deltas"]["accuracy"]
    assert d["delta"] == round(stats["candidate"]["accuracy"] - stats["served"]["accuracy"], 4) and d["low"] <= d["delta"] <= d["high"]


def test_a_change_of_a_few_tickets_is_noise_and_passes():
    """Two tickets broken, none fixed: 0.0125 of accuracy, more than the old gate's limit of 0.01, and no evidence."""
    candidate = list(SERVED)
    candidate[1], candidate[2] = "c5", "c5"
    stats = gate.paired(EXPECTED, SERVED, candidate, 0.05, 2000)
    assert stats["mcnemar"]["broken"] == 2 and stats["mcnemar"]["p_worse"] == round(mcnemar_by_hand(2, 0), 4) == 0.25
    assert stats["regressions"] == [] and stats["deltas"]["accuracy"]["low"] < 0 < stats["deltas"]["macro_f1"]["high"] + 1e-9


def test_a_real_regression_is_refused_with_its_interval():
    candidate = answers({i: "c7" for i in range(0, 160, 4)})  # every fourth ticket answered c7
    stats = gate.paired(EXPECTED, SERVED, candidate, 0.05, 2000)
    right = [(s == e, c == e) for e, s, c in zip(EXPECTED, SERVED, candidate, strict=True)]
    broken, fixed = right.count((True, False)), right.count((False, True))
    assert (stats["mcnemar"]["broken"], stats["mcnemar"]["fixed"]) == (broken, fixed) == (28, 7)
    assert stats["mcnemar"]["p_worse"] == round(mcnemar_by_hand(broken, fixed), 4) < 0.001
    (accuracy, *others) = stats["regressions"]
    acc = stats["deltas"]["accuracy"]
    assert acc["delta"] == pytest.approx((fixed - broken) / 160, abs=1e-4)
    assert accuracy.startswith(f"accuracy down {-acc['delta']:.4f} (95% CI {acc['low']:+.4f} to {acc['high']:+.4f})")
    assert acc["high"] < 0 and f"{broken} rows broken, {fixed} fixed, McNemar p = " in accuracy
    assert any(r.startswith("macro-F1 down") for r in others)


def test_a_class_that_collapses_is_named_even_when_the_others_gain():
    """The candidate gets every c2 wrong but fixes what the served one got wrong elsewhere: accuracy barely moves."""
    candidate = answers({i: "c4" for i in range(40, 60)})
    stats = gate.paired(EXPECTED, SERVED, candidate, 0.05, 2000)
    named = [r for r in stats["regressions"] if r.startswith("F1 of c2 down")]
    assert named and "99.38% CI" in named[0], stats["regressions"]  # Bonferroni over 8 classes: 1 - 0.05 / 8


def test_the_bootstrap_is_repeatable():
    candidate = answers({i: "c1" for i in range(3, 160, 9)})
    assert gate.paired(EXPECTED, SERVED, candidate, 0.05, 300) == gate.paired(EXPECTED, SERVED, candidate, 0.05, 300)


@pytest.mark.parametrize(
    ("configured", "message"),
    [({"max_macro_f1_drop": 0.01}, "no setting ['max_macro_f1_drop']"), ({"significance": 0.9}, "between 0 and 0.5")],
)
def test_config_names_what_is_wrong(tmp_path, monkeypatch, configured, message):
    import yaml

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"gate": configured}))
    monkeypatch.setattr(gate.model, "ROOT", tmp_path)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        gate.settings()


def test_the_report_shows_intervals_and_changed_tickets():
    candidate = answers({i: "c7" for i in range(0, 160, 4)})
    served_side = {"sets": {"eval": {gate.SHOWN: [f"t{i}" for i in range(160)], "expected": EXPECTED, "predicted": SERVED}}, "cases": []}
    candidate_side = {"sets": {"eval": {**served_side["sets"]["eval"], "predicted": candidate}}, "cases": []}
    verdict = gate.compare(served_side, candidate_side, gate.SETTINGS) | {"candidate": "x", "against": "artifacts", "batches": []}
    verdict["sides"] = {}
    assert not verdict["passed"] and verdict["failures"][0].startswith("eval: accuracy down 0.1312 (95% CI")
    assert len(verdict["sets"]["eval"]["changed_rows"]) == sum(s != c for s, c in zip(SERVED, candidate, strict=True))
    page = gate.html(verdict)
    assert "accuracy Δ, 95% CI" in page and "F1 per class, delta with its Bonferroni interval" in page and "t4" in page
    assert "eval (160 rows): accuracy 0.9125 -> 0.7812 (-0.1312, 95% CI" in gate.described("eval", verdict["sets"]["eval"], 0.05)
    assert np.isfinite(verdict["sets"]["eval"]["deltas"]["macro_f1"]["low"])


def test_a_row_that_is_no_input_is_named_and_the_rest_judged(tmp_path, monkeypatch):
    """A batch with one invalid row (a required field left empty): that row is left out with its number and field, as
    batch.py reports it, and the other rows are judged (the pipeline here a double that answers the example's label)."""
    import pandas as pd

    from building import contract

    model, label = gate.model, contract.label()
    right = getattr(model.Expected.model_validate(model.Expected.model_config["json_schema_extra"]["examples"][0]), label)
    required = next(name for name, field in model.Input.model_fields.items() if field.is_required())
    rows = [contract.input_example(), {**contract.input_example(), required: ""}, contract.input_example()]
    pd.DataFrame([{**r, contract.expected_column(): gate._label_word(right)} for r in rows]).to_csv(tmp_path / "batch.csv", index=False)
    answer = model.Output.model_construct(**{label: right})
    monkeypatch.setattr(contract, "run_each", lambda inputs, flags=None, timings=None: [answer for _ in inputs])
    judged = gate.judged(tmp_path / "batch.csv")
    assert judged["row_numbers"] == [1, 3] and judged["expected"] == judged["predicted"] == [gate._label_word(right)] * 2
    (left_out,) = judged["left_out"]
    assert left_out["row"] == 2 and left_out["problem"].startswith(f"{required}: "), left_out
    verdict = gate.compare({"sets": {"batch": judged}, "cases": []}, {"sets": {"batch": judged}, "cases": []}, gate.SETTINGS)
    assert verdict["passed"] and verdict["sets"]["batch"]["rows"] == 2 and verdict["sets"]["batch"]["left_out"] == [left_out]
