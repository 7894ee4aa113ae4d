"""The distributed Gaussian noise of a count release: each site's share of σ, and integer noisy counts.

One mechanism for every count a site releases under a budget (the two-step BN's count tables, the shared
domain's histograms, the hello's row count): the released *sum over sites* must carry Gaussian noise of standard
deviation σ = noise multiplier × L2 sensitivity. Trust model (DESIGN.md §6): each site draws its noise from its
own OS entropy (a seed the coordinator knew would let it subtract the noise). Under secure aggregation the
coordinator sees only the sum, so each site adds σ²/n_sites and the sum carries σ²; in clear each site's own
vector is seen alone, so each adds the full σ² (the sum then carries n_sites·σ², accounted as σ²: conservative).
The site chooses its share from the path it answers on, never from what the message says.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def site_noise_std(noise_std: float, n_sites: int, *, secure_aggregation: bool) -> float:
    """Standard deviation of the Gaussian noise one site adds to each cell it releases.

    Parameters
    ----------
    noise_std : float
        σ the released sum must carry (noise multiplier × L2 sensitivity).
    n_sites : int
        Sites whose vectors are summed.
    secure_aggregation : bool
        Whether the server sees only the sum: then each site adds σ²/n_sites (the sum carries σ²); otherwise
        each site adds σ², so that its own vector, seen in clear, carries the guarantee alone.

    Returns
    -------
    float
        ``σ / sqrt(n_sites)`` or ``σ``.
    """
    return noise_std / float(np.sqrt(n_sites)) if secure_aggregation else noise_std


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
