"""A grid that looks for the sites' replies as often as the caller chooses, and stops when told to.

Flower's ``Grid.send_and_receive`` sleeps 3 seconds between two looks at the replies (in 1.41, both on the
simulation engine and under a SuperLink), so every request of a strategy costs at least that long. The grid's own
``push_messages`` and ``pull_messages`` are public: :class:`PollingGrid` pushes once and pulls every ``poll``
seconds until every reply is in, the timeout passes or ``stop`` is set. The transport is Flower's own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

from fedsynth.errors import FedsynthError

#: Seconds between two looks at the sites' replies (and at the stop event). One look is one request to the
#: SuperLink's ServerAppIo API (or the simulation engine's in-memory state): cheap on any link.
POLL_INTERVAL = 0.05


class RunStopped(FedsynthError):
    """The run was asked to stop (a signal, or the caller's exit) while the server waited for sites."""


class PollingGrid:
    """Flower's grid with replies pulled every ``poll`` seconds and waits that end when ``stop`` is set.

    Parameters
    ----------
    grid : flwr.serverapp.Grid
        The grid Flower hands the ServerApp.
    stop : threading.Event, optional
        Set it to end every wait (raises :class:`RunStopped`); default: never set.
    poll : float
        Seconds between two pulls (default :data:`POLL_INTERVAL`).
    """

    def __init__(self, grid: Grid, stop: threading.Event | None = None, *, poll: float = POLL_INTERVAL) -> None:
        self.grid = grid
        self.stop = stop if stop is not None else threading.Event()
        self.poll = poll

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push ``messages``, then pull their replies until all are in or ``timeout`` seconds have passed."""
        pending = set(self.grid.push_messages(messages))
        end = None if timeout is None else time.monotonic() + timeout
        out: list[Message] = []
        while pending:
            if self.stop.is_set():
                raise RunStopped("the run was stopped while the server waited for the sites' replies")
            got = list(self.grid.pull_messages(pending))
            out.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if not pending or (end is not None and time.monotonic() > end):
                break
            self.stop.wait(self.poll)
        return out

    def wait_for_nodes(self, n_nodes: int, *, timeout: float) -> list[int]:
        """Node ids once ``n_nodes`` have registered (nodes connect after the server starts).

        Raises
        ------
        FedsynthError
            When fewer connected within ``timeout`` seconds; :class:`RunStopped` when ``stop`` was set.
        """
        t0 = time.monotonic()
        while len(ids := list(self.grid.get_node_ids())) < n_nodes:
            if self.stop.is_set():
                raise RunStopped("the run was stopped while the server waited for the sites' nodes")
            if time.monotonic() - t0 > timeout:
                raise FedsynthError(f"only {len(ids)} of {n_nodes} site nodes connected within {timeout:.0f}s")
            self.stop.wait(self.poll)
        return sorted(int(i) for i in ids)
