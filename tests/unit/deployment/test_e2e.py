"""A real deployment on loopback: a SuperLink and three SuperNodes as separate processes, TLS and node
authentication on, each node reading only its own site file (and its own holdout); a two-step BN run submitted
with ``flwr run`` writes the full run directory on the coordinator, its snapshot scored at the sites.

The deployed network equals the one the same strategy learns in process on the same files and the one the same
config learns on Flower's simulation engine; a fourth, unregistered node and a node trusting another CA are
refused. Shared set-up: ``_loopback.py``.

Slow (several minutes on 2 loaded cores): run with ``pytest -m slow tests/unit/deployment/test_e2e.py``. Every
process it starts is stopped (with its process group) at the end, pass or fail.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from fedsynth.deployment import processes
from fedsynth.deployment.loopback import free_port

from ._loopback import FEDSYNTH, ROOT, SITES, federation, run_bounded
from ._loopback import cli as _cli

pytestmark = pytest.mark.slow

#: Bound of one deployed or simulated run on a loaded 2-core machine (seconds; a bound, not a timing check).
RUN_TIMEOUT = 3000


#: The replies a site sends in a deployed two-step BN run, with secure aggregation on (a deployment's default):
#: the sites' budget question (what each has left: two numbers), the hello, the domain's labels, secure
#: aggregation's rounds (the domain's histograms and the count tables go only as masked vectors; no clear summary or
#: count table), and the snapshot's scores.
DEPLOYED_BN_REPLIES = {"query.privacy_budget", "query.hello", "query.secure_labels", "query.secagg_setup",
                       "query.secagg_share_keys", "query.secagg_collect", "query.secagg_unmask", "evaluate.snapshot"}


def test_deployed_two_step_bn_over_tls_with_node_auth(
    data_dir: Path, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    # Setup: a SuperLink and three SuperNodes, each site with its own file
    fed = federation(data_dir, tmp_path, started)
    env, address, creds, site_files = fed.env, fed.address, fed.creds, fed.site_files

    # Run: a fourth node whose key was never registered is refused, with a message that says what to do
    intruder = _cli("site", "start", "--superlink", address, "--data", str(site_files["A"]),
                    "--schema", str(tmp_path / "schema.yaml"), "--name", "D", "--root-cert", str(creds / "ca.pem"),
                    "--key", str(creds / "nodes" / "D"), "--port", str(free_port()), env=env, timeout=300)
    # and a node that trusts another CA is refused before it starts
    other = tmp_path / "other"
    assert _cli("credentials", "--out", str(other), "--sites", "X", env=env).returncode == 0
    wrong_ca = _cli("site", "start", "--superlink", address, "--data", str(site_files["A"]),
                    "--schema", str(tmp_path / "schema.yaml"), "--name", "A", "--root-cert", str(other / "ca.pem"),
                    "--key", str(creds / "nodes" / "A"), "--port", str(free_port()), env=env)

    # Run: the experiment, submitted with flwr run
    t0 = time.monotonic()
    code, output = run_bounded([FEDSYNTH, "run", "configs/smoke.yaml", "--federation", "lab", "--out",
                                str(tmp_path / "reports"), "--set", "output.run_id=deployed"], env=env,
                               log=tmp_path / "run.log", timeout=RUN_TIMEOUT, started=started)
    wall = time.monotonic() - t0

    # Assert: the run finished and wrote the full run directory where it said, on the coordinator's machine
    run_dir = tmp_path / "reports" / "deployed"
    assert code == 0, output[-3000:]
    assert f"Run directory (on this machine, the coordinator's): {run_dir}" in " ".join(output.split())
    # the progress the user followed, from the ServerApp's log: each request as it completed, the scored round
    progress = [line for line in output.splitlines() if line.startswith("fedsynth | ")]
    assert progress[0] == f"fedsynth | run deployed: two_step_bn x bayesian_network, 1 round; run directory (on the coordinator): {run_dir}"
    assert any(line.startswith("fedsynth | round 1/1 scored: CSF ") and "(at 3 sites)" in line for line in progress)
    assert any("(query.hello" in line and ": 3 of 3 sites answered in " in line for line in progress)
    for name in ("config.yaml", "manifest.json", "metrics.jsonl", "snapshots/round-001.csv", "model/generator.json",
                 "report.json", "report.html", *(f"audit/{site}.jsonl" for site in SITES)):
        assert (run_dir / name).is_file(), name
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["engine"] == "deployment"
    assert [s["name"] for s in manifest["sites"]] == list(SITES)
    # every site answered every request; a small site may refuse count tables that would isolate patients
    assert all(d["reason"].startswith("DisclosureRefused") for d in manifest["dropped"])
    print(f"deployed two-step BN wall time: {wall:.1f} s; timings: {manifest['timings']}")

    # Assert: the round was scored at the three sites, each against its own rows and holdout
    line = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    at_sites = line["scores"]["scored_at_sites"]
    assert sorted(at_sites) == list(SITES) and all(v["holdout_rows"] > 0 for v in at_sites.values())
    assert line["csf"] is not None and line["scores"]["mia_auc"] is not None
    assert "Scores computed at the sites" in (run_dir / "report.html").read_text()

    # Assert: the deployed network and its CPDs equal the ones the same strategy learns in process on the same
    # files, and the snapshot is the rows that network samples at the run's seed
    import numpy as np

    from fedsynth.cohort.io import write_csv
    from fedsynth.cohort.schema import TableSchema
    from fedsynth.federation.simulation import run_in_process
    from fedsynth.generators import load_generator
    from fedsynth.strategies.registry import make_strategy

    schema = TableSchema.from_yaml(tmp_path / "schema.yaml")
    frames = []
    for name in SITES:
        raw = pd.read_csv(site_files[name])
        present = [c for c in schema.model_columns if c in raw.columns]
        frames.append((name, schema.select(present).coerce(raw[present])))
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network",
                             generator_params={"max_indegree": 2}, min_sites=2, random_state=0,
                             # as deployed (its default): in clear, small sites refuse tables that would isolate
                             # patients, and the network learnt from what is left differs
                             params={"secure_aggregation": True})
    reference = run_in_process(strategy, frames, schema, seeds=[1, 2, 3])
    deployed = load_generator(run_dir / "model")
    assert sorted(deployed.model_.edges()) == sorted(reference.generator.model_.edges())
    for cpd in reference.generator.model_.get_cpds():
        np.testing.assert_allclose(deployed.model_.get_cpds(cpd.variable).values, cpd.values)
    write_csv(reference.generator.sample(500, random_state=0 + 1), tmp_path / "reference.csv", schema)
    assert (run_dir / "snapshots" / "round-001.csv").read_bytes() == (tmp_path / "reference.csv").read_bytes()

    # Assert: ... and the ones the same config learns on Flower's simulation engine at the same seed (its
    # partition is the one the sites' files were cut from), with secure aggregation on as in a deployment
    code, output = run_bounded([FEDSYNTH, "run", "configs/smoke.yaml", "--out", str(tmp_path / "sim"),
                                "--set", "output.run_id=sim", "--set", "strategy.engine=simulation",
                                "--set", "strategy.params.secure_aggregation=true",
                                "--set", "evaluation.references=[]", "--set", "evaluation.final=none"],
                               env=env, log=tmp_path / "sim.log", timeout=RUN_TIMEOUT, started=started)
    assert code == 0, output[-3000:]
    sim_dir = tmp_path / "sim" / "sim"
    assert json.loads((sim_dir / "manifest.json").read_text())["strategy"]["engine"] == "simulation"
    sim = load_generator(sim_dir / "model")
    assert sorted(deployed.model_.edges()) == sorted(sim.model_.edges())
    for cpd in sim.model_.get_cpds():
        np.testing.assert_allclose(deployed.model_.get_cpds(cpd.variable).values, cpd.values)
    assert (run_dir / "snapshots" / "round-001.csv").read_bytes() == (sim_dir / "snapshots" / "round-001.csv").read_bytes()

    # Assert: the coordinator's copy of the audit names, per site, every reply it received
    for name in SITES:
        copy = [json.loads(line) for line in (run_dir / "audit" / f"{name}.jsonl").read_text().splitlines()]
        assert {e["message_type"] for e in copy} == DEPLOYED_BN_REPLIES

    # Assert: the intruder and the wrong CA were refused with messages a person can act on
    assert intruder.returncode == 2, intruder.stdout + intruder.stderr
    assert "refused site D" in intruder.stderr and "fedsynth site register D" in intruder.stderr
    assert wrong_ca.returncode == 2 and "certificate was rejected" in wrong_ca.stderr

    # Assert: every site's audit log exists beside its data, covers the run, and holds no value of its rows
    for name in SITES:
        log = site_files[name].with_name("rows.audit.jsonl")
        text = log.read_text()
        entries = [json.loads(line) for line in text.splitlines()]
        assert {e["message_type"] for e in entries} == DEPLOYED_BN_REPLIES
        assert all(e["site"] == name for e in entries)
        ids = pd.read_csv(site_files[name], usecols=["ID"])["ID"].astype(str)
        assert not any(i in text for i in ids)
        summary = _cli("site", "audit", str(log), "--format", "json", env=env)
        assert summary.returncode == 0 and json.loads(summary.stdout)["replies"] == len(entries)


def test_a_site_killed_mid_run_is_left_out_and_reported(
    data_dir: Path, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    # Setup: the same federation; requests time out after 120 s (a loaded 2-core machine answers a hello in ~50 s)
    fed = federation(data_dir, tmp_path, started)
    run = processes.start([FEDSYNTH, "run", "configs/smoke.yaml", "--federation", "lab", "--out",
                           str(tmp_path / "reports"), "--set", "output.run_id=dropped",
                           "--set", "strategy.params.request_timeout=120"],
                          log_path=tmp_path / "run.log", env=fed.env, cwd=ROOT)
    started.insert(0, run)  # stopped first, whatever happens

    # Run: once site C has answered the domain's first request (its labels, under secure aggregation), its SuperNode
    # is killed
    log_c = fed.site_files["C"].with_name("rows.audit.jsonl")
    t0 = time.monotonic()
    while not (log_c.is_file() and "query.secure_labels" in log_c.read_text()):
        assert time.monotonic() - t0 < 900, "site C never answered the domain's labels request"
        assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        time.sleep(0.5)
    processes.stop(fed.nodes["C"], grace=15)
    code = run.wait(timeout=RUN_TIMEOUT)

    # Assert: the run finished with A and B, and says C was left out, and of which request
    output = (tmp_path / "run.log").read_text()
    assert code == 0, output[-3000:]
    manifest = json.loads((tmp_path / "reports" / "dropped" / "manifest.json").read_text())
    # (C may die before or after a reply left: the audit line is written just before sending)
    # (a site may also refuse count tables that would isolate patients: not a drop of the site)
    silent = [d for d in manifest["dropped"] if not d["reason"].startswith("DisclosureRefused")]
    assert manifest["status"] == "finished" and {d["site"] for d in silent} == {"C"}, manifest["dropped"]
    assert all(isinstance(d["round"], str) and d["round"] for d in silent)  # each drop names its request
    assert set(manifest["dropped_by_round"]) == {d["round"] for d in manifest["dropped"]}
    assert "C" not in json.loads((tmp_path / "reports" / "dropped" / "metrics.jsonl").read_text()
                                 .splitlines()[0])["scores"]["scored_at_sites"]
    assert (tmp_path / "reports" / "dropped" / "model" / "generator.json").is_file()
    assert "left out: site C" in " ".join(output.split())
    # the user saw it as it happened: the requests C did not answer name it, in the ServerApp's progress lines
    progress = [line for line in output.splitlines() if line.startswith("fedsynth | ")]
    assert any("no reply from C" in line or "error from C" in line for line in progress), progress
    assert any(line.startswith("fedsynth | round 1/1 scored: CSF ") and "(at 2 sites)" in line for line in progress)
    entries = [json.loads(line) for line in log_c.read_text().splitlines()]
    assert {e["message_type"] for e in entries} <= DEPLOYED_BN_REPLIES
