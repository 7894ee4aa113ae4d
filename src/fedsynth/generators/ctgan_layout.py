"""CTGAN's layout on the shared domain: output blocks, the conditional vector, a seeded data sampler, encoding.

Numeric columns use mode-specific normalisation with the domain's mixture modes (a scalar in [-1, 1] plus the
mode's one-hot); categorical and 0/1 columns are one-hot over the domain's categories; a column with missing
values has one more state, "missing". The layout depends only on the shared domain, so every site builds the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from ctgan.data_sampler import DataSampler
from ctgan.data_transformer import SpanInfo

from fedsynth.cohort.schema import ColumnKind, TableSchema
from fedsynth.encoding.domain import ColumnDomain, Domain
from fedsynth.errors import Problem, ValidationError
from fedsynth.generators.base import follow_duration_missingness

# -- output layout ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """The output dims of one model column.

    Numeric: ``[scalar (tanh)] + [one-hot over modes (+ "missing")]``; discrete: ``[one-hot over categories
    (+ "missing")]``. The layout depends only on the shared domain, so every site builds the same one.
    """

    column: str
    numeric: bool
    start: int
    width: int
    has_missing: bool
    categories: tuple[str, ...] = ()
    means: tuple[float, ...] = ()
    stds: tuple[float, ...] = ()
    weights: tuple[float, ...] = ()

    @property
    def n_states(self) -> int:
        """Width of the one-hot part (modes or categories, plus the missing state)."""
        return self.width - 1 if self.numeric else self.width

    @property
    def onehot_start(self) -> int:
        return self.start + 1 if self.numeric else self.start

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "numeric": self.numeric,
            "start": self.start,
            "width": self.width,
            "has_missing": self.has_missing,
            "categories": list(self.categories),
            "n_modes": len(self.means),
        }


def build_layout(domain: Domain, columns: Sequence[str]) -> list[Block]:
    blocks: list[Block] = []
    start = 0
    for name in columns:
        col: ColumnDomain = domain[name]
        if col.is_numeric:
            if col.modes is not None:
                w, m, s = col.modes.weights, col.modes.means, col.modes.stds
            else:
                # A domain built without mixture modes: one mode from the pooled moments.
                w, m, s = (1.0,), (col.mean,), (max(col.std, 1e-3),)
            width = 1 + len(m) + int(col.has_missing)
            blocks.append(Block(name, True, start, width, col.has_missing, (), tuple(m), tuple(s), tuple(w)))
        else:
            width = len(col.categories) + int(col.has_missing)
            blocks.append(Block(name, False, start, width, col.has_missing, tuple(col.categories)))
        start += width
    return blocks


def conditional_blocks(
    layout: Sequence[Block], schema: TableSchema, choice: str | Sequence[str]
) -> list[int]:
    """Indices (into ``layout``) of the discrete blocks that make up the conditional vector."""
    discrete = [i for i, b in enumerate(layout) if not b.numeric]
    if isinstance(choice, str):
        if choice == "all":
            return discrete
        if choice == "none":
            return []
        if choice == "categorical":
            return [i for i in discrete if schema[layout[i].column].kind is ColumnKind.CATEGORICAL]
        # "auto": multi-category columns and the survival events; 0/1 genes stay free (see the module notes).
        events = {ep.event_col for ep in schema.endpoints}
        return [
            i
            for i in discrete
            if layout[i].column in events
            or (schema[layout[i].column].kind is ColumnKind.CATEGORICAL and len(layout[i].categories) > 2)
        ]
    wanted = set(choice)
    return [i for i in discrete if layout[i].column in wanted]


# -- the data sampler, seeded ---------------------------------------------------------------------------


class SeededDataSampler(DataSampler):  # type: ignore[misc]
    """ctgan's :class:`DataSampler` (row ids per category, log-frequency category probabilities) drawing from
    a ``numpy.random.Generator`` instead of numpy's global state, so training is reproducible."""

    def __init__(self, data: np.ndarray, output_info: list[list[SpanInfo]], log_frequency: bool,
                 rng: np.random.Generator) -> None:
        super().__init__(data, output_info, log_frequency)
        self.rng = rng

    def sample_condvec(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        if self._n_discrete_columns == 0:
            return None
        col_id = self.rng.integers(0, self._n_discrete_columns, size=batch)
        cond = np.zeros((batch, self._n_categories), dtype="float32")
        mask = np.zeros((batch, self._n_discrete_columns), dtype="float32")
        mask[np.arange(batch), col_id] = 1
        probs = self._discrete_column_category_prob[col_id]
        r = self.rng.random(batch)[:, None]
        cat_in_col = (probs.cumsum(axis=1) > r).argmax(axis=1)
        cond[np.arange(batch), self._discrete_column_cond_st[col_id] + cat_in_col] = 1
        return cond, mask, col_id, cat_in_col

    def sample_data(self, data: np.ndarray, n: int, col: np.ndarray | None, opt: np.ndarray | None) -> np.ndarray:
        if col is None or opt is None:
            return data[self.rng.integers(0, len(data), size=n)]
        idx = [rows[self.rng.integers(0, len(rows))] for rows in (self._rid_by_cat_cols[c][o] for c, o in zip(col, opt))]
        return data[np.asarray(idx, dtype=np.int64)]


# -- encoding and decoding -------------------------------------------------------------------------------


def encode(
    layout: Sequence[Block],
    schema: TableSchema,
    data: pd.DataFrame,
    rng: np.random.Generator,
    *,
    out: np.ndarray | None = None,
    numeric: bool = True,
    discrete: bool = True,
    owner: str = "CTGANGenerator",
) -> np.ndarray:
    """The site's rows in the shared layout; columns the site lacks stay all-zero (masked in training).

    ``numeric``/``discrete`` choose which blocks to (re)write into ``out``: discrete blocks are fixed, the
    numeric ones are redrawn each epoch (a value's mode is drawn by its responsibility).
    """
    if out is None:
        out = np.zeros((len(data), sum(b.width for b in layout)), dtype=np.float32)
    rows = np.arange(len(data))
    problems: list[Problem] = []
    for b in layout:
        if b.column not in data.columns or (b.numeric and not numeric) or (not b.numeric and not discrete):
            continue
        s = data[b.column]
        miss = s.isna().to_numpy()
        if miss.any() and not b.has_missing:
            problems.append(Problem(
                f"column {b.column!r}", f"has {int(miss.sum())} missing values",
                "no missing values: the shared domain has no missing state for this column",
                "rebuild the domain from summaries of every site's data",
            ))
            continue
        if b.numeric:
            x = s.to_numpy(dtype="float64")
            mode = np.zeros(len(x), dtype=np.int64)
            scalar = np.zeros(len(x), dtype=np.float64)
            obs = ~miss
            if obs.any():
                xo = x[obs][:, None]
                mu, sd, w = np.asarray(b.means), np.asarray(b.stds), np.asarray(b.weights)
                logp = np.log(np.maximum(w, 1e-12)) - np.log(sd) - 0.5 * ((xo - mu) / sd) ** 2
                p = np.exp(logp - logp.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                # Draw each value's mode by its posterior responsibility, as CTGAN's normaliser does.
                chosen = (p.cumsum(axis=1) > rng.random(len(xo))[:, None]).argmax(axis=1)
                mode[obs] = chosen
                scalar[obs] = np.clip((xo[:, 0] - mu[chosen]) / (4 * sd[chosen]), -1.0, 1.0)
            mode[miss] = len(b.means)
            out[:, b.start : b.start + b.width] = 0.0
            out[:, b.start] = scalar
            out[rows, b.onehot_start + mode] = 1.0
        else:
            labels = domain_labels(s, schema[b.column].kind)
            index = {c: i for i, c in enumerate(b.categories)}
            idx = np.array([index.get(v, -1) if v is not None else len(b.categories) for v in labels])
            unknown = int(((idx == -1) & ~miss).sum())
            if unknown:
                problems.append(Problem(
                    f"column {b.column!r}", f"has {unknown} values outside the shared domain's categories",
                    ", ".join(b.categories),
                ))
                continue
            out[rows, b.start + idx] = 1.0
    if problems:
        raise ValidationError(f"Training data for {owner}", problems)
    return out


def decode(
    layout: Sequence[Block],
    domain: Domain,
    schema: TableSchema,
    columns: Sequence[str],
    scores: np.ndarray,
    *,
    calibrate_missing: bool,
) -> pd.DataFrame:
    """Rows from generator scores: tanh scalars and, per one-hot, logits plus Gumbel noise (the state is
    their argmax, as after ctgan's gumbel softmax).

    With ``calibrate_missing`` the missing state of each column goes to the rows whose missing score most
    exceeds their best other state, as many as the domain's pooled missing rate asks: the model decides
    *which* rows lack a value (the learnt pattern), the shared domain fixes *how many*. An endpoint's event is
    missing exactly where its duration is (:func:`~fedsynth.generators.base.follow_duration_missingness`).
    """
    n = len(scores)
    cols: dict[str, Any] = {}
    present: dict[str, Any] = {}  # event columns decoded as if their own missing state were never chosen
    events = {ep.event_col for ep in schema.endpoints}
    for b in layout:
        z = scores[:, b.onehot_start : b.onehot_start + b.n_states]
        if b.has_missing:
            best_other = z[:, :-1].argmax(axis=1)
            margin = z[:, -1] - z[np.arange(n), best_other]
            if calibrate_missing:
                k = round(domain[b.column].missing_rate * n)
                missing = np.zeros(n, dtype=bool)
                if k:
                    missing[np.argsort(-margin, kind="stable")[:k]] = True
            else:
                missing = margin > 0
            states = np.where(missing, b.n_states - 1, best_other)
        else:
            best_other = states = z.argmax(axis=1)
        if b.numeric:
            k_modes = len(b.means)
            safe = np.minimum(states, k_modes - 1)
            mu, sd = np.asarray(b.means)[safe], np.asarray(b.stds)[safe]
            x = np.clip(scores[:, b.start], -1, 1) * 4 * sd + mu
            cols[b.column] = np.where(states == k_modes, np.nan, x)
        else:
            cats = np.asarray(list(b.categories) + [None], dtype=object)
            decodings = [(cols, states)] + ([(present, best_other)] if b.column in events else [])
            for target, st in decodings:
                values = cats[st]
                if schema[b.column].kind is ColumnKind.BINARY:
                    target[b.column] = np.array([np.nan if v is None else float(v) for v in values])
                else:
                    target[b.column] = np.array([np.nan if v is None else v for v in values], dtype=object)
    follow_duration_missingness(cols, present, schema)
    return pd.DataFrame(cols, columns=list(columns))


def domain_labels(s: pd.Series, kind: ColumnKind) -> list[str | None]:
    """Domain labels of a categorical/binary column (binary 0.0/1.0 -> "0"/"1"); missing -> None."""
    out: list[str | None] = []
    for v in s.tolist():
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out.append(None)
        elif kind is ColumnKind.BINARY:
            out.append(str(int(float(v))))
        else:
            out.append(str(v))
    return out
