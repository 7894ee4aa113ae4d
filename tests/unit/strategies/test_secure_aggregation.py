"""Secure aggregation of everything summed over sites: the shared domain, FedAvg's weight updates and the latent
mixture's statistics; the server sees sums only, the results equal the clear ones, and a value planted at one site
as its extreme leaves no trace in what the server receives, the model files or the snapshots."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord

from fedsynth.cohort.schema import ColumnKind, ColumnSpec, TableSchema
from fedsynth.encoding.domain import Domain, summarize_site
from fedsynth.encoding.grid import grid_counts
from fedsynth.strategies import records
from fedsynth.strategies import secure_sum as ss
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.policy import SitePolicy
from fedsynth.strategies.registry import make_strategy
from fedsynth.strategies.site import SiteRuntime

SCHEMA = TableSchema(
    (
        ColumnSpec("AGE", ColumnKind.CONTINUOUS),
        ColumnSpec("HB", ColumnKind.CONTINUOUS),
        ColumnSpec("SEX", ColumnKind.CATEGORICAL, categories=("F", "M")),
    )
)


def _small_sites(sizes: list[int], seed: int = 0) -> list[SiteRuntime]:
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(sizes):
        frame = pd.DataFrame(
            {"AGE": rng.normal(60 + 5 * i, 10, n), "HB": rng.normal(10 - i, 1, n), "SEX": rng.choice(["F", "M"], n)}
        )
        out.append(SiteRuntime(f"site-{i + 1}", SCHEMA.coerce(frame), SCHEMA, seed=i))
    return out


def _mds_sites(partition: Any, policy: SitePolicy | None = None) -> list[SiteRuntime]:
    extra = {} if policy is None else {"policy": policy}
    return [SiteRuntime(s.name, s.data, partition.schema, seed=i, **extra) for i, s in enumerate(partition.sites)]


# -- the shared domain -------------------------------------------------------------------------------------------


def test_secure_domain_equals_the_pooled_domain_and_no_site_summary_travels(mds_partition) -> None:
    # Setup: k = 1 everywhere, so the summed histogram on the shared grid is the pooled rows' histogram
    schema = mds_partition.schema
    grid = InProcessGrid(_mds_sites(mds_partition, SitePolicy(min_count=1)), keep_messages=True)
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network",
                             params={"min_category_count": 1, "secure_aggregation": True})

    # Run
    fed = strategy.build_domain(grid, strategy.hello(grid))
    pooled = Domain.from_data(mds_partition.train, schema, min_count=1)

    # Assert: counts exact, moments within the fixed point's rounding, bins and bounds equal
    for name, col in pooled.columns.items():
        got = fed[name]
        assert (got.n_observed, got.missing_rate) == (col.n_observed, pytest.approx(col.missing_rate, abs=1e-12))
        if col.is_numeric:
            assert got.mean == pytest.approx(col.mean, rel=1e-9) and got.std == pytest.approx(col.std, rel=1e-9)
            assert (got.lower, got.upper) == (col.lower, col.upper)
            np.testing.assert_allclose(got.bins, col.bins, rtol=1e-12)
        else:
            assert (got.categories, got.category_counts) == (col.categories, col.category_counts)
    # ... and no site sent its own summary: the server received label names and masked vectors only
    types = {m.metadata.message_type for m in grid.sent}
    assert "query.summary" not in types and set(ss.STAGES) <= types
    assert all("summary" not in r.content for r in grid.received if not r.has_error())


def test_counts_on_the_shared_grid_of_two_halves_sum_to_those_of_the_whole(mds_cohort) -> None:
    # Setup
    data, schema = mds_cohort.data, mds_cohort.schema
    labels = {"WHO_2016": list(schema["WHO_2016"].categories), "SEX": ["F", "M"], "TP53": ["0", "1"]}

    # Run
    halves = [grid_counts(data.iloc[:700], schema, labels), grid_counts(data.iloc[700:], schema, labels)]
    whole = grid_counts(data, schema, labels)

    # Assert
    assert sorted(whole) == sorted(halves[0])
    for key in whole:
        np.testing.assert_array_equal(halves[0][key] + halves[1][key], whole[key])
    hb = data["HB"].dropna()
    assert int(whole["HB/hist"].sum()) == len(hb) and whole["HB/n"].tolist() == [len(data), data["HB"].isna().sum()]


def test_a_label_rare_at_every_site_is_released_only_when_k_patients_hold_it_across_sites() -> None:
    # Setup: declared label "M" held by 3 patients at each of 2 sites (6 >= k = 5 in all, under k at each site);
    # undeclared label "X" held by one patient at one site
    schema = TableSchema((ColumnSpec("SEX", ColumnKind.CATEGORICAL, categories=("F", "M")),
                          ColumnSpec("AGE", ColumnKind.CONTINUOUS)))
    frames = [pd.DataFrame({"SEX": ["F"] * 40 + ["M"] * 3, "AGE": np.linspace(50, 80, 43)}),
              pd.DataFrame({"SEX": ["F"] * 30 + ["M"] * 3 + ["X"], "AGE": np.linspace(40, 70, 34)})]
    sites = [SiteRuntime(f"s{i}", schema.coerce(f), schema, seed=i) for i, f in enumerate(frames)]

    def run(secure: bool) -> tuple[Domain, InProcessGrid]:
        grid = InProcessGrid(sites, keep_messages=True)
        strategy = make_strategy("two_step_bn", schema, generator="bayesian_network",
                                 params={"secure_aggregation": secure})
        return strategy.build_domain(grid, strategy.hello(grid)), grid

    # Run
    (clear, _), (secure, grid) = run(False), run(True)

    # Assert: each site alone withholds "M"; the summed counts release it; "X" appears nowhere
    assert clear["SEX"].categories == ("F",)
    assert secure["SEX"].categories == ("F", "M") and secure["SEX"].category_counts == (70, 6)
    assert secure["SEX"].missing_rate == pytest.approx(1 / 77)
    assert not any(_text_holds(m, "X") for m in grid.received)


# -- FedAvg and the latent mixture --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("generator", "params"),
    [
        ("vae_bgm", {"batch_size": 32, "latent_dim": 2, "hidden_dims": [8], "n_components": 2}),
        ("ctgan", {"batch_size": 50, "embedding_dim": 8, "generator_dim": [16], "discriminator_dim": [16], "pac": 1}),
    ],
)
def test_fedavg_with_secure_aggregation_gives_the_plain_fedavg_model(generator: str, params: dict[str, Any]) -> None:
    # Setup: the same seed and the same domain (the secure run's: its bins come from the summed histograms)
    def strategy(secure: bool) -> Any:
        return make_strategy("fedavg", SCHEMA, generator=generator, rounds=2, local_epochs=2, min_sites=2,
                             random_state=0, generator_params=params, params={"secure_aggregation": secure})

    secure_grid = InProcessGrid(_small_sites([120, 80, 60]), keep_messages=True)
    # trusted sites: in clear an untrusted site merges the VAE's per-component bin counts under its smallest count
    plain_grid = InProcessGrid([replace(s, policy=SitePolicy(clear_counts=True)) for s in _small_sites([120, 80, 60])])

    # Run
    secure = strategy(True).start(secure_grid)
    plain_strategy = strategy(False)
    plain = plain_strategy.run(plain_grid, plain_strategy.hello(plain_grid), secure.domain, on_round=None,
                               run_token=f"plain-{generator}")

    # Assert: the same weights (and latent mixture) within 1e-5 relative
    got, want = secure.generator.get_weights(), plain.generator.get_weights()
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-7, err_msg=key)
    if generator == "vae_bgm":
        for key, value in plain.generator.latent_mixture_.items():
            np.testing.assert_allclose(secure.generator.latent_mixture_[key], value, rtol=1e-5, atol=1e-7)
        want_counts, got_counts = plain.generator.get_component_counts(), secure.generator.get_component_counts()
        assert want_counts and sorted(got_counts) == sorted(want_counts)
        for key, value in want_counts.items():  # the per-component label counts, summed securely
            np.testing.assert_allclose(got_counts[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    # ... and no site's weights or statistics reached the server: its replies to the training and mixture
    # instructions are empty, the sums came masked
    for reply in secure_grid.received:
        kind = reply.metadata.message_type
        if kind in ("train.fit", "query.mixture_init", "query.mixture_estep", "query.component_counts"):
            assert not reply.has_error() and "arrays" not in reply.content and "stats" not in reply.content
            assert records.from_metric_record(reply.content["metrics"]) == {}
    assert secure.rounds[-1]["site_metrics"] == {"(secure sum)": {"num_examples": 260}} or generator == "ctgan"


def test_server_view_of_one_sites_masked_weight_update_is_uniform(monkeypatch: pytest.MonkeyPatch) -> None:
    # Setup: key pairs and mask seeds from a seeded generator, so the statistical test sees one fixed draw (the
    # protocol takes them from the operating system's randomness: a seeded mask would be a known mask)
    from cryptography.hazmat.primitives.asymmetric import ec
    from scipy import stats

    from fedsynth.strategies import secagg_site

    rng = np.random.default_rng(11)

    def key_pair() -> tuple[Any, Any]:
        sk = ec.derive_private_key(int(rng.integers(1, 2**62)), ec.SECP384R1())
        return sk, sk.public_key()

    monkeypatch.setattr(secagg_site, "generate_key_pairs", key_pair)
    monkeypatch.setattr(secagg_site, "os", SimpleNamespace(urandom=lambda n: rng.bytes(n)))
    grid = InProcessGrid(_small_sites([120, 80, 60]), keep_messages=True)
    strategy = make_strategy("fedavg", SCHEMA, generator="vae_bgm", rounds=1, min_sites=3, random_state=0,
                             generator_params={"latent_dim": 2, "hidden_dims": [256], "n_components": 2},
                             params={"secure_aggregation": True, "mixture_max_iter": 2})

    # Run
    result = strategy.start(grid)

    # Assert: the first masked vector site 1 sent after training (its n * w in fixed point, 64-bit words) is
    # uniform: KS on the words scaled to [0, 1), chi-square on their top byte
    fit = next(i for i, m in enumerate(grid.sent) if m.metadata.message_type == "train.fit")
    masked = next(records.from_array_record(r.content["masked"])["vector"] for r in grid.received[fit:]
                  if r.metadata.message_type == ss.COLLECT and r.metadata.src_node_id == 1)
    assert masked.dtype == np.uint64 and masked.size > 2560
    assert stats.kstest(masked.astype(np.float64) / 2.0**64, "uniform").pvalue > 0.01
    assert stats.chisquare(np.bincount((masked >> np.uint64(56)).astype(np.int64), minlength=256)).pvalue > 0.01
    # ... while the same site's clear fixed-point words (small multiples of 2**-32, two's complement) fail both
    from fedsynth.strategies.fedavg_site import _weighted_update

    weights = result.generator.get_weights()  # the same scale as a site's update
    _, _, clear = ss.encode_vector(_weighted_update(weights, {"num_examples": 120}), modulus_bits=64,
                                   fraction_bits=ss.FLOAT_FRACTION_BITS, clipping_range=ss.float_clipping_range(3))
    assert stats.kstest(clear.astype(np.float64) / 2.0**64, "uniform").pvalue < 1e-6
    assert stats.chisquare(np.bincount((clear >> np.uint64(56)).astype(np.int64), minlength=256) + 1e-9).pvalue < 1e-6


@pytest.mark.usefixtures("fake_generators")
def test_fedavg_secure_sum_leaves_out_a_site_that_drops_after_sharing_keys() -> None:
    # Setup: site 3 trains, shares its keys, then never sends its masked update (threshold 2 of 3)
    sites = _small_sites([120, 80, 60])

    class Dropping(InProcessGrid):
        def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
            replies = super().send_and_receive(messages, timeout=timeout)
            return [r for r in replies if not (r.metadata.src_node_id == 3 and r.metadata.message_type in
                                               (ss.COLLECT, ss.UNMASK))]

    strategy = make_strategy("fedavg", SCHEMA, generator="fake_weights", rounds=1, min_sites=2,
                             params={"secure_aggregation": True})

    # Run
    result = strategy.start(Dropping(sites))

    # Assert: the average is over sites 1 and 2 only, weighted by their rows; the drop is recorded
    two = pd.concat([s.data for s in sites[:2]])
    np.testing.assert_allclose(result.generator.get_weights()["means"], [two["AGE"].mean(), two["HB"].mean()],
                               rtol=1e-9)
    secure_drops = {d["round"]: d["site"] for d in result.dropped if d["message_type"] == "secure sum"}
    assert secure_drops == {"summary-counts": "site-3", "fit-1": "site-3"}


# -- deployment default ----------------------------------------------------------------------------------------------


def test_a_deployed_run_sums_securely_unless_its_run_config_says_false(tmp_path: Path) -> None:
    # Setup
    from fedsynth.federation.server_app import strategy_from_run_config

    SCHEMA.to_yaml(tmp_path / "schema.yaml")
    base = {"strategy": "fedavg", "generator": "vae_bgm", "schema-path": str(tmp_path / "schema.yaml")}

    # Run
    default, _ = strategy_from_run_config(base)
    off, _ = strategy_from_run_config({**base, "strategy-params": records.encode_payload({"secure_aggregation": False})})
    simulated = make_strategy("fedavg", SCHEMA, generator="vae_bgm")

    # Assert
    assert default.params["secure_aggregation"] is True
    assert off.params["secure_aggregation"] is False
    assert simulated.params["secure_aggregation"] is False


# -- a planted extreme and a one-patient label leave no trace -----------------------------------------------------

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _numbers(value: Any) -> Iterator[np.ndarray]:
    """Every number a record value holds: numbers, lists of them, and numbers written in text (JSON payloads)."""
    if isinstance(value, (bool, bytes)):
        return
    if isinstance(value, (int, float)):
        yield np.array([float(value)])
    elif isinstance(value, str):
        found = _NUMBER.findall(value)
        if found:
            yield np.array([float(x) for x in found])
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _numbers(v)


def _record_numbers(msg: Message) -> Iterator[np.ndarray]:
    if msg.has_error():
        yield from _numbers(msg.error.reason or "")
        return
    for record in msg.content.values():
        if isinstance(record, ArrayRecord):
            for arr in record.values():
                a = arr.numpy()
                if np.issubdtype(a.dtype, np.number):
                    yield a.astype(np.float64).ravel()
        elif isinstance(record, (ConfigRecord, MetricRecord)):
            for v in record.values():
                yield from _numbers(v)


def _holds(values: np.ndarray, planted: float) -> bool:
    """Whether ``values`` hold ``planted`` (as float64 to 1e-9 relative, or as the float32 it rounds to)."""
    v = np.asarray(values, dtype=np.float64)
    return bool(np.any(np.isclose(v, planted, rtol=1e-9, atol=0)) or np.any(v.astype(np.float32) == np.float32(planted)))


def _text_holds(msg: Message, text: str) -> bool:
    if msg.has_error():
        return text in (msg.error.reason or "")
    for record in msg.content.values():
        if isinstance(record, (ConfigRecord, MetricRecord)):
            for v in record.values():
                items = v if isinstance(v, list) else [v]
                if any(isinstance(x, str) and re.search(rf"\b{re.escape(text)}\b", x) for x in items):
                    return True
    return False


def _file_holds(path: Path, planted: float) -> bool:
    raw = path.read_bytes()
    if struct.pack("<d", planted) in raw or struct.pack("<f", planted) in raw:
        return True
    found = _NUMBER.findall(raw.decode("latin-1"))
    return bool(found) and _holds(np.array([float(x) for x in found]), planted)


def _plant(partition: Any) -> tuple[list[SiteRuntime], str, float, str, str]:
    """Sites with a planted extreme (1.5 x the largest value of the first continuous column at the smallest site)
    and a one-patient label (in the first categorical column, at the same site)."""
    schema = partition.schema
    numeric = next(c for c in schema.model_columns if schema[c].kind is ColumnKind.CONTINUOUS)
    categorical = next(c for c in schema.model_columns if schema[c].kind is ColumnKind.CATEGORICAL)
    sites = _mds_sites(partition)
    site = min(sites, key=lambda s: len(s.data))
    data = site.data.copy()
    top = data[numeric].idxmax()
    planted = float(data.loc[top, numeric]) * 1.5
    data.loc[top, numeric] = planted
    label = "ZZ_ONE_PATIENT"
    data[categorical] = data[categorical].astype(object)
    data.loc[data.index[0], categorical] = label
    site.data = data
    return sites, numeric, planted, categorical, label


_DEFAULTS = {  # each generator's default strategy, with short training
    "bayesian_network": ("two_step_bn", {"max_indegree": 2}),
    "ctgan": ("fedavg", {"batch_size": 200, "embedding_dim": 16, "generator_dim": [32], "discriminator_dim": [32]}),
    "vae_bgm": ("fedavg", {"batch_size": 200, "latent_dim": 4, "hidden_dims": [32], "n_components": 3}),
}


@pytest.mark.parametrize(
    "generator",
    # CTGAN's run takes about 1.5 min on a loaded 2-core machine: in the slow suite
    ["bayesian_network", "vae_bgm", pytest.param("ctgan", marks=pytest.mark.slow)],
)
def test_a_planted_extreme_and_a_one_patient_label_leave_no_trace(mds_partition, generator: str, tmp_path: Path) -> None:
    # Setup
    sites, column, planted, categorical, label = _plant(mds_partition)
    site = min(sites, key=lambda s: len(s.data))
    raw = summarize_site(site.data, mds_partition.schema)  # a control: the site's own summary holds both
    assert _holds(np.array([raw["columns"][column]["max"]]), planted)
    assert label in raw["columns"][categorical]["counts"]
    strategy_name, params = _DEFAULTS[generator]
    grid = InProcessGrid(sites, keep_messages=True)
    strategy = make_strategy(strategy_name, mds_partition.schema, generator=generator, generator_params=params,
                             rounds=2 if strategy_name == "fedavg" else 1, min_sites=3, random_state=0,
                             params={"secure_aggregation": True, "mixture_max_iter": 10} if generator == "vae_bgm"
                             else {"secure_aggregation": True})
    snapshots: list[pd.DataFrame] = []

    # Run
    result = strategy.start(grid, on_round=lambda rr: snapshots.append(rr.sample(len(mds_partition.train),
                                                                                  random_state=rr.server_round)))
    result.generator.save(str(tmp_path / "model"))

    # Assert: in no message the server received ...
    assert grid.received and not any(r.has_error() for r in grid.received)
    for reply in grid.received:
        assert not any(_holds(v, planted) for v in _record_numbers(reply)), reply.metadata.message_type
        assert not _text_holds(reply, label), reply.metadata.message_type
    # ... in no model file ...
    files = [p for p in (tmp_path / "model").rglob("*") if p.is_file()]
    assert files and not any(_file_holds(p, planted) for p in files)
    assert not any(label.encode() in p.read_bytes() for p in files)
    # ... and in no snapshot (the synthetic rows a run writes after every round)
    assert snapshots
    for rows in snapshots:
        assert not _holds(rows[column].dropna().to_numpy(), planted)
        assert label not in set(rows[categorical].dropna().astype(str))


@pytest.mark.slow
def test_secure_fedavg_vae_bgm_over_flower_simulation_equals_the_in_process_run(tmp_path: Path) -> None:
    # Setup: every message may run in another simulation actor: the stashed updates live in context.state
    from fedsynth.federation.simulation import run_simulation

    sites = _small_sites([120, 80, 60])
    params = {"batch_size": 32, "latent_dim": 2, "hidden_dims": [8], "n_components": 2}

    def strategy() -> Any:
        return make_strategy("fedavg", SCHEMA, generator="vae_bgm", rounds=2, local_epochs=1, min_sites=3,
                             random_state=0, generator_params=params,
                             params={"secure_aggregation": True, "mixture_max_iter": 5})

    # Run
    simulated = run_simulation(strategy(), [(s.name, s.data) for s in sites], SCHEMA, seeds=[0, 1, 2],
                               private_dir=tmp_path / "private")
    in_process = strategy().start(InProcessGrid(sites))

    # Assert
    assert simulated.left_out == {} and simulated.dropped == []
    got, want = simulated.generator.get_weights(), in_process.generator.get_weights()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-7, err_msg=key)
