"""Exported tables: whole-number columns without '.0', atomic writes that never leave a half file."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedsynth.cohort.io import for_export, write_csv
from fedsynth.cohort.schema import ColumnKind, ColumnSpec, TableSchema


def test_integer_and_binary_columns_are_written_as_whole_numbers(tmp_path):
    # Setup
    schema = TableSchema((ColumnSpec("AGE", ColumnKind.INTEGER), ColumnSpec("TP53", ColumnKind.BINARY),
                          ColumnSpec("HB", ColumnKind.CONTINUOUS)))
    frame = pd.DataFrame({"AGE": [61.0, np.nan], "TP53": [1.0, 0.0], "HB": [10.0, 9.5]})
    # Run
    write_csv(frame, tmp_path / "out.csv", schema)
    # Assert
    assert (tmp_path / "out.csv").read_text().splitlines() == ["AGE,TP53,HB", "61,1,10.0", ",0,9.5"]
    assert not list(tmp_path.glob("*.tmp"))


def test_without_a_schema_only_all_whole_float_columns_become_integers():
    out = for_export(pd.DataFrame({"a": [1.0, 2.0], "b": [1.5, 2.0], "c": ["x", "y"]}))
    assert str(out["a"].dtype) == "Int64" and out["b"].dtype == np.float64 and out["c"].dtype == object
