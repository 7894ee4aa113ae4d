"""Torch training state (optimiser moments, a random generator) as JSON-able settings plus numpy arrays.

``torch.save`` is pickle; checkpoints here are JSON + ``.npz`` only, so tensors become arrays and back.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def optimizer_to_arrays(optimizer: Any, prefix: str = "opt") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A torch optimiser's ``state_dict`` as ``(settings, arrays)``: tensors become ``<prefix>.<param>.<key>``."""
    import torch

    sd = optimizer.state_dict()
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                arrays[f"{prefix}.{pid}.{key}"] = value.detach().cpu().numpy().copy()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    meta = {"param_groups": sd["param_groups"], "scalars": scalars}
    return meta, arrays


def optimizer_from_arrays(optimizer: Any, meta: dict[str, Any], arrays: dict[str, np.ndarray], prefix: str = "opt") -> None:
    """Load what :func:`optimizer_to_arrays` produced into ``optimizer`` (same parameters, same order)."""
    import torch

    state: dict[int, dict[str, Any]] = {}
    for name, value in arrays.items():
        if name.startswith(prefix + "."):
            pid, key = name[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(pid), {})[key] = torch.as_tensor(np.array(value))
    for pid, entry in dict(meta.get("scalars", {})).items():
        state.setdefault(int(pid), {}).update(entry)
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else dict(g) for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def generator_state(gen: Any) -> np.ndarray:
    """A ``torch.Generator``'s state as a uint8 array."""
    return np.asarray(gen.get_state().numpy(), dtype=np.uint8).copy()


def set_generator_state(gen: Any, state: np.ndarray) -> None:
    import torch

    gen.set_state(torch.from_numpy(np.ascontiguousarray(state, dtype=np.uint8)))
