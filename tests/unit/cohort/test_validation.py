"""Validation collects every problem, names the column, what was found and what is valid, and never echoes a value."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, SurvivalEndpoint, TableSchema
from fedsynth.cohort.validation import check_frame, conform, read_csv_checked, validate_frame
from fedsynth.errors import ValidationError

K, R = ColumnKind, ColumnRole


def _schema() -> TableSchema:
    return TableSchema(
        (
            ColumnSpec("ID", K.CATEGORICAL, R.ID),
            ColumnSpec("AGE", K.INTEGER, lower=0, upper=120),
            ColumnSpec("HB", K.CONTINUOUS),
            ColumnSpec("SEX", K.CATEGORICAL, categories=("F", "M")),
            ColumnSpec("TP53", K.BINARY, R.GENOMIC),
            ColumnSpec("OS_YEARS", K.CONTINUOUS, R.OUTCOME),
            ColumnSpec("OS_STATUS", K.BINARY, R.OUTCOME),
        ),
        (SurvivalEndpoint("OS", "OS_YEARS", "OS_STATUS"),),
        "toy",
    )


def _good() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ID": ["p1", "p2", "p3", "p4"],
            "AGE": ["61", "70", "", "55"],
            "HB": ["9.5", "11.2", "NA", "8.1"],
            "SEX": ["F", "M", "M", np.nan],
            "TP53": ["0", "1", "0", "0"],
            "OS_YEARS": ["1.5", "2.25", "0.5", ""],
            "OS_STATUS": ["1", "0", "1", ""],
        }
    )


# A factory of failure cases: (scenario, how to break the frame, the text each problem line must hold).
CASES = [
    ("missing column", lambda d: d.drop(columns=["HB"]), ["lacks 1 column(s) of the schema: ['HB']"]),
    ("unexpected column", lambda d: d.assign(EXTRA="x"), ["1 column(s) the schema does not declare: ['EXTRA']"]),
    ("text in a number column", lambda d: d.assign(HB=["9.5", "low", "NA", "8"]), ["column 'HB': 1 value(s) are not numbers"]),
    ("fraction in an integer", lambda d: d.assign(AGE=["61.5", "70", "", "55"]), ["column 'AGE': 1 value(s) are not whole numbers"]),
    ("above the bound", lambda d: d.assign(AGE=["61", "170", "", "55"]), ["column 'AGE': 1 value(s) above the declared upper bound; valid: <= 120"]),
    ("binary not 0/1", lambda d: d.assign(TP53=["0", "2", "1", "0"]), ["column 'TP53': 1 value(s) are neither 0 nor 1"]),
    ("unknown category", lambda d: d.assign(SEX=["F", "M", "X-secret", "F"]), ["column 'SEX': 1 value(s) in 1 label(s) outside the declared categories; valid: F, M"]),
    ("all missing", lambda d: d.assign(HB=[np.nan] * 4), ["column 'HB': every value is missing"]),
    ("constant", lambda d: d.assign(HB=["9"] * 4), ["column 'HB': is constant"]),
    ("duplicate ids", lambda d: d.assign(ID=["p1", "p1", "p3", "p4"]), ["column 'ID': 1 duplicate id(s)"]),
    ("duration <= 0", lambda d: d.assign(OS_YEARS=["0", "-1", "0.5", ""]), ["endpoint 'OS': 2 duration(s) in 'OS_YEARS' are <= 0"]),
    ("event without duration", lambda d: d.assign(OS_YEARS=["1.5", "", "0.5", ""], OS_STATUS=["1", "0", "1", ""]), ["endpoint 'OS': 1 row(s) have an event in 'OS_STATUS' but no duration"]),
    ("event outside 0/1", lambda d: d.assign(OS_STATUS=["1", "3", "1", ""]), ["column 'OS_STATUS': 1 value(s) are neither 0 nor 1"]),
]


@pytest.mark.parametrize("scenario,breaker,expected", CASES, ids=[c[0] for c in CASES])
def test_validation_reports_each_failure_case(scenario, breaker, expected):
    # Setup
    data = breaker(_good())
    # Run
    problems = [str(p) for p in validate_frame(data, _schema())]
    # Assert
    for text in expected:
        assert any(text in p for p in problems), (text, problems)


def test_valid_frame_has_no_problems():
    assert validate_frame(_good(), _schema()) == []


def test_every_problem_is_listed_in_one_error_without_patient_values():
    # Setup: five problems at once, with recognisable values that must not be echoed
    data = _good().assign(
        HB=["9.5", "secret-text", "NA", "8"],
        SEX=["F", "M", "Zebra-label", "F"],
        AGE=["61", "777", "", "55"],
        TP53=["0", "31415", "1", "0"],
        EXTRA="y",
    )
    # Run
    with pytest.raises(ValidationError) as info:
        check_frame(data, _schema())
    message = str(info.value)
    # Assert
    assert message.startswith("The data (schema 'toy') has 5 problems:")
    assert len(info.value.problems) == 5
    for secret in ("secret-text", "Zebra-label", "777", "31415"):
        assert secret not in message


def test_read_csv_checked_rejects_empty_binary_and_non_csv(tmp_path: Path):
    # Setup
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    binary = tmp_path / "data.csv"
    binary.write_bytes(b"\x89PNG\x00\x00binary")
    tabbed = tmp_path / "tabs.csv"
    tabbed.write_text("a\tb\n1\t2\n3\t4\n")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b\n1,2\n3,4,5,6\n")
    headeronly = tmp_path / "header.csv"
    headeronly.write_text("a,b\n")
    # Run / Assert
    cases = {
        empty: "is empty",
        binary: "is a binary file, not text",
        tabbed: "tab-, semicolon- or pipe-separated",
        ragged: "could not be parsed as CSV",
        headeronly: "has a header but no data rows",
        tmp_path / "absent.csv": "does not exist",
    }
    for path, text in cases.items():
        with pytest.raises(ValidationError) as info:
            read_csv_checked(path)
        assert text in str(info.value), (path.name, str(info.value))


def test_read_csv_checked_reads_every_cell_as_text_with_na_tokens(tmp_path: Path):
    # Setup
    p = tmp_path / "ok.csv"
    p.write_text("a,b\n007,NA\n1.50,\n")
    # Run
    df = read_csv_checked(p)
    # Assert
    assert df["a"].tolist() == ["007", "1.50"]
    assert df["b"].isna().all()


# -- one loading rule: conform ----------------------------------------------------------------------------



@pytest.mark.parametrize("unit,half", [("days", 0.5), ("weeks", 0.5 / 7), ("months", 0.5 / (365 / 12)), ("years", 0.5 / 365)])
def test_a_zero_duration_becomes_half_a_day_in_the_endpoints_unit_with_a_count(unit, half):
    # Setup
    schema = TableSchema(
        (ColumnSpec("t", K.CONTINUOUS, R.OUTCOME, lower=0), ColumnSpec("e", K.BINARY, R.OUTCOME), ColumnSpec("x", K.CONTINUOUS)),
        (SurvivalEndpoint("OS", "t", "e", unit),),
    )
    data = pd.DataFrame({"t": ["0", "3", "0.0", "5"], "e": ["1", "0", "1", "1"], "x": ["1", "2", "3", "4"]})
    # Run
    done = conform(data, schema)
    # Assert
    assert done.data["t"].tolist() == pytest.approx([half, 3.0, half, 5.0])
    assert done.notes == (f"t == 0 for 2 patients (time-zero events) set to half a day ({half:.6f} {unit})",)


def test_negative_durations_stay_errors_after_the_time_zero_rule():
    schema = _schema()
    data = _good().assign(OS_YEARS=["0", "-1", "0.5", ""])
    with pytest.raises(ValidationError) as info:
        conform(data, schema)
    assert "endpoint 'OS': 1 duration(s) in 'OS_YEARS' are <= 0" in str(info.value)


def test_non_finite_and_beyond_float32_values_are_out_of_range_problems_without_values_or_warnings():
    # Setup
    data = _good().assign(HB=["inf", "1e308", "-Infinity", "3e39"], AGE=["61", "1e308", "", "55"])
    # Run
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value warnings on the way
        problems = [str(p) for p in validate_frame(data, _schema())]
    # Assert
    assert "column 'HB': 2 value(s) are infinite; valid: finite numbers" in " ".join(problems)
    assert "column 'HB': 2 value(s) are beyond the float32 range" in " ".join(problems)
    assert "column 'AGE': 1 value(s) are beyond the float32 range" in " ".join(problems)
    assert not any(v in " ".join(problems) for v in ("1e308", "3e39", "inf;"))


def test_constant_and_all_missing_columns_are_left_out_with_a_note_when_loading():
    # Setup
    data = _good().assign(HB=[np.nan] * 4, TP53=["0"] * 4)
    # Run
    done = conform(data, _schema())
    # Assert
    assert "HB" not in done.schema and "TP53" not in done.schema
    assert "left out 'HB': every value is missing" in done.notes
    assert "left out 'TP53': constant (one value in every row)" in done.notes
    assert list(done.data.columns) == ["ID", "AGE", "SEX", "OS_YEARS", "OS_STATUS"]


def test_an_all_missing_endpoint_column_takes_its_endpoint_out_with_a_note():
    data = _good().assign(OS_STATUS=[np.nan] * 4)
    done = conform(data, _schema())
    assert done.schema.endpoints == ()
    assert "OS_YEARS" not in done.schema
    assert "endpoints left out (a column is all missing): ['OS']" in done.notes


def test_coded_labels_outside_the_codes_are_counted_not_echoed():
    schema = TableSchema((ColumnSpec("smoker", K.BINARY, codes=(("yes", 1.0), ("no", 0.0))), ColumnSpec("x", K.CONTINUOUS)))
    data = pd.DataFrame({"smoker": ["yes", "no", "Maybe-secret", "YES"], "x": ["1", "2", "3", "4"]})
    with pytest.raises(ValidationError) as info:
        conform(data, schema)
    assert "column 'smoker': 1 value(s) in 1 label(s) not listed in its codes; valid: yes, no" in str(info.value)
    assert "Maybe-secret" not in str(info.value)


def test_a_file_fedsynth_wrote_in_0_1_reads_with_the_coded_schema():
    # Setup: codes 1/2 in the raw file; a site file fedsynth wrote holds 0/1
    schema = TableSchema((ColumnSpec("flag", K.BINARY, codes=(("1", 0.0), ("2", 1.0))), ColumnSpec("x", K.CONTINUOUS)))
    raw = pd.DataFrame({"flag": ["2", "1", "2"], "x": ["1", "2", "3"]})
    written = pd.DataFrame({"flag": ["1", "0", "1"], "x": ["1", "2", "3"]})
    # Run / Assert
    assert conform(raw, schema).data["flag"].tolist() == [1.0, 0.0, 1.0]
    assert conform(written, schema).data["flag"].tolist() == [1.0, 0.0, 1.0]
