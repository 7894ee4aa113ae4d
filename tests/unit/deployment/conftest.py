"""Shared fixtures: one set of development credentials per test session (key generation is the slow part), and the
processes a test starts, stopped at its end."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
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


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts (with their process groups); all stopped at its end, pass or fail."""
    from fedsynth.deployment import processes

    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        processes.stop(p, grace=15)
