"""Conversions to and from Flower records: key styles, payloads, weights, synthetic rows, scrubbed errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.cohort.schema import ColumnKind, ColumnSpec, TableSchema
from fedsynth.encoding.domain import Domain
from fedsynth.errors import Problem, ValidationError
from fedsynth.strategies import records


def _small_schema() -> TableSchema:
    return TableSchema(
        (
            ColumnSpec("AGE", ColumnKind.CONTINUOUS),
            ColumnSpec("SEX", ColumnKind.CATEGORICAL, categories=("F", "M")),
            ColumnSpec("TP53", ColumnKind.BINARY),
        )
    )


def test_settings_travel_with_kebab_keys_and_come_back_snake_case() -> None:
    # Setup
    settings = {"num_examples": np.int64(12), "local_epochs": 2, "lr": np.float32(0.5), "names": ["a", "b"], "skip": None}

    # Run
    rec = records.to_config_record(settings)
    back = records.from_config_record(rec)

    # Assert
    assert set(rec.keys()) == {"num-examples", "local-epochs", "lr", "names"}
    assert back == {"num_examples": 12, "local_epochs": 2, "lr": 0.5, "names": ["a", "b"]}


def test_nested_settings_are_refused_with_the_key_named() -> None:
    # Run / Assert
    with pytest.raises(TypeError, match="'deep'"):
        records.to_config_record({"deep": {"a": 1}})


def test_metrics_drop_non_finite_values() -> None:
    # Run
    rec = records.to_metric_record({"num_examples": 3, "loss": float("nan"), "ok": True})

    # Assert
    assert records.from_metric_record(rec) == {"num_examples": 3, "ok": 1}


def test_payload_round_trip_keeps_tuples_tuple_keys_arrays_and_nan() -> None:
    # Setup
    obj = {("HB", ("AGE", "SEX")): np.arange(6, dtype=np.int64).reshape(2, 3), "x": (1, 2.5, float("nan")), "s": {"a"}}

    # Run
    back = records.decode_payload(records.encode_payload(obj))

    # Assert
    arr = back[("HB", ("AGE", "SEX"))]
    assert arr.dtype == np.int64 and arr.shape == (2, 3) and (arr == obj[("HB", ("AGE", "SEX"))]).all()
    assert back["x"][:2] == (1, 2.5) and np.isnan(back["x"][2])
    assert back["s"] == {"a"}


def test_weights_keep_names_dtypes_and_zero_dim_shapes() -> None:
    # Setup
    weights = {"generator.seq.0.bn.num_batches_tracked": np.asarray(3.0, dtype=np.float32), "w_1": np.ones((2, 2))}

    # Run
    back = records.from_array_record(records.to_array_record(weights))

    # Assert
    assert set(back) == set(weights)
    assert back["generator.seq.0.bn.num_batches_tracked"].shape == ()
    assert back["w_1"].dtype == np.float64


def test_packed_count_tables_round_trip_with_absent_tables_and_any_shape() -> None:
    # Setup: tables of 0 to 3 axes, one key the site could not count
    tables = {
        "a|": np.array([3, 4]),
        "b|a": np.arange(6).reshape(3, 2),
        "c|a,b": np.arange(24).reshape(2, 3, 4),
        "n": np.array(7),
    }
    keys = ["a|", "lacking|a", "b|a", "c|a,b", "n"]

    # Run
    record = records.pack_tables(keys, tables)
    back = records.unpack_tables(record, keys)

    # Assert: three arrays on the wire, every present table back with its shape and values
    assert set(record) == {"present", "dims", "counts"}
    assert list(back) == ["a|", "b|a", "c|a,b", "n"]
    for key, table in tables.items():
        assert back[key].shape == table.shape
        np.testing.assert_array_equal(back[key], table)
        assert back[key].dtype == np.int64


def test_packed_count_tables_refuse_a_reply_for_another_request() -> None:
    record = records.pack_tables(["a", "b"], {"a": np.array([1, 2])})
    with pytest.raises(ValueError, match="covers 2 tables, the request asked for 3"):
        records.unpack_tables(record, ["a", "b", "c"])


def test_synthetic_rows_round_trip_through_domain_codes() -> None:
    # Setup
    schema = _small_schema()
    frame = pd.DataFrame({"AGE": [50.0, np.nan, 70.0], "SEX": ["F", np.nan, "M"], "TP53": [0.0, 1.0, np.nan]})
    domain = Domain.from_data(frame, schema, min_count=1)  # three rows: k = 1 so every label is in the domain

    # Run
    back = records.array_record_to_frame(records.frame_to_array_record(frame, domain), domain, schema)

    # Assert
    pd.testing.assert_frame_equal(back, schema.coerce(frame))


def test_scrubbed_errors_keep_no_numbers_or_quoted_values() -> None:
    # Setup
    own = ValidationError("Site data", [Problem("HB", "value 987.654321 in row 'ZZ-PLANTED' is odd")])
    foreign = KeyError("ZZ-PLANTED 987.654321")

    # Run
    a = records.scrub_error(own)
    b = records.scrub_error(foreign)

    # Assert
    for text in (a, b):
        assert "987" not in text and "ZZ-PLANTED" not in text
    assert a.startswith("ValidationError: Site data has <n> problem")
    assert b.startswith("KeyError: ")
