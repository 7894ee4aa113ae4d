"""What a deployed site pays per message: Flower starts a fresh ``flwr-clientapp`` process for every message, so
the ClientApp module and whatever a handler imports are imported again each time. A message that needs no
network, tree learner or survival library must not import one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from flwr.common.serde import message_to_proto

from fedsynth.cohort.schema import ColumnKind, ColumnSpec, TableSchema
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.registry import make_strategy
from fedsynth.strategies.site import SiteRuntime

SCHEMA = TableSchema(
    (
        ColumnSpec("AGE", ColumnKind.CONTINUOUS),
        ColumnSpec("SEX", ColumnKind.CATEGORICAL, categories=("F", "M")),
        ColumnSpec("RISK", ColumnKind.CATEGORICAL, categories=("low", "high")),
    )
)

#: Libraries a site's hello, domain summary and the two-step BN's count messages do not need.
HEAVY = ("torch", "sklearn", "pgmpy", "lifelines", "matplotlib", "sdv", "opacus", "scipy")

#: One message answered as a fresh flwr-clientapp process answers it: Flower's runtime, the app, the message.
CHILD = r"""
import json, sys
import flwr.supernode.runtime.run_clientapp
import fedsynth.federation.client_app as client_app
from flwr.app import Context, RecordDict
from flwr.common.serde import message_from_proto
from flwr.proto.message_pb2 import Message as ProtoMessage
proto = ProtoMessage()
proto.ParseFromString(open(sys.argv[1], "rb").read())
msg = message_from_proto(proto)
ctx = Context(run_id=1, node_id=msg.metadata.dst_node_id, node_config=json.loads(sys.argv[2]), state=RecordDict(),
              run_config={})
reply = client_app.app(msg, ctx)
print(json.dumps({"error": reply.error.reason if reply.has_error() else None,
                  "imported": sorted(m for m in json.loads(sys.argv[3]) if m in sys.modules)}))
"""


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.normal(60, 10, n)
    return SCHEMA.coerce(pd.DataFrame({"AGE": age, "SEX": rng.choice(["F", "M"], n),
                                       "RISK": np.where(age + rng.normal(0, 5, n) > 62, "high", "low")}))


def _answer_in_a_fresh_process(message: Path, node_config: dict[str, object]) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(message), json.dumps(node_config), json.dumps(HEAVY)],
                          capture_output=True, text=True, env=env, check=True, timeout=300)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_fresh_clientapp_process_answers_hello_summary_and_bn_counts_without_heavy_libraries(tmp_path: Path) -> None:
    # Setup: a two-step BN over three in-process sites; the first hello, summary and count message to site 1
    frames = [_frame(n, i) for i, n in enumerate((80, 60, 40))]
    grid = InProcessGrid([SiteRuntime(f"site-{i + 1}", f, SCHEMA, i) for i, f in enumerate(frames)], keep_messages=True)
    make_strategy("two_step_bn", SCHEMA, generator="bayesian_network", min_sites=3, random_state=0).start(grid)
    messages = {}
    for msg in grid.sent:
        kind = msg.metadata.message_type
        if kind in ("query.hello", "query.summary", "query.counts") and kind not in messages and msg.metadata.dst_node_id == 1:
            messages[kind] = tmp_path / f"{kind}.pb"
            messages[kind].write_bytes(message_to_proto(msg).SerializeToString())
    frames[0].to_csv(tmp_path / "rows.csv", index=False)
    SCHEMA.to_yaml(tmp_path / "schema.yaml")
    node_config = {"site-name": "site-1", "data-path": str(tmp_path / "rows.csv"),
                   "schema-path": str(tmp_path / "schema.yaml"), "seed": 0}

    # Run: each message in a process of its own, as a SuperNode runs it
    answers = {kind: _answer_in_a_fresh_process(path, node_config) for kind, path in messages.items()}

    # Assert: every message was answered, and none imported torch, scikit-learn, pgmpy, scipy ...
    assert sorted(answers) == ["query.counts", "query.hello", "query.summary"]
    assert all(a["error"] is None for a in answers.values()), answers
    assert {kind: a["imported"] for kind, a in answers.items()} == {kind: [] for kind in answers}
