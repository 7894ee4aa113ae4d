"""Experiment configs: shipped examples validate; typos are named with the valid keys and a suggestion."""

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
    assert "generator.name: got 'gan'; valid: bayesian_network, ctgan or vae_bgm" in text
    assert "strategy.rounds: Input should be greater than or equal to 1" in text
    with pytest.raises(ValidationError, match="needs ctgan or vae_bgm"):
        parse_config({"cohort": {"name": "mds-iwgpm"}, "generator": {"name": "bayesian_network"}, "strategy": {"name": "fedavg"}})


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
