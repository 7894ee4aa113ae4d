"""Declarative generator parameters: one pydantic spec per generator, checked in scikit-learn's wording.

Each generator declares its hyperparameters once, as a :class:`GeneratorParams` subclass: type, range, default
and description in one ``Field``. From that spec come the constructor's signature, ``get_params``, the
numpydoc "Parameters" section and the validation, which lists every bad parameter at once::

    The 'epochs' parameter of CTGANGenerator must be an int in the range [1, inf): Got 0 instead.

The specs live here and in :mod:`fedsynth.generators.vae_params` (VAE-BGM's), apart from the engines, so a config
can be checked (:func:`check_params`; the registry's ``PARAMS`` maps names to specs) without importing torch or
pgmpy.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import numpy as np
import pydantic
from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.fields import FieldInfo

from fedsynth.cohort.schema import ColumnKind, TableSchema
from fedsynth.errors import Problem

#: ``device`` values: ``"auto"`` uses CUDA when available, else the CPU.
Device = Annotated[
    str,
    Field(
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        json_schema_extra={"valid": "a str among {'auto', 'cpu', 'cuda', 'cuda:N'}"},
    ),
]
PositiveInt = Annotated[int, Field(ge=1)]
Seed = Annotated[int, Field(ge=0)] | None


class GeneratorParams(BaseModel):
    """Base of every generator's parameter spec: strict types, unknown names rejected, frozen once checked.

    NumPy scalars count as the Python number they hold and tuples as lists, so values read from YAML, JSON
    or written in Python check alike.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    #: The generator's registry name (for messages about unknown parameters).
    generator_name: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _plain_values(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {k: plain_value(v) for k, v in data.items()}
        return data

    @classmethod
    def cross_problems(cls, values: Mapping[str, Any], owner: str, schema: TableSchema | None) -> list[Problem]:
        """Rules over several parameters or over the schema; ``values`` holds the parameters that passed their
        own checks (with defaults filled in), ``schema`` is ``None`` when it is not known yet."""
        return []


def plain_value(value: Any) -> Any:
    """``value`` as plain Python: NumPy scalars become numbers, tuples and arrays lists (recursively)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain_value(v) for v in value]
    return value


def defaults(spec: type[GeneratorParams]) -> dict[str, Any]:
    """Every parameter's default, in declaration order."""
    return {name: plain_value(f.get_default(call_default_factory=True)) for name, f in spec.model_fields.items()}


def param_problem(owner: str, name: str, valid: str, value: Any) -> Problem:
    """One bad parameter, placed at its name, in scikit-learn's words:
    ``epochs: The 'epochs' parameter of CTGANGenerator must be an int in the range [1, inf). Got 0 instead.``"""
    return Problem(name, f"The {name!r} parameter of {owner} must be {valid}. Got {value!r} instead.")


def unknown_problem(spec: type[GeneratorParams], name: str, owner: str) -> Problem:
    """``name`` is not a parameter of ``spec``: the valid names, and the closest one as the fix."""
    close = difflib.get_close_matches(name, list(spec.model_fields), n=1)
    return Problem(
        name,
        f"unknown parameter of {spec.generator_name or owner!r}",
        ", ".join(spec.model_fields),
        f"did you mean {close[0]!r}?" if close else "",
    )


def check_params(
    spec: type[GeneratorParams], params: Mapping[str, Any], owner: str, schema: TableSchema | None = None
) -> list[Problem]:
    """Every problem with ``params`` against ``spec``: wrong types and ranges, unknown names, cross-parameter rules.

    Parameters
    ----------
    spec : type of GeneratorParams
        The generator's parameter spec.
    params : mapping
        Parameter values as given (missing ones take their defaults).
    owner : str
        The generator's class name, for the messages.
    schema : TableSchema, optional
        Enables the rules that need the table (e.g. CTGAN's ``conditional_columns`` must name discrete columns).

    Returns
    -------
    list of Problem
        Empty when ``params`` is valid. No value of a patient is ever involved.
    """
    problems: list[Problem] = []
    bad: set[str] = set()
    try:
        spec.model_validate(dict(params))
    except pydantic.ValidationError as exc:
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else ""
            if name in bad:
                continue
            bad.add(name)
            if name not in spec.model_fields:
                problems.append(unknown_problem(spec, name, owner))
                continue
            problems.append(param_problem(owner, name, describe(spec.model_fields[name]), params.get(name)))
    values = {k: v for k, v in {**defaults(spec), **{k: plain_value(v) for k, v in params.items()}}.items()
              if k in spec.model_fields and k not in bad}
    problems += spec.cross_problems(values, owner, schema)
    return problems


# -- the words of a constraint -------------------------------------------------------------------------------


def describe(field: FieldInfo) -> str:
    """What a field accepts, in scikit-learn's words ("an int in the range [1, inf)", "a bool", ...)."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("valid"), str):
        return str(extra["valid"])
    return _describe(field.annotation, list(field.metadata))


def _describe(tp: Any, metadata: list[Any]) -> str:
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extra = get_args(tp)
        meta = list(metadata)
        for e in extra:
            if isinstance(e, FieldInfo):
                if isinstance(e.json_schema_extra, dict) and isinstance(e.json_schema_extra.get("valid"), str):
                    return str(e.json_schema_extra["valid"])
                meta += e.metadata
            else:
                meta.append(e)
        return _describe(base, meta)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        text = " or ".join(_describe(a, metadata) for a in args if a is not type(None))
        return text + (" or None" if type(None) in args else "")
    if origin is Literal:
        return "a str among {" + ", ".join(repr(a) for a in get_args(tp)) + "}"
    if tp is bool:
        return "a bool"
    if tp in (int, float):
        return f"{'an int' if tp is int else 'a float'} in the range {_interval(metadata)}"
    if origin is list:
        (item,) = get_args(tp)
        non_empty = any(isinstance(m, MinLen) and m.min_length >= 1 for m in metadata)
        return f"a {'non-empty ' if non_empty else ''}list of {_plural(_describe(item, []))}"
    if tp is str:
        return "a str"
    return f"a {getattr(tp, '__name__', str(tp))}"


def _interval(metadata: list[Any]) -> str:
    lo, hi, left, right = "-inf", "inf", "(", ")"
    for m in metadata:
        if isinstance(m, Ge):
            lo, left = f"{m.ge}", "["
        elif isinstance(m, Gt):
            lo, left = f"{m.gt}", "("
        elif isinstance(m, Le):
            hi, right = f"{m.le}", "]"
        elif isinstance(m, Lt):
            hi, right = f"{m.lt}", ")"
    return f"{left}{lo}, {hi}{right}"


def _plural(text: str) -> str:
    for one, many in (("an int", "ints"), ("a float", "floats"), ("a str", "strs"), ("a bool", "bools")):
        if text.startswith(one):
            return many + text[len(one):]
    return text


def params_doc(spec: type[GeneratorParams], indent: str = "    ") -> str:
    """A numpydoc "Parameters" section for a generator built from ``spec`` (schema and domain first)."""
    lines = [
        "Parameters",
        "----------",
        "schema : TableSchema",
        f"{indent}The table's schema.",
        "domain : Domain, optional",
        f"{indent}The shared domain (a federation passes the merged one); built from the data by ``fit`` when None.",
    ]
    for name, f in spec.model_fields.items():
        lines.append(f"{name} : {describe(f)}, default {plain_value(f.get_default(call_default_factory=True))!r}")
        if f.description:
            lines.append(f"{indent}{f.description}")
    return "\n".join(indent + line if line else line for line in lines)


# ==========================================================================================================
# The specs
# ==========================================================================================================


class BayesianNetworkParams(GeneratorParams):
    """Hyperparameters of :class:`~fedsynth.generators.bayesian_network.BayesianNetworkGenerator`."""

    generator_name: ClassVar[str] = "bayesian_network"

    score: Literal["bic", "bdeu"] = Field("bic", description="pgmpy structure score used by hill climbing.")
    max_indegree: int = Field(3, ge=0, description="Most parents a node may have.")
    equivalent_sample_size: float = Field(
        1.0, gt=0, description="BDeu prior strength for the CPDs (and for the BDeu score)."
    )
    n_bins: PositiveInt = Field(10, description="Quantile bins per numeric column when the generator builds its own domain.")
    n_sub_bins: PositiveInt = Field(
        10,
        description="Equal-width sub-bins per bin used to place sampled values inside their bin; with each sub-bin "
        "the values' precision (whole, 1-3 decimals, finer) is counted, so point masses such as 0 % blasts and "
        "whole-number counts come back exact.",
    )
    outcomes_last: bool = Field(
        True,
        description="Outcome columns may not be parents of clinical or genomic columns (outcomes come after "
        "baseline): conditioning on baseline variables stays cheap and exact, and the graph readable.",
    )
    max_iter: int = Field(1000, ge=0, description="Most hill-climbing steps.")
    outcome_parents: int = Field(
        0, ge=0,
        description="Baseline parents each outcome node (survival time bins, event) is given after hill climbing, "
        "one at a time, each the one with the best family BIC on the summed counts (added even where the "
        "search's penalty refused it: survival within strata of prognostic factors needs such parents). 0 keeps "
        "the searched structure; measured on MDS in the README.",
    )
    derived_input_parents: int = Field(
        1, ge=0,
        description="More parents each input of a derived column (IPSS-R's blasts, cytopenias, karyotype) is given "
        "after hill climbing, among that derivation's other inputs, each the best by family BIC on the summed "
        "counts (up to max_indegree): a derived risk group depends on its inputs' joint values. 1 chosen on MDS "
        "seed 7 against 0 and 2 (IPSS-R of TP53-mutated patients, arm medians; benchmarks/bench_arms.py).",
    )
    derived_nodes: bool = Field(
        True,
        description="Each derived categorical column whose inputs are all in the domain (IPSS-R from karyotype, "
        "blasts and counts) is also a network node, counted at the sites from its inputs, that may be a parent of "
        "its inputs but never their child: a column's dependence on the derived risk group as a whole (a gene that "
        "shifts the whole score) then reaches every input jointly, which single-input families are too weak to "
        "carry. Sampled rows still recompute the derived column from their drawn inputs.",
    )
    survival_model: Literal["piecewise_exponential", "network"] = Field(
        "piecewise_exponential",
        description="How survival endpoints are sampled. 'piecewise_exponential': per endpoint, hazards of the "
        "event and of censoring per interval (the duration's bins) and parent configuration, from summed counts of "
        "events and person-time, parents chosen among baseline and derived prognostic columns; the observed time "
        "is the earlier of an event and a censoring time (see bayesian_network/survival.py). 'network': the "
        "network's own time bins and event nodes.",
    )
    survival_parents: int = Field(
        4, ge=0,
        description="Most parents of each hazard (event, censoring) of the piecewise-exponential model (4 chosen "
        "on MDS seed 7 against 3 and 5: benchmarks/bench_arms.py).",
    )
    survival_modifiers: int = Field(
        8, ge=0,
        description="Most further columns each survival hazard is multiplied by one hazard ratio per state of (after "
        "its parents; those whose Bayes factor given the parents is positive, best first). 8 chosen on MDS seed 7 "
        "against 0 (gene-survival direction consistency 0.78 -> 0.88, survival-effect fidelity 0.67 -> 0.71).",
    )
    survival_prior_rows: float = Field(
        2.0, gt=0,
        description="Strength, in rows, of the gamma prior on each hazard of the piecewise-exponential model: it "
        "shrinks a configuration's hazard towards its configuration without the last parent, and scores "
        "candidate parents (log marginal likelihood, centred on the parentless hazard).",
    )


#: Accepted string values of CTGAN's ``conditional_columns``.
CONDITIONAL_CHOICES = ("auto", "all", "categorical", "none")


class CTGANParams(GeneratorParams):
    """Hyperparameters of :class:`~fedsynth.generators.ctgan.CTGANGenerator`."""

    generator_name: ClassVar[str] = "ctgan"

    epochs: PositiveInt = Field(300, description="Passes over the data in fit.")
    batch_size: PositiveInt = Field(100, description="Rows per step; even and a multiple of pac.")
    pac: PositiveInt = Field(1, description="Rows the discriminator judges together (PacGAN; the ctgan package uses 10).")
    embedding_dim: PositiveInt = Field(128, description="Size of the generator's noise vector.")
    generator_dim: list[PositiveInt] = Field(
        [256, 256], min_length=1, description="Hidden layer sizes of the generator (residual layers)."
    )
    discriminator_dim: list[PositiveInt] = Field(
        [256, 256], min_length=1, description="Hidden layer sizes of the discriminator."
    )
    generator_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the generator (the package uses 2e-4).")
    discriminator_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the discriminator.")
    generator_decay: float = Field(1e-6, ge=0, description="Adam weight decay of the generator.")
    discriminator_decay: float = Field(1e-6, ge=0, description="Adam weight decay of the discriminator.")
    discriminator_steps: PositiveInt = Field(1, description="Discriminator updates per generator update.")
    log_frequency: bool = Field(
        True, description="Draw conditional categories by log frequency in training (rare states are seen more often)."
    )
    conditional_columns: Literal["auto", "all", "categorical", "none"] | list[str] = Field(
        "auto",
        json_schema_extra={"valid": "a str among {'auto', 'all', 'categorical', 'none'} or a list of column names"},
        description="Discrete columns that make up the conditional vector. 'auto': categorical columns with more "
        "than two categories plus the survival event columns, so 0/1 genes are left free; 'all' is the ctgan "
        "package's choice (every discrete column).",
    )
    n_modes: PositiveInt = Field(10, description="Mixture modes per numeric column when the generator builds its own domain.")
    calibrate_missing: bool = Field(
        True,
        description="Give each column's missing state to as many sampled rows as the domain's pooled missing rate "
        "says, choosing the rows the model scores most likely to be missing.",
    )
    hard_onehot: bool = Field(
        False, description="Straight-through Gumbel softmax in training: generated one-hots are exact in the forward pass."
    )
    device: Device = Field("auto", description="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'.")
    random_state: Seed = Field(None, description="Seed of initialisation and training; sampling has its own.")

    @classmethod
    def cross_problems(cls, values: Mapping[str, Any], owner: str, schema: TableSchema | None) -> list[Problem]:
        problems = []
        bs, pac = values.get("batch_size"), values.get("pac")
        if bs is not None and bs % 2:
            problems.append(param_problem(owner, "batch_size", "an even int", bs))
        if bs is not None and pac is not None and bs % pac:
            problems.append(param_problem(owner, "batch_size", f"a multiple of pac ({pac})", bs))
        cc = values.get("conditional_columns")
        if isinstance(cc, list) and schema is not None:
            discrete = [c for c in schema.model_columns
                        if schema[c].kind in (ColumnKind.CATEGORICAL, ColumnKind.BINARY)]
            unknown = [c for c in cc if c not in discrete]
            if unknown:
                problems.append(param_problem(
                    owner, "conditional_columns", f"a list of categorical or binary model columns ({', '.join(discrete)})",
                    unknown,
                ))
        return problems
