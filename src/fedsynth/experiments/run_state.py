"""A run directory's state: its states, lock, manifest reading, identity hash, metrics log and signal handling.

What :mod:`fedsynth.experiments.run` needs to stop cleanly, refuse a second writer and decide whether a run may be
reused or resumed (see that module's docstring for the directory layout).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedsynth._io import atomic_write_text, jsonable
from fedsynth.errors import FedsynthError
from fedsynth.experiments.config import ExperimentConfig

#: The states ``manifest.json`` records.
RUN_STATES = ("running", "finished", "interrupted", "failed")

#: The run's own folders and files that a fresh start replaces (config.yaml and the lock stay).
_ARTEFACTS = ("snapshots", "metrics.jsonl", "model", "model.tmp", "arms", "report.json", "report.html", "checkpoint",
              ".private", "manifest.json", "audit")


class RunInterrupted(KeyboardInterrupt):
    """A signal (SIGINT, SIGTERM) stopped the run; ``exit_code`` is the shell's ``128 + signal``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


# -- the run directory's lock and state ----------------------------------------------------------------------


class RunLock:
    """An exclusive ``fcntl.flock`` on ``<run_dir>/.lock`` for as long as a process writes the directory.

    The lock dies with its process (even after SIGKILL), so a ``running`` manifest in an unlocked directory
    means the writer is gone.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`FedsynthError` naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise FedsynthError(
                f"The run directory {self.path.parent} is being written by another fedsynth process (pid {holder}); "
                "wait for it to finish, stop it, or choose another output.run_id."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def held_elsewhere(self) -> bool:
        """Whether another process holds the lock now (probed without keeping it)."""
        if not self.path.is_file():
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the probe's lock
        return False


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    try:
        out = json.loads((Path(run_dir) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None


def run_state(run_dir: str | Path) -> str:
    """The state of a run directory as a person should read it: ``missing``, ``finished``, ``running``,
    ``interrupted``, ``failed``, or ``interrupted (process gone)`` for a ``running`` manifest nobody holds."""
    manifest = read_manifest(Path(run_dir))
    if manifest is None:
        return "missing"
    status = str(manifest.get("status", "missing"))
    if status == "running" and not RunLock(Path(run_dir)).held_elsewhere():
        return "interrupted (process gone)"
    return status


# -- what a run is: its hash ---------------------------------------------------------------------------------


def run_identity(config: ExperimentConfig, fingerprint: str) -> dict[str, Any]:
    """What makes two runs the same run: the resolved config (without where it is written), the data's
    fingerprint and fedsynth's version."""
    import fedsynth

    resolved = {k: v for k, v in config.to_yaml_dict().items() if k != "output"}
    return {"config": resolved, "data_fingerprint": fingerprint, "fedsynth": str(fedsynth.__version__)}


def run_hash(identity: Mapping[str, Any]) -> str:
    """sha256 of :func:`run_identity` as canonical JSON."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def identity_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """What differs between two run identities, one line per changed setting (settings only, never data)."""
    if not old:
        return ["the earlier run recorded no identity"]
    out = []
    if old.get("data_fingerprint") != new.get("data_fingerprint"):
        out.append("the data changed (another fingerprint)")
    if old.get("fedsynth") != new.get("fedsynth"):
        out.append(f"fedsynth version {old.get('fedsynth')} -> {new.get('fedsynth')}")
    a, b = _flat(old.get("config", {})), _flat(new.get("config", {}))
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            out.append(f"{key}: {a.get(key, '<unset>')} -> {b.get(key, '<unset>')}")
    return out


def _flat(obj: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(obj, Mapping) and obj:
        out: dict[str, str] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: json.dumps(obj, sort_keys=True, default=str)}


class _MetricsLog:
    """metrics.jsonl, rewritten atomically with every new line (a killed run keeps every finished line)."""

    def __init__(self, path: Path, lines: Sequence[str] = ()) -> None:
        self.path = path
        self.lines: list[str] = list(lines)

    def append(self, record: Mapping[str, Any]) -> None:
        self.lines.append(json.dumps(jsonable(record), default=str))
        atomic_write_text(self.path, "\n".join(self.lines) + "\n")


def _install_signal_handlers(stop: threading.Event) -> dict[int, Any]:
    """SIGINT and SIGTERM set ``stop`` and raise :class:`RunInterrupted` once (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():  # already stopping: the first signal's clean-up runs
            return
        stop.set()
        raise RunInterrupted(signum)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[int(sig)] = signal.getsignal(sig)
        signal.signal(sig, handler)
    return previous


def _restore_signal_handlers(previous: Mapping[int, Any]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)
