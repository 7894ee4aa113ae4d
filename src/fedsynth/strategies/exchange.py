"""What a strategy's server and its grid exchange: the sites it knows, the requests it sends, the replies it gets,
and the results it hands back (one round's, the whole run's), with the grid and checkpoint protocols.

Plain values and protocols, free of the server flow (:class:`~fedsynth.strategies.base.Strategy`), so that site
code and helpers such as :mod:`fedsynth.strategies.secure_domain` can name them without importing it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from flwr.app import Message, RecordDict

from fedsynth.encoding.domain import Domain
from fedsynth.errors import FedsynthError
from fedsynth.generators.protocols import Generator

__all__ = ["Checkpoint", "GridLike", "OnRound", "Replies", "Request", "RoundResult", "SiteInfo", "StrategyResult",
           "same_for_all", "site_name"]


class GridLike(Protocol):
    """The part of ``flwr.serverapp.Grid`` a strategy uses."""

    def get_node_ids(self) -> Iterable[int]: ...

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]: ...


@dataclass(frozen=True)
class SiteInfo:
    """What the server knows about a site: its node, name, row count and the columns it holds."""

    node_id: int
    name: str
    n_rows: int
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Request:
    """One instruction to each of ``sites`` (:meth:`~fedsynth.strategies.base.Strategy.ask_together`): its type, per-site content builder,
    group id and the answers it needs (``min_sites``; ``None``: the strategy's)."""

    sites: Sequence[SiteInfo]
    message_type: str
    content: Callable[[SiteInfo], RecordDict]
    group_id: str
    min_sites: int | None = None


@dataclass
class Replies:
    """Answers of one request: good contents by node and scrubbed failure reasons by node."""

    ok: dict[int, RecordDict]
    failed: dict[int, str]


@dataclass
class RoundResult:
    """One finished round, handed to the caller's ``on_round`` callback.

    ``generator`` is the global model after the round (``None`` when the strategy has none, e.g. SD-sharing
    without refit; then ``synthetic`` holds the pooled synthetic rows). ``label`` is ``"federated"``,
    ``"centralized"`` or a site name (local baseline).
    """

    server_round: int
    label: str
    generator: Generator | None
    synthetic: pd.DataFrame | None = None
    site_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def sample(self, n_samples: int, *, random_state: int | None = None) -> pd.DataFrame:
        """A synthetic cohort of ``n_samples`` rows from this round's model (or pooled rows)."""
        if self.generator is not None:
            return self.generator.sample(int(n_samples), random_state=random_state)
        if self.synthetic is None or len(self.synthetic) == 0:
            raise FedsynthError(f"round {self.server_round} ({self.label}) has nothing to sample from")
        rng = np.random.default_rng(random_state)
        idx = rng.choice(len(self.synthetic), size=int(n_samples), replace=len(self.synthetic) < n_samples)
        return self.synthetic.iloc[idx].reset_index(drop=True)

    def summary(self) -> dict[str, Any]:
        return {
            "round": self.server_round,
            "label": self.label,
            "seconds": round(self.seconds, 4),
            "site_metrics": self.site_metrics,
            "left_out": self.left_out,
        }


@dataclass
class StrategyResult:
    """What a strategy's run leaves: the global model, the domain, per-round summaries and site facts."""

    strategy: str
    generator: Generator | None
    domain: Domain | None
    sites: list[SiteInfo]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)
    site_models: dict[str, Any] = field(default_factory=dict)
    synthetic: pd.DataFrame | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: Every site left out of a request: ``{"site", "message_type", "round" (the request's group id), "reason"}``.
    dropped: list[dict[str, str]] = field(default_factory=list)

    def sample(self, n_samples: int, *, random_state: int | None = None) -> pd.DataFrame:
        return RoundResult(0, self.strategy, self.generator, self.synthetic).sample(n_samples, random_state=random_state)


OnRound = Callable[[RoundResult], None]


class Checkpoint(Protocol):
    """Where a server keeps a strategy's state between steps (see :class:`fedsynth.strategies.checkpoint.FileCheckpoint`)."""

    def save(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None: ...

    def load(self) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None: ...


def site_name(sites: Sequence[SiteInfo], node: int) -> str:
    """The name of the site on ``node`` (the node id when no site there is known)."""
    return next((s.name for s in sites if s.node_id == node), str(node))


def same_for_all(content: RecordDict) -> Callable[[SiteInfo], RecordDict]:
    """The content builder for an instruction that is identical for every site."""

    def build(site: SiteInfo) -> RecordDict:
        return content

    return build
