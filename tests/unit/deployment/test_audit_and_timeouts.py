"""What a site's audit log holds (kinds and sizes, never a value) and how a silent site is left out of a round."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import Message

from fedsynth.cohort.inference import infer_schema
from fedsynth.cohort.schema import TableSchema
from fedsynth.deployment import audit
from fedsynth.errors import FedsynthError, ValidationError
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.policy import SitePolicy
from fedsynth.strategies.registry import make_strategy
from fedsynth.strategies.site import SiteRuntime

#: A value planted in one site's rows; it must appear in no audit line.
MARKER = 987654.321


def _table(seed: int, n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "AGE": rng.integers(20, 90, n).astype(float),
        "HB": np.round(rng.normal(10, 2, n), 2),
        "SEX": rng.choice(["F", "M"], n),
        "GENE1": rng.integers(0, 2, n).astype(float),
        "GENE2": rng.integers(0, 2, n).astype(float),
        "GENE3": rng.integers(0, 2, n).astype(float),
    })


@pytest.fixture
def sites() -> tuple[list[SiteRuntime], TableSchema]:
    frames = [_table(s) for s in range(3)]
    frames[0].loc[0, "HB"] = MARKER
    schema = infer_schema(pd.concat(frames, ignore_index=True))
    # A trusted network's policy (clear counts): these tests are about timeouts and the audit log, not about
    # the count tables a small site withholds under the default policy (tests/unit/strategies/test_policy.py).
    trusted = SitePolicy(clear_counts=True)
    return [SiteRuntime(name, schema.coerce(f), schema, i, policy=trusted)
            for i, (name, f) in enumerate(zip("ABC", frames))], schema


class SilentGrid(InProcessGrid):
    """An in-process grid where the sites in ``silent`` never answer ``silent_type``; it records each timeout."""

    def __init__(self, sites: list[SiteRuntime], silent: set[str], silent_type: str) -> None:
        super().__init__(sites, keep_messages=True)
        self.silent, self.silent_type = silent, silent_type
        self.timeouts: list[float | None] = []

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        self.timeouts.append(timeout)
        keep = [m for m in messages if not (m.metadata.message_type == self.silent_type
                                            and self.sites[m.metadata.dst_node_id].name in self.silent)]
        return super().send_and_receive(keep)


def test_audit_lines_hold_kinds_and_sizes_never_a_value(sites: tuple[list[SiteRuntime], TableSchema],
                                                        tmp_path: Path) -> None:
    # Setup: a whole two-step BN run over an in-process grid that keeps every reply
    runtimes, schema = sites
    grid = InProcessGrid(runtimes, keep_messages=True)
    make_strategy("two_step_bn", schema, generator="bayesian_network", min_sites=3).start(grid)
    log = tmp_path / "A.audit.jsonl"

    # Run: site A's replies, as its node writes them
    for msg, reply in zip(grid.sent, grid.received):
        if grid.sites[msg.metadata.dst_node_id].name == "A":
            audit.append_entry(log, audit.audit_entry("A", msg, reply))

    # Assert: types, kinds and sizes are there; the planted value and the site's numbers are not
    text = log.read_text()
    entries = audit.read_log(log)
    assert str(MARKER) not in text and "987654" not in text
    assert {e["message_type"] for e in entries} == {"query.privacy_budget", "query.hello", "query.summary",
                                                    "query.counts"}
    kinds = {f["kind"] for e in entries for f in e["fields"].values()}
    assert kinds == {"identity", "metrics", "summaries", "counts", "rule-answers"}
    hello = next(e for e in entries if e["message_type"] == "query.hello")
    assert set(hello["fields"]) == {"info", "metrics"}
    assert hello["fields"]["metrics"]["entries"] == 1  # num-examples: a name and a size, not the count
    for e in entries:  # nothing but names, kinds and sizes
        assert set(e) == {"time", "site", "run_id", "message_type", "round", "error", "bytes", "fields"}
        assert all(set(f) == {"kind", "record", "bytes", "entries"} for f in e["fields"].values())
    for e in entries:
        assert e["bytes"] == sum(f["bytes"] for f in e["fields"].values()) > 0


def test_secure_aggregation_replies_are_named_for_the_steward_not_other(
        sites: tuple[list[SiteRuntime], TableSchema], tmp_path: Path) -> None:
    # Setup: a two-step BN run with secure aggregation (a deployed run's default): labels, keys, key shares,
    # masked vectors and their layout are what leaves a site
    from fedsynth.strategies import secure_sum

    runtimes, schema = sites
    grid = InProcessGrid(runtimes, keep_messages=True)
    make_strategy("two_step_bn", schema, generator="bayesian_network", min_sites=3,
                  params={"secure_aggregation": True}).start(grid)

    # Run
    entries = [audit.audit_entry("A", msg, reply) for msg, reply in zip(grid.sent, grid.received, strict=True)
               if grid.sites[msg.metadata.dst_node_id].name == "A"]

    # Assert: every stage of the protocol was audited, and every field has a kind a steward can read
    assert set(secure_sum.STAGES) <= {e["message_type"] for e in entries}
    kinds = {f["kind"] for e in entries for f in e["fields"].values()}
    assert "other" not in kinds
    assert {"labels", "keys", "key-shares", "masked", "layout"} <= kinds
    assert "counts" not in kinds  # no count table travels in clear


def test_summary_totals_are_the_sums_of_the_lines(tmp_path: Path) -> None:
    # Setup: three hand-written lines, two runs
    lines = [
        {"time": "2026-01-01T10:00:00+00:00", "site": "A", "run_id": 1, "message_type": "query.hello",
         "round": "hello", "error": False, "bytes": 100, "fields": {"info": {"kind": "identity", "bytes": 60},
                                                                    "metrics": {"kind": "metrics", "bytes": 40}}},
        {"time": "2026-01-01T10:00:05+00:00", "site": "A", "run_id": 1, "message_type": "query.counts",
         "round": "counts-1", "error": False, "bytes": 1000, "fields": {"counts": {"kind": "counts", "bytes": 1000}}},
        {"time": "2026-01-02T09:00:00+00:00", "site": "A", "run_id": 2, "message_type": "query.counts",
         "round": "counts-1", "error": True, "bytes": 12, "fields": {}},
    ]
    log = tmp_path / "a.jsonl"
    for line in lines:
        audit.append_entry(log, line)

    # Run
    summary = audit.summarize(audit.read_log(log)).to_dict()

    # Assert
    assert (summary["replies"], summary["errors"], summary["bytes"]) == (3, 1, 1112)
    assert summary["first"] == "2026-01-01T10:00:00+00:00" and summary["last"] == "2026-01-02T09:00:00+00:00"
    assert summary["runs"]["1"] == {"replies": 2, "bytes": 1100, "first": "2026-01-01T10:00:00+00:00",
                                    "last": "2026-01-01T10:00:05+00:00"}
    assert summary["by_message_type"]["query.counts"] == {"replies": 2, "bytes": 1012}
    assert summary["by_kind"] == {"identity": {"fields": 1, "bytes": 60}, "metrics": {"fields": 1, "bytes": 40},
                                  "counts": {"fields": 1, "bytes": 1000}}


def test_a_broken_log_names_its_lines(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    log.write_text('{"message_type": "query.hello"}\nnot json\n[1]\n')
    with pytest.raises(ValidationError, match="2 problems") as info:
        audit.read_log(log)
    assert "a.jsonl line 2" in str(info.value) and "a.jsonl line 3" in str(info.value)


def test_a_silent_site_is_left_out_of_that_round_and_recorded(sites: tuple[list[SiteRuntime], TableSchema]) -> None:
    # Setup: site C answers hello and summary, then never answers a count request
    runtimes, schema = sites
    grid = SilentGrid(runtimes, {"C"}, "query.counts")
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network", min_sites=2,
                             params={"request_timeout": 7.5})

    # Run
    result = strategy.start(grid)

    # Assert: every request waited 7.5 s at most; C is recorded in the round it dropped, the run finished
    assert set(grid.timeouts) == {7.5}
    assert result.generator is not None
    assert {d["site"] for d in result.dropped} == {"C"}
    first = result.dropped[0]
    assert first["message_type"] == "query.counts" and first["round"].startswith("counts-")
    assert first["reason"] == "no reply within 7.5 s"


def test_the_run_stops_when_fewer_than_min_sites_answer(sites: tuple[list[SiteRuntime], TableSchema]) -> None:
    runtimes, schema = sites
    grid = SilentGrid(runtimes, {"B", "C"}, "query.counts")
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network", min_sites=2)
    with pytest.raises(FedsynthError, match="only 1 sites left; strategy.min_sites is 2"):
        strategy.start(grid)


@pytest.mark.parametrize("bad", [0, -1.0, "soon", True])
def test_request_timeout_must_be_positive_seconds(sites: tuple[list[SiteRuntime], TableSchema], bad: object) -> None:
    _, schema = sites
    with pytest.raises(ValidationError, match="request_timeout"):
        make_strategy("two_step_bn", schema, generator="bayesian_network", params={"request_timeout": bad})


class UnreachableGrid(InProcessGrid):
    """Like Flower's SuperLink: instructions get message ids, and when the site ``unreachable`` has gone (from the
    count requests on) the SuperLink itself answers with an error reply whose source is the SuperLink (node id 1),
    not the site."""

    def __init__(self, sites: list[SiteRuntime], unreachable: str) -> None:
        super().__init__(sites)
        self.unreachable = unreachable

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        from flwr.app import Error

        out = []
        for i, msg in enumerate(messages):
            msg.metadata.__dict__["_message_id"] = f"m{i}-{msg.metadata.group_id}"
            if (self.sites[msg.metadata.dst_node_id].name == self.unreachable
                    and msg.metadata.message_type == "query.counts"):
                reply = Message(Error(4, "Node Unavailable"), reply_to=msg)
                reply.metadata.__dict__["_src_node_id"] = 1  # the SuperLink answers, not the site
                out.append(reply)
            else:
                out.append(*super().send_and_receive([msg]))
        return out


def test_an_error_reply_from_the_superlink_is_charged_to_the_site_it_stands_for(
    sites: tuple[list[SiteRuntime], TableSchema],
) -> None:
    runtimes, schema = sites
    grid = UnreachableGrid(runtimes, "B")
    strategy = make_strategy("two_step_bn", schema, generator="bayesian_network", min_sites=2)
    result = strategy.start(grid)
    assert {d["site"] for d in result.dropped} == {"B"}
    assert result.dropped[0] == {"site": "B", "message_type": "query.counts", "round": "counts-1",
                                 "reason": result.dropped[0]["reason"]}
    assert "Node Unavailable" in result.dropped[0]["reason"]
