"""CSF and GSF combine exactly their components and leave undefined ones out, saying so."""

from __future__ import annotations

import pytest

from fedsynth.evaluation.scores import DEFINITIONS, compute_csf, compute_gsf


def test_csf_is_the_mean_of_its_defined_components_and_names_the_undefined_one():
    # Setup
    fidelity = {"columns": {"a": {"similarity": 0.9}, "b": {"similarity": 0.7}, "g": {"similarity": 0.1}},
                "pairs": {"by_group": {"clinical_outcome": 0.6}}}
    survival = {"endpoint_names": ["OS", "LFS"], "OS": {"available": True, "overall": {"curve_similarity": 0.9}},
                "LFS": {"available": True, "overall": {"curve_similarity": 0.7}},
                "hazard_ratios": {"summary": {"clinical": {"direction_agreement": None, "n_significant_real": 0, "n_tested": 5}}}}
    # Run
    csf = compute_csf(fidelity, survival, ["a", "b"])
    # Assert: (0.8 + 0.6 + 0.8) / 3
    assert csf["value"] == pytest.approx((0.8 + 0.6 + 0.8) / 3)
    assert csf["undefined"] == ["clinical_survival_agreement"]
    assert "no clinical variable" in csf["components"]["clinical_survival_agreement"]["note"]


def test_gsf_without_genes_is_undefined():
    gsf = compute_gsf({"available": False}, {})
    assert gsf["value"] is None and len(gsf["undefined"]) == 4


def test_definitions_state_every_score():
    for key in ("CSF", "GSF", "NNDR", "DCR share", "membership inference AUC", "column fidelity", "pair fidelity"):
        assert key in DEFINITIONS
