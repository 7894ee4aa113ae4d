"""Two-step BN outcome_parents: centralized fit on the MDS 90/10 split (seed 0), three arms (configs/arms/, n=300)
against the real eligible training patients, and the survival-effect fidelity (--fidelity).

Usage: python benchmarks/bench_outcome_parents.py '{"outcome_parents": 2}' --fidelity
"""
import json, sys, time
import numpy as np
from fedsynth.cohort.datasets import load
from fedsynth.cohort.partition import split_with_notes
from fedsynth.cohort.criteria import read_criteria
from fedsynth.cohort.conditions import check_sampling_inputs
from fedsynth.generators import make_generator
from fedsynth.evaluation.arm import arm_report
params = json.loads(sys.argv[1])
c = load("mds-iwgpm")
train, hold, _ = split_with_notes(c.data, c.schema, holdout_fraction=0.1, random_state=0)
t0 = time.perf_counter()
gen = make_generator("bayesian_network", c.schema, **params).fit(train[c.schema.model_columns])
fit_s = time.perf_counter() - t0
print("params", params, f"fit {fit_s:.1f}s")
for v in ("OS_YEARS", "OS_STATUS", "LFS_YEARS", "LFS_STATUS"):
    print("  parents", v, sorted(u for u, w in gen.edges_ if w == v))
for a in ("high_risk_tp53_wt", "tp53_mutated", "lower_risk"):
    crit = read_criteria(f"configs/arms/{a}.yaml", c.schema)
    req = check_sampling_inputs(crit.condition_items(), crit.where(c.schema), c.schema)
    m = train.eval(req.where).to_numpy(bool) if req.where else np.ones(len(train), bool)
    for col, vals in req.conditions.items():
        vals = vals if isinstance(vals, list) else [vals]
        m &= train[col].isin(vals).to_numpy()
    arm = gen.sample(300, random_state=0, conditions=req.conditions, where=req.where, max_tries=1000)
    rep = arm_report(arm, c.schema, reference=train[m])
    os_ = rep["endpoints"]["OS"]; cmp = os_["comparison"]
    print(f"  arm {a}: median OS synthetic {os_['arm']['median']:.2f} real {os_['reference']['median']:.2f} "
          f"(rel err {cmp['median_relative_error']:.1%}); HR {cmp['hr']:.2f} ({cmp['hr_lower']:.2f}-{cmp['hr_upper']:.2f}), log-rank p {cmp['logrank_p']:.3g}; n real {int(m.sum())}")
if "--fidelity" in sys.argv:
    from fedsynth.evaluation.survival_effects import survival_effects
    syn = gen.sample(len(train), random_state=0)
    se = survival_effects(train, syn, c.schema, rng=np.random.default_rng(0))
    print("  survival-effect fidelity", se.get("fidelity"), "flags", len(se.get("flags") or []))
