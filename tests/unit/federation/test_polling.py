"""The server's grid pulls replies at its own interval (Flower's send_and_receive sleeps 3 s between looks)."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import pytest
from flwr.app import Message, RecordDict

from fedsynth.errors import FedsynthError
from fedsynth.federation.polling import PollingGrid, RunStopped


class SlowSites:
    """A fake Flower grid: every pushed message gets its reply after ``ready_after`` pulls (one node never
    answers when ``silent``)."""

    def __init__(self, ready_after: int, *, silent: int | None = None) -> None:
        self.ready_after = ready_after
        self.silent = silent
        self.pulls = 0
        self.pushed: dict[str, Message] = {}

    def get_node_ids(self) -> list[int]:
        return [1, 2, 3]

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for m in messages:
            mid = f"m{len(self.pushed)}"
            self.pushed[mid] = m
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        self.pulls += 1
        if self.pulls < self.ready_after:
            return []
        out = []
        for mid in message_ids:
            if self.pushed[mid].metadata.dst_node_id == self.silent:
                continue
            reply = Message(RecordDict(), dst_node_id=0, message_type="query.hello")
            reply.metadata.__dict__["_reply_to_message_id"] = mid
            out.append(reply)
        return out


def _hello(nodes: list[int]) -> list[Message]:
    from fedsynth.strategies.in_process import _ensure_task_identity

    _ensure_task_identity()  # Flower stamps messages with the process's task identity
    return [Message(RecordDict(), dst_node_id=n, message_type="query.hello") for n in nodes]


def test_replies_are_pulled_until_all_are_in() -> None:
    # Setup: replies arrive on the 4th look
    sites = SlowSites(ready_after=4)
    grid = PollingGrid(sites, poll=0.001)  # type: ignore[arg-type]

    # Run
    replies = list(grid.send_and_receive(_hello([1, 2, 3]), timeout=5))

    # Assert: three replies, and no look after the last reply came in
    assert len(replies) == 3 and sites.pulls == 4


def test_a_silent_site_ends_the_wait_at_the_timeout_with_the_others_replies() -> None:
    # Setup / Run
    grid = PollingGrid(SlowSites(ready_after=1, silent=2), poll=0.01)  # type: ignore[arg-type]
    replies = list(grid.send_and_receive(_hello([1, 2, 3]), timeout=0.1))

    # Assert
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m2"]


def test_a_stop_ends_the_wait_for_replies_and_for_nodes() -> None:
    # Setup: the run is stopped while nothing has answered
    stop = threading.Event()
    stop.set()
    grid = PollingGrid(SlowSites(ready_after=10**9), stop, poll=0.01)  # type: ignore[arg-type]

    # Run / Assert
    with pytest.raises(RunStopped):
        grid.send_and_receive(_hello([1]), timeout=None)
    with pytest.raises(RunStopped):
        grid.wait_for_nodes(4, timeout=60)


def test_too_few_nodes_within_the_node_timeout_is_an_error_naming_the_counts() -> None:
    grid = PollingGrid(SlowSites(ready_after=1), poll=0.01)  # type: ignore[arg-type]
    assert grid.wait_for_nodes(3, timeout=1) == [1, 2, 3]
    with pytest.raises(FedsynthError, match="only 3 of 4 site nodes connected"):
        grid.wait_for_nodes(4, timeout=0.05)
