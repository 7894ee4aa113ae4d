"""Generators behind one interface: CTGAN, two-step Bayesian network, VAE-BGM.

The names below are imported on first use (PEP 562), so that importing one light submodule (the protocols a
site's handlers type against) does not import them all: a deployed site starts a fresh process per message.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedsynth.generators.base import (
        BaseGenerator,
        ConditionError,
        Generator,
        SupportsLatentMixture,
        SupportsTwoStep,
        SupportsWeights,
        survival_notes,
    )
    from fedsynth.generators.model_folder import load_generator
    from fedsynth.generators.registry import GENERATORS, generator_class, make_generator, validate_generator_params

#: Public name -> the module that defines it.
_EXPORTS = {
    "BaseGenerator": "fedsynth.generators.base",
    "ConditionError": "fedsynth.generators.base",
    "Generator": "fedsynth.generators.base",
    "SupportsLatentMixture": "fedsynth.generators.base",
    "SupportsTwoStep": "fedsynth.generators.base",
    "SupportsWeights": "fedsynth.generators.base",
    "survival_notes": "fedsynth.generators.base",
    "load_generator": "fedsynth.generators.model_folder",
    "GENERATORS": "fedsynth.generators.registry",
    "generator_class": "fedsynth.generators.registry",
    "make_generator": "fedsynth.generators.registry",
    "validate_generator_params": "fedsynth.generators.registry",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fedsynth.generators' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "GENERATORS",
    "BaseGenerator",
    "ConditionError",
    "Generator",
    "SupportsLatentMixture",
    "SupportsTwoStep",
    "SupportsWeights",
    "generator_class",
    "load_generator",
    "make_generator",
    "survival_notes",
    "validate_generator_params",
]
