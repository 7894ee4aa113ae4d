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


def test_a_coordinator_asking_for_a_split_over_more_sites_than_the_threshold_is_refused_at_collect(
    mds_partition, monkeypatch
) -> None:
    # Setup: the former calibration (each of 3 sites adds sigma^2 / 3) in a sum whose threshold is 2: had the
    # sites followed it, a sum over the 2 survivors would carry 2/3 sigma^2 (a curious coordinator's gain)
    # Run / Assert: every site refuses to mask its vector, naming the check; nothing is unmasked
    with pytest.raises(FedsynthError, match="only 0 sites answered collect"):
        _noise_of_sum(mds_partition, monkeypatch, min_sites_in_request=3, min_sites_of_sum=0, seed=12)


def test_a_site_refuses_a_noise_split_larger_than_its_sessions_threshold(mds_partition) -> None:
    # Setup: a secure sum of 3 sites with threshold 2, driven by hand so that each collect reply is seen
    schema = mds_partition.schema.select(SMALL)
    sites = [SiteRuntime(s.name, s.data, schema, seed=i) for i, s in enumerate(mds_partition.sites)]
    grid = InProcessGrid(sites, keep_messages=True)
    labels = {c: list(schema[c].categories or ("0", "1")) for c in schema.model_columns if not schema[c].is_numeric}
    release = Release("domain", Z, len(schema.model_columns))

    def run(min_sites_in_request: int) -> list[Message]:
        request = {"labels": records.encode_payload(labels),
                   **secure_domain.dp_request(release, "run-x", "run-x", min_sites_in_request)}
        grid.received.clear()
        try:
            ss.secure_sum(grid, grid.get_node_ids(), request, source="domain.histograms", modulus_bits=32, threshold=2)
        except FedsynthError:
            pass
        return [m for m in grid.received if m.metadata.message_type == ss.COLLECT]

    # Run
    over, within = run(3), run(2)
    # Assert: asked for sigma^2/3 with threshold 2, each site refuses with the reason and no value; at the
    # threshold each masks its vector
    assert len(over) == 3 and all(m.has_error() for m in over)
    reason = over[0].error.reason
    assert reason.startswith("DisclosureRefused: refused: dp_min_sites is over the secure sum's threshold")
    assert "nothing was released" in reason and "Ask for dp_min_sites at most the threshold" in reason
    assert len(within) == 3 and not any(m.has_error() for m in within)


def test_a_masked_vectors_noise_cannot_be_drawn_without_the_collect_stages_check(mds_partition) -> None:
    # Setup: the domain's and the BN's vector sources called directly with a private request, as a coordinator's
    # request (even one naming the verified key itself) reaches them only through the collect stage
    from fedsynth.strategies import two_step_bn
    from fedsynth.strategies.secagg_protocol import VERIFIED_NOISE_SHARES, verified_noise_request

    schema = mds_partition.schema.select(SMALL)
    site = SiteRuntime("site-1", mds_partition.sites[0].data, schema)
    labels = {c: list(schema[c].categories or ("0", "1")) for c in schema.model_columns if not schema[c].is_numeric}
    request = {"labels": records.encode_payload(labels),
               **secure_domain.dp_request(Release("domain", Z, len(schema.model_columns)), "r", "r", 5)}
    # Run / Assert: no vector source draws masked noise from an unchecked request
    with pytest.raises(FedsynthError, match="only at the collect stage"):
        secure_domain.histogram_vector(request, site)
    with pytest.raises(FedsynthError, match="only at the collect stage"):
        two_step_bn._noisy_tables(request, site, {}, secure_aggregation=True)
    # ... and a coordinator cannot plant the verified key: the check replaces it with what it verified, or refuses
    planted = {**request, "dp_min_sites": 2, VERIFIED_NOISE_SHARES: 9}
    assert verified_noise_request(planted, threshold=2, n_sites=3)[VERIFIED_NOISE_SHARES] == 2
    with pytest.raises(FedsynthError, match="dp_min_sites is over the secure sum's threshold"):
        verified_noise_request({**request, VERIFIED_NOISE_SHARES: 1}, threshold=2, n_sites=3)
    # ... while a request without noise passes unchanged (exact sums carry no split)
    assert verified_noise_request({"labels": "{}"}, threshold=2, n_sites=3) == {"labels": "{}"}


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
