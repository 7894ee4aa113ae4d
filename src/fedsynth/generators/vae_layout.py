"""VAE-BGM's layout: how the shared domain turns into model inputs and outputs, identical on every site.

Numeric columns go through the domain's quantile bins to normal scores (piecewise-linear CDF, then the normal
quantile function, probabilities clipped to [0.001, 0.999]) or are standardised with its mean and standard
deviation; binary columns are 0/1, categorical columns one-hot over the domain's categories, and every column
that can be missing has a missing indicator. With ``ties`` each pair of endpoint durations has one more binary slot,
1 where the two times are equal; with ``events`` the endpoints' event columns have one more categorical block, their
joint pattern (:class:`Layout`). :func:`decode` samples rows back from the decoder's outputs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from fedsynth.cohort.constraints import EventImplies, duration_pairs, tie_pairs, tied
from fedsynth.cohort.schema import ColumnKind, TableSchema
from fedsynth.encoding.domain import Domain
from fedsynth.generators.base import follow_duration_missingness

log = logging.getLogger(__name__)

#: Probability clipping of the quantile transform: values map to normal scores in [-3.09, 3.09].
_Q_EPS = 1e-3
_Z_HI = float(norm.ppf(1 - _Q_EPS))
_Z_LO = -_Z_HI


@dataclass(frozen=True)
class ColumnLayout:
    name: str
    kind: str  # "numeric", "binary", "categorical"
    index: int  # index into the numeric / binary / categorical block
    categories: tuple[str, ...] = ()
    missing_index: int = -1  # index into the missing-indicator block, -1 when the column never misses


@dataclass(frozen=True)
class Layout:
    """Where each column sits in the model's input and output vectors.

    ``ties`` (with ``Layout.from_domain(..., ties=True)``) are pairs of endpoint duration columns ``(first,
    second)``, in the schema's endpoint order; each has one more binary slot after the columns' binaries
    (``n_binary`` counts them): 1 when the two times are equal in a row (a patient whose LFS ends at the end of
    their OS), so the model learns ties as a level of their own instead of two independent times that rarely meet.
    Its input is 1/2 where either time is unknown (no loss term there). With three endpoints or more the pairs are
    applied one after another in that order, so a later pair can move a time an earlier one set; the schema's rules
    are enforced afterwards as for every draw.

    ``events`` (with ``Layout.from_domain(..., events=True)``) are the endpoints' event columns that are binary model
    columns, in the schema's endpoint order, when there are two or more (:func:`event_columns`). They get one more
    categorical block, the last one (``cat_sizes`` counts it), over the ``2 ** len(events)`` patterns of their
    values: pattern ``j`` gives column ``i`` the value ``(j >> i) & 1``. The decoder draws every column given the
    latent code independently, so two event columns meet only through it: on the MDS cohort (seed-0 FedAvg fit) it
    drew "AML, alive" (LFS event without OS death) in 7.8% of rows against 2.3% real, and "death without an LFS
    event" — which no real row has — in 4.5%. The pattern block learns their joint law; a pattern that breaks one of
    the schema's event rules is never drawn (:func:`decode`). Its input and target are known where every event
    column is (else the block's input is 0 and no loss term counts); there the loss leaves out the event columns'
    own binary terms (:func:`~fedsynth.generators.vae_network.vae_loss`), so each event counts once in the
    likelihood, and those train on the rows with an event missing, whose draws (:func:`decode`) keep their own values.
    """

    columns: tuple[ColumnLayout, ...]
    n_numeric: int
    n_binary: int
    cat_sizes: tuple[int, ...]
    n_missing: int
    ties: tuple[tuple[str, str], ...] = ()
    events: tuple[str, ...] = ()

    @property
    def events_index(self) -> int:
        """Index in the categorical block of the event pattern (the last one); -1 without ``events``."""
        return len(self.cat_sizes) - 1 if self.events else -1

    @property
    def event_binary_slots(self) -> tuple[int, ...]:
        """Indices in the binary block of the ``events`` columns (their own slots, beside the pattern)."""
        return tuple(c.index for c in self.columns if c.name in self.events)

    @property
    def n_categorical(self) -> int:
        """How many categorical blocks are columns (the event pattern, last, is not)."""
        return len(self.cat_sizes) - (1 if self.events else 0)

    @property
    def tie_offset(self) -> int:
        """Index in the binary block of the first tie slot (the columns' binaries come first)."""
        return self.n_binary - len(self.ties)

    @property
    def n_cat_total(self) -> int:
        return int(sum(self.cat_sizes))

    def cat_slice(self, index: int) -> slice:
        """The dimensions of categorical block ``index`` (a column's, or the event pattern's), in the inputs and the
        decoder's outputs alike (numeric, binary, categorical, missing blocks in that order)."""
        start = self.n_numeric + self.n_binary + int(sum(self.cat_sizes[:index]))
        return slice(start, start + self.cat_sizes[index])

    def value_slice(self, column: ColumnLayout) -> slice:
        """A column's own dimensions (its numeric value, binary logit or categorical block; not its missing
        indicator), in the inputs and the decoder's outputs alike."""
        if column.kind == "numeric":
            return slice(column.index, column.index + 1)
        if column.kind == "binary":
            return slice(self.n_numeric + column.index, self.n_numeric + column.index + 1)
        return self.cat_slice(column.index)

    @property
    def input_dim(self) -> int:
        return self.n_numeric + self.n_binary + self.n_cat_total + self.n_missing

    @property
    def output_dim(self) -> int:
        # numeric means, binary logits, categorical logits, missing logits
        return self.n_numeric + self.n_binary + self.n_cat_total + self.n_missing

    @classmethod
    def from_domain(cls, domain: Domain, schema: TableSchema, *, ties: bool = False, events: bool = False) -> Layout:
        """The layout of the schema's model columns in ``domain``; ``ties``: one tie slot per pair of endpoints
        whose durations are both numeric model columns; ``events``: one pattern block over the endpoints' binary
        event columns when there are two or more (the class docstring)."""
        cols: list[ColumnLayout] = []
        n_num = n_bin = n_miss = 0
        cat_sizes: list[int] = []
        for name in schema.model_columns:
            if name not in domain.columns:
                continue
            cd = domain[name]
            miss = -1
            if cd.has_missing:
                miss = n_miss
                n_miss += 1
            if cd.is_numeric:
                cols.append(ColumnLayout(name, "numeric", n_num, missing_index=miss))
                n_num += 1
            elif cd.kind is ColumnKind.BINARY:
                cols.append(ColumnLayout(name, "binary", n_bin, missing_index=miss))
                n_bin += 1
            else:
                cols.append(ColumnLayout(name, "categorical", len(cat_sizes), tuple(cd.categories), miss))
                cat_sizes.append(len(cd.categories))
        numeric = {c.name for c in cols if c.kind == "numeric"}
        pairs = tuple(p for p in duration_pairs(schema) if set(p) <= numeric) if ties else ()
        ev = event_columns(schema, {c.name for c in cols if c.kind == "binary"}) if events else ()
        if ev:
            cat_sizes.append(2 ** len(ev))
        return cls(tuple(cols), n_num, n_bin + len(pairs), tuple(cat_sizes), n_miss, pairs, ev)

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": [
                {
                    "name": c.name,
                    "kind": c.kind,
                    "index": c.index,
                    "categories": list(c.categories),
                    "missing_index": c.missing_index,
                }
                for c in self.columns
            ],
            "n_numeric": self.n_numeric,
            "n_binary": self.n_binary,
            "cat_sizes": list(self.cat_sizes),
            "n_missing": self.n_missing,
            **({"ties": [list(t) for t in self.ties]} if self.ties else {}),
            **({"events": list(self.events)} if self.events else {}),
        }


#: Most event columns a pattern block covers (``2 ** 6`` patterns); a schema with more endpoints gets none.
MAX_PATTERN_EVENTS = 6


def event_columns(schema: TableSchema, binary: set[str]) -> tuple[str, ...]:
    """The endpoints' event columns among ``binary`` (the layout's binary model columns), in endpoint order, when
    there are two to :data:`MAX_PATTERN_EVENTS` of them (one alone has no joint law to learn); else ``()``."""
    cols = tuple(dict.fromkeys(ep.event_col for ep in schema.endpoints if ep.event_col in binary))
    if len(cols) > MAX_PATTERN_EVENTS:
        log.warning("joint_events: %d event columns, more than %d: each is drawn on its own", len(cols),
                    MAX_PATTERN_EVENTS)
    return cols if 2 <= len(cols) <= MAX_PATTERN_EVENTS else ()


def allowed_patterns(events: Sequence[str], schema: TableSchema) -> np.ndarray:
    """Boolean mask over the ``2 ** len(events)`` patterns (:class:`Layout`): False where a pattern breaks one of
    the schema's event rules (``source`` = 1 with ``implied`` = 0) whose two columns are both in ``events``."""
    pos = {c: i for i, c in enumerate(events)}
    codes = np.arange(2 ** len(events))
    ok = np.ones(len(codes), dtype=bool)
    for rule in schema.constraints:
        if isinstance(rule, EventImplies) and rule.source.event_col in pos and rule.implied.event_col in pos:
            src, imp = (codes >> pos[rule.source.event_col]) & 1, (codes >> pos[rule.implied.event_col]) & 1
            ok &= ~((src == 1) & (imp == 0))
    return ok


@dataclass
class Encoded:
    """One table in model form (float32 arrays; masks are 1 where a loss term counts)."""

    inputs: np.ndarray  # (n, input_dim)
    numeric: np.ndarray  # (n, n_numeric) normal scores, 0 where missing
    numeric_mask: np.ndarray
    binary: np.ndarray  # (n, n_binary) 0/1
    binary_mask: np.ndarray
    categorical: np.ndarray  # (n, n_cat) int64 category index, -1 where missing (the event pattern last)
    missing: np.ndarray  # (n, n_missing) 0/1 missing indicators
    missing_mask: np.ndarray  # 0 for columns the site lacks (it gives no gradient for them)


# -- numeric transforms ------------------------------------------------------------------------------


def quantile_forward(values: np.ndarray, bins: Sequence[float]) -> np.ndarray:
    """Piecewise-linear CDF through the domain's quantile edges, then the normal quantile function."""
    edges = np.asarray(bins, dtype=float)
    levels = np.linspace(0.0, 1.0, len(edges))
    u = np.interp(values, edges, levels)
    return np.asarray(norm.ppf(_Q_EPS + (1 - 2 * _Q_EPS) * u))


def quantile_inverse(z: np.ndarray, bins: Sequence[float]) -> np.ndarray:
    edges = np.asarray(bins, dtype=float)
    levels = np.linspace(0.0, 1.0, len(edges))
    u = np.clip((norm.cdf(z) - _Q_EPS) / (1 - 2 * _Q_EPS), 0.0, 1.0)
    return np.asarray(np.interp(u, levels, edges))


# -- encoding and decoding ------------------------------------------------------------------------------


def encode(layout: Layout, domain: Domain, data: pd.DataFrame, numeric_transform: str) -> Encoded:
    """One table in model form. A column ``data`` lacks (a site without it) holds the domain's expectation."""
    lay = layout
    n = len(data)
    num = np.zeros((n, lay.n_numeric), np.float32)
    num_mask = np.zeros_like(num)
    binv = np.zeros((n, lay.n_binary), np.float32)
    bin_mask = np.zeros_like(binv)
    cat = np.full((n, len(lay.cat_sizes)), -1, np.int64)
    onehots = [np.zeros((n, k), np.float32) for k in lay.cat_sizes]
    miss = np.zeros((n, lay.n_missing), np.float32)
    miss_mask = np.zeros_like(miss)
    for c in lay.columns:
        cd = domain[c.name]
        if c.name not in data.columns:
            # A column this site lacks: the input holds the domain's expectation (median score, pooled
            # category shares and missing rate), so the site's codes sit among similar rows of other sites
            # rather than among rows where the value is truly missing; no loss term counts.
            counts = np.asarray(cd.category_counts, dtype=np.float32)
            if c.kind == "binary" and counts.sum() > 0:
                binv[:, c.index] = counts[1] / counts.sum()
            elif c.kind == "categorical" and counts.sum() > 0:
                onehots[c.index][:] = counts / counts.sum()
            if c.missing_index >= 0:
                miss[:, c.missing_index] = cd.missing_rate
            continue
        s = data[c.name]
        if c.kind == "numeric":
            v = s.to_numpy(dtype="float64")
            obs = ~np.isnan(v)
            if numeric_transform == "quantile":
                z = quantile_forward(np.clip(v[obs], cd.lower, cd.upper), cd.bins)
            else:
                z = (v[obs] - cd.mean) / (cd.std if cd.std > 0 else 1.0)
            num[obs, c.index] = z
            num_mask[obs, c.index] = 1.0
        elif c.kind == "binary":
            v = s.to_numpy(dtype="float64")
            obs = ~np.isnan(v)
            binv[obs, c.index] = (v[obs] > 0.5).astype(np.float32)
            bin_mask[obs, c.index] = 1.0
        else:
            lookup = {k: i for i, k in enumerate(c.categories)}
            idx = s.astype(object).map(lookup).fillna(-1).to_numpy(dtype=np.int64)
            obs = idx >= 0
            cat[:, c.index] = idx
            onehots[c.index][np.flatnonzero(obs), idx[obs]] = 1.0
        if c.missing_index >= 0:
            miss[:, c.missing_index] = (~obs).astype(np.float32)
            miss_mask[:, c.missing_index] = 1.0
    for j, (a, b) in enumerate(lay.ties):  # known where both times are; else input 1/2 (neither), no loss term
        binv[:, lay.tie_offset + j] = 0.5
        if a in data.columns and b in data.columns:
            ta, tb = data[a].to_numpy(dtype="float64"), data[b].to_numpy(dtype="float64")
            both = ~np.isnan(ta) & ~np.isnan(tb)
            binv[both, lay.tie_offset + j] = tied(ta[both], tb[both]).astype(np.float32)
            bin_mask[both, lay.tie_offset + j] = 1.0
    if lay.events:  # the joint pattern where every event column is known; else no input, no loss term
        code = np.zeros(n, np.int64)
        known = np.ones(n, dtype=bool)
        for i, col in enumerate(lay.events):
            if col not in data.columns:
                known[:] = False
                break
            v = data[col].to_numpy(dtype="float64")
            known &= ~np.isnan(v)
            code += np.where(v > 0.5, 1 << i, 0)
        cat[:, lay.events_index] = np.where(known, code, -1)
        onehots[lay.events_index][np.flatnonzero(known), code[known]] = 1.0
    inputs = np.concatenate([num, binv, *onehots, miss], axis=1).astype(np.float32)
    return Encoded(inputs, num, num_mask, binv, bin_mask, cat, miss, miss_mask)


def absent_inputs(layout: Layout, domain: Domain, numeric_transform: str) -> tuple[np.ndarray, np.ndarray]:
    """The input row of a site lacking every column, and which input dimensions belong to each column."""
    lay = layout
    absent = encode(layout, domain, pd.DataFrame(index=range(1)), numeric_transform).inputs[0]
    col_dims = np.zeros((len(lay.columns), lay.input_dim), np.float32)
    miss_base = lay.n_numeric + lay.n_binary + lay.n_cat_total
    for j, c in enumerate(lay.columns):
        col_dims[j, lay.value_slice(c)] = 1
        if c.missing_index >= 0:
            col_dims[j, miss_base + c.missing_index] = 1
        for k, pair in enumerate(lay.ties):  # a dropped duration hides its ties too
            if c.name in pair:
                col_dims[j, lay.n_numeric + lay.tie_offset + k] = 1
        if c.name in lay.events:  # and a dropped event column the event pattern
            col_dims[j, lay.cat_slice(lay.events_index)] = 1
    return absent, col_dims


def decode(
    layout: Layout,
    domain: Domain,
    schema: TableSchema,
    out: np.ndarray,
    num_sigma: np.ndarray,
    rng: np.random.Generator,
    *,
    sampling: str,
    numeric_transform: str,
) -> pd.DataFrame:
    """Rows from decoder outputs ``out`` (n, output_dim): each column drawn from its likelihood (or its mode).

    Every random number is drawn in a fixed order (column by column), so a seed gives the same rows.
    """
    lay = layout
    n = len(out)
    like = sampling == "likelihood"
    o_num = out[:, : lay.n_numeric]
    o_bin = out[:, lay.n_numeric : lay.n_numeric + lay.n_binary]
    off = lay.n_numeric + lay.n_binary
    o_cat = []
    for k in lay.cat_sizes:
        o_cat.append(out[:, off : off + k])
        off += k
    o_miss = out[:, off : off + lay.n_missing]
    # Draw every random number in a fixed order (column by column) so a seed gives the same rows.
    cols: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}  # values before each column's own missing draw
    for c in lay.columns:
        cd = domain[c.name]
        if c.kind == "numeric":
            mu = o_num[:, c.index]
            zs = mu + num_sigma[c.index] * rng.standard_normal(n) if like else mu
            if numeric_transform == "quantile":
                # A draw within one sigma of a bound's score is that bound: point masses at a bound (e.g.
                # blast counts of 0) come back exact instead of smeared just inside it.
                snap = num_sigma[c.index] if like else 0.0
                zs = np.where(zs < _Z_LO + snap, -np.inf, np.where(zs > _Z_HI - snap, np.inf, zs))
                vals = quantile_inverse(zs, cd.bins)
            else:
                vals = zs * (cd.std if cd.std > 0 else 1.0) + cd.mean
            col: np.ndarray = vals.astype("float64")
        elif c.kind == "binary":
            p = sigmoid(o_bin[:, c.index])
            col = (rng.random(n) < p).astype("float64") if like else (p > 0.5).astype("float64")
        else:
            idx = draw_category(o_cat[c.index], rng, like)
            col = np.asarray(c.categories, dtype=object)[idx]
        present[c.name] = col
        if c.missing_index >= 0:
            pm = sigmoid(o_miss[:, c.missing_index])
            is_missing = rng.random(n) < pm if like else pm > 0.5
            col = col.astype(object) if col.dtype == object else col.copy()
            col[is_missing] = np.nan
        cols[c.name] = col
    follow_duration_missingness(cols, present, schema)
    direction = dict(zip(duration_pairs(schema), tie_pairs(schema), strict=True))
    for j, pair in enumerate(lay.ties):  # drawn after every column, so a layout without ties draws the same rows
        p = sigmoid(o_bin[:, lay.tie_offset + j])
        tie = rng.random(n) < p if like else p > 0.5
        shorter, longer = direction[pair]
        ok = tie & ~np.isnan(cols[shorter].astype("float64")) & ~np.isnan(cols[longer].astype("float64"))
        cols[shorter] = np.where(ok, cols[longer], cols[shorter])
    if lay.events:  # drawn last too; the pattern sets the events of rows where every one of them is drawn
        allowed = allowed_patterns(lay.events, schema)
        code = draw_category(np.where(allowed, o_cat[lay.events_index], -np.inf), rng, like)
        drawn = np.ones(n, dtype=bool)  # a row with an event missing keeps its per-column draws (as trained)
        for name in lay.events:
            drawn &= ~np.isnan(cols[name].astype("float64"))
        for i, name in enumerate(lay.events):
            cols[name] = np.where(drawn, ((code >> i) & 1).astype("float64"), cols[name].astype("float64"))
    return pd.DataFrame(cols)


def draw_category(logits: np.ndarray, rng: np.random.Generator, likelihood: bool) -> np.ndarray:
    """One category index per row of ``logits`` (n, k), int64 of shape (n,): drawn from their softmax with one
    uniform number per row (``likelihood``), else the most likely one. A logit of ``-inf`` is never drawn."""
    if not likelihood:
        return np.asarray(logits.argmax(axis=1))
    cum = np.cumsum(softmax(logits), axis=1)
    u = rng.random(len(logits))[:, None]
    return np.asarray(np.minimum((u > cum).sum(axis=1), logits.shape[1] - 1))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


# -- training-by-sampling ----------------------------------------------------------------------------------


def level_rows(enc: Encoded, n_binary: int | None = None,
               n_categorical: int | None = None) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """Per categorical or binary column of ``enc`` with two observed levels or more: the sampling weight of each
    level, ``log(1 + count)`` normalised (CTGAN's training-by-sampling, Xu et al., NeurIPS 2019), and the rows that
    hold it. Missing values and columns a site lacks (mask 0) hold no level. ``n_binary``: only the first that many
    binary slots are columns (the layout's ``tie_offset``; its tie slots are not sampled by); ``n_categorical``:
    likewise the categorical blocks (the layout's ``n_categorical``; its event pattern is not)."""
    out: list[tuple[np.ndarray, list[np.ndarray]]] = []
    n_cat = enc.categorical.shape[1] if n_categorical is None else n_categorical
    columns = [enc.categorical[:, j] for j in range(n_cat)]
    columns += [np.where(enc.binary_mask[:, j] > 0, enc.binary[:, j], -1).astype(np.int64)
                for j in range(enc.binary.shape[1] if n_binary is None else n_binary)]
    for codes in columns:
        rows = [np.flatnonzero(codes == level) for level in np.unique(codes[codes >= 0])]
        if len(rows) < 2:
            continue
        weight = np.log1p(np.array([len(r) for r in rows], dtype=np.float64))
        out.append((weight / weight.sum(), rows))
    return out


def sample_by_level(levels: Sequence[tuple[np.ndarray, Sequence[np.ndarray]]], n: int,
                    rng: np.random.Generator) -> np.ndarray:
    """``n`` row indices drawn by training-by-sampling: a column of ``levels`` (:func:`level_rows`) uniformly, one
    of its levels by its weight, a row of that level uniformly (with replacement), shape ``(n,)`` int64."""
    pick = rng.integers(len(levels), size=n)
    out = np.empty(n, dtype=np.int64)
    for j, (weight, rows) in enumerate(levels):
        at = np.flatnonzero(pick == j)
        chosen = rng.choice(len(rows), size=len(at), p=weight)
        for level in np.unique(chosen):
            here = at[chosen == level]
            out[here] = rows[level][rng.integers(len(rows[level]), size=len(here))]
    return out
