"""A site's state between messages lives in the node (``context.state``) and its own folder, so that a fresh
ClientApp process per message — as in a deployment — continues exactly where a long-lived one would."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flwr.app import Message, RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto

from fedsynth.cohort.schema import ColumnKind, ColumnSpec, TableSchema
from fedsynth.strategies import fedavg_site, records
from fedsynth.strategies import site as site_mod
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.registry import make_strategy
from fedsynth.strategies.site import SiteRuntime, load_site_state, save_site_state
from fedsynth.strategies.two_step_bn import handle_counts

SCHEMA = TableSchema(
    (
        ColumnSpec("AGE", ColumnKind.CONTINUOUS),
        ColumnSpec("HB", ColumnKind.CONTINUOUS),
        ColumnSpec("SEX", ColumnKind.CATEGORICAL, categories=("F", "M")),
        ColumnSpec("RISK", ColumnKind.CATEGORICAL, categories=("low", "high")),
    )
)
VAE = {"batch_size": 32, "latent_dim": 2, "hidden_dims": [8], "n_components": 2}


def _sites(sizes: Sequence[int], *, state_root: Path | None = None) -> list[SiteRuntime]:
    rng = np.random.default_rng(0)
    out = []
    for i, n in enumerate(sizes):
        age = rng.normal(60 + 5 * i, 10, n)
        frame = pd.DataFrame({"AGE": age, "HB": rng.normal(10 - i, 1, n) - 0.02 * age,
                              "SEX": rng.choice(["F", "M"], n),
                              "RISK": np.where(age + rng.normal(0, 5, n) > 62, "high", "low")})
        name = f"site-{i + 1}"
        out.append(SiteRuntime(name, SCHEMA.coerce(frame), SCHEMA, seed=i,
                               state_dir=state_root / name if state_root is not None else None))
    return out


def _forget_process() -> None:
    """What a new ClientApp process does not have: every per-process cache of site models."""
    site_mod._SITE_MODELS.clear()
    fedavg_site._SITE_ROUND.clear()


class FreshProcessGrid(InProcessGrid):
    """Every message is answered as by a fresh ClientApp process: the per-process caches are empty, torch's
    global random generator starts from its fresh-process seed, and the node's state reaches the handler only as
    Flower carries it (serialised to its protobuf and back), less the records named in ``drop`` (a part of the
    state lost, e.g. by a SuperNode that restarted: the site then has only its own folder)."""

    def __init__(self, sites: Sequence[SiteRuntime], *, drop: Sequence[str] = ()) -> None:
        super().__init__(sites)
        self.drop = tuple(drop)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        import torch

        out = []
        for msg in messages:
            _forget_process()
            site = self.sites[msg.metadata.dst_node_id]
            state = recorddict_from_proto(recorddict_to_proto(site.state))
            for key in [k for k in state if k.startswith(self.drop)] if self.drop else []:
                del state[key]
            site.state = state
            server_rng = torch.get_rng_state()
            torch.manual_seed(torch.initial_seed())
            try:
                out.extend(super().send_and_receive([msg], timeout=timeout))
            finally:
                torch.set_rng_state(server_rng)
        return out


def _fedavg_vae(grid: InProcessGrid) -> Any:
    _forget_process()
    strategy = make_strategy("fedavg", SCHEMA, generator="vae_bgm", rounds=3, local_epochs=2, min_sites=3,
                             random_state=0, generator_params=VAE, params={"mixture_max_iter": 5})
    return strategy.start(grid).generator


def _same_model(a: Any, b: Any) -> bool:
    wa, wb = a.get_weights(), b.get_weights()
    ma, mb = a.get_latent_mixture() or {}, b.get_latent_mixture() or {}
    return (sorted(wa) == sorted(wb) and all(np.array_equal(wa[k], wb[k]) for k in wa)
            and sorted(ma) == sorted(mb) and all(np.array_equal(ma[k], mb[k]) for k in ma))


@pytest.fixture(scope="module")
def reference() -> Any:
    """The reference run: every site's model kept in this process between messages."""
    return _fedavg_vae(InProcessGrid(_sites([120, 80, 60])))


def test_fedavg_vae_bgm_in_a_fresh_process_per_message_equals_one_long_lived_process(reference: Any) -> None:
    # Run: every message in a "new process", the node's state carried by Flower
    fresh = _fedavg_vae(FreshProcessGrid(_sites([120, 80, 60])))

    # Assert: the same global weights and latent mixture, bit for bit
    assert _same_model(fresh, reference)


def test_fedavg_vae_bgm_without_the_node_state_does_not_continue_exactly(reference: Any) -> None:
    # Setup / Run: the control — a fresh process per message whose node state lacks the local training state
    # (fresh optimiser moments and random generator at every round) — must NOT reproduce the reference
    fresh = _fedavg_vae(FreshProcessGrid(_sites([120, 80, 60]), drop=[fedavg_site.LOCAL_STATE]))

    # Assert
    assert not _same_model(fresh, reference)


def test_fedavg_vae_bgm_continues_from_the_sites_folders_when_the_node_state_is_lost(
    tmp_path: Path, reference: Any
) -> None:
    # Setup: as a SuperNode restarted before every training message: the local training state is not in the
    # node any more, only in each site's own folder

    # Run
    fresh = _fedavg_vae(FreshProcessGrid(_sites([120, 80, 60], state_root=tmp_path), drop=[fedavg_site.LOCAL_STATE]))

    # Assert: the same model; each site kept its state per run and round in its own folder (no pickle)
    assert _same_model(fresh, reference)
    runs = sorted(p.name for p in (tmp_path / "site-1").iterdir())
    assert len(runs) == 1
    files = sorted(p.name for p in (tmp_path / "site-1" / runs[0] / fedavg_site.LOCAL_STATE).iterdir())
    assert files == ["round-002.json", "round-002.npz", "round-003.json", "round-003.npz"]


def test_two_step_bn_in_a_fresh_process_per_message_learns_the_same_network() -> None:
    # Setup / Run
    def network(grid: InProcessGrid) -> list[tuple[str, str]]:
        _forget_process()
        strategy = make_strategy("two_step_bn", SCHEMA, generator="bayesian_network", min_sites=3, random_state=0)
        return sorted(strategy.start(grid).generator.model_.edges())

    # Assert
    assert network(FreshProcessGrid(_sites([120, 80, 60]))) == network(InProcessGrid(_sites([120, 80, 60])))


def _noisy_count_request(site: SiteRuntime, families: list[str]) -> dict[str, np.ndarray]:
    from fedsynth.encoding.domain import merge_summaries, summarize_site

    domain = merge_summaries([summarize_site(site.data, SCHEMA, random_state=0)], SCHEMA, random_state=0)
    cfg = {"run_token": "run-1", "generator": "bayesian_network", "generator_params": "{}",
           "domain": records.domain_to_text(domain), "families": families, "dp_noise_std": 3.0, "dp_min_sites": 1}
    msg = Message(RecordDict({"config": records.to_config_record(cfg)}), dst_node_id=1, message_type="query.counts")
    from fedsynth.strategies.in_process import _ensure_task_identity

    _ensure_task_identity()
    return records.unpack_tables(handle_counts(msg, site)["counts"], families)


@pytest.mark.parametrize("carry_state", [True, False], ids=["node-state", "control-without-it"])
def test_a_noisy_count_table_released_once_is_sent_again_unchanged_by_a_fresh_process(carry_state: bool) -> None:
    # Setup: one site answers a noisy count request, then (a new process) the same family again
    from fedsynth.generators.bayesian_network import family_key

    site = _sites([200])[0]
    key = family_key(("RISK", ("SEX",)))
    first = _noisy_count_request(site, [key])

    # Run
    _forget_process()
    site.state = recorddict_from_proto(recorddict_to_proto(site.state)) if carry_state else RecordDict()
    again = _noisy_count_request(site, [key])

    # Assert: with the node's state the released table is repeated (no new noise, no new privacy cost); the
    # control draws fresh noise (its own OS entropy), so the two answers differ
    assert np.array_equal(first[key], again[key]) is carry_state


def test_site_state_is_read_from_the_node_for_its_step_and_from_the_folder_for_an_older_one(tmp_path: Path) -> None:
    # Setup: a site keeps three steps; the node holds only the latest, the folder the two latest
    site = _sites([10], state_root=tmp_path)[0]
    for step in (1, 2, 3):
        save_site_state(site, "run-a", "part", step, {"step": step}, {"x": np.full(2, step)})

    # Run / Assert
    assert load_site_state(site, "run-a", "part", 3)[0] == {"step": 3}
    site.state = RecordDict()  # the node restarted
    meta, arrays = load_site_state(site, "run-a", "part", 2)
    assert meta == {"step": 2} and arrays["x"].tolist() == [2, 2]
    assert load_site_state(site, "run-a", "part", 1) is None
    assert load_site_state(site, "run-b", "part", 3) is None


def test_a_run_killed_after_round_2_resumes_in_new_node_processes_to_the_uninterrupted_model(
    tmp_path: Path, reference: Any
) -> None:
    # Setup: as in a deployment, every message in a fresh process; the run is stopped when round 3 is being
    # recorded (the sites have trained round 3, the server's checkpoint holds round 2)
    from fedsynth.strategies.checkpoint import FileCheckpoint

    def strategy() -> Any:
        _forget_process()
        s = make_strategy("fedavg", SCHEMA, generator="vae_bgm", rounds=3, local_epochs=2, min_sites=3,
                          random_state=0, generator_params=VAE, params={"mixture_max_iter": 5})
        s.checkpoint = FileCheckpoint(tmp_path / "checkpoint")
        return s

    def stop_at_round_3(rr: Any) -> None:
        if rr.server_round == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        strategy().start(FreshProcessGrid(_sites([120, 80, 60], state_root=tmp_path / "sites")),
                         on_round=stop_at_round_3)

    # Run: a new run of the same strategy resumes from the checkpoint; the nodes restarted (no context.state:
    # a new Flower run), each site has only its own folder
    resumed = strategy().start(FreshProcessGrid(_sites([120, 80, 60], state_root=tmp_path / "sites")))

    # Assert: the uninterrupted model, bit for bit
    assert _same_model(resumed.generator, reference)
