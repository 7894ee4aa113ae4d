"""Reading a saved model folder: every missing or damaged file is named, with how to fix it (no traceback)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedsynth.errors import FedsynthError, Problem, ValidationError
from fedsynth.generators.registry import GENERATORS, generator_class

if TYPE_CHECKING:
    from fedsynth.generators.base import BaseGenerator

#: How to fix any damage: a folder is written by one save, so it is rewritten whole.
REWRITE = "write the model again ('fedsynth fit', or rerun the run); a model folder is only usable whole"


def damaged(folder: Path, problems: Sequence[Problem]) -> ValidationError:
    """One error for the model folder ``folder`` listing ``problems``."""
    return ValidationError(f"The model folder {folder}", problems)


def read_model_json(folder: Path, name: str) -> dict[str, Any]:
    """The JSON object in the file ``name`` of a saved model; a missing or damaged file raises a
    :class:`ValidationError` naming it."""
    path = folder / name
    if not path.is_file():
        raise damaged(folder, [Problem(name, "is missing", fix=REWRITE)])
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise damaged(folder, [Problem(name, f"is not valid JSON{where} (truncated or damaged)", fix=REWRITE)]) from None
    if not isinstance(value, dict):
        raise damaged(folder, [Problem(name, "does not hold a JSON object", fix=REWRITE)])
    return value


def read_model_npz(folder: Path, name: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` file ``name`` of a saved model (no pickle); a missing or damaged file raises
    a :class:`ValidationError` naming it."""
    path = folder / name
    if not path.is_file():
        raise damaged(folder, [Problem(name, "is missing", fix=REWRITE)])
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: np.asarray(npz[k]) for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        reason = "holds pickled objects" if "pickle" in str(exc) else "is not a readable .npz archive (truncated or damaged)"
        raise damaged(folder, [Problem(name, reason, fix=REWRITE)]) from None


def load_generator(path: str | Path) -> BaseGenerator[Any]:
    """Load a fitted generator from a ``model/`` folder written by :meth:`BaseGenerator.save`.

    Raises
    ------
    ValidationError
        The folder is not a saved model, or a file is missing or damaged (named, with how to fix it).
    """
    from fedsynth.cohort.schema import TableSchema
    from fedsynth.encoding.domain import Domain
    folder = Path(path)
    if not folder.is_dir():
        raise damaged(folder, [Problem("folder", "does not exist or is not a folder",
                                        fix="pass a model/ folder written by 'fedsynth fit' or by a run")])
    meta = read_model_json(folder, "generator.json")
    problems = []
    for key, kind in (("generator", str), ("params", dict), ("schema", dict), ("domain", dict)):
        if not isinstance(meta.get(key), kind):
            problems.append(Problem("generator.json", f"lacks the {kind.__name__} {key!r}", fix=REWRITE))
    if problems:
        raise damaged(folder, problems)
    if meta["generator"] not in GENERATORS:
        raise damaged(folder, [Problem("generator.json", f"names an unknown generator {meta['generator']!r}",
                                        ", ".join(sorted(GENERATORS)), REWRITE)])
    cls = generator_class(meta["generator"])
    missing = [Problem(f, "is missing", fix=REWRITE) for f in cls.model_files if not (folder / f).is_file()]
    if missing:
        raise damaged(folder, missing)
    try:
        schema = TableSchema.from_dict(meta["schema"])
        domain = Domain.from_dict(meta["domain"])
    except FedsynthError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError):
        raise damaged(folder, [Problem("generator.json", "holds a schema or domain that cannot be read",
                                        fix=REWRITE)]) from None
    gen = cls(schema, domain=domain, **meta["params"])
    try:
        gen._load(folder)
    except FedsynthError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        files = ", ".join(cls.model_files) or "generator.json"
        raise damaged(folder, [Problem(files, f"hold content this {cls.__name__} cannot read ({type(exc).__name__})",
                                        fix=REWRITE)]) from None
    gen.fitted_ = True
    return gen
