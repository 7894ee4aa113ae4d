"""A deployed FedAvg VAE-BGM run on loopback: a SuperLink and three SuperNodes as separate processes, TLS and node
authentication on (so secure aggregation on, the deployment default), one site holding a planted extreme.

One uninterrupted run (2 rounds x 2 local epochs of a small VAE-BGM, with a control arm) is the reference of the
three tests: it writes the full run directory and draws its arm; no message the coordinator received, no log, no
model file and no artefact holds the planted value; and a second run of the same config whose ServerApp is killed
(SIGKILL) after round 1 is resumed with ``fedsynth run CONFIG --federation NAME --resume RUN_DIR`` to the very
snapshots and model of the uninterrupted one.

Slow (about 15-25 minutes on 2 loaded cores): ``pytest -m slow tests/unit/deployment/test_e2e_fedavg.py``. Every
process started is stopped, with its process group, when the module ends, pass or fail; every wait is bounded.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from fedsynth.deployment import processes

from ._loopback import (
    FEDSYNTH,
    RECEIVED_ENV,
    ROOT,
    SITES,
    Federation,
    federation,
    kill_serverapp,
    received_messages,
    recording_app,
    run_bounded,
    submit_with_flwr,
    wait_until,
)

pytestmark = pytest.mark.slow

#: Bound of one deployed run on a loaded 2-core machine (seconds).
RUN_TIMEOUT = 1800
ARM = "lower_risk"
#: A small, fast VAE-BGM; the latent mixture is fitted after the last round only (fewer message rounds).
CONFIG: dict[str, Any] = {
    "name": "deployed-vae",
    "cohort": {"name": "mds-iwgpm"},
    "sites": {"proportions": [60, 30, 10]},
    "generator": {"name": "vae_bgm", "params": {"hidden_dims": [16], "latent_dim": 2, "n_components": 2,
                                                "batch_size": 256, "device": "cpu"}},
    "strategy": {"name": "fedavg", "rounds": 2, "local_epochs": 2, "min_sites": 3,
                 "params": {"mixture_max_iter": 3, "mixture_every_round": False}},
    "evaluation": {"snapshot_rows": 300, "references": [], "final": "none",
                   # relative to the working directory of `fedsynth run` (the repository's root here)
                   "arms": [{"criteria": f"configs/arms/{ARM}.yaml", "n": 60}]},
    "seed": 0,
}


# -- what a planted value looks like wherever it may end up ------------------------------------------------------

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _holds(values: Any, planted: float) -> bool:
    """Whether ``values`` hold ``planted`` (as float64 to 1e-9 relative, or as the float32 it rounds to)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    with np.errstate(over="ignore"):  # masked integers beyond float32's range: inf, never the planted value
        as_float32 = v.astype(np.float32)
    return bool(np.any(np.isclose(v, planted, rtol=1e-9, atol=0)) or np.any(as_float32 == np.float32(planted)))


def _text_holds(text: str, planted: float) -> bool:
    found = _NUMBER.findall(text)
    return bool(found) and _holds([float(x) for x in found], planted)


def _file_holds(path: Path, planted: float) -> bool:
    """The file holds ``planted`` as float64 or float32 bytes, or written as a number."""
    raw = path.read_bytes()
    if struct.pack("<d", planted) in raw or struct.pack("<f", planted) in raw:
        return True
    return _text_holds(raw.decode("latin-1"), planted)


def _message_holds(msg: Any, planted: float) -> list[str]:
    """Where a received message holds ``planted``: any number of its arrays, metrics, configs or error text."""
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord

    found = []
    if msg.has_error():
        return ["error"] if _text_holds(msg.error.reason or "", planted) else []
    for key, record in msg.content.items():
        if isinstance(record, ArrayRecord):
            for name, arr in record.items():
                a = arr.numpy()
                if np.issubdtype(a.dtype, np.number) and a.size and _holds(a, planted):
                    found.append(f"{key}.{name}")
        elif isinstance(record, (ConfigRecord, MetricRecord)):
            for name, value in record.items():
                items = value if isinstance(value, list) else [value]
                for x in items:
                    if isinstance(x, (bytes, bool)):
                        continue
                    if (isinstance(x, str) and _text_holds(x, planted)) or \
                            (isinstance(x, (int, float)) and _holds([x], planted)):
                        found.append(f"{key}.{name}")
    return found


def _plant_extreme(site_files: dict[str, Path]) -> float:
    """Make site C's largest value of the schema's first continuous column larger still and distinctive (four
    decimals no real value has), inside the column's declared range; return it."""
    from fedsynth.cohort.schema import ColumnKind, TableSchema

    schema = TableSchema.from_yaml(site_files["C"].parents[1] / "schema.yaml")
    column = next(c for c in schema.model_columns if schema[c].kind is ColumnKind.CONTINUOUS)
    rows = pd.read_csv(site_files["C"])
    top, upper = float(rows[column].max()), schema[column].upper
    others = max(float(pd.read_csv(site_files[s], usecols=[column])[column].max()) for s in ("A", "B"))
    target = 1.5 * top if upper is None else top + (float(upper) - top) / 2
    planted = round(round(max(target, others + 0.5), 1) + 0.0437, 4)  # the federation's extreme, too
    rows.loc[rows[column].idxmax(), column] = planted
    rows.to_csv(site_files["C"], index=False)
    return planted


# -- the federation and the uninterrupted run, shared by the tests of this module ---------------------------------


@dataclass
class Deployed:
    fed: Federation
    tmp: Path
    config: Path
    out: Path
    planted: float
    received: Path
    full_output: str
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def full(self) -> Path:
        return self.out / "full"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Deployed]:
    tmp = tmp_path_factory.mktemp("deployed-fedavg")
    started: list[subprocess.Popen[bytes]] = []
    planted: list[float] = []
    try:
        # Setup: the federation, site C with a planted extreme; its SuperLink keeps what its ServerApps receive
        fed = federation(data_dir, tmp, started, plant=lambda files: planted.append(_plant_extreme(files)),
                         extra_env={RECEIVED_ENV: str(tmp / "received")})
        config = tmp / "deployed-vae.yaml"
        config.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
        out = tmp / "reports"

        # Run: the uninterrupted run, submitted as `fedsynth run --federation` submits it, with the recording
        # ServerApp (fedsynth's ServerApp behind a grid that keeps every reply)
        from fedsynth.cohort.datasets import NAMED_COHORTS
        from fedsynth.experiments.config import load_config
        from fedsynth.experiments.deployed import run_config_settings

        cfg = load_config(config, [f"output.dir={out}", "output.run_id=full"])
        arms = [a.model_copy(update={"criteria": str(ROOT / a.criteria)}) for a in cfg.evaluation.arms]
        cfg = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"arms": arms})})
        schema = NAMED_COHORTS["mds-iwgpm"].schema_factory()
        t0 = time.monotonic()
        done = submit_with_flwr(recording_app(tmp / "recording-app"), run_config_settings(cfg, schema, num_sites=3),
                                env=fed.env, tmp_path=tmp, timeout=RUN_TIMEOUT)
        print(f"deployed FedAvg VAE-BGM (uninterrupted) wall time: {time.monotonic() - t0:.1f} s")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        yield Deployed(fed, tmp, config, out, planted[0], tmp / "received", done.stdout + done.stderr, started)
    finally:
        for p in started:
            processes.stop(p, grace=15)


# -- the tests -----------------------------------------------------------------------------------------------------


def test_a_deployed_fedavg_vae_bgm_run_writes_the_full_run_directory_and_draws_its_arm(deployed: Deployed) -> None:
    # Assert: the full run directory, on the coordinator's machine
    run_dir = deployed.full
    for name in ("config.yaml", "manifest.json", "metrics.jsonl", "schema.yaml", "snapshots/round-001.csv",
                 "snapshots/round-002.csv", "model/generator.json", "report.json", "report.html",
                 *(f"audit/{site}.jsonl" for site in SITES)):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "checkpoint").exists() and not (run_dir / ".private").exists()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["engine"] == "deployment", manifest.get("error")
    assert manifest["strategy"]["name"] == "fedavg" and manifest["strategy"]["secure_aggregation"] is True
    assert [s["name"] for s in manifest["sites"]] == list(SITES)
    # every site answered every request (a site may refuse a release its policy forbids: not a drop)
    assert all(d["reason"].startswith("DisclosureRefused") for d in manifest["dropped"]), manifest["dropped"]
    print(f"timings: {manifest['timings']}")

    # Assert: both rounds scored at the three sites; the model loads and samples
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [1, 2]
    for line in lines:
        assert sorted(line["scores"]["scored_at_sites"]) == list(SITES) and line["csf"] is not None
    from fedsynth.generators import load_generator

    model = load_generator(run_dir / "model")
    assert len(model.sample(20, random_state=0)) == 20
    assert len(pd.read_csv(run_dir / "snapshots" / "round-002.csv")) == 300

    # Assert: the control arm was drawn from the final model as `fedsynth arm` draws it, without a real
    # reference (the coordinator holds no eligible patient), and is in report.json and report.html
    arm_dir = run_dir / "arms" / ARM
    for name in ("arm.csv", "arm.card.json", "arm_report.json", "arm_report.html"):
        assert (arm_dir / name).is_file(), name
    report = json.loads((run_dir / "report.json").read_text())
    [arm] = report["arms"]
    assert arm["name"] == ARM and arm["error"] is None and arm["report"] is not None
    assert Path(arm["criteria_file"]) == ROOT / "configs" / "arms" / f"{ARM}.yaml"
    rows = pd.read_csv(arm_dir / "arm.csv")
    assert len(rows) == 60 and set(rows["IPSSR"].dropna()) <= {"Very-Low", "Low"}
    assert "reference" not in json.loads((arm_dir / "arm_report.json").read_text())["header"]
    assert ARM in (run_dir / "report.html").read_text()
    assert manifest["timings"]["arms"] >= 0


def test_a_planted_extreme_leaves_no_trace_in_a_deployment(deployed: Deployed) -> None:
    # Setup: a control: the detectors find the planted value where it is (site C's own file)
    planted = deployed.planted
    assert _file_holds(deployed.fed.site_files["C"], planted)
    assert not any(_file_holds(deployed.fed.site_files[s], planted) for s in ("A", "B"))

    # Assert: in no message the coordinator received ...
    messages = received_messages(deployed.received)
    types = {m.metadata.message_type for m in messages}
    assert {"query.hello", "train.fit", "evaluate.snapshot"} <= types, types
    assert len(messages) >= 3 * 6
    for msg in messages:
        assert _message_holds(msg, planted) == [], msg.metadata.message_type
    # ... in no log (the coordinator's, the sites', the runs') and in no site's audit log ...
    logs = [*deployed.tmp.glob("*.log"), *(f.with_name("rows.audit.jsonl") for f in deployed.fed.site_files.values())]
    assert len(logs) >= 7
    for path in logs:
        assert not _file_holds(path, planted), path.name
    assert not _text_holds(deployed.full_output, planted)
    # ... and in no file of the run directories: model, snapshots, arm, metrics, report, audit copies
    files = [p for p in deployed.out.rglob("*") if p.is_file()]
    assert any(p.parent.name == "model" for p in files) and any(p.name == "arm.csv" for p in files)
    for path in files:
        assert not _file_holds(path, planted), path.relative_to(deployed.out)


def test_a_deployed_run_killed_mid_way_resumes_to_the_uninterrupted_result(deployed: Deployed) -> None:
    # Setup: the same config submitted with `fedsynth run --federation`; once round 1 is checkpointed, the
    # ServerApp process is killed (SIGKILL: nothing is recorded) and `flwr run` is stopped
    env, cut = deployed.fed.env, deployed.out / "cut"
    log = deployed.tmp / "cut-run.log"
    run = processes.start([FEDSYNTH, "run", str(deployed.config), "--federation", "lab", "--out", str(deployed.out),
                           "--set", "output.run_id=cut"], log_path=log, env=env, cwd=ROOT)
    deployed.started.insert(0, run)
    from fedsynth.experiments.run_writer import checkpoint_step

    wait_until(lambda: checkpoint_step(cut) == 1, timeout=RUN_TIMEOUT, what="round 1 was checkpointed",
               alive=run, log=log)
    kill_serverapp(cut)
    processes.stop(run, grace=15)
    manifest = json.loads((cut / "manifest.json").read_text())
    assert manifest["status"] == "running"  # what a crash leaves: nobody recorded the end
    assert [json.loads(x)["round"] for x in (cut / "metrics.jsonl").read_text().splitlines()] == [1]
    assert not (cut / "model").exists()

    # Run: the resume, as a person would type it
    t0 = time.monotonic()
    code, output = run_bounded([FEDSYNTH, "run", str(deployed.config), "--federation", "lab", "--resume", str(cut)],
                                env=env, log=deployed.tmp / "resume-run.log", timeout=RUN_TIMEOUT,
                                started=deployed.started)
    print(f"resumed deployed run wall time: {time.monotonic() - t0:.1f} s")

    # Assert: it resumed from round 1's checkpoint and finished
    assert code == 0, output[-3000:]
    manifest = json.loads((cut / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["resumed_from_step"] == 1
    lines = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [1, 2]
    assert not (cut / "checkpoint").exists()

    # Assert: the uninterrupted result: the same snapshots byte for byte, the same weights and mixture, the same
    # scores from the sites, the same arm
    full = deployed.full
    for name in ("round-001.csv", "round-002.csv"):
        assert (cut / "snapshots" / name).read_bytes() == (full / "snapshots" / name).read_bytes(), name
    from fedsynth.generators import load_generator

    a, b = load_generator(cut / "model"), load_generator(full / "model")
    wa, wb = a.get_weights(), b.get_weights()
    assert wa.keys() == wb.keys()
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)
    full_lines = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    for got, want in zip(lines, full_lines, strict=True):
        assert (got["csf"], got["gsf"], got["nndr"]) == (want["csf"], want["gsf"], want["nndr"])
    assert (cut / "arms" / ARM / "arm.csv").read_bytes() == (full / "arms" / ARM / "arm.csv").read_bytes()
