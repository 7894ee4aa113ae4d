"""A test's ServerApp: fedsynth's deployed ServerApp (:func:`fedsynth.experiments.deployed.run_deployed`, the same
grid it runs over) behind a grid that writes every reply the coordinator receives, as Flower's own protobuf
bytes, to ``$FEDSYNTH_TEST_RECEIVED_DIR``; the slow end-to-end test reads them back to check what left the
sites. Shipped inside a copy of fedsynth's Flower app (``_loopback.recording_app``), never in the product.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.common.serde import message_to_proto
from flwr.serverapp import Grid, ServerApp

from fedsynth.experiments.deployed import run_deployed
from fedsynth.federation.polling import PollingGrid


class RecordingGrid:
    """``grid`` with every reply received also written to ``folder/NNNNNN.pb``."""

    def __init__(self, grid: Any, folder: Path) -> None:
        self.grid = grid
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._n = itertools.count()

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()  # type: ignore[no-any-return]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        for reply in replies:
            (self.folder / f"{next(self._n):06d}.pb").write_bytes(message_to_proto(reply).SerializeToString())
        return replies


app = ServerApp()


@app.main()
def _main(grid: Grid, context: Context) -> None:
    folder = Path(os.environ["FEDSYNTH_TEST_RECEIVED_DIR"])
    run_deployed(RecordingGrid(PollingGrid(grid), folder), context.run_config)
