"""Missing-value tokens of text tables, in the one module every other cohort module may import."""

from __future__ import annotations

import pandas as pd

#: Tokens read as missing (pandas' defaults plus the empty string).
NA_VALUES = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "#N/A", "."]


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
    stripped = values.map(lambda v: v.strip() if isinstance(v, str) else v)
    return values.mask(stripped.isin(NA_VALUES))
