"""Privacy: Gower distances (vectorised numpy, in chunks), NNDR, DCR share, exact copies, membership inference.

Gower distance between two rows = mean over all data columns of a per-column distance in [0, 1]: numeric
columns ``|x - y| / range`` (range of the real training values; capped at 1 for synthetic values outside it);
categorical and binary columns 0 if equal, else 1; missing against missing 0, missing against a value 1.
Categorical mismatches are counted with one matrix product of one-hot codes; numeric columns loop over
columns on chunks of rows, so a 2,700 x 2,700 table of 45 columns takes well under a second.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from fedsynth.cohort.schema import TableSchema
from fedsynth.evaluation._prep import Columns, category_codes

log = logging.getLogger(__name__)

#: Numeric missing values are stored as this far-away value after range scaling, so that
#: ``min(|x - y|, 1)`` is 1 for missing against a value and 0 for missing against missing.
_SENTINEL = 1.0e6
#: Rows of the query table per chunk.
CHUNK = 512
#: Bootstrap resamples for the sampling error of the holdout NNDR baselines.
N_BOOT = 200


class GowerSpace:
    """Encodes frames once so that Gower distances between any of them are fast.

    Parameters
    ----------
    frames : dict of str to DataFrame
        Every frame that will be compared (category codes are shared across them); ``reference`` names the
        one whose numeric ranges normalise the distances (the real training pool).
    """

    def __init__(self, frames: dict[str, pd.DataFrame], schema: TableSchema, reference: str = "real"):
        self.schema = schema
        self.reference = reference
        cols = Columns.from_schema(schema, *frames.values())
        self.numeric = list(cols.numeric)
        self.categorical = list(cols.categorical)
        self.n_columns = len(self.numeric) + len(self.categorical)
        self.encoded: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        nums: dict[str, np.ndarray] = {}
        for name, f in frames.items():
            num = f[self.numeric].to_numpy(dtype=float) if self.numeric else np.zeros((len(f), 0))
            nums[name] = num
        ref_num = nums[reference]
        with np.errstate(invalid="ignore"):
            lo = np.nanmin(ref_num, axis=0) if len(ref_num) else np.zeros(len(self.numeric))
            hi = np.nanmax(ref_num, axis=0) if len(ref_num) else np.ones(len(self.numeric))
        rng_ = np.where(np.isfinite(hi - lo) & (hi - lo > 0), hi - lo, 1.0)
        lo = np.where(np.isfinite(lo), lo, 0.0)
        onehots: dict[str, list[np.ndarray]] = {n: [] for n in frames}
        codes_all: dict[str, list[np.ndarray]] = {n: [] for n in frames}
        names = list(frames)
        for c in self.categorical:
            cats, codes = category_codes(*(frames[n][c] for n in names))
            k = len(cats) + 1
            for n, cd in zip(names, codes):
                oh = np.zeros((len(cd), k), dtype=np.float64)
                oh[np.arange(len(cd)), cd] = 1.0
                onehots[n].append(oh)
                codes_all[n].append(cd)
        for n in names:
            scaled = (nums[n] - lo) / rng_
            scaled = np.where(np.isnan(scaled), _SENTINEL, scaled)
            onehot: np.ndarray = np.hstack(onehots[n]) if onehots[n] else np.zeros((len(frames[n]), 0))
            code_mat: np.ndarray = (
                np.column_stack(codes_all[n]) if codes_all[n] else np.zeros((len(frames[n]), 0), dtype=np.int64)
            )
            # float32 halves the memory traffic; exact copies are found from row hashes (and copies up to rounding
            # from distances of at most NEAR_COPY_DISTANCE, far above float32's own error of about 3e-8).
            self.encoded[n] = (
                np.ascontiguousarray(scaled, dtype=np.float32), np.ascontiguousarray(onehot, dtype=np.float32), code_mat
            )
        self._raw_num = nums

    def row_hashes(self, name: str) -> np.ndarray:
        """One 64-bit hash per row of the encoded values (equal rows, NaN included, hash equal)."""
        num = self._raw_num[name]
        codes = self.encoded[name][2]
        # + 0.0 turns -0.0 into 0.0: hashes read the bits, and a value written "-0" is still the patient's 0.
        frame = pd.DataFrame(np.hstack([np.nan_to_num(num, nan=-1.2345e308) + 0.0, codes.astype(float)]))
        hashes: np.ndarray = pd.util.hash_pandas_object(frame, index=False).to_numpy()
        return hashes

    def blocks(self, query: str, reference: str, chunk: int = CHUNK) -> Iterator[tuple[slice, np.ndarray]]:
        """Gower distance matrices of chunks of ``query`` rows against all ``reference`` rows."""
        qn, qo, _ = self.encoded[query]
        rn, ro, _ = self.encoded[reference]
        n_cat = len(self.categorical)
        denom = float(max(self.n_columns, 1))
        rnT = rn.T.copy()
        for start in range(0, len(qn), chunk):
            sl = slice(start, min(start + chunk, len(qn)))
            if n_cat:
                D = np.float32(n_cat) - qo[sl] @ ro.T
            else:
                D = np.zeros((sl.stop - sl.start, len(rn)), dtype=np.float32)
            tmp = np.empty_like(D)
            for j in range(qn.shape[1]):
                np.subtract.outer(qn[sl, j], rnT[j], out=tmp)
                np.abs(tmp, out=tmp)
                np.minimum(tmp, np.float32(1.0), out=tmp)
                D += tmp
            D *= np.float32(1.0 / denom)
            yield sl, D

    def distances(self, query: str, reference: str) -> np.ndarray:
        """The full distance matrix (for small tables and tests)."""
        return np.vstack([D for _, D in self.blocks(query, reference)])


def gower_matrix(a: pd.DataFrame, b: pd.DataFrame, schema: TableSchema) -> np.ndarray:
    """Gower distances between every row of ``a`` and every row of ``b`` (ranges from ``a``)."""
    return GowerSpace({"real": a, "other": b}, schema).distances("real", "other")


def _nearest(space: GowerSpace, query: str, reference: str, *, sample_idx: np.ndarray | None = None,
             col_min: bool = False, index: bool = False) -> dict[str, np.ndarray]:
    n_q = len(space.encoded[query][0])
    n_r = len(space.encoded[reference][0])
    d1 = np.empty(n_q)
    d2 = np.empty(n_q)
    i1 = np.zeros(n_q, dtype=np.int64) if index else None

    ds = np.empty(n_q) if sample_idx is not None else None
    cm = np.full(n_r, np.inf) if col_min else None
    for sl, D in space.blocks(query, reference):
        if n_r >= 2:
            part = np.partition(D, 1, axis=1)
            d1[sl], d2[sl] = part[:, 0], part[:, 1]
        else:
            d1[sl] = D[:, 0]
            d2[sl] = np.nan
        if i1 is not None and n_r:
            i1[sl] = D.argmin(axis=1)
        if ds is not None:
            ds[sl] = D[:, sample_idx].min(axis=1)
        if cm is not None:
            np.minimum(cm, D.min(axis=0), out=cm)
    out: dict[str, np.ndarray] = {"d1": d1, "d2": d2}
    if i1 is not None:
        out["i1"] = i1
    if ds is not None:
        out["d_sample"] = ds
    if cm is not None:
        out["col_min"] = cm
    return out


def nndr(d1: np.ndarray, d2: np.ndarray) -> np.ndarray:
    """Nearest / second-nearest distance ratio; 0 when the nearest distance is 0 (a copied row)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(d1 <= 0, 0.0, d1 / d2)
    ratio: np.ndarray = np.clip(np.nan_to_num(r, nan=1.0), 0.0, 1.0)
    return ratio


def _summ(v: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.mean(v)), "p5": float(np.quantile(v, 0.05))}


def _hist(v: np.ndarray, bins: int = 20) -> list[float]:
    c, _ = np.histogram(np.clip(v, 0, 1), bins=np.linspace(0, 1, bins + 1))
    shares: list[float] = (c / max(len(v), 1)).tolist()
    return shares


#: A synthetic row this close to a training row (Gower distance: the mean over columns of range-normalised
#: differences) copies it: equal up to rounding (a value stored in float32, or written with 6 significant digits).
NEAR_COPY_DISTANCE = 1e-6


def copied_rows(real_data: pd.DataFrame, synthetic_data: pd.DataFrame, schema: TableSchema) -> np.ndarray:
    """Which synthetic rows copy a real row, as :func:`exact_copy_figures` counts copies: equal in every data column
    of ``schema`` (missing equal to missing, ``-0.0`` as ``0.0``) or within :data:`NEAR_COPY_DISTANCE` (Gower).

    Returns
    -------
    ndarray of bool, shape (n_synthetic,)
    """
    if not len(real_data) or not len(synthetic_data):
        return np.zeros(len(synthetic_data), dtype=bool)
    space = GowerSpace({"real": real_data, "synthetic": synthetic_data}, schema)
    return _copy_masks(space, "synthetic", set(space.row_hashes("real").tolist()),
                       _nearest(space, "synthetic", "real")["d1"])[1]


def _copy_masks(space: GowerSpace, name: str, train_set: set[int],
                d1: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The one definition of a copied row: rows of frame ``name`` equal to a training row (their hash in
    ``train_set``), and those or, given their nearest training row's Gower distance ``d1``, within
    :data:`NEAR_COPY_DISTANCE` of it (equal up to rounding)."""
    equal = np.array([h in train_set for h in space.row_hashes(name).tolist()], dtype=bool)
    return equal, equal if d1 is None else equal | (d1 <= NEAR_COPY_DISTANCE)


def exact_copy_figures(space: GowerSpace, with_holdout: bool,
                       nearest: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> dict[str, Any]:
    """Exact copies of training rows, beside the holdout's own share, with copies of shared sparse records set apart.

    A row (synthetic or holdout) copies a training row when it equals it in every column (missing equal to missing,
    ``-0.0`` read as ``0.0``) or, with ``nearest`` (per frame name, each row's distance to its nearest training row and
    that row's index), lies within :data:`NEAR_COPY_DISTANCE` of it: equal up to rounding. The flag compares the share
    of synthetic rows that copy a training row with the same share of holdout rows (a new real patient equal to a
    training row), as it always has, with one exception on both sides: a copy of a record with **no number known**
    (no measurement, no time: categories only) that two or more training rows hold is set apart (``shared``). Such
    records coincide between real patients when little is known of them (in the MDS cohort, seed-0 split, 5 of the
    16 training patients with no number recorded share their record with another), a copy of one names nobody (k >= 2
    over the training rows), and a 296-row holdout usually holds none of them, so with the plain comparison every such
    copy was flagged. Every other copy counts, however narrow the table: where records with numbers coincide too (a
    table of few columns) the holdout's share says how often.

    Rows are counted, not patients: one patient with no number known entered twice still looks shared.

    Returns
    -------
    dict
        ``exact_copies`` and ``exact_copies_holdout`` (shares of synthetic and holdout rows copying a training row;
        the latter None without a holdout), ``exact_copies_shared`` and ``exact_copies_holdout_shared`` (the parts of
        them copying a shared record with no number known), ``exact_copies_judged`` and
        ``exact_copies_holdout_judged`` (the rest: the flag compares these two) and ``exact_copies_counts`` (rows and
        copies of each frame, and ``shared_training_rows``: training rows holding a shared record with no number).
    """
    real_hashes = space.row_hashes("real")
    in_train = pd.Series(real_hashes).value_counts()
    num = space._raw_num["real"]
    has_number = np.isfinite(num).any(axis=1) if num.shape[1] else np.zeros(len(num), dtype=bool)
    shared_rows = (in_train.reindex(real_hashes).to_numpy() > 1) & ~has_number
    shared = set(real_hashes[shared_rows].tolist())
    train_set = set(real_hashes.tolist())

    def copies_of(name: str) -> tuple[int, int, int]:
        hashes = space.row_hashes(name).tolist()
        near = nearest.get(name) if nearest is not None and len(real_hashes) else None
        equal, copies = _copy_masks(space, name, train_set, None if near is None else near[0])
        of_shared = np.array([h in shared for h in hashes], dtype=bool)
        if near is not None:
            # A copy up to rounding is of its nearest training row's record.
            of_shared[copies & ~equal] = shared_rows[near[1][copies & ~equal]]
        return len(hashes), int(copies.sum()), int(of_shared.sum())

    n_syn, c_syn, s_syn = copies_of("synthetic")
    n_hold, c_hold, s_hold = copies_of("holdout") if with_holdout else (0, 0, 0)

    def share(k: int, n: int) -> float:
        return k / n if n else 0.0

    return {
        "exact_copies": share(c_syn, n_syn),
        "exact_copies_holdout": share(c_hold, n_hold) if with_holdout else None,
        "exact_copies_shared": share(s_syn, n_syn),
        "exact_copies_holdout_shared": share(s_hold, n_hold) if with_holdout else None,
        "exact_copies_judged": share(c_syn - s_syn, n_syn),
        "exact_copies_holdout_judged": share(c_hold - s_hold, n_hold) if with_holdout else None,
        "exact_copies_counts": {
            "synthetic_rows": n_syn, "copies": c_syn, "copies_shared": s_syn, "holdout_rows": n_hold,
            "holdout_copies": c_hold, "holdout_copies_shared": s_hold, "training_rows": len(real_hashes),
            "shared_training_rows": int(shared_rows.sum()),
        },
    }


def privacy_analysis(
    real_data: pd.DataFrame,
    synthetic_data: pd.DataFrame,
    schema: TableSchema,
    *,
    holdout_data: pd.DataFrame | None = None,
    rng: np.random.Generator,
    quick: bool = False,
) -> dict[str, Any]:
    """NNDR, DCR share, exact copies and membership-inference AUC, each beside its baseline.

    Exact copies (synthetic rows equal to a training row in every column, missing equal to missing, or equal up to
    rounding) are flagged above the holdout's own share, copies of a record with no number known that several
    training rows share set apart on both sides (:func:`exact_copy_figures`).

    Returns
    -------
    dict
        ``nndr`` (``synthetic`` and ``holdout`` mean and 5th percentile, histograms), ``dcr_share``,
        ``exact_copies`` (share of synthetic rows), ``exact_copies_holdout`` (share of holdout rows equal to a
        training row; None without a holdout), the parts and counts of :func:`exact_copy_figures`, ``mia_auc``,
        ``flags`` (figures worse than their baseline) and ``thresholds`` (the tolerances used). With ``quick`` only
        NNDR is computed.
    """
    frames = {"real": real_data, "synthetic": synthetic_data}
    if holdout_data is not None:
        frames["holdout"] = holdout_data
    space = GowerSpace(frames, schema)
    n_r, n_s = len(real_data), len(synthetic_data)
    out: dict[str, Any] = {"distance": "gower", "n_columns": space.n_columns}
    sample_idx = None
    if holdout_data is not None and not quick:
        n_h = len(holdout_data)
        sample_idx = np.sort(rng.choice(n_r, size=min(n_h, n_r), replace=False))
    syn = _nearest(space, "synthetic", "real", sample_idx=sample_idx, col_min=not quick, index=not quick)
    r_syn = nndr(syn["d1"], syn["d2"])
    out["nndr"] = {"synthetic": _summ(r_syn), "holdout": None}
    hold: dict[str, np.ndarray] | None = None
    r_hold = None
    if holdout_data is not None:
        hold = _nearest(space, "holdout", "real", index=True)
        r_hold = nndr(hold["d1"], hold["d2"])
        out["nndr"]["holdout"] = _summ(r_hold)
    if quick:
        return out
    out["nndr"]["histogram"] = {"edges": np.linspace(0, 1, 21).tolist(), "synthetic": _hist(r_syn),
                                "holdout": None if r_hold is None else _hist(r_hold)}
    near = {"synthetic": (syn["d1"], syn["i1"])}
    if hold is not None:
        near["holdout"] = (hold["d1"], hold["i1"])
    out.update(exact_copy_figures(space, holdout_data is not None, near))
    out["dcr_share"] = None
    out["mia_auc"] = None
    flags: list[str] = []
    thresholds: dict[str, Any] = {}
    if holdout_data is not None and hold is not None and r_hold is not None:
        from sklearn.metrics import roc_auc_score

        n_h = len(holdout_data)
        # DCR: synthetic rows against a training sample of the holdout's size and the holdout itself.
        s_h = _nearest(space, "synthetic", "holdout", col_min=True)
        d_train, d_hold = syn["d_sample"], s_h["d1"]
        share = np.where(d_train < d_hold, 1.0, np.where(d_train == d_hold, 0.5, 0.0))
        out["dcr_share"] = float(share.mean())
        out["dcr_reference_rows"] = int(min(n_h, n_r))
        # Membership inference: members (training rows) vs non-members (holdout rows), scored by closeness
        # to the nearest synthetic row.
        score = -np.r_[syn["col_min"], s_h["col_min"]]
        y = np.r_[np.ones(n_r), np.zeros(n_h)]
        out["mia_auc"] = float(roc_auc_score(y, score))
        # Baseline sampling error of the holdout NNDR figures (bootstrap), and null errors of DCR and AUC.
        boot = rng.integers(0, n_h, size=(N_BOOT, n_h))
        bm = r_hold[boot]
        se_mean = float(bm.mean(1).std())
        se_p5 = float(np.quantile(bm, 0.05, axis=1).std())
        tol_dcr = 2.0 * float(np.sqrt(0.25 / n_s))
        tol_auc = 2.0 * float(np.sqrt((n_r + n_h + 1) / (12.0 * n_r * n_h)))
        thresholds = {
            "nndr_mean_below": out["nndr"]["holdout"]["mean"] - 2 * se_mean,
            "nndr_p5_below": out["nndr"]["holdout"]["p5"] - 2 * se_p5,
            "dcr_share_above": 0.5 + tol_dcr,
            "mia_auc_above": 0.5 + tol_auc,
            "exact_copies_above": out["exact_copies_holdout_judged"],
        }
        if out["nndr"]["synthetic"]["mean"] < thresholds["nndr_mean_below"]:
            flags.append("nndr_mean")
        if out["nndr"]["synthetic"]["p5"] < thresholds["nndr_p5_below"]:
            flags.append("nndr_p5")
        if out["dcr_share"] > thresholds["dcr_share_above"]:
            flags.append("dcr_share")
        if out["mia_auc"] > thresholds["mia_auc_above"]:
            flags.append("mia_auc")
        if out["exact_copies_judged"] > out["exact_copies_holdout_judged"]:
            flags.append("exact_copies")
    else:
        thresholds = {"exact_copies_above": 0.0}
        out["note"] = ("no holdout given: NNDR baseline, DCR share and membership inference need one; exact copies "
                       "are judged on the training rows alone")
        if out["exact_copies_judged"] > 0:
            flags.append("exact_copies")
    out["flags"] = flags
    out["thresholds"] = thresholds
    return out
