"""The coordinator's refusal of a run that asks more than its sites allow names the setting that is over."""

from __future__ import annotations

import pytest

from fedsynth.errors import FedsynthError
from fedsynth.privacy.accounting import PrivacyBudget
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.policy import SitePolicy
from fedsynth.strategies.registry import make_strategy
from fedsynth.strategies.site import SiteRuntime

COLUMNS = ["AGE", "SEX", "TP53", "OS_YEARS", "OS_STATUS"]


def _refusal(mds_partition, budget: PrivacyBudget) -> str:  # type: ignore[no-untyped-def]
    schema = mds_partition.schema.select(COLUMNS)
    sites = [SiteRuntime(s.name, s.data, schema, seed=i, policy=SitePolicy(epsilon=4.0, delta=1e-5))
             for i, s in enumerate(mds_partition.sites)]
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network",
                             generator_params={"max_indegree": 1}, min_sites=3)
    strategy.privacy = budget
    with pytest.raises(FedsynthError) as err:
        strategy.start(InProcessGrid(sites))
    return str(err.value)


def test_a_delta_over_the_sites_policy_is_refused_with_the_delta_to_lower(mds_partition) -> None:
    # The sites allow (4, 1e-5); the run asks epsilon 3 (fine) at delta 1e-3 (too much). The message used to
    # say "Lower privacy.epsilon to at most 4", a fix that changes nothing.
    text = _refusal(mds_partition, PrivacyBudget(3.0, 1e-3))
    assert "allows delta 1e-05" in text and "nothing was released" in text
    assert "Lower privacy.delta to at most 1e-05" in text
    assert "privacy.epsilon to at most" not in text


def test_both_settings_over_are_both_named(mds_partition) -> None:
    text = _refusal(mds_partition, PrivacyBudget(10.0, 1e-3))
    assert "has epsilon 4 left" in text and "allows delta 1e-05" in text
    assert "Lower privacy.epsilon to at most 4 and privacy.delta to at most 1e-05" in text
