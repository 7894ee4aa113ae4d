"""A whole deployment on one machine over loopback: a SuperLink and one SuperNode per site as separate processes on
127.0.0.1, started with fedsynth's own commands (``credentials``, ``server start``, ``site register``,
``site start``), TLS and node authentication on, each node reading only its own folder.

What the README's "Trying it on one machine" does by hand in five terminals, as functions: the slow end-to-end
tests (``tests/unit/deployment``) and ``benchmarks/bench_deployment.py`` set up their federations with them. Every
process started is appended to the caller's list, which the caller stops (:func:`fedsynth.deployment.processes.stop`)
whatever happens; every wait is bounded.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fedsynth.cohort.partition import site_holdout_file
from fedsynth.deployment import processes
from fedsynth.errors import FedsynthError


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float) -> None:
    """Wait until something listens on 127.0.0.1:``port``; :class:`TimeoutError` after ``timeout`` seconds."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listened on port {port} within {timeout:.0f}s")


def cli(*args: str, env: Mapping[str, str], timeout: float = 300,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``fedsynth ARGS`` in a child process, waiting at most ``timeout`` seconds (its exit code is not checked)."""
    return subprocess.run([processes.executable("fedsynth"), *args], capture_output=True, text=True, env=dict(env),
                          timeout=timeout, check=False, cwd=cwd)


def _checked(*args: str, env: Mapping[str, str], timeout: float = 300) -> None:
    done = cli(*args, env=env, timeout=timeout)
    if done.returncode != 0:
        raise FedsynthError(f"fedsynth {' '.join(args[:3])} failed (exit {done.returncode}): "
                            f"{done.stdout[-2000:]} {done.stderr[-2000:]}")


def loopback_env(work: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every process of a loopback federation: Flower's configuration in ``work/flwr`` (never
    the user's ``~/.flwr``), this interpreter's import path, and ``extra``."""
    return processes.child_env({"FLWR_HOME": str(work / "flwr"), "PYTHONPATH": os.pathsep.join(sys.path),
                                **dict(extra or {})})


def site_folders(parts: Path, work: Path, sites: Sequence[str], *, holdouts: bool = True) -> dict[str, Path]:
    """Give each site a folder of its own, ``work/hospital-<site>/``, holding ``rows.csv`` (the ``i``-th site file
    ``fedsynth partition`` wrote into ``parts``) and, with ``holdouts``, ``rows.holdout.csv`` beside it (that
    site's share of the holdout, which ``site start`` finds there); the files are moved. Returns each site's
    ``rows.csv``."""
    files: dict[str, Path] = {}
    for i, name in enumerate(sites, 1):
        folder = work / f"hospital-{name}"
        folder.mkdir(parents=True, exist_ok=True)
        files[name] = folder / "rows.csv"
        (parts / f"site-{i}.csv").replace(files[name])
        if holdouts:
            (parts / site_holdout_file(f"site-{i}")).replace(folder / "rows.holdout.csv")
    return files


@dataclass
class LoopbackFederation:
    """A running loopback federation."""

    #: The environment its processes run with.
    env: dict[str, str]
    #: The SuperLink's address, ``127.0.0.1:PORT``.
    address: str
    #: The credentials folder (``fedsynth credentials``): ``ca.pem``, ``nodes/<site>`` ...
    creds: Path
    #: The Flower connection the sites were registered under (what ``fedsynth run --federation`` takes).
    connection: str
    #: Each site's SuperNode (``fedsynth site start``) process, by site name.
    nodes: dict[str, subprocess.Popen[bytes]]


def start_loopback(
    work: Path,
    site_files: Mapping[str, Path],
    schema: Path,
    *,
    env: Mapping[str, str],
    started: list[subprocess.Popen[bytes]],
    seeds: Mapping[str, int],
    connection: str = "lab",
    unregistered: Sequence[str] = (),
    site_env: Mapping[str, str] | None = None,
    port_timeout: float = 90,
) -> LoopbackFederation:
    """Make credentials, start a SuperLink, register the sites and start one SuperNode per site.

    Parameters
    ----------
    work : Path
        The coordinator's folder (credentials in ``work/creds``, the SuperLink's log in ``work/superlink.log``,
        each site's in ``work/site-<name>.log``).
    site_files : mapping of str to Path
        Each site's data file (its holdout, audit log and state are found or kept beside it).
    schema : Path
        The federation's schema YAML.
    env : mapping
        The processes' environment (:func:`loopback_env`).
    started : list
        Every process started is appended to it; the caller stops them.
    seeds : mapping of str to int
        Each site's seed (``site start --seed``).
    connection : str
        The Flower connection the sites are registered under.
    unregistered : sequence of str
        Sites whose key pair is made but never registered (a node the SuperLink must refuse).
    site_env : mapping, optional
        Extra environment of the SuperNodes only (e.g. one CPU thread each).
    port_timeout : float
        Seconds the SuperLink has to listen.

    Raises
    ------
    FedsynthError
        A command failed; :class:`TimeoutError` when the SuperLink did not listen in time.
    """
    env = dict(env)
    fedsynth = processes.executable("fedsynth")
    creds = work / "creds"
    _checked("credentials", "--out", str(creds), "--sites", ",".join([*site_files, *unregistered]), env=env)
    port = free_port()
    started.append(processes.start([fedsynth, "server", "start", "--host", "127.0.0.1", "--port", str(port),
                                    "--credentials", str(creds)], log_path=work / "superlink.log", env=env, cwd=work))
    wait_for_port(port, port_timeout)
    address = f"127.0.0.1:{port}"
    for name in site_files:
        _checked("site", "register", name, str(creds / "nodes" / f"{name}.pub"), "--superlink", address,
                 "--root-cert", str(creds / "ca.pem"), "--federation", connection, env=env)
    nodes: dict[str, subprocess.Popen[bytes]] = {}
    for name, data in site_files.items():
        nodes[name] = processes.start(
            [fedsynth, "site", "start", "--superlink", address, "--data", str(data), "--schema", str(schema),
             "--name", name, "--root-cert", str(creds / "ca.pem"), "--key", str(creds / "nodes" / name),
             "--seed", str(seeds[name]), "--port", str(free_port())],
            log_path=work / f"site-{name}.log", env={**env, **dict(site_env or {})}, cwd=work)
        started.append(nodes[name])
    return LoopbackFederation(env, address, creds, connection, nodes)
