"""Derived columns: deterministic functions of other columns, recomputed instead of sampled.

A schema column with ``derived: <name>`` is never learnt by a generator. After sampling (and when a cohort is
loaded) :func:`add_derived` recomputes it from the columns it depends on, so a synthetic patient's risk group
always agrees with their own blood counts, blasts and karyotype.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from fedsynth.cohort.schema import TableSchema
from fedsynth.errors import Problem, ValidationError

#: IPSS-R cytogenetic risk points (Greenberg et al., Blood 2012).
_CYTO_POINTS = {"Very-Good": 0.0, "Good": 1.0, "Int": 2.0, "Poor": 3.0, "Very-Poor": 4.0}
IPSSR_CATEGORIES = ("Very-Low", "Low", "Int", "High", "Very-High")


def ipss_r_score(data: pd.DataFrame) -> pd.Series:
    """IPSS-R score from ``CYTO_IPSSR``, ``BM_BLAST`` (%), ``HB`` (g/dL), ``PLT`` and ``ANC`` (x10^9/L).

    Missing when any input is missing (the original study imputed some inputs; we do not).
    """
    cyto = data["CYTO_IPSSR"].map(_CYTO_POINTS).astype("float64")
    blast = pd.to_numeric(data["BM_BLAST"], errors="coerce")
    hb = pd.to_numeric(data["HB"], errors="coerce")
    plt = pd.to_numeric(data["PLT"], errors="coerce")
    anc = pd.to_numeric(data["ANC"], errors="coerce")
    blast_pts = np.select([blast <= 2, blast < 5, blast <= 10], [0.0, 1.0, 2.0], 3.0)
    hb_pts = np.select([hb >= 10, hb >= 8], [0.0, 1.0], 1.5)
    plt_pts = np.select([plt >= 100, plt >= 50], [0.0, 0.5], 1.0)
    anc_pts = np.where(anc >= 0.8, 0.0, 0.5)
    score = cyto + blast_pts + hb_pts + plt_pts + anc_pts
    missing = cyto.isna() | blast.isna() | hb.isna() | plt.isna() | anc.isna()
    return score.mask(missing)


def ipss_r_category(data: pd.DataFrame) -> pd.Series:
    """IPSS-R risk group: Very-Low (<= 1.5), Low (<= 3), Int (<= 4.5), High (<= 6), Very-High (> 6)."""
    score = ipss_r_score(data)
    cat = pd.cut(score, [-np.inf, 1.5, 3.0, 4.5, 6.0, np.inf], labels=list(IPSSR_CATEGORIES))
    return cat.astype("object").where(score.notna(), np.nan)


#: Registered derivations: name -> (function, columns it needs).
DERIVATIONS: dict[str, tuple[Callable[[pd.DataFrame], pd.Series], tuple[str, ...]]] = {
    "ipss_r_category": (ipss_r_category, ("CYTO_IPSSR", "BM_BLAST", "HB", "PLT", "ANC")),
    "ipss_r_score": (ipss_r_score, ("CYTO_IPSSR", "BM_BLAST", "HB", "PLT", "ANC")),
}


def check_derivations(schema: TableSchema) -> list[Problem]:
    """Problems with the schema's derived columns: unknown derivation or an input not in the schema."""
    problems = []
    for name in schema.derived_columns:
        key = schema[name].derived
        if key not in DERIVATIONS:
            problems.append(
                Problem(f"column {name!r}", f"unknown derivation {key!r}", valid=", ".join(sorted(DERIVATIONS)))
            )
            continue
        lacking = [c for c in DERIVATIONS[key][1] if c not in schema or c in schema.derived_columns]
        if lacking:
            problems.append(
                Problem(f"column {name!r}", f"derivation {key!r} needs model columns {lacking}")
            )
    return problems


def add_derived(data: pd.DataFrame, schema: TableSchema) -> pd.DataFrame:
    """Return ``data`` with every derived column of ``schema`` (re)computed, in schema column order."""
    problems = check_derivations(schema)
    if problems:
        raise ValidationError("Derived columns", problems)
    out = data.copy()
    for name in schema.derived_columns:
        func, _ = DERIVATIONS[schema[name].derived]  # type: ignore[index]
        out[name] = func(out)
    order = [c for c in schema.column_names if c in out.columns]
    rest = [c for c in out.columns if c not in order]
    return out[order + rest]
