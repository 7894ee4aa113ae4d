"""VAE-BGM's time ties: a pair of endpoint durations equal in a row is a binary slot of the layout, drawn with the
row and applied along the time-order rule; the survival calibration keeps tied rows tied."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.cohort.constraints import TimeOrder, candidate_rules, retie, rule_holds, tie_pairs, tied
from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, SurvivalEndpoint, TableSchema
from fedsynth.encoding.domain import Domain
from fedsynth.generators.survival_calibration import calibration_strata, endpoint_edges, fit_survival_calibration
from fedsynth.generators.survival_strata import survival_counts
from fedsynth.generators.vae_bgm import VAEBGMGenerator
from fedsynth.generators.vae_layout import Layout, absent_inputs, decode, encode, level_rows

OS = SurvivalEndpoint("OS", "OS_YEARS", "OS_STATUS")
LFS = SurvivalEndpoint("LFS", "LFS_YEARS", "LFS_STATUS")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _schema(rules: bool = True, lfs_first: bool = False) -> TableSchema:
    cols = (
        ColumnSpec("AGE", ColumnKind.INTEGER, lower=18, upper=95),
        ColumnSpec("GROUP", ColumnKind.CATEGORICAL, categories=("a", "b")),
        ColumnSpec("OS_YEARS", ColumnKind.CONTINUOUS, ColumnRole.OUTCOME),
        ColumnSpec("OS_STATUS", ColumnKind.BINARY, ColumnRole.OUTCOME),
        ColumnSpec("LFS_YEARS", ColumnKind.CONTINUOUS, ColumnRole.OUTCOME),
        ColumnSpec("LFS_STATUS", ColumnKind.BINARY, ColumnRole.OUTCOME),
    )
    schema = TableSchema(cols, (LFS, OS) if lfs_first else (OS, LFS), "ties")
    return schema.with_rules([TimeOrder(LFS, OS)]) if rules else schema


def _frame(n: int, seed: int, tie_share: float = 0.8) -> pd.DataFrame:
    """LFS equals OS in ``tie_share`` of the rows and is a uniform share of it in the others."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b"], n)
    os_t = rng.exponential(np.where(group == "a", 4.0, 1.5)) + 0.01
    lfs_t = np.where(rng.random(n) < tie_share, os_t, os_t * rng.uniform(0.05, 0.95, n))
    os_e = (rng.random(n) < 0.6).astype(float)
    lfs_e = np.where(lfs_t < os_t, 1.0, os_e)
    return pd.DataFrame({"AGE": rng.integers(30, 90, n).astype(float), "GROUP": group, "OS_YEARS": os_t,
                         "OS_STATUS": os_e, "LFS_YEARS": lfs_t, "LFS_STATUS": lfs_e})


def test_a_tie_slot_per_pair_of_durations_encoded_where_both_times_are_known() -> None:
    # Setup: rows 0 and 2 tied, row 1 not, row 3 without LFS
    schema = _schema()
    data = pd.DataFrame({"AGE": [50.0, 60.0, 70.0, 80.0], "GROUP": ["a", "b", "a", "b"],
                         "OS_YEARS": [2.0, 3.0, 1.5, 4.0], "OS_STATUS": [1.0, 0.0, 1.0, 0.0],
                         "LFS_YEARS": [2.0, 1.0, 1.5, np.nan], "LFS_STATUS": [1.0, 1.0, 1.0, np.nan]})
    domain = Domain.from_data(_frame(300, 0), schema)
    plain = Layout.from_domain(domain, schema)
    # Run
    lay = Layout.from_domain(domain, schema, ties=True)
    enc = encode(lay, domain, data, "quantile")
    # Assert: one more binary slot, after the columns' (OS, LFS statuses); 1, 0, 1, and for row 3 neither (1/2)
    # and no loss term
    assert lay.ties == (("OS_YEARS", "LFS_YEARS"),)
    assert lay.n_binary == plain.n_binary + 1 and lay.tie_offset == plain.n_binary
    np.testing.assert_array_equal(enc.binary[:, lay.tie_offset], [1.0, 0.0, 1.0, 0.5])
    np.testing.assert_array_equal(enc.binary_mask[:, lay.tie_offset], [1.0, 1.0, 1.0, 0.0])
    assert lay.to_dict()["ties"] == [["OS_YEARS", "LFS_YEARS"]] and "ties" not in plain.to_dict()
    # training-by-sampling never picks rows by the tie slot
    assert len(level_rows(enc, lay.tie_offset)) == len(level_rows(enc)) - 1
    # column dropout that hides either duration hides the tie slot too, and nothing else does
    _, col_dims = absent_inputs(lay, domain, "quantile")
    slot = lay.n_numeric + lay.tie_offset
    hiding = {c.name for c, row in zip(lay.columns, col_dims) if row[slot]}
    assert hiding == {"OS_YEARS", "LFS_YEARS"}


def test_a_drawn_tie_gives_the_shorter_endpoint_its_longer_ones_time() -> None:
    # Setup: decoder outputs whose tie logit is +20 in the first half of the rows and -20 in the second
    domain = Domain.from_data(_frame(300, 0), _schema())
    rng = np.random.default_rng(0)
    # with LFS listed first: the rule still gives LFS OS's time; without a rule OS (later) takes LFS's
    for schema, copied, kept in ((_schema(), "LFS_YEARS", "OS_YEARS"),
                                 (_schema(rules=False), "LFS_YEARS", "OS_YEARS"),
                                 (_schema(lfs_first=True), "LFS_YEARS", "OS_YEARS"),
                                 (_schema(rules=False, lfs_first=True), "OS_YEARS", "LFS_YEARS")):
        lay = Layout.from_domain(domain, schema, ties=True)
        out = rng.normal(0.0, 1.0, (400, lay.output_dim))
        out[:200, lay.n_numeric + lay.tie_offset] = 20.0
        out[200:, lay.n_numeric + lay.tie_offset] = -20.0
        # Run
        rows = decode(lay, domain, schema, out, np.full(lay.n_numeric, 0.3), np.random.default_rng(1),
                      sampling="likelihood", numeric_transform="quantile")
        # Assert: tied rows share the longer (rule) or earlier (no rule) endpoint's time; the others rarely meet
        both = rows[copied].notna() & rows[kept].notna()
        assert bool((rows.loc[:199][both[:200]][copied] == rows.loc[:199][both[:200]][kept]).all())
        assert tied(rows.loc[200:, copied].to_numpy(float), rows.loc[200:, kept].to_numpy(float)).mean() < 0.05


def test_retie_keeps_rows_that_were_equal_equal_along_each_rule() -> None:
    # Setup: row 0 tied before, row 1 not, row 2 missing LFS
    before = {"LFS_YEARS": np.array([2.0, 1.0, np.nan]), "OS_YEARS": np.array([2.0, 3.0, 4.0])}
    after = {"LFS_YEARS": np.array([3.0, 1.5, np.nan]), "OS_YEARS": np.array([4.0, 6.0, 8.0])}
    # Run
    got = retie(before, after, [("LFS_YEARS", "OS_YEARS")])
    # Assert: row 0 takes OS's new time; the others as they were; the inputs untouched
    np.testing.assert_allclose(got["LFS_YEARS"], [4.0, 1.5, np.nan])
    np.testing.assert_allclose(got["OS_YEARS"], after["OS_YEARS"])
    assert after["LFS_YEARS"][0] == 3.0


def test_tie_pairs_follow_the_time_order_rule_else_the_endpoint_order() -> None:
    # Run / Assert: the rule's shorter time takes the longer's, whatever the order; without it the later takes the
    # earlier's
    assert tie_pairs(_schema()) == [("LFS_YEARS", "OS_YEARS")]
    assert tie_pairs(_schema(lfs_first=True)) == [("LFS_YEARS", "OS_YEARS")]
    assert tie_pairs(_schema(rules=False)) == [("LFS_YEARS", "OS_YEARS")]
    assert tie_pairs(_schema(rules=False, lfs_first=True)) == [("OS_YEARS", "LFS_YEARS")]


def test_the_calibration_keeps_tied_rows_tied_when_told() -> None:
    # Setup: real rows; synthetic rows whose OS is halved and LFS left (each endpoint needs its own factor); the
    # schema declares LFS <= OS, then (second pass) no rule at all
    for schema in (_schema(), _schema(rules=False)):
        _calibration_keeps_ties(schema)


def _calibration_keeps_ties(schema: TableSchema) -> None:
    real = _frame(3000, 1)
    domain = Domain.from_data(real, schema, n_bins=20)
    strata = [st for st in calibration_strata(schema, domain) if st.column == "GROUP"]
    counts = survival_counts(real, schema, strata, endpoint_edges(schema, domain))
    synthetic = real.assign(OS_YEARS=real["OS_YEARS"] / 2, LFS_YEARS=np.minimum(real["LFS_YEARS"],
                                                                                  real["OS_YEARS"] / 2))
    was = tied(synthetic["LFS_YEARS"].to_numpy(float), synthetic["OS_YEARS"].to_numpy(float))
    # Run
    kept = fit_survival_calibration(synthetic, counts, schema, domain, strata, target="hazard", endpoints="each",
                                    keep_ties=True)
    loose = fit_survival_calibration(synthetic, counts, schema, domain, strata, target="hazard", endpoints="each")
    out_kept, out_loose = kept.apply(synthetic, schema, domain), loose.apply(synthetic, schema, domain)
    # Assert: every row tied before is tied after, and the rule holds; the setting survives a round trip
    assert tied(out_kept.loc[was, "LFS_YEARS"].to_numpy(float), out_kept.loc[was, "OS_YEARS"].to_numpy(float)).all()
    assert rule_holds(out_kept, TimeOrder(LFS, OS)) or not schema.constraints
    assert type(kept).from_dict(kept.to_dict()).keep_ties
    # control: without it OS's larger factor pulls tied rows apart
    assert tied(out_loose.loc[was, "LFS_YEARS"].to_numpy(float),
                out_loose.loc[was, "OS_YEARS"].to_numpy(float)).mean() < 0.5


def test_vae_bgm_with_time_ties_draws_tied_rows_near_the_real_share() -> None:
    # Setup: 80% of the real rows have LFS equal to OS
    real = _frame(1500, 2)
    schema = _schema(rules=False)
    schema = schema.with_rules([r for r in candidate_rules(schema) if rule_holds(real, r)])
    params = {"epochs": 40, "batch_size": 128, "latent_dim": 4, "hidden_dims": (32,), "n_components": 3,
              "device": "cpu", "random_state": 0, "survival_calibration": False}
    # Run
    with_ties = VAEBGMGenerator(schema, time_ties=True, **params).fit(real).sample(3000, random_state=1)
    without = VAEBGMGenerator(schema, **params).fit(real).sample(3000, random_state=1)
    # Assert: the share of tied rows within 0.1 of the real 0.8; the plain model's far under it
    share = float(tied(with_ties["LFS_YEARS"].to_numpy(float), with_ties["OS_YEARS"].to_numpy(float)).mean())
    plain = float(tied(without["LFS_YEARS"].to_numpy(float), without["OS_YEARS"].to_numpy(float)).mean())
    assert share == pytest.approx(0.8, abs=0.1)
    assert plain < 0.6


def test_fedavg_trains_the_tie_slot_at_the_sites_and_samples_tied_rows(  # type: ignore[no-untyped-def]
        tmp_path, small_fedavg_vae_bgm) -> None:
    from fedsynth.generators import load_generator

    # Setup: three sites of one cohort (80% tied rows); the sites' schema has no learnt rule, the server learns
    # LFS <= OS from their answers; the calibration off, so the tie slot alone makes the ties
    schema = _schema(rules=False)
    real = _frame(900, 4)

    def fedavg(ties: bool) -> object:
        return small_fedavg_vae_bgm(schema, real, rounds=2, local_epochs=10, time_ties=ties)

    # Run
    gen, plain = fedavg(True), fedavg(False)
    rows = gen.sample(2000, random_state=1)  # type: ignore[attr-defined]
    plain_rows = plain.sample(2000, random_state=1)  # type: ignore[attr-defined]
    # Assert: the server's layout has the tie slot the sites trained; tied rows within 0.1 of the real 0.8, the
    # rule kept; saved with it
    assert gen.layout_.ties == (("OS_YEARS", "LFS_YEARS"),)  # type: ignore[attr-defined]
    share = tied(rows["LFS_YEARS"].to_numpy(float), rows["OS_YEARS"].to_numpy(float)).mean()
    assert share == pytest.approx(0.8, abs=0.1)
    assert rule_holds(rows, TimeOrder(LFS, OS))
    # control: the same run without the slot ties far fewer rows
    assert tied(plain_rows["LFS_YEARS"].to_numpy(float), plain_rows["OS_YEARS"].to_numpy(float)).mean() < 0.6
    gen.save(tmp_path / "m")  # type: ignore[attr-defined]
    pd.testing.assert_frame_equal(load_generator(tmp_path / "m").sample(200, random_state=2),
                                  gen.sample(200, random_state=2))  # type: ignore[attr-defined]
