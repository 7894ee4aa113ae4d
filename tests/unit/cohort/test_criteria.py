"""Eligibility criteria files: inclusion and exclusion become sampling inputs that select the hand-picked rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsynth.cohort.conditions import check_sampling_inputs
from fedsynth.cohort.criteria import read_criteria
from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, TableSchema
from fedsynth.errors import ValidationError

K, R = ColumnKind, ColumnRole


def _schema() -> TableSchema:
    return TableSchema((
        ColumnSpec("AGE", K.INTEGER),
        ColumnSpec("RISK", K.CATEGORICAL, categories=("Low", "High", "Very-High")),
        ColumnSpec("TP53", K.BINARY, R.GENOMIC),
        ColumnSpec("HB", K.CONTINUOUS),
        ColumnSpec("treated", K.BINARY, baseline=False),
    ))


def test_inclusion_and_exclusion_select_the_expected_rows(tmp_path: Path) -> None:
    # Setup
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ninclusion:\n  categories: {RISK: [High, Very-High], TP53: [0]}\n"
                    "  ranges: {AGE: {min: 65}}\nexclusion:\n  ranges: {HB: {max: 6}}\n"
                    "  expressions: ['AGE > 90']\n")
    frame = pd.DataFrame({
        "AGE": [70, 64, 70, 70, 95, 70, np.nan, 70],
        "RISK": ["High", "High", "Low", "Very-High", "High", "High", "High", "High"],
        "TP53": [0, 0, 0, 0, 0, 1, 0, 0],
        "HB": [9.0, 9.0, 9.0, np.nan, 9.0, 9.0, 9.0, 5.0],
    })
    # Run
    crit = read_criteria(path, _schema())
    request = check_sampling_inputs(crit.condition_items(), crit.where(_schema()), _schema())
    mask = frame.eval(request.where).to_numpy(bool) & frame.RISK.isin(request.conditions["RISK"]).to_numpy() \
        & (frame.TP53 == request.conditions["TP53"]).to_numpy()
    # Assert: row 3 has an unknown HB (not excluded); row 6 an unknown age (not included); 7 has HB <= 6
    assert request.conditions == {"RISK": ["High", "Very-High"], "TP53": 0.0}
    assert mask.tolist() == [True, False, False, True, False, False, False, False]


def test_every_problem_of_a_criteria_file_at_once(tmp_path: Path) -> None:
    # Setup
    path = tmp_path / "c.yaml"
    path.write_text("inclusion:\n  ranges: {AGE: {min: 80, max: 60}, HB: {min: low}}\n  categories: {treated: [1]}\n"
                    "  other: 1\nexclusion:\n  expressions: ['treated == 1']\nfoo: 1\n")
    # Run
    with pytest.raises(ValidationError) as info:
        read_criteria(path, _schema())
    # Assert
    text = str(info.value)
    for part in ("foo: is not a criteria key", "inclusion.other: is not a criteria part",
                 "inclusion.ranges.AGE: has min above max", "inclusion.ranges.HB: has a bound that is not a number",
                 "inclusion: treated: is recorded after baseline", "exclusion: treated: is recorded after baseline"):
        assert part in text
    assert "6 problems" in text


def test_shipped_example_criteria_read_against_the_mds_schema() -> None:
    from fedsynth.cohort.datasets import NAMED_COHORTS

    schema = NAMED_COHORTS["mds-iwgpm"].schema_factory()
    root = Path(__file__).parents[3] / "configs" / "arms"
    for path in sorted(root.glob("*.yaml")):
        crit = read_criteria(path, schema)
        check_sampling_inputs(crit.condition_items(), crit.where(schema), schema)


def test_eligible_picks_the_hand_chosen_real_rows(tmp_path: Path) -> None:
    # Setup: the rows of the first test; 0/1 codes of a binary column and a label set of a categorical one
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ninclusion:\n  categories: {RISK: [High, Very-High], TP53: [0]}\n"
                    "  ranges: {AGE: {min: 65}}\nexclusion:\n  ranges: {HB: {max: 6}}\n"
                    "  expressions: ['AGE > 90']\n")
    frame = pd.DataFrame({
        "AGE": [70, 64, 70, 70, 95, 70, np.nan, 70],
        "RISK": ["High", "High", "Low", "Very-High", "High", "High", np.nan, "High"],
        "TP53": [0, 0, 0, 0, 0, 1, 0, 0],
        "HB": [9.0, 9.0, 9.0, np.nan, 9.0, 9.0, 9.0, 5.0],
    })
    crit = read_criteria(path, _schema())

    # Run
    mask = crit.eligible(frame, _schema())

    # Assert: a missing value meets no inclusion item (rows 6) and triggers no exclusion item (row 3)
    assert mask.tolist() == [True, False, False, True, False, False, False, False]
    assert crit.eligible(frame.iloc[:0], _schema()).tolist() == []
