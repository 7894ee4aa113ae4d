"""What one deployed message costs a site before its handler computes anything: a fresh ClientApp process.

Flower 1.41 starts a new ``flwr-clientapp`` process for every message a SuperNode receives
(``flwr/supernode/runtime/run_clientapp.py``: one message per process), so fedsynth's ClientApp module
(``fedsynth.federation.client_app``, named by the shipped app's ``pyproject.toml``) and whatever the handler imports
are paid on every message. This benchmark replays recorded messages in fresh Python processes, each the way a
``flwr-clientapp`` process answers one: import the ClientApp, read the message, call the app with the node's
config (one site's file, its schema), and reply.

Two source trees side by side, alternately, ``--repeat`` times each (the machine's load changes under both alike):
``--before`` (default: a copy of ``main``'s ``src``) and ``--after`` (this checkout's ``src``). Per tree and
message type: the median seconds of the import of the ClientApp module, of the whole message (import + answer),
and which heavy libraries the process imported. Ratios before/after.

The messages are recorded once, in process, from a two-step BN run on the MDS cohort (60/30/10, seed 0, no secure
aggregation): the first ``query.hello``, ``query.summary`` and ``query.counts`` that site 1 received; and, with secure
aggregation on (a deployment's default), its first ``query.secure_labels`` and ``query.secagg_setup``; and the last
``query.mixture_estep`` of a one-round FedAvg VAE-BGM (1 local epoch), replayed with site 1's node state.

Run:  PYTHONPATH=src .venv/bin/python benchmarks/bench_clientapp_start.py [--before DIR/src] [--repeat 5]
        [--out benchmarks/results/clientapp_start.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("FEDSYNTH_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

ROOT = Path(__file__).resolve().parents[1]
MESSAGE_TYPES = ("query.hello", "query.summary", "query.counts")
#: The first messages of a deployed two-step BN (secure aggregation on, its deployment default) that a fresh
#: process can answer without the node state of earlier ones.
SECURE_MESSAGE_TYPES = ("query.secure_labels", "query.secagg_setup")
HEAVY = ("torch", "sklearn", "pgmpy", "sdv", "lifelines", "matplotlib", "opacus", "scipy", "scipy.stats",
         "pydantic", "jinja2", "networkx", "rich")

#: The child: one message, answered as a ``flwr-clientapp`` process answers it (Flower's runtime imports first).
CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import flwr.supernode.runtime.run_clientapp  # what every flwr-clientapp process imports before the app
t1 = time.perf_counter()
flower_heavy = {m for m in json.loads(sys.argv[3]) if m in sys.modules}
import fedsynth.federation.client_app as client_app
t2 = time.perf_counter()
from flwr.app import Context, RecordDict
from flwr.common.serde import message_from_proto
from flwr.proto.message_pb2 import Message as ProtoMessage
proto = ProtoMessage()
proto.ParseFromString(open(sys.argv[1], "rb").read())
msg = message_from_proto(proto)
state = RecordDict()
if len(sys.argv) > 4:  # the node's state, as the SuperNode hands it to the process (FedAvg's latent codes)
    from flwr.common.serde import recorddict_from_proto
    from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict
    held = ProtoRecordDict()
    held.ParseFromString(open(sys.argv[4], "rb").read())
    state = recorddict_from_proto(held)
ctx = Context(run_id=1, node_id=msg.metadata.dst_node_id, node_config=json.loads(sys.argv[2]), state=state,
              run_config={})
reply = client_app.app(msg, ctx)
t3 = time.perf_counter()
assert not reply.has_error(), reply.error
print(json.dumps({"flower_s": t1 - t0, "import_s": t2 - t1, "answer_s": t3 - t2, "message_s": t3 - t1,
                  "heavy": sorted(m for m in json.loads(sys.argv[3]) if m in sys.modules and m not in flower_heavy),
                  "flower_heavy": sorted(flower_heavy)}))
"""


def record(work: Path) -> dict[str, Path]:
    """Run a two-step BN in process and keep the first message of each type that site 1 received (protobuf),
    site 1's rows and the schema of the site files."""
    from flwr.common.serde import message_to_proto

    from fedsynth.cohort.datasets import load_cohort
    from fedsynth.cohort.partition import make_partition
    from fedsynth.strategies.in_process import InProcessGrid
    from fedsynth.strategies.registry import make_strategy
    from fedsynth.strategies.site import SiteRuntime

    cohort = load_cohort("mds-iwgpm")
    part = make_partition(cohort.data, cohort.schema, proportions=(0.6, 0.3, 0.1), random_state=0)
    part.write(work / "sites")
    out: dict[str, Path] = {}
    for secure, kinds in ((False, MESSAGE_TYPES), (True, SECURE_MESSAGE_TYPES)):
        grid = InProcessGrid([SiteRuntime(s.name, s.data, cohort.schema, i) for i, s in enumerate(part.sites)],
                             keep_messages=True)
        make_strategy("two_step_bn", cohort.schema, generator="bayesian_network",
                      generator_params={"max_indegree": 2}, min_sites=3, random_state=0,
                      params={"secure_aggregation": secure}).start(grid)
        for msg in grid.sent:
            kind = msg.metadata.message_type
            if kind in kinds and kind not in out and msg.metadata.dst_node_id == 1:
                out[kind] = work / f"{kind}.pb"
                out[kind].write_bytes(message_to_proto(msg).SerializeToString())
    # FedAvg VAE-BGM's most frequent message, an E-step of the latent mixture: it needs the latent codes that the
    # node's state holds (one short round; the last E-step with site 1's state at the end)
    from flwr.common.serde import recorddict_to_proto

    sites = [SiteRuntime(s.name, s.data, cohort.schema, i) for i, s in enumerate(part.sites)]
    grid = InProcessGrid(sites, keep_messages=True)
    make_strategy("fedavg", cohort.schema, generator="vae_bgm", generator_params={"device": "cpu"}, rounds=1,
                  local_epochs=1, min_sites=3, random_state=0).start(grid)
    estep = [m for m in grid.sent if m.metadata.message_type == "query.mixture_estep" and m.metadata.dst_node_id == 1]
    out["query.mixture_estep"] = work / "query.mixture_estep.pb"
    out["query.mixture_estep"].write_bytes(message_to_proto(estep[-1]).SerializeToString())
    (work / "query.mixture_estep.state.pb").write_bytes(recorddict_to_proto(sites[0].state).SerializeToString())
    return out


def run_child(src: Path, message: Path, node_config: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    state = message.with_name(message.stem + ".state.pb")
    done = subprocess.run([sys.executable, "-c", CHILD, str(message), json.dumps(node_config), json.dumps(HEAVY),
                           *([str(state)] if state.is_file() else [])],
                          capture_output=True, text=True, env=env, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the replayed message failed under {src}:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main_src_copy(work: Path) -> Path:
    """``main``'s ``src`` as committed (``git archive``), so that the comparison does not depend on a work tree."""
    dest = work / "before"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "main", "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=None, help="a src folder (default: main's, from git)")
    parser.add_argument("--after", default=str(ROOT / "src"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "clientapp_start.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedsynth-clientapp-start-") as tmp:
        work = Path(tmp)
        before = Path(args.before) if args.before else main_src_copy(work)
        trees = {"before": before.resolve(), "after": Path(args.after).resolve()}
        messages = record(work)
        node_config = {"site-name": "site-1", "data-path": str(work / "sites" / "site-1.csv"),
                       "schema-path": str(work / "sites" / "schema.yaml"), "seed": 0,
                       "audit-log": str(work / "audit.jsonl")}
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {t: {m: [] for m in messages} for t in trees}
        load = [os.getloadavg()[0]]
        for i in range(args.repeat):
            for kind, path in messages.items():
                for tree, src in (trees.items() if i % 2 == 0 else reversed(list(trees.items()))):
                    runs[tree][kind].append(run_child(src, path, node_config))
            load.append(os.getloadavg()[0])
            print(f"repeat {i + 1}/{args.repeat} done (load {load[-1]:.1f})", flush=True)
    result: dict[str, Any] = {
        "benchmark": "clientapp_start",
        "command": "PYTHONPATH=src .venv/bin/python " + " ".join(["benchmarks/bench_clientapp_start.py", *sys.argv[1:]]),
        "trees": {t: str(p) for t, p in trees.items()},
        "main_commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "main"], capture_output=True,
                                      text=True, check=False).stdout.strip(),
        "after_commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True, check=False).stdout.strip(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1min": [round(x, 1) for x in load]},
        "repeat": args.repeat,
        "by_message_type": {},
    }
    for kind in messages:
        entry: dict[str, Any] = {}
        for tree in trees:
            rows = runs[tree][kind]
            entry[tree] = {k: round(statistics.median(r[k] for r in rows), 3)
                           for k in ("flower_s", "import_s", "answer_s", "message_s")}
            entry[tree]["heavy_imports"] = rows[-1]["heavy"]  # beyond those Flower's runtime imported
            entry[tree]["flower_heavy_imports"] = rows[-1]["flower_heavy"]
        entry["ratio_before_after"] = {k: round(entry["before"][k] / entry["after"][k], 2)
                                       for k in ("import_s", "message_s") if entry["after"][k] > 0}
        result["by_message_type"][kind] = entry
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["by_message_type"], indent=1))


if __name__ == "__main__":
    main()
