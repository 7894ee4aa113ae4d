"""Schema inference on files nobody here has seen: every guess is made from names and values, and said."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsynth.cohort.datasets import load_table
from fedsynth.cohort.inference import infer
from fedsynth.cohort.schema import ColumnKind, ColumnRole, TableSchema


def _write(tmp_path: Path, frame: pd.DataFrame, name: str = "cohort.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _survival_frame(duration: str, event: str, events: list[object], durations: list[float] | None = None) -> pd.DataFrame:
    n = len(events)
    return pd.DataFrame({
        duration: durations or [1.5, 2.0, 0.3, 4.1, 2.2, 0.9][:n],
        event: events,
        "hb": [9.5, 10.1, 11.0, 8.2, 12.3, 9.9][:n],
    })


@pytest.mark.parametrize(
    "duration,event,endpoint,unit",
    [
        ("OS", "OS_STATUS", "OS", "years"),               # bare endpoint name + status
        ("OS", "OS_STAT", "OS", "years"),                 # STAT abbreviation
        ("efs_months", "EFS_event", "EFS", "months"),     # unit in the name, mixed case
        ("PFS_M", "pfs.status", "PFS", "months"),         # one-letter unit, dotted status
        ("os_days", "os_e", "OS", "days"),
        ("futime", "fustat", "survival", "years"),        # R's survival::ovarian naming
        ("DFS_WEEKS", "DFS_IND", "DFS", "weeks"),
    ],
)
def test_survival_pairs_under_common_names(duration, event, endpoint, unit):
    # Setup
    data = _survival_frame(duration, event, [1, 0, 1, 0, 1, 1])
    # Run
    result = infer(data)
    # Assert
    ep = result.schema.endpoints
    assert [(e.name, e.duration_col, e.event_col, e.time_unit) for e in ep] == [(endpoint, duration, event, unit)]
    assert any(note.startswith("survival endpoints:") for note in result.notes)


def test_a_censoring_flag_is_read_as_the_complement_of_the_event(tmp_path):
    # Setup: 1 = censored in a *_CENSOR column
    path = _write(tmp_path, _survival_frame("OS_YEARS", "OS_CENSOR", [1, 0, 1, 0, 0, 0]))
    # Run
    cohort = load_table(path)
    # Assert: the event is 1 where the file says 0
    assert cohort.data["OS_CENSOR"].tolist() == [0.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    assert any("censoring flag (1 = censored)" in n for n in cohort.notes)


@pytest.mark.parametrize(
    "labels,expected",
    [
        (["TRUE", "FALSE", "TRUE", "TRUE", "FALSE", "FALSE"], [1, 0, 1, 1, 0, 0]),
        (["yes", "no", "Yes", "yes", "NO", "no"], [1, 0, 1, 1, 0, 0]),
        (["dead", "alive", "dead", "dead", "alive", "alive"], [1, 0, 1, 1, 0, 0]),
        ([2, 1, 2, 2, 1, 1], [1, 0, 1, 1, 0, 0]),  # R's survival: 1 = censored, 2 = dead
    ],
    ids=["true-false", "yes-no", "dead-alive", "1-2"],
)
def test_event_columns_in_words_or_1_2_are_read_with_a_recorded_mapping(tmp_path, labels, expected):
    # Setup
    path = _write(tmp_path, _survival_frame("time", "status", labels))
    # Run
    cohort = load_table(path)
    # Assert
    assert cohort.schema.endpoints[0].event_col == "status"
    assert cohort.schema["status"].codes is not None
    assert cohort.data["status"].tolist() == expected
    assert any("'status' read as" in n for n in cohort.notes)


def test_clinical_binaries_in_words_keep_their_codes_in_the_schema_file(tmp_path):
    # Setup
    frame = pd.DataFrame({"smoker": ["Y", "N", "N", "Y"], "prior_mds": ["positive", "negative", "negative", "negative"],
                          "hb": [9.1, 10.2, 11.3, 8.4]})
    path = _write(tmp_path, frame)
    # Run
    cohort = load_table(path)
    schema_file = tmp_path / "schema.yaml"
    cohort.schema.to_yaml(schema_file)
    again = load_table(path, schema=TableSchema.from_yaml(schema_file))
    # Assert
    assert cohort.data["smoker"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert again.data["prior_mds"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert TableSchema.from_yaml(schema_file)["smoker"].codes == (("Y", 1.0), ("N", 0.0))


def test_gene_columns_with_affixes_or_in_lower_case_form_a_panel():
    # Setup: mut_ prefix, _mut suffix, lower case with a digit, and a letters-only symbol inside the panel
    rng = np.random.default_rng(0)
    cols = ["mut_TP53", "SF3B1_mut", "asxl1", "bcor", "runx1", "smoker"]
    data = pd.DataFrame({c: rng.integers(0, 2, 20) for c in cols})
    data["age"] = rng.integers(40, 90, 20)
    # Run
    result = infer(data)
    # Assert
    assert result.schema.genomic_columns == ["mut_TP53", "SF3B1_mut", "asxl1", "bcor", "runx1"]
    assert result.schema["smoker"].role is ColumnRole.CLINICAL
    assert any("gene panel" in n for n in result.notes)


def test_sex_coded_1_2_is_categorical_and_a_record_number_is_the_identifier():
    # Setup
    data = pd.DataFrame({
        "Nr": [5001, 5002, 5003, 5004, 5005, 5006],
        "Gender": [1, 2, 2, 1, 2, 1],
        "age": [61, 72, 55, 80, 67, 49],
    })
    # Run
    result = infer(data)
    # Assert
    assert result.schema["Gender"].kind is ColumnKind.CATEGORICAL
    assert result.schema["Gender"].categories == ("1", "2")
    assert result.schema.id_column == "Nr"
    assert result.schema["age"].kind is ColumnKind.INTEGER
    assert any("'Nr' holds a distinct value in every row" in n for n in result.notes)


def test_constant_all_missing_dates_and_free_text_are_left_out_with_a_note_and_kept_in_the_schema(tmp_path):
    # Setup
    n = 60
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({
        "country": ["NL"] * n,
        "FLT3_ITD": [0] * n,
        "unused": [""] * n,
        "diagnosis_date": pd.date_range("2019-01-01", periods=n, freq="5D").strftime("%d/%m/%Y"),
        "note": [f"patient seen {i} times" for i in range(n)],
        "hb": np.round(rng.normal(10, 1, n), 1),
        "plt": rng.integers(20, 300, n),
    })
    path = _write(tmp_path, frame)
    # Run
    cohort = load_table(path)
    schema_file = tmp_path / "schema.yaml"
    cohort.schema.to_yaml(schema_file)
    again = load_table(path, schema=TableSchema.from_yaml(schema_file))  # the unedited schema loads the file
    # Assert
    assert cohort.schema.column_names == ["hb", "plt"]
    reasons = {d.name: d.reason for d in cohort.schema.dropped}
    assert reasons["country"] == "constant (one value in every row)"
    assert reasons["FLT3_ITD"] == "constant (one value in every row)"
    assert reasons["unused"] == "every value is missing"
    assert reasons["diagnosis_date"].startswith("a date")
    assert reasons["note"].startswith("free text")
    assert "left out 'diagnosis_date': a date" in " ".join(cohort.notes)
    assert again.schema.column_names == ["hb", "plt"]
    assert set(frame.columns) == set(again.schema.column_names) | set(again.schema.dropped_names)


def test_post_baseline_columns_are_flagged_listed_and_editable(tmp_path):
    # Setup
    frame = pd.DataFrame({
        "hb": [9.1, 10.2, 11.3, 8.4, 9.9],
        "received_HMA": [1, 0, 0, 1, 1],
        "BestResponse": ["CR", "PR", "SD", "PR", "CR"],
        "allo_sct": [0, 0, 1, 1, 0],
    })
    path = _write(tmp_path, frame)
    # Run
    cohort = load_table(path)
    edited = cohort.schema.with_overrides({"columns": {"received_HMA": {"baseline": True}}})
    # Assert
    assert cohort.schema.post_baseline_columns == ["received_HMA", "BestResponse", "allo_sct"]
    assert cohort.schema.to_dict()["columns"][1]["baseline"] is False
    assert edited.post_baseline_columns == ["BestResponse", "allo_sct"]
    assert any("recorded after baseline" in n for n in cohort.notes)


def test_a_time_unit_not_in_the_name_is_guessed_from_the_values_and_said():
    # Setup: durations in days under a unit-less name
    data = _survival_frame("survival_time", "death", [1, 0, 1, 0, 1, 0],
                           durations=[400.0, 1200.0, 35.0, 2400.0, 800.0, 150.0])
    # Run
    result = infer(data)
    # Assert
    assert result.schema.endpoints[0].time_unit == "days"
    assert any("guessed as days" in n for n in result.notes)


def test_a_schema_file_drops_columns_by_role_ignore_or_drop(tmp_path):
    # Setup
    frame = pd.DataFrame({"hb": [9.1, 10.2, 11.3], "plt": [100, 150, 90], "wbc": [3.1, 4.2, 5.0]})
    path = _write(tmp_path, frame)
    schema_file = tmp_path / "schema.yaml"
    schema_file.write_text(
        "name: mine\n"
        "columns:\n"
        "  - {name: hb, kind: continuous}\n"
        "  - {name: plt, kind: integer, role: ignore}\n"
        "drop: [wbc]\n"
    )
    # Run
    cohort = load_table(path, schema=TableSchema.from_yaml(schema_file))
    # Assert
    assert list(cohort.data.columns) == ["hb"]
    assert cohort.schema.dropped_names == ["plt", "wbc"]
    assert "left out as the schema's drop list says: ['plt', 'wbc']" in cohort.notes


def test_short_ranges_are_labels_not_dates():
    data = pd.DataFrame({"grade": ["1-2", "3-4", "1-2", "5-6"], "seen": ["2020-01-03", "2021-05-06", "2019-12-31", "2020-02-02"],
                         "x": [1.5, 2.5, 3.5, 4.5]})
    result = infer(data)
    assert result.schema["grade"].categories == ("1-2", "3-4", "5-6")
    assert result.schema.dropped_names == ["seen"]
