"""Endpoint rules: candidates from the schema's endpoints, site answers, learning, repair and YAML round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.cohort.constraints import (
    EventImplies,
    TimeOrder,
    candidate_rules,
    enforce,
    learn_rules,
    rule_holds,
    site_answers,
    violation_counts,
)
from fedsynth.cohort.schema import ColumnKind, ColumnRole, ColumnSpec, SurvivalEndpoint, TableSchema
from fedsynth.errors import ValidationError

OS = SurvivalEndpoint("OS", "os_t", "os_e")
LFS = SurvivalEndpoint("LFS", "lfs_t", "lfs_e")


def _schema(constraints=(), names=("os_t", "os_e", "lfs_t", "lfs_e")) -> TableSchema:
    o_t, o_e, l_t, l_e = names
    c, b, out = ColumnKind.CONTINUOUS, ColumnKind.BINARY, ColumnRole.OUTCOME
    cols = (ColumnSpec("age", ColumnKind.INTEGER), ColumnSpec(o_t, c, out), ColumnSpec(o_e, b, out),
            ColumnSpec(l_t, c, out), ColumnSpec(l_e, b, out))
    eps = (SurvivalEndpoint("OS", o_t, o_e), SurvivalEndpoint("LFS", l_t, l_e))
    return TableSchema(cols, eps, "toy", constraints=constraints)


def _frame(rows):
    return pd.DataFrame(rows, columns=["os_t", "os_e", "lfs_t", "lfs_e"], dtype="float64")


def test_candidate_rules_come_from_the_endpoints_not_the_column_names():
    # Setup
    plain = _schema()
    renamed = _schema(names=("qzx", "wvu", "kkj", "plm"))
    # Run
    a, b = candidate_rules(plain), candidate_rules(renamed)
    # Assert: each ordered pair of endpoints gives one time rule and one event rule
    assert [r.describe() for r in a] == [
        "os_t <= lfs_t", "os_e = 1 => lfs_e = 1", "lfs_t <= os_t", "lfs_e = 1 => os_e = 1"]
    assert [type(r) for r in a] == [type(r) for r in b]
    assert [[ep.name for ep in r.endpoints] for r in a] == [[ep.name for ep in r.endpoints] for r in b]


def test_candidate_rules_skip_time_rules_between_different_units():
    # Setup
    c, b, out = ColumnKind.CONTINUOUS, ColumnKind.BINARY, ColumnRole.OUTCOME
    cols = tuple(ColumnSpec(n, k, out) for n, k in (("a_t", c), ("a_e", b), ("b_t", c), ("b_e", b)))
    schema = TableSchema(cols, (SurvivalEndpoint("A", "a_t", "a_e", "days"), SurvivalEndpoint("B", "b_t", "b_e", "months")))
    # Run / Assert
    assert all(isinstance(r, EventImplies) for r in candidate_rules(schema))


def test_rule_holds_reads_only_rows_where_both_values_are_known():
    # Setup
    data = _frame([[2.0, 1, 1.0, 1], [3.0, 0, 3.0, 0], [1.0, 1, np.nan, np.nan], [np.nan, np.nan, 5.0, 0]])
    # Run / Assert
    assert rule_holds(data, TimeOrder(LFS, OS))
    assert rule_holds(data, EventImplies(OS, LFS))
    assert rule_holds(data, EventImplies(LFS, OS))  # no row here has an LFS event without an OS event
    assert not rule_holds(_frame([[2.0, 0, 2.5, 0]]), TimeOrder(LFS, OS))
    assert not rule_holds(_frame([[2.0, 1, 2.0, 0]]), EventImplies(OS, LFS))
    assert rule_holds(data[["os_t", "os_e"]], TimeOrder(LFS, OS))  # a site without LFS has nothing against it


def test_a_rule_learnt_from_site_answers_equals_the_rule_on_pooled_rows():
    # Setup: three sites; site 2 has one AML patient alive (LFS event without an OS event) and site 3 lacks LFS
    rng = np.random.default_rng(0)
    os_t = rng.exponential(3.0, 60)
    lfs_t = os_t * rng.uniform(0.3, 1.0, 60)
    os_e = rng.integers(0, 2, 60).astype(float)
    lfs_e = np.maximum(os_e, rng.integers(0, 2, 60)).astype(float)
    pooled = _frame(np.column_stack([os_t, os_e, lfs_t, lfs_e]))
    pooled.loc[50:, ["lfs_t", "lfs_e"]] = np.nan
    sites = [pooled.iloc[:30], pooled.iloc[30:50], pooled.iloc[50:][["os_t", "os_e"]]]
    candidates = candidate_rules(_schema())
    # Run
    learnt = learn_rules(candidates, [site_answers(s, candidates) for s in sites])
    # Assert
    on_pooled = [r for r in candidates if rule_holds(pooled, r)]
    assert learnt == on_pooled
    assert {r.describe() for r in learnt} == {"lfs_t <= os_t", "os_e = 1 => lfs_e = 1"}


def test_one_violating_row_at_one_site_drops_the_rule_everywhere():
    # Setup
    candidates = [TimeOrder(LFS, OS), EventImplies(OS, LFS)]
    ok = _frame([[2.0, 1, 1.0, 1]])
    bad = _frame([[2.0, 0, 2.5, 0]])
    # Run
    learnt = learn_rules(candidates, [site_answers(ok, candidates), site_answers(bad, candidates)])
    # Assert
    assert learnt == [EventImplies(OS, LFS)]
    assert learn_rules(candidates, [site_answers(pd.concat([ok, bad]), candidates)]) == learnt


def test_learn_rules_refuses_a_reply_of_the_wrong_length():
    with pytest.raises(ValueError, match="expected 2"):
        learn_rules([TimeOrder(LFS, OS), EventImplies(OS, LFS)], [[True]])
    with pytest.raises(ValueError, match="no site"):
        learn_rules([TimeOrder(LFS, OS)], [])


def test_enforce_meets_in_the_middle_and_sets_implied_events():
    # Setup: rows worked by hand (sqrt(2 * 3) = sqrt(6))
    data = _frame([
        [2.0, 1, 3.0, 0],            # LFS past a death: both times -> sqrt(6), then the death -> LFS event
        [2.0, 0, 3.0, 1],            # LFS past OS censoring: both -> sqrt(6), events kept (AML at last follow-up)
        [4.0, 1, 1.0, 0],            # death with LFS censored earlier: LFS event set, times kept
        [4.0, 0, 1.0, 1],            # AML at 1.0, alive at 4.0: no rule broken, unchanged
        [np.nan, np.nan, 5.0, 0],    # OS unknown: nothing to check
    ])
    rules = [TimeOrder(LFS, OS), EventImplies(OS, LFS)]
    # Run
    out = enforce(data, rules)
    # Assert
    r6 = np.sqrt(6.0)
    expected = _frame([[r6, 1, r6, 1], [r6, 0, r6, 1], [4.0, 1, 1.0, 1], [4.0, 0, 1.0, 1],
                       [np.nan, np.nan, 5.0, 0]])
    pd.testing.assert_frame_equal(out, expected)
    assert [c["violations"] for c in violation_counts(out, rules)] == [0, 0]
    assert [c["violations"] for c in violation_counts(data, rules)] == [2, 2]  # rows 0-1 and rows 0, 2
    assert data.loc[0, "lfs_t"] == 3.0  # the input is not modified


def test_enforce_settles_a_chain_of_time_rules():
    # Setup: A <= B <= C declared in the order that needs a second pass
    a, b, c = (SurvivalEndpoint(n, f"{n}_t", f"{n}_e") for n in "abc")
    data = pd.DataFrame({"a_t": [9.0], "a_e": [1.0], "b_t": [8.0], "b_e": [1.0], "c_t": [3.0], "c_e": [0.0]})
    rules = [TimeOrder(a, b), TimeOrder(b, c)]
    # Run
    out = enforce(data, rules)
    # Assert: pass 1 meets a-b at sqrt(72), then b-c at sqrt(sqrt(72) * 3); pass 2 caps a at b
    m = np.sqrt(np.sqrt(72.0) * 3.0)
    assert out.loc[0, ["a_t", "b_t", "c_t"]].tolist() == pytest.approx([m, m, m])
    assert all(rule_holds(out, r) for r in rules)


def test_schema_yaml_round_trip_keeps_strata_and_constraints(tmp_path):
    # Setup
    schema = TableSchema.from_dict({
        "name": "toy",
        "columns": _schema().to_dict()["columns"],
        "endpoints": _schema().to_dict()["endpoints"],
        "strata": ["os_e", {"column": "age", "bins": [60, 70]}],
        "constraints": [{"type": "time_order", "shorter": "LFS", "longer": "OS"},
                        {"type": "event_implies", "source": "OS", "implied": "LFS"}],
    })
    # Run
    schema.to_yaml(tmp_path / "s.yaml")
    back = TableSchema.from_yaml(tmp_path / "s.yaml")
    # Assert
    assert back == schema and back.strata == schema.strata and back.constraints == schema.constraints
    assert [r.describe() for r in back.constraints] == ["lfs_t <= os_t", "os_e = 1 => lfs_e = 1"]
    assert back.strata[1].bins == (60.0, 70.0)


def test_schema_reports_every_bad_stratum_and_rule_at_once():
    # Setup
    raw = {
        "columns": _schema().to_dict()["columns"],
        "endpoints": _schema().to_dict()["endpoints"],
        "strata": ["nope", {"column": "os_e", "bins": [1]}, {"column": "age", "bins": [70, 60]}],
        "constraints": [{"type": "time_order", "shorter": "PFS", "longer": "OS"}, {"type": "before"}],
    }
    # Run
    with pytest.raises(ValidationError) as err:
        TableSchema.from_dict(raw)
    # Assert
    text = str(err.value)
    for part in ("unknown endpoint(s) ['PFS']", "constraints[1]", "'nope'", "has bins but the column is binary",
                 "not strictly increasing"):
        assert part in text, part


def test_select_and_overrides_keep_rules_only_while_their_endpoints_exist():
    # Setup
    schema = _schema().with_rules([TimeOrder(LFS, OS), EventImplies(OS, LFS)])
    # Run
    kept = schema.select(["os_t", "os_e", "lfs_t", "lfs_e"])
    dropped = schema.with_overrides({"drop": ["lfs_t"]})
    replaced = schema.with_overrides({"constraints": [{"type": "event_implies", "source": "OS", "implied": "LFS"}]})
    # Assert
    assert kept.constraints == schema.constraints
    assert dropped.constraints == ()
    assert replaced.constraints == (EventImplies(OS, LFS),)
    assert schema.with_rules([TimeOrder(LFS, OS)]).constraints == schema.constraints  # no duplicates


def test_the_mds_schema_declares_rules_that_hold_in_every_real_row(mds_cohort):
    # Setup
    schema = mds_cohort.schema
    # Run
    counts = violation_counts(mds_cohort.data, schema.constraints)
    learnt = learn_rules(candidate_rules(schema), [site_answers(mds_cohort.data, candidate_rules(schema))])
    # Assert
    assert [c["rule"] for c in counts] == ["LFS_YEARS <= OS_YEARS", "OS_STATUS = 1 => LFS_STATUS = 1"]
    assert [c["violations"] for c in counts] == [0, 0]
    assert set(learnt) == set(schema.constraints)


def test_enforce_keeps_a_repaired_time_at_its_floor():
    # Setup: LFS may not go below 0.5 (its domain's lowest value); OS at 0.1 with LFS 2.0 meet at sqrt(0.2) < 0.5
    data = _frame([[0.1, 1, 2.0, 0], [3.0, 1, 4.0, 0]])
    # Run
    out = enforce(data, [TimeOrder(LFS, OS), EventImplies(OS, LFS)], floors={"lfs_t": 0.5})
    # Assert
    np.testing.assert_allclose(out[["os_t", "lfs_t", "lfs_e"]].to_numpy(),
                               [[0.5, 0.5, 1.0], [np.sqrt(12.0), np.sqrt(12.0), 1.0]])
