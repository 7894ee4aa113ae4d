"""The strategy registry: the one source of truth for which strategies exist, what each needs and accepts.

Every fact about a strategy's settings lives here once: its class (imported on use), the generator capability
it needs, the parameters it accepts (type, default, range, and the setting that makes each act) and the
defaults of ``rounds``, ``local_epochs`` and ``min_sites``. :class:`~fedsynth.strategies.base.Strategy`,
the experiment config (:mod:`fedsynth.experiments.config`) and the deployment's run config all validate
through :func:`settings_problems`, so a key that would not act is rejected before any engine starts.

This module imports no Flower, torch or pgmpy at import time (the config validates without them); generator
classes are imported on use to read their capabilities.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fedsynth.errors import CapabilityError, Problem, ValidationError

if TYPE_CHECKING:
    from fedsynth.cohort.schema import TableSchema
    from fedsynth.encoding.domain import Domain
    from fedsynth.strategies.base import Strategy

#: Capabilities a strategy (or one of its parameters) may require of a generator.
CAPABILITIES: dict[str, str] = {
    "weights": "get_weights/set_weights/partial_fit (ctgan, vae_bgm)",
    "two_step": "structure and parameters from summed counts (bayesian_network)",
    "latent_mixture": "a latent mixture fitted by federated EM (vae_bgm)",
}

#: The one default of each common setting (config, library and deployment alike).
DEFAULT_ROUNDS = 3
DEFAULT_LOCAL_EPOCHS = 1
DEFAULT_MIN_SITES = 2


@dataclass(frozen=True)
class Param:
    """One strategy parameter: its type, default, valid range and what makes it act.

    ``capability``: the parameter acts only when the generator has this capability (e.g. the latent-mixture
    EM settings of FedAvg only act with VAE-BGM). ``when``: the parameter acts only when another parameter of the
    same strategy has the given value (e.g. ``gate_mia_auc_above`` only when ``privacy_check`` is true).
    """

    kind: type
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    optional: bool = False
    capability: str | None = None
    when: tuple[str, Any] | None = None

    def valid(self) -> str:
        """What a valid value looks like, in the words of scikit-learn's parameter errors."""
        what = {bool: "a bool", int: "an int", float: "a float"}.get(self.kind, self.kind.__name__)
        if self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else f"{self.low:g}"
            hi = "inf" if self.high is None else f"{self.high:g}"
            what += f" in the range {'(' if self.open_low or self.low is None else '['}{lo}, {hi}"
            what += ")" if self.open_high or self.high is None else "]"
        return what + (" or null" if self.optional else "")

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not valid (``None`` when it is)."""
        if value is None:
            return None if self.optional else "got null"
        if self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
        if not ok:
            return f"got {value!r} ({type(value).__name__})"
        if self.kind is not bool:
            v = float(value)
            if self.low is not None and (v < self.low or (self.open_low and v == self.low)):
                return f"got {value!r}"
            if self.high is not None and (v > self.high or (self.open_high and v == self.high)):
                return f"got {value!r}"
        return None


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy: its class (``"module:Class"``), the capability it needs, its own parameters.

    ``uses_rounds``: whether ``rounds`` and ``local_epochs`` act (weight averaging); strategies with a fixed
    number of phases run one round. ``baseline``: the strategy runs the generator's own flow (see
    :func:`flow_for`) and accepts that flow's parameters. ``site_module``: the module whose ``SITE_HANDLERS``
    a site answers with, when it is not the target's (a site then imports none of the server's flow).
    """

    target: str
    requires: str | None = None
    params: Mapping[str, Param] = field(default_factory=dict)
    uses_rounds: bool = False
    baseline: bool = False
    site_module: str | None = None

    @property
    def site_handlers_module(self) -> str:
        """The module holding the strategy's ``SITE_HANDLERS``."""
        return self.site_module or self.target.partition(":")[0]


#: Parameters every strategy accepts: the sites' disclosure control and how long the server waits for nodes.
COMMON_PARAMS: dict[str, Param] = {
    "min_category_count": Param(int, 5, "labels held by fewer rows are not disclosed by a site", low=1),
    "significant_digits": Param(int, 3, "significant digits of released bounds, quantiles and modes", low=1),
    "node_timeout": Param(float, 120.0, "seconds the server waits for the sites' nodes to register", low=0,
                          open_low=True),
    "request_timeout": Param(float, 3600.0, "seconds a request waits for the sites' replies; a site silent for "
                             "longer is left out of that request", low=0, open_low=True),
    "secure_aggregation": Param(bool, False, "everything summed over sites (domain histograms, count tables, "
                                "weight updates, latent-mixture statistics) is summed by secure aggregation: the "
                                "server sees sums only (default false in simulation, true in deployment)"),
}

#: Settings a deployed run (``fedsynth run --federation``, :func:`fedsynth.federation.server_app.
#: strategy_from_run_config`) takes unless its run config says otherwise: outside one process, the coordinator
#: learns only sums over sites.
DEPLOYMENT_DEFAULTS: dict[str, Any] = {"secure_aggregation": True}

_FEDAVG_PARAMS: dict[str, Param] = {
    "mixture_max_iter": Param(int, 10, "EM iterations (message rounds) of the final global latent mixture", low=1,
                              capability="latent_mixture"),
    "mixture_round_max_iter": Param(int, 3, "EM cap in every round but the last", low=1,
                                    capability="latent_mixture"),
    "mixture_tol": Param(float, 1e-2, "EM convergence tolerance: change of the evidence lower bound per row",
                         low=0, open_low=True, capability="latent_mixture"),
    "mixture_every_round": Param(bool, True, "fit the mixture after every round (else after the last)",
                                 capability="latent_mixture"),
    "mixture_warm_start": Param(bool, True, "start each round's EM from the previous mixture",
                                capability="latent_mixture"),
}

_TWO_STEP_PARAMS: dict[str, Param] = {
    "count_look_ahead": Param(int, 1, "best next parents per variable a count request also asks about", low=0),
}

_SD_SHARING_PARAMS: dict[str, Param] = {
    "refit": Param(bool, False, "refit one generator on the pooled synthetic rows"),
    "privacy_check": Param(bool, True, "each site checks its synthetic rows before release"),
    "share_rows": Param(int, None, "synthetic rows per site (default: the site's row count)", low=1, optional=True),
    "site_holdout_fraction": Param(float, 0.2, "share of a site's rows held out for its privacy check", low=0,
                                   high=1, open_low=True, open_high=True, when=("privacy_check", True)),
    # The release gate's thresholds (fedsynth.evaluation.gate.GateThresholds), prefixed gate_.
    "gate_exact_copies_margin": Param(float, 0.0, "share of exact copies a site releases above its holdout's own",
                                      low=0, high=1, when=("privacy_check", True)),
    "gate_nndr_p5_margin": Param(float, None, "NNDR 5th-percentile margin below the site holdout's (default: two "
                                 "bootstrap standard errors)", low=0, high=1, optional=True,
                                 when=("privacy_check", True)),
    "gate_mia_auc_above": Param(float, 0.6, "largest membership-inference AUC a site releases", low=0.5, high=1,
                                when=("privacy_check", True)),
}

#: Registered strategies.
STRATEGIES: dict[str, StrategySpec] = {
    "centralized": StrategySpec("fedsynth.strategies.centralized:CentralizedStrategy", baseline=True),
    "local": StrategySpec("fedsynth.strategies.local:LocalStrategy", baseline=True),
    "fedavg": StrategySpec("fedsynth.strategies.fedavg_server:FedAvgStrategy", "weights", _FEDAVG_PARAMS, uses_rounds=True,
                           site_module="fedsynth.strategies.fedavg_site"),
    "two_step_bn": StrategySpec("fedsynth.strategies.two_step_bn:TwoStepBNStrategy", "two_step", _TWO_STEP_PARAMS),
    "sd_sharing": StrategySpec("fedsynth.strategies.sd_sharing:SDSharingStrategy", None, _SD_SHARING_PARAMS),
}

#: Settings a baseline fixes when it runs the fit-once flow (SD-sharing's) for a generator with neither
#: capability: each site alone or the pool is its own data, so no privacy check and no refit.
BASELINE_FIXED: dict[str, Any] = {"privacy_check": False, "refit": False}


# -- generators and capabilities ------------------------------------------------------------------------------


def generator_names() -> list[str]:
    """Registered generator names (the generator registry is light to import)."""
    from fedsynth.generators import GENERATORS

    return sorted(GENERATORS)


def _is_generator(name: str) -> bool:
    """Whether ``name`` resolves to a generator class (the generators' own lookup decides)."""
    from fedsynth.generators import generator_class

    try:
        generator_class(name)
    except ValidationError:
        return False
    return True


def generator_capabilities(generator: str) -> set[str]:
    """Capabilities of a registered generator: the protocols of :mod:`fedsynth.generators` its class implements.

    ``"weights"`` is :class:`~fedsynth.generators.SupportsWeights`, ``"two_step"``
    :class:`~fedsynth.generators.SupportsTwoStep`, ``"latent_mixture"``
    :class:`~fedsynth.generators.SupportsLatentMixture` (the generators are imported on use).
    """
    from fedsynth.generators import SupportsLatentMixture, SupportsTwoStep, SupportsWeights, generator_class

    cls = generator_class(generator)
    protocols: dict[str, type] = {
        "weights": SupportsWeights, "two_step": SupportsTwoStep, "latent_mixture": SupportsLatentMixture,
    }
    return {cap for cap, protocol in protocols.items() if issubclass(cls, protocol)}


def generator_accepts(name: str, param: str) -> bool:
    """Whether the registered generator ``name`` takes the constructor parameter ``param``."""
    from fedsynth.generators import generator_class

    return param in inspect.signature(generator_class(name).__init__).parameters


def build_generator(
    name: str, schema: TableSchema, domain: Domain | None, params: Mapping[str, Any], random_state: int | None = None
) -> Any:
    """Build a generator on ``domain``; ``random_state`` is passed when the generator takes one."""
    from fedsynth.generators import generator_class

    cls = generator_class(name)
    kwargs = dict(params)
    if random_state is not None and generator_accepts(name, "random_state"):
        kwargs.setdefault("random_state", int(random_state))
    return cls(schema, domain=domain, **kwargs)


def compatible_strategies(generator: str) -> list[str]:
    """Strategies that can run with ``generator``."""
    caps = generator_capabilities(generator)
    return [name for name, spec in STRATEGIES.items() if spec.requires is None or spec.requires in caps]


def _capability_message(strategy: str, generator: str, requires: str) -> str:
    ok = ", ".join(compatible_strategies(generator))
    return (
        f"Strategy {strategy!r} needs a generator with {CAPABILITIES[requires]}; {generator!r} does not have it. "
        f"Strategies that work with {generator!r}: {ok}."
    )


def check_capability(strategy: str, generator: str) -> None:
    """Raise :class:`CapabilityError` naming the compatible strategies when ``generator`` cannot run ``strategy``."""
    req = STRATEGIES[strategy].requires if strategy in STRATEGIES else None
    if req is not None and req not in generator_capabilities(generator):
        raise CapabilityError(_capability_message(strategy, generator, req))


def flow_for(generator: str) -> str:
    """The federated flow a baseline runs for ``generator``: two-step counts, weights, or fit-once."""
    caps = generator_capabilities(generator)
    if "two_step" in caps:
        return "two_step_bn"
    if "weights" in caps:
        return "fedavg"
    return "fit_once"


def effective_flow(strategy: str, generator: str) -> str:
    """The strategy whose flow actually runs: a baseline's generator flow (``fit_once`` runs SD-sharing's)."""
    if STRATEGIES[strategy].baseline:
        flow = flow_for(generator)
        return "sd_sharing" if flow == "fit_once" else flow
    return strategy


def accepted_params(strategy: str, generator: str) -> dict[str, Param]:
    """Every parameter ``strategy`` accepts with ``generator``: the common ones and its flow's own."""
    flow = effective_flow(strategy, generator)
    own = {k: p for k, p in STRATEGIES[flow].params.items() if not (STRATEGIES[strategy].baseline and k in BASELINE_FIXED)}
    return {**COMMON_PARAMS, **own}


def default_params(strategy: str, generator: str, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The registry's default of every parameter that acts for ``strategy`` with ``generator`` and the ``given``
    parameters (one whose generator capability is missing, or whose setting is off, is left out)."""
    accepted = accepted_params(strategy, generator)
    resolved = {**{k: p.default for k, p in accepted.items()}, **dict(given or {})}
    if STRATEGIES[strategy].baseline and effective_flow(strategy, generator) == "sd_sharing":
        resolved.update(BASELINE_FIXED)
    caps = generator_capabilities(generator)
    return {
        k: p.default for k, p in accepted.items()
        if (p.capability is None or p.capability in caps) and (p.when is None or resolved.get(p.when[0]) == p.when[1])
    }


def deployment_params(strategy: str, generator: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``params`` over :data:`DEPLOYMENT_DEFAULTS` (those ``strategy`` accepts with ``generator``): what a deployed
    run uses. A key the run config gives, e.g. ``secure_aggregation: false``, is kept as given."""
    if strategy not in STRATEGIES or not _is_generator(generator):
        return dict(params or {})  # the settings check names the problem
    accepted = accepted_params(strategy, generator)
    return {**{k: v for k, v in DEPLOYMENT_DEFAULTS.items() if k in accepted}, **dict(params or {})}


def uses_rounds(strategy: str, generator: str) -> bool:
    """Whether ``rounds`` and ``local_epochs`` act for ``strategy`` with ``generator`` (weight averaging)."""
    return STRATEGIES[effective_flow(strategy, generator)].uses_rounds


# -- validation -------------------------------------------------------------------------------------------------


def generator_param_problems(generator: str, params: Mapping[str, Any], *, where: str) -> list[Problem]:
    """Problems of ``generator.params``, from the generator's declarative parameter spec, each placed under
    ``where`` (see :func:`fedsynth.generators.validate_generator_params`)."""
    from fedsynth.generators import validate_generator_params

    return [Problem(f"{where}.{p.where}" if p.where else where, p.found, p.valid, p.fix)
            for p in validate_generator_params(generator, dict(params))]


def settings_problems(
    strategy: str,
    generator: str,
    *,
    params: Mapping[str, Any] | None = None,
    generator_params: Mapping[str, Any] | None = None,
    rounds: int | None = None,
    local_epochs: int | None = None,
    where: str = "strategy",
    generator_where: str = "generator",
) -> list[Problem]:
    """Every problem of a strategy's settings with ``generator``, from the registry (nothing is built).

    Checked: the names are registered; the generator has the capability the strategy needs; every key of
    ``params`` is one the strategy accepts with this generator, of the right type and range, and acts (its
    generator capability is there; the setting it depends on has the value that makes it act); ``rounds`` and
    ``local_epochs`` above 1 (``None``: not given) only where they act; ``generator_params.epochs`` only where
    the generator's own ``fit`` runs (weight averaging trains ``rounds`` x ``local_epochs`` epochs instead);
    the generator's parameter names (see :func:`generator_param_problems`).
    """
    problems: list[Problem] = []
    if strategy not in STRATEGIES:
        problems.append(Problem(f"{where}.name", f"got {strategy!r}", ", ".join(STRATEGIES)))
    if not _is_generator(generator):
        problems.append(Problem(f"{generator_where}.name", f"got {generator!r}", ", ".join(generator_names())))
    if problems:
        return problems
    spec = STRATEGIES[strategy]
    caps = generator_capabilities(generator)
    if spec.requires is not None and spec.requires not in caps:
        return [Problem(f"{where}.name", _capability_message(strategy, generator, spec.requires))]
    given = dict(params or {})
    accepted = accepted_params(strategy, generator)
    flow = effective_flow(strategy, generator)
    resolved = {**{k: p.default for k, p in accepted.items()}, **given}
    if spec.baseline and flow == "sd_sharing":
        resolved.update(BASELINE_FIXED)
    for key, value in given.items():
        at = f"{where}.params.{key}"
        p = accepted.get(key)
        if p is None:
            if spec.baseline and key in BASELINE_FIXED and flow == "sd_sharing":
                problems.append(Problem(at, f"is fixed to {BASELINE_FIXED[key]} by the {strategy} baseline",
                                        fix="remove it"))
                continue
            usable = [k for k, q in accepted.items() if q.capability is None or q.capability in caps]
            close = difflib.get_close_matches(str(key), usable, n=1)
            problems.append(Problem(at, f"is not a parameter of {strategy!r} with {generator!r}",
                                    ", ".join(usable), f"did you mean {close[0]!r}?" if close else "remove it"))
            continue
        bad = p.problem(value)
        if bad is not None:
            problems.append(Problem(at, bad, p.valid()))
            continue
        if p.capability is not None and p.capability not in caps:
            problems.append(Problem(at, f"acts only with a generator that has {CAPABILITIES[p.capability]}; "
                                        f"{generator!r} does not", fix="remove it"))
        elif p.when is not None and resolved.get(p.when[0]) != p.when[1]:
            other, needed = p.when
            problems.append(Problem(at, f"acts only when {where}.params.{other} is {str(needed).lower()}",
                                    fix=f"remove it or set {where}.params.{other}: {str(needed).lower()}"))
    if not uses_rounds(strategy, generator):
        for key, value in (("rounds", rounds), ("local_epochs", local_epochs)):
            if value is not None and value > 1:
                problems.append(Problem(
                    f"{where}.{key}", f"is {value}, but {strategy!r} with {generator!r} runs a fixed sequence of "
                    "phases (one round) and does not use it", "1 (or leave it out)"))
    gen_params = dict(generator_params or {})
    if "epochs" in gen_params and flow == "fedavg":
        problems.append(Problem(
            f"{generator_where}.params.epochs",
            f"is not used by {strategy!r}: weight averaging trains {where}.rounds x {where}.local_epochs epochs",
            fix=f"remove it and set {where}.local_epochs (epochs per round) and {where}.rounds"))
    problems += generator_param_problems(generator, gen_params, where=f"{generator_where}.params")
    return problems


def check_settings(strategy: str, generator: str, **settings: Any) -> None:
    """Raise one :class:`ValidationError` listing every problem of :func:`settings_problems` (if any)."""
    problems = settings_problems(strategy, generator, **settings)
    if problems:
        raise ValidationError(f"Settings of strategy {strategy!r} with generator {generator!r}", problems)


# -- classes ------------------------------------------------------------------------------------------------------


def strategy_class(name: str) -> type[Strategy]:
    """The strategy class registered as ``name`` (imported on use)."""
    if name not in STRATEGIES:
        raise ValidationError("Strategy", [Problem("name", f"unknown strategy {name!r}", ", ".join(STRATEGIES))])
    module, _, cls = STRATEGIES[name].target.partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def make_strategy(name: str, schema: TableSchema, **settings: Any) -> Strategy:
    """Build a strategy by registry name (settings checked against the registry)."""
    return strategy_class(name)(schema, **settings)
