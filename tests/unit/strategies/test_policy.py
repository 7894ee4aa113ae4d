"""A site's policy is its own: loading it, tightening it per message, and when a count table isolates patients."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsynth.errors import ValidationError
from fedsynth.strategies.policy import POLICY_FILENAME, SitePolicy, isolates_patients


def test_a_request_can_tighten_the_policy_but_never_loosen_it() -> None:
    # Setup
    site = SitePolicy(min_count=10, gate_mia_auc_above=0.6, gate_nndr_p5_margin=0.1, max_share_rows=100,
                      epsilon=3.0)
    looser = {"min_category_count": 1, "privacy_check": False, "gate_mia_auc_above": 1.0, "gate_nndr_p5_margin": 0.9,
              "gate_exact_copies_margin": 1.0,
              "share_rows": 5000, "significant_digits": 12, "clear_counts": True, "allow_synthetic_rows": True,
              "epsilon": 100.0}
    stricter = {"min_category_count": 20, "gate_mia_auc_above": 0.55, "gate_nndr_p5_margin": 0.05, "share_rows": 40,
                "significant_digits": 2, "allow_synthetic_rows": False, "epsilon": 1.0}

    # Run
    got_looser, got_stricter = site.effective(looser), site.effective(stricter)

    # Assert
    assert got_looser == site
    assert got_stricter == SitePolicy(min_count=20, gate_mia_auc_above=0.55, gate_nndr_p5_margin=0.05, max_share_rows=40,
                                      significant_digits=2, allow_synthetic_rows=False, epsilon=1.0)


def test_a_switched_off_gate_stays_on_and_a_requested_gate_switches_on() -> None:
    assert SitePolicy().effective({"privacy_check": False}).privacy_check is True
    assert SitePolicy(privacy_check=False).effective({"privacy_check": True}).privacy_check is True
    assert SitePolicy(privacy_check=False).effective({}).privacy_check is False
    # the site's bootstrap tolerance (None) cannot be compared with a number, so a request leaves it
    assert SitePolicy().effective({"gate_nndr_p5_margin": 1.0}).gate_nndr_p5_margin is None


def test_isolating_tables_by_hand() -> None:
    k5 = SitePolicy()
    # a cell of 3 (non-empty, under k = 5)
    assert isolates_patients(np.array([[10, 3], [0, 12]]), 25, k5)
    # cells >= k, empty cells allowed, 4 cells <= 25 / 5
    assert not isolates_patients(np.array([[10, 5], [0, 10]]), 25, k5)
    # 6 cells > 25 / 5 = 5 even though every non-empty cell holds >= k
    assert isolates_patients(np.array([5, 5, 5, 5, 5, 0]), 25, k5)
    # a trusted network sends small cells in clear, but not beyond the size cap
    assert not isolates_patients(np.array([[1, 3], [0, 12]]), 16, SitePolicy(clear_counts=True))
    assert isolates_patients(np.zeros(11), 1000, SitePolicy(clear_counts=True, max_cells=10))


def test_the_policy_comes_from_a_file_beside_the_data_then_node_config_keys(tmp_path) -> None:
    # Setup
    (tmp_path / POLICY_FILENAME).write_text("min_count: 11\nallow_synthetic_rows: false\nepsilon: inf\n")
    data = tmp_path / "site.csv"
    data.write_text("a\n1\n")

    # Run
    beside = SitePolicy.from_node_config({}, str(data))
    overridden = SitePolicy.from_node_config({"policy_gate_mia_auc_above": 0.55, "policy_min_count": 12}, str(data))
    default = SitePolicy.from_node_config({}, str(tmp_path / "nowhere" / "x.csv"))

    # Assert
    assert (beside.min_count, beside.allow_synthetic_rows, beside.epsilon) == (11, False, math.inf)
    assert (overridden.min_count, overridden.gate_mia_auc_above, overridden.allow_synthetic_rows) == (12, 0.55, False)
    assert default == SitePolicy()


def test_a_bad_policy_lists_every_problem_at_once(tmp_path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("min_count: 0\ngate_mia_auc_above: 2\nk_anon: 5\n")
    with pytest.raises(ValidationError, match="k_anon: unknown setting"):
        SitePolicy.from_file(path)
    with pytest.raises(ValidationError) as err:
        SitePolicy(min_count=0, gate_mia_auc_above=2.0, privacy_check="no")  # type: ignore[arg-type]
    assert [p.where for p in err.value.problems] == ["min_count", "gate_mia_auc_above", "privacy_check"]


def test_the_noise_floor_comes_from_the_sites_file_or_node_config_and_a_server_cannot_lower_it(tmp_path) -> None:
    # Setup: a floor of 2 in the file beside the data, 3 in the node config
    (tmp_path / POLICY_FILENAME).write_text("min_noise_multiplier: 2.0\n")
    data = tmp_path / "site.csv"
    data.write_text("a\n1\n")

    # Run
    from_file = SitePolicy.from_node_config({}, str(data))
    from_node = SitePolicy.from_node_config({"policy_min_noise_multiplier": 3.0}, str(data))

    # Assert: file, then node config; the default is 1; a request may raise the floor, never lower it
    assert (from_file.min_noise_multiplier, from_node.min_noise_multiplier) == (2.0, 3.0)
    assert SitePolicy().min_noise_multiplier == 1.0
    assert from_file.effective({"min_noise_multiplier": 0.1}).min_noise_multiplier == 2.0
    assert from_file.effective({"min_noise_multiplier": 5.0}).min_noise_multiplier == 5.0
    assert from_file.effective({}).min_noise_multiplier == 2.0


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan, "2", True])
def test_a_noise_floor_that_is_not_a_positive_finite_number_is_a_policy_problem(bad: object) -> None:
    with pytest.raises(ValidationError, match="min_noise_multiplier"):
        SitePolicy(min_noise_multiplier=bad)  # type: ignore[arg-type]


def test_a_simulated_site_gets_its_sources_policy_else_the_defaults(mds_partition, tmp_path) -> None:
    # Setup
    from flwr.app import Context, RecordDict

    from fedsynth.federation.client_app import SiteSource, site_runtime

    path = tmp_path / "s.csv"
    mds_partition.sites[0].data.to_csv(path, index=False)
    sources = [SiteSource("a", str(path), policy={"min_count": 9}), SiteSource("b", str(path))]
    schema = mds_partition.schema.to_dict()

    def ctx(pid: int) -> Context:
        return Context(run_id=1, node_id=pid + 1, node_config={"partition-id": pid}, state=RecordDict(), run_config={})

    # Run
    a, b = site_runtime(ctx(0), sources, schema), site_runtime(ctx(1), sources, schema)

    # Assert
    assert a.policy.min_count == 9 and b.policy == SitePolicy()
