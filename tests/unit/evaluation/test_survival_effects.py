"""Strict survival figures: hand-computed values, lifelines as reference, the fidelity formula, controls that must
fail, and strata chosen by role, never by name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.utils import restricted_mean_survival_time
from scipy import stats

from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, StratumSpec, SurvivalEndpoint, TableSchema
from fedsynth.evaluation.cox import COX_PENALIZER
from fedsynth.evaluation.strata import band_labels, default_strata, resolve_strata, stratum_labels
from fedsynth.evaluation.survival_effects import (
    EFFECT_ROWS_FACTOR,
    _flags,
    effect_score,
    endpoint_rule_report,
    expected_lost_by_chance,
    expected_lost_population,
    fidelity,
    group_score,
    km_distance,
    median_survival,
    relative_error,
    rmst,
    survival_effects,
)

# Two small samples worked by hand.
# A: times 1..5, events 1 0 1 1 0 -> S = 0.8 after 1, 8/15 after 3, 4/15 after 4; median 4.
# B: times 1..3, all events    -> S = 2/3 after 1, 1/3 after 2, 0 after 3; median 2.
TA, EA = np.array([1.0, 2, 3, 4, 5]), np.array([1.0, 0, 1, 1, 0])
TB, EB = np.array([1.0, 2, 3]), np.array([1.0, 1, 1])


def test_median_rmst_and_km_distance_equal_hand_computed_values():
    # Run / Assert
    assert median_survival(TA, EA) == 4.0
    assert median_survival(TB, EB) == 2.0
    assert median_survival(np.array([1.0, 2]), np.array([0.0, 0])) is None
    # RMST to 4.5: 1*1 + 0.8*2 + 8/15*1 + 4/15*0.5 = 49/15; B: 1 + 2/3 + 1/3 = 2
    assert rmst(TA, EA, 4.5) == pytest.approx(49 / 15)
    assert rmst(TB, EB, 4.5) == pytest.approx(2.0)
    # sup distance on [0, 4.5]: at t = 3, |8/15 - 0| = 8/15 (at 1: 2/15, at 2: 7/15, at 4: 4/15)
    assert km_distance(TA, EA, TB, EB, 4.5) == pytest.approx(8 / 15)
    # up to 1.5 only the first step counts: |0.8 - 2/3|
    assert km_distance(TA, EA, TB, EB, 1.5) == pytest.approx(2 / 15)


def test_group_and_effect_scores_follow_the_documented_formula():
    # Setup: the hand samples above as real (A) and synthetic (B)
    med_err = relative_error(2.0, 4.0)
    rm_err = relative_error(2.0, 49 / 15)
    # Run
    q = group_score(med_err, rm_err, 8 / 15)
    # Assert
    assert med_err == 0.5 and rm_err == pytest.approx(19 / 49)
    assert q == pytest.approx(1 - (0.5 + 19 / 49 + 8 / 15) / 3)
    assert group_score(None, 0.1, 0.2) == pytest.approx(0.85)  # undefined median left out
    assert group_score(3.0, 0.0, 0.0) == pytest.approx(2 / 3)  # errors capped at 1
    assert group_score(None, None, None) == 0.0  # a group the synthetic table lacks
    assert relative_error(None, 4.0) == 1.0 and relative_error(3.0, None) is None
    # effects: covers + kept + 1 - |0.9 - 1.2| / 1.2
    assert effect_score(1.2, 0.9, True, False) == pytest.approx((1 + 1 + 0.75) / 3)
    assert effect_score(0.035, 0.001, False, True) == pytest.approx((0 + 0 + 0.001 / 0.035) / 3)
    assert effect_score(1.0, -2.0, False, True) == 0.0
    assert effect_score(1.0, float("nan"), False, True) == 0.0
    # fidelity: mean of the two parts; curves alone without effects
    assert fidelity([1.0, 0.5], [0.25]) == {"value": pytest.approx(0.5), "curves": 0.75, "effects": 0.25}
    assert fidelity([0.8], [])["value"] == pytest.approx(0.8)


def test_km_figures_equal_lifelines_on_random_samples():
    # Setup
    rng = np.random.default_rng(3)
    Ta, Tb = rng.exponential(2.0, 200).round(2) + 0.01, rng.exponential(2.5, 150).round(2) + 0.01
    Ea, Eb = (rng.random(200) < 0.7).astype(float), (rng.random(150) < 0.6).astype(float)
    horizon = float(np.quantile(Ta, 0.9))
    ka = KaplanMeierFitter().fit(Ta, Ea)
    kb = KaplanMeierFitter().fit(Tb, Eb)
    # Run / Assert
    assert median_survival(Ta, Ea) == pytest.approx(ka.median_survival_time_)
    assert rmst(Ta, Ea, horizon) == pytest.approx(restricted_mean_survival_time(ka, t=horizon), rel=1e-9)
    pts = np.unique(np.r_[0.0, Ta[Ta <= horizon], Tb[Tb <= horizon], horizon])
    expected = np.max(np.abs(ka.survival_function_at_times(pts).to_numpy() - kb.survival_function_at_times(pts).to_numpy()))
    assert km_distance(Ta, Ea, Tb, Eb, horizon) == pytest.approx(expected, abs=1e-12)


def _toy(n: int, seed: int, effect: float = 1.0) -> pd.DataFrame:
    """A covariate x with a true log HR ``effect``, a two-level category and exponential survival."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    c = np.where(rng.random(n) < 0.5, "a", "b")
    T = rng.exponential(np.exp(-effect * x) * np.where(c == "a", 1.0, 2.0)) + 0.01
    E = (rng.random(n) < 0.8).astype(float)
    return pd.DataFrame({"x": x, "c": c, "T": T, "E": E})


def _toy_schema() -> TableSchema:
    return TableSchema(
        (ColumnSpec("x", ColumnKind.CONTINUOUS), ColumnSpec("c", ColumnKind.CATEGORICAL, categories=("a", "b")),
         ColumnSpec("T", ColumnKind.CONTINUOUS, ColumnRole.OUTCOME), ColumnSpec("E", ColumnKind.BINARY, ColumnRole.OUTCOME)),
        (SurvivalEndpoint("S", "T", "E"),), "toy",
    )


def test_effect_figures_equal_lifelines_coxph():
    # Setup: real and synthetic of the same size (the synthetic sample is then the whole table)
    real, syn = _toy(300, 0), _toy(300, 1, effect=0.6)
    # Run
    out = survival_effects(real, syn, _toy_schema(), rng=np.random.default_rng(0))
    # Assert
    row = next(e for e in out["effects"] if e["variable"] == "x")
    cph_r = CoxPHFitter(penalizer=COX_PENALIZER).fit(real[["x", "T", "E"]], "T", "E")
    cph_s = CoxPHFitter(penalizer=COX_PENALIZER).fit(syn[["x", "T", "E"]], "T", "E")
    lo, hi = cph_s.confidence_intervals_.loc["x"].to_numpy()
    # lifelines stops its Newton steps at ~1e-6 of the optimum the batched engine reaches
    assert row["log_hr_real"] == pytest.approx(cph_r.params_["x"], abs=1e-5)
    assert row["log_hr_synthetic"] == pytest.approx(cph_s.params_["x"], abs=1e-5)
    assert row["ci_synthetic"] == pytest.approx([lo, hi], abs=1e-5)
    assert row["p_synthetic"] == pytest.approx(cph_s.summary.loc["x", "p"], rel=1e-3)
    assert row["ci_covers_real"] == bool(lo <= cph_r.params_["x"] <= hi)
    assert row["log_hr_difference"] == pytest.approx(cph_s.params_["x"] - cph_r.params_["x"], abs=1e-5)


def test_a_larger_synthetic_table_is_read_at_the_real_size_against_lifelines():
    # Setup: 200 real rows, 1,000 synthetic rows (m / n = 5 <= EFFECT_ROWS_FACTOR: every row is fitted)
    real, syn = _toy(200, 0), _toy(1000, 1, effect=0.6)
    # Run
    out = survival_effects(real, syn, _toy_schema(), rng=np.random.default_rng(0))
    # Assert: lifelines on all 1,000 rows, its SE times sqrt(1000 / 200), the Wald p and interval from that SE
    row = next(e for e in out["effects"] if e["variable"] == "x")
    cph_s = CoxPHFitter(penalizer=COX_PENALIZER).fit(syn[["x", "T", "E"]], "T", "E")
    b, se_n = cph_s.params_["x"], cph_s.standard_errors_["x"] * np.sqrt(5)
    assert row["log_hr_synthetic"] == pytest.approx(b, abs=1e-5)
    assert row["se_synthetic"] == pytest.approx(se_n, rel=1e-4)
    assert row["p_synthetic"] == pytest.approx(2 * stats.norm.sf(abs(b) / se_n), rel=1e-3)
    assert row["ci_synthetic"] == pytest.approx([b - 1.959964 * se_n, b + 1.959964 * se_n], abs=1e-4)
    assert out["counts"]["synthetic_rows_for_effects"] == 1000
    # the size ratio and the SE ratio at the real size: lifelines' estimates and standard errors, real and synthetic
    cph_r = CoxPHFitter(penalizer=COX_PENALIZER).fit(real[["x", "T", "E"]], "T", "E")
    assert row["size_ratio"] == pytest.approx(b / cph_r.params_["x"], rel=1e-4)
    assert row["se_ratio"] == pytest.approx(se_n / cph_r.standard_errors_["x"], rel=1e-4)


def test_a_lost_effects_flag_gives_its_size_and_standard_error_ratios():
    # Setup: one effect of the toy tables, then marked lost by hand
    out = survival_effects(_toy(200, 0), _toy(1000, 1, effect=0.6), _toy_schema(), rng=np.random.default_rng(0))
    row = next(e for e in out["effects"] if e["variable"] == "x")
    # a lost effect's flag names both (an effect kept at its size, with 1.32 times the real SE: a rarer level); an
    # effect without them (a report of an older version, or a fit that failed) is flagged without them
    lost = {**row, "endpoint": "S", "variable": "c=b", "log_hr_real": -0.5, "log_hr_synthetic": -0.49,
            "p_synthetic": 0.08, "lost": True, "size_ratio": 0.98, "se_ratio": 1.32}
    older = {k: v for k, v in lost.items() if k not in ("size_ratio", "se_ratio")}
    failed = {**lost, "size_ratio": float("nan"), "se_ratio": None}
    assert _flags({}, [lost, older, failed], []) == [
        "S, c=b: effect lost (log HR -0.5 real, -0.49 synthetic, p 0.08; size ratio 0.98, SE ratio 1.32)",
        "S, c=b: effect lost (log HR -0.5 real, -0.49 synthetic, p 0.08)",
        "S, c=b: effect lost (log HR -0.5 real, -0.49 synthetic, p 0.08)"]


def test_the_synthetic_rows_for_effects_stop_at_the_factor_times_the_real_rows():
    # Setup: a synthetic table 15 times the real one
    real, syn = _toy(100, 0), _toy(1500, 1)
    # Run
    out = survival_effects(real, syn, _toy_schema(), rng=np.random.default_rng(0))
    # Assert: a sample of EFFECT_ROWS_FACTOR x 100 rows
    assert out["counts"]["synthetic_rows_for_effects"] == EFFECT_ROWS_FACTOR * 100
    # a factor given: that many times the real rows (the benchmarks' low-noise reading), the whole table when larger
    assert survival_effects(real, syn, _toy_schema(), rng=np.random.default_rng(0),
                            effect_rows_factor=12)["counts"]["synthetic_rows_for_effects"] == 1200
    assert survival_effects(real, syn, _toy_schema(), rng=np.random.default_rng(0),
                            effect_rows_factor=100)["counts"]["synthetic_rows_for_effects"] == 1500


def test_expected_lost_by_chance_equals_hand_computed_values():
    # Setup: |z_real| = 1.96 (lost half the time by one same-size draw) and 3.0, read from m / n = 1, 4 and 0.5
    z196, z3 = 2 * stats.norm.sf(1.959964), 2 * stats.norm.sf(3.0)

    def effects(ratio: float) -> list[dict[str, float]]:
        return [{"p_real": z196, "rows_ratio": ratio}, {"p_real": z3, "rows_ratio": ratio}]

    # Run / Assert: sum Phi((1.96 - |z|) * sqrt(m / n))
    assert expected_lost_by_chance(effects(1.0)) == pytest.approx(0.5 + stats.norm.cdf(1.959964 - 3.0), abs=0.005)
    assert expected_lost_by_chance(effects(4.0)) == pytest.approx(0.5 + stats.norm.cdf(2 * (1.959964 - 3.0)), abs=0.005)
    assert expected_lost_by_chance(effects(0.5)) == pytest.approx(
        0.5 + stats.norm.cdf(np.sqrt(0.5) * (1.959964 - 3.0)), abs=0.005)  # a smaller table: a wider scatter
    assert expected_lost_by_chance([{"p_real": z3}]) == pytest.approx(stats.norm.cdf(1.959964 - 3.0), abs=0.005)
    assert expected_lost_by_chance([{"p_real": float("nan"), "rows_ratio": 1.0}, {"p_real": z3, "rows_ratio": 1.0}]) == \
        pytest.approx(stats.norm.cdf(1.959964 - 3.0), abs=0.005)  # an undefined row is left out
    assert expected_lost_by_chance([]) == 0.0


def test_expected_lost_population_equals_hand_computed_values_and_a_simulation():
    # Setup: |z_real| = 1.96 and 3.0, read from m / n = 1 and 100
    z196, z3 = 2 * stats.norm.sf(1.959964), 2 * stats.norm.sf(3.0)

    def effects(ratio: float) -> list[dict[str, float]]:
        return [{"p_real": z196, "rows_ratio": ratio}, {"p_real": z3, "rows_ratio": ratio}]

    # Run / Assert: sum Phi((1.96 - |z|) / sqrt(1 + n / m)); the borderline effect half the time at any m
    assert expected_lost_population(effects(1.0)) == pytest.approx(
        0.5 + stats.norm.cdf((1.959964 - 3.0) / np.sqrt(2.0)), abs=0.005)
    assert expected_lost_population(effects(100.0)) == pytest.approx(
        0.5 + stats.norm.cdf((1.959964 - 3.0) / np.sqrt(1.01)), abs=0.005)
    assert expected_lost_population([]) == 0.0
    # it always exceeds what a generator copying the real effects loses (control: expected_lost_by_chance)
    assert expected_lost_population(effects(100.0)) > expected_lost_by_chance(effects(100.0)) + 0.1
    # a simulation of what it stands for: the true z drawn given z_real = 2.5 (flat prior), then the generator's
    # reading at m = 10 n; the share lost matches
    rng = np.random.default_rng(0)
    z_true = rng.normal(2.5, 1.0, 200_000)
    z_read = rng.normal(z_true, np.sqrt(0.1))
    share = float((z_read < 1.959964).mean())  # not significant, or significant with the other sign
    assert expected_lost_population([{"p_real": 2 * stats.norm.sf(2.5), "rows_ratio": 10.0}]) == pytest.approx(
        share, abs=0.01)


def test_a_smaller_synthetic_table_is_read_at_the_real_size_too():
    # Setup: 300 real rows, 150 synthetic rows
    real, syn = _toy(300, 0), _toy(150, 1, effect=0.6)
    # Run
    out = survival_effects(real, syn, _toy_schema(), rng=np.random.default_rng(0))
    # Assert: lifelines' SE on the 150 rows times sqrt(150 / 300), the row ratio recorded
    row = next(e for e in out["effects"] if e["variable"] == "x")
    cph_s = CoxPHFitter(penalizer=COX_PENALIZER).fit(syn[["x", "T", "E"]], "T", "E")
    assert row["se_synthetic"] == pytest.approx(cph_s.standard_errors_["x"] * np.sqrt(0.5), rel=1e-4)
    assert row["rows_ratio"] == 0.5


def test_an_effect_reproduced_exactly_is_lost_by_chance_in_one_draw_and_kept_at_the_real_size():
    # Setup: a borderline real effect (|z| about 2.3) and a generator that reproduces it exactly: synthetic rows
    # drawn from the real rows' own model (covariate and log HR as estimated on the real rows)
    n, draws = 300, 40
    rng = np.random.default_rng(11)
    x = rng.normal(size=n)
    t = rng.exponential(np.exp(-0.04 * x)) + 0.01
    real = pd.DataFrame({"x": x, "c": np.where(rng.random(n) < 0.5, "a", "b"), "T": t, "E": 1.0})
    beta = CoxPHFitter(penalizer=COX_PENALIZER).fit(real[["x", "T", "E"]], "T", "E").params_["x"]

    def model_draw(m: int, seed: int) -> pd.DataFrame:
        g = np.random.default_rng(seed)
        xs = g.normal(size=m)
        return pd.DataFrame({"x": xs, "c": np.where(g.random(m) < 0.5, "a", "b"),
                             "T": g.exponential(np.exp(-beta * xs)) + 0.01, "E": 1.0})

    # Run
    runs = {m: [survival_effects(real, model_draw(m, s), _toy_schema(), rng=np.random.default_rng(s))
                for s in range(draws)] for m in (n, EFFECT_ROWS_FACTOR * n)}
    # Assert: the real effect is significant; one same-size draw loses it about as often as expected by chance,
    # the reading at the real size from 10 x n rows far less often (its own expectation)
    lost = {m: [next(e for e in r["effects"] if e["variable"] == "x")["lost"] for r in rs] for m, rs in runs.items()}
    expected = {m: runs[m][0]["counts"]["expected_lost_by_chance"] for m in runs}
    assert 0.15 < expected[n] < 0.6 and expected[EFFECT_ROWS_FACTOR * n] < expected[n] / 2
    assert np.mean(lost[n]) == pytest.approx(expected[n], abs=0.2)
    assert np.mean(lost[EFFECT_ROWS_FACTOR * n]) == pytest.approx(expected[EFFECT_ROWS_FACTOR * n], abs=0.15)
    assert np.mean(lost[EFFECT_ROWS_FACTOR * n]) < np.mean(lost[n])


def test_a_perfect_copy_scores_one_and_raises_no_flag(mds_split):
    # Setup
    schema, _, a, _ = mds_split
    # Run
    out = survival_effects(a, a.copy(), schema, rng=np.random.default_rng(0))
    # Assert
    assert out["fidelity"] == pytest.approx(1.0)
    assert out["parts"]["effects"] == pytest.approx(1.0) and out["counts"]["effects"] > 0
    assert out["flags"] == []
    # both chance counts read from its effects; a population-faithful generator would lose more than a copy
    assert out["counts"]["expected_lost_population"] == expected_lost_population(out["effects"])
    assert out["counts"]["expected_lost_population"] > out["counts"]["expected_lost_by_chance"]
    assert [r["violations_synthetic"] for r in out["endpoint_rules"]] == [0, 0]


def test_a_shuffled_survival_column_is_flagged(mds_split):
    # Setup: OS time and status permuted together (their marginals kept, their link to the patient gone)
    schema, _, a, _ = mds_split
    shuffled = a.copy()
    perm = np.random.default_rng(1).permutation(len(a))
    for col in ("OS_YEARS", "OS_STATUS"):
        shuffled[col] = a[col].to_numpy()[perm]
    # Run
    out = survival_effects(a, shuffled, schema, rng=np.random.default_rng(0))
    # Assert: OS effects lost, OS subgroup medians off, LFS no longer below OS
    assert out["fidelity"] < 0.8
    assert any(f.startswith("OS, TP53: effect lost") for f in out["flags"])
    assert any(f.startswith("OS, TP53 = 1: median") for f in out["flags"])
    assert any(f.startswith("endpoint rule LFS_YEARS <= OS_YEARS") for f in out["flags"])
    lfs_lost = [e for e in out["effects"] if e["endpoint"] == "LFS" and e["lost"]]
    os_lost = [e for e in out["effects"] if e["endpoint"] == "OS" and e["lost"]]
    assert len(os_lost) > 3 * max(1, len(lfs_lost))


def test_median_errors_over_15_percent_are_flagged_and_under_are_not():
    # Setup: synthetic survival stretched by 10% in group a and 30% in group b (same events)
    real = _toy(400, 0, effect=0.0)
    syn = real.copy()
    syn.loc[syn["c"] == "a", "T"] *= 1.1
    syn.loc[syn["c"] == "b", "T"] *= 1.3
    # Run
    out = survival_effects(real, syn, _toy_schema(), strata=["c"], rng=np.random.default_rng(0))
    # Assert
    groups = {g["group"]: g for g in out["endpoints"]["S"]["groups"]}
    assert groups["a"]["median_error"] == pytest.approx(0.1) and groups["b"]["median_error"] == pytest.approx(0.3)
    b = groups["b"]
    expected = f"S, c = b: median {b['median_synthetic']:g} synthetic vs {b['median_real']:g} real (error 30.0% > 15%)"
    assert [f for f in out["flags"] if f.startswith("S, c =")] == [expected]


def test_endpoint_rule_report_counts_synthetic_violations_per_rule(mds_split):
    # Setup: 7 synthetic rows whose LFS outlasts OS, 3 deaths without an LFS event
    schema, _, a, _ = mds_split
    syn = a.copy()
    known = np.flatnonzero(syn[["OS_YEARS", "LFS_YEARS", "OS_STATUS", "LFS_STATUS"]].notna().all(axis=1).to_numpy())
    syn.iloc[known[:7], syn.columns.get_loc("LFS_YEARS")] = syn.iloc[known[:7]]["OS_YEARS"].to_numpy() + 1.0
    deaths = [i for i in known[7:] if syn.iloc[i]["OS_STATUS"] == 1][:3]
    syn.iloc[deaths, syn.columns.get_loc("LFS_STATUS")] = 0.0
    # Run
    rows = endpoint_rule_report(a, syn, schema)
    # Assert
    assert [(r["rule"], r["source"], r["violations_synthetic"], r["violations_real"]) for r in rows] == [
        ("LFS_YEARS <= OS_YEARS", "schema", 7, 0), ("OS_STATUS = 1 => LFS_STATUS = 1", "schema", 3, 0)]


def test_rules_that_hold_in_the_real_rows_are_reported_without_declaring_them():
    # Setup: a schema with two endpoints and no rules; in the real rows B never outlasts A
    rng = np.random.default_rng(0)
    t_a = rng.exponential(2.0, 100) + 0.1
    real = pd.DataFrame({"ta": t_a, "ea": np.ones(100), "tb": t_a * 0.5, "eb": np.ones(100)})
    syn = real.copy()
    syn.loc[:4, "tb"] = syn.loc[:4, "ta"] + 1
    c, b, out = ColumnKind.CONTINUOUS, ColumnKind.BINARY, ColumnRole.OUTCOME
    schema = TableSchema(tuple(ColumnSpec(n, k, out) for n, k in (("ta", c), ("ea", b), ("tb", c), ("eb", b))),
                         (SurvivalEndpoint("A", "ta", "ea"), SurvivalEndpoint("B", "tb", "eb")))
    # Run
    rows = endpoint_rule_report(real, syn, schema)
    # Assert
    assert {(r["rule"], r["source"], r["violations_synthetic"]) for r in rows} == {
        ("tb <= ta", "real data", 5), ("ea = 1 => eb = 1", "real data", 0), ("eb = 1 => ea = 1", "real data", 0)}


def test_no_default_stratum_comes_from_a_column_name(mds_cohort):
    # Setup: the MDS schema without declared strata, then every column renamed to a random string
    schema = TableSchema(mds_cohort.schema.columns, mds_cohort.schema.endpoints, "plain")
    rng = np.random.default_rng(0)
    names = {c: "c" + "".join(rng.choice(list("qwxzjkvb"), 8)) for c in schema.column_names}
    renamed_schema = TableSchema(
        tuple(ColumnSpec(names[c.name], c.kind, c.role, c.categories, c.lower, c.upper, c.derived) for c in schema.columns),
        tuple(SurvivalEndpoint(e.name, names[e.duration_col], names[e.event_col]) for e in schema.endpoints), "renamed")
    renamed_data = mds_cohort.data.rename(columns=names)
    # Run
    plain = [st.column for st in default_strata(schema, mds_cohort.data)]
    renamed = [st.column for st in default_strata(renamed_schema, renamed_data)]
    # Assert: the same columns, by role (categorical clinical, genes mutated in >= 5%)
    assert [names[c] for c in plain] == renamed
    assert plain[:5] == ["SEX", "MDS_TYPE", "WHO_2016", "CYTO_IPSSR", "IPSSR"]
    assert "TP53" in plain and "CBL" not in plain  # 11% and 4.7% mutated


def test_declared_strata_come_first_and_user_strata_replace_the_defaults(mds_cohort):
    # Setup
    schema, data = mds_cohort.schema, mds_cohort.data
    # Run
    default = resolve_strata(schema, data)
    named = resolve_strata(schema, data, ["AGE", "WHO_2016"])
    # Assert
    assert [st.column for st in default[:4]] == ["TP53", "IPSSR", "AGE", "SEX"]
    assert len({st.column for st in default}) == len(default)
    assert named == [StratumSpec("AGE", (60, 70, 80)), StratumSpec("WHO_2016")]


def test_age_bands_cut_left_closed_with_open_ends(mds_cohort):
    # Setup
    schema = mds_cohort.schema
    stratum = StratumSpec("AGE", (60, 70, 80))
    frame = pd.DataFrame({"AGE": [59.0, 60.0, 69.0, 70.0, 80.0, 95.0, np.nan]})
    # Run
    lab = stratum_labels(frame, stratum, schema, (60.0, 70.0, 80.0))
    # Assert
    assert band_labels(stratum, (60.0, 70.0, 80.0), ColumnKind.INTEGER) == ["<60", "60-69", "70-79", ">=80"]
    assert band_labels(stratum, (60.0, 70.0), ColumnKind.CONTINUOUS) == ["<60", "60-<70", ">=70"]
    assert lab.iloc[:6].tolist() == ["<60", "60-69", "60-69", "70-79", ">=80", ">=80"]
    assert pd.isna(lab.iloc[6])


def test_the_report_holds_the_section_and_the_html_names_direction_consistency(mds_split, tmp_path):
    # Setup
    from fedsynth.evaluation import evaluate

    schema, _, a, b = mds_split
    # Run
    report = evaluate(a, b, schema, random_state=0, detection=False, utility=False)
    html = report.to_html(tmp_path / "r.html").read_text()
    data = report.to_dict()
    # Assert
    assert 0.0 <= report.survival_effect_fidelity <= 1.0
    assert set(data["survival_effects"]) >= {"fidelity", "parts", "endpoints", "effects", "flags", "endpoint_rules"}
    assert "survival-effect fidelity" in html and "direction consistency" in html
    assert "direction agreement" not in html
    # the rules table gives each time-order rule's share of rows with both times equal, synthetic / real
    lfs_os = next(r for r in data["survival_effects"]["endpoint_rules"] if r["type"] == "time_order")
    assert "rows with both times equal: synthetic / real" in html
    assert f"{lfs_os['tied_synthetic']:.2f} / {lfs_os['tied_real']:.2f}" in html
    assert data["scores"]["csf"]["components"]["clinical_survival_agreement"]["label"] == (
        "clinical-survival direction consistency")
    assert [g["group"] for g in data["survival_effects"]["endpoints"]["OS"]["groups"] if g["stratum"] == "AGE"] == [
        "<60", "60-69", "70-79", ">=80"]
    # each effect's size and SE ratios are columns of the effects table; a report written before they existed still
    # renders, with a dash in their place
    assert "size ratio (synthetic / real)" in html and data["survival_effects"]["effects"]
    from fedsynth.evaluation.report import EvaluationReport

    for e in data["survival_effects"]["effects"]:
        del e["size_ratio"], e["se_ratio"]
    old_html = EvaluationReport.from_dict(data).to_html(tmp_path / "old.html").read_text()
    assert "size ratio (synthetic / real)" in old_html


def test_a_time_order_rule_reports_the_share_of_rows_with_both_times_equal():
    # Setup: real: 4 of 5 rows with tb equal to ta (one more row lacks tb); synthetic: 1 of 4 rows
    c, b, out = ColumnKind.CONTINUOUS, ColumnKind.BINARY, ColumnRole.OUTCOME
    schema = TableSchema(tuple(ColumnSpec(n, k, out) for n, k in (("ta", c), ("ea", b), ("tb", c), ("eb", b))),
                         (SurvivalEndpoint("A", "ta", "ea"), SurvivalEndpoint("B", "tb", "eb")))
    real = pd.DataFrame({"ta": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "ea": 1.0, "tb": [1.0, 2.0, 3.0, 4.0, 2.5, np.nan],
                         "eb": [1.0, 1.0, 1.0, 1.0, 1.0, np.nan]})
    syn = pd.DataFrame({"ta": [1.0, 2.0, 3.0, 4.0], "ea": 1.0, "tb": [1.0, 1.5, 2.5, 3.5], "eb": 1.0})
    # Run
    rows = {r["rule"]: r for r in endpoint_rule_report(real, syn, schema)}
    # Assert: 4 / 5 real, 1 / 4 synthetic for tb <= ta; no share for event rules
    assert rows["tb <= ta"]["tied_real"] == pytest.approx(0.8)
    assert rows["tb <= ta"]["tied_synthetic"] == pytest.approx(0.25)
    assert all(r["tied_real"] is None for name, r in rows.items() if name != "tb <= ta")
    # a gap of 0.55 is flagged in the row and in the flags; the same shares give no flag
    assert rows["tb <= ta"]["tied_flagged"] and not any(r["tied_flagged"] for n, r in rows.items() if n != "tb <= ta")
    out = survival_effects(real, syn, schema, rng=np.random.default_rng(0))
    flags = out["flags"]
    assert any("both times equal in 25% of synthetic rows vs 80% of real rows" in f for f in flags)
    assert out["counts"]["tie_shares_off"] == 1
    # rule flags come first (the command line prints the first few)
    assert flags[0].startswith("endpoint rule")
    same = survival_effects(real, real, schema, rng=np.random.default_rng(0))["flags"]
    assert not any("both times equal" in f for f in same)
