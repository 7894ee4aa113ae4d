"""Arm report figures on small frames: hand-computed balance, and survival figures equal to lifelines."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, SurvivalEndpoint, TableSchema
from fedsynth.evaluation.arm import arm_hazard_ratio, arm_report, km_curve, standardized_mean_differences

K, R = ColumnKind, ColumnRole


def _schema() -> TableSchema:
    return TableSchema((
        ColumnSpec("AGE", K.CONTINUOUS),
        ColumnSpec("TP53", K.BINARY, R.GENOMIC),
        ColumnSpec("SEX", K.CATEGORICAL, categories=("F", "M")),
        ColumnSpec("T", K.CONTINUOUS, R.OUTCOME),
        ColumnSpec("E", K.BINARY, R.OUTCOME),
    ), (SurvivalEndpoint("OS", "T", "E"),))


def test_standardized_mean_differences_match_hand_computed_values() -> None:
    # Setup: AGE means 2 vs 3, sample variances 1 and 1 -> -1; TP53 shares 0.5 vs 0.25 ->
    # 0.25 / sqrt((0.25 + 0.1875) / 2); SEX=F shares 0.5 vs 0.75 -> the same value negated
    arm = pd.DataFrame({"AGE": [1.0, 2.0, 3.0, np.nan], "TP53": [1.0, 1.0, 0.0, 0.0], "SEX": ["F", "F", "M", "M"]})
    ref = pd.DataFrame({"AGE": [2.0, 3.0, 4.0, 3.0], "TP53": [1.0, 0.0, 0.0, 0.0], "SEX": ["F", "F", "F", "M"]})
    # Run
    rows = {(r["column"], r["level"]): r for r in standardized_mean_differences(arm, ref, _schema())}
    # Assert
    ref_var = float(np.var([2.0, 3.0, 4.0, 3.0], ddof=1))
    assert rows[("AGE", None)]["smd"] == pytest.approx((2.0 - 3.0) / math.sqrt((1.0 + ref_var) / 2))
    assert rows[("TP53", None)]["smd"] == pytest.approx(0.25 / math.sqrt(0.21875))
    assert rows[("SEX", "F")]["smd"] == pytest.approx(-0.25 / math.sqrt(0.21875))
    assert rows[("TP53", None)]["flag"] and rows[("AGE", None)]["flag"]
    assert set(rows) == {("AGE", None), ("TP53", None), ("SEX", "F"), ("SEX", "M")}


def test_km_curve_equals_lifelines_and_counts_at_risk_by_hand() -> None:
    from lifelines import KaplanMeierFitter

    # Setup
    T = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 6.0, np.nan])
    E = np.array([1, 1, 0, 1, 0, 1, 1, 1])
    # Run
    km = km_curve(T, E, [0.0, 2.0, 4.5])
    # Assert
    ref = KaplanMeierFitter().fit(T[:7], E[:7])
    assert km["n"] == 7 and km["events"] == 5
    assert km["median"] == pytest.approx(ref.median_survival_time_)
    assert km["survival"] == pytest.approx(list(ref.survival_function_.iloc[:, 0]))
    assert km["at_risk"] == [[0.0, 7], [2.0, 6], [4.5, 2]]
    assert all(lo <= s <= hi for lo, s, hi in zip(km["lower"], km["survival"], km["upper"], strict=True))


def test_hazard_ratio_and_log_rank_equal_lifelines_on_the_pooled_frame() -> None:
    from lifelines import CoxPHFitter
    from lifelines.statistics import logrank_test

    # Setup
    rng = np.random.default_rng(3)
    aT, rT = rng.exponential(1.0, 80), rng.exponential(2.0, 90)
    aE, rE = (rng.random(80) < 0.8).astype(float), (rng.random(90) < 0.8).astype(float)
    # Run
    got = arm_hazard_ratio(aT, aE, rT, rE)
    # Assert
    frame = pd.DataFrame({"T": np.r_[aT, rT], "E": np.r_[aE, rE], "g": np.r_[np.ones(80), np.zeros(90)]})
    cox = CoxPHFitter().fit(frame, "T", "E").summary.loc["g"]
    assert got["hr"] == pytest.approx(math.exp(cox["coef"]))
    assert got["hr_lower"] == pytest.approx(cox["exp(coef) lower 95%"])
    assert got["logrank_p"] == pytest.approx(logrank_test(aT, rT, aE, rE).p_value, rel=1e-6)
    assert got["hr"] > 1  # the arm's hazard is twice the reference's


def test_an_arm_against_itself_shows_no_difference() -> None:
    # Setup: a control that must pass: the same rows as arm and reference
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"AGE": rng.normal(70, 8, 100), "TP53": (rng.random(100) < 0.2).astype(float),
                          "SEX": rng.choice(["F", "M"], 100).astype(object), "T": rng.exponential(2.0, 100),
                          "E": (rng.random(100) < 0.7).astype(float)})
    # Run
    report = arm_report(frame, _schema(), reference=frame.copy())
    # Assert
    comp = report["endpoints"]["OS"]["comparison"]
    assert comp["hr"] == pytest.approx(1.0, abs=1e-6)
    assert comp["logrank_p"] == pytest.approx(1.0)
    assert comp["median_difference"] == 0.0
    assert all(b["smd"] == pytest.approx(0.0) for b in report["balance"])


def test_the_arm_html_flags_median_differences_at_the_evaluators_one_threshold(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    import fedsynth.evaluation.survival_effects as se
    from fedsynth.evaluation.arm import arm_html

    # Setup: an arm whose times are the reference's times 1.2 times over (median 20% longer)
    rng = np.random.default_rng(0)
    t = rng.exponential(2.0, 400)
    ref = pd.DataFrame({"AGE": rng.normal(60, 5, 400), "TP53": 0.0, "SEX": "F", "T": t, "E": 1.0})
    report = arm_report(ref.assign(T=1.2 * t), _schema(), reference=ref)
    cell = re.compile(r'median difference[^<]*</td><td class="n ([a-z]*)')
    # Run / Assert: flagged at the shipped 15%, and the text says so
    html = arm_html(report, title="arm")
    assert cell.search(html).group(1) == "flag" and "flagged over 15%" in html  # type: ignore[union-attr]
    # control: with the threshold at 25% the same report is not flagged, and the text follows
    monkeypatch.setattr(se, "MEDIAN_FLAG", 0.25)
    html = arm_html(report, title="arm")
    assert cell.search(html).group(1) == "" and "flagged over 25%" in html  # type: ignore[union-attr]
