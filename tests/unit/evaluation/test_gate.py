"""The release gate: hand-made figures against each threshold, and real-cohort controls that must pass or fail."""

from __future__ import annotations

import math

import pytest

from fedsynth.errors import ValidationError
from fedsynth.evaluation.gate import GateThresholds, gate_from_privacy, release_gate


def _privacy(copies: float = 0.0, copies_hold: float = 0.0, p5: float = 0.5, p5_hold: float = 0.5,
             p5_below: float = 0.45, auc: float | None = 0.5) -> dict:  # type: ignore[type-arg]
    return {
        "exact_copies": copies, "exact_copies_holdout": copies_hold, "mia_auc": auc,
        "nndr": {"synthetic": {"mean": 0.8, "p5": p5}, "holdout": {"mean": 0.8, "p5": p5_hold}},
        "thresholds": {"nndr_p5_below": p5_below},
    }


def test_gate_passes_figures_at_their_baselines() -> None:
    # Run
    result = gate_from_privacy(_privacy())
    # Assert
    assert result.passed and result.flags == () and result.explain() == "no figure flagged"


@pytest.mark.parametrize(
    "figures, flagged",
    [
        ({"copies": 0.002, "copies_hold": 0.001}, ["exact_copies"]),
        ({"copies": 0.001, "copies_hold": 0.001}, []),  # equal to the holdout's own rate: not above it
        ({"p5": 0.449}, ["nndr_p5"]),  # below holdout p5 minus the evaluator's tolerance (0.45)
        ({"p5": 0.46}, []),  # below the holdout's 0.5 but inside its sampling error
        ({"auc": 0.61}, ["mia_auc"]),
        ({"auc": 0.6}, []),  # "above 0.6" is strict
        ({"copies": 1.0, "p5": 0.0, "auc": 0.99}, ["exact_copies", "nndr_p5", "mia_auc"]),
    ],
)
def test_gate_flags_each_figure_past_its_default_threshold(figures: dict, flagged: list[str]) -> None:  # type: ignore[type-arg]
    # Run
    result = gate_from_privacy(_privacy(**figures))
    # Assert
    assert result.flagged == flagged
    assert result.passed is (not flagged)


def test_gate_judges_exact_copies_with_shared_records_set_apart() -> None:
    # Setup: the holdout holds no copy (0%); 2 of 2,661 synthetic rows copy a shared record with no number known, and
    # in the second section one more copies another record
    shared = {**_privacy(copies=2 / 2661), "exact_copies_judged": 0.0, "exact_copies_holdout_judged": 0.0}
    other = {**shared, "exact_copies": 3 / 2661, "exact_copies_judged": 1 / 2661}
    # Run
    passed, refused = gate_from_privacy(shared), gate_from_privacy(other)
    tolerated = gate_from_privacy(other, GateThresholds(exact_copies_margin=0.001))
    # Assert: the whole share (0.08%) is above the holdout's 0%, but only the copy of another record refuses
    assert passed.passed and passed.figures["exact_copies_judged"] == 0.0
    assert refused.flagged == ["exact_copies"]
    flag = refused.flags[0]
    assert flag.value == pytest.approx(1 / 2661) and flag.limit == 0.0
    assert "0.04% of rows, above the holdout's own 0.00%" in flag.message and "set apart" in flag.message
    assert tolerated.passed  # 0.04% is under the margin of 0.1%


def test_gate_thresholds_override_the_defaults() -> None:
    # Setup: a fixed NNDR margin replaces the bootstrap tolerance; a stricter AUC; a tolerated copy rate
    th = GateThresholds(exact_copies_margin=0.01, nndr_p5_margin=0.0, mia_auc_above=0.55)
    # Run
    result = gate_from_privacy(_privacy(copies=0.005, p5=0.49, auc=0.56), th)
    # Assert
    assert result.flagged == ["nndr_p5", "mia_auc"]
    nndr_flag = result.flags[0]
    assert nndr_flag.limit == pytest.approx(0.5) and nndr_flag.value == pytest.approx(0.49)
    assert "0.490" in nndr_flag.message and "0.500" in nndr_flag.message


def test_gate_without_holdout_figures_refuses_and_says_what_is_missing() -> None:
    # Setup: what privacy_analysis returns without a holdout
    privacy = {"exact_copies": 0.0, "exact_copies_holdout": None, "mia_auc": None,
               "nndr": {"synthetic": {"mean": 0.8, "p5": 0.5}, "holdout": None}, "thresholds": {}}
    # Run
    result = gate_from_privacy(privacy)
    # Assert
    assert not result.passed
    assert result.missing == ("exact_copies", "nndr_p5", "mia_auc")
    assert all(math.isnan(f.value) for f in result.flags)


def test_gate_thresholds_report_every_bad_value_at_once() -> None:
    with pytest.raises(ValidationError) as exc:
        GateThresholds.from_mapping({"mia_auc_above": 0.3, "exact_copies_margin": -1, "dcr": 0.7})
    assert "1 problem" in str(exc.value) and "dcr" in str(exc.value)  # unknown keys are reported first
    with pytest.raises(ValidationError) as exc2:
        GateThresholds(exact_copies_margin=-1, mia_auc_above=0.3)
    assert "2 problems" in str(exc2.value)


def test_release_gate_refuses_a_copy_of_the_training_rows(mds_split) -> None:  # type: ignore[no-untyped-def]
    # Setup
    schema, holdout, a, _ = mds_split
    train = a.iloc[:800]
    # Run
    result, privacy = release_gate(train, train.copy(), schema, holdout_data=holdout, random_state=0)
    # Assert: every figure the gate reads fails
    assert result.flagged == ["exact_copies", "nndr_p5", "mia_auc"]
    assert privacy["exact_copies"] == 1.0 and result.figures["nndr_p5"] == 0.0
    assert result.figures["mia_auc"] is not None and result.figures["mia_auc"] > 0.9


def test_release_gate_passes_real_rows_it_never_trained_on(mds_split) -> None:  # type: ignore[no-untyped-def]
    # Setup: new real patients are what a perfect generator would release
    schema, holdout, a, b = mds_split
    # Run
    result, _ = release_gate(a.iloc[:800], b.iloc[:800], schema, holdout_data=holdout, random_state=0)
    # Assert
    assert result.passed, result.explain()
