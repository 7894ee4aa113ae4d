"""``fedsynth arm`` on a small made-up cohort: counts from the model, exact criteria, time bound, post-baseline columns,
and the report against a reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    from fedsynth.cli import app

    return app


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 300
    tp53 = (rng.random(n) < 0.2).astype(int)
    group = rng.choice(["A", "B"], n).astype(object)
    group[:3] = "rare"  # a label held by 3 training rows
    return pd.DataFrame({
        "age": rng.integers(40, 90, n),
        "hb": np.round(rng.normal(10, 2, n), 1),
        "group": group,
        "TP53": tp53,
        "treated": (rng.random(n) < 0.5).astype(int),
        "time": np.round(rng.exponential(np.where(tp53 == 1, 1.0, 4.0)) + 0.05, 2),
        "event": (rng.random(n) < 0.7).astype(int),
    })


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fedsynth.cohort.datasets import load
    from fedsynth.generators import make_generator

    folder = tmp_path_factory.mktemp("arm")
    csv = folder / "toy.csv"
    _frame().to_csv(csv, index=False)
    cohort = load(str(csv), overrides={"columns": {"treated": {"baseline": False}}})
    assert cohort.schema.post_baseline_columns == ["treated"]
    gen = make_generator("bayesian_network", cohort.schema, max_indegree=2)
    gen.fit(cohort.data[cohort.schema.model_columns])
    gen.save(folder / "model")
    return folder / "model"


def _criteria(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "criteria.yaml"
    path.write_text(text)
    return path


def test_arm_states_the_training_count_and_writes_rows_that_meet_the_criteria(
    app: typer.Typer, model_dir: Path, tmp_path: Path
) -> None:
    # Setup: TP53 mutated, as in arm (b); the count is the training rows with TP53 = 1, summed in the domain
    crit = _criteria(tmp_path, "name: mutated\ninclusion:\n  categories:\n    TP53: [1]\n"
                               "  ranges:\n    age: {min: 50}\nexclusion:\n  categories:\n    group: [B]\n")
    frame = _frame()
    reference = tmp_path / "ref.csv"
    frame[frame.TP53 == 1].to_csv(reference, index=False)
    # Run
    result = runner.invoke(app, ["arm", str(crit), str(model_dir), "--n", "60", "--out", str(tmp_path / "out"),
                                 "--reference", str(reference), "--seed", "1"])
    # Assert
    assert result.exit_code == 0, result.output
    # three criteria on three columns: no kept count answers them
    assert "Training patients who met the criteria: not known" in result.output
    rows = pd.read_csv(tmp_path / "out" / "arm.csv")
    assert len(rows) == 60
    assert (rows.TP53 == 1).all() and (rows.age >= 50).all() and not (rows.group == "B").any()
    assert "treated" not in rows.columns  # baseline: false
    report = json.loads((tmp_path / "out" / "arm_report.json").read_text())
    comp = report["endpoints"]["time"]["comparison"] if "time" in report["endpoints"] else \
        next(iter(report["endpoints"].values()))["comparison"]
    assert comp["hr_lower"] <= comp["hr"] <= comp["hr_upper"]
    assert 0 <= comp["logrank_p"] <= 1
    assert report["header"]["left_out"] == ["treated"]
    assert {b["column"] for b in report["balance"]} >= {"age", "hb", "group"}
    html = (tmp_path / "out" / "arm_report.html").read_text()
    assert "<svg" in html
    # the SMD table is named "covariate balance", apart from the "balanced draw" the arm was sampled by
    assert "Covariate balance: standardised mean differences, arm against" in " ".join(html.split())
    assert (tmp_path / "out" / "arm.card.json").is_file()


def test_a_one_column_criterion_is_counted_from_the_domain(app: typer.Typer, model_dir: Path, tmp_path: Path) -> None:
    # Setup
    crit = _criteria(tmp_path, "inclusion:\n  categories:\n    TP53: [1]\n")
    expected = int(_frame().TP53.sum())
    # Run
    result = runner.invoke(app, ["arm", str(crit), str(model_dir), "--n", "20", "--out", str(tmp_path / "o")])
    # Assert
    assert result.exit_code == 0, result.output
    assert f"Training patients who met the criteria: {expected} (the shared domain" in result.output


def test_a_tiny_stratum_is_shown_under_five_and_warned(app: typer.Typer, model_dir: Path, tmp_path: Path) -> None:
    # Setup: 'rare' is held by 3 training rows
    crit = _criteria(tmp_path, "inclusion:\n  categories:\n    group: [rare]\n")
    # Run
    result = runner.invoke(app, ["arm", str(crit), str(model_dir), "--n", "10", "--out", str(tmp_path / "o")])
    # Assert
    assert result.exit_code == 0, result.output
    assert "Training patients who met the criteria: < 5" in result.output
    assert "fewer than 20 training patients" in result.output
    counted = json.loads((tmp_path / "o" / "arm_report.json").read_text())["header"]["training_count"]
    assert counted["value"] is None and counted["shown"] == "< 5"


def test_rejection_sampling_stops_at_its_time_bound_with_exit_2(app: typer.Typer, model_dir: Path, tmp_path: Path) -> None:
    # Setup: ages are whole numbers, so no row lies strictly between 60 and 61 (inside the model's range)
    crit = _criteria(tmp_path, "inclusion:\n  expressions: ['age > 60.2 and age < 60.8']\n")
    # Run
    result = runner.invoke(app, ["arm", str(crit), str(model_dir), "--n", "10", "--out", str(tmp_path / "o"),
                                 "--max-seconds", "0.1"])
    # Assert
    assert result.exit_code == 2
    assert "time bound of 0.1 s" in result.output
    assert "This arm is balanced: the model was asked for 100 rows (10 x 10) to take 10 from" in " ".join(
        result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "o" / "arm.csv").exists()


def test_criteria_problems_are_listed_at_once_with_exit_2(app: typer.Typer, model_dir: Path, tmp_path: Path) -> None:
    # Setup: an unknown key, min above max, and a post-baseline column
    crit = _criteria(tmp_path, "inclusion:\n  ranges:\n    age: {min: 80, max: 60}\n  categories:\n"
                               "    treated: [1]\nexclusoin: {}\n")
    # Run
    result = runner.invoke(app, ["arm", str(crit), str(model_dir), "--n", "10", "--out", str(tmp_path / "o")])
    # Assert
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "exclusoin: is not a criteria key" in text
    assert "inclusion.ranges.age: has min above max" in text
    assert "inclusion: treated: is recorded after baseline" in text


def test_the_arm_is_balanced_by_default_and_says_so_and_independent_on_request(
    app: typer.Typer, model_dir: Path, tmp_path: Path
) -> None:
    # Setup
    crit = _criteria(tmp_path, "inclusion:\n  categories:\n    TP53: [0]\n")
    outs = {d: tmp_path / d for d in ("default", "independent")}
    # Run
    results = {d: runner.invoke(app, ["arm", str(crit), str(model_dir), "--n", "40", "--out", str(out), "--seed", "2",
                                      *(["--draw", d] if d != "default" else [])]) for d, out in outs.items()}
    # Assert
    for result in results.values():
        assert result.exit_code == 0, result.output
    draws = {d: json.loads((out / "arm_report.json").read_text())["header"]["draw"] for d, out in outs.items()}
    assert draws["default"]["method"] == "balanced" and draws["default"]["pool_rows"] == 400
    assert draws["default"]["endpoint"] == "survival"
    assert draws["independent"] == {"method": "independent", "pool_rows": None, "endpoint": None,
                                    "about": "Independent draw: 40 draws of the model under the criteria."}
    assert "Balanced draw: 40 of 400 draws of the model under the criteria" in " ".join(
        results["default"].output.split())
    assert "Balanced draw: 40 of 400 draws" in " ".join((outs["default"] / "arm_report.html").read_text().split())
    assert "Independent draw: 40 draws" in " ".join(results["independent"].output.split())
    arms = {d: pd.read_csv(out / "arm.csv") for d, out in outs.items()}
    assert all(len(a) == 40 and (a.TP53 == 0).all() for a in arms.values())
    assert not arms["default"].equals(arms["independent"])
    cards = {d: json.loads((out / "arm.card.json").read_text())["sample"] for d, out in outs.items()}
    assert cards["default"]["draw"] == draws["default"] and cards["independent"]["draw"]["method"] == "independent"


def test_a_wrong_draw_and_endpoint_are_listed_together_with_exit_2(
    app: typer.Typer, model_dir: Path, tmp_path: Path
) -> None:
    crit = _criteria(tmp_path, "inclusion:\n  categories:\n    TP53: [0]\n")
    result = runner.invoke(app, ["arm", str(crit), str(model_dir), "--n", "10", "--out", str(tmp_path / "o"),
                                 "--draw", "stratified", "--along", "PFS"])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "--draw: 'stratified' is not a draw method; valid: balanced or independent" in text
    assert "--along: 'PFS' is not an endpoint of the model's schema; valid: survival" in text
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_include_post_baseline_keeps_those_columns(app: typer.Typer, model_dir: Path, tmp_path: Path) -> None:
    crit = _criteria(tmp_path, "inclusion:\n  ranges:\n    age: {max: 70}\n")
    result = runner.invoke(app, ["arm", str(crit), str(model_dir), "--n", "10", "--out", str(tmp_path / "o"),
                                 "--include-post-baseline"])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(tmp_path / "o" / "arm.csv")
    assert "treated" in rows.columns and (rows.age <= 70).all()


def test_a_survival_calibration_at_its_bound_is_warned_by_arm_and_sample(
    app: typer.Typer, model_dir: Path, tmp_path: Path
) -> None:
    from fedsynth.cohort.datasets import load
    from fedsynth.generators import make_generator

    # Setup: a tiny VAE-BGM whose survival calibration is refitted with a bound of log 1.001 on every factor, so
    # whatever the levels need sits at the bound; and the same model with its calibration switched off
    csv = tmp_path / "toy.csv"
    _frame().to_csv(csv, index=False)
    cohort = load(str(csv))
    gen = make_generator("vae_bgm", cohort.schema, epochs=2, batch_size=64, latent_dim=2, hidden_dims=[16],
                         n_components=2, device="cpu")
    gen.fit(cohort.data[cohort.schema.model_columns])
    gen.fit_survival_calibration(gen.survival_counts_, max_log_factor=0.001)  # type: ignore[attr-defined]
    gen.save(tmp_path / "vae")
    gen.set_params(survival_calibration=False)
    gen.save(tmp_path / "vae_off")
    crit = _criteria(tmp_path, "inclusion:\n  categories:\n    TP53: [1]\n")
    # Run
    arm = runner.invoke(app, ["arm", str(crit), str(tmp_path / "vae"), "--n", "20", "--out", str(tmp_path / "o")])
    sample = runner.invoke(app, ["sample", str(tmp_path / "vae"), "--n", "20", "--out", str(tmp_path / "s.csv")])
    reference = tmp_path / "ref.csv"
    _frame()[_frame().TP53 == 1].to_csv(reference, index=False)
    with_ref = runner.invoke(app, ["arm", str(crit), str(tmp_path / "vae"), "--n", "20", "--out", str(tmp_path / "r"),
                                   "--reference", str(reference)])
    off = runner.invoke(app, ["arm", str(crit), str(tmp_path / "vae_off"), "--n", "20", "--out", str(tmp_path / "p")])
    bn = runner.invoke(app, ["arm", str(crit), str(model_dir), "--n", "20", "--out", str(tmp_path / "q")])
    # Assert: arm and sample warn, naming the endpoint (the inferred one, "survival") and the bound; the arm report
    # lists the same sentences
    for result in (arm, sample, with_ref, off, bn):
        assert result.exit_code == 0, result.output
    text = " ".join(arm.output.split())
    assert "Warning: Survival is likely still too" in text or "Warning: survival is likely still too" in text
    assert "by the most it allows (" in text
    assert "Warning: The model's survival calibration stopped after 40 passes without matching every" in text
    assert "Warning: Compare the arm with real eligible patients (--reference FILE)" in text
    # with a reference the advice points to the comparison instead
    referenced = " ".join(with_ref.output.split())
    assert "Warning: The comparison with the reference below shows whether this arm is affected." in referenced
    assert "Compare the arm with real eligible patients" not in referenced
    sampled = " ".join(sample.output.split())
    assert "by the most it allows" in sampled and "Evaluate the rows against real data (fedsynth evaluate)" in sampled
    assert "--reference" not in sampled
    warned = json.loads((tmp_path / "o" / "arm_report.json").read_text())["header"]["warnings"]
    assert any(w.lower().startswith("survival is likely still too") for w in warned)
    # the data cards carry the model's survival warnings, without the advice
    for card in (tmp_path / "o" / "arm.card.json", tmp_path / "s.card.json"):
        carried = json.loads(card.read_text())["survival_warnings"]
        assert carried and any(w.lower().startswith("survival is likely still too") for w in carried)
        assert not any("--reference" in w or "fedsynth evaluate" in w for w in carried)
    # controls: calibration off, and a Bayesian network (no calibration), say nothing of it
    for result, folder in ((off, "p"), (bn, "q")):
        assert "survival calibration" not in result.output
        assert json.loads((tmp_path / folder / "arm.card.json").read_text())["survival_warnings"] == []
        assert not any("survival calibration" in w for w in json.loads(
            (tmp_path / folder / "arm_report.json").read_text())["header"]["warnings"])


ARM_A = Path(__file__).parents[3] / "configs" / "arms" / "high_risk_tp53_wt.yaml"


def test_mds_arm_a_criteria_select_the_patients_written_out_by_hand() -> None:
    from fedsynth.cohort.conditions import check_sampling_inputs
    from fedsynth.cohort.criteria import read_criteria
    from fedsynth.cohort.datasets import load

    # Setup
    cohort = load("mds-iwgpm")
    data, schema = cohort.data, cohort.schema
    # Run
    crit = read_criteria(ARM_A, schema)
    request = check_sampling_inputs(crit.condition_items(), crit.where(schema), schema)
    got = data.eval(request.where).to_numpy(bool) & data["IPSSR"].isin(request.conditions["IPSSR"]).to_numpy() \
        & (data["TP53"] == request.conditions["TP53"]).to_numpy()
    # Assert
    by_hand = (data["IPSSR"].isin(["High", "Very-High"]) & (data["TP53"] == 0) & (data["AGE"] >= 65)).to_numpy()
    assert got.tolist() == by_hand.tolist() and by_hand.sum() > 100


@pytest.mark.slow
def test_mds_arm_a_from_a_centralized_network_meets_the_criteria_and_is_compared(tmp_path: Path) -> None:
    from fedsynth.cli import app
    from fedsynth.cohort.datasets import load

    # Setup: a centralized Bayesian network on the whole cohort; the reference: the real eligible patients
    cohort = load("mds-iwgpm")
    result = runner.invoke(app, ["fit", "--cohort", "mds-iwgpm", "-g", "bayesian_network", "--no-report",
                                 "--out", str(tmp_path / "fit")])
    assert result.exit_code == 0, result.output
    data = cohort.data
    eligible = data[data["IPSSR"].isin(["High", "Very-High"]) & (data["TP53"] == 0) & (data["AGE"] >= 65)]
    eligible.to_csv(tmp_path / "ref.csv", index=False)
    # Run
    result = runner.invoke(app, ["arm", str(ARM_A), str(tmp_path / "fit"), "--n", "300", "--reference",
                                 str(tmp_path / "ref.csv"), "--out", str(tmp_path / "arm")])
    # Assert
    assert result.exit_code == 0, result.output
    assert "Training patients who met the criteria: not known" in " ".join(result.output.split())
    rows = pd.read_csv(tmp_path / "arm" / "arm.csv")
    assert len(rows) == 300
    assert rows["IPSSR"].isin(["High", "Very-High"]).all() and (rows["TP53"] == 0).all() and (rows["AGE"] >= 65).all()
    report = json.loads((tmp_path / "arm" / "arm_report.json").read_text())
    os_ = report["endpoints"]["OS"]
    assert os_["reference"]["n"] == int(eligible[["OS_YEARS", "OS_STATUS"]].notna().all(axis=1).sum())
    assert os_["comparison"]["hr_lower"] <= os_["comparison"]["hr"] <= os_["comparison"]["hr_upper"]


def test_the_console_summary_flags_what_the_html_report_flags() -> None:
    from fedsynth.experiments.arm import summary_lines

    # Setup: two endpoints against a reference: one within 15% and p 0.36, one 21% off with p 0.02 and 16 of 300
    # rows without the endpoint
    def endpoint(n: int, med: float, ref: float, p: float) -> dict[str, object]:
        return {"time_unit": "years", "arm": {"n": n, "median": med}, "reference": {"median": ref},
                "comparison": {"hr": 1.2, "hr_lower": 1.0, "hr_upper": 1.5, "logrank_p": p,
                               "median_difference": med - ref, "median_relative_error": abs(med - ref) / ref}}

    report = {"n_arm": 300, "endpoints": {"OS": endpoint(300, 1.14, 1.05, 0.36), "LFS": endpoint(284, 0.72, 0.91, 0.02)}}
    # Run
    os_line, lfs_line = summary_lines(report)
    # Assert
    assert os_line == ("OS: arm median 1.14 years, reference median 1.05, difference +0.09 (8.6%); HR 1.20 "
                       "(1.00-1.50; > 1: events sooner in the arm), log-rank p 0.36")
    assert lfs_line.startswith("LFS: arm median 0.72 years (284 of 300 rows with LFS known), reference median 0.91, "
                               "difference -0.19 (20.9%, over 15%)")
    assert lfs_line.endswith("log-rank p 0.02: the curves differ")
    # without a reference: the arm's median only
    alone = summary_lines({"n_arm": 300, "endpoints": {"OS": {"time_unit": "years", "arm": {"n": 300, "median": 1.1}}}})
    assert alone == ["OS: arm median 1.10 years"]
