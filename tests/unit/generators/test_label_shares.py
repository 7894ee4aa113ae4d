"""Label-share matching of draws made without a condition: the prior shift by hand, its bound, the real shares from
the summed component counts, where the offsets land in a decoder's output, and VAE-BGM with it on (shares closer to
the real ones, draws under a condition unchanged, offsets saved with the model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_vae_bgm import _schema  # the same tiny schema: numeric, categorical, genes, one endpoint

from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, SurvivalEndpoint, TableSchema
from fedsynth.encoding.domain import Domain
from fedsynth.generators import load_generator
from fedsynth.generators.label_shares import (
    MAX_LOG_OFFSET,
    apply_label_offsets,
    fit_label_offsets,
    logit_positions,
    real_label_shares,
)
from fedsynth.generators.vae_bgm import VAEBGMGenerator
from fedsynth.generators.vae_layout import Layout

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"epochs": 3, "batch_size": 64, "latent_dim": 4, "hidden_dims": (16,), "n_components": 3, "device": "cpu",
        "survival_calibration": False}
COLUMNS = {"RISK": ("low", "mid", "high"), "MUT": ("0", "1")}


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tp53 = (rng.random(n) < 0.08).astype(float)
    risk = np.where(tp53 == 1, "high", rng.choice(["low", "mid", "high"], n, p=[0.6, 0.35, 0.05])).astype(object)
    return pd.DataFrame({
        "AGE": rng.integers(30, 90, n).astype(float),
        "HB": rng.normal(10, 1.5, n) - tp53,
        "SEX": rng.choice(["F", "M"], n, p=[0.3, 0.7]).astype(object),
        "RISK": risk,
        "TP53": tp53,
        "SF3B1": (rng.random(n) < 0.3).astype(float),
        "OS_YEARS": rng.exponential(3.0, n) / (1 + 2 * tp53) + 0.01,
        "OS_STATUS": (rng.random(n) < 0.6).astype(float),
    })


def _exact_draw(base_risk: np.ndarray, base_mut: float, rows: int = 100_000):  # type: ignore[no-untyped-def]
    """A 'model' whose logits are the same for every row: it draws each label in exactly its softmax share."""
    def draw(offsets: dict[str, np.ndarray]) -> pd.DataFrame:
        logits = np.log(base_risk) + offsets.get("RISK", np.zeros(3))
        p = np.exp(logits) / np.exp(logits).sum()
        risk = np.repeat(np.array(COLUMNS["RISK"], dtype=object), np.round(p * rows).astype(int))
        z = np.log(base_mut / (1 - base_mut)) + float(offsets.get("MUT", np.zeros(1))[0])
        ones = int(np.round(rows / (1 + np.exp(-z))))
        mut = np.r_[np.ones(ones), np.zeros(rows - ones)]
        n = min(len(risk), len(mut))
        return pd.DataFrame({"RISK": risk[:n], "MUT": mut[:n]})
    return draw


def test_one_pass_moves_each_prior_by_the_log_share_ratio() -> None:
    # Setup: drawn shares RISK (.5, .3, .2), MUT 0.2; real RISK (.4, .4, .2), MUT 0.3
    draw = _exact_draw(np.array([0.5, 0.3, 0.2]), 0.2)
    targets = {"RISK": np.array([0.4, 0.4, 0.2]), "MUT": np.array([0.7, 0.3])}
    # Run
    one, worst_one = fit_label_offsets(draw, targets, COLUMNS, {"MUT"}, passes=1)
    two, worst_two = fit_label_offsets(draw, targets, COLUMNS, {"MUT"}, passes=2)
    # Assert: log(.4/.5), log(.4/.3), log(.2/.2); logit(.3) - logit(.2)
    np.testing.assert_allclose(one["RISK"], np.log([0.8, 4 / 3, 1.0]), atol=1e-3)
    np.testing.assert_allclose(one["MUT"], [np.log(0.3 / 0.7) - np.log(0.2 / 0.8)], atol=1e-3)
    assert worst_one == pytest.approx(np.log(0.3 / 0.7) - np.log(0.2 / 0.8), abs=1e-3)
    # logits shared by every row: one pass is exact, so the second reads (almost) no error and barely moves
    assert worst_two < 1e-3
    np.testing.assert_allclose(two["RISK"], one["RISK"], atol=1e-3)


def test_offsets_stop_at_their_bound_and_a_label_without_real_rows_is_left_alone() -> None:
    # Setup: the drawn 'high' share is 0.2, the real one 0.001 (log ratio -5.3); 'mid' has no real row
    draw = _exact_draw(np.array([0.5, 0.3, 0.2]), 0.2)
    targets = {"RISK": np.array([0.999, 0.0, 0.001])}
    # Run
    offsets, _ = fit_label_offsets(draw, targets, COLUMNS, set(), passes=1)
    # Assert
    assert offsets["RISK"][2] == pytest.approx(-MAX_LOG_OFFSET)
    assert offsets["RISK"][1] == 0.0
    assert offsets["RISK"][0] == pytest.approx(np.log(0.999 / 0.5), abs=1e-3)


def test_a_binary_share_of_zero_moves_nothing() -> None:
    # Setup: no real row carries MUT in the counts (it may have been withheld at every site)
    draw = _exact_draw(np.array([0.5, 0.3, 0.2]), 0.2)
    # Run
    offsets, _ = fit_label_offsets(draw, {"MUT": np.array([1.0, 0.0])}, COLUMNS, {"MUT"}, passes=2)
    # Assert
    np.testing.assert_array_equal(offsets["MUT"], [0.0])


def test_real_shares_sum_the_components_drop_missing_and_leave_outcomes_and_later_columns_out() -> None:
    # Setup: two components; SEX (F, M, missing); OS_STATUS is an outcome, LATER recorded after baseline
    schema = TableSchema((
        ColumnSpec("SEX", ColumnKind.CATEGORICAL, categories=("F", "M")),
        ColumnSpec("LATER", ColumnKind.BINARY, baseline=False),
        ColumnSpec("OS_YEARS", ColumnKind.CONTINUOUS, ColumnRole.OUTCOME),
        ColumnSpec("OS_STATUS", ColumnKind.BINARY, ColumnRole.OUTCOME),
        ColumnSpec("EFS_YEARS", ColumnKind.CONTINUOUS),
        ColumnSpec("EFS_STATUS", ColumnKind.BINARY),  # an endpoint's event column without the outcome role
    ), (SurvivalEndpoint("OS", "OS_YEARS", "OS_STATUS"), SurvivalEndpoint("EFS", "EFS_YEARS", "EFS_STATUS")), "t")
    counts = {"SEX": np.array([[3.0, 1.0, 5.0], [1.0, 5.0, 0.0]]), "OS_STATUS": np.array([[1.0, 1.0, 0.0]]),
              "LATER": np.array([[1.0, 1.0, 0.0]]), "WRONG": np.array([[1.0, 0.0]]),
              "EFS_STATUS": np.array([[1.0, 1.0, 0.0]])}
    columns = {"SEX": ("F", "M"), "OS_STATUS": ("0", "1"), "LATER": ("0", "1"), "WRONG": ("a", "b"),
               "EFS_STATUS": ("0", "1")}
    # Run
    shares = real_label_shares(counts, columns, schema)
    # Assert: F 4 of 10 known, M 6 of 10; the rest left out (WRONG: counts that do not match its labels)
    assert set(shares) == {"SEX"}
    np.testing.assert_allclose(shares["SEX"], [0.4, 0.6])


def test_offsets_land_on_their_columns_logits() -> None:
    # Setup: numeric AGE, HB, OS_YEARS; binary TP53, SF3B1, OS_STATUS; categorical SEX (2) then RISK (3)
    schema = _schema()
    layout = Layout.from_domain(Domain.from_data(_frame(300, 0), schema, n_bins=20), schema)
    out = np.zeros((2, layout.output_dim))
    # Run
    shifted = apply_label_offsets(out, logit_positions(layout), {"RISK": np.array([1.0, 2.0, 3.0]),
                                                                 "TP53": np.array([5.0])})
    # Assert: TP53 is the first binary logit (after 3 numeric means), RISK the second categorical block
    assert layout.n_numeric == 3 and layout.n_binary == 3
    expected = np.zeros(layout.output_dim)
    expected[3] = 5.0
    expected[3 + 3 + 2: 3 + 3 + 5] = [1.0, 2.0, 3.0]
    np.testing.assert_array_equal(shifted[0], expected)
    assert not out.any()  # a copy: the decoder's output is not changed in place


def _total_variation(a: pd.DataFrame, b: pd.DataFrame, cols: list[str]) -> float:
    tv = 0.0
    for c in cols:
        pa, pb = a[c].astype(str).value_counts(normalize=True), b[c].astype(str).value_counts(normalize=True)
        tv += 0.5 * float(pa.sub(pb, fill_value=0.0).abs().sum())
    return tv


def test_vae_bgm_draws_without_a_condition_at_the_real_shares_and_leaves_conditioned_draws_alone(
    tmp_path: Path,
) -> None:
    # Setup: a briefly trained VAE-BGM (its shares drift), fitted once; the option switched on the same fit
    real = _frame(600, 1)
    gen = VAEBGMGenerator(_schema(), **TINY, label_share_matching=True).fit(real)
    cols = ["SEX", "RISK", "TP53", "SF3B1"]
    assert gen.label_offsets_ is not None and set(gen.label_offsets_) == set(cols)  # outcomes never moved
    # Run
    matched = gen.sample(20_000, random_state=5)
    cond_on = gen.sample(200, random_state=6, conditions={"TP53": 1})
    gen.set_params(label_share_matching=False)
    plain = gen.sample(20_000, random_state=5)
    cond_off = gen.sample(200, random_state=6, conditions={"TP53": 1})
    gen.set_params(label_share_matching=True)
    gen.save(tmp_path / "m")
    again = load_generator(tmp_path / "m").sample(20_000, random_state=5)
    # Assert: closer to the real label shares than the same model's plain draws
    tv_matched, tv_plain = _total_variation(matched, real, cols), _total_variation(plain, real, cols)
    assert tv_matched < 0.5 * tv_plain, (tv_matched, tv_plain)
    # a column whose offsets stayed inside their bound is at its real shares; one at the bound is only closer
    for c in cols:
        inside = bool(np.all(np.abs(gen.label_offsets_[c]) < MAX_LOG_OFFSET - 1e-9))
        if inside:
            assert _total_variation(matched, real, [c]) < 0.02, c
    assert any(np.all(np.abs(gen.label_offsets_[c]) < MAX_LOG_OFFSET - 1e-9) for c in cols)
    pd.testing.assert_frame_equal(cond_on, cond_off)  # a condition's draws are not shifted
    pd.testing.assert_frame_equal(again, matched)  # the offsets are saved with the model
    gen.set_latent_mixture(gen.get_latent_mixture())  # another mixture: its counts and offsets are not this one's
    assert gen.label_offsets_ is None


def test_the_arms_calibration_set_is_the_same_with_the_option_and_the_unconditioned_set_is_refitted() -> None:
    # Setup: the tuned setting's calibration sets: unconditioned draws have their own factors, the arms' set reads
    # each level on the rows drawn under it alone (configs/fedavg_vae_bgm.yaml)
    params = {**TINY, "survival_calibration": True, "calibration_rows": 4000, "calibration_level_rows": 300,
              "calibration_unconditioned": True, "calibration_conditioned_target": "median",
              "calibration_conditioned_rows_only": True, "survival_target": "hazard_ratio"}
    real = _frame(600, 2)
    gen = VAEBGMGenerator(_schema(), **params).fit(real)
    counts = gen.survival_count_statistics(real)
    gen.fit_survival_calibration(counts)  # a fitted model: the sets read the rows drawn under each level too
    arms_off, own_off = gen.survival_calibration_, gen.unconditioned_calibration_
    # Run
    gen.set_params(label_share_matching=True)
    gen.fit_survival_calibration(counts)
    # Assert: the offsets were fitted for the refit; the arms' factors are unchanged, the unconditioned ones moved
    assert gen.label_offsets_ is not None
    assert arms_off is not None and own_off is not None and gen.unconditioned_calibration_ is not None
    assert gen.survival_calibration_ is not None
    assert gen.survival_calibration_.to_dict() == arms_off.to_dict()
    assert gen.unconditioned_calibration_.to_dict() != own_off.to_dict()
