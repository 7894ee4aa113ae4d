"""Test helper: apply dotted overrides ("strategy.rounds": 2) to a raw config mapping."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def with_overrides(raw: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` with each ``"a.b.c": value`` of ``over`` set in place (missing sections are created)."""
    for key, value in over.items():
        node = raw
        *head, last = key.split(".")
        for part in head:
            node = node.setdefault(part, {})
        node[last] = value
    return raw
