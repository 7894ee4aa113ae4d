"""Experiment configuration (pydantic): YAML in, one validated object out, unknown keys rejected by name.

The structure (sections, keys, types) is checked by pydantic; which strategies and generators exist, which go
together and which strategy and generator params act is the strategy registry's
(:func:`fedsynth.strategies.registry.settings_problems`), so a setting has one definition and one default.
Every problem is reported at once in one :class:`~fedsynth.errors.ValidationError`; a key that would not act is
an error, and what the config decides on its own (e.g. ``sites.by`` implying ``method: by_column``) is listed
in :attr:`ExperimentConfig.notes` and logged.
"""

from __future__ import annotations

import copy
import difflib
import logging
import math
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from fedsynth.errors import Problem, ValidationError
from fedsynth.experiments.arm import DEFAULT_MAX_SECONDS, ArmDraw
from fedsynth.strategies.registry import (
    DEFAULT_LOCAL_EPOCHS,
    DEFAULT_MIN_SITES,
    DEFAULT_ROUNDS,
    STRATEGIES,
    settings_problems,
)

log = logging.getLogger(__name__)

#: Keys that moved (old path -> new path, or ``None`` for a key that was read by nothing and is gone).
MOVED_KEYS: dict[tuple[str, ...], str | None] = {
    ("strategy", "refit"): "strategy.params.refit",
    ("strategy", "privacy_check"): "strategy.params.privacy_check",
    ("strategy", "params", "final_evaluation"): "evaluation.final",
    ("strategy", "params", "references"): "evaluation.references",
    ("strategy", "params", "engine"): "strategy.engine",
    ("evaluation", "full_report_every_round"): None,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CohortConfig(_Strict):
    """Which data: a registered cohort name or a CSV path, and where named cohorts live."""

    name: str | None = Field(None, description="registered cohort, e.g. mds-iwgpm")
    path: str | None = Field(None, description="a CSV file (instead of a named cohort)")
    data_dir: str | None = Field(None, description="folder holding cohort folders (else $FEDSYNTH_DATA_DIR)")
    schema_file: str | None = Field(None, description="a schema YAML (else the cohort's or an inferred one)")
    schema_overrides: dict[str, Any] = Field(default_factory=dict, description="overrides applied to the schema")

    @model_validator(mode="after")
    def _one_source(self) -> CohortConfig:
        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of cohort.name or cohort.path")
        return self

    @property
    def source(self) -> str:
        return self.name or self.path or ""


class SplitConfig(_Strict):
    holdout_fraction: float = Field(0.1, gt=0, lt=1)


class SitesConfig(_Strict):
    """How the training rows are spread over sites.

    ``by`` (a column) without ``method`` implies ``method: by_column`` (one site per value); ``by`` with
    ``method: iid`` is an error (it would be ignored), as are ``alpha`` without ``method: dirichlet`` and
    ``proportions`` with ``method: by_column`` (the column's values make the sites).
    """

    proportions: list[float] | None = Field(default_factory=lambda: [0.6, 0.3, 0.1])
    method: Literal["iid", "by_column", "dirichlet"] = "iid"
    by: str | None = None
    alpha: float = Field(0.5, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _by_implies_by_column(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("by") is not None and "method" not in data:
            data = {**data, "method": "by_column"}
        return data

    @model_validator(mode="after")
    def _keys_act(self) -> SitesConfig:
        given = self.model_fields_set
        if self.method == "iid" and self.by is not None:
            raise ValueError("sites.by acts only with method by_column or dirichlet; remove it or set sites.method")
        if self.method in ("by_column", "dirichlet") and self.by is None:
            raise ValueError(f"sites.method {self.method} needs sites.by (a column)")
        if "alpha" in given and self.method != "dirichlet":
            raise ValueError("sites.alpha acts only with method dirichlet; remove it or set sites.method: dirichlet")
        if "proportions" in given and self.proportions and self.method == "by_column":
            raise ValueError("sites.proportions is not used with method by_column (one site per value of sites.by); "
                             "remove it, or use method dirichlet for a skewed split into these proportions")
        return self

    @field_validator("proportions")
    @classmethod
    def _positive(cls, v: list[float] | None) -> list[float] | None:
        if v is not None:
            if not v:
                raise ValueError("list at least one site")
            if any(p <= 0 for p in v):
                raise ValueError("every proportion must be > 0")
            total = sum(v)
            v = [p / total for p in v]
        return v

    @property
    def n_sites(self) -> int | None:
        """Sites the config makes (``None`` when the data decides: one per value of ``by``)."""
        return len(self.proportions) if self.proportions and self.method != "by_column" else None


class ScenarioConfig(_Strict):
    name: Literal["best", "worst"] = "best"
    missing_columns: dict[str, list[str]] | None = Field(
        None, description="site name -> columns it lacks (worst case); default: the shipped worst case"
    )


class GeneratorConfig(_Strict):
    """Which generator (a name of the generator registry) and its parameters."""

    name: str = "bayesian_network"
    params: dict[str, Any] = Field(default_factory=dict)


class StrategyConfig(_Strict):
    """Which strategy (a name of the strategy registry), its common settings, engine and own params."""

    name: str = "two_step_bn"
    rounds: int = Field(DEFAULT_ROUNDS, ge=1, description="weight-averaging rounds (fixed-phase strategies: 1)")
    local_epochs: int = Field(DEFAULT_LOCAL_EPOCHS, ge=1, description="epochs each site trains per round")
    min_sites: int = Field(DEFAULT_MIN_SITES, ge=1, description="a round fails when fewer sites answer")
    engine: Literal["simulation", "in_process"] = Field(
        "simulation", description="Flower's simulation engine, or the same strategy in process (no engine)"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="the strategy's own params (registry)")


#: Reference fits a federated run draws beside its rounds (by default, both).
Reference = Literal["centralized", "local"]
REFERENCES: tuple[Reference, ...] = ("centralized", "local")


#: Patients in a control arm of ``evaluation.arms`` when its entry does not say.
DEFAULT_ARM_PATIENTS = 300


class ArmConfig(_Strict):
    """One control arm a run draws from its final model (an entry of ``evaluation.arms``).

    A bare path is short for ``{criteria: PATH}``. Paths are read relative to the working directory, like
    ``cohort.schema_file``; the files themselves are read and checked against the cohort's schema when the run
    starts (:func:`fedsynth.experiments.run_arms.plan_arms`), so that a run directory's ``config.yaml`` still
    validates where the criteria files are not.
    """

    criteria: str = Field(min_length=1, description="an eligibility-criteria YAML, e.g. configs/arms/lower_risk.yaml")
    n: int = Field(DEFAULT_ARM_PATIENTS, ge=1, description="patients in the arm")
    max_seconds: float = Field(DEFAULT_MAX_SECONDS, ge=0.1, description="time bound of rejection sampling (seconds)")
    draw: ArmDraw = Field(
        "balanced", description="balanced: taken from 10 n draws by systematic sampling along the first endpoint "
        "(fedsynth arm --draw); independent: n plain draws")

    @model_validator(mode="before")
    @classmethod
    def _path_alone(cls, data: Any) -> Any:
        return {"criteria": data} if isinstance(data, str) else data

    @property
    def name(self) -> str:
        """The arm's name in the run directory (``arms/<name>/``): the criteria file's stem."""
        return Path(self.criteria).stem


class EvaluationConfig(_Strict):
    snapshot_rows: int | None = Field(None, ge=1, description="rows sampled per round (default: training size)")
    strata: list[str] | None = Field(
        None, description="columns to stratify survival by in the final evaluation (default: the evaluator's)"
    )
    references: list[Reference] = Field(
        default_factory=lambda: list(REFERENCES),
        description="reference fits drawn as lines in report.html ([] for none; federated strategies only)",
    )
    final: Literal["full", "lite", "none"] = Field(
        "full", description="final evaluation: full, lite (no detection AUC, no TSTR) or none"
    )
    arms: list[ArmConfig] = Field(
        default_factory=list,
        description="control arms drawn from the final model, each against the real eligible training patients",
    )


class PrivacyConfig(_Strict):
    """The run's differential-privacy budget (absent: no differential privacy, exact releases).

    Every release of the run spends from it; the split over phases and what was spent go into the manifest
    (key ``privacy``). Supported by the two-step BN strategy (noisy count tables); see
    :data:`DP_SUPPORTED_STRATEGIES`.
    """

    epsilon: float = Field(gt=0, description="total epsilon of the run, finite (leave out privacy: for none)")
    delta: float = Field(1e-5, gt=0, lt=1, description="delta of the (epsilon, delta) guarantee")

    @field_validator("epsilon")
    @classmethod
    def _finite(cls, v: float) -> float:
        # An infinite epsilon is no guarantee: the run would release exact counts while its manifest, report and
        # cards printed a budget. No privacy block is the way to say "no differential privacy".
        if math.isinf(v):
            raise ValueError("must be finite; leave out the privacy block for a run without differential privacy")
        return v


#: Strategies that honour ``privacy:``; every other one is refused with the reason.
DP_SUPPORTED_STRATEGIES: frozenset[str] = frozenset({"two_step_bn", "fedavg", "sd_sharing"})
#: FedAvg honours ``privacy:`` with these generators only (DP-SGD at each site).
DP_FEDAVG_GENERATORS: frozenset[str] = frozenset({"vae_bgm"})
_DP_FEDAVG_NOT_SUPPORTED = ("CTGAN under differential privacy needs a private discriminator (DP-CTGAN, PATE-CTGAN) "
                            "and category frequencies for its conditional sampler from a noisy domain; neither is "
                            "built")
#: SD-sharing honours ``privacy:`` with these generators only (each site's own private fit).
DP_SD_SHARING_GENERATORS: frozenset[str] = frozenset({"vae_bgm", "bayesian_network"})
_DP_NOT_SUPPORTED: dict[str, str] = {
    "centralized": "the centralized baseline is the non-private reference",
    "local": "the local baseline releases nothing",
}


class OutputConfig(_Strict):
    dir: str = "reports"
    run_id: str | None = None


class ExperimentConfig(_Strict):
    """One experiment: data, split, sites, scenario, generator, strategy, seed, evaluation, output."""

    name: str = "experiment"
    cohort: CohortConfig
    split: SplitConfig = SplitConfig()
    sites: SitesConfig = SitesConfig()
    scenario: ScenarioConfig = ScenarioConfig()
    generator: GeneratorConfig = GeneratorConfig()
    strategy: StrategyConfig = StrategyConfig()
    seed: int = 0
    evaluation: EvaluationConfig = EvaluationConfig()
    output: OutputConfig = OutputConfig()
    privacy: PrivacyConfig | None = Field(None, description="differential-privacy budget (absent: none)")

    _notes: list[str] = PrivateAttr(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """What the config decided on its own (said in the log and the run's manifest)."""
        return list(self._notes)

    def problems(self) -> list[Problem]:
        """Every problem beyond the structure: the registry's rules for strategy and generator settings, keys
        that would not act for this strategy, and site counts."""
        s, ev = self.strategy, self.evaluation
        out = _registry_problems(s, self.generator)
        baseline = s.name in STRATEGIES and STRATEGIES[s.name].baseline
        if baseline and "engine" in s.model_fields_set and s.engine != "in_process":
            out.append(Problem("strategy.engine", f"is {s.engine}, but the {s.name} baseline always runs in process",
                               "in_process (or leave it out)"))
        if baseline and ev.references and "references" in ev.model_fields_set:
            out.append(Problem("evaluation.references", f"are not drawn for the {s.name} baseline (it is one)",
                               "[] (or leave it out)"))
        if self.privacy is not None and s.name not in DP_SUPPORTED_STRATEGIES:
            reason = _DP_NOT_SUPPORTED.get(s.name, "it has no differentially private mechanism")
            out.append(Problem("privacy", f"is not supported with strategy {s.name}: {reason}",
                               "two_step_bn, fedavg with vae_bgm, or sd_sharing with vae_bgm or bayesian_network",
                               "remove privacy, or use two_step_bn"))
        elif (self.privacy is not None and s.name == "fedavg"
              and self.generator.name not in DP_FEDAVG_GENERATORS):
            reason = _DP_FEDAVG_NOT_SUPPORTED if self.generator.name == "ctgan" else "it has no DP training"
            out.append(Problem("privacy", f"is not supported for fedavg with generator {self.generator.name}: "
                               f"{reason}", "fedavg with vae_bgm, or two_step_bn",
                               "remove privacy, or use generator vae_bgm"))
        elif (self.privacy is not None and s.name == "sd_sharing"
              and self.generator.name not in DP_SD_SHARING_GENERATORS):
            reason = _DP_FEDAVG_NOT_SUPPORTED if self.generator.name == "ctgan" else "it has no private fit"
            out.append(Problem("privacy", f"is not supported for sd_sharing with generator {self.generator.name}: "
                               f"{reason}", "sd_sharing with vae_bgm or bayesian_network",
                               "remove privacy, or use generator vae_bgm or bayesian_network"))
        out += _arm_problems(self)
        n = self.sites.n_sites
        if n is not None and s.min_sites > n and s.name != "centralized":
            out.append(Problem("strategy.min_sites", f"is {s.min_sites} but only {n} sites are configured",
                               f"at most {n}"))
        return out

    def to_yaml_dict(self) -> dict[str, Any]:
        """The resolved config as YAML-ready data: every setting that acts, defaults included, and none that
        does not (``sites.alpha`` without dirichlet, ``rounds`` of a fixed-phase strategy, a baseline's engine
        and references), so that the file a run writes validates again as it is (export, grid, resume)."""
        out = self.model_dump(mode="json")
        sites, strategy = out["sites"], out["strategy"]
        if self.sites.method != "dirichlet":
            sites.pop("alpha", None)
        if self.sites.method == "by_column":
            sites.pop("proportions", None)
        if self.strategy.name in STRATEGIES:
            from fedsynth.strategies.registry import uses_rounds

            if not uses_rounds(self.strategy.name, self.generator.name):
                strategy.pop("rounds", None)
                strategy.pop("local_epochs", None)
            if STRATEGIES[self.strategy.name].baseline:
                strategy.pop("engine", None)
                out["evaluation"]["references"] = []  # a baseline draws none (it is one)
        return out


def _arm_problems(config: ExperimentConfig) -> list[Problem]:
    """``evaluation.arms`` needs one global model to draw from, and arms with distinct names."""
    arms, s = config.evaluation.arms, config.strategy
    if not arms:
        return []
    out: list[Problem] = []
    if s.name == "local":
        out.append(Problem("evaluation.arms", "the local baseline trains one model per site and saves no global "
                           "model to draw an arm from", fix="remove evaluation.arms, or use another strategy"))
    elif s.name == "sd_sharing" and not s.params.get("refit", False):
        out.append(Problem("evaluation.arms", "sd_sharing without refit pools synthetic rows and saves no model to "
                           "draw an arm from", fix="set strategy.params.refit: true, or remove evaluation.arms"))
    seen: dict[str, int] = {}
    for i, arm in enumerate(arms):
        if arm.name in seen:
            out.append(Problem(f"evaluation.arms[{i}].criteria", f"has the file name {arm.name!r} of "
                               f"evaluation.arms[{seen[arm.name]}] (arms are written to arms/<file name>/)",
                               fix="give each arm's criteria file its own name"))
        seen.setdefault(arm.name, i)
    return out


def _registry_problems(strategy: StrategyConfig, generator: GeneratorConfig) -> list[Problem]:
    """The strategy registry's rules for the strategy and generator sections (rounds and epochs only if given)."""
    given = strategy.model_fields_set
    return settings_problems(
        strategy.name, generator.name, params=strategy.params, generator_params=generator.params,
        rounds=strategy.rounds if "rounds" in given else None,
        local_epochs=strategy.local_epochs if "local_epochs" in given else None,
    )


def _section_problems(raw: Mapping[str, Any]) -> list[Problem]:
    """The registry's rules on the strategy and generator sections of a config that is malformed elsewhere or
    in these sections' other keys (so one message still lists every problem: ``strategy.rounds: 0`` does not
    hide an unknown generator parameter). A key pydantic rejected is left out of its section here (its problem is
    already listed); nothing when a section is not a mapping, its name is rejected, or it is still malformed."""
    strategy = _valid_without_bad_keys(StrategyConfig, raw.get("strategy"))
    generator = _valid_without_bad_keys(GeneratorConfig, raw.get("generator"))
    if strategy is None or generator is None:
        return []
    return _registry_problems(strategy, generator)


_Section = typing.TypeVar("_Section", bound=BaseModel)


def _valid_without_bad_keys(model: type[_Section], section: Any) -> _Section | None:
    """``section`` validated as ``model`` after dropping the keys pydantic rejects in it; None if it is not a
    mapping, if its ``name`` is rejected (a default name would be checked in its place) or if it still fails."""
    if section is not None and not isinstance(section, Mapping):
        return None
    data = dict(section or {})
    while True:  # each pass drops at least one key, so it ends
        try:
            return model.model_validate(data)
        except PydanticValidationError as exc:
            bad = {err["loc"][0] for err in exc.errors() if err["loc"]}
            if "name" in bad or not bad & set(data):
                return None
            data = {k: v for k, v in data.items() if k not in bad}


def _model_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Valid field names at ``loc`` (walking nested models), for 'unknown key' messages."""
    current: Any = model
    for part in loc[:-1]:
        if current is None:
            return []
        if isinstance(part, int):  # an item of a list of models: the model is already current
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        # a model, a list of models or an optional model
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        current = next((a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return list(getattr(current, "model_fields", {})) if current is not None else []


def _problems_from_pydantic(exc: PydanticValidationError, model: type[BaseModel]) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "config"
        if err["type"] == "extra_forbidden":
            valid = _model_fields(model, loc)
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            fix = f"did you mean {close[0]!r}?" if close else ""
            problems.append(Problem(where, "unknown key", ", ".join(valid), fix))
        elif err["type"] == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            problems.append(Problem(where, f"got {err.get('input')!r}", str(expected).replace("'", "")))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(Problem(where, msg))
    return problems


def _moved_keys(raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """``raw`` without the keys that moved or were removed, and one problem for each (pointing to the new key)."""
    out: dict[str, Any] = copy.deepcopy(dict(raw))
    problems = []
    for path, new in MOVED_KEYS.items():
        node: Any = out
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] in node:
            del node[path[-1]]
            where = ".".join(path)
            if new is None:
                problems.append(Problem(where, "was read by nothing and is no longer a setting", fix="remove it"))
            else:
                problems.append(Problem(where, f"has moved to {new}", fix=f"write it as {new}"))
    return out, problems


def _notes(raw: Mapping[str, Any], config: ExperimentConfig) -> list[str]:
    sites = raw.get("sites")
    if isinstance(sites, Mapping) and sites.get("by") is not None and "method" not in sites:
        note = f"sites.by is set without sites.method: one site per value of {config.sites.by!r} (method: by_column)"
        return [note]
    return []


def parse_config(raw: Mapping[str, Any], *, source: str = "config") -> ExperimentConfig:
    """Validate a mapping into an :class:`ExperimentConfig`; every problem in one :class:`ValidationError`.

    Structure first (unknown keys, types, ranges, moved keys), then, on a well-formed config, the registry's
    rules (:meth:`ExperimentConfig.problems`). Nothing is built or started.
    """
    if not isinstance(raw, Mapping):
        raise ValidationError(f"Config {source}", [Problem("config", f"is a {type(raw).__name__}", "a mapping of keys")])
    cleaned, problems = _moved_keys(raw)
    try:
        config = ExperimentConfig.model_validate(cleaned)
    except PydanticValidationError as exc:
        problems += _problems_from_pydantic(exc, ExperimentConfig)
        raise ValidationError(f"Config {source}", problems + _section_problems(cleaned)) from None
    problems += config.problems()
    if problems:
        raise ValidationError(f"Config {source}", problems)
    config._notes = _notes(cleaned, config)
    for note in config.notes:
        log.info("config %s: %s", source, note)
    return config


def apply_sets(raw: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a raw config mapping."""
    out = yaml.safe_load(yaml.safe_dump(raw)) or {}
    problems = []
    for item in sets:
        if "=" not in item:
            problems.append(Problem(f"--set {item!r}", "is not key=value", "e.g. strategy.rounds=5"))
            continue
        key, _, value = item.partition("=")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append(Problem(f"--set {key}", f"{part!r} is not a section"))
                break
        else:
            node[parts[-1]] = yaml.safe_load(value)
    if problems:
        raise ValidationError("Command-line overrides", problems)
    return out


def load_config(path: str | Path, sets: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment config (and ``--set`` overrides) and validate it."""
    p = Path(path)
    if not p.is_file():
        raise ValidationError("Config", [Problem(f"file {str(p)!r}", "does not exist", fix="check the path; examples are in configs/")])
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "the file"
        raise ValidationError(f"Config {p.name}", [Problem(where, "is not valid YAML", "key: value pairs, indented with spaces")]) from None
    if sets:
        raw = apply_sets(raw, sets)
    return parse_config(raw, source=p.name)
