"""Federated averaging, the site side: what a site does with each FedAvg message.

The server side (:class:`~fedsynth.strategies.fedavg_server.FedAvgStrategy`) sends four message types; a site
answers them here (:data:`SITE_HANDLERS`):

- ``train.fit``: set the global weights, train ``local_epochs`` epochs on the site's own rows (DP-SGD when the
  message carries a noise multiplier), reply with weights and row count, or stash ``n * w`` for a secure sum;
- ``query.mixture_init``: encode the site's rows under the global weights, keep the latent codes in the node's
  state (they never leave) and reply with their moments (and, on a warm start in clear, the first E-step);
- ``query.mixture_estep``: responsibility-weighted sufficient statistics under the current global mixture;
- ``query.component_counts``: per component, responsibility-weighted label counts of the site's rows;
- ``query.survival_counts``: events and person-time per interval and level of the survival calibration's strata.

Site state: the generator is cached per process and run (:func:`~fedsynth.strategies.site.site_model`); its local
state after each round (optimiser moments, random state, epochs) goes to the node's ``context.state`` and the
site's own folder (:data:`LOCAL_STATE`), so a fresh ClientApp process, another simulation actor or a resumed run
continues where the site stopped. Under a privacy budget a site charges its own ledger before any noisy release,
and a round it already released is sent again at no new cost.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import Message, RecordDict

from fedsynth.errors import CapabilityError
from fedsynth.generators.protocols import SupportsLatentMixture, SupportsLocalState, SupportsWeights
from fedsynth.privacy.accounting import DPSGDRelease, Release
from fedsynth.strategies import records
from fedsynth.strategies.secure_domain import ledger_run_id
from fedsynth.strategies.site import (
    SiteHandler,
    SiteRuntime,
    conform_to_domain,
    load_site_state,
    message_config,
    save_site_state,
    site_generator,
    site_model,
)

log = logging.getLogger(__name__)



#: The round each cached site model has finished (per process, like the model cache).
_SITE_ROUND: dict[tuple[str, str], int] = {}


def _site_key(msg: Message, site: SiteRuntime) -> tuple[str, str]:
    return (str(message_config(msg)["run_token"]) + ":fedavg", site.name)


def _site_state(msg: Message, site: SiteRuntime) -> tuple[SupportsWeights, pd.DataFrame]:
    """The site's generator (kept across messages of one run) and its rows conformed to the shared domain."""
    cfg = message_config(msg)

    def build() -> tuple[SupportsWeights, pd.DataFrame]:
        _SITE_ROUND.pop(_site_key(msg, site), None)
        domain = records.domain_from_text(str(cfg["domain"]))
        generator = site_generator(cfg, site, domain)
        if not isinstance(generator, SupportsWeights):
            raise CapabilityError(f"FedAvg needs a generator with weight exchange; {cfg['generator']!r} has none")
        return generator, conform_to_domain(site.data, domain)

    generator, data = site_model(_site_key(msg, site), build)
    return generator, data


#: The part of a site's state (:func:`~fedsynth.strategies.site.save_site_state`) FedAvg keeps between rounds.
LOCAL_STATE = "fedavg-local"


def _restore_local_state(generator: SupportsWeights, site: SiteRuntime, key: tuple[str, str], run_token: str,
                         server_round: int) -> None:
    """Before training round ``server_round``, make sure the site's model carries its local state after the
    previous round (optimiser moments, random generator state, epochs trained).

    A model cached in this process that finished the previous round has it already. Otherwise (a fresh
    ClientApp process per message in a deployment, another simulation actor served the site, a resumed run) it
    comes from the node's ``context.state`` or the site's own folder
    (:func:`~fedsynth.strategies.site.load_site_state`). The weights themselves come with every message.
    """
    previous = server_round - 1
    if previous < 1 or _SITE_ROUND.get(key) == previous or not isinstance(generator, SupportsLocalState):
        return
    found = load_site_state(site, run_token, LOCAL_STATE, previous)
    if found is None:
        log.warning("site %s: no saved state after round %d; local training continues from fresh optimiser state",
                    site.name, previous)
        return
    meta, arrays = found
    generator.set_local_state(meta, arrays)


def _save_local_state(generator: SupportsWeights, site: SiteRuntime, key: tuple[str, str], run_token: str,
                      server_round: int, extra: Mapping[str, Any] | None = None) -> None:
    _SITE_ROUND[key] = server_round
    if not isinstance(generator, SupportsLocalState):
        return
    meta, arrays = generator.get_local_state()
    weights = {f"w.{k}": v for k, v in generator.get_weights().items()}
    save_site_state(site, run_token, LOCAL_STATE, server_round, {**meta, **dict(extra or {})}, {**arrays, **weights})


# -- differential privacy (site side) --------------------------------------------------------------------


def _charge_ledger(site: SiteRuntime, cfg: Mapping[str, Any], key: str, release: Release | DPSGDRelease) -> None:
    """Charge the site's own ledger before a noisy release leaves (refused past the site's budget)."""
    ledger = site.privacy_ledger
    if ledger is not None:
        ledger.record(site.name, ledger_run_id(cfg), key, release.rdp(ledger.orders))


def _released_round(site: SiteRuntime, cfg: Mapping[str, Any], server_round: int) -> dict[str, np.ndarray] | None:
    """The weights this site already released for ``server_round`` of this private run (a resumed run asking
    again), or ``None``. Sending them again adds no information and costs nothing; training again would."""
    found = load_site_state(site, str(cfg["run_token"]), LOCAL_STATE, server_round)
    if found is None or found[0].get("dp_run") != ledger_run_id(cfg):
        return None
    return {k[2:]: v for k, v in found[1].items() if k.startswith("w.")}


def _prepare_dp_fit(generator: Any, site: SiteRuntime, cfg: Mapping[str, Any], server_round: int) -> None:
    """Charge this round's DP-SGD to the site's ledger at the settings the message carries (noise multiplier,
    Poisson sampling rate, steps; :func:`~fedsynth.generators._dp.dpsgd_settings_from_request`), then switch the
    generator to DP-SGD at exactly those. The coordinator planned them from the hello's noisy row count; the
    privacy of Poisson-sampled steps depends on the rate, the steps and the noise only, so the site's ledger and
    the coordinator's accountant hold the same figure whatever the site's true count."""
    from fedsynth.generators._dp import dpsgd_settings_from_request

    settings = dpsgd_settings_from_request(cfg)
    steps = int(cfg.get("local_epochs", 1)) * settings.steps_per_epoch
    _charge_ledger(site, cfg, f"dpsgd/round-{server_round}",
                   DPSGDRelease("training", settings.noise_multiplier, settings.sample_rate, steps))
    generator.dp_sgd_ = settings


def _num_examples(cfg: Mapping[str, Any], data: pd.DataFrame) -> int:
    """The weight of the site's update: its row count, or under a budget the hello's noisy lower bound the message
    carries (``dp_weight``; post-processing of a release, so no exact count leaves the site)."""
    return int(cfg["dp_weight"]) if "dp_noise_multiplier" in cfg else len(data)


def _private_statistics(site: SiteRuntime, cfg: Mapping[str, Any], what: str,
                        stats: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Latent-mixture statistics as they leave a private run: Gaussian noise (OS entropy) on statistics of
    clipped codes, charged to the site's ledger first; unchanged without a budget."""
    if "dp_mixture_noise" not in cfg:
        return dict(stats)
    from fedsynth.generators._dp import MIXTURE_RELEASES_PER_REQUEST, noisy_mixture_statistics

    z = float(cfg["dp_mixture_noise"])
    _charge_ledger(site, cfg, f"mixture/{cfg.get('server_round', 0)}/{what}/{uuid.uuid4().hex}",
                   Release("mixture", z, MIXTURE_RELEASES_PER_REQUEST))
    return noisy_mixture_statistics(stats, code_clip=float(cfg["dp_code_clip"]), noise_multiplier=z,
                                    random_state=np.random.default_rng())


def _last_losses(generator: Any) -> dict[str, float]:
    """The generator's losses of its last local epoch (``losses_[-1]``), e.g. generator_loss/discriminator_loss."""
    for attr in ("losses_", "loss_history_", "history_"):
        losses = getattr(generator, attr, None)
        if isinstance(losses, list) and losses and isinstance(losses[-1], Mapping):
            return {
                (str(k) if "loss" in str(k) else f"loss_{k}"): float(v)
                for k, v in losses[-1].items()
                if k != "epoch" and isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)
            }
    return {}


def handle_fit(msg: Message, site: SiteRuntime) -> RecordDict:
    """``train.fit``: set the global weights, train ``local_epochs`` epochs locally, return weights and counts."""
    cfg = message_config(msg)
    generator, data = _site_state(msg, site)
    key, server_round, token = _site_key(msg, site), int(cfg.get("server_round", 1)), str(cfg["run_token"])
    _restore_local_state(generator, site, key, token, server_round)
    private = "dp_noise_multiplier" in cfg
    if private and (again := _released_round(site, cfg, server_round)) is not None:
        _restore_local_state(generator, site, key, token, server_round + 1)  # its state after that round
        generator.set_weights(again)
        _SITE_ROUND[key] = server_round
        sent = {"num_examples": _num_examples(cfg, data)}
        # Under secure aggregation the same update goes into the sum again, never in clear.
        return _stash_for_secure_sum(cfg, site, _weighted_update(again, sent)) or RecordDict(
            {"arrays": records.to_array_record(again), "metrics": records.to_metric_record(sent)})
    generator.set_weights(records.from_array_record(msg.content["arrays"]))
    if private:
        _prepare_dp_fit(generator, site, cfg, server_round)
    try:
        generator.partial_fit(data, epochs=int(cfg.get("local_epochs", 1)))
    finally:
        if private:
            generator.dp_sgd_ = None  # type: ignore[attr-defined]
    _save_local_state(generator, site, key, token, server_round, {"dp_run": ledger_run_id(cfg)} if private else None)
    metrics = {"num_examples": _num_examples(cfg, data), **({} if private else _last_losses(generator))}
    secure = _stash_for_secure_sum(cfg, site, _weighted_update(generator.get_weights(), metrics))
    if secure is not None:
        return secure
    return RecordDict(
        {"arrays": records.to_array_record(generator.get_weights()), "metrics": records.to_metric_record(metrics)}
    )


def handle_mixture_init(msg: Message, site: SiteRuntime) -> RecordDict:
    """``query.mixture_init``: latent codes of the site's rows under the global weights (kept in the node's
    state, never sent) and their moments (count, sum, sum of outer products)."""
    from fedsynth.generators.latent_mixture import mixture_e_step_statistics, mixture_init_statistics

    generator, data = _site_state(msg, site)
    if not isinstance(generator, SupportsLatentMixture):
        raise CapabilityError("query.mixture_init needs a generator with a latent mixture")
    generator.set_weights(records.from_array_record(msg.content["arrays"]))
    codes = np.asarray(generator.latent_codes(data), dtype=np.float64)
    cfg = message_config(msg)
    if "dp_code_clip" in cfg:
        from fedsynth.generators._dp import clip_codes

        codes = clip_codes(codes, float(cfg["dp_code_clip"]))
    site.state["latent-codes"] = records.to_array_record({"codes": codes})
    stats = _private_statistics(site, cfg, "init", mixture_init_statistics(codes))
    stashed = _stash_for_secure_sum(cfg, site, stats)
    if stashed is not None:
        return stashed
    reply = RecordDict({"stats": records.to_array_record(stats)})
    if "mixture" in msg.content:  # a warm start in clear: the first E-step under the previous round's mixture
        params = records.from_array_record(msg.content["mixture"])
        reply["estep"] = records.to_array_record(mixture_e_step_statistics(codes, params))
    return reply


def handle_mixture_estep(msg: Message, site: SiteRuntime) -> RecordDict:
    """``query.mixture_estep``: responsibility-weighted sufficient statistics under the current global mixture."""
    from fedsynth.generators.latent_mixture import mixture_e_step_statistics

    codes = records.from_array_record(site.state["latent-codes"])["codes"]
    params = records.from_array_record(msg.content["mixture"])
    cfg = message_config(msg)
    stats = _private_statistics(site, cfg, "estep", mixture_e_step_statistics(codes, params))
    return _stash_for_secure_sum(cfg, site, stats) or RecordDict({"stats": records.to_array_record(stats)})


def _weighted_update(weights: Mapping[str, np.ndarray], metrics: Mapping[str, float]) -> dict[str, np.ndarray]:
    """What a site adds to a secure FedAvg sum: ``n * w`` per weight (``w.<name>``), ``n``, and ``n * loss``
    per metric (``m.<name>``), float64; the server divides the sums by the summed ``n``."""
    n = float(metrics["num_examples"])
    out = {f"w.{k}": np.asarray(v, dtype=np.float64) * n for k, v in weights.items()}
    out.update({f"m.{k}": np.asarray(float(v) * n) for k, v in metrics.items() if k != "num_examples"})
    out["n"] = np.asarray(n)
    return out


def _stash_for_secure_sum(cfg: Mapping[str, Any], site: SiteRuntime, arrays: Mapping[str, np.ndarray]) -> RecordDict | None:
    """Under secure aggregation (the instruction carries ``secagg_tag``) keep ``arrays`` for the secure sum that
    follows and reply with nothing of them; otherwise ``None`` (reply in clear)."""
    tag = cfg.get("secagg_tag")
    if not tag:
        return None
    from fedsynth.strategies.secure_sum import stash_vector

    stash_vector(site, str(tag), arrays)
    return RecordDict({"metrics": records.to_metric_record({})})


def handle_component_counts(msg: Message, site: SiteRuntime) -> RecordDict:
    """``query.component_counts``: per component of the global mixture, responsibility-weighted label counts of
    the site's rows (from the codes kept at ``query.mixture_init``)."""
    generator, data = _site_state(msg, site)
    codes = records.from_array_record(site.state["latent-codes"])["codes"]
    mixture = records.from_array_record(msg.content["mixture"])
    cfg = message_config(msg)  # in clear, the site's smallest released count applies to what it sends
    k = 1 if cfg.get("secagg_tag") or site.policy.clear_counts else site.policy.min_count
    stats = generator.component_count_statistics(data, mixture, codes, min_count=k)  # type: ignore[attr-defined]
    return _stash_for_secure_sum(cfg, site, stats) or RecordDict({"stats": records.to_array_record(stats)})


def handle_survival_counts(msg: Message, site: SiteRuntime) -> RecordDict:
    """``query.survival_counts``: events, person-time and row counts per level of the generator's calibration
    strata (:mod:`fedsynth.generators.survival_calibration`); in clear, levels under the site's smallest released
    count are withheld."""
    generator, data = _site_state(msg, site)
    cfg = message_config(msg)
    k = 1 if cfg.get("secagg_tag") or site.policy.clear_counts else site.policy.min_count
    stats = generator.survival_count_statistics(data, min_count=k)  # type: ignore[attr-defined]
    return _stash_for_secure_sum(cfg, site, stats) or RecordDict({"survival": records.to_array_record(stats)})


SITE_HANDLERS: Mapping[str, SiteHandler] = {
    "train.fit": handle_fit,
    "query.mixture_init": handle_mixture_init,
    "query.mixture_estep": handle_mixture_estep,
    "query.component_counts": handle_component_counts,
    "query.survival_counts": handle_survival_counts,
}
