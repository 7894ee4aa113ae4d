"""A deployed run's progress, as lines of the ServerApp's log: what ``fedsynth run --federation`` shows.

The ServerApp runs on the coordinator's machine, in a process Flower starts; Flower keeps everything it writes as
the run's log and streams it to ``flwr run --stream`` (which ``fedsynth run --federation`` runs) and to
``flwr log RUN_ID NAME``. So the deployed ServerApp logs one line per event of the run (:func:`describe`): where
the run directory is, every request as its replies are in (how many sites answered, in how long, which did not),
every round as it is scored, the end. No transport of fedsynth's own: the lines travel in Flower's run log.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

#: What every progress line starts with, so that a reader of the run's log tells them from Flower's lines.
PREFIX = "fedsynth | "

#: The logger the deployed ServerApp writes its progress lines to.
LOGGER = "fedsynth.progress"

_ROUND_GROUP = re.compile(r"^round-0*(\d+)$")
#: A group id ending in a long hexadecimal session id (secure aggregation's ``secagg-<uuid>``): shown by its first 8.
_SESSION_GROUP = re.compile(r"^(.*-)([0-9a-f]{8})[0-9a-f]{8,}$")


def _names(sites: Sequence[str]) -> str:
    return ", ".join(str(s) for s in sites)


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _request(payload: Mapping[str, Any], rounds: int | None) -> str:
    group = str(payload.get("group") or "")
    match = _ROUND_GROUP.match(group)
    if match and rounds:
        label = f"round {int(match.group(1))}/{rounds}"
    else:
        label = _SESSION_GROUP.sub(r"\1\2", group) or "request"
    kinds = "+".join(payload.get("message_types") or ())
    answered = list(payload.get("answered") or ())
    errors = list(payload.get("errors") or ())
    silent = list(payload.get("silent") or ())
    n_sent = int(payload.get("sent", len(answered) + len(errors) + len(silent)))
    line = (f"{label} ({kinds}): {len(answered)} of {n_sent} site{'s' if n_sent != 1 else ''} answered "
            f"in {float(payload.get('seconds', 0.0)):.0f} s")
    if silent:
        line += f"; no reply from {_names(silent)}"
    if errors:
        line += f"; error from {_names(errors)}"
    return line


def describe(event: str, payload: Mapping[str, Any], *, rounds: int | None = None) -> str | None:
    """The progress line of one event of a deployed run (without :data:`PREFIX`), or ``None`` for events not shown.

    Parameters
    ----------
    event : str
        ``start``, ``request`` (a request's replies are in: ``group``, ``message_types``, ``sent``, ``answered``,
        ``errors``, ``silent`` — site names —, ``seconds``), ``round`` (a round's snapshot scored: ``round``,
        ``csf``, ``gsf``, ``nndr``, ``left_out``), ``done``; the events of
        :class:`fedsynth.experiments.run_writer.RunDirectory` and the deployed grid.
    payload : mapping
        The event's facts.
    rounds : int, optional
        The run's number of rounds (from its ``start`` event), to show ``round 2/5``.

    Returns
    -------
    str or None
    """
    if event == "start":
        n = payload.get("rounds")
        resumed = payload.get("resumed_from")
        line = (f"run {payload.get('run_id')}: {payload.get('strategy')} x {payload.get('generator')}, "
                f"{n} round{'s' if n != 1 else ''}; run directory (on the coordinator): {payload.get('run_dir')}")
        if resumed is not None:
            line += f"; resumed from checkpoint step {resumed} ({payload.get('done', 0)} finished rounds kept)"
        return line
    if event == "request":
        return _request(payload, rounds)
    if event == "round":
        at = f"/{rounds}" if rounds else ""
        sites = payload.get("scores", {}).get("scored_at_sites") if isinstance(payload.get("scores"), Mapping) else None
        line = (f"round {payload.get('round')}{at} scored: CSF {_number(payload.get('csf'))}  "
                f"GSF {_number(payload.get('gsf'))}  NNDR {_number(payload.get('nndr'))}")
        if sites:
            line += f" (at {len(sites)} site{'s' if len(sites) != 1 else ''})"
        left = payload.get("left_out") or {}
        if left:
            line += f"; left out: {'; '.join(f'{k}: {v}' for k, v in dict(left).items())}"
        return line
    if event == "done":
        return f"finished: {payload.get('report')}"
    return None


class ProgressLog:
    """A run's progress callback (``progress(event, payload)``) that logs :func:`describe`'s lines to ``logger``.

    Parameters
    ----------
    logger : logging.Logger
        Where the lines go (the deployed ServerApp: :data:`LOGGER`, written to its standard output, which Flower
        keeps as the run's log).
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.rounds: int | None = None

    def __call__(self, event: str, payload: Mapping[str, Any]) -> None:
        if event == "start" and isinstance(payload.get("rounds"), int):
            self.rounds = int(payload["rounds"])
        line = describe(event, payload, rounds=self.rounds)
        if line is not None:
            self.logger.info("%s%s", PREFIX, line)


def stdout_progress() -> ProgressLog:
    """The deployed ServerApp's progress: :data:`LOGGER` at INFO to standard output (once per process), whose
    lines Flower streams to ``flwr run --stream`` and ``flwr log``."""
    import sys

    logger = logging.getLogger(LOGGER)
    if not any(getattr(h, "_fedsynth_progress", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._fedsynth_progress = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return ProgressLog(logger)
