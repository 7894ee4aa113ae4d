"""A deployed run's progress: the lines the ServerApp logs (streamed by ``flwr run --stream`` to ``fedsynth run
--federation``) say where the run directory is, every request as its replies are in, and every scored round."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from fedsynth.deployment.progress import PREFIX, ProgressLog, describe
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.site import SiteRuntime


def test_a_request_line_names_the_round_its_time_and_every_site_that_did_not_answer() -> None:
    # Setup
    payload = {"group": "round-002", "message_types": ["train.fit"], "sent": 3, "answered": ["A"],
               "errors": ["B"], "silent": ["C"], "seconds": 41.4}

    # Run / Assert
    assert describe("request", payload, rounds=5) == \
        "round 2/5 (train.fit): 1 of 3 sites answered in 41 s; no reply from C; error from B"
    everyone = {**payload, "group": "counts-3", "answered": ["A", "B", "C"], "errors": [], "silent": []}
    assert describe("request", everyone, rounds=5) == "counts-3 (train.fit): 3 of 3 sites answered in 41 s"
    secure = {**everyone, "group": "secagg-c7d7b9418bd14280a9fbf8a8b7bfac3f", "message_types": ["query.secagg_setup"]}
    assert describe("request", secure).startswith("secagg-c7d7b941 (query.secagg_setup): 3 of 3")


def test_start_round_and_done_lines_say_where_the_run_is_and_what_each_round_scored() -> None:
    # Setup
    start = {"run_id": "smoke-deployed-1", "strategy": "fedavg", "generator": "vae_bgm", "rounds": 5,
             "run_dir": "/srv/reports/smoke-deployed-1", "resumed_from": None}
    scored = {"round": 2, "csf": 0.9134, "gsf": 0.8391, "nndr": 0.95, "left_out": {"C": "timeout"},
              "scores": {"scored_at_sites": {"A": {}, "B": {}}}}

    # Run / Assert
    assert describe("start", start) == ("run smoke-deployed-1: fedavg x vae_bgm, 5 rounds; run directory "
                                        "(on the coordinator): /srv/reports/smoke-deployed-1")
    assert describe("round", scored, rounds=5) == \
        "round 2/5 scored: CSF 0.913  GSF 0.839  NNDR 0.950 (at 2 sites); left out: C: timeout"
    assert describe("done", {"report": "/srv/r/report.html"}) == "finished: /srv/r/report.html"
    assert describe("phase", {"phase": "x"}) is None


def test_the_progress_log_counts_rounds_from_the_start_event(caplog: pytest.LogCaptureFixture) -> None:
    # Setup
    progress = ProgressLog(logging.getLogger("test.progress"))
    request = {"group": "round-001", "message_types": ["train.fit"], "sent": 2, "answered": ["A", "B"], "seconds": 3.0}

    # Run
    with caplog.at_level(logging.INFO, logger="test.progress"):
        progress("start", {"run_id": "r", "strategy": "fedavg", "generator": "vae_bgm", "rounds": 3, "run_dir": "/d"})
        progress("request", request)
        progress("phase", {"phase": "ignored"})

    # Assert
    assert [r.getMessage() for r in caplog.records] == [
        PREFIX + "run r: fedavg x vae_bgm, 3 rounds; run directory (on the coordinator): /d",
        PREFIX + "round 1/3 (train.fit): 2 of 2 sites answered in 3 s",
    ]


class _SilentNode(InProcessGrid):
    """An in-process grid where one node never replies (a SuperNode that stopped)."""

    def __init__(self, sites: list[SiteRuntime], silent: int) -> None:
        super().__init__(sites)
        self.silent = silent

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        return super().send_and_receive([m for m in messages if m.metadata.dst_node_id != self.silent])


def test_the_coordinators_grid_reports_each_request_with_the_sites_that_answered_failed_or_stayed_silent(
        tmp_path: Path, mds_partition: Any) -> None:
    # Setup: three sites; site 3's node sends nothing; one request type no site knows
    from fedsynth.experiments.deployed import AuditingGrid

    sites = [SiteRuntime(s.name, s.data, mds_partition.schema, seed=i) for i, s in enumerate(mds_partition.sites)]
    events: list[tuple[str, dict[str, Any]]] = []
    audited = AuditingGrid(_SilentNode(sites, silent=3), tmp_path / "audit",
                           progress=lambda event, payload: events.append((event, dict(payload))))
    empty = RecordDict({"config": ConfigRecord({})})

    # Run
    audited.send_and_receive([Message(empty, dst_node_id=n, message_type="query.hello", group_id="hello")
                              for n in (1, 2, 3)])
    audited.send_and_receive([Message(empty, dst_node_id=1, message_type="query.nothing", group_id="round-001"),
                              Message(empty, dst_node_id=2, message_type="query.hello", group_id="round-001")])

    # Assert: one event per request, sites by the names their hellos gave (the silent one by its node id)
    assert [e for e, _ in events] == ["request", "request"]
    hello, mixed = events[0][1], events[1][1]
    assert (hello["group"], hello["message_types"], hello["sent"]) == ("hello", ["query.hello"], 3)
    assert (hello["answered"], hello["errors"], hello["silent"]) == (["site-1", "site-2"], [], ["node-3"])
    assert (mixed["answered"], mixed["errors"], mixed["silent"]) == (["site-2"], ["site-1"], [])
    assert mixed["message_types"] == ["query.hello", "query.nothing"] and mixed["seconds"] >= 0


def test_the_serverapps_progress_goes_to_its_standard_output_which_flower_keeps_as_the_run_log() -> None:
    # Setup: what the deployed ServerApp does in the process Flower starts for it
    code = ("from fedsynth.deployment.progress import stdout_progress\n"
            "p = stdout_progress(); p = stdout_progress()\n"  # set up twice: still one line per event
            "p('request', {'group': 'summary', 'message_types': ['query.summary'], 'sent': 1, 'answered': ['A'], "
            "'seconds': 2})\n")

    # Run
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})

    # Assert
    assert done.stdout == PREFIX + "summary (query.summary): 1 of 1 site answered in 2 s\n"
    assert json.dumps(done.stderr) == '""'
