"""A real deployment on loopback for the slow end-to-end tests: a SuperLink and three SuperNodes started with
fedsynth's own commands as separate processes on 127.0.0.1 (free ports), TLS and node authentication on, each
node reading only its own site file and its own holdout.

Every process is started through the ``started`` fixture's list (tests/unit/deployment/conftest.py), which
stops them all, with their process groups, at the end of the test, pass or fail; every command waits a bounded
time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fedsynth.deployment import loopback, processes

SITES = ("A", "B", "C")
FEDSYNTH = processes.executable("fedsynth")
FLWR = processes.executable("flwr")
ROOT = Path(__file__).resolve().parents[3]


def cli(*args: str, env: dict[str, str], timeout: float = 120, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``fedsynth ARGS`` in a child process (in the repository's root, where ``configs/`` is), waiting at most
    ``timeout`` seconds."""
    return loopback.cli(*args, env=env, timeout=timeout, cwd=cwd)


def wait_until(check: Callable[[], bool], *, timeout: float, what: str,
               alive: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
    """Poll ``check`` every 0.2 s until it holds; fail after ``timeout`` s, or as soon as ``alive`` has ended."""
    t0 = time.monotonic()
    while not check():
        if alive is not None and alive.poll() is not None:
            tail = log.read_text()[-3000:] if log is not None and log.is_file() else ""
            raise AssertionError(f"the process ended (exit {alive.returncode}) before {what}\n{tail}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.2)


def run_bounded(cmd: list[str], *, env: dict[str, str], log: Path, timeout: float,
                started: list[subprocess.Popen[bytes]], cwd: Path = ROOT) -> tuple[int, str]:
    """Run ``cmd`` in its own process group (``flwr run`` and what it starts included) for at most ``timeout``
    seconds; its exit code and output. On timeout the group is stopped and the test fails with the output's tail."""
    proc = processes.start(cmd, log_path=log, env=env, cwd=cwd)
    started.insert(0, proc)  # stopped first at the end, whatever happens
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        processes.stop(proc, grace=15)
        raise AssertionError(f"{' '.join(cmd[1:3])} ... did not end within {timeout:.0f}s:\n"
                             f"{log.read_text()[-3000:]}") from None
    return code, log.read_text()


@dataclass
class Federation:
    """A running loopback federation: its environment, SuperLink address, credentials, site files, processes."""

    env: dict[str, str]
    address: str
    creds: Path
    schema: Path
    site_files: dict[str, Path]
    nodes: dict[str, subprocess.Popen[bytes]]


def federation(data_dir: Path, tmp_path: Path, started: list[subprocess.Popen[bytes]], *,
               plant: Callable[[dict[str, Path]], None] | None = None,
               extra_env: Mapping[str, str] | None = None) -> Federation:
    """Partition the cohort into three site files, each with its own share of the holdout beside it, make
    credentials (a fourth site D's key is made and never registered), start a SuperLink (TLS, node authentication),
    register the three sites under the connection ``lab`` and start their SuperNodes
    (:func:`fedsynth.deployment.loopback.start_loopback`).

    ``plant(site_files)`` may change the site files before any node reads them; ``extra_env`` is added to every
    process's environment (the SuperLink's ServerApps inherit it).
    """
    # Setup: Flower's configuration in a private folder; three site folders (rows and holdout) and a schema
    env = loopback.loopback_env(tmp_path, {"FEDSYNTH_DATA_DIR": str(data_dir), **dict(extra_env or {})})
    done = cli("partition", "--cohort", "mds-iwgpm", "--sites", "60,30,10", "--seed", "0",
               "--out", str(tmp_path / "sites"), env=env)
    assert done.returncode == 0, done.stderr
    done = cli("describe", "--cohort", "mds-iwgpm", "--schema-out", str(tmp_path / "schema.yaml"), env=env)
    assert done.returncode == 0, done.stderr
    site_files = loopback.site_folders(tmp_path / "sites", tmp_path, SITES)
    if plant is not None:
        plant(site_files)

    # Run: the coordinator and the hospitals, each with its own folder, key and port
    fed = loopback.start_loopback(tmp_path, site_files, tmp_path / "schema.yaml", env=env, started=started,
                                  seeds={name: i for i, name in enumerate(SITES, 1)}, connection="lab",
                                  unregistered=["D"], port_timeout=60)
    return Federation(fed.env, fed.address, fed.creds, tmp_path / "schema.yaml", site_files, fed.nodes)


# -- a ServerApp that keeps what the coordinator receives ------------------------------------------------------

#: The environment variable naming the folder where :mod:`recording_serverapp` keeps every reply it receives.
RECEIVED_ENV = "FEDSYNTH_TEST_RECEIVED_DIR"


def recording_app(folder: Path) -> Path:
    """A Flower app folder identical to the one fedsynth ships, except that its ServerApp is fedsynth's deployed
    ServerApp behind a grid that also writes every reply it receives (Flower's own protobuf bytes) to
    ``$FEDSYNTH_TEST_RECEIVED_DIR`` (:mod:`recording_serverapp`)."""
    from fedsynth.deployment.flower_config import app_dir

    shipped = app_dir()
    folder.mkdir(parents=True, exist_ok=True)
    text = (shipped / "pyproject.toml").read_text()
    line = 'serverapp = "fedsynth.experiments.deployed:app"'
    assert line in text, "the shipped app no longer names fedsynth's ServerApp this way"
    (folder / "pyproject.toml").write_text(text.replace(line, 'serverapp = "recording_serverapp:app"'))
    shutil.copy(shipped / "LICENSE", folder / "LICENSE")
    shutil.copy(Path(__file__).with_name("recording_serverapp.py"), folder / "recording_serverapp.py")
    return folder


def submit_with_flwr(app: Path, settings: Mapping[str, object], *, env: dict[str, str], tmp_path: Path,
                     timeout: float) -> subprocess.CompletedProcess[str]:
    """``flwr run APP lab --run-config ... --stream`` with the run config ``fedsynth run --federation`` writes."""
    from fedsynth.deployment.flower_config import write_run_config

    rc = write_run_config(tmp_path / "recorded-run-config.toml", settings)
    return subprocess.run([FLWR, "run", str(app), "lab", "--run-config", str(rc), "--stream"], capture_output=True,
                          text=True, env=env, timeout=timeout, check=False)


def received_messages(folder: Path) -> list[object]:
    """The replies :mod:`recording_serverapp` kept, as Flower ``Message`` objects."""
    from flwr.common.serde import message_from_proto
    from flwr.proto.message_pb2 import Message as ProtoMessage

    out = []
    for path in sorted(folder.glob("*.pb")):
        proto = ProtoMessage()
        proto.ParseFromString(path.read_bytes())
        out.append(message_from_proto(proto))
    return out


def kill_serverapp(run_dir: Path) -> int:
    """SIGKILL the ServerApp process writing ``run_dir`` (its pid is in the running manifest): the coordinator's
    run dies as it would in a crash, with no chance to record anything."""
    pid = int(json.loads((run_dir / "manifest.json").read_text())["pid"])
    os.kill(pid, signal.SIGKILL)
    return pid
