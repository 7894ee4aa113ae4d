"""FedAvg: weights averaged by row count, failed sites left out, min_sites enforced (mocked replies)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from flwr.app import Message, RecordDict

from fedsynth.cohort.schema import ColumnKind, ColumnSpec, TableSchema
from fedsynth.errors import FedsynthError
from fedsynth.strategies import records
from fedsynth.strategies.fedavg_server import weighted_average
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.registry import make_strategy
from fedsynth.strategies.site import SiteRuntime

SCHEMA = TableSchema(
    (
        ColumnSpec("AGE", ColumnKind.CONTINUOUS),
        ColumnSpec("HB", ColumnKind.CONTINUOUS),
        ColumnSpec("SEX", ColumnKind.CATEGORICAL, categories=("F", "M")),
    )
)


def _sites(sizes: list[int], seed: int = 0) -> list[SiteRuntime]:
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(sizes):
        frame = pd.DataFrame(
            {"AGE": rng.normal(60 + 5 * i, 10, n), "HB": rng.normal(10 - i, 1, n), "SEX": rng.choice(["F", "M"], n)}
        )
        out.append(SiteRuntime(f"site-{i + 1}", SCHEMA.coerce(frame), SCHEMA, seed=i))
    return out


def test_weighted_average_weights_sites_by_row_count() -> None:
    # Setup
    updates = [({"w": np.array([1.0, 2.0]), "b": np.float32(1.0)}, 600), ({"w": np.array([4.0, 8.0]), "b": np.float32(3.0)}, 200)]

    # Run
    avg = weighted_average(updates)

    # Assert
    np.testing.assert_allclose(avg["w"], [1.75, 3.5])
    assert avg["b"].dtype == np.float32 and float(avg["b"]) == pytest.approx(1.5)


def test_fedavg_server_averages_mocked_replies_by_num_examples(fake_generators, mock_grid) -> None:
    # Setup
    site_weights = {"site-1": 1.0, "site-2": 10.0, "site-3": 100.0}
    site_rows = {"site-1": 600, "site-2": 300, "site-3": 100}

    def fit(msg: Message, site: str) -> RecordDict:
        incoming = records.from_array_record(msg.content["arrays"])
        w = {k: np.full_like(v, site_weights[site]) for k, v in incoming.items()}
        return RecordDict(
            {"arrays": records.to_array_record(w), "metrics": records.to_metric_record({"num_examples": site_rows[site]})}
        )

    grid = mock_grid(_sites([60, 30, 10]), {"train.fit": fit})
    strategy = make_strategy("fedavg", SCHEMA, generator="fake_weights", rounds=2, min_sites=2)
    seen = []

    # Run
    result = strategy.start(grid, on_round=seen.append)

    # Assert
    expected = (600 * 1.0 + 300 * 10.0 + 100 * 100.0) / 1000
    np.testing.assert_allclose(result.generator.get_weights()["means"], expected)
    assert [r.server_round for r in seen] == [1, 2]
    assert seen[0].site_metrics["site-2"]["num_examples"] == 300


def test_fedavg_leaves_a_failing_site_out_of_the_round(fake_generators, mock_grid) -> None:
    # Setup
    def fit(msg: Message, site: str):  # type: ignore[no-untyped-def]
        if site == "site-3":
            return RuntimeError("boom")
        w = {k: np.full_like(v, 2.0 if site == "site-1" else 5.0) for k, v in records.from_array_record(msg.content["arrays"]).items()}
        n = 300 if site == "site-1" else 100
        return RecordDict({"arrays": records.to_array_record(w), "metrics": records.to_metric_record({"num_examples": n})})

    grid = mock_grid(_sites([30, 10, 5]), {"train.fit": fit})
    seen = []

    # Run
    result = make_strategy("fedavg", SCHEMA, generator="fake_weights", rounds=1, min_sites=2).start(grid, on_round=seen.append)

    # Assert
    np.testing.assert_allclose(result.generator.get_weights()["means"], (300 * 2.0 + 100 * 5.0) / 400)
    assert list(seen[0].left_out) == ["site-3"]
    assert seen[0].left_out["site-3"].startswith("RuntimeError")


def test_fedavg_stops_when_fewer_than_min_sites_answer(fake_generators, mock_grid) -> None:
    # Setup
    grid = mock_grid(_sites([30, 10, 5]), {"train.fit": lambda msg, site: RuntimeError("down")})

    # Run / Assert
    with pytest.raises(FedsynthError, match=r"only 0 of 3 sites answered train.fit .*at least 2 \(strategy.min_sites\)"):
        make_strategy("fedavg", SCHEMA, generator="fake_weights", rounds=1, min_sites=2).start(grid)


def test_fedavg_site_handlers_train_locally_and_report_row_counts(fake_generators) -> None:
    # Setup
    sites = _sites([60, 30, 10])
    grid = InProcessGrid(sites, keep_messages=True)

    # Run
    result = make_strategy("fedavg", SCHEMA, generator="fake_weights", rounds=1, min_sites=3).start(grid)

    # Assert: the average of site means weighted by rows equals the pooled mean (no missing values here)
    pooled = pd.concat([s.data for s in sites])
    means = result.generator.get_weights()["means"]
    np.testing.assert_allclose(means, [pooled["AGE"].mean(), pooled["HB"].mean()])
    fits = [m for m in grid.received if m.metadata.message_type == "train.fit"]
    assert sorted(records.from_metric_record(m.content["metrics"])["num_examples"] for m in fits) == [10, 30, 60]


def _estep_messages_per_round(warm: bool, round_max_iter: int = 50) -> dict[int, int]:
    sites = _sites([120, 80, 60])
    grid = InProcessGrid(sites, keep_messages=True)
    strategy = make_strategy(
        "fedavg", SCHEMA, generator="vae_bgm", rounds=3, local_epochs=2, min_sites=2, random_state=0,
        generator_params={"batch_size": 32, "latent_dim": 2, "hidden_dims": [8], "n_components": 2},
        params={"mixture_warm_start": warm, "mixture_round_max_iter": round_max_iter},
    )
    strategy.start(grid)
    counts: dict[int, int] = {}
    for msg in grid.sent:
        # an E-step is its own message, or (warm start) rides on the init message with the previous mixture
        if msg.metadata.message_type == "query.mixture_estep" or (
                msg.metadata.message_type == "query.mixture_init" and "mixture" in msg.content):
            rnd = int(msg.metadata.group_id.split("-")[-1 if msg.metadata.message_type.endswith("init") else 1])
            counts[rnd] = counts.get(rnd, 0) + 1
    return counts


def test_vae_bgm_mixture_em_warm_starts_from_the_previous_round() -> None:
    # Setup / Run: the same federated VAE-BGM run with and without warm-started latent-mixture EM
    cold, warm = _estep_messages_per_round(False), _estep_messages_per_round(True)
    # Assert: round 1 is identical; later rounds need at most half the EM message rounds of a fresh start
    assert cold[1] == warm[1]
    assert 2 * sum(warm[r] for r in (2, 3)) <= sum(cold[r] for r in (2, 3))
    assert all(warm[r] >= len([120, 80, 60]) for r in (2, 3))  # at least one E-step per site per round


def test_vae_bgm_mixture_em_is_capped_before_the_last_round_only() -> None:
    # Setup / Run: one EM iteration per round before the last (3 sites), the last round runs to convergence
    counts = _estep_messages_per_round(True, round_max_iter=1)
    uncapped = _estep_messages_per_round(True)
    # Assert: rounds 1 and 2 send one E-step to each of the 3 sites; the last round may iterate further
    assert counts[1] == counts[2] == 3
    assert counts[3] >= 3
    assert sum(counts.values()) < sum(uncapped.values())


def _dropout_sent(sites: list[SiteRuntime], generator_params: dict) -> float | None:
    grid = InProcessGrid(sites, keep_messages=True)
    make_strategy(
        "fedavg", SCHEMA, generator="vae_bgm", rounds=1, local_epochs=1, min_sites=2, random_state=0,
        generator_params={"batch_size": 32, "latent_dim": 2, "hidden_dims": [8], "n_components": 2,
                          **generator_params},
    ).start(grid)
    fit = next(m for m in grid.sent if m.metadata.message_type == "train.fit")
    params = records.decode_payload(str(records.from_config_record(fit.content["config"])["generator_params"]))
    return params.get("column_dropout")


def test_vae_bgm_trains_with_column_dropout_when_a_site_lacks_columns() -> None:
    # Setup: the same three sites, complete and with the smallest lacking HB
    complete = _sites([120, 80, 60])
    worst = _sites([120, 80, 60])
    worst[2] = SiteRuntime("site-3", worst[2].data.drop(columns=["HB"]), SCHEMA, seed=2)
    # Run / Assert: switched on only for the worst case, and a value the user set is kept
    assert _dropout_sent(complete, {}) is None
    assert _dropout_sent(worst, {}) == pytest.approx(0.2)
    assert _dropout_sent(worst, {"column_dropout": 0.0}) == 0.0
