"""A latent-mixture generator whose sampled durations are calibrated within prognostic strata (VAE-BGM's base).

The factors are :mod:`fedsynth.generators.survival_calibration`'s, fitted after training on the generator's own
draws against events and person-time per stratum level summed over sites (:meth:`survival_count_statistics`). One
set is fitted on unconditioned rows and rows drawn under each level (as control arms are drawn) and serves every
draw; with ``calibration_unconditioned`` a second set, fitted on the unconditioned rows alone, serves the draws made
without a condition (a run's snapshots, exports), while draws under a condition keep the first. The two draws differ
(conditional draws follow the real label counts per latent component,
:mod:`~fedsynth.generators.component_conditioning`), so one set fitted on their mix serves neither exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.errors import FedsynthError
from fedsynth.generators.component_conditioning import ComponentConditionedGenerator
from fedsynth.generators.survival_calibration import SurvivalCalibration, fit_survival_calibration
from fedsynth.generators.survival_strata import calibration_strata, endpoint_edges, survival_counts

log = logging.getLogger(__name__)


class SurvivalCalibratedGenerator(ComponentConditionedGenerator):
    """A :class:`ComponentConditionedGenerator` whose sampled durations are multiplied by per-level factors (module
    docstring); ``_finish`` applies the set that serves the draw.

    Attributes
    ----------
    survival_calibration_ : SurvivalCalibration or None
        The factors of every draw (of draws under a condition when ``unconditioned_calibration_`` serves the rest).
    unconditioned_calibration_ : SurvivalCalibration or None
        With ``calibration_unconditioned``, the factors of unconditioned draws.
    survival_counts_ : dict of float64 arrays or None
        The summed counts the factors were fitted on (in memory only, for refitting; not saved).
    """

    survival_calibration_: SurvivalCalibration | None = None
    unconditioned_calibration_: SurvivalCalibration | None = None
    survival_counts_: dict[str, np.ndarray] | None = None

    def survival_count_statistics(self, data: pd.DataFrame, *, min_count: int = 1) -> dict[str, np.ndarray]:
        """Site side: events, person-time and row counts per level of the calibration strata
        (:func:`~fedsynth.generators.survival_strata.survival_counts`); sums over sites are the pooled ones.

        Parameters
        ----------
        data : DataFrame
            The site's training rows (conformed to the shared domain).
        min_count : int, default 1
            The site's smallest released count in clear (levels under it withheld); 1 under secure aggregation.
        """
        if self.domain is None:
            raise FedsynthError(f"{type(self).__name__} has no domain yet; it cannot count survival")
        return survival_counts(data, self.schema, calibration_strata(self.schema, self.domain),
                               endpoint_edges(self.schema, self.domain), min_count=min_count)

    def fit_survival_calibration(self, counts: Mapping[str, np.ndarray], *, min_count: int = 5,
                                 conditioned: bool = True, endpoints: str | None = None, target: str | None = None,
                                 rows: int | None = None, level_rows: int | None = None, **options: Any) -> None:
        """Fit the per-level duration factors against the real ``counts`` (summed :meth:`survival_count_statistics`)
        on ``rows`` (default ``calibration_rows``) unconditioned rows of the current model (drawn with
        ``random_state``) and ``level_rows`` (default ``calibration_level_rows``) rows drawn under each level.

        ``min_count`` is the sites' smallest released count: a level with fewer real rows gets no factor. Sampling
        applies the factors while ``survival_calibration`` is on. ``options`` go to
        :func:`~fedsynth.generators.survival_calibration.fit_survival_calibration` (``min_rows``, ``target``...).
        ``conditioned=True`` (the default; a fitted model only, so a centralized fit reads the unconditioned rows)
        reads each level's median on the rows drawn under that level as a condition (as control arms are drawn)
        besides the unconditioned rows (chosen on seeds 7, 8 and 9: ``benchmarks/results/arms.json``,
        ``selection_seeds_7_8``). ``endpoints`` (default: the ``calibration_endpoints`` parameter) says which endpoints
        a factor moves. ``target`` (default: the ``survival_target``
        parameter) is what each level matches; the tuned FedAvg setting (``configs/fedavg_vae_bgm.yaml``) is
        ``"hazard_ratio"`` on 200,000 rows and 5,000 per level, with ``rare_level_sampling`` (``selection_session13``).
        With ``calibration_unconditioned`` (and rows drawn under levels) unconditioned draws take a second set of
        factors, fitted on the unconditioned rows alone (``unconditioned_calibration_``) with the same options except
        its genes' share, ``calibration_unconditioned_gene_min_freq`` (an option ``gene_min_freq`` sets the first
        set's only). The first set, then serving draws under a condition only, takes ``calibration_conditioned_target``
        as its target (unless ``target`` is given, which sets both), ``calibration_conditioned_endpoints`` as its
        endpoints (unless ``endpoints`` is given) and, with ``calibration_conditioned_rows_only``,
        reads each level on the rows drawn under it alone (``read_unconditioned=False``)."""
        assert self.domain is not None
        self.survival_calibration_ = self.unconditioned_calibration_ = None
        self.survival_counts_ = {k: np.asarray(v, dtype=np.float64).copy() for k, v in counts.items()}
        # An unconditioned draw, as sample() makes it (fit calls this before the model counts as fitted).
        n_rows = self.params.calibration_rows if rows is None else int(rows)
        n_level = self.params.calibration_level_rows if level_rows is None else int(level_rows)
        unconditioned = self._finish(self._sample(n_rows, rng=np.random.default_rng(self.params.random_state)))
        strata = calibration_strata(self.schema, self.domain)
        synthetic, drawn_for = unconditioned, None
        if conditioned and self.fitted_:
            parts, tags = self.draws_under_levels(strata, n_level, self.params.random_state)
            synthetic = pd.concat([unconditioned, *parts], ignore_index=True)
            drawn_for = np.concatenate([np.full(len(unconditioned), "", dtype=object),
                                        *[np.full(len(p), t, dtype=object) for p, t in zip(parts, tags)]])
        kwargs: dict[str, Any] = {
            "min_count": min_count, "endpoints": endpoints or self.params.calibration_endpoints, "target": target or self.params.survival_target,
            "keep_ties": self.params.time_ties, "capped_intercepts": self.params.calibration_capped_intercepts,
            "keep_order": self.params.calibration_keep_order,
            **options}
        apart = drawn_for is not None and self.params.calibration_unconditioned
        # Draws under a condition: their own target and reading when unconditioned draws have a set of their own.
        own_target = self.params.calibration_conditioned_target if apart and target is None else None
        own_endpoints = self.params.calibration_conditioned_endpoints if apart and endpoints is None else None
        conditioned_kwargs = {**kwargs, **({"target": own_target} if own_target else {}),
                              **({"endpoints": own_endpoints} if own_endpoints else {}),
                              **({"read_unconditioned": False}
                                 if apart and self.params.calibration_conditioned_rows_only else {})}
        self.survival_calibration_ = fit_survival_calibration(
            synthetic, counts, self.schema, self.domain, strata, drawn_for=drawn_for, **conditioned_kwargs)
        if apart:
            # Unconditioned draws get factors fitted on the unconditioned rows alone (calibration_unconditioned).
            self.unconditioned_calibration_ = fit_survival_calibration(
                unconditioned, counts, self.schema, self.domain, strata,
                **{**kwargs, "gene_min_freq": self.params.calibration_unconditioned_gene_min_freq})
        cal = self.survival_calibration_
        log.info("%s survival calibration: %d strata, %d sweeps, largest log error %.3g", type(self).__name__,
                 len(cal.strata), cal.sweeps, cal.max_log_error)

    def survival_notes(self, *, under_condition: bool | None = None) -> list[str]:
        """The survival calibration's limits while it is applied (:meth:`SurvivalCalibration.notes`), else none; with
        a set of its own for unconditioned draws, that set's for those draws (both, each said whose, for None)."""
        if not self.params.survival_calibration or self.survival_calibration_ is None:
            return []
        own = self.unconditioned_set()
        if own is None or under_condition is True:
            return self.survival_calibration_.notes()
        if under_condition is False:
            return own.notes()
        return [*(f"Draws under a condition (control arms): {n}" for n in self.survival_calibration_.notes()),
                *(f"Draws without a condition: {n}" for n in own.notes())]

    def unconditioned_set(self) -> SurvivalCalibration | None:
        """The factors of unconditioned draws when they have their own (``calibration_unconditioned``), else None."""
        return self.unconditioned_calibration_ if self.params.calibration_unconditioned else None

    def _finish(self, raw: pd.DataFrame) -> pd.DataFrame:
        out = super()._finish(raw)
        cal = self.survival_calibration_
        if self.unconditioned_set() is not None and not self._under_condition_:
            cal = self.unconditioned_set()
        if cal is not None and self.params.survival_calibration:
            assert self.domain is not None
            # Each endpoint by its factor, then clipped and capped: the endpoint rules _finish enforced hold.
            out = cal.apply(out, self.schema, self.domain)
        return out
