"""Small helpers every layer shares: atomic text writes, JSON-ready values, installed versions (light imports only)."""

from __future__ import annotations

import importlib.metadata as md
import json
import math
import os
import platform
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Distributions whose versions a run's manifest and an evaluation report record.
VERSIONED = (
    "fedsynth", "flwr", "numpy", "pandas", "scipy", "scikit-learn", "torch", "pgmpy", "ctgan", "lifelines",
    "sdmetrics", "jinja2",
)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to a fresh temporary file beside ``path``, then rename it over ``path``; returns the path.

    A failed or interrupted write never leaves a half-written file, and two writers never share a temporary
    file. The file gets the usual permissions (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def jsonable(obj: Any) -> Any:
    """Plain Python types for JSON: numpy scalars and arrays unwrapped, NaN/inf as None, tuples as lists."""
    if isinstance(obj, dict) or hasattr(obj, "items"):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` (made :func:`jsonable`) as JSON, atomically; returns the path."""
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=indent, default=str))


def versions(packages: Sequence[str] = VERSIONED) -> dict[str, str]:
    """Python's and each distribution's installed version (``"not installed"`` when absent); imports nothing."""
    out = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
