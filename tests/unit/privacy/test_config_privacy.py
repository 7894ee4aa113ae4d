"""The run config's ``privacy:`` block: parsed for two_step_bn, refused with the reason elsewhere."""

from __future__ import annotations

import math

import pytest

from fedsynth.errors import ValidationError
from fedsynth.experiments.config import parse_config


def test_privacy_block_is_parsed_and_absent_means_none() -> None:
    cfg = parse_config({"cohort": {"name": "mds-iwgpm"}, "privacy": {"epsilon": 3, "delta": 1e-6}})
    assert (cfg.privacy.epsilon, cfg.privacy.delta) == (3.0, 1e-6)
    assert parse_config({"cohort": {"name": "mds-iwgpm"}}).privacy is None


def test_an_infinite_epsilon_is_refused_with_the_way_to_say_no_privacy() -> None:
    # An infinite budget is no guarantee: such a run released exact counts while its manifest, report and cards
    # printed "(epsilon, delta) = (0, 1e-05) spent of a budget of epsilon inf".
    for eps in (float("inf"), "inf"):  # YAML .inf reads as float("inf")
        with pytest.raises(ValidationError) as err:
            parse_config({"cohort": {"name": "mds-iwgpm"}, "privacy": {"epsilon": eps}})
        assert "privacy.epsilon: must be finite; leave out the privacy block" in str(err.value)
    assert math.isfinite(parse_config({"cohort": {"name": "mds-iwgpm"}, "privacy": {"epsilon": 1e6}}).privacy.epsilon)


def test_privacy_with_fedavg_ctgan_is_refused_with_the_reason_and_every_other_problem() -> None:
    # Setup: a bad delta and an unsupported strategy in one config
    raw = {"cohort": {"name": "mds-iwgpm"}, "generator": {"name": "ctgan"},
           "strategy": {"name": "fedavg"}, "privacy": {"epsilon": 1}}
    # Run / Assert
    with pytest.raises(ValidationError) as err:
        parse_config(raw)
    text = str(err.value)
    assert "privacy: is not supported for fedavg with generator ctgan: CTGAN under differential privacy" in text
    assert "private discriminator" in text
    with pytest.raises(ValidationError) as err:
        parse_config({"cohort": {"name": "mds-iwgpm"}, "privacy": {"epsilon": 0, "delta": 2}})
    assert "privacy.epsilon" in str(err.value) and "privacy.delta" in str(err.value)


def test_privacy_is_accepted_for_fedavg_vae_bgm_and_sd_sharing_and_refused_for_sd_sharing_ctgan() -> None:
    ok = parse_config({"cohort": {"name": "mds-iwgpm"}, "generator": {"name": "vae_bgm"},
                       "strategy": {"name": "fedavg"}, "privacy": {"epsilon": 3}})
    assert ok.privacy is not None and ok.privacy.epsilon == 3
    for generator in ("vae_bgm", "bayesian_network"):
        ok = parse_config({"cohort": {"name": "mds-iwgpm"}, "generator": {"name": generator},
                           "strategy": {"name": "sd_sharing"}, "privacy": {"epsilon": 3}})
        assert ok.privacy is not None
    with pytest.raises(ValidationError) as err:
        parse_config({"cohort": {"name": "mds-iwgpm"}, "generator": {"name": "ctgan"},
                      "strategy": {"name": "sd_sharing"}, "privacy": {"epsilon": 3}})
    assert ("privacy: is not supported for sd_sharing with generator ctgan: CTGAN under differential privacy "
            "needs a private discriminator") in str(err.value)
