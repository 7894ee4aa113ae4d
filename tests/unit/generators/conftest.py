"""Fixtures shared by the generator tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One thread for torch and BLAS: CI has 2 shared cores and oversubscription slows tiny fits badly."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def small_fedavg_vae_bgm() -> Callable[..., Any]:
    """A function running FedAvg of a small VAE-BGM over three sites of a 900-row frame (450 / 270 / 180 rows; the
    server learns the endpoint rules from their answers), survival calibration off; returns the server's generator.
    Keyword arguments: ``rounds``, ``local_epochs``, and generator parameters."""
    from fedsynth.strategies.in_process import InProcessGrid
    from fedsynth.strategies.registry import make_strategy
    from fedsynth.strategies.site import SiteRuntime

    def run(schema: Any, real: Any, *, rounds: int, local_epochs: int, **params: Any) -> Any:
        sites = [SiteRuntime(f"site-{i + 1}", schema.coerce(real.iloc[a:b].reset_index(drop=True)), schema, seed=i)
                 for i, (a, b) in enumerate([(0, 450), (450, 720), (720, 900)])]
        strategy = make_strategy("fedavg", schema, generator="vae_bgm", rounds=rounds, local_epochs=local_epochs,
                                 min_sites=2, random_state=0, generator_params={
                                     "batch_size": 64, "latent_dim": 4, "hidden_dims": [32], "n_components": 2,
                                     "device": "cpu", "survival_calibration": False, **params})
        return strategy.start(InProcessGrid(sites)).generator

    return run
