"""VAE-BGM's joint event pattern: the endpoints' event columns learnt together as one categorical block, drawn with
the row, a pattern that breaks an event rule never drawn."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedsynth.cohort.constraints import EventImplies, TimeOrder, candidate_rules, rule_holds, tied
from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, SurvivalEndpoint, TableSchema
from fedsynth.encoding.domain import Domain
from fedsynth.generators.vae_bgm import VAEBGMGenerator
from fedsynth.generators.vae_layout import Layout, absent_inputs, allowed_patterns, decode, encode, level_rows

OS = SurvivalEndpoint("OS", "OS_YEARS", "OS_STATUS")
LFS = SurvivalEndpoint("LFS", "LFS_YEARS", "LFS_STATUS")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _schema(rules: bool = True) -> TableSchema:
    cols = (
        ColumnSpec("AGE", ColumnKind.INTEGER, lower=18, upper=95),
        ColumnSpec("GROUP", ColumnKind.CATEGORICAL, categories=("a", "b")),
        ColumnSpec("OS_YEARS", ColumnKind.CONTINUOUS, ColumnRole.OUTCOME),
        ColumnSpec("OS_STATUS", ColumnKind.BINARY, ColumnRole.OUTCOME),
        ColumnSpec("LFS_YEARS", ColumnKind.CONTINUOUS, ColumnRole.OUTCOME),
        ColumnSpec("LFS_STATUS", ColumnKind.BINARY, ColumnRole.OUTCOME),
    )
    schema = TableSchema(cols, (OS, LFS), "events")
    return schema.with_rules([EventImplies(OS, LFS), TimeOrder(LFS, OS)]) if rules else schema


def _frame(n: int, seed: int) -> pd.DataFrame:
    """Deaths in 60% of the rows (each also an LFS event); among the living, an LFS event (AML) in 20%: the cells
    (OS, LFS) = (0, 0) 0.32, (0, 1) 0.08, (1, 1) 0.60, and never (1, 0)."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b"], n)
    os_t = rng.exponential(np.where(group == "a", 4.0, 1.5)) + 0.01
    os_e = (rng.random(n) < 0.6).astype(float)
    aml = (os_e == 0) & (rng.random(n) < 0.2)
    lfs_e = np.where(aml, 1.0, os_e)
    lfs_t = np.where(aml, os_t * rng.uniform(0.1, 0.9, n), os_t)
    return pd.DataFrame({"AGE": rng.integers(30, 90, n).astype(float), "GROUP": group, "OS_YEARS": os_t,
                         "OS_STATUS": os_e, "LFS_YEARS": lfs_t, "LFS_STATUS": lfs_e})


def _cells(df: pd.DataFrame) -> dict[tuple[int, int], float]:
    o, lf = df["OS_STATUS"].to_numpy(float), df["LFS_STATUS"].to_numpy(float)
    known = ~np.isnan(o) & ~np.isnan(lf)
    return {(a, b): float(((o[known] == a) & (lf[known] == b)).mean()) for a in (0, 1) for b in (0, 1)}


def test_the_event_pattern_is_one_more_categorical_block_known_where_every_event_is() -> None:
    # Setup: rows with (OS, LFS) events (1, 1), (0, 1), (0, 0) and one without LFS
    schema = _schema()
    domain = Domain.from_data(_frame(300, 0), schema)
    plain = Layout.from_domain(domain, schema)
    data = pd.DataFrame({"AGE": [50.0, 60.0, 70.0, 80.0], "GROUP": ["a", "b", "a", "b"],
                         "OS_YEARS": [2.0, 3.0, 1.5, 4.0], "OS_STATUS": [1.0, 0.0, 0.0, 1.0],
                         "LFS_YEARS": [2.0, 1.0, 1.5, np.nan], "LFS_STATUS": [1.0, 1.0, 0.0, np.nan]})
    # Run
    lay = Layout.from_domain(domain, schema, events=True)
    enc = encode(lay, domain, data, "quantile")
    # Assert: four patterns after the columns' blocks; code = OS + 2 * LFS; -1 (no loss term, no input) for row 3
    assert lay.events == ("OS_STATUS", "LFS_STATUS")
    assert lay.cat_sizes == (*plain.cat_sizes, 4) and lay.n_categorical == len(plain.cat_sizes)
    assert lay.events_index == len(lay.cat_sizes) - 1 and plain.events_index == -1
    np.testing.assert_array_equal(enc.categorical[:, lay.events_index], [3, 2, 0, -1])
    start = lay.n_numeric + lay.n_binary + sum(plain.cat_sizes)
    np.testing.assert_array_equal(enc.inputs[:, start : start + 4],
                                  [[0, 0, 0, 1], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert lay.to_dict()["events"] == ["OS_STATUS", "LFS_STATUS"] and "events" not in plain.to_dict()
    # a site lacking a column: no pattern anywhere
    lacking = encode(lay, domain, data.drop(columns=["LFS_STATUS"]), "quantile")
    assert (lacking.categorical[:, lay.events_index] == -1).all()
    # training-by-sampling never picks rows by the pattern
    assert len(level_rows(enc, lay.tie_offset, lay.n_categorical)) == len(level_rows(enc)) - 1
    # column dropout hiding either event column hides the pattern too, and nothing else does
    _, col_dims = absent_inputs(lay, domain, "quantile")
    hiding = {c.name for c, row in zip(lay.columns, col_dims, strict=True) if row[start : start + 4].any()}
    assert hiding == {"OS_STATUS", "LFS_STATUS"}


def test_one_endpoint_has_no_pattern_block() -> None:
    # Setup: a schema with OS only
    schema = TableSchema(_schema().columns[:4], (OS,), "one")
    domain = Domain.from_data(_frame(100, 0)[["AGE", "GROUP", "OS_YEARS", "OS_STATUS"]], schema)
    # Run / Assert: nothing to learn jointly
    assert Layout.from_domain(domain, schema, events=True).events == ()


def test_allowed_patterns_drop_those_that_break_an_event_rule() -> None:
    # Run / Assert: patterns 0 (0, 0), 1 (OS only), 2 (LFS only), 3 (both): OS => LFS forbids 1
    assert allowed_patterns(("OS_STATUS", "LFS_STATUS"), _schema()).tolist() == [True, False, True, True]
    assert allowed_patterns(("OS_STATUS", "LFS_STATUS"), _schema(rules=False)).all()


def test_decode_sets_event_columns_from_the_pattern_and_never_draws_a_forbidden_one() -> None:
    # Setup: decoder outputs favouring the forbidden pattern "death without an LFS event" (+8) over the others
    domain = Domain.from_data(_frame(300, 0), _schema())
    for schema, forbidden_drawn in ((_schema(), False), (_schema(rules=False), True)):
        lay = Layout.from_domain(domain, schema, events=True)
        out = np.random.default_rng(0).normal(0.0, 1.0, (2000, lay.output_dim))
        start = lay.n_numeric + lay.n_binary + sum(lay.cat_sizes[:-1])
        out[:, start : start + 4] = [0.0, 8.0, 0.0, 1.0]
        # Run
        rows = decode(lay, domain, schema, out, np.full(lay.n_numeric, 0.3), np.random.default_rng(1),
                      sampling="likelihood", numeric_transform="quantile")
        cells = _cells(rows)
        # Assert: with the rule, the other patterns by their odds (1 : 1 : e); without it, mostly the forbidden one
        if forbidden_drawn:
            assert cells[(1, 0)] > 0.9
        else:
            assert cells[(1, 0)] == 0.0
            assert cells[(1, 1)] == pytest.approx(np.e / (2 + np.e), abs=0.04)
            assert cells[(0, 0)] == pytest.approx(1 / (2 + np.e), abs=0.04)


def _tied_share(df: pd.DataFrame) -> float:
    """Share of the rows whose LFS equals their OS."""
    return float(tied(df["LFS_YEARS"].to_numpy(float), df["OS_YEARS"].to_numpy(float)).mean())


def _small_fit_setup() -> tuple[pd.DataFrame, TableSchema, dict[str, Any]]:
    """1,500 rows of :func:`_frame`, the schema with the rules learnt from them (as a run learns them) and a small
    VAE-BGM's parameters, the survival calibration off (so the decoder alone makes the cells and ties)."""
    real = _frame(1500, 2)
    schema = _schema(rules=False)
    schema = schema.with_rules([r for r in candidate_rules(schema) if rule_holds(real, r)])
    params = {"epochs": 40, "batch_size": 128, "latent_dim": 4, "hidden_dims": (32,), "n_components": 3,
              "device": "cpu", "random_state": 0, "survival_calibration": False}
    return real, schema, params


def test_vae_bgm_with_joint_events_draws_the_real_event_cells() -> None:
    # Setup: the rules learnt from the rows, as a run learns them
    real, schema, params = _small_fit_setup()
    # Run
    joint = VAEBGMGenerator(schema, joint_events=True, **params).fit(real)
    rows = joint.sample(4000, random_state=1)
    plain = VAEBGMGenerator(schema, **params).fit(real).sample(4000, random_state=1)
    # Assert: each (OS, LFS) cell within 0.05 of the real one (AML alive 0.08); the plain model's AML-alive cell
    # far over it (each event drawn on its own, then the rule repairs deaths without LFS events)
    want, got = _cells(real), _cells(rows)
    for cell in want:
        assert got[cell] == pytest.approx(want[cell], abs=0.05), cell
    assert _cells(plain)[(0, 1)] > want[(0, 1)] + 0.1
    assert joint.layout_ is not None and joint.layout_.events == ("OS_STATUS", "LFS_STATUS")


def test_joint_events_with_time_ties_draws_both_the_event_cells_and_the_tied_share() -> None:
    # Setup: both options together (measured for the tuned setting in session 19); the rows tie LFS to OS except
    # after AML (the cell (0, 1), 8%), so 92% are tied
    real, schema, params = _small_fit_setup()
    real_tied = _tied_share(real)
    # Run
    gen = VAEBGMGenerator(schema, joint_events=True, time_ties=True, **params).fit(real)
    rows = gen.sample(4000, random_state=1)
    events_only = VAEBGMGenerator(schema, joint_events=True, **params).fit(real).sample(4000, random_state=1)
    # Assert: the layout holds the pattern block and the tie slot; the cells within 0.05 of the real ones, the tied
    # share within 0.06 of the real 0.92 (the pattern alone leaves it far under), and every rule holds
    assert gen.layout_ is not None
    assert gen.layout_.events == ("OS_STATUS", "LFS_STATUS") and gen.layout_.ties == (("OS_YEARS", "LFS_YEARS"),)
    want, got = _cells(real), _cells(rows)
    for cell in want:
        assert got[cell] == pytest.approx(want[cell], abs=0.05), cell
    share, alone = _tied_share(rows), _tied_share(events_only)
    assert real_tied == pytest.approx(0.92, abs=0.02)
    assert share == pytest.approx(real_tied, abs=0.06)
    assert alone < real_tied - 0.2
    assert all(rule_holds(rows, r) for r in schema.constraints)


def test_fedavg_trains_the_event_pattern_at_the_sites_and_saves_it(  # type: ignore[no-untyped-def]
        tmp_path, small_fedavg_vae_bgm) -> None:
    from fedsynth.generators import load_generator

    # Setup: three sites of one cohort; the server learns the rules from their answers
    schema = _schema(rules=False)
    real = _frame(900, 4)

    def fedavg(joint: bool) -> object:
        return small_fedavg_vae_bgm(schema, real, rounds=3, local_epochs=15, joint_events=joint)

    # Run
    gen, plain = fedavg(True), fedavg(False)
    rows = gen.sample(2000, random_state=1)  # type: ignore[attr-defined]
    plain_rows = plain.sample(2000, random_state=1)  # type: ignore[attr-defined]
    # Assert: the server's layout has the block the sites trained; the AML-alive cell within 0.06 of the real
    # one, the plain run's further off; the model comes back from disk drawing the same rows
    assert gen.layout_.events == ("OS_STATUS", "LFS_STATUS")  # type: ignore[attr-defined]
    want = _cells(real)[(0, 1)]
    assert _cells(rows)[(0, 1)] == pytest.approx(want, abs=0.06)
    assert abs(_cells(plain_rows)[(0, 1)] - want) > abs(_cells(rows)[(0, 1)] - want)
    gen.save(tmp_path / "m")  # type: ignore[attr-defined]
    pd.testing.assert_frame_equal(load_generator(tmp_path / "m").sample(200, random_state=2),
                                  gen.sample(200, random_state=2))  # type: ignore[attr-defined]


def test_the_loss_counts_each_event_once_where_the_pattern_is_known() -> None:
    import torch

    from fedsynth.generators.vae_network import build_vae, vae_loss

    # Setup: rows 0-2 with both events known, row 3 without LFS; a small network
    schema = _schema()
    domain = Domain.from_data(_frame(300, 0), schema)
    lay = Layout.from_domain(domain, schema, events=True)
    data = pd.DataFrame({"AGE": [50.0, 60.0, 70.0, 80.0], "GROUP": ["a", "b", "a", "b"],
                         "OS_YEARS": [2.0, 3.0, 1.5, 4.0], "OS_STATUS": [1.0, 0.0, 0.0, 1.0],
                         "LFS_YEARS": [2.0, 1.0, 1.5, np.nan], "LFS_STATUS": [1.0, 1.0, 0.0, np.nan]})
    enc = encode(lay, domain, data, "quantile")
    torch.manual_seed(0)
    model = build_vae(lay, 2, [8])

    def loss(binary: np.ndarray) -> float:
        batch = [torch.as_tensor(a) for a in (enc.inputs, enc.numeric, enc.numeric_mask, binary, enc.binary_mask,
                                              enc.categorical, enc.missing, enc.missing_mask)]
        return float(vae_loss(model, lay, batch, 1.0, torch.Generator().manual_seed(1)).detach())

    os_slot = next(c.index for c in lay.columns if c.name == "OS_STATUS")
    # Run: OS's own target flipped where the pattern is known (rows 0-2), then where it is not (row 3)
    flipped_known, flipped_unknown = enc.binary.copy(), enc.binary.copy()
    flipped_known[:3, os_slot] = 1.0 - flipped_known[:3, os_slot]
    flipped_unknown[3, os_slot] = 1.0 - flipped_unknown[3, os_slot]
    # Assert: the first changes nothing (the pattern alone carries OS there); the control changes the loss
    assert loss(flipped_known) == pytest.approx(loss(enc.binary), rel=1e-6)
    assert loss(flipped_unknown) != pytest.approx(loss(enc.binary), rel=1e-6)
    assert lay.event_binary_slots == (os_slot, next(c.index for c in lay.columns if c.name == "LFS_STATUS"))


def test_a_row_with_an_event_missing_keeps_its_own_event_draws() -> None:
    # Setup: LFS unknown in a tenth of the real rows (so LFS_STATUS has a missing indicator); decoder outputs whose
    # pattern says "dead" (OS = 1) while OS's own logit says alive, LFS missing in the first half of the rows
    real = _frame(300, 0)
    real.loc[::10, ["LFS_YEARS", "LFS_STATUS"]] = np.nan
    schema = _schema()
    domain = Domain.from_data(real, schema)
    lay = Layout.from_domain(domain, schema, events=True)
    out = np.zeros((400, lay.output_dim))
    os_slot = next(c.index for c in lay.columns if c.name == "OS_STATUS")
    out[:, lay.n_numeric + os_slot] = -20.0
    start = lay.n_numeric + lay.n_binary + sum(lay.cat_sizes[:-1])
    out[:, start : start + 4] = [-20.0, -20.0, -20.0, 20.0]
    miss_base = lay.n_numeric + lay.n_binary + lay.n_cat_total
    out[:, miss_base : miss_base + lay.n_missing] = -20.0
    for c in lay.columns:  # LFS's time and event both missing (an endpoint is known or not as a whole)
        if c.name.startswith("LFS_") and c.missing_index >= 0:
            out[:200, miss_base + c.missing_index] = 20.0
    # Run
    rows = decode(lay, domain, schema, out, np.full(lay.n_numeric, 0.3), np.random.default_rng(0),
                  sampling="likelihood", numeric_transform="quantile")
    # Assert: without LFS, OS is its own draw (alive); with both, the pattern's (dead, LFS event)
    assert rows.loc[:199, "LFS_STATUS"].isna().all() and (rows.loc[:199, "OS_STATUS"] == 0).all()
    assert (rows.loc[200:, "OS_STATUS"] == 1).all() and (rows.loc[200:, "LFS_STATUS"] == 1).all()


def test_the_pattern_block_leaves_every_other_column_drawn_as_without_it() -> None:
    # Setup: the same decoder outputs for a layout without and with the pattern block (inserted where it sits)
    schema = _schema()
    domain = Domain.from_data(_frame(300, 0), schema)
    plain, lay = Layout.from_domain(domain, schema), Layout.from_domain(domain, schema, events=True)
    out = np.random.default_rng(0).normal(0.0, 1.0, (500, plain.output_dim))
    at = plain.n_numeric + plain.n_binary + plain.n_cat_total
    with_block = np.concatenate([out[:, :at], np.zeros((500, 4)), out[:, at:]], axis=1)
    # Run
    a = decode(plain, domain, schema, out, np.full(plain.n_numeric, 0.3), np.random.default_rng(1),
               sampling="likelihood", numeric_transform="quantile")
    b = decode(lay, domain, schema, with_block, np.full(lay.n_numeric, 0.3), np.random.default_rng(1),
               sampling="likelihood", numeric_transform="quantile")
    # Assert: every column but the events identical (the pattern is drawn after every other random number)
    others = [c for c in a.columns if c not in ("OS_STATUS", "LFS_STATUS")]
    pd.testing.assert_frame_equal(a[others], b[others])
