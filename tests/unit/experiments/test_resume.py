"""Runs that survive interruption: resume to the same result, the lock, run states, a fresh start's clean slate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _overrides import with_overrides

from fedsynth.experiments.config import parse_config

VAE_PARAMS = {"hidden_dims": [16], "latent_dim": 2, "n_components": 2, "batch_size": 256}


def _config(tmp_path: Path, run_id: str, **over: Any):  # type: ignore[no-untyped-def]
    raw: dict[str, Any] = {
        "name": "t",
        "cohort": {"name": "mds-iwgpm"},
        "sites": {"proportions": [60, 30, 10]},
        "generator": {"name": "vae_bgm", "params": VAE_PARAMS},
        "strategy": {"name": "fedavg", "rounds": 4, "engine": "in_process", "params": {"mixture_max_iter": 5}},
        "evaluation": {"snapshot_rows": 100, "references": [], "final": "none"},
        "output": {"dir": str(tmp_path), "run_id": run_id},
        "seed": 3,
    }
    return parse_config(with_overrides(raw, over))


@pytest.fixture()
def fast_scores(monkeypatch):  # type: ignore[no-untyped-def]
    """Scores are not what these tests check: a constant keeps them fast."""
    from fedsynth.experiments import run as run_mod

    monkeypatch.setattr(run_mod, "score_snapshot", lambda *a, **k: {"csf": 0.5, "gsf": 0.5, "nndr": None})


def _snapshots(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run_dir / "snapshots").glob("*.csv"))}


def test_fedavg_vae_bgm_interrupted_after_round_2_of_4_resumes_to_the_same_snapshots(tmp_path, fast_scores) -> None:
    # Setup: an uninterrupted run, and the same run stopped when round 3 starts recording
    from fedsynth.experiments.run import run_experiment

    run_experiment(_config(tmp_path, "full"))

    def stop_at_round_3(event: str, payload: Any) -> None:
        if event == "round" and payload["round"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(_config(tmp_path, "cut"), progress=stop_at_round_3)
    cut = tmp_path / "cut"
    manifest = json.loads((cut / "manifest.json").read_text())
    assert (manifest["status"], manifest["checkpoint_step"]) == ("interrupted", 2)
    # every site kept its own state (optimiser, RNG, weights) per round in its own private folder
    for site in ("site-1", "site-2", "site-3"):
        run_folder = next((cut / ".private" / "sites" / site).iterdir()) / "fedavg-local"  # per run, then per part
        assert sorted(p.name for p in run_folder.iterdir()) == [
            "round-002.json", "round-002.npz", "round-003.json", "round-003.npz"]
    assert not [p for p in cut.rglob("*") if p.suffix in (".pkl", ".pickle", ".pt")]

    # Run
    events: list[tuple[str, Any]] = []
    run_experiment(_config(tmp_path, "cut"), resume=True, progress=lambda e, p: events.append((e, p)))

    # Assert: the same four snapshots, byte for byte; rounds 1-2 were kept, 3-4 trained after the resume
    assert _snapshots(cut) == _snapshots(tmp_path / "full")
    assert len(_snapshots(cut)) == 4
    assert [p["round"] for e, p in events if e == "round"] == [3, 4]
    assert events[0][1]["resumed_from"] == 2
    lines = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [1, 2, 3, 4]
    manifest = json.loads((cut / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["resumed_from_step"] == 2
    assert not (cut / ".private").exists() and not (cut / "checkpoint").exists()


CTGAN_PARAMS = {"batch_size": 20, "embedding_dim": 8, "generator_dim": [16], "discriminator_dim": [16],
                "n_modes": 2}


def _stop_at_round_3(event: str, payload: Any) -> None:
    if event == "round" and payload["round"] == 3:
        raise KeyboardInterrupt


@pytest.mark.parametrize("keep_local_state", [True, False], ids=["local-state", "control-without-it"])
def test_fedavg_ctgan_interrupted_after_round_2_of_3_resumes_to_the_same_snapshots(
    tmp_path, fast_scores, monkeypatch, keep_local_state
) -> None:
    # Setup: a tiny FedAvg CTGAN run, uninterrupted and stopped when round 3 starts recording. The control
    # restores nothing (fresh Adam moments and RNG after the resume) and must NOT reproduce the snapshots.
    from fedsynth.experiments.run import run_experiment
    from fedsynth.generators.ctgan import CTGANGenerator

    over = {"generator.name": "ctgan", "generator.params": CTGAN_PARAMS, "strategy.rounds": 3,
            "strategy.params": {}}
    run_experiment(_config(tmp_path, "full", **over))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(_config(tmp_path, "cut", **over), progress=_stop_at_round_3)
    cut = tmp_path / "cut"
    run_folder = next((cut / ".private" / "sites" / "site-1").iterdir()) / "fedavg-local"
    meta = json.loads((run_folder / "round-002.json").read_text())
    assert sorted(meta) == ["epochs_trained", "optimizer_d", "optimizer_g", "rng"]
    if not keep_local_state:
        monkeypatch.setattr(CTGANGenerator, "set_local_state", lambda self, meta, arrays: None)

    # Run
    run_experiment(_config(tmp_path, "cut", **over), resume=True)

    # Assert
    full, resumed = _snapshots(tmp_path / "full"), _snapshots(cut)
    assert sorted(resumed) == ["round-001.csv", "round-002.csv", "round-003.csv"]
    assert resumed["round-002.csv"] == full["round-002.csv"]
    assert (resumed["round-003.csv"] == full["round-003.csv"]) is keep_local_state


def test_two_step_bn_interrupted_after_its_second_count_request_resumes_to_the_same_network(
    tmp_path, fast_scores, monkeypatch
) -> None:
    # Setup
    from fedsynth.experiments.run import run_experiment
    from fedsynth.generators import load_generator
    from fedsynth.strategies.checkpoint import FileCheckpoint

    over = {"generator.name": "bayesian_network", "generator.params": {"max_indegree": 2}, "strategy.name": "two_step_bn",
            "strategy.rounds": 1, "strategy.params": {}}
    saves: list[int] = []
    original = FileCheckpoint.save

    def counting_save(self, meta, arrays):  # type: ignore[no-untyped-def]
        original(self, meta, arrays)
        saves.append(int(meta["step"]))

    monkeypatch.setattr(FileCheckpoint, "save", counting_save)
    run_experiment(_config(tmp_path, "full", **over))
    n_requests = len(saves)
    assert n_requests >= 3  # otherwise stopping after the second request proves nothing

    def stop_after_second(self, meta, arrays):  # type: ignore[no-untyped-def]
        counting_save(self, meta, arrays)
        if meta["step"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(FileCheckpoint, "save", stop_after_second)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(_config(tmp_path, "cut", **over))
    monkeypatch.setattr(FileCheckpoint, "save", counting_save)
    saves.clear()

    # Run
    run_experiment(_config(tmp_path, "cut", **over), resume=True)

    # Assert: only the requests after the second went to the sites; same network, same snapshot
    assert saves == list(range(3, n_requests + 1))
    assert _snapshots(tmp_path / "cut") == _snapshots(tmp_path / "full")
    a, b = load_generator(tmp_path / "full" / "model"), load_generator(tmp_path / "cut" / "model")
    assert sorted(a.edges_) == sorted(b.edges_)


def test_resume_with_a_changed_config_is_refused_and_names_the_change(tmp_path, fast_scores) -> None:
    # Setup
    from fedsynth.errors import ValidationError
    from fedsynth.experiments.run import run_experiment

    def stop(event: str, payload: Any) -> None:
        if event == "round":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(_config(tmp_path, "r"), progress=stop)

    # Run / Assert
    with pytest.raises(ValidationError, match=r"strategy.local_epochs: 1 -> 2"):
        run_experiment(_config(tmp_path, "r", **{"strategy.local_epochs": 2}), resume=True)


def test_a_second_writer_of_the_same_run_directory_is_refused(tmp_path) -> None:
    # Setup: another writer holds the run directory's lock
    from fedsynth.errors import FedsynthError
    from fedsynth.experiments.run import RunLock, run_experiment

    holder = RunLock(tmp_path / "busy")
    holder.acquire()
    try:
        # Run / Assert
        with pytest.raises(FedsynthError, match=r"being written by another fedsynth process \(pid \d+\)"):
            run_experiment(_config(tmp_path, "busy"))
        assert RunLock(tmp_path / "busy").held_elsewhere()
    finally:
        holder.release()
    assert not (tmp_path / "busy" / "manifest.json").exists()  # the refused writer wrote nothing


def test_a_running_manifest_without_its_process_reads_interrupted_process_gone(tmp_path) -> None:
    # Setup: what a SIGKILL leaves: a "running" manifest and no lock holder
    from fedsynth.experiments.run_state import run_state

    run_dir = tmp_path / "killed"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text(json.dumps({"status": "running", "pid": 999999}))

    # Run / Assert
    assert run_state(run_dir) == "interrupted (process gone)"
    assert run_state(tmp_path / "nothing") == "missing"


def test_a_fresh_start_with_a_fixed_run_id_leaves_no_stale_later_snapshot(tmp_path, fast_scores) -> None:
    # Setup: a killed 3-round run left rounds 1-3, private rows and a running manifest
    from fedsynth.experiments.run import run_experiment

    run_dir = tmp_path / "fixed"
    (run_dir / "snapshots").mkdir(parents=True)
    for r in (1, 2, 3):
        (run_dir / "snapshots" / f"round-00{r}.csv").write_text("AGE\n1\n")
    (run_dir / ".private" / "rows").mkdir(parents=True)
    (run_dir / ".private" / "rows" / "site-1.csv").write_text("AGE\n1\n")
    (run_dir / "manifest.json").write_text(json.dumps({"status": "running"}))

    # Run: the same run id, 2 rounds, from scratch
    run_experiment(_config(tmp_path, "fixed", **{"strategy.rounds": 2}))

    # Assert
    assert sorted(_snapshots(run_dir)) == ["round-001.csv", "round-002.csv"]
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "finished"
    assert not (run_dir / ".private").exists()


def test_private_site_rows_hold_model_columns_only_in_a_folder_only_the_user_reads(tmp_path, mds_partition) -> None:
    # Setup
    from fedsynth.federation.simulation import private_folder, write_site_rows

    site = mds_partition.sites[0]
    folder = private_folder(tmp_path / ".private" / "rows")

    # Run
    path = write_site_rows(folder, site.name, site.data, mds_partition.schema)

    # Assert
    assert path.suffix in (".csv", ".parquet") and path.parent == folder
    assert (folder.stat().st_mode & 0o777, path.stat().st_mode & 0o777) == (0o700, 0o600)
    import pandas as pd

    back = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    assert list(back.columns) == [c for c in mds_partition.schema.model_columns if c in site.data.columns]
    assert not [c for c in back.columns if mds_partition.schema[c].role.value in ("id", "site")]
