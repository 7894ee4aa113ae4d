"""Distributed noise survives a dropout: each site's share of σ² is split over ``min_sites``, so a secure sum that
loses a site after key sharing still carries at least the accounted σ², and a sum over fewer sites fails."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest
from flwr.app import Message

from fedsynth.encoding.dp_domain import dp_counts
from fedsynth.errors import FedsynthError
from fedsynth.privacy.accounting import Release
from fedsynth.privacy.noise import noise_calibration, noise_shares, site_noise_std
from fedsynth.strategies import records, secure_domain
from fedsynth.strategies import secure_sum as ss
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.site import SiteRuntime

SMALL = ["AGE", "SEX", "HB", "PLT", "BM_BLAST", "CYTO_IPSSR", "TP53", "OS_YEARS", "OS_STATUS"]
#: The noise multiplier of the test (large against the 1/12 variance each site's rounding adds).
Z = 20.0


class _DroppingGrid(InProcessGrid):
    """An in-process grid on which some nodes stop answering from the collect stage on (after sharing keys)."""

    def __init__(self, *args: Any, drop_nodes: set[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drop_nodes = drop_nodes

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        replies = super().send_and_receive(messages, timeout=timeout)
        late = ss.STAGES.index(ss.COLLECT)
        return [r for r in replies if not (r.metadata.src_node_id in self.drop_nodes
                                           and ss.STAGES.index(r.metadata.message_type) >= late)]


def _noise_of_sum(mds_partition, monkeypatch, *, min_sites_in_request: int, min_sites_of_sum: int,  # type: ignore[no-untyped-def]
                  seed: int) -> tuple[np.ndarray, list[int]]:
    """The noise a secure sum of the sites' noisy domain vectors carries (the sum minus the survivors' exact counts),
    with the last site dropping after it shared its keys."""
    rng = np.random.default_rng(seed)
    monkeypatch.setattr(secure_domain, "noise_source", lambda: rng)
    schema = mds_partition.schema.select(SMALL)
    sites = [SiteRuntime(s.name, s.data, schema, seed=i) for i, s in enumerate(mds_partition.sites)]
    grid = _DroppingGrid(sites, drop_nodes={3})
    labels = {c: list(schema[c].categories or ("0", "1")) for c in schema.model_columns if not schema[c].is_numeric}
    release = Release("domain", Z, len(schema.model_columns))
    request = {"labels": records.encode_payload(labels),
               **secure_domain.dp_request(release, f"run-{seed}", f"run-{seed}", min_sites_in_request)}
    got = ss.secure_sum(grid, grid.get_node_ids(), request, source="domain.histograms", modulus_bits=32,
                        min_sites=min_sites_of_sum)
    exact = [dp_counts(grid.sites[n].data, schema, labels) for n in got.included]
    residual = np.concatenate([(got.arrays[k] - sum(e[k] for e in exact)).ravel() for k in exact[0]])
    return residual.astype(float), got.included


def test_a_sum_missing_a_site_that_dropped_after_sharing_still_carries_the_accounted_noise(
    mds_partition, monkeypatch
) -> None:
    # Setup: 3 sites, min_sites 2; the third site shares its keys, then never sends its masked vector
    # Run
    residual, included = _noise_of_sum(mds_partition, monkeypatch, min_sites_in_request=noise_shares(3, 2),
                                       min_sites_of_sum=noise_shares(3, 2), seed=11)
    # Assert: two sites in the sum, each with sigma^2 / 2 (plus 1/12 of rounding): the sum's variance is the
    # accounted sigma^2 within a 4-standard-error chi-square interval, and at least sigma^2 from the shares alone
    assert included == [1, 2]
    n = len(residual)
    shares_variance = len(included) * site_noise_std(Z, noise_shares(3, 2), secure_aggregation=True) ** 2
    assert shares_variance >= Z**2 * (1 - 1e-12)
    ratio = residual.var() / (shares_variance + len(included) / 12)
    assert abs(ratio - 1) < 4 * math.sqrt(2 / n)
    assert residual.var() > Z**2 * (1 - 4 * math.sqrt(2 / n))


def test_control_shares_split_over_every_site_leave_a_dropped_sum_short_of_the_accounted_noise(
    mds_partition, monkeypatch
) -> None:
    # Setup: the former calibration (each of 3 sites adds sigma^2 / 3) and a sum held only to its threshold (2)
    # Run
    residual, included = _noise_of_sum(mds_partition, monkeypatch, min_sites_in_request=3, min_sites_of_sum=0,
                                       seed=12)
    # Assert: the sum carries about 2/3 sigma^2, well under what the accountant assumed
    n = len(residual)
    assert included == [1, 2]
    assert residual.var() / (Z**2 * 2 / 3 + 2 / 12) == pytest.approx(1.0, abs=4 * math.sqrt(2 / n))
    assert residual.var() < Z**2 * (1 - 4 * math.sqrt(2 / n))


def test_a_secure_sum_calibrated_to_every_site_fails_when_one_drops(mds_partition, monkeypatch) -> None:
    # Setup / Run / Assert: min_sites 3 of 3 sites; one drops after sharing keys, so the sum would carry 2/3 sigma^2
    with pytest.raises(FedsynthError, match="only 2 sites answered collect; the noise is calibrated to at least 3"):
        _noise_of_sum(mds_partition, monkeypatch, min_sites_in_request=3, min_sites_of_sum=3, seed=13)


def test_noise_shares_are_the_fewest_sites_a_sum_may_finish_with() -> None:
    # Setup / Run / Assert: min_sites, at most the sites asked, at least 1; the site's std from it
    assert [noise_shares(n, m) for n, m in ((3, 2), (3, 3), (3, 5), (4, 1), (2, 0))] == [2, 3, 3, 1, 1]
    assert site_noise_std(6.0, 4, secure_aggregation=True) == pytest.approx(3.0)
    assert site_noise_std(6.0, 4, secure_aggregation=False) == 6.0
    stated = noise_calibration(3, 2, secure_aggregation=True)
    assert stated["site_variance_share"] == "1/2" and stated["min_sites"] == 2 and stated["sites"] == 3
    assert noise_calibration(3, 2, secure_aggregation=False)["site_variance_share"] == "1/1"
