"""Sampling inputs are checked against the model before any sampling: every problem at once, valid values listed."""

from __future__ import annotations

import pytest

from fedsynth.cohort.conditions import check_sampling_inputs
from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, TableSchema
from fedsynth.errors import ValidationError

K, R = ColumnKind, ColumnRole


def _schema() -> TableSchema:
    return TableSchema(
        (
            ColumnSpec("ID", K.CATEGORICAL, R.ID),
            ColumnSpec("AGE", K.INTEGER),
            ColumnSpec("SEX", K.CATEGORICAL, categories=("F", "M")),
            ColumnSpec("RISK", K.CATEGORICAL, categories=("Low", "Int", "Very-High"), derived="ipss_r_category"),
            ColumnSpec("TP53", K.BINARY, R.GENOMIC),
            ColumnSpec("smoker", K.BINARY, codes=(("yes", 1.0), ("no", 0.0))),
        )
    )


def test_conditions_parse_to_labels_and_numbers_with_repeats_as_lists():
    request = check_sampling_inputs(["SEX=F", "SEX=M", "TP53=1", "AGE=70", "smoker=yes"], "AGE >= 65", _schema())
    assert request.conditions == {"SEX": ["F", "M"], "TP53": 1.0, "AGE": 70.0, "smoker": 1.0}
    assert request.where == "AGE >= 65"
    assert request.notes == ()


def test_a_misspelled_derived_category_is_refused_even_beside_a_valid_one():
    # Setup: 'Very High' for 'Very-High' (the derived column's categories), given with a valid value
    with pytest.raises(ValidationError) as info:
        check_sampling_inputs(["RISK=Low", "RISK=Very High"], None, _schema())
    # Assert
    text = str(info.value)
    assert "--condition RISK: RISK has no category 'Very High'; valid: Low, Int, Very-High; fix: did you mean 'Very-High'?" in text


def test_every_problem_is_listed_at_once():
    # Setup: unknown column, malformed item, non-number, bad category in where, unknown name in where
    items = ["FLT3=1", "AGE", "AGE=old", "TP53=2"]
    where = "SEX == 'W' and BLASTS > 5"
    # Run
    with pytest.raises(ValidationError) as info:
        check_sampling_inputs(items, where, _schema())
    # Assert
    found = [p.where + ": " + p.found for p in info.value.problems]
    assert found == [
        "--condition FLT3: no such column",
        "--condition 'AGE': is not of the form COL=VALUE",
        "--condition AGE: AGE is an integer column and the value is not a number",
        "--condition TP53: TP53 is binary",
        "--where: refers to no column 'BLASTS'",
        "--where: compares SEX with 'W', which is not one of its categories",
    ]


def test_an_expression_that_does_not_parse_is_reported_with_an_example():
    with pytest.raises(ValidationError) as info:
        check_sampling_inputs([], "AGE >= ", _schema())
    assert "--where: is not a valid expression; valid: a pandas query over column names" in str(info.value)


def test_a_value_no_training_row_holds_is_said_not_silently_sampled_from_the_prior():
    # Setup: the model saw no male patient and no TP53-mutated one
    observed = {"SEX": {"F": 40, "M": 0}, "TP53": {"0": 40, "1": 0}}
    # Run
    request = check_sampling_inputs(["SEX=M", "TP53=1"], None, _schema(), observed=observed)
    # Assert
    assert request.notes == (
        "SEX=M occurs in 0 training rows: rows drawn for it come from the model's prior, not from patients like them",
        "TP53=1 occurs in 0 training rows: rows drawn for it come from the model's prior, not from patients like them",
    )


@pytest.mark.parametrize(
    "where,impossible",
    [("AGE > 500", True), ("500 < AGE", True), ("AGE >= 90", False), ("AGE < 30 and SEX == 'F'", True),
     ("AGE < 30 or SEX == 'F'", False), ("AGE == 95", True), ("AGE <= 30", False)],
)
def test_a_range_no_sampled_row_can_meet_is_refused_before_sampling(where, impossible):
    # Setup: the model samples AGE in [30, 90]
    bounds = {"AGE": (30.0, 90.0)}
    # Run / Assert
    if not impossible:
        assert check_sampling_inputs([], where, _schema(), bounds=bounds).where == where
        return
    with pytest.raises(ValidationError) as info:
        check_sampling_inputs([], where, _schema(), bounds=bounds)
    assert "--where: asks for AGE outside the range the model samples it in" in str(info.value)


def test_a_numeric_condition_outside_the_models_range_is_refused_without_echoing_the_range():
    with pytest.raises(ValidationError) as info:
        check_sampling_inputs(["AGE=130"], None, _schema(), bounds={"AGE": (31.0, 89.0)})
    assert "--condition AGE: AGE=130 lies outside the range the model samples AGE in" in str(info.value)
    assert "31" not in str(info.value) and "89" not in str(info.value)
