"""A value planted at one site appears in no message to the server, no log line and no pooled synthetic row."""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedsynth.strategies import records
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.registry import make_strategy
from fedsynth.strategies.site import SiteRuntime, all_site_handlers

PLANTED_HB = 987.654321
PLANTED_LABEL = "ZZ_PLANTED_LABEL"
COLUMNS = ["AGE", "SEX", "WHO_2016", "HB", "PLT", "BM_BLAST", "TP53", "SF3B1", "OS_YEARS", "OS_STATUS"]


def planted_sites(partition, columns=COLUMNS, policy=None) -> tuple[Any, list[SiteRuntime]]:  # type: ignore[no-untyped-def]
    """Sites of ``partition`` with the marker planted in one row of the smallest site."""
    extra = {} if policy is None else {"policy": policy}
    schema = partition.schema.select(columns)
    sites = []
    for i, s in enumerate(partition.sites):
        data = s.data.copy()
        if s.name == "site-3":
            data.loc[data.index[5], "HB"] = PLANTED_HB
            data.loc[data.index[7], "WHO_2016"] = PLANTED_LABEL
        sites.append(SiteRuntime(s.name, data, schema, seed=i, **extra))
    return schema, sites


def leaks_in_text(text: str) -> list[str]:
    return [m for m in (PLANTED_LABEL, "987.654321", "987.65432", "987.6543") if m in text]


def leaks_in_message(msg: Message) -> list[str]:
    """Every place the marker could hide in a Flower message: error text, configs, metrics, arrays."""
    found: list[str] = []
    if msg.has_error():
        return leaks_in_text(str(msg.error.reason))
    for key, rec in msg.content.items():
        if isinstance(rec, (ConfigRecord, MetricRecord)):
            found += leaks_in_text(repr(dict(rec)))
        elif isinstance(rec, ArrayRecord):
            for name, arr in rec.items():
                found += leaks_in_text(name)
                values = arr.numpy()
                if values.dtype.kind in "fiu" and np.isclose(values.astype(float), PLANTED_HB, rtol=0, atol=1e-6).any():
                    found.append(f"{key}.{name} holds the planted number")
                if values.dtype.kind in "US" and (values.astype(str) == PLANTED_LABEL).any():
                    found.append(f"{key}.{name} holds the planted label")
    return found


def frame_leaks(frame: pd.DataFrame) -> list[str]:
    found = []
    for c in frame.columns:
        s = frame[c]
        if s.dtype == object and (s == PLANTED_LABEL).any() or s.dtype != object and np.isclose(s.astype(float), PLANTED_HB, rtol=0, atol=1e-6).any():
            found.append(c)
    return found


@pytest.mark.parametrize(
    "strategy_name, generator, params",
    [
        ("two_step_bn", "bayesian_network", {}),
        ("sd_sharing", "bayesian_network", {"refit": True, "gate_mia_auc_above": 1.0, "gate_nndr_p5_margin": 1.0, "gate_exact_copies_margin": 1.0}),
        ("fedavg", "fake_weights", {}),
    ],
)
def test_planted_value_appears_in_no_message_log_or_pooled_row(
    mds_partition, fake_generators, caplog, strategy_name, generator, params
) -> None:
    # Setup: the sites' own gate is open here (the server's params cannot open it), so every site answers
    from fedsynth.strategies.policy import SitePolicy

    schema, sites = planted_sites(mds_partition, policy=SitePolicy(
        gate_mia_auc_above=1.0, gate_nndr_p5_margin=1.0, gate_exact_copies_margin=1.0))
    assert (sites[2].data["HB"] == PLANTED_HB).sum() == 1
    grid = InProcessGrid(sites, keep_messages=True)
    gen_params = {"max_indegree": 1} if generator == "bayesian_network" else {}
    strategy = make_strategy(strategy_name, schema, generator=generator, generator_params=gen_params, rounds=2,
                             min_sites=3, params=params)
    caplog.set_level(logging.DEBUG)

    # Run
    result = strategy.start(grid)

    # Assert
    from fedsynth.strategies.two_step_bn import is_refusal

    replies = [m for m in grid.received]
    # A site may refuse a count request whose every table would isolate patients (the BN's wide survival tables
    # under the default policy): that is an answer under its policy, not a failure (and is checked for leaks).
    assert replies and not any(m.has_error() and not is_refusal(m.error.reason or "") for m in replies)
    leaks = {f"{m.metadata.message_type}": leaks_in_message(m) for m in grid.sent + replies}
    assert {k: v for k, v in leaks.items() if v} == {}
    assert leaks_in_text("\n".join(r.getMessage() for r in caplog.records)) == []
    assert frame_leaks(result.sample(2000, random_state=0)) == []
    if result.synthetic is not None:
        assert frame_leaks(result.synthetic) == []
    assert PLANTED_LABEL not in result.domain["WHO_2016"].categories


# -- issue 13 items 0 and 1: a site's extreme, a one-patient category, count refusals, the site's own policy ----

EXTREME_HB = 19.731  # inside the declared clinical range, above every real haemoglobin of the cohort
ONE_PATIENT_LABEL = "aCML"  # a label the schema declares


def extreme_sites(partition, policy=None) -> tuple[Any, list[SiteRuntime]]:  # type: ignore[no-untyped-def]
    """Sites where site-3's largest haemoglobin is a unique number and one patient of the federation holds a
    declared WHO label (every other holder of it is recoded to 'other')."""
    schema = partition.schema.select(COLUMNS)
    sites = []
    for i, s in enumerate(partition.sites):
        data = s.data.copy()
        data.loc[data["WHO_2016"] == ONE_PATIENT_LABEL, "WHO_2016"] = "other"
        if s.name == "site-3":
            data.loc[data.index[5], "HB"] = EXTREME_HB
            data.loc[data.index[7], "WHO_2016"] = ONE_PATIENT_LABEL
        extra = {} if policy is None else {"policy": policy}
        sites.append(SiteRuntime(s.name, data, schema, seed=i, **extra))
    return schema, sites


def extreme_leaks_in_message(msg: Message) -> list[str]:
    if msg.has_error():
        return ["19.731"] if "19.731" in str(msg.error.reason) else []
    found: list[str] = []
    for key, rec in msg.content.items():
        if isinstance(rec, (ConfigRecord, MetricRecord)):
            text = repr(dict(rec))
            found += [f"{key} text"] if EXTREME_TEXT.search(text.encode()) else []
        elif isinstance(rec, ArrayRecord):
            for name, arr in rec.items():
                values = arr.numpy()
                if values.dtype.kind in "fiu" and np.isclose(values.astype(float), EXTREME_HB, rtol=0, atol=1e-6).any():
                    found.append(f"{key}.{name}")
    return found


#: The planted value as text: itself, or rounded to 2 digits as a whole number ("19.73" but not a drawn 19.7309...).
EXTREME_TEXT = re.compile(rb"19\.731|19\.73(?![0-9])")


def files_holding(folder: Any, needles: tuple[bytes, ...]) -> list[str]:
    def holds(data: bytes) -> bool:
        return EXTREME_TEXT.search(data) is not None or any(n in data for n in needles)

    return [str(p) for p in folder.rglob("*") if p.is_file() and holds(p.read_bytes())]


EXTREME_BYTES = (np.float64(EXTREME_HB).tobytes(), np.float32(EXTREME_HB).tobytes())


@pytest.mark.parametrize(
    "strategy_name, generator, params",
    [
        ("two_step_bn", "bayesian_network", {}),
        ("sd_sharing", "bayesian_network", {"refit": True}),
        ("fedavg", "fake_weights", {}),
    ],
)
def test_a_sites_extreme_value_appears_in_no_message_log_or_model_file(
    mds_partition, fake_generators, tmp_path, caplog, strategy_name, generator, params
) -> None:
    # Setup: default site policies (k = 5, gate on)
    schema, sites = extreme_sites(mds_partition)
    assert sites[2].data["HB"].max() == EXTREME_HB > max(s.data["HB"].max() for s in sites[:2])
    grid = InProcessGrid(sites, keep_messages=True)
    gen_params = {"max_indegree": 1} if generator == "bayesian_network" else {}
    strategy = make_strategy(strategy_name, schema, generator=generator, generator_params=gen_params, rounds=2,
                             min_sites=1, params=params)
    caplog.set_level(logging.DEBUG)

    # Run
    result = strategy.start(grid)

    # Assert: no message, no log line, no domain bound, no model file, no released row holds the number
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert EXTREME_TEXT.search(logged.encode()) is None
    leaks = {m.metadata.message_type: extreme_leaks_in_message(m) for m in grid.sent + grid.received}
    assert {k: v for k, v in leaks.items() if v} == {}
    assert result.domain["HB"].upper == 20.0  # the coarse bound, not the site's maximum
    if result.generator is not None:
        result.generator.save(tmp_path / "model")
        assert files_holding(tmp_path / "model", EXTREME_BYTES) == []
    rows = result.sample(3000, random_state=0)
    assert not np.isclose(rows["HB"].astype(float), EXTREME_HB, rtol=0, atol=1e-6).any()
    # a category one patient holds is in no released row and not in the domain
    assert ONE_PATIENT_LABEL not in result.domain["WHO_2016"].categories
    assert (rows["WHO_2016"] != ONE_PATIENT_LABEL).all()
    if result.synthetic is not None:
        assert (result.synthetic["WHO_2016"] != ONE_PATIENT_LABEL).all()


def test_a_sites_extreme_value_appears_in_no_artefact_of_a_run(monkeypatch, mds_cohort, tmp_path) -> None:
    # Setup: a whole run (in process) whose smallest site holds the extreme and the one-patient label
    from fedsynth.cohort.partition import Site, make_partition
    from fedsynth.experiments import run as run_mod
    from fedsynth.experiments.config import parse_config

    def load_partition(config):  # type: ignore[no-untyped-def]
        part = make_partition(mds_cohort.data, mds_cohort.schema, proportions=(0.6, 0.3, 0.1), random_state=config.seed)
        data = part.sites[2].data.copy()
        data.loc[data.index[4], "HB"] = EXTREME_HB
        data.loc[data.index[9], "WHO_2016"] = ONE_PATIENT_LABEL
        sites = (*part.sites[:2], Site("site-3", data, part.sites[2].lacks))
        return mds_cohort, type(part)(part.train, part.holdout, sites, part.schema, part.settings)

    monkeypatch.setattr(run_mod, "load_partition", load_partition)
    config = parse_config({
        "name": "t", "cohort": {"name": "mds-iwgpm"}, "sites": {"proportions": [60, 30, 10]},
        "generator": {"name": "bayesian_network", "params": {"max_indegree": 1}},
        "strategy": {"name": "two_step_bn", "rounds": 1, "engine": "in_process"},
        "evaluation": {"snapshot_rows": 300, "references": [], "final": "none"},
        "output": {"dir": str(tmp_path), "run_id": "run-1"}, "seed": 0,
    })

    # Run
    run_mod.run_experiment(config)

    # Assert
    run_dir = tmp_path / "run-1"
    assert (run_dir / "model").is_dir()
    assert files_holding(run_dir, EXTREME_BYTES) == []


def test_a_count_query_whose_clear_reply_would_isolate_patients_is_refused(mds_partition) -> None:
    # Setup: the smallest site (266 rows) asked for a coarse table (SEX) and a fine one (HB#within: 500 cells)
    from fedsynth.generators.bayesian_network import family_key
    from fedsynth.strategies.policy import SitePolicy
    from fedsynth.strategies.site import handle

    schema, sites = extreme_sites(mds_partition)
    site = sites[2]
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network")
    domain = strategy.build_domain(InProcessGrid(sites), strategy.hello(InProcessGrid(sites)))
    cfg = strategy.base_config("tok", domain)

    def ask(families: list[str], at: SiteRuntime) -> Message:
        content = records.to_config_record({**cfg, "families": families})
        msg = Message(RecordDict({"config": content}), dst_node_id=3, message_type="query.counts", group_id="t")
        return handle(all_site_handlers()["query.counts"], msg, at)

    coarse, fine = family_key(("SEX", ())), family_key(("HB#within", ()))

    # Run
    mixed = ask([coarse, fine], site)
    only_fine = ask([fine], site)
    trusted = ask([fine], SiteRuntime(site.name, site.data, schema, seed=2, policy=SitePolicy(clear_counts=True)))

    # Assert: the fine table is withheld, the coarse one sent; a query of fine tables only is refused, scrubbed
    present = records.from_array_record(mixed.content["counts"])["present"]
    assert present.tolist() == [1, 0]
    assert only_fine.has_error() and only_fine.error.reason.startswith("DisclosureRefused: refused")
    assert "19.731" not in only_fine.error.reason
    assert records.from_array_record(trusted.content["counts"])["present"].tolist() == [1]


def test_a_refused_count_query_leaves_the_site_in_and_the_run_going(mds_partition) -> None:
    # Setup: default policies; max_indegree 2 asks for many tables the small sites refuse
    schema, sites = extreme_sites(mds_partition)
    grid = InProcessGrid(sites, keep_messages=True)
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network",
                             generator_params={"max_indegree": 2}, min_sites=3)

    # Run
    result = strategy.start(grid)

    # Assert: every site stays in, tables were withheld, and the network still has edges
    counts = [(s, r) for s, r in zip(grid.sent, grid.received) if s.metadata.message_type == "query.counts"]
    withheld = sum(
        int((records.from_array_record(r.content["counts"])["present"] == 0).sum()) for _, r in counts if not r.has_error()
    )
    assert withheld > 0 and result.left_out == {}
    assert len(result.generator.edges_) > 0


def test_a_server_asking_for_looser_settings_gets_the_sites_policy(mds_partition) -> None:
    # Setup: a server that asks for k = 1 and for unchecked synthetic rows, more of them than the site allows
    from fedsynth.strategies.policy import SitePolicy
    from fedsynth.strategies.site import handle

    schema, sites = extreme_sites(mds_partition, policy=SitePolicy(max_share_rows=50))
    site = sites[2]
    summary_cfg = records.to_config_record({"n_modes": 0, "min_category_count": 1, "significant_digits": 9})
    summary_msg = Message(RecordDict({"config": summary_cfg}), dst_node_id=3, message_type="query.summary", group_id="t")
    strategy = make_strategy("sd_sharing", schema, generator="bayesian_network",
                             generator_params={"max_indegree": 1}, params={"privacy_check": False})
    grid = InProcessGrid(sites, keep_messages=True)

    # Run
    summary = records.from_payload_record(handle(all_site_handlers()["query.summary"], summary_msg, site).content["summary"])
    strategy.start(grid)

    # Assert: labels under the site's k stay hidden; the site's gate ran and its row cap held
    assert min(summary["columns"]["WHO_2016"]["counts"].values()) >= 5
    assert ONE_PATIENT_LABEL not in summary["columns"]["WHO_2016"]["counts"]
    shares = [(s, r) for s, r in zip(grid.sent, grid.received) if s.metadata.message_type == "train.share"]
    assert records.from_config_record(shares[0][0].content["config"])["privacy_check"] is False
    for _, reply in shares:
        if reply.has_error():
            assert reply.error.reason.startswith("PrivacyCheckError")
            continue
        metrics = records.from_metric_record(reply.content["metrics"])
        assert "dcr_share" in metrics and metrics["n_synthetic"] <= 50


def test_sd_sharing_removes_copies_however_their_numbers_are_spelt() -> None:
    # Setup: synthetic row 1 is real row 0 with -0.0 for 0.0, row 2 real row 1 exactly, row 3 real row 0 with an
    # integer AGE written as a float, row 4 real row 1 with its numbers stored in float32, row 5 real row 1 with a
    # value on a 6-digit rounding boundary written "%.6g"
    from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, TableSchema
    from fedsynth.strategies.sd_sharing import _drop_exact_copies

    schema = TableSchema((ColumnSpec("HB", ColumnKind.CONTINUOUS, ColumnRole.CLINICAL),
                          ColumnSpec("AGE", ColumnKind.CONTINUOUS, ColumnRole.CLINICAL),
                          ColumnSpec("SEX", ColumnKind.CATEGORICAL, ColumnRole.CLINICAL),
                          ColumnSpec("OS_YEARS", ColumnKind.CONTINUOUS, ColumnRole.CLINICAL)), (), "t")
    real = pd.DataFrame({"HB": [0.0, 9.123456789], "AGE": pd.array([70, 61], dtype="int64"), "SEX": ["F", "M"],
                         "OS_YEARS": [1.5, 4.95068493150685]})
    b, f32 = 4.95068493150685, float(np.float32(9.123456789))
    synthetic = pd.DataFrame({"HB": [3.0, -0.0, 9.123456789, 0.0, f32, 9.123456789],
                              "AGE": [70.0, 70.0, 61.0, 70.0, 61.0, 61.0], "SEX": ["F", "F", "M", "F", "M", "M"],
                              "OS_YEARS": [1.5, 1.5, b, 1.5, float(np.float32(b)), float(f"{b:.6g}")]})
    assert f32 != 9.123456789 and f"{np.float32(b):.6g}" != f"{b:.6g}"
    # Run
    kept = _drop_exact_copies(synthetic, real, schema)
    # Assert: only the new row is left
    assert kept["HB"].tolist() == [3.0]
