"""Declarative generator parameters: one pydantic spec per generator, checked in scikit-learn's wording.

Each generator declares its hyperparameters once, as a :class:`GeneratorParams` subclass: type, range, default
and description in one ``Field``. From that spec come the constructor's signature, ``get_params``, the
numpydoc "Parameters" section and the validation, which lists every bad parameter at once::

    The 'epochs' parameter of CTGANGenerator must be an int in the range [1, inf): Got 0 instead.

The specs live here, apart from the engines, so a config can be checked (:func:`check_params`) without
importing torch or pgmpy.
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


class VAEBGMParams(GeneratorParams):
    """Hyperparameters of :class:`~fedsynth.generators.vae_bgm.VAEBGMGenerator`."""

    generator_name: ClassVar[str] = "vae_bgm"

    epochs: PositiveInt = Field(300, description="Passes over the data in fit (partial_fit takes its own count).")
    batch_size: PositiveInt = Field(128, description="Rows per step.")
    latent_dim: PositiveInt = Field(16, description="Size of the latent code.")
    hidden_dims: list[PositiveInt] = Field(
        [128, 128], min_length=1, description="Widths of the encoder's hidden layers; the decoder mirrors them."
    )
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(1e-5, ge=0, description="Adam (L2) weight decay.")
    beta: float = Field(1.0, ge=0, description="Weight of the KL term (beta-VAE).")
    n_components: PositiveInt = Field(
        10, description="Upper bound on the latent mixture's components (the Dirichlet-process prior prunes unused ones)."
    )
    weight_concentration_prior: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Concentration of the Dirichlet-process prior on mixture weights; None means 1 / n_components."
    )
    mixture_max_iter: PositiveInt = Field(200, description="Iterations of the mixture's variational EM.")
    numeric_transform: Literal["quantile", "standard"] = Field(
        "quantile", description="How numeric columns become model inputs: normal scores through the domain's "
        "quantile bins, or standardised with its mean and standard deviation."
    )
    sampling: Literal["likelihood", "mode"] = Field(
        "likelihood", description="Draw each decoded column from its likelihood, or take its most likely value."
    )
    device: Device = Field("auto", description="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'.")
    random_state: Seed = Field(0, description="Seed of the initial weights, the batch order and the reparameterisation noise.")
    column_dropout: float = Field(
        0.0, ge=0, lt=1,
        description="Share of columns hidden from the encoder per training row (replaced by what a site lacking "
        "them sends), with their loss still counted; recommended (e.g. 0.2) for worst-case federations.",
    )
    condition_components: Literal["stratified", "proposal", "off"] = Field(
        "stratified", description="How conditional sampling uses the per-component label and bin counts kept at "
        "training (category sets and range terms such as AGE >= 65): 'stratified' gives each component the share P(component | condition) of the returned rows "
        "(rejection inside each component), 'proposal' draws components by that probability and then rejects "
        "(counts the condition twice), 'off' draws them by the mixture weights alone. Rows always meet the "
        "conditions exactly.",
    )
    condition_ranges: bool = Field(
        False, description="Whether range terms of a conditional draw's where (AGE >= 65) weigh the latent components "
        "too, from per-component bin counts on the domain's grid; False (default, chosen on seeds 7/8 in "
        "benchmarks/results/arms_vae_cond.json): category sets only, ranges by rejection inside each component.",
    )
    rare_level_sampling: bool = Field(
        False, description="Train on rows drawn as CTGAN's training-by-sampling draws them (a categorical or binary "
        "column at random, one of its levels with probability proportional to log(1 + its count), a row of that "
        "level), so that rare levels are seen as often as their log count says; the latent mixture is still fitted "
        "to every row's code once, so sampled shares stay close to the real ones (benchmarks/results/arms.json, "
        "sampled_level_shares). Not under DP-SGD (its Poisson "
        "sampling is what its accounting assumes).",
    )
    label_share_matching: bool = Field(
        False, description="Draws made without a condition hold each baseline categorical and binary label at its "
        "real share: a prior shift of the decoder's logits fitted on pilot draws against the per-component label "
        "counts summed over sites (fedsynth.generators.label_shares), when the model is fitted, its counts installed "
        "or its calibration refitted; nothing under a privacy budget (no counts). Draws under a condition are not "
        "shifted. Not chosen for the tuned setting (benchmarks/results/arms.json, selection_session18).",
    )
    time_ties: bool = Field(
        False, description="Model, for each pair of endpoint durations, whether the two times are equal in a row "
        "as a binary slot of its own (a patient whose leukaemia-free survival ends when their overall survival "
        "does), drawn with the row: the shorter endpoint of a time-order rule (without a rule, the later endpoint) "
        "takes the other's time, and the survival calibration keeps a tied row tied "
        "(fedsynth.generators.vae_layout.Layout). Without it, on the MDS cohort, LFS equals OS in 33-38% of rows "
        "against 79% real with the calibration off (80-84% with it, from capping LFS at OS); with it 81-85%, and "
        "91-93% with the calibration on. Off by default: not chosen on seeds 7-9 (more effects lost) and no help "
        "at epsilon 1 (benchmarks/results/arms.json, selection_session11).",
    )
    joint_events: bool = Field(
        False, description="Model the endpoints' event columns together as one categorical block over their "
        "patterns (for OS and LFS: alive without AML, AML and alive, dead), drawn with the row, instead of one "
        "independent draw per column given the latent code; a pattern that breaks an event rule of the schema is "
        "never drawn (fedsynth.generators.vae_layout.Layout). On the MDS cohort the independent draws gave 'AML, "
        "alive' 3.4 times as often as the real rows and a death without an LFS event in 4.5% of rows, which the "
        "endpoint rules then turned into extra LFS events; with it the cells are close (seed 7: 0.465, 0.022, "
        "0.513 against 0.485, 0.023, 0.491). Off by default: tried with the FedAvg setting on seeds 7-9 and not chosen "
        "(5 arms of 9 against 8, arms (a) and (b) 14-28% longer than real, more effects lost; with each event "
        "counted once in the loss, as now, at most 5; selection_session13). With time_ties, session 19: fewer effects "
        "lost, but the TP53-mutated arm's LFS 38-44% short at 2 of 3 seeds under the calibration (selection_session19).",
    )
    survival_calibration: bool = Field(
        True, description="Rescale sampled durations per level of the prognostic strata so each level's survival "
        "matches the real one (fedsynth.generators.survival_calibration; counts summed over sites, not asked for "
        "under a finite privacy budget).",
    )
    survival_target: Literal["median", "hazard", "rmst", "hazard_ratio"] = Field(
        "median", description="What the survival calibration matches per level: its median, its observed over "
        "expected events under the real pooled hazard ('hazard'), its restricted mean survival time, or its log "
        "hazard ratio against the rest of its stratum, each table with its own baseline ('hazard_ratio', the count "
        "form of the univariate Cox effect the evaluator reads; the intercept then matches the overall observed "
        "over expected events). The tuned FedAvg setting (configs/fedavg_vae_bgm.yaml) uses 'hazard_ratio' read on "
        "200,000 rows (calibration_rows, calibration_level_rows; chosen in session 13: benchmarks/results/arms.json, "
        "selection_session13).",
    )
    calibration_rows: int = Field(
        20_000, ge=1_000, description="Unconditioned rows the survival calibration reads each level's survival on. "
        "Each level's factor absorbs its reading's sampling error, so a fresh draw sees that error again: more rows, "
        "smaller residual errors, a longer fit (the raking's time grows with the rows). The tuned FedAvg setting "
        "reads 200,000 with 5,000 per level, with survival_target 'hazard_ratio' (configs/fedavg_vae_bgm.yaml; "
        "benchmarks/results/arms.json, selection_session13).",
    )
    calibration_level_rows: int = Field(
        1_000, ge=100, description="Rows drawn under each stratum level as a condition (as control arms are drawn) "
        "that the survival calibration reads beside the unconditioned rows.",
    )
    calibration_unconditioned: bool = Field(
        False, description="Whether unconditioned draws (sample() without a condition: a run's snapshots, exports) "
        "take their own survival calibration, fitted on the unconditioned calibration rows only, while draws under a "
        "condition (control arms) keep the factors fitted on those rows and the rows drawn under each level "
        "(fedsynth.generators.calibrated_generator). The two draws differ (conditional draws follow the real label "
        "counts per latent component), so one set of factors serves neither exactly: on a seed-13 fit, IPSS-R Int's "
        "log hazard ratio on OS read 0.173 on the mix the calibration fits (real 0.174) but 0.148 on its "
        "unconditioned rows. Acts on a fitted model's refit (a federated fit; a centralized fit's calibration reads "
        "unconditioned rows only). About 30 s more per fit at 200,000 rows. Off by default; on in the tuned FedAvg "
        "setting (configs/fedavg_vae_bgm.yaml) with calibration_unconditioned_gene_min_freq 0.02: on fresh seeds "
        "16-18 effects lost at 100 n 5 against 6, at 10 n 7 against 7, arms unchanged; alone, 7 against 6 there "
        "(benchmarks/results/arms.json, selection_session15).",
    )
    calibration_unconditioned_gene_min_freq: float = Field(
        0.05, gt=0.0, le=1.0, description="Smallest share of the real rows carrying a mutation for a genomic column to "
        "be a stratum of the unconditioned draws' calibration (only with calibration_unconditioned; draws under a "
        "condition keep 0.05, the share of the evaluator's default strata). The evaluator reads the univariate Cox "
        "effect of every gene, so a rarer gene the model shrinks can be matched there: 0.02 brought back IDH2, PHF6 "
        "and ETNK1 (seeds 13-14, sizes 0.57-0.82 of the real effects at 0.05) and KRAS (seed 16). Genes under it keep "
        "the model's own survival. 0.02 in the tuned FedAvg setting (selection_session15).",
    )
    calibration_conditioned_target: Literal["median", "hazard", "rmst", "hazard_ratio"] | None = Field(
        None, description="What the factors of draws under a condition (control arms) match per level, when "
        "unconditioned draws take their own (calibration_unconditioned); None: survival_target, as the "
        "unconditioned set; a target given to fit_survival_calibration sets both. Acts on a fitted model's refit "
        "(a federated fit; a centralized fit reads unconditioned rows only and keeps one set). The tuned FedAvg "
        "setting matches the median, read on the rows drawn under each level "
        "alone (calibration_conditioned_rows_only): chosen in session 17 by a rule written first, on balanced arms "
        "of fresh seeds 25-27, 9 of 9 arms against 8, mean |log median ratio| 0.051 against 0.090 "
        "(benchmarks/results/arms.json, draws_session17).",
    )
    calibration_conditioned_rows_only: bool = Field(
        False, description="Whether the factors of draws under a condition read each level on the rows drawn under "
        "that level alone (as control arms are drawn) rather than also on the unconditioned rows (only with "
        "calibration_unconditioned: the unconditioned draws keep their own set). True in the tuned FedAvg setting.",
    )
    calibration_capped_intercepts: bool = Field(
        True, description="Whether the survival calibration fits an intercept for an endpoint that a time-order rule "
        "caps at another (LFS under LFS <= OS): lengthening its times cannot go past the cap, so when the model draws "
        "more of its events than the real rows hold the intercept runs to its bound and its levels' factors stop "
        "answering (fedsynth.generators.survival_calibration, capped_intercepts). False leaves its overall event rate "
        "the model's own and matches its levels only. True by default: with the FedAvg setting on fresh seeds 13-15, "
        "False kept one effect more (7 lost at 100 n against 8, arms unchanged) but LFS ended with OS in 38-46% of "
        "rows against 79% real, and the curves fitted worse (benchmarks/results/arms.json, selection_session14).",
    )

    @classmethod
    def cross_problems(cls, values: Mapping[str, Any], owner: str, schema: TableSchema | None) -> list[Problem]:
        out = []
        if values.get("calibration_capped_intercepts") is False and values.get("survival_target") != "hazard_ratio":
            out.append(param_problem(owner, "calibration_capped_intercepts",
                                     "true unless survival_target is 'hazard_ratio' (only relative level targets "
                                     "can go without an intercept)", False))
        own = values.get("calibration_conditioned_target")
        if values.get("calibration_capped_intercepts") is False and own not in (None, "hazard_ratio"):
            out.append(param_problem(owner, "calibration_conditioned_target",
                                     "'hazard_ratio' or left out while calibration_capped_intercepts is false (only "
                                     "relative level targets can go without an intercept)", own))
        for key in ("calibration_conditioned_target", "calibration_conditioned_rows_only"):
            if values.get(key) not in (None, False) and not values.get("calibration_unconditioned"):
                out.append(param_problem(owner, key, "left out unless calibration_unconditioned is true (without it "
                                         "one set of factors serves every draw)", values.get(key)))
        gene = values.get("calibration_unconditioned_gene_min_freq")
        if gene != cls.model_fields["calibration_unconditioned_gene_min_freq"].default and not values.get(
                "calibration_unconditioned"):
            out.append(param_problem(owner, "calibration_unconditioned_gene_min_freq",
                                     "left out unless calibration_unconditioned is true (it sets that calibration's "
                                     "genes)", gene))
        return out


#: Every registered generator's spec, by registry name (light: checking a config imports no engine).
PARAMS: dict[str, type[GeneratorParams]] = {
    "bayesian_network": BayesianNetworkParams,
    "ctgan": CTGANParams,
    "vae_bgm": VAEBGMParams,
}
