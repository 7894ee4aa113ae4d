"""Schema: inference from common namings, YAML overrides, round trips and dtype coercion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.cohort.inference import infer_schema
from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, SurvivalEndpoint, TableSchema
from fedsynth.errors import ValidationError


@pytest.mark.parametrize(
    "duration,event,endpoint",
    [
        ("OS_YEARS", "OS_STATUS", "OS"),
        ("os", "os_status", "OS"),
        ("time", "event", "survival"),
        ("pfs_months", "pfs_event", "PFS"),
    ],
)
def test_infer_schema_recognises_common_survival_namings(duration, event, endpoint):
    # Setup
    data = pd.DataFrame({duration: [1.5, 2.0, 0.3, 4.1], event: [1, 0, 1, 0], "age": [50, 60, 70, 80]})
    # Run
    schema = infer_schema(data)
    # Assert
    assert [(e.name, e.duration_col, e.event_col) for e in schema.endpoints] == [(endpoint, duration, event)]
    assert schema[duration].role is ColumnRole.OUTCOME
    assert schema[event].kind is ColumnKind.BINARY
    assert schema["age"].kind is ColumnKind.INTEGER


def test_infer_schema_finds_a_gene_panel_ids_and_categories():
    # Setup
    data = pd.DataFrame(
        {
            "patient_id": ["a", "b", "c", "d"],
            "TP53": [0, 1, 0, 0],
            "MLL_PTD": [0, 0, 1, 0],
            "SF3B1": [1, 0, 0, 1],
            "smoker": [0, 1, 1, 0],
            "sex": ["F", "M", "M", "F"],
            "hb": [9.5, 10.1, 11.0, 8.2],
        }
    )
    # Run
    schema = infer_schema(data)
    # Assert
    assert schema.genomic_columns == ["TP53", "MLL_PTD", "SF3B1"]
    assert schema["smoker"].role is ColumnRole.CLINICAL and schema["smoker"].kind is ColumnKind.BINARY
    assert schema.id_column == "patient_id"
    assert schema["sex"].categories == ("F", "M")
    assert schema["hb"].kind is ColumnKind.CONTINUOUS


def test_overrides_change_kinds_drop_columns_and_report_every_problem():
    # Setup
    schema = infer_schema(pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "x"], "c": [0.1, 0.2, 0.3]}))
    # Run
    changed = schema.with_overrides({"columns": {"a": {"kind": "continuous", "role": "genomic"}}, "drop": ["c"]})
    # Assert
    assert changed.column_names == ["a", "b"]
    assert changed["a"].kind is ColumnKind.CONTINUOUS and changed["a"].role is ColumnRole.GENOMIC
    with pytest.raises(ValidationError) as info:
        schema.with_overrides({"columns": {"a": {"kind": "number"}, "b": {"colour": 1}}, "drop": ["zz"], "extra": 1})
    text = str(info.value)
    assert "4 problems" in text
    assert "kind must be one of continuous, integer, categorical, binary; got 'number'" in text
    assert "unknown key(s) ['colour']" in text
    assert "drop 'zz': no such column" in text


def test_schema_round_trips_through_yaml(tmp_path):
    # Setup
    schema = TableSchema(
        (
            ColumnSpec("t", ColumnKind.CONTINUOUS, ColumnRole.OUTCOME, lower=0),
            ColumnSpec("e", ColumnKind.BINARY, ColumnRole.OUTCOME),
            ColumnSpec("g", ColumnKind.CATEGORICAL, categories=("lo", "hi")),
        ),
        (SurvivalEndpoint("OS", "t", "e"),),
        "demo",
    )
    # Run
    schema.to_yaml(tmp_path / "s.yaml")
    again = TableSchema.from_yaml(tmp_path / "s.yaml")
    # Assert
    assert again == schema


def test_schema_rejects_endpoint_on_unknown_or_wrong_kind_column():
    with pytest.raises(ValidationError) as info:
        TableSchema(
            (ColumnSpec("t", ColumnKind.CATEGORICAL),),
            (SurvivalEndpoint("OS", "t", "e"),),
        )
    assert "refers to unknown column 'e'" in str(info.value)
    assert "column 't' is categorical" in str(info.value)


def test_coerce_gives_canonical_dtypes():
    # Setup
    schema = TableSchema(
        (ColumnSpec("n", ColumnKind.INTEGER), ColumnSpec("c", ColumnKind.CATEGORICAL), ColumnSpec("b", ColumnKind.BINARY))
    )
    data = pd.DataFrame({"n": ["1", None, "3"], "c": [1.0, np.nan, 2.0], "b": ["0", "1", None]})
    # Run
    out = schema.coerce(data)
    # Assert
    assert out["n"].dtype == np.float64 and out["b"].dtype == np.float64
    assert out["c"].tolist()[0] == "1" and pd.isna(out["c"].tolist()[1])


def test_coerce_labels_each_value_as_its_own_kind_whatever_the_column_mixes():
    # Setup: label columns of every mix a file or a model may give (labels are formatted once per distinct value,
    # except where pandas would merge distinct values: True == 1)
    schema = TableSchema(tuple(ColumnSpec(c, ColumnKind.CATEGORICAL) for c in "abcdef"))
    data = pd.DataFrame({
        "a": [1.0, 2.0, np.nan, 3.5],
        "b": pd.Series(["x", None, " NA ", pd.NA], dtype=object),
        "c": pd.Series([True, 1, "y", None], dtype=object),
        "d": pd.Series(["1", 1.0, 1, np.float32(2.0)], dtype=object),
        "e": pd.Series([".", "nan ", "", "z"], dtype=object),
        "f": [4, 5, 4, 6],
    })
    # Run
    out = schema.coerce(data)
    # Assert: whole numbers without '.0', missing and missing tokens as NaN, True kept apart from 1
    def labels(col: str) -> list[object]:
        return [None if pd.isna(v) else v for v in out[col]]

    assert labels("a") == ["1", "2", None, "3.5"]
    assert labels("b") == ["x", None, None, None]
    assert labels("c") == ["True", "1", "y", None]
    assert labels("d") == ["1", "1", "1", "2"]
    assert labels("e") == [None, None, None, "z"]
    assert labels("f") == ["4", "5", "4", "6"]
    assert all(out[c].dtype == object for c in "abcdef")
