"""Generators behind one interface: CTGAN, two-step Bayesian network, VAE-BGM."""

from fedsynth.generators.base import (
    BaseGenerator,
    ConditionError,
    Generator,
    SupportsLatentMixture,
    SupportsTwoStep,
    SupportsWeights,
)
from fedsynth.generators.model_folder import load_generator
from fedsynth.generators.registry import GENERATORS, generator_class, make_generator, validate_generator_params

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
    "validate_generator_params",
]
