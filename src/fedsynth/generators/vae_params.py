"""VAE-BGM's parameter spec: the model's hyperparameters and its survival calibration's settings.

Apart from :mod:`fedsynth.generators.params` (the specs' machinery and the other generators' specs) because the
calibration's settings, each with the measurement that chose its default, make it the longest spec; like them it
imports no engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from fedsynth.cohort.schema import TableSchema
from fedsynth.errors import Problem
from fedsynth.generators.params import Device, GeneratorParams, PositiveInt, Seed, param_problem


class VAEBGMParams(GeneratorParams):
    """Hyperparameters of :class:`~fedsynth.generators.vae_bgm.VAEBGMGenerator`."""

    generator_name: ClassVar[str] = "vae_bgm"

    epochs: PositiveInt = Field(300, description="Passes over the data in fit (partial_fit takes its own count).")
    batch_size: PositiveInt = Field(128, description="Rows per step.")
    latent_dim: PositiveInt = Field(16, description="Size of the latent code.")
    hidden_dims: list[PositiveInt] = Field(
        [128, 128], min_length=1, description="Widths of the encoder's hidden layers; the decoder mirrors them."
    )
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(1e-5, ge=0, description="Adam (L2) weight decay.")
    beta: float = Field(1.0, ge=0, description="Weight of the KL term (beta-VAE).")
    n_components: PositiveInt = Field(
        10, description="Upper bound on the latent mixture's components (the Dirichlet-process prior prunes unused ones)."
    )
    weight_concentration_prior: Annotated[float, Field(gt=0)] | None = Field(
        None, description="Concentration of the Dirichlet-process prior on mixture weights; None means 1 / n_components."
    )
    mixture_max_iter: PositiveInt = Field(200, description="Iterations of the mixture's variational EM.")
    numeric_transform: Literal["quantile", "standard"] = Field(
        "quantile", description="How numeric columns become model inputs: normal scores through the domain's "
        "quantile bins, or standardised with its mean and standard deviation."
    )
    sampling: Literal["likelihood", "mode"] = Field(
        "likelihood", description="Draw each decoded column from its likelihood, or take its most likely value."
    )
    device: Device = Field("auto", description="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'.")
    random_state: Seed = Field(0, description="Seed of the initial weights, the batch order and the reparameterisation noise.")
    column_dropout: float = Field(
        0.0, ge=0, lt=1,
        description="Share of columns hidden from the encoder per training row (replaced by what a site lacking "
        "them sends), with their loss still counted; recommended (e.g. 0.2) for worst-case federations.",
    )
    condition_components: Literal["stratified", "proposal", "off"] = Field(
        "stratified", description="How conditional sampling uses the per-component label and bin counts kept at "
        "training (category sets and range terms such as AGE >= 65): 'stratified' gives each component the share P(component | condition) of the returned rows "
        "(rejection inside each component), 'proposal' draws components by that probability and then rejects "
        "(counts the condition twice), 'off' draws them by the mixture weights alone. Rows always meet the "
        "conditions exactly.",
    )
    condition_ranges: bool = Field(
        False, description="Whether range terms of a conditional draw's where (AGE >= 65) weigh the latent components "
        "too, from per-component bin counts on the domain's grid; False (default, chosen on seeds 7/8 in "
        "benchmarks/results/arms_vae_cond.json): category sets only, ranges by rejection inside each component.",
    )
    rare_level_sampling: bool = Field(
        False, description="Train on rows drawn as CTGAN's training-by-sampling draws them (a categorical or binary "
        "column at random, one of its levels with probability proportional to log(1 + its count), a row of that "
        "level), so that rare levels are seen as often as their log count says; the latent mixture is still fitted "
        "to every row's code once, so sampled shares stay close to the real ones (benchmarks/results/arms.json, "
        "sampled_level_shares). Not under DP-SGD (its Poisson "
        "sampling is what its accounting assumes).",
    )
    label_share_matching: bool = Field(
        False, description="Draws made without a condition hold each baseline categorical and binary label at its "
        "real share: a prior shift of the decoder's logits fitted on pilot draws against the per-component label "
        "counts summed over sites (fedsynth.generators.label_shares), when the model is fitted, its counts installed "
        "or its calibration refitted; nothing under a privacy budget (no counts). Draws under a condition are not "
        "shifted. Not chosen for the tuned setting (benchmarks/results/arms.json, selection_session18).",
    )
    time_ties: bool = Field(
        False, description="Model, for each pair of endpoint durations, whether the two times are equal in a row "
        "as a binary slot of its own (a patient whose leukaemia-free survival ends when their overall survival "
        "does), drawn with the row: the shorter endpoint of a time-order rule (without a rule, the later endpoint) "
        "takes the other's time, and the survival calibration keeps a tied row tied "
        "(fedsynth.generators.vae_layout.Layout). Without it, on the MDS cohort, LFS equals OS in 33-38% of rows "
        "against 79% real with the calibration off (80-84% with it, from capping LFS at OS); with it 81-85%, and "
        "91-93% with the calibration on. Off by default: not chosen on seeds 7-9 (more effects lost) and no help "
        "at epsilon 1 (benchmarks/results/arms.json, selection_session11). On in the tuned FedAvg setting since "
        "session 20, with joint_events (selection_session20).",
    )
    joint_events: bool = Field(
        False, description="Model the endpoints' event columns together as one categorical block over their "
        "patterns (for OS and LFS: alive without AML, AML and alive, dead), drawn with the row, instead of one "
        "independent draw per column given the latent code; a pattern that breaks an event rule of the schema is "
        "never drawn (fedsynth.generators.vae_layout.Layout). On the MDS cohort the independent draws gave 'AML, "
        "alive' 3.4 times as often as the real rows and a death without an LFS event in 4.5% of rows, which the "
        "endpoint rules then turned into extra LFS events; with it the cells are close (seed 7: 0.465, 0.022, "
        "0.513 against 0.485, 0.023, 0.491). Off by default: tried with the FedAvg setting on seeds 7-9 and not chosen "
        "(5 arms of 9 against 8, arms (a) and (b) 14-28% longer than real, more effects lost; with each event "
        "counted once in the loss, as now, at most 5; selection_session13). With time_ties, session 19: fewer effects "
        "lost, but the TP53-mutated arm's LFS 38-44% short at 2 of 3 seeds under the calibration (selection_session19). "
        "On, with time_ties and calibration_conditioned_endpoints 'all', in the tuned FedAvg setting since session 20 "
        "(selection_session20).",
    )
    survival_calibration: bool = Field(
        True, description="Rescale sampled durations per level of the prognostic strata so each level's survival "
        "matches the real one (fedsynth.generators.survival_calibration; counts summed over sites, not asked for "
        "under a finite privacy budget).",
    )
    survival_target: Literal["median", "hazard", "rmst", "hazard_ratio"] = Field(
        "median", description="What the survival calibration matches per level: its median, its observed over "
        "expected events under the real pooled hazard ('hazard'), its restricted mean survival time, or its log "
        "hazard ratio against the rest of its stratum, each table with its own baseline ('hazard_ratio', the count "
        "form of the univariate Cox effect the evaluator reads; the intercept then matches the overall observed "
        "over expected events). The tuned FedAvg setting (configs/fedavg_vae_bgm.yaml) uses 'hazard_ratio' read on "
        "200,000 rows (calibration_rows, calibration_level_rows; chosen in session 13: benchmarks/results/arms.json, "
        "selection_session13).",
    )
    calibration_rows: int = Field(
        20_000, ge=1_000, description="Unconditioned rows the survival calibration reads each level's survival on. "
        "Each level's factor absorbs its reading's sampling error, so a fresh draw sees that error again: more rows, "
        "smaller residual errors, a longer fit (the raking's time grows with the rows). The tuned FedAvg setting "
        "reads 200,000 with 5,000 per level, with survival_target 'hazard_ratio' (configs/fedavg_vae_bgm.yaml; "
        "benchmarks/results/arms.json, selection_session13).",
    )
    calibration_level_rows: int = Field(
        1_000, ge=100, description="Rows drawn under each stratum level as a condition (as control arms are drawn) "
        "that the survival calibration reads beside the unconditioned rows.",
    )
    calibration_unconditioned: bool = Field(
        False, description="Whether unconditioned draws (sample() without a condition: a run's snapshots, exports) "
        "take their own survival calibration, fitted on the unconditioned calibration rows only, while draws under a "
        "condition (control arms) keep the factors fitted on those rows and the rows drawn under each level "
        "(fedsynth.generators.calibrated_generator). The two draws differ (conditional draws follow the real label "
        "counts per latent component), so one set of factors serves neither exactly: on a seed-13 fit, IPSS-R Int's "
        "log hazard ratio on OS read 0.173 on the mix the calibration fits (real 0.174) but 0.148 on its "
        "unconditioned rows. Acts on a fitted model's refit (a federated fit; a centralized fit's calibration reads "
        "unconditioned rows only). About 30 s more per fit at 200,000 rows. Off by default; on in the tuned FedAvg "
        "setting (configs/fedavg_vae_bgm.yaml) with calibration_unconditioned_gene_min_freq 0.02: on fresh seeds "
        "16-18 effects lost at 100 n 5 against 6, at 10 n 7 against 7, arms unchanged; alone, 7 against 6 there "
        "(benchmarks/results/arms.json, selection_session15).",
    )
    calibration_unconditioned_gene_min_freq: float = Field(
        0.05, gt=0.0, le=1.0, description="Smallest share of the real rows carrying a mutation for a genomic column to "
        "be a stratum of the unconditioned draws' calibration (only with calibration_unconditioned; draws under a "
        "condition keep 0.05, the share of the evaluator's default strata). The evaluator reads the univariate Cox "
        "effect of every gene, so a rarer gene the model shrinks can be matched there: 0.02 brought back IDH2, PHF6 "
        "and ETNK1 (seeds 13-14, sizes 0.57-0.82 of the real effects at 0.05) and KRAS (seed 16). Genes under it keep "
        "the model's own survival. 0.02 in the tuned FedAvg setting (selection_session15).",
    )
    calibration_conditioned_target: Literal["median", "hazard", "rmst", "hazard_ratio"] | None = Field(
        None, description="What the factors of draws under a condition (control arms) match per level, when "
        "unconditioned draws take their own (calibration_unconditioned); None: survival_target, as the "
        "unconditioned set; a target given to fit_survival_calibration sets both. Acts on a fitted model's refit "
        "(a federated fit; a centralized fit reads unconditioned rows only and keeps one set). The tuned FedAvg "
        "setting matches the median, read on the rows drawn under each level "
        "alone (calibration_conditioned_rows_only): chosen in session 17 by a rule written first, on balanced arms "
        "of fresh seeds 25-27, 9 of 9 arms against 8, mean |log median ratio| 0.051 against 0.090 "
        "(benchmarks/results/arms.json, draws_session17).",
    )
    calibration_conditioned_rows_only: bool = Field(
        False, description="Whether the factors of draws under a condition read each level on the rows drawn under "
        "that level alone (as control arms are drawn) rather than also on the unconditioned rows (only with "
        "calibration_unconditioned: the unconditioned draws keep their own set). True in the tuned FedAvg setting.",
    )
    calibration_capped_intercepts: bool = Field(
        True, description="Whether the survival calibration fits an intercept for an endpoint that a time-order rule "
        "caps at another (LFS under LFS <= OS): lengthening its times cannot go past the cap, so when the model draws "
        "more of its events than the real rows hold the intercept runs to its bound and its levels' factors stop "
        "answering (fedsynth.generators.survival_calibration, capped_intercepts). False leaves its overall event rate "
        "the model's own and matches its levels only. True by default: with the FedAvg setting on fresh seeds 13-15, "
        "False kept one effect more (7 lost at 100 n against 8, arms unchanged) but LFS ended with OS in 38-46% of "
        "rows against 79% real, and the curves fitted worse (benchmarks/results/arms.json, selection_session14).",
    )

    calibration_keep_order: bool = Field(
        False, description="With a factor per endpoint ('each'), whether a row whose shorter time (LFS under LFS <= "
        "OS) was strictly under its longer one stays so: the ratio of the two moves on the odds scale by the ratio of "
        "their factors instead of being scaled and capped to a tie (fedsynth.generators.survival_calibration, "
        "keep_order). Without it the cap tied 2.5-4.0% of unconditioned rows on the MDS cohort and squashed the "
        "rest's LFS (median LFS/OS of rows whose LFS ends first 0.23-0.31 against 0.64-0.66 real at seeds 0-2). On "
        "in the tuned FedAvg setting since session 23, chosen by a rule written first on fresh seeds 43-45: that "
        "median 0.36-0.44 against 0.20-0.22, "
        "the same effects lost, fidelity within 0.003 (benchmarks/results/arms.json, selection_session23).",
    )

    calibration_endpoints: Literal["each", "all", "first"] = Field(
        "each", description="Which endpoints each survival-calibration factor moves: 'each', a factor per endpoint "
        "(LFS is not pulled by OS's error, nor OS by LFS's; a shorter endpoint is capped at its longer one); 'all', "
        "one factor for every endpoint of a row, fitted on the mean of their errors, so a row whose two times are "
        "equal keeps them equal and moves as one; 'first', one factor fitted on the primary endpoint's errors "
        "(fedsynth.generators.survival_calibration, endpoints). 'each' chosen on seeds 7-9 "
        "(benchmarks/results/arms.json, selection_seeds_7_8). 'all' with joint_events and time_ties, session 20 "
        "(selection_session20, figures as that session logged them): arms' median LFS mean |log ratio| 0.032 against the tuned setting's 0.294 on seeds 37-39, "
        "but the survival-effect fidelity 0.015 lower there (its effects part lower at every seed: one factor "
        "cannot match each endpoint's hazard ratios), so not chosen; see calibration_conditioned_endpoints.",
    )

    calibration_conditioned_endpoints: Literal["each", "all", "first"] | None = Field(
        None, description="Which endpoints each factor of draws under a condition (control arms) moves, when "
        "unconditioned draws take their own (calibration_unconditioned); None: calibration_endpoints, as the "
        "unconditioned set. With time_ties, 'all' moves a tied row's two times together in the arms while the "
        "unconditioned set can keep a factor per endpoint (each endpoint's effects matched on its own). 'all' in the "
        "tuned FedAvg setting, with joint_events and time_ties: chosen in session 20 by a rule written first (its file lost, reconstructed), on "
        "fresh seeds 40-42: arms' median LFS mean |log ratio| 0.084 against 0.270 (none more than 25% off, against "
        "2), balanced arms 9 of 9 as before, effects lost 2 / 3 (100 n / 10 n) against 3 / 3, fidelity as high "
        "(benchmarks/results/arms.json, selection_session20).",
    )

    @classmethod
    def cross_problems(cls, values: Mapping[str, Any], owner: str, schema: TableSchema | None) -> list[Problem]:
        out = []
        if values.get("calibration_capped_intercepts") is False and values.get("survival_target") != "hazard_ratio":
            out.append(param_problem(owner, "calibration_capped_intercepts",
                                     "true unless survival_target is 'hazard_ratio' (only relative level targets "
                                     "can go without an intercept)", False))
        for key in ("calibration_endpoints", "calibration_conditioned_endpoints"):
            if values.get("calibration_capped_intercepts") is False and values.get(key) not in (None, "each"):
                out.append(param_problem(owner, key, "'each' or left out while calibration_capped_intercepts is "
                                         "false (an intercept left out is one endpoint's)", values.get(key)))
        own = values.get("calibration_conditioned_target")
        if values.get("calibration_capped_intercepts") is False and own not in (None, "hazard_ratio"):
            out.append(param_problem(owner, "calibration_conditioned_target",
                                     "'hazard_ratio' or left out while calibration_capped_intercepts is false (only "
                                     "relative level targets can go without an intercept)", own))
        for key in ("calibration_conditioned_target", "calibration_conditioned_rows_only",
                    "calibration_conditioned_endpoints"):
            if values.get(key) not in (None, False) and not values.get("calibration_unconditioned"):
                out.append(param_problem(owner, key, "left out unless calibration_unconditioned is true (without it "
                                         "one set of factors serves every draw)", values.get(key)))
        if values.get("calibration_keep_order") and "each" not in (
                values.get("calibration_endpoints", cls.model_fields["calibration_endpoints"].default),
                values.get("calibration_conditioned_endpoints") if values.get("calibration_unconditioned") else None):
            out.append(param_problem(owner, "calibration_keep_order", "left out unless a set of factors moves each "
                                     "endpoint on its own (calibration_endpoints or calibration_conditioned_endpoints "
                                     "'each'): with one factor for every endpoint nothing is capped", True))
        gene = values.get("calibration_unconditioned_gene_min_freq")
        if gene != cls.model_fields["calibration_unconditioned_gene_min_freq"].default and not values.get(
                "calibration_unconditioned"):
            out.append(param_problem(owner, "calibration_unconditioned_gene_min_freq",
                                     "left out unless calibration_unconditioned is true (it sets that calibration's "
                                     "genes)", gene))
        return out
