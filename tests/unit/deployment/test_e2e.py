"""A real deployment on loopback: a SuperLink and three SuperNodes as separate processes, TLS and node
authentication on, each node reading only its own site file (and its own holdout); a two-step BN run submitted
with ``flwr run`` writes the full run directory on the coordinator, its snapshot scored at the sites.

Slow (about 2-3 minutes on 2 cores): run with ``pytest -m slow tests/unit/deployment/test_e2e.py``. Every
process it starts is stopped (with its process group) at the end, pass or fail.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from fedsynth.deployment import processes

pytestmark = pytest.mark.slow

SITES = ("A", "B", "C")
FEDSYNTH = processes.executable("fedsynth")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FEDSYNTH, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def _wait_for_port(port: int, timeout: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listened on port {port} within {timeout:.0f}s")


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes this test starts; all stopped at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        processes.stop(p, grace=15)


@dataclass
class Federation:
    """A running loopback federation: its environment, SuperLink address, credentials, site files, processes."""

    env: dict[str, str]
    address: str
    creds: Path
    schema: Path
    site_files: dict[str, Path]
    nodes: dict[str, subprocess.Popen[bytes]]


def _federation(data_dir: Path, tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> Federation:
    """Partition the cohort into three site files, make credentials, start a SuperLink (TLS, node
    authentication), register the three sites and start their SuperNodes."""
    # Setup: Flower's configuration in a private folder; three site files and a schema
    env = processes.child_env({"FLWR_HOME": str(tmp_path / "flwr"), "FEDSYNTH_DATA_DIR": str(data_dir),
                               "PYTHONPATH": os.pathsep.join(sys.path)})
    done = _cli("partition", "--cohort", "mds-iwgpm", "--sites", "60,30,10", "--seed", "0",
                "--out", str(tmp_path / "sites"), env=env)
    assert done.returncode == 0, done.stderr
    done = _cli("describe", "--cohort", "mds-iwgpm", "--schema-out", str(tmp_path / "schema.yaml"), env=env)
    assert done.returncode == 0, done.stderr
    site_files = {}
    # each site keeps its own folder: its data, its own holdout (a share of the partition's holdout, rows that
    # train nothing; found beside the data as rows.holdout.csv) and its audit log
    holdout = pd.read_csv(tmp_path / "sites" / "holdout.csv")
    shares = [holdout.iloc[i::len(SITES)] for i in range(len(SITES))]
    for i, name in enumerate(SITES, 1):
        folder = tmp_path / f"hospital-{name}"
        folder.mkdir()
        site_files[name] = folder / "rows.csv"
        (tmp_path / "sites" / f"site-{i}.csv").rename(site_files[name])
        shares[i - 1].to_csv(folder / "rows.holdout.csv", index=False)
    creds = tmp_path / "creds"
    done = _cli("credentials", "--out", str(creds), "--sites", "A,B,C,D", env=env)
    assert done.returncode == 0, done.stderr

    # Run: the coordinator
    port = _free_port()
    link_log = tmp_path / "superlink.log"
    started.append(processes.start([FEDSYNTH, "server", "start", "--host", "127.0.0.1",
                                    "--port", str(port), "--credentials", str(creds)], log_path=link_log, env=env,
                                   cwd=tmp_path))
    _wait_for_port(port, 60)
    address = f"127.0.0.1:{port}"
    for name in SITES:
        done = _cli("site", "register", name, str(creds / "nodes" / f"{name}.pub"), "--superlink", address,
                    "--root-cert", str(creds / "ca.pem"), "--federation", "lab", env=env)
        assert done.returncode == 0, done.stdout + done.stderr

    # Run: the hospitals, each with its own file, key and port
    nodes: dict[str, subprocess.Popen[bytes]] = {}
    for i, name in enumerate(SITES, 1):
        nodes[name] = processes.start(
            [FEDSYNTH, "site", "start", "--superlink", address,
             "--data", str(site_files[name]), "--schema", str(tmp_path / "schema.yaml"), "--name", name,
             "--root-cert", str(creds / "ca.pem"), "--key", str(creds / "nodes" / name), "--seed", str(i),
             "--port", str(_free_port())],
            log_path=tmp_path / f"site-{name}.log", env=env, cwd=tmp_path)
        started.append(nodes[name])
    return Federation(env, address, creds, tmp_path / "schema.yaml", site_files, nodes)



def test_deployed_two_step_bn_over_tls_with_node_auth(
    data_dir: Path, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    # Setup: a SuperLink and three SuperNodes, each site with its own file
    fed = _federation(data_dir, tmp_path, started)
    env, address, creds, site_files = fed.env, fed.address, fed.creds, fed.site_files

    # Run: a fourth node whose key was never registered is refused, with a message that says what to do
    intruder = _cli("site", "start", "--superlink", address, "--data", str(site_files["A"]),
                    "--schema", str(tmp_path / "schema.yaml"), "--name", "D", "--root-cert", str(creds / "ca.pem"),
                    "--key", str(creds / "nodes" / "D"), "--port", str(_free_port()), env=env, timeout=120)
    # and a node that trusts another CA is refused before it starts
    other = tmp_path / "other"
    assert _cli("credentials", "--out", str(other), "--sites", "X", env=env).returncode == 0
    wrong_ca = _cli("site", "start", "--superlink", address, "--data", str(site_files["A"]),
                    "--schema", str(tmp_path / "schema.yaml"), "--name", "A", "--root-cert", str(other / "ca.pem"),
                    "--key", str(creds / "nodes" / "A"), "--port", str(_free_port()), env=env)

    # Run: the experiment, submitted with flwr run
    t0 = time.monotonic()
    run = _cli("run", "configs/smoke.yaml", "--federation", "lab", "--out", str(tmp_path / "reports"),
               "--set", "output.run_id=deployed", env=env, timeout=900)
    wall = time.monotonic() - t0

    # Assert: the run finished and wrote the full run directory where it said, on the coordinator's machine
    run_dir = tmp_path / "reports" / "deployed"
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"Run directory (on this machine, the coordinator's): {run_dir}" in " ".join(run.stdout.split())
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
                             generator_params={"max_indegree": 2}, min_sites=2, random_state=0)
    reference = run_in_process(strategy, frames, schema, seeds=[1, 2, 3])
    deployed = load_generator(run_dir / "model")
    assert sorted(deployed.model_.edges()) == sorted(reference.generator.model_.edges())
    for cpd in reference.generator.model_.get_cpds():
        np.testing.assert_allclose(deployed.model_.get_cpds(cpd.variable).values, cpd.values)
    write_csv(reference.generator.sample(500, random_state=0 + 1), tmp_path / "reference.csv", schema)
    assert (run_dir / "snapshots" / "round-001.csv").read_bytes() == (tmp_path / "reference.csv").read_bytes()

    # Assert: the coordinator's copy of the audit names, per site, every reply it received
    for name in SITES:
        copy = [json.loads(line) for line in (run_dir / "audit" / f"{name}.jsonl").read_text().splitlines()]
        assert {e["message_type"] for e in copy} == {"query.hello", "query.summary", "query.counts",
                                                     "evaluate.snapshot"}

    # Assert: the intruder and the wrong CA were refused with messages a person can act on
    assert intruder.returncode == 2, intruder.stdout + intruder.stderr
    assert "refused site D" in intruder.stderr and "fedsynth site register D" in intruder.stderr
    assert wrong_ca.returncode == 2 and "certificate was rejected" in wrong_ca.stderr

    # Assert: every site's audit log exists beside its data, covers the run, and holds no value of its rows
    for name in SITES:
        log = site_files[name].with_name("rows.audit.jsonl")
        text = log.read_text()
        entries = [json.loads(line) for line in text.splitlines()]
        assert {e["message_type"] for e in entries} == {"query.hello", "query.summary", "query.counts",
                                                        "evaluate.snapshot"}
        assert all(e["site"] == name for e in entries)
        ids = pd.read_csv(site_files[name], usecols=["ID"])["ID"].astype(str)
        assert not any(i in text for i in ids)
        summary = _cli("site", "audit", str(log), "--format", "json", env=env)
        assert summary.returncode == 0 and json.loads(summary.stdout)["replies"] == len(entries)


def test_a_site_killed_mid_run_is_left_out_and_reported(
    data_dir: Path, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    # Setup: the same federation; requests time out after 120 s (a loaded 2-core machine answers a hello in ~50 s)
    fed = _federation(data_dir, tmp_path, started)
    run = processes.start([FEDSYNTH, "run", "configs/smoke.yaml", "--federation", "lab", "--out",
                           str(tmp_path / "reports"), "--set", "output.run_id=dropped",
                           "--set", "strategy.params.request_timeout=120"],
                          log_path=tmp_path / "run.log", env=fed.env, cwd=Path.cwd())
    started.insert(0, run)  # stopped first, whatever happens

    # Run: once site C has sent its domain summary, its SuperNode is killed
    log_c = fed.site_files["C"].with_name("rows.audit.jsonl")
    t0 = time.monotonic()
    while not (log_c.is_file() and "query.summary" in log_c.read_text()):
        assert time.monotonic() - t0 < 300, "site C never answered the summary request"
        assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        time.sleep(0.5)
    processes.stop(fed.nodes["C"], grace=15)
    code = run.wait(timeout=1200)

    # Assert: the run finished with A and B, and says C was left out, and of which request
    output = (tmp_path / "run.log").read_text()
    assert code == 0, output[-3000:]
    manifest = json.loads((tmp_path / "reports" / "dropped" / "manifest.json").read_text())
    # (C may die before or after its summary reply left: the audit line is written just before sending)
    # (a site may also refuse count tables that would isolate patients: not a drop of the site)
    silent = [d for d in manifest["dropped"] if not d["reason"].startswith("DisclosureRefused")]
    assert manifest["status"] == "finished" and {d["site"] for d in silent} == {"C"}, manifest["dropped"]
    assert all(d["round"] == "summary" or d["round"].startswith(("counts-", "score-")) for d in silent)
    assert set(manifest["dropped_by_round"]) == {d["round"] for d in manifest["dropped"]}
    assert "C" not in json.loads((tmp_path / "reports" / "dropped" / "metrics.jsonl").read_text()
                                 .splitlines()[0])["scores"]["scored_at_sites"]
    assert (tmp_path / "reports" / "dropped" / "model" / "generator.json").is_file()
    assert "left out: site C" in " ".join(output.split())
    entries = [json.loads(line) for line in log_c.read_text().splitlines()]
    assert {e["message_type"] for e in entries} <= {"query.hello", "query.summary", "query.counts", "evaluate.snapshot"}
