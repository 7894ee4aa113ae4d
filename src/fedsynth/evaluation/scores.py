"""CSF and GSF (DESIGN.md section 5), their components, and the definitions every report states."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedsynth.evaluation.survival_effects import MEDIAN_FLAG, TIE_FLAG

#: The definitions written into every report (JSON ``info.definitions`` and the HTML definitions section).
DEFINITIONS: dict[str, str] = {
    "real data": "The training pool. The holdout (if given) is used only for privacy baselines and for testing "
                 "the train-on-synthetic / train-on-real models.",
    "column fidelity": "Per data column: numeric (continuous, integer) 1 - Kolmogorov-Smirnov statistic on "
                       "observed values (scipy ks_2samp, as SDMetrics KSComplement); categorical and binary "
                       "1 - total variation distance with 'missing' as one more category (SDMetrics "
                       "TVComplement on category codes). Formal test per column: two-sample KS (numeric) or "
                       "chi-square on the 2 x k table of counts (categorical/binary); 'tests passed' = share of "
                       "columns with p >= 0.05. Missing-rate similarity = 1 - |missing share real - synthetic|.",
    "pair fidelity": "Every pair of data columns. Two numeric columns: correlation similarity "
                     "1 - |rho_real - rho_syn| / 2 with Spearman's rho on pairwise complete rows. Any other pair: "
                     "contingency similarity 1 - TVD of the joint distribution, numeric columns cut into 10 bins "
                     "at real quantiles, missing as its own state. Computed in vectorised numpy.",
    "detection AUC": "Cross-validated (3-fold) ROC AUC of a gradient-boosting classifier (scikit-learn "
                     "HistGradientBoostingClassifier, 60 trees of 15 leaves) telling real rows from an equal number of synthetic rows; "
                     "0.5 = indistinguishable, 1 = fully separable.",
    "genomics": "Per-gene mutation frequency (share of patients with the gene mutated, among known values); "
                "mutations per patient (number of mutated genes, missing counted as not mutated). For every pair "
                "of genes mutated in >= 2% of real patients: Fisher's exact test (scipy), p-values BH-corrected "
                "(scipy false_discovery_control); class co-occurring (q < 0.05, log OR > 0), mutually exclusive "
                "(q < 0.05, log OR < 0) or neutral. Log odds ratios use the Haldane-Anscombe correction (0.5 "
                "added to all four cells when a cell is zero). Synthetic classes are tested on a synthetic sample "
                "of the real data's size. Class agreement = share of pairs with the same class; log-OR "
                "correlation = Pearson correlation of real and synthetic log ORs over all tested pairs.",
    "survival": "Per endpoint: Kaplan-Meier curves overall and per stratum group (groups with >= 10 "
                "real rows). Strata: those named by the user, else those declared in the schema followed by every "
                "categorical or binary clinical column and every gene mutated in >= 5% of real rows (chosen by "
                "role, never by name); a numeric stratum is cut into its declared bands. Curve similarity = 1 - mean absolute difference of the two survival curves on 101 "
                "equally spaced times from 0 to the real 90th percentile of follow-up. Medians from the KM "
                "curves. Log-rank test (k groups) across a stratum's groups inside "
                "the real data and inside a synthetic sample of the real size (Kaplan-Meier by scipy.stats.ecdf, log-rank by scipy.stats.logrank for two groups and lifelines multivariate_logrank_test for more); direction consistency (JSON key direction_agreement) = share of "
                "group pairs ordered the same way by restricted mean survival time (up to the same horizon) in "
                "real and synthetic. Univariate Cox models per clinical variable (numeric as is; one indicator "
                "per categorical level held by >= 1% of real rows, only the rarer level of a two-level column) "
                "and per gene (>= 2% mutated): CoxPHFitter's model (penalizer 0.01, Efron ties), fitted by fedsynth's batched engine (equal to lifelines CoxPHFitter to 1e-6) or, on request, by CoxPHFitter itself.",
    "TSTR": "Harrell's C-index (lifelines concordance_index) of a Cox model (lifelines CoxPHFitter, "
            "Efron ties, penalizer 0.1) trained on the synthetic "
            "data vs the same model trained on the real data, both evaluated on the holdout (else on the real "
            "data, where train-on-real is in-sample). Covariates: non-derived clinical columns (numeric "
            "median-imputed; categorical levels >= 1% as indicators) and genes mutated in >= 2% of real patients.",
    "CSF": "Clinical synthetic fidelity = mean of the defined components among: (1) column fidelity over "
           "clinical columns; (2) pair fidelity over pairs of clinical and outcome columns; (3) survival-curve "
           "similarity of the overall KM curves, averaged over endpoints (one component); (4) clinical-survival "
           "direction consistency (JSON key clinical_survival_agreement): among clinical Cox variables "
           "significant in the real data (BH q < 0.05 over all clinical variables and endpoints), the share whose "
           "synthetic log hazard ratio has the same sign. Direction only: an effect that kept its sign but lost "
           "its size or significance still counts; see the survival-effect fidelity.",
    "GSF": "Genomic synthetic fidelity = mean of the defined components among: (1) mutation-frequency similarity "
           "1 - mean relative error |f_syn - f_real| / f_real over genes mutated in >= 1% of real patients "
           "(each error capped at 1); (2) mutations-per-patient similarity 1 - KS; (3) pair-association "
           "direction consistency (JSON key pair_association_agreement): among gene pairs significant in the "
           "real data (Fisher, BH q < 0.05), the share whose synthetic log odds ratio (whole synthetic table) has "
           "the same sign; (4) gene-survival direction consistency (JSON key gene_survival_agreement): among "
           "genes with a significant univariate Cox hazard ratio in the real data (BH q < 0.05 over all genes "
           "and endpoints), the share with the same sign in the synthetic data.",
    "survival-effect fidelity": "Beside CSF/GSF, in [0, 1], 1 for a copy of the real data. Per endpoint, for "
                                "all patients and each stratum group with >= 10 real rows (strata: declared in "
                                "the schema or named by the user, plus every categorical clinical column and "
                                "every gene mutated in >= 5%), from Kaplan-Meier curves of the real rows and the "
                                "whole synthetic table: median error |m_syn - m_real| / m_real (1 when only the "
                                "synthetic median is never reached; undefined when the real one is not), RMST "
                                "error |r_syn - r_real| / r_real with RMST the area under the curve up to the real "
                                "90th percentile of follow-up, and KM distance = sup |S_real(t) - S_syn(t)| up to "
                                "that horizon; group score = 1 - mean(min(1, median error), min(1, RMST error), "
                                "KM distance). For each univariate Cox effect significant in the real data (as "
                                "in CSF/GSF), refitted on up to 10 x the real rows of synthetic rows (m rows against the "
                                "real fit's n) and read at the real size, its Wald SE rescaled se_n = se_m * "
                                "sqrt(m / n): effect score = ([synthetic Wald 95% CI at the real size covers the "
                                "real log HR] + [not lost] + 1 - min(1, |log HR_syn - log HR_real| / "
                                "|log HR_real|)) / 3, where 'lost' means p >= 0.05 at the real size or the other "
                                "sign (a study of the real data's size drawn from the model would not find it); "
                                "its size ratio (synthetic / real log HR) and SE ratio (synthetic SE at the real "
                                "size / real SE) say why, z falling by their quotient: a shrunk effect, or a table "
                                "holding less information on the covariate (for a level, fewer of its rows or events). "
                                "Expected lost by chance = sum Phi((1.96 - |z_real|) * sqrt(m / n)): what a "
                                "generator reproducing every real effect exactly would still lose to the noise "
                                "of m rows (about half of the effects near |z| = 1.96 when m = n). Expected lost "
                                "for a population-faithful generator = sum Phi((1.96 - |z_real|) / sqrt(1 + n / m)): "
                                "what one faithful to the patients' population rather than to these patients would "
                                "lose, the real estimate's own noise counted (flat prior, Goodman 1992); it does not "
                                "shrink with m (an effect at real p = 0.01 is lost 27% of the time), and a count far "
                                "under it means the generator reproduces this sample's estimates. Figures read "
                                "from different m are not comparable: more rows, less noise, a higher fidelity. Fidelity = mean(mean group score, mean effect "
                                "score) (the group part alone when no effect is significant). Flagged: every endpoint "
                                "rule a synthetic row breaks, every time-order rule whose share of rows with both "
                                f"times equal differs from the real share by more than {TIE_FLAG:.2f}, every lost "
                                f"effect, every median error above {MEDIAN_FLAG:.0%}.",
    "endpoint rules": "Rules between survival endpoints: one time never exceeding another (e.g. LFS <= OS) and "
                      "one event implying another (an OS death is an LFS event); the schema's rules plus the "
                      "candidate rules that hold in every real row. Reported: synthetic rows breaking each rule "
                      "(expected 0; generators enforce the schema's rules on every sampled row) and, for a "
                      "time-order rule, the share of rows with both times known whose two times are equal, "
                      "synthetic and real (a rule can hold in every row while a model draws the two times apart "
                      f"far more often than patients have them; flagged past a gap of {TIE_FLAG:.2f}).",
    "significance-based components": "The real data choose what to check; only the direction is read in the "
                                     "synthetic data, so sample size neither helps nor hurts. A component with "
                                     "nothing to check (e.g. no significant pair) is undefined, left out of the "
                                     "mean and named in 'undefined'.",
    "privacy distance": "Gower distance over all data columns: numeric |x - y| / range of the real values "
                        "(capped at 1), categorical and binary mismatch (0/1), averaged over columns; missing vs "
                        "missing = 0, missing vs a value = 1.",
    "NNDR": "For each synthetic row: distance to its nearest training row / distance to its second nearest "
            "(0 when it copies a row). Reported as mean and 5th percentile beside the same figures for holdout "
            "rows against the training rows (what a new real patient looks like).",
    "DCR share": "Share of synthetic rows closer to a sample of training rows of the holdout's size than to the "
                 "holdout (ties count half); 0.5 is ideal, higher means synthetic rows sit nearer the training "
                 "rows.",
    "exact copies": "Share of synthetic rows equal, in every data column (missing equal to missing), to some "
                    "training row, or equal up to rounding (Gower distance under 1e-6); the baseline is the same "
                    "share for holdout rows. Copies of a record with no number known (categories only) that several "
                    "training rows share are set apart on both sides: such records coincide between real patients "
                    "and a copy of one names nobody.",
    "membership inference AUC": "An attacker scores each training row (member) and holdout row (non-member) by "
                                "minus its Gower distance to the nearest synthetic row; the ROC AUC of that score "
                                "(0.5 = the attacker cannot tell members).",
    "privacy flags": "A figure is flagged when worse than its holdout baseline beyond sampling error: NNDR mean "
                     "or 5th percentile below the holdout figure minus 2 bootstrap standard errors; DCR share "
                     "above 0.5 + 2 sqrt(0.25 / n_synthetic); membership AUC above 0.5 + 2 x its null standard "
                     "error sqrt((n1 + n2 + 1) / (12 n1 n2)); exact copies above the holdout's share (copies of "
                     "shared records with no number known set apart). Without a holdout only exact copies (> 0) can "
                     "be flagged.",
    "report content": "Reports hold aggregates, curves and binned distributions only: no row of real data; "
                      "category labels with fewer than 5 real rows are pooled as '(rare labels)'; histogram "
                      "edges are rounded real percentiles.",
}


#: How the report names components whose JSON keys say "agreement" but which read only a direction (the keys
#: stay, so figures stay comparable across versions; direction alone is never called agreement).
LABELS: dict[str, str] = {
    "clinical_survival_agreement": "clinical-survival direction consistency",
    "gene_survival_agreement": "gene-survival direction consistency",
    "pair_association_agreement": "pair-association direction consistency",
}


def _component(name: str, value: float | None, note: str = "", detail: Any = None) -> dict[str, Any]:
    c: dict[str, Any] = {"name": name, "label": LABELS.get(name, name.replace("_", " ")), "value": value,
                         "defined": value is not None and np.isfinite(value)}
    if note:
        c["note"] = note
    if detail is not None:
        c["detail"] = detail
    return c


def _combine(components: list[dict[str, Any]]) -> dict[str, Any]:
    defined = [c for c in components if c["defined"]]
    return {
        "value": float(np.mean([c["value"] for c in defined])) if defined else None,
        "components": {c["name"]: c for c in components},
        "undefined": [c["name"] for c in components if not c["defined"]],
    }


def _mean_over(columns: dict[str, Any], names: list[str]) -> float | None:
    vals = [columns[c]["similarity"] for c in names if c in columns]
    return float(np.mean(vals)) if vals else None


def compute_csf(fidelity: dict[str, Any], survival: dict[str, Any], clinical: list[str]) -> dict[str, Any]:
    """Clinical synthetic fidelity from the fidelity and survival sections (see :data:`DEFINITIONS`)."""
    col = _mean_over(fidelity["columns"], clinical)
    pair = fidelity["pairs"]["by_group"]["clinical_outcome"]
    per_ep = {
        name: survival[name]["overall"]["curve_similarity"]
        for name in survival.get("endpoint_names", []) if survival[name].get("available")
    }
    km = float(np.mean(list(per_ep.values()))) if per_ep else None
    hr = survival.get("hazard_ratios", {}).get("summary", {}).get("clinical", {})
    agree = hr.get("direction_agreement")
    comps = [
        _component("column_fidelity_clinical", col, "" if col is not None else "no clinical columns"),
        _component("pair_fidelity_clinical_outcome", pair, "" if pair is not None else "no pairs of clinical/outcome columns"),
        _component("survival_curve_similarity", km, "" if km is not None else "no survival endpoint", detail=per_ep or None),
        _component(
            "clinical_survival_agreement", agree,
            "" if agree is not None else "no clinical variable has a significant Cox hazard ratio in the real data",
            detail={"n_significant_real": hr.get("n_significant_real"), "n_tested": hr.get("n_tested")},
        ),
    ]
    return _combine(comps)


def compute_gsf(genomics: dict[str, Any], survival: dict[str, Any]) -> dict[str, Any]:
    """Genomic synthetic fidelity from the genomics and survival sections (see :data:`DEFINITIONS`)."""
    if not genomics.get("available"):
        comps = [_component(n, None, "no genomic columns") for n in (
            "mutation_frequency_similarity", "mutations_per_patient_similarity", "pair_association_agreement",
            "gene_survival_agreement")]
        return _combine(comps)
    hr = survival.get("hazard_ratios", {}).get("summary", {}).get("genomic", {})
    pa = genomics.get("pair_association_agreement")
    gs = hr.get("direction_agreement")
    comps = [
        _component("mutation_frequency_similarity", genomics["frequency"]["similarity"],
                   "" if genomics["frequency"]["similarity"] is not None else "no gene mutated in >= 1% of real patients"),
        _component("mutations_per_patient_similarity", genomics["mutations_per_patient"]["similarity"]),
        _component("pair_association_agreement", pa,
                   "" if pa is not None else "no gene pair is significant (BH q < 0.05) in the real data",
                   detail={"n_significant_real": genomics.get("n_significant_real"), "n_pairs": genomics.get("n_pairs")}),
        _component("gene_survival_agreement", gs,
                   "" if gs is not None else "no gene has a significant Cox hazard ratio in the real data",
                   detail={"n_significant_real": hr.get("n_significant_real"), "n_tested": hr.get("n_tested")}),
    ]
    return _combine(comps)
