"""A Bayesian Gaussian mixture over latent codes, fitted centrally (scikit-learn) or by federated variational EM.

The federated EM's E-step runs at each site on codes that never leave it (only per-component sufficient
statistics do); its M-step runs on the server on the summed statistics. Protocol (as a federation calls it)::

    # round 0, every site                                   # server
    s = mixture_init_statistics(site_codes)                 params = init_latent_mixture([s1, s2, ...],
                                                                                         n_components=K)
    # each EM iteration, every site
    s = mixture_e_step_statistics(site_codes, params)       params = mixture_m_step([s1, s2, ...], params)

:func:`fit_latent_mixture_federated` is that loop as one call, taking a callable that performs the site E-steps
(in simulation a list comprehension, in Flower a ``grid.send_and_receive``).

The mixture is variational with a Dirichlet-process weight prior (scikit-learn's defaults otherwise), so surplus
components get negligible weight. The federated EM starts from component means drawn from the pooled Gaussian of
the codes (only moments leave sites), not k-means, so its optimum can differ from scikit-learn's run on the same
codes; from the same start it equals the pooled run exactly.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import betaln, digamma, gammaln, logsumexp

from fedsynth.errors import FedsynthError, Problem, ValidationError

log = logging.getLogger(__name__)

#: A latent mixture: name -> float64 array (see :func:`init_latent_mixture` for the keys).
MixtureParams = dict[str, np.ndarray]

# The variational updates follow scikit-learn's BayesianGaussianMixture (full covariances, Dirichlet-process or
# Dirichlet-distribution weight prior, Normal-Wishart prior on means and precisions; Bishop, PRML, ch. 10.2).
# Every update needs the data only through N_k, sum_k r x and sum_k r x x^T, so summing site statistics gives
# exactly the pooled update.

_MIXTURE_SAMPLING_KEYS = ("weights", "means", "covariances")


def mixture_from_sklearn(bgm: Any) -> MixtureParams:
    """The parameters of a fitted ``sklearn.mixture.BayesianGaussianMixture`` (full covariances) as a dict."""
    if bgm.covariance_type != "full":
        raise FedsynthError("only covariance_type='full' mixtures can be converted")
    dp = bgm.weight_concentration_prior_type == "dirichlet_process"
    wc = bgm.weight_concentration_
    a, b = (np.asarray(wc[0]), np.asarray(wc[1])) if dp else (np.asarray(wc), np.zeros_like(np.asarray(wc)))
    return {
        "weights": np.asarray(bgm.weights_, dtype=np.float64),
        "means": np.asarray(bgm.means_, dtype=np.float64),
        "covariances": np.asarray(bgm.covariances_, dtype=np.float64),
        "weight_concentration_a": a.astype(np.float64),
        "weight_concentration_b": b.astype(np.float64),
        "mean_precision": np.asarray(bgm.mean_precision_, dtype=np.float64),
        "degrees_of_freedom": np.asarray(bgm.degrees_of_freedom_, dtype=np.float64),
        "weight_concentration_prior": np.asarray(float(bgm.weight_concentration_prior_)),
        "dirichlet_process": np.asarray(1.0 if dp else 0.0),
        "mean_prior": np.asarray(bgm.mean_prior_, dtype=np.float64),
        "mean_precision_prior": np.asarray(float(bgm.mean_precision_prior_)),
        "degrees_of_freedom_prior": np.asarray(float(bgm.degrees_of_freedom_prior_)),
        "covariance_prior": np.asarray(bgm.covariance_prior_, dtype=np.float64),
        "reg_covar": np.asarray(float(bgm.reg_covar)),
        "lower_bound": np.asarray(float(bgm.lower_bound_)),
    }


def fit_latent_mixture(
    codes: np.ndarray,
    *,
    n_components: int,
    weight_concentration_prior: float | None = None,
    max_iter: int = 200,
    random_state: int | None = 0,
) -> MixtureParams | None:
    """The centralised fit: scikit-learn's ``BayesianGaussianMixture`` (full covariances, Dirichlet-process prior)
    on ``codes`` (n, d), as a dict (see :func:`mixture_from_sklearn`); ``None`` with fewer than two codes.

    ``n_components`` is capped at ``n - 1``. An unconverged mixture still samples sensibly: the warning is
    silenced and the number of iterations logged.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture

    if len(codes) < 2:
        return None
    bgm = BayesianGaussianMixture(
        n_components=int(min(n_components, max(len(codes) - 1, 1))),
        covariance_type="full",
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=weight_concentration_prior,
        max_iter=int(max_iter),
        n_init=1,
        random_state=random_state,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        bgm.fit(codes)
    log.debug("latent mixture: %d iterations, converged=%s", bgm.n_iter_, bgm.converged_)
    return mixture_from_sklearn(bgm)


def check_mixture(params: Mapping[str, np.ndarray], latent_dim: int) -> MixtureParams:
    """A float64 copy of ``params`` after checking the sampling keys' shapes and values (one error, every problem)."""
    problems: list[Problem] = []
    for k in _MIXTURE_SAMPLING_KEYS:
        if k not in params:
            problems.append(Problem(f"mixture key {k!r}", "is missing", "weights, means, covariances"))
    if problems:
        raise ValidationError("The latent mixture", problems)
    w = np.asarray(params["weights"], dtype=np.float64)
    m = np.asarray(params["means"], dtype=np.float64)
    c = np.asarray(params["covariances"], dtype=np.float64)
    n_comp = len(w)
    if w.ndim != 1 or n_comp < 1 or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        problems.append(
            Problem("mixture 'weights'", f"has shape {w.shape} or invalid values", "K >= 1 non-negative weights")
        )
    if m.shape != (n_comp, latent_dim):
        problems.append(Problem("mixture 'means'", f"has shape {m.shape}", f"shape ({n_comp}, {latent_dim})"))
    if c.shape != (n_comp, latent_dim, latent_dim):
        problems.append(
            Problem("mixture 'covariances'", f"has shape {c.shape}", f"shape ({n_comp}, {latent_dim}, {latent_dim})")
        )
    elif not all(_is_positive_definite(ci) for ci in c):
        problems.append(
            Problem("mixture 'covariances'", "are not all positive definite", "symmetric positive definite")
        )
    if problems:
        raise ValidationError("The latent mixture", problems)
    return {key: np.asarray(v, dtype=np.float64).copy() for key, v in params.items()}


def _is_positive_definite(c: np.ndarray) -> bool:
    try:
        np.linalg.cholesky(c)
    except np.linalg.LinAlgError:
        return False
    return bool(np.allclose(c, c.T))


def sample_mixture(
    params: Mapping[str, np.ndarray] | None, n_samples: int, latent_dim: int, rng: np.random.Generator
) -> np.ndarray:
    """Draw latent codes from a mixture (``None``: the standard normal prior)."""
    if params is None:
        return rng.standard_normal((n_samples, latent_dim))
    w = np.asarray(params["weights"], dtype=np.float64)
    w = w / w.sum()
    comp = rng.choice(len(w), size=n_samples, p=w)
    eps = rng.standard_normal((n_samples, latent_dim))
    means = np.asarray(params["means"])
    chols = np.linalg.cholesky(np.asarray(params["covariances"]))
    return np.asarray(means[comp] + np.einsum("nij,nj->ni", chols[comp], eps))


def mixture_log_likelihood(codes: np.ndarray, params: Mapping[str, np.ndarray]) -> float:
    """Mean log-density of ``codes`` under the point-estimate mixture (weights, means, covariances).

    Comparable to ``BayesianGaussianMixture.score``.
    """
    x = np.asarray(codes, dtype=np.float64)
    w = np.asarray(params["weights"], dtype=np.float64)
    prec_chol = _precision_cholesky(np.asarray(params["covariances"], dtype=np.float64))
    lg = _log_gaussian(x, np.asarray(params["means"], dtype=np.float64), prec_chol)
    with np.errstate(divide="ignore"):
        return float(logsumexp(lg + np.log(w), axis=1).mean())


def mixture_init_statistics(codes: np.ndarray) -> dict[str, np.ndarray]:
    """Site statistics for the mixture's priors and initialisation: ``n``, ``sum``, ``sum_outer`` (float64)."""
    x = np.asarray(codes, dtype=np.float64)
    return {"n": np.asarray(float(len(x))), "sum": x.sum(axis=0), "sum_outer": x.T @ x}


def init_latent_mixture(
    statistics: Sequence[Mapping[str, np.ndarray]],
    *,
    n_components: int,
    weight_concentration_prior: float | None = None,
    weight_concentration_prior_type: str = "dirichlet_process",
    reg_covar: float = 1e-6,
    random_state: int | None = 0,
) -> MixtureParams:
    """Server side: the priors and a starting point of the federated variational EM from summed site moments.

    The priors are scikit-learn's defaults computed on the pooled codes (mean prior = pooled mean, covariance
    prior = pooled covariance, ``degrees_of_freedom_prior = d``, ``mean_precision_prior = 1``,
    weight concentration = ``1 / n_components``), obtained exactly from the sums. The starting point places
    the K component means at draws from the pooled Gaussian (seeded by ``random_state``) with equal weights
    and the pooled covariance; no site code is needed (k-means, scikit-learn's initialisation, would need them).

    Returns
    -------
    dict of float64 arrays
        Sampling parameters ``weights`` (K,), ``means`` (K, d), ``covariances`` (K, d, d); variational
        parameters ``weight_concentration_a``/``_b`` (K,), ``mean_precision`` (K,), ``degrees_of_freedom`` (K,);
        priors ``weight_concentration_prior``, ``dirichlet_process`` (1.0 or 0.0), ``mean_prior`` (d,),
        ``mean_precision_prior``, ``degrees_of_freedom_prior``, ``covariance_prior`` (d, d), ``reg_covar``;
        and ``lower_bound`` (-inf before the first M-step).
    """
    problems: list[Problem] = []
    if not (isinstance(n_components, (int, np.integer)) and n_components >= 1):
        problems.append(
            Problem(
                "The 'n_components' parameter of init_latent_mixture must be an int in the range [1, inf)",
                f"Got {n_components!r} instead.",
            )
        )
    if weight_concentration_prior_type not in ("dirichlet_process", "dirichlet_distribution"):
        problems.append(
            Problem(
                "The 'weight_concentration_prior_type' parameter of init_latent_mixture must be a str "
                "among {'dirichlet_process', 'dirichlet_distribution'}",
                f"Got {weight_concentration_prior_type!r} instead.",
            )
        )
    if not statistics:
        problems.append(Problem("statistics", "is empty", "one dict from init_mixture_statistics per site"))
    if problems:
        raise ValidationError("init_latent_mixture", problems)
    n = float(sum(float(s["n"]) for s in statistics))
    s1 = np.sum([np.asarray(s["sum"], dtype=np.float64) for s in statistics], axis=0)
    s2 = np.sum([np.asarray(s["sum_outer"], dtype=np.float64) for s in statistics], axis=0)
    if n < 2:
        raise ValidationError(
            "init_latent_mixture", [Problem("statistics", "hold fewer than 2 rows in all", "at least 2")]
        )
    d = len(s1)
    mean = s1 / n
    cov = (s2 - n * np.outer(mean, mean)) / (n - 1)
    cov = 0.5 * (cov + cov.T)
    k = int(n_components)
    rng = np.random.default_rng(random_state)
    chol = np.linalg.cholesky(cov + reg_covar * np.eye(d))
    xk = mean + rng.standard_normal((k, d)) @ chol.T
    params: MixtureParams = {
        "weight_concentration_prior": np.asarray(
            1.0 / k if weight_concentration_prior is None else float(weight_concentration_prior)
        ),
        "dirichlet_process": np.asarray(1.0 if weight_concentration_prior_type == "dirichlet_process" else 0.0),
        "mean_prior": mean,
        "mean_precision_prior": np.asarray(1.0),
        "degrees_of_freedom_prior": np.asarray(float(d)),
        "covariance_prior": cov,
        "reg_covar": np.asarray(float(reg_covar)),
    }
    nk = np.full(k, n / k)
    sk = np.broadcast_to(cov + reg_covar * np.eye(d), (k, d, d)).copy()
    params.update(_variational_update(params, nk, xk, sk))
    params["lower_bound"] = np.asarray(-np.inf)
    return params


def mixture_e_step_statistics(codes: np.ndarray, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Site side of one variational EM iteration on ``codes`` (which never leave the site).

    Returns ``n``, ``nk`` (K,), ``sum_x`` (K, d), ``sum_xx`` (K, d, d), ``log_prob_norm`` and ``resp_entropy``
    (sums over the site's rows), all float64.
    """
    x = np.asarray(codes, dtype=np.float64)
    log_resp, log_prob_norm = _e_step(x, params)
    r = np.exp(log_resp)
    with np.errstate(invalid="ignore"):
        ent = -np.nansum(r * log_resp)
    return {
        "n": np.asarray(float(len(x))),
        "nk": r.sum(axis=0),
        "sum_x": r.T @ x,
        "sum_xx": np.stack([(x * r[:, k, None]).T @ x for k in range(r.shape[1])]),
        "log_prob_norm": np.asarray(float(log_prob_norm.sum())),
        "resp_entropy": np.asarray(float(ent)),
    }


def mixture_m_step(statistics: Sequence[Mapping[str, np.ndarray]], params: Mapping[str, np.ndarray]) -> MixtureParams:
    """Server side of one variational EM iteration: sum the sites' E-step statistics and update the mixture.

    Equal (up to floating-point summation order) to the same update on the pooled codes. The returned dict
    has the same keys as :func:`init_latent_mixture`'s, with ``lower_bound`` set to the evidence lower bound
    (up to constants, as scikit-learn computes it).
    """
    if not statistics:
        raise ValidationError("mixture_m_step", [Problem("statistics", "is empty", "one dict per site")])
    nk = np.sum([np.asarray(s["nk"], dtype=np.float64) for s in statistics], axis=0) + 10 * np.finfo(np.float64).eps
    sx = np.sum([np.asarray(s["sum_x"], dtype=np.float64) for s in statistics], axis=0)
    sxx = np.sum([np.asarray(s["sum_xx"], dtype=np.float64) for s in statistics], axis=0)
    entropy = float(sum(float(s["resp_entropy"]) for s in statistics))
    d = sx.shape[1]
    xk = sx / nk[:, None]
    sk = sxx / nk[:, None, None] - np.einsum("ki,kj->kij", xk, xk) + float(params["reg_covar"]) * np.eye(d)
    sk = 0.5 * (sk + np.transpose(sk, (0, 2, 1)))
    out: MixtureParams = {
        k: np.asarray(params[k]).copy()
        for k in (
            "weight_concentration_prior",
            "dirichlet_process",
            "mean_prior",
            "mean_precision_prior",
            "degrees_of_freedom_prior",
            "covariance_prior",
            "reg_covar",
        )
    }
    out.update(_variational_update(out, nk, xk, sk))
    out["lower_bound"] = np.asarray(_lower_bound(out, entropy))
    return out


def fit_latent_mixture_federated(
    e_step: Callable[[MixtureParams], Sequence[Mapping[str, np.ndarray]]],
    init_params: MixtureParams,
    *,
    max_iter: int = 200,
    tol: float = 1e-3,
) -> tuple[MixtureParams, int, bool]:
    """Run the federated variational EM to convergence (scikit-learn's criterion: lower-bound change < tol).

    Parameters
    ----------
    e_step : callable
        ``e_step(params) -> [site statistics]``: asks every site for :func:`mixture_e_step_statistics` of its codes
        under the current global mixture.
    init_params : dict
        From :func:`init_latent_mixture`.
    max_iter, tol
        Iteration cap and convergence tolerance.

    Returns
    -------
    (params, n_iter, converged)
    """
    params = dict(init_params)
    lower = -np.inf
    for it in range(1, int(max_iter) + 1):
        params = mixture_m_step(list(e_step(params)), params)
        new = float(params["lower_bound"])
        if abs(new - lower) < tol:
            return params, it, True
        lower = new
    return params, int(max_iter), False


# -- variational updates (numpy) ---------------------------------------------------------------------


def _variational_update(
    priors: Mapping[str, np.ndarray], nk: np.ndarray, xk: np.ndarray, sk: np.ndarray
) -> MixtureParams:
    """scikit-learn's _estimate_weights, _estimate_means and _estimate_wishart_full, plus weights_."""
    wcp = float(priors["weight_concentration_prior"])
    dp = float(priors["dirichlet_process"]) > 0.5
    m0 = np.asarray(priors["mean_prior"], dtype=np.float64)
    beta0 = float(priors["mean_precision_prior"])
    nu0 = float(priors["degrees_of_freedom_prior"])
    w0 = np.asarray(priors["covariance_prior"], dtype=np.float64)
    if dp:
        a = 1.0 + nk
        b = wcp + np.hstack((np.cumsum(nk[::-1])[-2::-1], 0))
        tmp = b / (a + b)
        weights = a / (a + b) * np.hstack((1, np.cumprod(tmp[:-1])))
    else:
        a = wcp + nk
        b = np.zeros_like(a)
        weights = a.copy()
    weights = weights / weights.sum()
    mean_precision = beta0 + nk
    means = (beta0 * m0 + nk[:, None] * xk) / mean_precision[:, None]
    dof = nu0 + nk
    diff = xk - m0
    cov = (
        w0[None]
        + nk[:, None, None] * sk
        + (nk * beta0 / mean_precision)[:, None, None] * np.einsum("ki,kj->kij", diff, diff)
    )
    cov = cov / dof[:, None, None]
    return {
        "weights": weights,
        "means": means,
        "covariances": cov,
        "weight_concentration_a": a,
        "weight_concentration_b": b,
        "mean_precision": mean_precision,
        "degrees_of_freedom": dof,
    }


def _precision_cholesky(cov: np.ndarray) -> np.ndarray:
    """Cholesky factors of the precisions (scikit-learn's ``precisions_cholesky_`` for full covariances)."""
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise FedsynthError(
            "a latent mixture covariance is not positive definite; raise reg_covar or lower n_components"
        ) from None
    # Batched inverse of the (lower-triangular) factors; scipy's per-matrix solve is far slower here.
    return np.transpose(np.linalg.inv(chol), (0, 2, 1))


def _log_gaussian(x: np.ndarray, means: np.ndarray, prec_chol: np.ndarray) -> np.ndarray:
    n, d = x.shape
    log_det = np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)
    out = np.empty((n, len(means)))
    for k in range(len(means)):
        y = x @ prec_chol[k] - means[k] @ prec_chol[k]
        out[:, k] = np.sum(y * y, axis=1)
    return np.asarray(-0.5 * (d * np.log(2 * np.pi) + out) + log_det)


def _expected_log_weights(params: Mapping[str, np.ndarray]) -> np.ndarray:
    a = np.asarray(params["weight_concentration_a"], dtype=np.float64)
    if float(params["dirichlet_process"]) > 0.5:
        b = np.asarray(params["weight_concentration_b"], dtype=np.float64)
        ds = digamma(a + b)
        return np.asarray(digamma(a) - ds + np.hstack((0, np.cumsum(digamma(b) - ds)[:-1])))
    return np.asarray(digamma(a) - digamma(a.sum()))


def _e_step(x: np.ndarray, params: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    d = x.shape[1]
    dof = np.asarray(params["degrees_of_freedom"], dtype=np.float64)
    prec_chol = _precision_cholesky(np.asarray(params["covariances"], dtype=np.float64))
    log_gauss = _log_gaussian(x, np.asarray(params["means"], dtype=np.float64), prec_chol) - 0.5 * d * np.log(dof)
    log_lambda = d * np.log(2.0) + np.sum(digamma(0.5 * (dof - np.arange(d)[:, None])), axis=0)
    weighted = (
        log_gauss
        + 0.5 * (log_lambda - d / np.asarray(params["mean_precision"], dtype=np.float64))
        + _expected_log_weights(params)
    )
    log_prob_norm = logsumexp(weighted, axis=1)
    return weighted - log_prob_norm[:, None], log_prob_norm


def _lower_bound(params: Mapping[str, np.ndarray], resp_entropy: float) -> float:
    d = len(np.asarray(params["mean_prior"]))
    dof = np.asarray(params["degrees_of_freedom"], dtype=np.float64)
    prec_chol = _precision_cholesky(np.asarray(params["covariances"], dtype=np.float64))
    log_det_chol = np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1) - 0.5 * d * np.log(dof)
    log_wishart = -(
        dof * log_det_chol + dof * 0.5 * d * np.log(2.0) + np.sum(gammaln(0.5 * (dof - np.arange(d)[:, None])), axis=0)
    )
    a = np.asarray(params["weight_concentration_a"], dtype=np.float64)
    if float(params["dirichlet_process"]) > 0.5:
        log_norm_weight = -np.sum(betaln(a, np.asarray(params["weight_concentration_b"], dtype=np.float64)))
    else:
        log_norm_weight = gammaln(a.sum()) - np.sum(gammaln(a))
    return float(
        resp_entropy
        - np.sum(log_wishart)
        - log_norm_weight
        - 0.5 * d * np.sum(np.log(np.asarray(params["mean_precision"], dtype=np.float64)))
    )
