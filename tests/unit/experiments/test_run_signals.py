"""`fedsynth run` on Flower's simulation engine, stopped as users and schedulers stop it (subprocesses).

SIGINT / SIGTERM: the run ends within 30 s, exit 130 / 143, manifest ``interrupted``, no child process left.
SIGKILL after round 2 of 4: the site rows are only in the run's private folder, the next start cleans them,
and ``--resume`` ends with the same snapshots as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SRC = Path(__file__).resolve().parents[3] / "src"
CONFIG = """\
name: sig
cohort: {name: mds-iwgpm}
sites: {proportions: [60, 30, 10]}
generator:
  name: vae_bgm
  params: {hidden_dims: [16], latent_dim: 2, n_components: 2, batch_size: 256}
strategy:
  name: fedavg
  rounds: 4
  engine: simulation
  params: {mixture_max_iter: 5}
evaluation: {snapshot_rows: 100, references: [], final: none}
seed: 0
"""


def _start(config: Path, out: Path, run_id: str, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "FLWR_TELEMETRY_ENABLED": "0"}
    cmd = [sys.executable, "-c", "from fedsynth.cli import main; main()", "run", str(config), "--out", str(out),
           "--set", f"output.run_id={run_id}", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen[bytes], timeout: float = 600) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if json.loads((run_dir / "checkpoint" / "state.json").read_text())["step"] >= step:
                return
        except (OSError, ValueError, KeyError):
            pass
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of step {step} within {timeout}s")


def _cleanup(pids: set[int]) -> None:
    for pid in _alive(pids):  # only processes this test started
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    path = tmp_path / "sig.yaml"
    path.write_text(CONFIG)
    return path


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_stop_a_simulated_run_within_30s(tmp_path, config, data_dir, signum, code) -> None:
    # Setup: a run past its first round
    proc = _start(config, tmp_path, "r", "--set", "strategy.rounds=20")
    run_dir = tmp_path / "r"
    _wait_for_step(run_dir, 1, proc)
    children = _descendants(proc.pid)

    # Run
    t0 = time.monotonic()
    proc.send_signal(signum)
    try:
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    seconds = time.monotonic() - t0
    time.sleep(2)  # let Ray's own processes finish exiting
    left = _alive(children)
    _cleanup(children)

    # Assert
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert rc == code, output
    assert seconds < 30
    assert "Traceback" not in output and "resume" in output
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["signal"] == signal.Signals(signum).name
    assert manifest["last_round"] >= 1 and manifest["checkpoint_step"] >= 1
    assert not (run_dir / ".private" / "rows").exists()
    assert not left, f"child processes still running: {sorted(left)}"


def test_sigkill_after_round_2_leaves_rows_only_in_the_private_folder_and_resume_matches(tmp_path, config, data_dir) -> None:
    # Setup: the uninterrupted reference run
    full = _start(config, tmp_path, "full")
    assert full.wait(timeout=900) == 0, full.stdout.read().decode() if full.stdout else ""
    tmp_before = {p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).iterdir()}

    # Run: the same run, killed once round 2 is checkpointed
    proc = _start(config, tmp_path, "cut")
    run_dir = tmp_path / "cut"
    _wait_for_step(run_dir, 2, proc)
    children = _descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(2)
    _cleanup(children)

    # Assert: site rows exist only under .private/rows (mode 0700 folder), nowhere else in the run or in /tmp
    from fedsynth.experiments.run_state import run_state

    assert run_state(run_dir) == "interrupted (process gone)"
    rows = sorted(p.name for p in (run_dir / ".private" / "rows").iterdir())
    assert rows and all(r.startswith("site-") for r in rows)
    assert (run_dir / ".private").stat().st_mode & 0o777 == 0o700
    outside = {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file() and ".private" not in p.parts}
    allowed_roots = ("snapshots/", "checkpoint/")
    assert {f for f in outside if not f.startswith(allowed_roots)} <= {"config.yaml", "manifest.json", "metrics.jsonl", ".lock"}
    new_tmp = {p for p in Path(os.environ.get("TMPDIR", "/tmp")).iterdir() if p.name not in tmp_before}
    assert not [p for p in new_tmp if "fedsynth" in p.name]

    # Run: resume
    resumed = _start(config, tmp_path, "cut", "--resume", str(run_dir))
    out = resumed.communicate(timeout=900)[0].decode()

    # Assert: same snapshots as the uninterrupted run; the private folder was cleaned
    assert resumed.returncode == 0, out
    assert "Resuming cut from checkpoint step" in out
    snaps = {p.name: p.read_bytes() for p in (run_dir / "snapshots").glob("*.csv")}
    ref = {p.name: p.read_bytes() for p in (tmp_path / "full" / "snapshots").glob("*.csv")}
    assert sorted(snaps) == [f"round-00{i}.csv" for i in range(1, 5)] and snaps == ref
    assert not (run_dir / ".private").exists()
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "finished"
