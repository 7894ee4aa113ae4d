"""Shared fixtures: one set of development credentials per test session (key generation is the slow part)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsynth.deployment.credentials import Credentials, make_credentials


@pytest.fixture(scope="session")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return make_credentials(tmp_path_factory.mktemp("creds"), ["A", "B"])


@pytest.fixture(scope="session")
def other_creds(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    """A second, unrelated CA: the 'wrong CA' control."""
    return make_credentials(tmp_path_factory.mktemp("other"), ["A"])


@pytest.fixture
def flwr_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Flower's configuration folder for this test only (never the user's ~/.flwr)."""
    home = tmp_path / "flwr"
    monkeypatch.setenv("FLWR_HOME", str(home))
    return home
