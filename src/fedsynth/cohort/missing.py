"""Missing-value tokens of text tables, in the one module every other cohort module may import."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Tokens read as missing (pandas' defaults plus the empty string).
NA_VALUES = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "#N/A", "."]
_NA = frozenset(NA_VALUES)


def normalise_missing(values: pd.Series) -> pd.Series:
    """Text missing tokens (``""``, ``NA``, ...; see :data:`NA_VALUES`) as NaN; other values unchanged.

    Parameters
    ----------
    values : pandas.Series
        One column, of any dtype; only ``object`` columns are changed.

    Returns
    -------
    pandas.Series
        The same index, missing tokens replaced by NaN (surrounding spaces ignored).
    """
    if values.dtype != object:
        return values
    # Each distinct value is read once (a column holds few distinct values and a sampled table many rows).
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    token = np.array([isinstance(u, str) and u.strip() in _NA for u in uniques] + [False], dtype=bool)
    return values.mask(token[codes])
