"""Checkpoints without pickle: a JSON document beside an ``.npz`` of named arrays, both written atomically.

Two users: the server's :class:`FileCheckpoint` (a strategy's state after every finished round or answered
request, see :attr:`fedsynth.strategies.base.Strategy.checkpoint`) and each site's own state between rounds
(:class:`SiteStateStore`: one pair of files per round in the site's own folder). Arrays are read back with
``allow_pickle=False``, so a tampered file can carry numbers only, never code.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedsynth.errors import FedsynthError

log = logging.getLogger(__name__)


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``arrays`` as an uncompressed ``.npz`` at ``path``, atomically (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]  # stub: **kwds as allow_pickle
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` written by :func:`save_arrays` (no pickle is ever loaded).

    Raises
    ------
    FedsynthError
        When the file is missing, truncated or holds objects.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise FedsynthError(f"checkpoint file {path.name} is missing or damaged ({type(exc).__name__})") from None


def save_json(path: Path, obj: Any) -> None:
    """``obj`` as JSON at ``path``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FedsynthError(f"checkpoint file {path.name} is missing or damaged ({type(exc).__name__})") from None


class FileCheckpoint:
    """The server's checkpoint in ``folder``: ``state.json`` (what was reached) and ``arrays.npz`` (numbers).

    The arrays are written first and the JSON last, and the JSON names the arrays' step, so a kill between the
    two writes leaves the previous checkpoint readable (the arrays of a newer step are then ignored).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @property
    def exists(self) -> bool:
        return (self.folder / "state.json").is_file()

    def save(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        """Replace the checkpoint with ``meta`` (JSON-able) and ``arrays``."""
        step = int(meta.get("step", 0))
        save_arrays(self.folder / f"arrays-{step}.npz", arrays)
        save_json(self.folder / "state.json", {**meta, "arrays": f"arrays-{step}.npz"})
        for old in self.folder.glob("arrays-*.npz"):
            if old.name != f"arrays-{step}.npz":
                old.unlink(missing_ok=True)

    def load(self) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """``(meta, arrays)`` of the last checkpoint, or ``None`` when there is none."""
        if not self.exists:
            return None
        meta = load_json(self.folder / "state.json")
        arrays = load_arrays(self.folder / str(meta.pop("arrays")))
        return meta, arrays

    def clear(self) -> None:
        for p in self.folder.glob("*"):
            if p.is_file():
                p.unlink(missing_ok=True)


class SiteStateStore:
    """A site's own state per round (``round-NNN.npz`` + ``round-NNN.json``) in the site's folder.

    Only the two latest rounds are kept: a run resumed from the server's checkpoint of round ``r`` needs the
    sites' state after round ``r``, and a site may already have finished round ``r + 1`` when the run stopped.
    """

    _NAME = re.compile(r"round-(\d{3,})\.json$")

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def save(self, server_round: int, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        stem = f"round-{int(server_round):03d}"
        save_arrays(self.folder / f"{stem}.npz", arrays)
        save_json(self.folder / f"{stem}.json", dict(meta))
        for r in self.rounds():
            if r < server_round - 1:
                (self.folder / f"round-{r:03d}.json").unlink(missing_ok=True)
                (self.folder / f"round-{r:03d}.npz").unlink(missing_ok=True)

    def rounds(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := self._NAME.match(p.name)))

    def load(self, server_round: int) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """The state saved after ``server_round``, or ``None`` when the site has none for that round."""
        stem = f"round-{int(server_round):03d}"
        if not (self.folder / f"{stem}.json").is_file():
            return None
        return load_json(self.folder / f"{stem}.json"), load_arrays(self.folder / f"{stem}.npz")
