"""Tests of the Bayesian network's piecewise-exponential survival model: hand-computed events and person-time,
sums over sites equal to pooled counts, draws against the theoretical survival, strata reproduced."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter

from fedsynth.cohort.constraints import EventImplies, TimeOrder
from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, SurvivalEndpoint, TableSchema
from fedsynth.encoding.domain import Domain
from fedsynth.generators import make_generator
from fedsynth.generators.bayesian_network import PooledCountOracle
from fedsynth.generators.bayesian_network.counts import TIME_SUB_BINS, exit_variable, family_counts
from fedsynth.generators.bayesian_network.survival import (
    draw_piecewise_exponential,
    exposure,
    shrunk_hazards,
    split_gain,
    survival_endpoints,
)

OS = SurvivalEndpoint("OS", "OS_T", "OS_E")
EFS = SurvivalEndpoint("EFS", "EFS_T", "EFS_E")


def _schema() -> TableSchema:
    cols = (
        ColumnSpec("AGE", ColumnKind.INTEGER),
        ColumnSpec("GRADE", ColumnKind.CATEGORICAL, categories=("lo", "hi")),
        ColumnSpec("G1", ColumnKind.BINARY, ColumnRole.GENOMIC),
        ColumnSpec("G2", ColumnKind.BINARY, ColumnRole.GENOMIC),
        ColumnSpec("OS_T", ColumnKind.CONTINUOUS, ColumnRole.OUTCOME, lower=0),
        ColumnSpec("OS_E", ColumnKind.BINARY, ColumnRole.OUTCOME),
        ColumnSpec("EFS_T", ColumnKind.CONTINUOUS, ColumnRole.OUTCOME, lower=0),
        ColumnSpec("EFS_E", ColumnKind.BINARY, ColumnRole.OUTCOME),
    )
    return TableSchema(cols, (OS, EFS), "toy-survival", constraints=(TimeOrder(EFS, OS), EventImplies(OS, EFS)))


def _frame(n: int, seed: int) -> pd.DataFrame:
    """G1 multiplies the death hazard by 5 (0.1 -> 0.5 per year); censoring uniform on (0, 10); an earlier
    event (hazard 0.1) ends EFS before OS; G2 and AGE carry no effect."""
    rng = np.random.default_rng(seed)
    g1 = (rng.random(n) < 0.4).astype(float)
    death = rng.exponential(1 / np.where(g1 == 1, 0.5, 0.1))
    cens = rng.uniform(0, 10, n)
    os_t = np.minimum(death, cens) + 0.01
    os_e = (death <= cens).astype(float)
    early = rng.exponential(10.0, n)
    efs_t = np.minimum(early, os_t)
    efs_e = np.where(early < os_t, 1.0, os_e)
    return pd.DataFrame({
        "AGE": rng.integers(40, 90, n).astype(float),
        "GRADE": rng.choice(np.array(["lo", "hi"], dtype=object), n),
        "G1": g1, "G2": (rng.random(n) < 0.3).astype(float),
        "OS_T": os_t, "OS_E": os_e, "EFS_T": efs_t, "EFS_E": efs_e,
    })


def test_exposure_gives_hand_computed_events_and_person_time() -> None:
    # Setup: intervals [0, 1) and [1, 3); sub-bin s of interval k ends at its midpoint.
    edges = [0.0, 1.0, 3.0]
    table = np.zeros((2 * TIME_SUB_BINS, 2))  # (time state, exit) without parents
    table[0, 1] = 2  # two events in the first sub-bin of [0, 1): midpoint 0.5 / TIME_SUB_BINS
    table[TIME_SUB_BINS + TIME_SUB_BINS - 1, 0] = 3  # three censored in the last sub-bin of [1, 3)
    # Run
    events, censored, person_time = exposure(table, edges)
    # Assert: interval 0: the 2 events add 0.5/S each, the 3 censored add the full width 1.
    w0 = 0.5 / TIME_SUB_BINS
    assert events.tolist() == [[2.0, 0.0]]
    assert censored.tolist() == [[0.0, 3.0]]
    assert person_time[0, 0] == pytest.approx(2 * w0 + 3 * 1.0)
    assert person_time[0, 1] == pytest.approx(3 * 2.0 * (TIME_SUB_BINS - 0.5) / TIME_SUB_BINS)


def test_hazards_without_parents_are_events_over_person_time() -> None:
    d = np.array([[4.0, 1.0]])
    t = np.array([[20.0, 2.0]])
    assert shrunk_hazards(d, t, [], 2.0, 10).tolist() == [[0.2, 0.5]]


def test_a_sparse_configuration_is_shrunk_towards_its_coarser_hazard_times_its_ratio() -> None:
    # Setup: two states of one parent; the second has almost no exposure.
    d = np.array([[10.0], [0.0]])
    t = np.array([[100.0], [0.001]])
    # Run
    lam = shrunk_hazards(d, t, [2], 2.0, 50)
    # Assert: the first keeps ~its own rate; the second is near the parentless rate 10 / 100.001.
    assert lam[0, 0] == pytest.approx(0.1, rel=0.02)
    assert lam[1, 0] == pytest.approx(0.1, rel=0.05)


def test_draws_follow_the_theoretical_piecewise_exponential_survival() -> None:
    # Setup: hazard 0.5 on [0, 1), 2 on [1, 2), 0.1 on [2, 10).
    edges = np.array([0.0, 1.0, 2.0, 10.0])
    hazard = np.array([0.5, 2.0, 0.1])
    n = 20_000
    # Run
    times = draw_piecewise_exponential(np.tile(hazard, (n, 1)), edges, np.random.default_rng(0))
    # Assert: KM (lifelines) of the draws censored at 10 against exp(-H(t)).
    observed = np.isfinite(times)
    km = KaplanMeierFitter().fit(np.where(observed, times, 10.0), observed.astype(int))
    for t, h in ((0.5, 0.25), (1.5, 0.5 + 1.0), (5.0, 0.5 + 2.0 + 0.3)):
        assert float(km.survival_function_at_times(t).iloc[0]) == pytest.approx(math.exp(-h), abs=0.01)
    assert np.mean(~observed) == pytest.approx(math.exp(-(0.5 + 2.0 + 0.8)), abs=0.005)


def test_survival_counts_of_three_sites_sum_to_the_pooled_counts() -> None:
    # Setup
    schema = _schema()
    data = _frame(600, 1)
    domain = Domain.from_data(data, schema, n_bins=6)
    families = [("OS_T#t", ("OS_E", "G1#m", "GRADE#m")),
                ("EFS_T#t", (exit_variable("EFS_E", "EFS_T", "OS_T"), "AGE#m"))]
    # Run
    pooled = family_counts(data, domain, families)
    parts = [family_counts(data.iloc[i::3], domain, families) for i in range(3)]
    # Assert
    for fam in families:
        assert np.array_equal(sum(p[fam] for p in parts), pooled[fam])
        assert pooled[fam].sum() == len(data)


def test_exit_variable_states_are_censored_event_and_reached() -> None:
    schema = _schema()
    data = pd.DataFrame({"AGE": [50.0] * 4, "GRADE": ["lo"] * 4, "G1": [0.0] * 4, "G2": [0.0] * 4,
                         "OS_T": [5.0, 5.0, 5.0, 5.0], "OS_E": [1.0, 0.0, 1.0, 1.0],
                         "EFS_T": [2.0, 3.0, 5.0, np.nan], "EFS_E": [1.0, 0.0, 1.0, np.nan]})
    domain = Domain.from_data(pd.concat([data, _frame(50, 0)]), schema, n_bins=3)
    name = exit_variable("EFS_E", "EFS_T", "OS_T")
    got = family_counts(data, domain, [(name, ())])[(name, ())]
    assert got.tolist() == [1, 1, 1]  # censored before OS, event before OS, reached OS; the NaN row is left out


def test_endpoints_are_ordered_longer_first_from_the_schemas_rules() -> None:
    specs = survival_endpoints(_schema(), [c.name for c in _schema().columns])
    assert [s.duration_col for s in specs] == ["OS_T", "EFS_T"]
    assert specs[1].longer_duration_col == "OS_T" and specs[1].longer_event_implies


def test_split_gain_prefers_the_prognostic_parent() -> None:
    schema = _schema()
    data = _frame(1500, 2)
    domain = Domain.from_data(data, schema, n_bins=8)
    oracle = PooledCountOracle(data, domain)
    edges = domain["OS_T"].bins
    gains = {}
    for c in ("G1#m", "G2#m"):
        arr = oracle.family_counts([("OS_T#t", ("OS_E", c))])[("OS_T#t", ("OS_E", c))]
        events, _, person_time = exposure(arr, edges)
        gains[c] = split_gain(events, person_time, 3, 2.0, float(arr.sum()))
    assert gains["G1#m"] > 50
    assert gains["G2#m"] < 0


@pytest.fixture(scope="module")
def fitted_pair() -> tuple[pd.DataFrame, object]:
    schema = _schema()
    data = _frame(2000, 3)
    gen = make_generator("bayesian_network", schema, max_indegree=2).fit(data)
    return data, gen


def test_generator_chooses_the_prognostic_parent_and_reproduces_survival_within_strata(fitted_pair) -> None:  # type: ignore[no-untyped-def]
    # Setup
    data, gen = fitted_pair
    # Run
    syn = gen.sample(6000, random_state=0)  # type: ignore[attr-defined]
    # Assert: G1 drives the OS hazard; the medians per G1 stratum are close to the real ones.
    assert gen.survival_parents_["OS_T"]["event"][0] == "G1#m"  # type: ignore[attr-defined]
    for g in (0.0, 1.0):
        real = KaplanMeierFitter().fit(data.OS_T[data.G1 == g], data.OS_E[data.G1 == g]).median_survival_time_
        fake = KaplanMeierFitter().fit(syn.OS_T[syn.G1 == g], syn.OS_E[syn.G1 == g]).median_survival_time_
        assert fake == pytest.approx(real, rel=0.15)
    # EFS never exceeds OS and an OS death is an EFS event, by construction.
    assert (syn.EFS_T <= syn.OS_T).all()
    assert not ((syn.OS_E == 1) & (syn.EFS_E == 0)).any()


def test_network_survival_model_remains_available(fitted_pair) -> None:  # type: ignore[no-untyped-def]
    data, _ = fitted_pair
    gen = make_generator("bayesian_network", _schema(), max_indegree=2, survival_model="network").fit(data)
    assert gen._survival == []  # type: ignore[attr-defined]
    assert len(gen.sample(50, random_state=0)) == 50


def test_a_model_saved_without_a_survival_model_samples_survival_from_the_network(fitted_pair, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from fedsynth.generators import load_generator
    from fedsynth.generators.bayesian_network.generator import MODEL_FILE

    # Setup: a model folder as written before the survival model existed
    _, gen = fitted_pair
    gen.save(tmp_path / "m")  # type: ignore[attr-defined]
    state = json.loads((tmp_path / "m" / MODEL_FILE).read_text())
    del state["survival"]
    (tmp_path / "m" / MODEL_FILE).write_text(json.dumps(state))
    # Run
    loaded = load_generator(tmp_path / "m")
    # Assert
    assert loaded._survival == []  # type: ignore[attr-defined]
    assert loaded.sample(20, random_state=0)["OS_T"].notna().any()


def test_derived_input_parents_link_the_inputs_of_a_derived_column(mds_cohort) -> None:  # type: ignore[no-untyped-def]
    from fedsynth.cohort.derived import DERIVATIONS

    # Setup
    schema = mds_cohort.schema
    data = mds_cohort.data[schema.model_columns]
    inputs = set(DERIVATIONS[str(schema[schema.derived_columns[0]].derived)][1])

    def linked(k: int) -> int:
        gen = make_generator("bayesian_network", schema, max_indegree=2, survival_parents=0,
                             derived_input_parents=k).fit(data)
        return sum(u in inputs and v in inputs for u, v in gen.edges_)  # type: ignore[attr-defined]

    # Run / Assert: the forced edges are among the inputs, on top of the searched ones
    assert linked(1) > linked(0)


def test_state_ratios_are_observed_over_expected_exits_with_a_gamma_prior() -> None:
    from fedsynth.generators.bayesian_network.survival import RATIO_PRIOR_EVENTS as A
    from fedsynth.generators.bayesian_network.survival import state_ratios

    # One configuration (hazard 0.1 per unit), two states with 10 and 20 units of person-time: E = 1 and 2.
    ratios = state_ratios(np.array([[3.0], [0.0]]), np.array([[10.0], [20.0]]), 2, np.array([[0.1]]))
    assert ratios.tolist() == pytest.approx([(A + 3) / (A + 1), (A + 0) / (A + 2)])


def test_a_modifier_carries_an_effect_left_out_of_the_parents() -> None:
    # Setup: survival parents capped at 0, so G1's effect can only come back as a modifier.
    schema = _schema()
    data = _frame(2000, 4)
    gen = make_generator("bayesian_network", schema, max_indegree=1, survival_parents=0, survival_modifiers=2).fit(data)
    # Run
    model = next(m for m in gen._survival if m.spec.duration_col == "OS_T")  # type: ignore[attr-defined]
    ratios = dict(model.event_modifiers)
    # Assert: the hazard ratio of G1 = 1 against G1 = 0 is about the planted 5.
    assert "G1#m" in ratios
    assert ratios["G1#m"][1] / ratios["G1#m"][0] == pytest.approx(5.0, rel=0.25)


def test_median_calibration_of_one_shared_ratio_is_its_inverse() -> None:
    from fedsynth.generators.bayesian_network.survival import median_calibration

    # Every row of the one configuration has ratio 2: exp(-c * 2 * ln 2) = 1/2 at c = 1/2.
    assert median_calibration(np.zeros(40, dtype=np.int64), np.full(40, 2.0), 1) == pytest.approx([0.5], rel=1e-9)


def test_median_calibration_solves_the_mean_survival_by_hand() -> None:
    from fedsynth.generators.bayesian_network.survival import median_calibration

    # Setup: configuration 0 has rows with ratios 1 and 3 (ten of each); configuration 1 has two rows only.
    configs = np.array([0] * 20 + [1, 1])
    ratios = np.array([1.0, 3.0] * 10 + [5.0, 5.0])
    # Run
    c = median_calibration(configs, ratios, 2, min_rows=10)
    # Assert: with x = 2**-c, (x + x**3) / 2 = 1/2, the real root of x**3 + x - 1 (Cardano); configuration 1, under
    # min_rows, takes the factor of all 22 rows: (10 (x + x**3) + 2 x**5) / 22 = 1/2.
    x = np.cbrt(0.5 + math.sqrt(0.25 + 1 / 27)) + np.cbrt(0.5 - math.sqrt(0.25 + 1 / 27))
    assert c[0] == pytest.approx(-math.log2(x), rel=1e-9)
    y = 2.0 ** -c[1]
    assert (10 * (y + y**3) + 2 * y**5) / 22 == pytest.approx(0.5, abs=1e-9)


def test_calibrated_modifiers_keep_survival_when_they_are_correlated(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from fedsynth.generators.bayesian_network.sampling import NetworkSampling

    # Setup: G2 copies G1 in 90% of rows, so each carries G1's fivefold hazard on its own; with no survival
    # parents both come back as modifiers, whose product counts the effect twice.
    data = _frame(3000, 5)
    rng = np.random.default_rng(6)
    data["G2"] = np.where(rng.random(len(data)) < 0.9, data["G1"], 1.0 - data["G1"])
    real = KaplanMeierFitter().fit(data["OS_T"], data["OS_E"]).median_survival_time_

    def median(calibrate: bool) -> float:
        if not calibrate:
            monkeypatch.setattr(NetworkSampling, "_calibrated", lambda self, models: list(models))
        gen = make_generator("bayesian_network", _schema(), max_indegree=1, survival_parents=0,
                             survival_modifiers=2).fit(data)
        rows = gen.sample(6000, random_state=0)
        return float(KaplanMeierFitter().fit(rows["OS_T"], rows["OS_E"]).median_survival_time_)

    # Run
    calibrated = median(True)
    plain = median(False)
    # Assert: calibrated within 10% of the real median; the plain product too short and further off
    assert calibrated == pytest.approx(real, rel=0.10)
    assert plain < real and abs(plain - real) > abs(calibrated - real)
