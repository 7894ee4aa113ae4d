"""Experiment configuration (pydantic): YAML in, one validated object out, unknown keys rejected by name."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from fedsynth.errors import Problem, ValidationError

STRATEGIES = ("centralized", "local", "fedavg", "two_step_bn", "sd_sharing")
GENERATOR_NAMES = ("bayesian_network", "ctgan", "vae_bgm")


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
    """How the training rows are spread over sites."""

    proportions: list[float] | None = Field(default_factory=lambda: [0.6, 0.3, 0.1])
    method: Literal["iid", "by_column", "dirichlet"] = "iid"
    by: str | None = None
    alpha: float = Field(0.5, gt=0)

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
        return len(self.proportions) if self.proportions else None


class ScenarioConfig(_Strict):
    name: Literal["best", "worst"] = "best"
    missing_columns: dict[str, list[str]] | None = Field(
        None, description="site name -> columns it lacks (worst case); default: the shipped worst case"
    )


class GeneratorConfig(_Strict):
    name: Literal["bayesian_network", "ctgan", "vae_bgm"] = "bayesian_network"
    params: dict[str, Any] = Field(default_factory=dict)


class StrategyConfig(_Strict):
    name: Literal["centralized", "local", "fedavg", "two_step_bn", "sd_sharing"] = "two_step_bn"
    rounds: int = Field(3, ge=1)
    local_epochs: int = Field(1, ge=1)
    min_sites: int = Field(2, ge=1, description="a round fails when fewer sites answer")
    refit: bool = Field(False, description="sd_sharing: refit one generator on the pooled synthetic rows")
    privacy_check: bool = Field(True, description="sd_sharing: each site checks its synthetic rows before release")
    params: dict[str, Any] = Field(default_factory=dict)


class EvaluationConfig(_Strict):
    snapshot_rows: int | None = Field(None, ge=1, description="rows sampled per round (default: training size)")
    strata: list[str] | None = Field(
        None, description="survival strata columns (default: the schema's declared strata, then every categorical "
                          "clinical column and every gene mutated in >= 5%)")
    full_report_every_round: bool = False
    references: list[Literal["centralized", "local"]] | None = Field(
        None, description="reference fits drawn as lines in report.html (default: centralized and local; [] for none)"
    )
    final: Literal["full", "lite", "none"] | None = Field(
        None, description="final evaluation: full, lite (no detection AUC, no TSTR) or none (default: full)"
    )


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

    @model_validator(mode="after")
    def _compatible(self) -> ExperimentConfig:
        g, s = self.generator.name, self.strategy.name
        if s == "fedavg" and g not in ("ctgan", "vae_bgm"):
            raise ValueError(
                f"strategy 'fedavg' averages weights and needs ctgan or vae_bgm, not {g!r}; "
                "for bayesian_network use two_step_bn, sd_sharing, centralized or local"
            )
        if s == "two_step_bn" and g != "bayesian_network":
            raise ValueError(
                f"strategy 'two_step_bn' learns a Bayesian network from counts and needs bayesian_network, not {g!r}; "
                "for ctgan or vae_bgm use fedavg, sd_sharing, centralized or local"
            )
        n = self.sites.n_sites
        if n is not None and self.strategy.min_sites > n and s not in ("centralized",):
            raise ValueError(f"strategy.min_sites is {self.strategy.min_sites} but only {n} sites are configured")
        return self

    def to_yaml_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _model_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Valid field names at ``loc`` (walking nested models), for 'unknown key' messages."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            return []
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        current = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
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


def parse_config(raw: Mapping[str, Any], *, source: str = "config") -> ExperimentConfig:
    """Validate a mapping into an :class:`ExperimentConfig`; every problem in one :class:`ValidationError`."""
    if not isinstance(raw, Mapping):
        raise ValidationError(f"Config {source}", [Problem("config", f"is a {type(raw).__name__}", "a mapping of keys")])
    try:
        return ExperimentConfig.model_validate(dict(raw))
    except PydanticValidationError as exc:
        raise ValidationError(f"Config {source}", _problems_from_pydantic(exc, ExperimentConfig)) from None


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
