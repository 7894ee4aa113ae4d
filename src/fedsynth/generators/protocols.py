"""What strategies and callers may rely on, as protocols: every generator (:class:`Generator`), and the optional
abilities strategies type against (:class:`SupportsWeights` for federated averaging, :class:`SupportsLatentMixture`
for a federated latent mixture, :class:`SupportsTwoStep` for learning from summed counts).

They are ``runtime_checkable``: :func:`fedsynth.strategies.registry.generator_capabilities` reads a generator's
capabilities with ``issubclass`` against them. Also importable from :mod:`fedsynth.generators` and
:mod:`fedsynth.generators.base`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from fedsynth.cohort.schema import TableSchema

#: A condition value: one exact value or a collection of accepted values.
ConditionValue = Any
Conditions = Mapping[str, ConditionValue]


@runtime_checkable
class Generator(Protocol):
    """What every generator offers."""

    schema: TableSchema

    def fit(self, data: pd.DataFrame) -> Generator: ...

    def sample(
        self,
        n_samples: int,
        *,
        random_state: int | None = None,
        conditions: Conditions | None = None,
        where: str | None = None,
    ) -> pd.DataFrame: ...

    def get_params(self) -> dict[str, Any]: ...

    def save(self, path: str | Path) -> None: ...


@runtime_checkable
class SupportsWeights(Protocol):
    """Weight exchange for federated averaging (CTGAN, VAE-BGM).

    ``initialize`` builds the model from the domain without training (the server's global model); ``get_weights``
    returns name -> array with keys and shapes fixed by the domain, identical on every site; ``set_weights``
    installs weights and leaves a model that can sample (it is fitted); ``partial_fit`` continues training from
    the current weights (and optimiser state), it never re-initialises.
    """

    def initialize(self) -> SupportsWeights: ...

    def get_weights(self) -> dict[str, np.ndarray]: ...

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None: ...

    def partial_fit(self, data: pd.DataFrame, *, epochs: int = 1) -> SupportsWeights: ...


@runtime_checkable
class SupportsLatentMixture(Protocol):
    """A global latent mixture fitted by federated variational EM (VAE-BGM).

    A site turns its rows into latent codes (:meth:`latent_codes`, never sent) and answers with sufficient
    statistics (:mod:`fedsynth.generators.latent_mixture`); the server starts the EM with
    :meth:`initial_latent_mixture` (the generator's own number of components and prior), runs it with
    :func:`~fedsynth.generators.latent_mixture.fit_latent_mixture_federated` and installs the result with
    :meth:`set_latent_mixture`.
    """

    def latent_codes(self, data: pd.DataFrame) -> np.ndarray: ...

    def initial_latent_mixture(
        self, statistics: Sequence[Mapping[str, np.ndarray]], *, random_state: int | None = None
    ) -> dict[str, np.ndarray]: ...

    def set_latent_mixture(self, params: Mapping[str, np.ndarray]) -> None: ...

    def get_latent_mixture(self) -> dict[str, np.ndarray] | None: ...


@runtime_checkable
class SupportsLocalState(Protocol):
    """Site-side training state kept between FedAvg rounds (optimiser moments, RNG), saved in the site's folder.

    ``get_local_state()`` returns ``(settings, arrays)`` (JSON-able settings, numpy arrays, no pickle);
    ``set_local_state`` restores them on a generator built with the same settings, so a resumed or re-scheduled
    site continues exactly where it stopped.
    """

    def get_local_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...

    def set_local_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None: ...


@runtime_checkable
class SupportsTwoStep(Protocol):
    """Two-step learning from counts (Bayesian network): structure from summed counts, then parameters.

    A site answers ``count_statistics`` on its own rows; the server learns through an oracle that sums the
    sites' count tables, so the federated network equals the centralised one on the same rows and domain.
    """

    def count_statistics(
        self, data: pd.DataFrame, families: Sequence[tuple[str, tuple[str, ...]]]
    ) -> dict[tuple[str, tuple[str, ...]], np.ndarray]: ...

    def make_oracle(self, data: pd.DataFrame) -> Any: ...

    def learn_structure(self, oracle: Any) -> list[tuple[str, str]]: ...

    def learn_parameters(self, oracle: Any, edges: Sequence[tuple[str, str]]) -> SupportsTwoStep: ...

    def fit_from_counts(
        self,
        counts: Mapping[tuple[str, tuple[str, ...]], np.ndarray],
        edges: Sequence[tuple[str, str]] | None = None,
    ) -> SupportsTwoStep: ...
