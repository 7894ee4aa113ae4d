"""Fixtures for strategy tests: a tiny deterministic weight-based generator and mocked grids."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flwr.app import Message

from fedsynth.cohort.schema import ColumnKind
from fedsynth.generators.base import BaseGenerator
from fedsynth.strategies.in_process import InProcessGrid


class FakeWeightsGenerator(BaseGenerator):
    """Weights = one mean per numeric column; ``partial_fit`` moves them to the site's column means."""

    name = "fake_weights"

    def __init__(self, schema: Any, *, domain: Any = None, random_state: int | None = None) -> None:
        super().__init__(schema, domain=domain, random_state=random_state)
        self.random_state = random_state

    def _numeric(self) -> list[str]:
        assert self.domain is not None
        return [c for c, col in self.domain.columns.items() if col.is_numeric]

    def initialize(self) -> FakeWeightsGenerator:
        self.w_ = {"means": np.zeros(len(self._numeric())), "steps": np.zeros((), dtype=np.float32)}
        return self

    def get_weights(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.w_.items()}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        if not hasattr(self, "w_"):
            self.initialize()
        assert set(weights) == set(self.w_)
        self.w_ = {k: np.asarray(v).copy() for k, v in weights.items()}
        self.fitted_ = True

    def partial_fit(self, data: pd.DataFrame, *, epochs: int = 1) -> FakeWeightsGenerator:
        data = self._check_training_data(data)
        if not hasattr(self, "w_"):
            self.initialize()
        for i, c in enumerate(self._numeric()):
            if c in data.columns:
                self.w_["means"][i] = float(data[c].mean())
        self.w_["steps"] = self.w_["steps"] + np.float32(epochs)
        self.losses_ = [{"loss_g": 0.5, "loss_d": 0.25}]
        self.fitted_ = True
        return self

    def _fit(self, data: pd.DataFrame) -> None:
        self.initialize()
        self.partial_fit(data)

    def _sample(self, n_samples: int, *, rng: np.random.Generator) -> pd.DataFrame:
        assert self.domain is not None
        out: dict[str, Any] = {}
        means = dict(zip(self._numeric(), self.w_["means"]))
        for name, col in self.domain.columns.items():
            if col.is_numeric:
                out[name] = rng.normal(means[name], max(col.std, 1e-6), n_samples)
            else:
                p = np.asarray(col.category_counts, dtype=float) + 1e-9
                labels = rng.choice(list(col.categories), size=n_samples, p=p / p.sum())
                out[name] = labels.astype(float) if col.kind is ColumnKind.BINARY else labels
        return pd.DataFrame(out)

    def _save(self, folder: Path) -> None:
        (folder / "fake.json").write_text(json.dumps({k: v.tolist() for k, v in self.w_.items()}))

    def _load(self, folder: Path) -> None:
        self.w_ = {k: np.asarray(v) for k, v in json.loads((folder / "fake.json").read_text()).items()}


@pytest.fixture()
def fake_generators(monkeypatch: pytest.MonkeyPatch) -> dict[str, type]:
    """Register ``fake_weights`` next to the real generators for the duration of a test."""
    import fedsynth.generators as gens

    original = gens.generator_class
    fakes = {"fake_weights": FakeWeightsGenerator}

    def lookup(name: str) -> type:
        return fakes[name] if name in fakes else original(name)

    monkeypatch.setattr(gens, "generator_class", lookup)
    return fakes


class MockGrid(InProcessGrid):
    """An in-process grid whose replies to chosen message types are built by the test.

    ``mock[message_type](msg, site_name) -> RecordDict | Exception``; a returned exception becomes an error reply.
    """

    def __init__(self, sites: Any, mock: Mapping[str, Callable[[Message, str], Any]], **kwargs: Any) -> None:
        super().__init__(sites, **kwargs)
        self.mock = dict(mock)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        from flwr.app import Error

        out: list[Message] = []
        passthrough = []
        for msg in messages:
            fn = self.mock.get(msg.metadata.message_type)
            if fn is None:
                passthrough.append(msg)
                continue
            answer = fn(msg, self.sites[msg.metadata.dst_node_id].name)
            if isinstance(answer, Exception):
                out.append(Message(Error(2, f"{type(answer).__name__}: mocked failure"), reply_to=msg))
            else:
                out.append(Message(answer, reply_to=msg))
        return out + super().send_and_receive(passthrough)


@pytest.fixture()
def mock_grid() -> type[MockGrid]:
    """The :class:`MockGrid` class (fixtures are how test modules reach helpers here)."""
    return MockGrid
