"""The site's audit log: one JSON line per reply the site sends — what kind of content, how many bytes, when.

Written at the site, by the node, before the reply leaves; read by the hospital's data steward with
``fedsynth site audit LOG``. An entry describes a reply by its records' *names, kinds and sizes* only: never a
value (no count, weight, bound, metric or row), so the log itself can be shared with the coordinator.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import serde

from fedsynth.errors import Problem, ValidationError

log = logging.getLogger(__name__)

#: Kind of content by record name, as fedsynth's site handlers name their reply records
#: (``strategies/*.py``: hello -> info + metrics, summary, counts, arrays, stats, rows).
CONTENT_KINDS: dict[str, str] = {
    "info": "identity (site name, column names)",
    "metrics": "metrics (row count, training losses)",
    "summary": "summaries (domain: category counts, coarsened bounds, quantile sketch)",
    "counts": "counts (contingency tables)",
    "arrays": "weights",
    "stats": "summaries (latent mixture sufficient statistics)",
    "estep": "summaries (latent mixture sufficient statistics)",
    "rows": "synthetic rows",
    "survival": "counts (events and person-time per duration interval, per level of each survival stratum)",
    "rules": "rule-answers (one bool per candidate endpoint rule: does it hold on every row)",
    "scores": "metrics (aggregate scores of a synthetic snapshot against the site's rows and holdout)",
    # secure aggregation (strategies/secagg_site.py, secure_domain.py): what a site sends so that the
    # coordinator learns only the sum over sites
    "labels": "labels (names of the category labels the site holds at least k times; no count)",
    "keys": "keys (secure aggregation: the site's two public keys for this sum)",
    "shares": "key-shares (secure aggregation: encrypted key shares for the other sites, or the shares "
              "revealed to unmask the sum)",
    "masked": "masked (secure aggregation: the site's vector under masks; only the sum over sites is readable)",
    "layout": "layout (secure aggregation: names and lengths of the summed parts)",
}

#: Short kind names used in summaries.
SHORT_KINDS: dict[str, str] = {k: v.split(" ")[0] for k, v in CONTENT_KINDS.items()}


def _record_size(record: Any) -> tuple[str, int, int]:
    """(record type, serialized bytes, number of entries) of one Flower record."""
    if isinstance(record, ArrayRecord):
        return "array", serde.array_record_to_proto(record).ByteSize(), len(record)
    if isinstance(record, MetricRecord):
        return "metric", serde.metric_record_to_proto(record).ByteSize(), len(record)
    if isinstance(record, ConfigRecord):
        return "config", serde.config_record_to_proto(record).ByteSize(), len(record)
    return type(record).__name__, 0, 0


def describe_reply(reply: Message) -> dict[str, Any]:
    """What a reply carries, per record: its kind of content, record type, serialized bytes and entry count.

    Parameters
    ----------
    reply : flwr.app.Message
        A reply a site handler built (``Message(content, reply_to=msg)``) or an error reply.

    Returns
    -------
    dict
        ``{"error": bool, "bytes": total, "fields": {record name: {"kind", "record", "bytes", "entries"}}}``.
        Names and sizes only: no value of any record.
    """
    if reply.has_error():
        return {"error": True, "bytes": len((reply.error.reason or "").encode()), "fields": {}}
    fields: dict[str, dict[str, Any]] = {}
    for name, record in reply.content.items():
        rtype, nbytes, entries = _record_size(record)
        fields[name] = {"kind": SHORT_KINDS.get(name, "other"), "record": rtype, "bytes": nbytes, "entries": entries}
    return {"error": False, "bytes": sum(f["bytes"] for f in fields.values()), "fields": fields}


def audit_entry(site: str, msg: Message, reply: Message, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """One audit line for the reply ``reply`` to the instruction ``msg`` sent by the coordinator."""
    md = msg.metadata
    return {
        "time": (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
        "site": site,
        "run_id": int(md.run_id),
        "message_type": md.message_type,
        "round": md.group_id,
        **describe_reply(reply),
    }


def append_entry(path: str | Path, entry: Mapping[str, Any]) -> None:
    """Append one JSON line to the log at ``path`` (created with its folder; owner-readable only).

    A single ``write`` of a whole line to a file opened for appending, so concurrent ClientApp processes of
    one node never interleave within a line.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(dict(entry), sort_keys=True) + "\n").encode()
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def default_log_path(data_path: str | Path) -> Path:
    """Where a site's audit log goes unless its node config says otherwise: beside the data file."""
    p = Path(data_path)
    return p.with_name(p.stem + ".audit.jsonl")


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Every entry of an audit log; a :class:`ValidationError` lists unreadable lines (by number only)."""
    p = Path(path)
    if not p.is_file():
        raise ValidationError("Audit log", [Problem(str(p), "no such file", "the site's audit log (JSON lines)",
                                                    "by default it lies beside the site's data file: <data>.audit.jsonl")])
    entries, problems = [], []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or "message_type" not in entry:
                raise ValueError
            entries.append(entry)
        except ValueError:
            problems.append(Problem(f"{p.name} line {i}", "not an audit entry", "one JSON object per line"))
    if problems:
        raise ValidationError("Audit log", problems)
    return entries


def format_bytes(n: int) -> str:
    """A byte count for a person: ``812 B``, ``1.6 kB``, ``2.35 MB``, ``1.2 GB`` (decimal units, as Flower's
    and most tools' transfer sizes); what ``fedsynth site audit`` and a deployed run's report show."""
    if n < 1000:
        return f"{n} B"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            value = n / size
            return f"{value:.3g} {unit}" if value < 1000 else f"{value:,.0f} {unit}"
    raise AssertionError("unreachable")


@dataclass
class AuditSummary:
    """What left a site, for its steward: totals, per run, per message type and per kind of content."""

    site: str
    n_replies: int = 0
    n_errors: int = 0
    bytes: int = 0
    first: str | None = None
    last: str | None = None
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_message_type: dict[str, dict[str, int]] = field(default_factory=dict)
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site, "replies": self.n_replies, "errors": self.n_errors, "bytes": self.bytes,
            "first": self.first, "last": self.last, "runs": self.runs,
            "by_message_type": self.by_message_type, "by_kind": self.by_kind,
        }


def summarize(entries: Iterable[Mapping[str, Any]]) -> AuditSummary:
    """Totals over audit entries: replies, errors and bytes overall, per run (with its time span), per message
    type and per kind of content."""
    rows = sorted(entries, key=lambda e: str(e.get("time", "")))
    sites = sorted({str(e.get("site", "?")) for e in rows})
    out = AuditSummary(", ".join(sites) or "-")
    for e in rows:
        t, nbytes = str(e.get("time", "")), int(e.get("bytes", 0))
        out.n_replies += 1
        out.n_errors += int(bool(e.get("error")))
        out.bytes += nbytes
        out.first = out.first or t
        out.last = t
        run = out.runs.setdefault(str(e.get("run_id", "?")), {"replies": 0, "bytes": 0, "first": t, "last": t})
        run["replies"] += 1
        run["bytes"] += nbytes
        run["last"] = t
        mt = out.by_message_type.setdefault(str(e["message_type"]), {"replies": 0, "bytes": 0})
        mt["replies"] += 1
        mt["bytes"] += nbytes
        for f in dict(e.get("fields", {})).values():
            kind = out.by_kind.setdefault(str(f.get("kind", "other")), {"fields": 0, "bytes": 0})
            kind["fields"] += 1
            kind["bytes"] += int(f.get("bytes", 0))
    return out
