"""Label-share matching: a prior shift of a decoder's categorical and binary logits so that draws made without a
condition hold each baseline label at its real share.

A VAE decodes each categorical column by a softmax given the latent code. Its marginal shares can drift from the
real ones; rare protective levels suffer most (on the MDS cohort, one FedAvg fit, CYTO_IPSSR Very-Good was drawn
at 3.4% of the rows with a karyotype against 4.5% real). A table that holds fewer of a level's patients holds less
evidence on the level's effect on survival, so the effect can be lost at its full size. The correction here keeps what the decoder says
about each row and moves only the priors: for a column ``c`` with labels ``j``, the logit of label ``j`` gets an
offset ``a_cj`` shared by every row (for a binary column one offset on its logit). Offsets are found by passes over
pilot draws of the model itself::

    a_cj += log(q_cj / p_cj)                  (categorical; a label with a real share of 0 keeps its offset,
                                               though its share still moves with the others)
    a_c  += logit(q_c) - logit(p_c)           (binary: the share of label "1"; none when q_c is 0 or 1)

with ``q`` the real share among the rows where the column is known and ``p`` the share in the pilot draw (drawn with
the offsets so far), each label's offset bounded by ``max_log_offset`` (so two labels' odds move by at most the
square of its exponential). This is the prior-shift adjustment of a
probabilistic classifier's outputs to new class priors (Saerens, Latinne & Decaestecker, 2002, Neural Computation
14:21-41), taken one column at a time and iterated as raking iterates margins (Deming & Stephan, 1940).

The real shares come from the per-component label counts summed over sites
(:mod:`~fedsynth.generators.component_counts`), summed over components: no count beyond what conditional draws
already use. Under secure aggregation the sums are exact; in clear a site withholds a label held by 1 to ``k - 1`` of
its rows, so a rare label's share can read low by up to ``k - 1`` rows per site. Under a privacy budget the counts
are not asked for and nothing is shifted. Outcome columns, endpoint columns and columns recorded after baseline are
never moved: their shares follow the rows.

VAE-BGM's ``label_share_matching`` (off by default) applies it to draws made without a condition. Draws under a
condition are never shifted; their rows stay as they were where their survival factors are read on rows drawn under
a condition alone (``calibration_unconditioned`` with ``calibration_conditioned_rows_only``, the tuned setting), and
otherwise move with the factors refitted on the shifted draws. Measured against the tuned setting on fresh seeds, it
lost more survival effects, not fewer (``benchmarks/results/arms.json``, ``selection_session18``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from scipy.special import logit

from fedsynth.cohort.schema import TableSchema
from fedsynth.generators.vae_layout import Layout

#: Rows of each pilot draw.
PILOT_ROWS = 100_000
#: Bound on each label's ``|offset|`` (log scale).
MAX_LOG_OFFSET = float(np.log(5.0))
#: Shares are clipped into ``[SHARE_FLOOR, 1 - SHARE_FLOOR]`` before a log or a logit.
SHARE_FLOOR = 1e-4

#: Column -> the offsets on its logits: shape ``(n_labels,)`` for a categorical column, ``(1,)`` for a binary one.
Offsets = dict[str, np.ndarray]


def real_label_shares(component_counts: Mapping[str, np.ndarray], columns: Mapping[str, tuple[str, ...]],
                      schema: TableSchema) -> dict[str, np.ndarray]:
    """Each movable column's real label shares among rows where it is known, from the summed component counts.

    Parameters
    ----------
    component_counts : dict
        Column -> ``(K, n_labels + 1)`` responsibility-weighted counts (last cell: missing), summed over sites.
    columns : dict
        Column -> its labels in the decoder's order (a binary column: ``("0", "1")``).
    schema : TableSchema
        Outcome, endpoint and post-baseline columns are left out.

    Returns
    -------
    dict
        Column -> float64 shares, shape ``(n_labels,)``, summing to 1; a column without counts, whose counts do
        not match its labels, or that is missing in every counted row, is left out.
    """
    fixed = set(schema.outcome_columns) | set(schema.post_baseline_columns) | {
        c for ep in schema.endpoints for c in (ep.duration_col, ep.event_col)}
    out: dict[str, np.ndarray] = {}
    for name, labels in columns.items():
        counts = component_counts.get(name)
        if name in fixed or counts is None or counts.shape[-1] != len(labels) + 1:
            continue
        known = np.asarray(counts, dtype=np.float64).sum(axis=0)[:-1]
        if known.sum() > 0:
            out[name] = known / known.sum()
    return out


def drawn_shares(raw: pd.DataFrame, columns: Mapping[str, tuple[str, ...]],
                 binary: set[str]) -> dict[str, np.ndarray]:
    """Each column's label shares among the rows of ``raw`` where it is known, in ``columns``' label order (a
    binary column's values 0/1 read as labels ``"0"``/``"1"``, as the component counts label them)."""
    out: dict[str, np.ndarray] = {}
    for name, labels in columns.items():
        values = raw[name].dropna()
        text = values.astype(float).astype(int).astype(str) if name in binary else values.astype(str)
        counts = text.value_counts()
        vec = np.array([float(counts.get(label, 0)) for label in labels])
        out[name] = vec / vec.sum() if vec.sum() > 0 else vec
    return out


def logit_positions(layout: Layout) -> dict[str, slice]:
    """Where each binary and categorical column's logits sit in the decoder's output (:meth:`Layout.value_slice`)."""
    return {c.name: layout.value_slice(c) for c in layout.columns if c.kind in ("binary", "categorical")}


def fit_label_offsets(
    draw: Callable[[Offsets], pd.DataFrame],
    targets: Mapping[str, np.ndarray],
    columns: Mapping[str, tuple[str, ...]],
    binary: set[str],
    *,
    passes: int = 3,
    max_log_offset: float = MAX_LOG_OFFSET,
) -> tuple[Offsets, float]:
    """Offsets that bring the drawn label shares to ``targets`` (module docstring).

    Parameters
    ----------
    draw : callable
        ``draw(offsets)`` -> a pilot draw of the model with those offsets applied (decoded rows, before any
        post-step; the columns of ``targets`` present). Called once per pass.
    targets : dict
        Column -> real shares over ``columns[column]`` (:func:`real_label_shares`).
    columns : dict
        Column -> its labels, in the decoder's order.
    binary : set of str
        The binary columns among ``targets`` (one offset, on the logit of label ``"1"``).
    passes : int, default 3
    max_log_offset : float, default :data:`MAX_LOG_OFFSET`

    Returns
    -------
    offsets, largest_error
        The offsets, and the largest ``|log(q / p)|`` (a binary column: ``|logit q - logit p|``) of the last pass,
        read before its update (NaN with no pass).
    """
    offsets: Offsets = {c: np.zeros(1 if c in binary else len(q)) for c, q in targets.items()}
    worst = float("nan")
    for _ in range(int(passes)):
        raw = draw(offsets)
        drawn = drawn_shares(raw, {c: columns[c] for c in targets if c in raw.columns}, binary)
        worst = 0.0
        for c, p in drawn.items():
            q = targets[c]
            if c in binary:
                qq, pp = (float(np.clip(v[-1], SHARE_FLOOR, 1 - SHARE_FLOOR)) for v in (q, p))
                known = 0.0 < float(q[-1]) < 1.0  # a share of 0 or 1 may be a withheld count: no move
                step = np.array([float(logit(qq) - logit(pp)) if known else 0.0])
            else:
                step = np.where(q > 0, np.log(np.clip(q, SHARE_FLOOR, 1) / np.clip(p, SHARE_FLOOR, 1)), 0.0)
            worst = max(worst, float(np.abs(step).max()))
            offsets[c] = np.clip(offsets[c] + step, -max_log_offset, max_log_offset)
    return offsets, worst


def apply_label_offsets(out: np.ndarray, positions: Mapping[str, slice], offsets: Offsets) -> np.ndarray:
    """``out`` (n, output_dim) with each column's offsets added to its logits at ``positions[column]`` (a copy)."""
    shifted = np.array(out, dtype=np.float64, copy=True)
    for c, off in offsets.items():
        if c in positions:
            shifted[:, positions[c]] += off
    return shifted
