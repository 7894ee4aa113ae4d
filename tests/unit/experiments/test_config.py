"""Experiment configs: shipped examples validate; typos are named with the valid keys and a suggestion; every key
acts or is rejected (the strategy registry's rules), with every problem listed at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedsynth.errors import ValidationError
from fedsynth.experiments.config import apply_sets, load_config, parse_config

# Experiment configs only; grid configs have their own model (tests/unit/experiments/test_grid.py).
CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[3] / "configs").glob("*.yaml") if not p.name.startswith("grid"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert cfg.cohort.source


def test_unknown_keys_are_named_with_valid_ones_and_a_suggestion():
    with pytest.raises(ValidationError) as info:
        parse_config({"cohort": {"name": "mds-iwgpm"}, "stratgy": {"name": "fedavg"}, "sites": {"proportons": [1]}})
    text = str(info.value)
    assert "2 problems" in text
    assert "stratgy: unknown key; valid: name, cohort, split" in text and "did you mean 'strategy'?" in text
    assert "sites.proportons: unknown key" in text and "did you mean 'proportions'?" in text


def test_wrong_values_and_incompatible_choices_are_explained():
    with pytest.raises(ValidationError) as info:
        parse_config({"cohort": {"name": "mds-iwgpm"}, "generator": {"name": "gan"}, "strategy": {"rounds": 0}})
    text = str(info.value)
    assert "strategy.rounds: Input should be greater than or equal to 1" in text
    with pytest.raises(ValidationError) as info:
        parse_config({"cohort": {"name": "mds-iwgpm"}, "generator": {"name": "gan"}, "strategy": {"name": "fedavg"}})
    assert "generator.name: got 'gan'; valid: bayesian_network, ctgan, vae_bgm" in str(info.value)
    with pytest.raises(ValidationError) as info:
        parse_config({"cohort": {"name": "mds-iwgpm"}, "generator": {"name": "bayesian_network"}, "strategy": {"name": "fedavg"}})
    text = str(info.value)
    assert "needs a generator with get_weights/set_weights/partial_fit (ctgan, vae_bgm)" in text
    assert "Strategies that work with 'bayesian_network': centralized, local, two_step_bn, sd_sharing." in text


def test_set_overrides_parse_yaml_values():
    raw = apply_sets({"cohort": {"name": "mds-iwgpm"}}, ["strategy.rounds=4", "strategy.name=fedavg", "generator.name=ctgan", "sites.proportions=[1,1]"])
    cfg = parse_config(raw)
    assert cfg.strategy.rounds == 4 and cfg.sites.proportions == [0.5, 0.5]


def test_bad_yaml_and_missing_file_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cohort:\n  name: [unclosed\n")
    with pytest.raises(ValidationError, match="is not valid YAML"):
        load_config(bad)
    with pytest.raises(ValidationError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def _problems(**sections):  # type: ignore[no-untyped-def]
    """The problem lines of a config made of ``sections`` over a minimal one (empty when it is valid)."""
    try:
        parse_config({"cohort": {"name": "mds-iwgpm"}, **sections})
    except ValidationError as exc:
        return [str(p) for p in exc.problems]
    return []


def test_strategy_compatibility_comes_from_the_registry():
    # every pair the registry calls compatible validates, every other pair is refused
    from fedsynth.strategies.registry import STRATEGIES, compatible_strategies, generator_names

    for generator in generator_names():
        ok = set(compatible_strategies(generator))
        for strategy in STRATEGIES:
            refused = bool(_problems(generator={"name": generator}, strategy={"name": strategy}))
            assert refused == (strategy not in ok), (generator, strategy)


def test_one_default_for_rounds_and_min_sites_everywhere(tmp_path):
    # Setup
    import inspect

    from fedsynth.cohort.schema import ColumnKind, ColumnSpec, TableSchema
    from fedsynth.experiments.config import ExperimentConfig
    from fedsynth.federation.server_app import strategy_from_run_config
    from fedsynth.strategies.base import Strategy
    from fedsynth.strategies.registry import DEFAULT_LOCAL_EPOCHS, DEFAULT_MIN_SITES, DEFAULT_ROUNDS

    # Run
    cfg = parse_config({"cohort": {"name": "mds-iwgpm"}})
    init = inspect.signature(Strategy.__init__).parameters
    schema = tmp_path / "s.yaml"
    TableSchema((ColumnSpec("A", ColumnKind.CATEGORICAL, categories=("x", "y")),)).to_yaml(schema)
    deployed, n_nodes = strategy_from_run_config({"schema-path": str(schema)})

    # Assert
    assert (cfg.strategy.rounds, cfg.strategy.local_epochs, cfg.strategy.min_sites) == (
        DEFAULT_ROUNDS, DEFAULT_LOCAL_EPOCHS, DEFAULT_MIN_SITES)
    assert (init["rounds"].default, init["local_epochs"].default, init["min_sites"].default) == (
        DEFAULT_ROUNDS, DEFAULT_LOCAL_EPOCHS, DEFAULT_MIN_SITES)
    assert (deployed.rounds, deployed.local_epochs, deployed.min_sites, n_nodes) == (
        DEFAULT_ROUNDS, DEFAULT_LOCAL_EPOCHS, DEFAULT_MIN_SITES, DEFAULT_MIN_SITES)
    assert ExperimentConfig.model_fields["strategy"].default.rounds == DEFAULT_ROUNDS


def test_settings_that_moved_point_to_their_one_place():
    problems = _problems(
        strategy={"name": "sd_sharing", "refit": True, "privacy_check": False,
                  "params": {"final_evaluation": "lite", "references": [], "engine": "in_process"}},
        evaluation={"full_report_every_round": True},
    )
    assert problems == [
        "strategy.refit: has moved to strategy.params.refit; fix: write it as strategy.params.refit",
        ("strategy.privacy_check: has moved to strategy.params.privacy_check; "
         "fix: write it as strategy.params.privacy_check"),
        "strategy.params.final_evaluation: has moved to evaluation.final; fix: write it as evaluation.final",
        "strategy.params.references: has moved to evaluation.references; fix: write it as evaluation.references",
        "strategy.params.engine: has moved to strategy.engine; fix: write it as strategy.engine",
        "evaluation.full_report_every_round: was read by nothing and is no longer a setting; fix: remove it",
    ]
    cfg = parse_config({"cohort": {"name": "mds-iwgpm"}, "strategy": {"engine": "in_process"},
                        "evaluation": {"final": "lite", "references": ["centralized"], "strata": ["SEX"]}})
    assert (cfg.strategy.engine, cfg.evaluation.final, cfg.evaluation.references, cfg.evaluation.strata) == (
        "in_process", "lite", ["centralized"], ["SEX"])


def test_every_strategy_param_acts_or_is_rejected_all_at_once():
    # Setup: a typo, a wrong type, a value out of range, a key of another strategy, a key whose generator
    # capability is missing (ctgan has no latent mixture), and generator.params.epochs under weight averaging
    problems = _problems(
        generator={"name": "ctgan", "params": {"epochs": 5}},
        strategy={"name": "fedavg", "params": {"min_category_cont": 3, "significant_digits": "3",
                                               "node_timeout": 0, "count_look_ahead": 2, "mixture_tol": 0.1}},
    )
    assert len(problems) == 6, problems
    assert problems[0].startswith("strategy.params.min_category_cont: is not a parameter of 'fedavg' with 'ctgan'")
    assert problems[0].endswith("fix: did you mean 'min_category_count'?")
    assert "strategy.params.significant_digits: got '3' (str); valid: an int in the range [1, inf)" in problems
    assert "strategy.params.node_timeout: got 0; valid: a float in the range (0, inf)" in problems
    assert problems[3].startswith("strategy.params.count_look_ahead: is not a parameter of 'fedavg' with 'ctgan'")
    assert ("strategy.params.mixture_tol: acts only with a generator that has a latent mixture fitted by federated "
            "EM (vae_bgm); 'ctgan' does not; fix: remove it") in problems
    assert problems[5] == (
        "generator.params.epochs: is not used by 'fedavg': weight averaging trains strategy.rounds x "
        "strategy.local_epochs epochs; fix: remove it and set strategy.local_epochs (epochs per round) and "
        "strategy.rounds")


def test_a_param_without_the_setting_that_makes_it_act_is_refused():
    # Setup / Run: the release thresholds act only when the site's privacy check runs
    off = _problems(generator={"name": "bayesian_network"},
                    strategy={"name": "sd_sharing", "params": {"privacy_check": False, "gate_mia_auc_above": 0.9}})
    on = _problems(generator={"name": "bayesian_network"},
                   strategy={"name": "sd_sharing", "params": {"gate_mia_auc_above": 0.9}})
    # Assert
    assert off == [("strategy.params.gate_mia_auc_above: acts only when strategy.params.privacy_check is true; "
                    "fix: remove it or set strategy.params.privacy_check: true")]
    assert on == []


def test_rounds_and_epochs_are_refused_where_they_would_not_act():
    # a fixed-phase strategy with rounds > 1; a baseline whose generator flow is two-step; the
    # baseline of a weight-averaging generator does use them
    assert _problems(generator={"name": "bayesian_network"}, strategy={"name": "two_step_bn", "rounds": 5}) == [
        ("strategy.rounds: is 5, but 'two_step_bn' with 'bayesian_network' runs a fixed sequence of phases (one "
         "round) and does not use it; valid: 1 (or leave it out)")]
    assert _problems(generator={"name": "bayesian_network"}, strategy={"name": "local", "local_epochs": 2}) == [
        ("strategy.local_epochs: is 2, but 'local' with 'bayesian_network' runs a fixed sequence of phases (one "
         "round) and does not use it; valid: 1 (or leave it out)")]
    assert _problems(generator={"name": "vae_bgm"}, strategy={"name": "centralized", "rounds": 5, "local_epochs": 2,
                                                             "params": {"mixture_max_iter": 5}}) == []
    # the default rounds (not given) never trips the rule
    assert _problems(generator={"name": "bayesian_network"}, strategy={"name": "sd_sharing"}) == []


def test_baselines_refuse_what_they_fix_and_what_they_never_do():
    problems = _problems(strategy={"name": "local", "engine": "simulation"},
                         evaluation={"references": ["centralized"]})
    assert problems == [
        ("strategy.engine: is simulation, but the local baseline always runs in process; valid: in_process (or "
         "leave it out)"),
        "evaluation.references: are not drawn for the local baseline (it is one); valid: [] (or leave it out)",
    ]


def test_generator_param_names_are_checked_before_any_engine_starts():
    problems = _problems(generator={"name": "bayesian_network", "params": {"max_indegre": 2}})
    assert len(problems) == 1
    assert problems[0].startswith("generator.params.max_indegre: unknown parameter of 'bayesian_network'; valid: ")
    assert problems[0].endswith("fix: did you mean 'max_indegree'?")


def test_a_malformed_strategy_key_does_not_hide_the_generator_problems():
    # rounds: 0 is a range error of the strategy section; the unknown generator parameter and the unknown sites key
    # are still listed, once each
    problems = _problems(strategy={"name": "two_step_bn", "rounds": 0},
                         generator={"name": "bayesian_network", "params": {"epochs": 3}}, sites={"n_sites": 3})
    assert [p.split(":")[0] for p in problems] == ["sites.n_sites", "strategy.rounds", "generator.params.epochs"]
    # control: the same generator problem alone, and none without it
    assert [p.split(":")[0] for p in _problems(strategy={"name": "two_step_bn", "rounds": 0})] == ["strategy.rounds"]
    assert _problems(generator={"name": "bayesian_network", "params": {"epochs": 3}})[0].startswith(
        "generator.params.epochs: unknown parameter")
    # a section that is not a mapping, or a rejected name, is not replaced by the default one and checked as such
    for sections in ({"strategy": {"name": "fedavg"}, "generator": "vae_bgm"},
                     {"strategy": {"name": "fedavg"}, "generator": {"name": ["vae_bgm"]}},
                     {"strategy": {"name": 5}, "generator": {"name": "vae_bgm"}}):
        problems = _problems(**sections)
        assert len(problems) == 1 and "bayesian_network" not in problems[0] and "two_step_bn" not in problems[0]


def test_sites_by_implies_by_column_with_a_note(caplog):
    # Setup / Run
    import logging

    with caplog.at_level(logging.INFO, logger="fedsynth.experiments.config"):
        cfg = parse_config({"cohort": {"name": "mds-iwgpm"}, "sites": {"by": "CENTRE"}})
    # Assert: not silently IID
    assert (cfg.sites.method, cfg.sites.by, cfg.sites.n_sites) == ("by_column", "CENTRE", None)
    assert cfg.notes == ["sites.by is set without sites.method: one site per value of 'CENTRE' (method: by_column)"]
    assert "one site per value of 'CENTRE'" in caplog.text
    # an explicit method is kept; keys that would not act with it are refused
    assert parse_config({"cohort": {"name": "mds-iwgpm"},
                         "sites": {"by": "WHO", "method": "dirichlet", "alpha": 0.3}}).notes == []
    assert _problems(sites={"by": "CENTRE", "method": "iid"}) == [
        "sites: sites.by acts only with method by_column or dirichlet; remove it or set sites.method"]
    assert _problems(sites={"alpha": 0.3}) == [
        "sites: sites.alpha acts only with method dirichlet; remove it or set sites.method: dirichlet"]
    assert _problems(sites={"by": "CENTRE", "proportions": [1, 1]})[0].startswith(
        "sites: sites.proportions is not used with method by_column")


def _smoke_config(tmp_path, **evaluation):  # type: ignore[no-untyped-def]
    return parse_config({
        "name": "t", "cohort": {"name": "mds-iwgpm"}, "sites": {"proportions": [60, 40]},
        "generator": {"name": "bayesian_network", "params": {"max_indegree": 1}},
        "strategy": {"name": "two_step_bn", "engine": "in_process"},
        "evaluation": {"snapshot_rows": 50, "references": [], **evaluation},
        "output": {"dir": str(tmp_path), "run_id": "r"},
    })


def test_evaluation_strata_reach_the_final_evaluation(tmp_path, monkeypatch, data_dir):  # type: ignore[no-untyped-def]
    # Setup: the final evaluation is recorded instead of computed (its own tests cover it)
    from fedsynth import evaluation
    from fedsynth.experiments import run as run_mod

    seen: dict = {}  # type: ignore[type-arg]

    class _Report:
        def to_dict(self):  # type: ignore[no-untyped-def]
            return {}

    def fake_evaluate(real, synthetic, schema, **kwargs):  # type: ignore[no-untyped-def]
        seen.update(kwargs)
        return _Report()

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    monkeypatch.setattr(run_mod, "score_snapshot", lambda *a, **k: {"csf": 0.5, "gsf": 0.5})

    # Run
    run_mod.run_experiment(_smoke_config(tmp_path, strata=["SEX", "IPSSR"], final="lite"))

    # Assert
    assert seen["strata"] == ["SEX", "IPSSR"] and seen["detection"] is False and seen["utility"] is False


def test_unknown_strata_stop_the_run_before_any_engine_starts(tmp_path, monkeypatch, data_dir):  # type: ignore[no-untyped-def]
    # Setup
    from fedsynth.experiments import run as run_mod
    from fedsynth.strategies import registry

    def no_engine(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("a strategy was built")

    monkeypatch.setattr(registry, "make_strategy", no_engine)

    # Run
    with pytest.raises(ValidationError) as info:
        run_mod.run_experiment(_smoke_config(tmp_path, strata=["SEX", "TP53_VAF", "ARM"]))

    # Assert: both unknown columns at once, and no run directory
    text = str(info.value)
    assert "evaluation.strata[1]: no column 'TP53_VAF' in the schema" in text
    assert "evaluation.strata[2]: no column 'ARM' in the schema" in text and "2 problems" in text
    assert not (tmp_path / "r").exists()


def test_config_validate_and_run_both_refuse_a_bad_config_with_every_problem(tmp_path, monkeypatch):
    # Setup: three keys that would not act, one moved key; run must stop before loading any data
    from typer.testing import CliRunner

    from fedsynth.cli import app
    from fedsynth.experiments import run as run_mod

    monkeypatch.setattr(run_mod, "load_partition", lambda config: pytest.fail("data was loaded"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "cohort: {name: mds-iwgpm}\n"
        "generator: {name: vae_bgm, params: {epochs: 50}}\n"
        "strategy: {name: fedavg, params: {count_look_ahead: 2, references: []}}\n"
        "sites: {by: CENTRE, method: iid}\n"
    )
    runner = CliRunner()

    # Run
    results = [runner.invoke(app, ["config", "validate", str(bad)]),
               runner.invoke(app, ["run", str(bad), "--out", str(tmp_path)])]

    # Assert: exit 2, one message with all four problems, no traceback
    for res in results:
        text = " ".join(res.output.split())
        assert res.exit_code == 2, res.output
        assert "has 4 problems" in text and "Traceback" not in text
        for part in ("strategy.params.references: has moved to evaluation.references",
                     "sites: sites.by acts only with method by_column or dirichlet",
                     "strategy.params.count_look_ahead: is not a parameter of 'fedavg' with 'vae_bgm'",
                     "generator.params.epochs: is not used by 'fedavg'"):
            assert part in text, part


def test_config_validate_says_what_it_decided(tmp_path):
    from typer.testing import CliRunner

    from fedsynth.cli import app

    cfg = tmp_path / "by.yaml"
    cfg.write_text("cohort: {name: mds-iwgpm}\nsites: {by: CENTRE}\n")
    res = CliRunner().invoke(app, ["config", "validate", str(cfg)])
    text = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert "Note: sites.by is set without sites.method: one site per value of 'CENTRE' (method: by_column)" in text
    assert "method: by_column" in text


@pytest.mark.parametrize(
    "path, sets",
    [
        ("configs/demo.yaml", []),
        ("configs/smoke.yaml", []),
        ("configs/fedavg_vae_bgm.yaml", []),
        ("configs/demo.yaml", ["strategy.name=centralized", "strategy.params={}", "evaluation.references=[]"]),
        ("configs/fedavg_vae_bgm.yaml", ["sites.by=WHO_2016", "sites.method=dirichlet", "sites.alpha=0.3"]),
    ],
)
def test_the_config_a_run_writes_validates_again_unchanged(path: str, sets: list[str]) -> None:
    # Setup: a config as a run resolves it
    from pathlib import Path

    import yaml

    from fedsynth.experiments.config import load_config, parse_config

    root = Path(__file__).resolve().parents[3]
    config = load_config(root / path, sets)

    # Run: what the run writes into config.yaml, read back
    written = yaml.safe_load(yaml.safe_dump(config.to_yaml_dict(), sort_keys=False))
    again = parse_config(written)

    # Assert: it validates, and means the same run (proportions are re-normalised: equal to rounding)
    assert parse_config(yaml.safe_load(yaml.safe_dump(parse_config(
        {"name": "by-centre", "cohort": {"name": "mds-iwgpm"}, "sites": {"by": "WHO_2016"}}).to_yaml_dict())))
    a, b = again.model_dump(), config.model_dump()
    pa, pb = a["sites"].pop("proportions"), b["sites"].pop("proportions")
    assert (pa is None and pb is None) or pa == pytest.approx(pb)
    if a["strategy"]["name"] == "centralized":  # a baseline is written with references [] (it draws none)
        assert a["evaluation"].pop("references") == [] and b["evaluation"].pop("references") in ([], ["centralized", "local"])
    assert a == b


def test_evaluation_arms_take_a_path_or_an_entry_with_300_patients_by_default() -> None:
    # Run
    config = parse_config({"cohort": {"name": "mds-iwgpm"}, "evaluation": {"arms": [
        "configs/arms/high_risk_tp53_wt.yaml",
        {"criteria": "other/lower_risk.yaml", "n": 120, "max_seconds": 30, "draw": "independent"}]}})

    # Assert: a bare path is an entry with the defaults; the resolved config writes entries and validates again
    a, b = config.evaluation.arms
    assert (a.criteria, a.n, a.max_seconds, a.name) == ("configs/arms/high_risk_tp53_wt.yaml", 300, 120.0, "high_risk_tp53_wt")
    assert (b.n, b.max_seconds, b.name, b.draw) == (120, 30.0, "lower_risk", "independent")
    assert a.draw == "balanced"
    written = config.to_yaml_dict()["evaluation"]["arms"]
    assert written[0] == {"criteria": "configs/arms/high_risk_tp53_wt.yaml", "n": 300, "max_seconds": 120.0,
                          "draw": "balanced"}
    assert parse_config(config.to_yaml_dict()).evaluation.arms == config.evaluation.arms


def test_bad_evaluation_arms_exit_2_with_every_problem_at_once(tmp_path, monkeypatch):
    # Setup: a baseline with no global model, a count of 0, a misspelt key, two files of one name, a non-entry
    from typer.testing import CliRunner

    from fedsynth.cli import app
    from fedsynth.experiments import run as run_mod

    monkeypatch.setattr(run_mod, "load_partition", lambda config: pytest.fail("data was loaded"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "cohort: {name: mds-iwgpm}\nstrategy: {name: local}\nevaluation:\n  references: []\n  arms:\n"
        "    - {criteria: a/x.yaml, n: 0}\n    - {criteria: b.yaml, patients: 10}\n    - [not, an, entry]\n"
    )
    dup = tmp_path / "dup.yaml"
    dup.write_text("cohort: {name: mds-iwgpm}\nstrategy: {name: local}\nevaluation:\n  references: []\n"
                   "  arms: [a/x.yaml, b/x.yaml]\n")
    runner = CliRunner()

    # Run
    structure = [runner.invoke(app, ["config", "validate", str(bad)]),
                 runner.invoke(app, ["run", str(bad), "--out", str(tmp_path)])]
    rules = runner.invoke(app, ["run", str(dup), "--out", str(tmp_path)])

    # Assert: exit 2, one message each, every problem named, no traceback
    for res in structure:
        text = " ".join(res.output.split())
        assert res.exit_code == 2, res.output
        assert "has 3 problems" in text and "Traceback" not in text
        for part in ("evaluation.arms.0.n: Input should be greater than or equal to 1",
                     "evaluation.arms.1.patients: unknown key; valid: criteria, n, max_seconds",
                     "evaluation.arms.2: Input should be a valid dictionary"):
            assert part in text, part
    text = " ".join(rules.output.split())
    assert rules.exit_code == 2 and "has 2 problems" in text
    assert "evaluation.arms: the local baseline trains one model per site and saves no global model" in text
    assert "evaluation.arms[1].criteria: has the file name 'x' of evaluation.arms[0]" in text
