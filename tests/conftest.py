"""Shared fixtures: the real MDS cohort, found through the same setting the product uses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never phone home.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _data_dir() -> Path | None:
    env = os.environ.get("FEDSYNTH_DATA_DIR")
    if env:
        return Path(env)
    # A checkout with ../shared beside it (how CI runs) needs no setting.
    return _SHARED if _SHARED.is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder holding cohort folders. In CI a missing cohort fails the run instead of skipping."""
    d = _data_dir()
    if d is None or not (d / "mds-iwgpm-2022" / "mds_iwgpm_2022.csv").is_file():
        msg = (
            "The MDS cohort is not available: set FEDSYNTH_DATA_DIR to the folder holding "
            "mds-iwgpm-2022/mds_iwgpm_2022.csv (see README, 'Data')."
        )
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    os.environ["FEDSYNTH_DATA_DIR"] = str(d)
    return d


@pytest.fixture(scope="session")
def mds_cohort(data_dir: Path):  # type: ignore[no-untyped-def]
    """The IWG-PM MDS cohort as the product loads it (analysis schema, canonical dtypes)."""
    from fedsynth.cohort.datasets import load_cohort

    return load_cohort("mds-iwgpm", data_dir)


@pytest.fixture(scope="session")
def mds_partition(mds_cohort):  # type: ignore[no-untyped-def]
    """The reference 3-site (60/30/10) best-case partition of the MDS cohort, seed 0."""
    from fedsynth.cohort.partition import make_partition

    return make_partition(mds_cohort.data, mds_cohort.schema, proportions=(0.6, 0.3, 0.1), random_state=0)
