"""Conditional draws of a latent-mixture generator (VAE-BGM): latent components weighted by P(component | condition).

The counts behind the weights are :mod:`fedsynth.generators.component_counts` (per component, label counts of
categorical columns and bin counts of numeric baseline columns, summed over sites at training). A condition is
the category sets of ``conditions`` and the equality terms of a conjunctive ``where`` (``TP53 == 0``), and with
``condition_ranges=True`` its range terms (``AGE >= 65``); every returned row still meets the whole condition
exactly, by rejection. Range terms are off by default: on the selection seeds 7 and 8 they moved arm (a) (IPSS-R
High/Very-High, TP53 unmutated, AGE >= 65) away from the real eligible patients in the stratified mode
(``benchmarks/results/arms_vae_cond.json``).

Modes (``condition_components``; chosen and measured in ``benchmarks/results/arms_vae_cond.json``):

- ``"stratified"`` (default): the returned rows are split over components by a multinomial draw from
  P(k | condition), and each component's share is filled by rejection among its own decoded rows;
- ``"proposal"``: components are drawn by P(k | condition), then rows are rejected as usual (the condition then
  counts twice: a component rich in eligible rows is both drawn more and rejected less);
- ``"off"``: the mixture weights, then rejection.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from fedsynth.cohort.schema import ColumnKind
from fedsynth.generators.base import BaseGenerator, ConditionError, Conditions
from fedsynth.generators.component_counts import (
    CountBins,
    CountColumns,
    component_condition_weights,
    component_count_statistics,
    count_bins,
    count_columns,
    where_categories,
    where_ranges,
)
from fedsynth.generators.latent_mixture import MixtureParams
from fedsynth.generators.survival_strata import CalibrationStratum
from fedsynth.generators.vae_params import VAEBGMParams


class ComponentConditionedGenerator(BaseGenerator[VAEBGMParams]):
    """A generator whose rows come from the components of a latent mixture, drawn under conditions by the
    components' counts (the base of :class:`~fedsynth.generators.vae_bgm.VAEBGMGenerator`).

    Subclasses keep the installed mixture in ``latent_mixture_`` and draw rows in ``_sample`` from it with the
    component weights ``_proposal_`` in place of the mixture's when those are set.

    Attributes
    ----------
    component_counts_ : dict of float64 arrays or None
        Column -> ``(K, n_cells + 1)`` counts for the installed mixture (labels or bins, missing last).
    """

    latent_mixture_: MixtureParams | None = None
    component_counts_: dict[str, np.ndarray] | None = None
    _proposal_: np.ndarray | None = None
    #: True while :meth:`sample` draws under a condition (``_finish`` may treat those rows apart).
    _under_condition_: bool = False

    # -- per-component counts (training) --------------------------------------------------------------
    def count_columns(self) -> CountColumns:
        """The columns whose labels are counted per latent component, with their labels (see
        :func:`~fedsynth.generators.component_counts.count_columns`)."""
        assert self.domain is not None
        return count_columns(self.schema, self.domain)

    def count_bins(self) -> CountBins:
        """The numeric columns counted per latent component on the domain's bins, with the bin edges (see
        :func:`~fedsynth.generators.component_counts.count_bins`)."""
        assert self.domain is not None
        return count_bins(self.schema, self.domain)

    @abstractmethod
    def latent_codes(self, data: pd.DataFrame) -> np.ndarray:
        """Posterior means of ``data``'s rows, shape ``(n_rows, latent_dim)`` (site side only)."""

    def component_count_statistics(
        self, data: pd.DataFrame, mixture: Mapping[str, np.ndarray], codes: np.ndarray | None = None,
        *, min_count: int = 1,
    ) -> dict[str, np.ndarray]:
        """Site side, after the last mixture fit: per component, responsibility-weighted label and bin counts.

        Parameters
        ----------
        data : DataFrame
            The site's training rows (conformed to the shared domain).
        mixture : dict
            The global mixture whose components are counted.
        codes : array (n_rows, latent_dim), optional
            ``data``'s latent codes when already computed (row for row); else encoded here.
        min_count : int, default 1
            The site's smallest released count when the counts leave in clear
            (:func:`~fedsynth.generators.component_counts.release_counts`); 1 under secure aggregation.

        Returns
        -------
        dict
            Column -> float64 array ``(K, n_cells + 1)`` (last: missing); sums over sites give the pooled counts
            (in clear, of what each site releases).
        """
        if codes is None:
            codes = self.latent_codes(data)
        return component_count_statistics(codes, data, mixture, self.count_columns(), self.schema,
                                          bins=self.count_bins(), min_count=min_count)

    def set_component_counts(self, counts: Mapping[str, np.ndarray] | None) -> None:
        """Install the summed counts of :meth:`component_count_statistics` (for the installed mixture)."""
        self.component_counts_ = None if counts is None else {k: np.asarray(v, dtype=np.float64).copy()
                                                             for k, v in counts.items()}

    def get_component_counts(self) -> dict[str, np.ndarray] | None:
        """The installed component counts (column -> (K, n_cells + 1)) or ``None``."""
        return None if self.component_counts_ is None else {k: v.copy() for k, v in self.component_counts_.items()}

    # -- conditional draws ----------------------------------------------------------------------------
    def condition_weights(self, conditions: Conditions | None, where: str | None) -> np.ndarray | None:
        """P(k | condition) from the installed counts (category sets of ``conditions``, the equality terms of a
        conjunctive ``where`` and, with ``condition_ranges``, its range terms), or ``None`` when no counted column
        is conditioned (or nothing is installed)."""
        if self.component_counts_ is None or self.latent_mixture_ is None or not (conditions or where):
            return None
        cols, bins = self.count_columns(), self.count_bins()
        conds = {**where_categories(where, cols, self.schema),
                 **{k: [str(v) for v in vs] for k, vs in self._check_conditions(conditions).items() if k in cols}}
        ranges = where_ranges(where, bins, self.schema) if self.params.condition_ranges else {}
        if not any(c in self.component_counts_ for c in [*conds, *ranges]):
            return None
        integer = [c for c in bins if self.schema[c].kind is ColumnKind.INTEGER]
        return component_condition_weights(self.latent_mixture_["weights"], self.component_counts_, cols, conds,
                                           ranges=ranges, bins=bins, integer=integer)

    def sample(
        self,
        n_samples: int,
        *,
        random_state: int | None = None,
        conditions: Conditions | None = None,
        where: str | None = None,
        max_tries: int = 50,
        max_seconds: float | None = None,
    ) -> pd.DataFrame:
        """Draw ``n_samples`` rows (see :meth:`BaseGenerator.sample`); every row meets the conditions exactly.

        Under conditions, with component counts kept at training, latent components are weighted by
        P(k | condition) ∝ pi_k prod P(term | k) (:meth:`condition_weights`). With
        ``condition_components="stratified"`` (default) the returned rows are split over components by a
        multinomial draw from these weights and each component's share is filled by rejection among its own
        decoded rows; ``"proposal"`` draws components by these weights and rejects as usual; ``"off"`` ignores
        the counts. ``max_tries`` and ``max_seconds`` bound each component's rejection (stratified) or the
        whole draw; :class:`~fedsynth.generators.base.ConditionError` when they are reached.
        """
        mode = self.params.condition_components
        self._under_condition_ = bool(conditions) or where is not None
        try:
            weights = self.condition_weights(conditions, where) if self.fitted_ and mode != "off" else None
            if (weights is not None and mode == "stratified" and isinstance(n_samples, (int, np.integer))
                    and n_samples >= 1):
                return self._sample_stratified(n_samples, weights, random_state=random_state, conditions=conditions,
                                               where=where, max_tries=max_tries, max_seconds=max_seconds)
            self._proposal_ = weights
            return super().sample(n_samples, random_state=random_state, conditions=conditions, where=where,
                                  max_tries=max_tries, max_seconds=max_seconds)
        finally:
            self._proposal_ = None
            self._under_condition_ = False

    def draws_under_levels(self, strata: Sequence[CalibrationStratum], n_level: int,
                           random_state: int | None) -> tuple[list[pd.DataFrame], list[str]]:
        """``n_level`` rows drawn under each level of each stratum as a condition (a category, or a band of a
        numeric column as a ``where`` range), as control arms are drawn; a level the model draws too rarely for
        :meth:`sample` (:class:`~fedsynth.generators.base.ConditionError` after 20 tries) is left out.

        Returns the frames and, for each, the stratum column it was drawn for."""
        parts: list[pd.DataFrame] = []
        tags: list[str] = []
        for st in strata:
            for j, label in enumerate(st.labels):
                cond, where = None, None
                if st.bins is None:
                    cond = {st.column: label}
                else:
                    lo = [f"`{st.column}` >= {st.bins[j - 1]!r}"] if j > 0 else []
                    hi = [f"`{st.column}` < {st.bins[j]!r}"] if j < len(st.bins) else []
                    where = " and ".join(lo + hi)
                try:
                    parts.append(self.sample(n_level, random_state=random_state, conditions=cond, where=where,
                                             max_tries=20))
                except ConditionError:
                    continue
                tags.append(st.column)
        return parts, tags

    def _sample_stratified(
        self,
        n_samples: int,
        weights: np.ndarray,
        *,
        random_state: int | None,
        conditions: Conditions | None,
        where: str | None,
        max_tries: int,
        max_seconds: float | None,
    ) -> pd.DataFrame:
        """Rows split over components by Multinomial(n_samples, weights), each share filled by rejection among the
        component's own decoded rows; rows shuffled."""
        rng = np.random.default_rng(random_state)
        alloc = rng.multinomial(int(n_samples), weights / weights.sum())
        parts: list[pd.DataFrame] = []
        started = time.monotonic()
        try:
            for k in np.flatnonzero(alloc):
                self._proposal_ = np.eye(len(weights))[k]
                parts.append(self._draw_meeting(int(alloc[k]), conditions, where, rng, max_tries, max_seconds,
                                                started))
        finally:
            self._proposal_ = None
        out = pd.concat(parts, ignore_index=True)
        return out.iloc[rng.permutation(len(out))].reset_index(drop=True)

    def _draw_meeting(
        self,
        n: int,
        conditions: Conditions | None,
        where: str | None,
        rng: np.random.Generator,
        max_tries: int,
        max_seconds: float | None,
        started: float,
    ) -> pd.DataFrame:
        """``n`` rows from the current proposal that meet the conditions (rejection in batches, as the base does)."""
        conds = self._check_conditions(conditions)
        kept: list[pd.DataFrame] = []
        n_kept = n_drawn = 0
        batch = max(n, 256)
        for _ in range(max_tries):
            done = self._finish(self._sample(batch, rng=rng))
            mask = self._condition_mask(done, conds, where)
            n_drawn += len(done)
            kept.append(done[mask])
            n_kept += int(mask.sum())
            if n_kept >= n:
                return pd.concat(kept).iloc[:n]
            if max_seconds is not None and time.monotonic() - started > max_seconds:
                break
            rate = max(n_kept / n_drawn, 1.0 / n_drawn)
            batch = int(min(max((n - n_kept) / rate * 1.2, 256), 200_000))
        raise ConditionError(
            f"Only {n_kept} of the {n} rows asked of one latent component met the conditions after drawing "
            f"{n_drawn} rows (acceptance rate {n_kept / max(n_drawn, 1):.4%}). Loosen the conditions, raise "
            "max_tries or max_seconds, or sample with condition_components='proposal'."
        )
