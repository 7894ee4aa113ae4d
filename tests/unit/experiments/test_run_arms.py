"""A run's control arms (evaluation.arms): checked before training, drawn from the saved model as `fedsynth arm` draws
them, judged against the real eligible training patients, kept across a resume, and shown in report.html."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from _overrides import with_overrides

from fedsynth.errors import ValidationError
from fedsynth.experiments.config import parse_config

ROOT = Path(__file__).resolve().parents[3]
TP53 = str(ROOT / "configs" / "arms" / "tp53_mutated.yaml")
LOWER = str(ROOT / "configs" / "arms" / "lower_risk.yaml")
VAE_PARAMS = {"hidden_dims": [16], "latent_dim": 2, "n_components": 2, "batch_size": 256}


def _config(tmp_path: Path, run_id: str = "r", **over: Any):  # type: ignore[no-untyped-def]
    raw: dict[str, Any] = {
        "name": "t",
        "cohort": {"name": "mds-iwgpm"},
        "sites": {"proportions": [60, 30, 10]},
        "generator": {"name": "bayesian_network", "params": {"max_indegree": 1}},
        "strategy": {"name": "two_step_bn", "engine": "in_process"},
        "evaluation": {"snapshot_rows": 100, "references": [], "final": "none",
                       "arms": [{"criteria": TP53, "n": 120}]},
        "output": {"dir": str(tmp_path), "run_id": run_id},
        "seed": 3,
    }
    return parse_config(with_overrides(raw, over))


@pytest.fixture()
def fast_scores(monkeypatch):  # type: ignore[no-untyped-def]
    """Round scores are not what these tests check: a constant keeps them fast."""
    from fedsynth.experiments import run as run_mod

    monkeypatch.setattr(run_mod, "score_snapshot", lambda *a, **k: {"csf": 0.5, "gsf": 0.5, "nndr": None})


def _eligible_tp53(config: Any) -> pd.DataFrame:
    from fedsynth.experiments.run_setup import load_partition

    _, part = load_partition(config)
    return part.train[part.train["TP53"] == 1]


@pytest.mark.parametrize(
    "over",
    [{}, {"generator.name": "vae_bgm", "generator.params": VAE_PARAMS, "strategy.name": "fedavg",
          "strategy.rounds": 1, "strategy.params": {"mixture_max_iter": 5}}],
    ids=["two-step-bn", "fedavg-vae-bgm"],
)
def test_a_run_with_an_arm_writes_the_arm_files_and_a_report_section_against_the_real_eligible(
    tmp_path, fast_scores, data_dir, over
) -> None:
    # Setup
    from lifelines import KaplanMeierFitter
    from typer.testing import CliRunner

    from fedsynth.cli import app
    from fedsynth.experiments.run import run_experiment

    config = _config(tmp_path, **over)

    # Run
    result = run_experiment(config)

    # Assert: the files `fedsynth arm --out` writes, in arms/<criteria file name>/
    arm_dir = result.run_dir / "arms" / "tp53_mutated"
    assert sorted(p.name for p in arm_dir.iterdir()) == ["arm.card.json", "arm.csv", "arm_report.html", "arm_report.json"]
    rows = pd.read_csv(arm_dir / "arm.csv")
    assert len(rows) == 120 and set(rows["TP53"]) == {1}
    # the reference is the real training rows with TP53 mutated, counted and fitted here independently
    eligible = _eligible_tp53(config)
    report = json.loads((arm_dir / "arm_report.json").read_text())
    assert report["n_reference"] == len(eligible) and report["header"]["reference"]["n"] == len(eligible)
    assert report["header"]["draw"]["method"] == "balanced" and report["header"]["run_arm"]["draw"] == "balanced"
    os_real = eligible[["OS_YEARS", "OS_STATUS"]].dropna()
    kmf = KaplanMeierFitter().fit(os_real["OS_YEARS"], os_real["OS_STATUS"])
    assert report["endpoints"]["OS"]["reference"]["median"] == pytest.approx(kmf.median_survival_time_)
    comparison = report["endpoints"]["OS"]["comparison"]
    assert comparison["hr_lower"] <= comparison["hr"] <= comparison["hr_upper"] and 0 <= comparison["logrank_p"] <= 1
    # the model's own survival notes (VAE-BGM: its calibration's limits; none for the network) are in the arm's warnings
    from fedsynth.generators import load_generator

    notes = load_generator(result.run_dir / "model").survival_notes()
    assert bool(notes) == bool(over)  # a one-round tiny VAE-BGM's calibration stops short of its tolerance
    assert set(notes) <= set(report["header"]["warnings"])
    # report.json carries the figures without the curves' points; report.html shows the section and links the files
    entry = json.loads((result.run_dir / "report.json").read_text())["arms"][0]
    assert (entry["name"], entry["n"], entry["error"], entry["kept"]) == ("tp53_mutated", 120, None, False)
    assert entry["report"]["endpoints"]["OS"]["comparison"] == comparison
    assert "times" not in entry["report"]["endpoints"]["OS"]["arm"]
    html = (result.run_dir / "report.html").read_text()
    assert 'id="arm-tp53_mutated"' in html and "real eligible training patients" in html
    assert 'href="arms/tp53_mutated/arm_report.html"' in html and 'href="arms/tp53_mutated/arm.csv"' in html
    # the same rows as `fedsynth arm` draws from the run directory with the run's seed
    out = tmp_path / "cli-arm"
    res = CliRunner().invoke(app, ["arm", TP53, str(result.run_dir), "--n", "120", "--seed", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "arm.csv").read_bytes() == (arm_dir / "arm.csv").read_bytes()


def test_a_resumed_run_keeps_the_arms_an_interrupted_attempt_finished(tmp_path, fast_scores, data_dir, monkeypatch) -> None:
    # Setup: an uninterrupted run with two arms, and the same run stopped when its second arm starts
    from fedsynth.experiments import arm as arm_mod
    from fedsynth.experiments.run import run_experiment

    arms = [{"criteria": TP53, "n": 100}, {"criteria": LOWER, "n": 100}]
    run_experiment(_config(tmp_path, "full", **{"evaluation.arms": arms}))

    def stop_at_second_arm(event: str, payload: Any) -> None:
        if event == "phase" and payload["phase"] == "control arm: lower_risk":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(_config(tmp_path, "cut", **{"evaluation.arms": arms}), progress=stop_at_second_arm)
    cut = tmp_path / "cut"
    assert json.loads((cut / "manifest.json").read_text())["status"] == "interrupted"
    assert (cut / "arms" / "tp53_mutated" / "arm_report.html").is_file() and not (cut / "arms" / "lower_risk").exists()
    first_written = (cut / "arms" / "tp53_mutated" / "arm.csv").stat().st_mtime_ns
    drawn: list[int] = []
    original = arm_mod.draw_arm
    monkeypatch.setattr(arm_mod, "draw_arm", lambda *a, **k: drawn.append(1) or original(*a, **k))

    # Run
    result = run_experiment(_config(tmp_path, "cut", **{"evaluation.arms": arms}), resume=True)

    # Assert: the finished arm was kept (not redrawn), the other drawn, and both equal the uninterrupted run's
    assert len(drawn) == 1
    assert (cut / "arms" / "tp53_mutated" / "arm.csv").stat().st_mtime_ns == first_written
    entries = json.loads((result.run_dir / "report.json").read_text())["arms"]
    assert [(e["name"], e["kept"]) for e in entries] == [("tp53_mutated", True), ("lower_risk", False)]
    for name in ("tp53_mutated", "lower_risk"):
        for f in ("arm.csv", "arm_report.json"):
            full = (tmp_path / "full" / "arms" / name / f).read_bytes()
            assert (cut / "arms" / name / f).read_bytes() == full.replace(b"/full/", b"/cut/"), (name, f)


def test_a_fresh_start_removes_the_arms_of_the_run_it_replaces(tmp_path, fast_scores, data_dir) -> None:
    # Setup: a run with an arm, then the same run id started afresh without arms
    from fedsynth.experiments.run import run_experiment

    run_experiment(_config(tmp_path))
    assert (tmp_path / "r" / "arms" / "tp53_mutated").is_dir()

    # Run
    run_experiment(_config(tmp_path, **{"evaluation.arms": []}))

    # Assert
    assert not (tmp_path / "r" / "arms").exists()
    assert 'id="arms"' not in (tmp_path / "r" / "report.html").read_text()


def test_an_arm_that_cannot_be_drawn_is_reported_and_does_not_cost_the_run(tmp_path, fast_scores, data_dir, monkeypatch) -> None:
    # Setup: sampling under the criteria runs out of time
    from fedsynth.errors import FedsynthError
    from fedsynth.experiments import arm as arm_mod
    from fedsynth.experiments.run import run_experiment

    def out_of_time(*a: Any, **k: Any) -> pd.DataFrame:
        raise FedsynthError("Arm sampling stopped: 12 of 120 rows met the conditions within the time bound")

    monkeypatch.setattr(arm_mod, "draw_arm", out_of_time)

    # Run
    result = run_experiment(_config(tmp_path))

    # Assert
    assert json.loads((result.run_dir / "manifest.json").read_text())["status"] == "finished"
    entry = json.loads((result.run_dir / "report.json").read_text())["arms"][0]
    assert entry["report"] is None and "within the time bound" in entry["error"]
    assert "Not drawn: Arm sampling stopped" in (result.run_dir / "report.html").read_text()


def test_every_problem_of_every_arm_stops_the_run_before_anything_trains(tmp_path, monkeypatch, data_dir) -> None:
    # Setup: a missing file, a malformed one, and one naming an unknown column and an unknown label
    from typer.testing import CliRunner

    from fedsynth.cli import app
    from fedsynth.strategies import registry

    monkeypatch.setattr(registry, "make_strategy", lambda *a, **k: pytest.fail("a strategy was built"))
    bad_shape = tmp_path / "shape.yaml"
    bad_shape.write_text("inclusion:\n  ranges: {AGE: {min: 80, max: 60}}\n  other: 1\n")
    bad_names = tmp_path / "names.yaml"
    bad_names.write_text("inclusion:\n  categories: {IPSSR: [Hihg], TP35: [1]}\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "cohort: {name: mds-iwgpm}\ngenerator: {name: bayesian_network, params: {max_indegree: 1}}\n"
        "strategy: {name: two_step_bn, engine: in_process}\n"
        f"evaluation:\n  arms: [{tmp_path / 'missing.yaml'}, {bad_shape}, {{criteria: {bad_names}, n: 50}}]\n"
        f"output: {{dir: {tmp_path}, run_id: r}}\n"
    )

    # Run
    res = CliRunner().invoke(app, ["run", str(cfg)])

    # Assert: exit 2, one message naming every file and problem, no traceback, no run directory
    text = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert "has 5 problems" in text and "Traceback" not in text
    for part in (f"evaluation.arms[0] ({tmp_path / 'missing.yaml'}): no such file",
                 f"evaluation.arms[1] ({bad_shape}) inclusion.ranges.AGE: has min above max",
                 f"evaluation.arms[1] ({bad_shape}) inclusion.other: is not a criteria part",
                 f"evaluation.arms[2] ({bad_names}) --condition IPSSR: IPSSR has no category 'Hihg'",
                 f"evaluation.arms[2] ({bad_names}) --condition TP35: no such column"):
        assert part in text, part
    assert not (tmp_path / "r").exists()


def test_fewer_than_five_real_eligible_patients_are_not_shown(tmp_path) -> None:
    # Setup: a small model and run directory; 3 real rows hold the label the criteria ask for
    from fedsynth.cohort.datasets import load
    from fedsynth.experiments.run_arms import draw_run_arms, plan_arms
    from fedsynth.generators import make_generator

    rng = np.random.default_rng(0)
    n = 300
    group = rng.choice(["A", "B"], n).astype(object)
    group[:3] = "rare"
    frame = pd.DataFrame({"age": rng.integers(40, 90, n), "group": group,
                          "time": np.round(rng.exponential(3.0, n) + 0.05, 2), "event": (rng.random(n) < 0.7).astype(int)})
    csv = tmp_path / "toy.csv"
    frame.to_csv(csv, index=False)
    cohort = load(str(csv))
    gen = make_generator("bayesian_network", cohort.schema, max_indegree=1).fit(cohort.data[cohort.schema.model_columns])
    gen.save(tmp_path / "run" / "model")
    crit = tmp_path / "rare.yaml"
    crit.write_text("name: rare\ninclusion:\n  categories: {group: [rare]}\n")
    config = parse_config({"cohort": {"path": str(csv)}, "evaluation": {"arms": [{"criteria": str(crit), "n": 20}]}})

    # Run
    arms = draw_run_arms(plan_arms(config, cohort.schema), tmp_path / "run", real_data=cohort.data, random_state=0)

    # Assert: the arm is drawn, the 3 real rows are neither counted exactly nor drawn
    report = arms[0]["report"]
    assert arms[0]["error"] is None and report["n_arm"] == 20
    assert report["n_reference"] is None and report["header"]["reference"]["n"] == "< 5"
    assert all("reference" not in ep for ep in report["endpoints"].values()) and report["balance"] == []
    assert any("fewer than 5 real training patients" in w for w in report["header"]["warnings"])


def test_plan_arms_reads_nothing_when_the_config_names_no_arm(tmp_path) -> None:
    from fedsynth.cohort.schema import ColumnKind, ColumnSpec, TableSchema
    from fedsynth.experiments.run_arms import plan_arms

    config = parse_config({"cohort": {"name": "mds-iwgpm"}})
    assert plan_arms(config, TableSchema((ColumnSpec("AGE", ColumnKind.INTEGER),))) == []
    with pytest.raises(ValidationError):
        plan_arms(parse_config({"cohort": {"name": "mds-iwgpm"}, "evaluation": {"arms": [str(tmp_path / "x.yaml")]}}),
                  TableSchema((ColumnSpec("AGE", ColumnKind.INTEGER),)))


def test_an_arm_written_before_draw_methods_or_with_another_draw_is_drawn_again(tmp_path) -> None:
    from fedsynth.cohort.schema import ColumnKind, ColumnSpec, TableSchema
    from fedsynth.experiments.run_arms import ARM_FILES, _finished

    schema = TableSchema((ColumnSpec("AGE", ColumnKind.INTEGER),))
    crit_file = tmp_path / "c.yaml"
    crit_file.write_text("inclusion:\n  ranges:\n    AGE: {min: 65}\n")
    from fedsynth.cohort.criteria import read_criteria

    criteria = read_criteria(crit_file, schema)
    key = {"criteria_file": str(crit_file), "n": 10, "seed": 0, "model_sha256": "abc", "draw": "balanced"}
    folder = tmp_path / "arm"
    folder.mkdir()
    for f in ARM_FILES.values():
        (folder / f).write_text("")

    def written(run_arm: dict[str, Any]) -> None:
        header = {"run_arm": run_arm, "criteria": criteria.to_dict()}
        (folder / ARM_FILES["json"]).write_text(json.dumps({"header": header}))

    written(key)
    assert _finished(folder, key, criteria) is not None  # control: the same key is kept
    written({k: v for k, v in key.items() if k != "draw"})  # an arm of fedsynth before balanced draws
    assert _finished(folder, key, criteria) is None
    written({**key, "draw": "independent"})
    assert _finished(folder, key, criteria) is None
