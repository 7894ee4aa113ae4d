"""Tests of the Bayesian network's derived nodes: a derived column (IPSS-R) as a node counted from its inputs,
parent of its inputs but never their child, and the dependence of the whole risk group on a gene it restores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsynth.cohort.derived import DERIVATIONS, ipss_r_category
from fedsynth.generators import make_generator

#: The IPSS-R inputs, the derived column and the genes of the scenario (the MDS schema's columns).
COLUMNS = ["CYTO_IPSSR", "BM_BLAST", "HB", "PLT", "ANC", "IPSSR", "TP53", "SF3B1", "ASXL1", "SRSF2"]


@pytest.fixture(scope="module")
def small(mds_cohort):  # type: ignore[no-untyped-def]
    """The MDS cohort restricted to the IPSS-R inputs, IPSS-R and four genes."""
    schema = mds_cohort.schema.select(COLUMNS)
    return schema, mds_cohort.data[schema.model_columns]


def test_derived_nodes_come_from_the_schemas_derivations(small) -> None:  # type: ignore[no-untyped-def]
    # Setup
    schema, data = small
    derived = schema.derived_columns[0]
    inputs = set(DERIVATIONS[str(schema[derived].derived)][1])
    # Run
    gen = make_generator("bayesian_network", schema, max_indegree=0).fit(data)
    off = make_generator("bayesian_network", schema, max_indegree=0, derived_nodes=False).fit(data)
    forbidden = gen.forbidden_edges()  # type: ignore[attr-defined]
    node = derived + "#m"
    # Assert: one node per derived categorical column; every input (and input indicator) is barred as its parent,
    # while the node may be a parent of each input; without the setting there is no such node.
    assert gen.derived_nodes() == [node]  # type: ignore[attr-defined]
    assert node in gen.model_.nodes()  # type: ignore[attr-defined]
    assert node not in off.model_.nodes()  # type: ignore[attr-defined]
    barred = {u for u, v in forbidden if v == node}
    assert {u.split("#")[0] for u in barred} == inputs
    assert "HB#isna" in barred
    assert not any(u == node and v in inputs for u, v in forbidden)


def test_a_derived_nodes_table_is_counted_from_its_inputs(small) -> None:  # type: ignore[no-untyped-def]
    # Setup: no parents, so the node's CPD is its counts plus the BDeu prior (ess / states per state)
    schema, data = small
    ess = 6.0
    gen = make_generator("bayesian_network", schema, max_indegree=0, equivalent_sample_size=ess).fit(data)
    # Run
    cpd = gen.model_.get_cpds("IPSSR#m").get_values()[:, 0]  # type: ignore[attr-defined]
    # Assert: hand-computed from the IPSS-R recomputed on the rows (missing where an input is missing)
    groups = ipss_r_category(data)
    counts = [float((groups == c).sum()) for c in schema["IPSSR"].categories or ()] + [float(groups.isna().sum())]
    expected = (np.array(counts) + ess / 6) / (sum(counts) + ess)
    assert cpd == pytest.approx(expected, rel=1e-12)


def test_derived_nodes_carry_a_genes_shift_of_the_whole_risk_group(small) -> None:  # type: ignore[no-untyped-def]
    # Setup: TP53-mutated patients are mostly IPSS-R Very-High through several inputs at once (karyotype, blasts,
    # counts). With one parent per node (in the full network other columns take up the inputs' parent slots),
    # TP53 can reach one input only; the derived node reaches them all.
    schema, data = small
    real = ipss_r_category(data[data["TP53"] == 1]).value_counts(normalize=True).get("Very-High", 0.0)

    def very_high_among_mutated(derived_nodes: bool) -> float:
        gen = make_generator("bayesian_network", schema, max_indegree=1, derived_nodes=derived_nodes).fit(data)
        rows = gen.sample(4000, random_state=0, conditions={"TP53": 1})
        return float((rows["IPSSR"].dropna() == "Very-High").mean())  # among rows with a risk group, as real

    # Run
    with_nodes, without = very_high_among_mutated(True), very_high_among_mutated(False)
    # Assert: within 6 points of the real share (about one half) with the node; less than half of it without
    assert abs(with_nodes - real) < 0.06
    assert without < real / 2


def test_a_model_saved_without_derived_nodes_still_loads_and_samples(small, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from fedsynth.generators import load_generator
    from fedsynth.generators.bayesian_network.generator import MODEL_FILE

    # Setup: a model folder as written before derived nodes existed (no node, no setting in its parameters)
    schema, data = small
    gen = make_generator("bayesian_network", schema, max_indegree=1, derived_nodes=False).fit(data)
    gen.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "generator.json").read_text())
    meta["params"].pop("derived_nodes", None)
    (tmp_path / "m" / "generator.json").write_text(json.dumps(meta))
    state = json.loads((tmp_path / "m" / MODEL_FILE).read_text())
    assert all(not c["variable"].endswith("#m") for c in state["cpds"])
    # Run
    loaded = load_generator(tmp_path / "m")
    rows = loaded.sample(50, random_state=1)
    # Assert
    assert isinstance(rows, pd.DataFrame) and len(rows) == 50
    assert rows["IPSSR"].dropna().isin(schema["IPSSR"].categories or ()).all()
