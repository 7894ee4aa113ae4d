"""The generator registry: names to ``"module:Class"`` (imported on use), building, and checking parameters."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from fedsynth.cohort.schema import TableSchema
from fedsynth.encoding.domain import Domain
from fedsynth.errors import FedsynthError, Problem, ValidationError
from fedsynth.generators.params import BayesianNetworkParams, CTGANParams, GeneratorParams, check_params
from fedsynth.generators.vae_params import VAEBGMParams

if TYPE_CHECKING:
    from fedsynth.generators.base import BaseGenerator

#: Registered generators: name -> "module:Class", imported on use so ``import fedsynth`` stays light.
GENERATORS: dict[str, str] = {
    "bayesian_network": "fedsynth.generators.bayesian_network:BayesianNetworkGenerator",
    "ctgan": "fedsynth.generators.ctgan:CTGANGenerator",
    "vae_bgm": "fedsynth.generators.vae_bgm:VAEBGMGenerator",
}

#: Every registered generator's spec, by registry name (light: checking a config imports no engine).
PARAMS: dict[str, type[GeneratorParams]] = {
    "bayesian_network": BayesianNetworkParams,
    "ctgan": CTGANParams,
    "vae_bgm": VAEBGMParams,
}


def generator_class(name: str) -> type[BaseGenerator[Any]]:
    """The class registered under ``name``; a clear error lists the valid names."""
    if name not in GENERATORS:
        raise ValidationError(
            "Generator", [Problem("name", f"unknown generator {name!r}", ", ".join(sorted(GENERATORS)))]
        )
    module, _, cls = GENERATORS[name].partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] == "fedsynth":
            raise
        raise FedsynthError(
            f"Generator {name!r} needs a package that is not installed ({exc.name}); "
            "install fedsynth with its dependencies: pip install -e ."
        ) from exc
    return cast("type[BaseGenerator[Any]]", getattr(mod, cls))


def validate_generator_params(
    name: str, params: Mapping[str, Any], *, schema: TableSchema | None = None
) -> list[Problem]:
    """Every problem with a generator's parameters, without importing its engine (no torch, no pgmpy).

    Parameters
    ----------
    name : str
        Registry name (``"bayesian_network"``, ``"ctgan"``, ``"vae_bgm"``).
    params : mapping
        ``generator.params`` as configured; an unknown key is a problem, not ignored.
    schema : TableSchema, optional
        Enables the checks that need the table (e.g. CTGAN's ``conditional_columns``).

    Returns
    -------
    list of Problem
        Empty when the parameters are valid; the same problems ``fit`` would raise.
    """
    if name in PARAMS:  # a registered generator: its spec is known without importing the engine
        return check_params(PARAMS[name], params, GENERATORS[name].rpartition(":")[2], schema)
    import fedsynth.generators as package  # the package's lookup, which a test may extend with a double

    try:
        cls = package.generator_class(name)
    except ValidationError as exc:
        return list(exc.problems)
    if cls.Params is GeneratorParams:  # a class that declares no spec has nothing to check
        return []
    return check_params(cls.Params, params, cls.__name__, schema)


def make_generator(
    name: str, schema: TableSchema, *, domain: Domain | None = None, **params: Any
) -> BaseGenerator[Any]:
    """Build an unfitted generator by registry name."""
    return generator_class(name)(schema, domain=domain, **params)
