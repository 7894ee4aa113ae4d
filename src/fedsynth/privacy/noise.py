"""The distributed Gaussian noise of a count release: each site's share of σ, and integer noisy counts.

One mechanism for every count a site releases under a budget (the two-step BN's count tables, the shared
domain's histograms, the hello's row count): the released *sum over sites* must carry Gaussian noise of standard
deviation σ = noise multiplier × L2 sensitivity. Trust model (DESIGN.md §6): each site draws its noise from its
own OS entropy (a seed the coordinator knew would let it subtract the noise). Under secure aggregation the
coordinator sees only the sum, so the sites split σ² between them; in clear each site's own vector is seen alone,
so each adds the full σ² (the sum then carries n_sites·σ², accounted as σ²: conservative). The site chooses its
share from the path it answers on; on the masked path the split the message asks for (``dp_min_sites``) is used
only after the site checked it against its own secure-sum session: at most the session's threshold, the fewest
sites a sum can be unmasked with (:func:`fedsynth.strategies.secagg_protocol.verified_noise_request`).

Dropouts. A secure sum is recovered without a site that drops after sharing its keys (SecAgg+: its pairwise masks
are rebuilt from the survivors' Shamir shares), but that site's *noise* is not in the sum. Had each of n sites
added σ²/n, a sum over m < n survivors would carry only σ²·m/n, less than accounted. So each site adds
σ²/:func:`noise_shares`: the variance split over the fewest sites the sum may finish with (the run's
``min_sites``, at most the sites asked); the secure sum is then held to at least that many sites
(:func:`fedsynth.strategies.secure_sum.secure_sum`'s ``min_sites``), and any sum it returns carries at least
σ² — exactly σ² when only ``min_sites`` remain, more otherwise (accounted as σ²: conservative). The cost is
noise: with every site present the sum carries σ²·n_sites/min_sites.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def noise_shares(n_sites: int, min_sites: int) -> int:
    """Over how many sites a secure sum's noise variance is split: the fewest sites the sum may finish with.

    Parameters
    ----------
    n_sites : int
        Sites asked to take part in the sum.
    min_sites : int
        The run's ``min_sites`` (a sum over fewer sites fails rather than release).

    Returns
    -------
    int
        ``min(min_sites, n_sites)``, at least 1.
    """
    return max(1, min(int(min_sites), int(n_sites)))


def noise_calibration(n_sites: int, min_sites: int, *, secure_aggregation: bool) -> dict[str, object]:
    """What the manifest states of a run's distributed noise: the path, the sites, and over how many sites each
    site's share of σ² was split (:func:`noise_shares`; 1 in clear, where each site adds the full σ²)."""
    shares = noise_shares(n_sites, min_sites) if secure_aggregation else 1
    return {"secure_aggregation": bool(secure_aggregation), "sites": int(n_sites), "min_sites": int(min_sites),
            "site_variance_share": f"1/{shares}",
            "rule": ("each site adds sigma^2/min_sites and a secure sum over fewer than min_sites sites fails, so any "
                     "released sum carries at least sigma^2 (also after a dropout)") if secure_aggregation else
                    "each site adds sigma^2 (its vector is seen alone)"}


def site_noise_std(noise_std: float, n_shares: int, *, secure_aggregation: bool) -> float:
    """Standard deviation of the Gaussian noise one site adds to each cell it releases.

    Parameters
    ----------
    noise_std : float
        σ the released sum must carry (noise multiplier × L2 sensitivity).
    n_shares : int
        :func:`noise_shares`: the fewest sites a secure sum over them may finish with.
    secure_aggregation : bool
        Whether the server sees only the sum: then each site adds σ²/n_shares (any sum over at least
        ``n_shares`` sites carries at least σ²); otherwise each site adds σ², so that its own vector, seen in
        clear, carries the guarantee alone.

    Returns
    -------
    float
        ``σ / sqrt(n_shares)`` or ``σ``.
    """
    return noise_std / float(np.sqrt(max(int(n_shares), 1))) if secure_aggregation else noise_std


def add_count_noise(
    tables: Mapping[str, np.ndarray], std: float, *, random_state: np.random.Generator | int | None
) -> dict[str, np.ndarray]:
    """Each table plus i.i.d. Gaussian noise of standard deviation ``std``, rounded to integers.

    Rounding is post-processing of the Gaussian mechanism (it costs no privacy); negative cells are kept, so
    that sums over sites stay unbiased (the server clips the sum at 0). Shapes are unchanged; ``int64`` out.
    """
    rng = np.random.default_rng(random_state)
    return {k: np.rint(np.asarray(a, dtype=np.float64) + rng.normal(0.0, std, size=np.shape(a))).astype(np.int64)
            for k, a in tables.items()}
