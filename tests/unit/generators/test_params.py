"""Declarative generator parameters: one spec per generator, sklearn wording, every problem at once, no engine import."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import numpy as np
import pytest

from fedsynth.cohort.schema import ColumnKind, ColumnSpec, TableSchema
from fedsynth.errors import ValidationError
from fedsynth.generators import GENERATORS, generator_class, make_generator, validate_generator_params
from fedsynth.generators.params import defaults
from fedsynth.generators.registry import PARAMS

SCHEMA = TableSchema(
    (
        ColumnSpec("AGE", ColumnKind.CONTINUOUS),
        ColumnSpec("WHO", ColumnKind.CATEGORICAL, categories=("A", "B", "C")),
        ColumnSpec("G1", ColumnKind.BINARY),
    )
)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_each_generator_declares_its_parameters_once(name: str) -> None:
    # Setup
    cls = generator_class(name)

    # Run
    signature = inspect.signature(cls.__init__)
    gen = make_generator(name, SCHEMA)

    # Assert: the registry's spec is the class's, and signature, defaults, get_params and docstring follow it
    assert cls.Params is PARAMS[name]
    keyword = {n: p.default for n, p in signature.parameters.items() if n not in ("self", "schema", "domain")}
    assert keyword == defaults(cls.Params)
    assert gen.get_params() == defaults(cls.Params)
    assert all(f"{n} : " in (cls.__doc__ or "") for n in cls.Params.model_fields)
    assert validate_generator_params(name, {}) == []


def test_unknown_keys_and_bad_values_are_all_listed_in_sklearn_wording() -> None:
    # Run
    problems = validate_generator_params("ctgan", {"epochs": 0, "epoch": 3, "batch_size": 15, "pac": 4,
                                                   "device": "tpu", "conditional_columns": ["WHO", "AGE"]},
                                         schema=SCHEMA)

    # Assert
    assert [str(p) for p in problems] == [
        "epochs: The 'epochs' parameter of CTGANGenerator must be an int in the range [1, inf). Got 0 instead.",
        ("device: The 'device' parameter of CTGANGenerator must be a str among {'auto', 'cpu', 'cuda', 'cuda:N'}. "
         "Got 'tpu' instead."),
        "epoch: unknown parameter of 'ctgan'; valid: "
        + ", ".join(PARAMS["ctgan"].model_fields) + "; fix: did you mean 'epochs'?",
        "batch_size: The 'batch_size' parameter of CTGANGenerator must be an even int. Got 15 instead.",
        "batch_size: The 'batch_size' parameter of CTGANGenerator must be a multiple of pac (4). Got 15 instead.",
        ("conditional_columns: The 'conditional_columns' parameter of CTGANGenerator must be a list of categorical or "
         "binary model columns (WHO, G1). Got ['AGE'] instead."),
    ]


def test_types_are_strict_but_numpy_scalars_and_tuples_count_as_plain_values() -> None:
    # Run
    ok = validate_generator_params("vae_bgm", {"epochs": np.int64(3), "lr": 1, "hidden_dims": (8, np.int32(4)),
                                               "weight_concentration_prior": np.float32(0.5), "random_state": None})
    bad = validate_generator_params("vae_bgm", {"epochs": True, "lr": "0.1", "hidden_dims": [], "random_state": -1,
                                                "column_dropout": 1.0})

    # Assert: an int is a float, a bool is not an int, a str is not a number
    assert ok == []
    assert [p.where for p in bad] == ["epochs", "hidden_dims", "lr", "random_state", "column_dropout"]
    assert all(p.found.startswith(f"The {p.where!r} parameter of VAEBGMGenerator must be ") for p in bad)


def test_an_unknown_generator_is_one_problem_naming_the_valid_ones() -> None:
    (problem,) = validate_generator_params("gan", {})
    assert str(problem) == "name: unknown generator 'gan'; valid: bayesian_network, ctgan, vae_bgm"


def test_get_params_is_json_able_and_rebuilds_the_same_generator() -> None:
    # Setup
    gen = make_generator("ctgan", SCHEMA, generator_dim=(np.int64(32), 16), epochs=np.int64(2))

    # Run
    params = json.loads(json.dumps(gen.get_params()))
    twin = make_generator("ctgan", SCHEMA, **params)

    # Assert
    assert params["generator_dim"] == [32, 16] and params["epochs"] == 2
    assert twin.get_params() == gen.get_params()


def test_the_constructor_only_stores_and_fit_checks() -> None:
    # Setup: a bad value is stored as given
    gen = make_generator("bayesian_network", SCHEMA, max_indegree=-1)

    # Run / Assert
    assert gen.get_params()["max_indegree"] == -1
    with pytest.raises(ValidationError, match="'max_indegree' parameter of BayesianNetworkGenerator must be an int"):
        _ = gen.params


def test_checking_parameters_imports_no_engine() -> None:
    code = (
        "import sys; from fedsynth.generators import validate_generator_params as v; "
        "assert v('ctgan', {'epochs': 0}) and v('vae_bgm', {}) == [] and v('bayesian_network', {}) == []; "
        "print(','.join(m for m in ('torch', 'pgmpy', 'flwr', 'sklearn', 'ctgan') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_set_params_changes_a_setting_and_it_is_checked_again() -> None:
    # Setup
    gen = make_generator("ctgan", SCHEMA, calibrate_missing=True)
    assert gen.params.calibrate_missing is True

    # Run
    gen.set_params(calibrate_missing=False)
    flipped = gen.params.calibrate_missing
    gen.set_params(calibrate_missing="no")

    # Assert
    assert flipped is False and gen.get_params()["calibrate_missing"] == "no"
    with pytest.raises(ValidationError, match="'calibrate_missing' parameter of CTGANGenerator must be a bool"):
        _ = gen.params


def test_an_unknown_name_is_refused_when_the_generator_is_built() -> None:
    # Run
    with pytest.raises(ValidationError) as err:
        make_generator("vae_bgm", SCHEMA, epoch=3, latent_dim=2)

    # Assert: the bad name, the valid ones and the likely fix; no engine has started
    (problem,) = err.value.problems
    assert str(problem).startswith("epoch: unknown parameter of 'vae_bgm'; valid: epochs, batch_size, latent_dim")
    assert problem.fix == "did you mean 'epochs'?"
