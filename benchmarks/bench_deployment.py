"""Deployed on loopback vs Flower's simulation engine vs in process: wall time, messages and bytes per site.

Three sites (MDS cohort, 60/30/10, seed 0, the same site files everywhere), per strategy:

- ``two_step_bn``: the two-step Bayesian network at its default settings (``max_indegree`` 2, as the smoke
  config);
- ``fedavg_vae_bgm``: FedAvg VAE-BGM, ``--rounds`` x ``--local-epochs`` (issue 12: 5 x 60), CPU.

Each strategy runs three ways on the same rows and seeds: in process (:func:`run_in_process`), on Flower's
simulation engine (:func:`run_simulation`) and deployed — a ``flower-superlink`` and three ``flower-supernode``
processes on 127.0.0.1 with TLS and node authentication, started with fedsynth's own commands
(``fedsynth credentials``, ``server start``, ``site register``, ``site start``), the run submitted with
``fedsynth run CONFIG --federation``. No secure aggregation. For every way: the wall time of the whole run
(deployed: the ``fedsynth run`` command, from submission to the model on disk; simulation: the engine's start
to its end; in process: the strategy), the strategy's own phases (hello, domain, training) and, per message type,
the requests sent and the seconds the server waited for their replies; per site: replies sent and their bytes
(deployed: from each site's audit log; otherwise the same figure, :func:`fedsynth.deployment.audit.describe_reply`,
taken at the handler). Ratios deployed/simulation and deployed/in-process.

Where the time of a deployed request goes (measured by ``--probe``): Flower's SuperNode looks for a new message
every 3 s when it found none (``start_client_internal``: ``time.sleep(3)``, not configurable in Flower 1.41), starts
a new ``flwr-clientapp`` process per message (Python, Flower and fedsynth imports), and looks for the
ClientApp's reply every 0.5 s; the ServerApp's ``Grid.send_and_receive`` looks for replies every 3 s (fedsynth's
:class:`~fedsynth.federation.polling.PollingGrid` pulls every 50 ms instead), and SuperExec looks for new tasks
every ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` (fedsynth sets 0.1 s).

Run:  PYTHONPATH=src .venv/bin/python benchmarks/bench_deployment.py [--strategies two_step_bn,fedavg_vae_bgm]
        [--rounds 5] [--local-epochs 60] [--ways deployed,simulation,in_process] [--out benchmarks/results/deployment.json]

Every process it starts is stopped (with its process group) at the end, pass or fail.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("FEDSYNTH_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

ROOT = Path(__file__).resolve().parents[1]
SITES = ("A", "B", "C")
SEEDS = (0, 1, 2)
#: A request's timeout (seconds): long enough for a site's 60 local epochs on a loaded 2-core machine.
REQUEST_TIMEOUT = 900

log = logging.getLogger("bench_deployment")


def strategy_settings(name: str, rounds: int, local_epochs: int) -> dict[str, Any]:
    """Strategy, generator and their settings for one benchmark case (also written as the deployed run config)."""
    if name == "two_step_bn":
        return {"strategy": "two_step_bn", "generator": "bayesian_network", "generator_params": {"max_indegree": 2},
                "rounds": None, "local_epochs": None}
    if name == "fedavg_vae_bgm":
        return {"strategy": "fedavg", "generator": "vae_bgm", "generator_params": {"device": "cpu"},
                "rounds": rounds, "local_epochs": local_epochs}
    raise SystemExit(f"unknown strategy case {name!r}; use two_step_bn or fedavg_vae_bgm")


# -- the three site files ---------------------------------------------------------------------------------------


def _env(home: Path) -> dict[str, str]:
    from fedsynth.deployment.loopback import loopback_env

    return loopback_env(home, {"FEDSYNTH_DATA_DIR": os.environ["FEDSYNTH_DATA_DIR"]})


def _cli(*args: str, env: Mapping[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    from fedsynth.deployment import processes

    done = subprocess.run([processes.executable("fedsynth"), *args], capture_output=True, text=True, env=dict(env),
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"fedsynth {' '.join(args[:3])} failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    return done


def make_sites(work: Path, env: Mapping[str, str]) -> tuple[Path, dict[str, Path]]:
    """Partition the cohort (60/30/10, seed 0) into one file per site, each in its own folder; the schema."""
    from fedsynth.cohort.datasets import NAMED_COHORTS
    from fedsynth.deployment.loopback import site_folders

    _cli("partition", "--cohort", "mds-iwgpm", "--sites", "60,30,10", "--seed", "0", "--out", str(work / "parts"),
         env=env)
    schema_path = work / "schema.yaml"
    NAMED_COHORTS["mds-iwgpm"].schema_factory().to_yaml(schema_path)
    # no holdout at the sites, as when these figures were first measured: the sites score no privacy figures
    return schema_path, site_folders(work / "parts", work, SITES, holdouts=False)


def site_frames(schema_path: Path, files: Mapping[str, Path]) -> tuple[Any, list[tuple[str, Any]]]:
    """The schema and each site's rows as its node reads them (model columns, coerced)."""
    import pandas as pd

    from fedsynth.cohort.schema import TableSchema

    schema = TableSchema.from_yaml(schema_path)
    frames = []
    for name, path in files.items():
        raw = pd.read_csv(path)
        present = [c for c in schema.model_columns if c in raw.columns]
        frames.append((name, schema.select(present).coerce(raw[present])))
    return schema, frames


def build_strategy(case: Mapping[str, Any], schema: Any) -> Any:
    from fedsynth.strategies.registry import make_strategy

    extra = {k: case[k] for k in ("rounds", "local_epochs") if case[k] is not None}
    return make_strategy(case["strategy"], schema, generator=case["generator"],
                         generator_params=dict(case["generator_params"]), min_sites=2, random_state=0,
                         params={"request_timeout": REQUEST_TIMEOUT}, **extra)


# -- counting what leaves each site in process and in simulation --------------------------------------------------


def counting_handlers(folder: Path) -> dict[str, Callable[..., Any]]:
    """Every site handler, wrapped to append one line per reply (site, message type, reply bytes) to
    ``folder/<site>.jsonl`` — the figure a deployed site's audit log records."""
    from flwr.app import Message

    from fedsynth.deployment.audit import describe_reply
    from fedsynth.strategies.site import all_site_handlers

    def wrap(handler: Callable[..., Any]) -> Callable[..., Any]:
        def counted(msg: Any, site: Any) -> Any:
            content = handler(msg, site)
            line = {"message_type": msg.metadata.message_type,
                    "bytes": describe_reply(Message(content, reply_to=msg))["bytes"]}
            with open(folder / f"{site.name}.jsonl", "a") as fh:
                fh.write(json.dumps(line) + "\n")
            return content

        return counted

    return {t: wrap(h) for t, h in all_site_handlers().items()}


def per_site(lines_by_site: Mapping[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, lines in lines_by_site.items():
        by_type: dict[str, int] = {}
        for x in lines:
            by_type[x["message_type"]] = by_type.get(x["message_type"], 0) + 1
        out[name] = {"replies": len(lines), "reply_bytes": int(sum(int(x["bytes"]) for x in lines)),
                     "replies_by_type": dict(sorted(by_type.items()))}
    return out


def _read_lines(folder: Path) -> dict[str, list[dict[str, Any]]]:
    return {p.stem: [json.loads(x) for x in p.read_text().splitlines()] for p in sorted(folder.glob("*.jsonl"))}


def _timings(result: Any) -> dict[str, Any]:
    t = {k: round(float(v), 3) for k, v in result.timings.items()}
    t["strategy_s"] = round(sum(float(result.timings.get(k, 0.0)) for k in ("hello", "domain", "training")), 3)
    return t


def requests_summary(timings: Mapping[str, Any]) -> dict[str, Any]:
    """Sequential requests of a run (each one a message to every site and a wait for all replies) and, per
    message type, how many and the mean seconds the server waited for each one's replies."""
    per_type = {}
    for key, n in timings.items():
        if key.startswith("requests:") and float(n) > 0:
            kind = key.partition(":")[2]
            per_type[kind] = {"requests": int(n),
                              "wait_s_each": round(float(timings.get(f"wait_s:{kind}", 0.0)) / float(n), 2)}
    return {"sequential": sum(v["requests"] for v in per_type.values()), "by_type": dict(sorted(per_type.items()))}


def run_in_process_case(case: Mapping[str, Any], schema: Any, frames: list[tuple[str, Any]], work: Path) -> dict[str, Any]:
    from fedsynth.strategies.in_process import InProcessGrid
    from fedsynth.strategies.site import SiteRuntime

    folder = work / "count-in-process"
    folder.mkdir()
    grid = InProcessGrid([SiteRuntime(n, f, schema, s) for (n, f), s in zip(frames, SEEDS)],
                         counting_handlers(folder))
    strategy = build_strategy(case, schema)
    t0 = time.perf_counter()
    result = strategy.start(grid)
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 2), "timings": _timings(result), "requests": requests_summary(result.timings),
            "secure_aggregation": bool(strategy.params.get("secure_aggregation", False)),
            "sites": per_site(_read_lines(folder)), "model": _model_facts(result.generator)}


def run_simulation_case(case: Mapping[str, Any], schema: Any, frames: list[tuple[str, Any]], work: Path) -> dict[str, Any]:
    from fedsynth.federation.simulation import run_simulation

    folder = work / "count-simulation"
    folder.mkdir()
    strategy = build_strategy(case, schema)
    t0 = time.perf_counter()
    result = run_simulation(strategy, frames, schema, seeds=SEEDS, handlers=counting_handlers(folder))
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 2), "timings": _timings(result), "requests": requests_summary(result.timings),
            "secure_aggregation": bool(strategy.params.get("secure_aggregation", False)),
            "sites": per_site(_read_lines(folder)), "model": _model_facts(result.generator)}


#: The pooled training rows the final models are scored against (set in :func:`main`).
POOL: dict[str, Any] = {}


def _model_facts(generator: Any) -> dict[str, Any]:
    """What identifies the learnt model (a BN's edges; a weight model's weight checksum) and its CSF/GSF
    (:func:`fedsynth.evaluation.quick_scores` of 2,000 sampled rows, seed 0, against the pooled training rows)."""
    import numpy as np

    facts: dict[str, Any] = {}
    if hasattr(generator, "model_") and hasattr(generator.model_, "edges"):
        facts["edges"] = sorted([list(e) for e in generator.model_.edges()])
    elif hasattr(generator, "get_weights"):
        w = generator.get_weights()
        facts["weights_sum"] = float(sum(float(np.abs(np.asarray(v, dtype=np.float64)).sum()) for v in w.values()))
    if POOL:
        from fedsynth.evaluation import quick_scores

        q = quick_scores(POOL["rows"], generator.sample(2000, random_state=0), POOL["schema"], random_state=0)
        facts["scores"] = {"csf": round(float(q["csf"]), 4), "gsf": round(float(q["gsf"]), 4)}
    return facts


# -- deployed on loopback ------------------------------------------------------------------------------------------


@contextmanager
def federation(work: Path, schema_path: Path, files: Mapping[str, Path], env: Mapping[str, str]) -> Iterator[str]:
    """A SuperLink and three SuperNodes on 127.0.0.1 (TLS, node authentication), started by
    :func:`fedsynth.deployment.loopback.start_loopback`; yields the connection name. Every process is stopped at
    the end."""
    from fedsynth.deployment import processes
    from fedsynth.deployment.loopback import start_loopback

    started: list[subprocess.Popen[bytes]] = []
    try:
        # One CPU thread per site, as the simulation engine gives each node one CPU (Ray sets OMP_NUM_THREADS=1
        # in its actors): on one loopback machine three nodes share its cores, as three simulated nodes do.
        fed = start_loopback(work, files, schema_path, env=env, started=started, seeds=dict(zip(SITES, SEEDS)),
                             connection="bench", site_env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        yield fed.connection
    finally:
        for p in reversed(started):
            processes.stop(p, grace=15)


def run_deployed_case(
    label: str, case: Mapping[str, Any], schema_path: Path, files: Mapping[str, Path], work: Path,
    env: Mapping[str, str], connection: str,
) -> dict[str, Any]:
    import yaml

    config = {
        "name": f"bench-{label}",
        "cohort": {"name": "mds-iwgpm"},  # the coordinator's schema: the named cohort's, as every site's file
        "sites": {"proportions": [60, 30, 10]},
        "generator": {"name": case["generator"], "params": dict(case["generator_params"])},
        "strategy": {"name": case["strategy"], "min_sites": 2, "params": {"request_timeout": REQUEST_TIMEOUT,
                                                                          "secure_aggregation": False},
                     **{k: case[k] for k in ("rounds", "local_epochs") if case[k] is not None}},
        "seed": 0,
        "output": {"dir": str(work / "reports"), "run_id": label},
    }
    config_path = work / f"{label}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    audit_before = {n: _audit_lines(files[n]) for n in SITES}
    t0 = time.perf_counter()
    done = _cli("run", str(config_path), "--federation", connection, env=env, timeout=3600)
    wall = time.perf_counter() - t0
    run_dir = work / "reports" / label
    facts = json.loads((run_dir / "manifest.json").read_text())  # the run directory the coordinator wrote
    timings = {k: round(float(v), 3) for k, v in facts.get("timings", {}).items()}
    timings["strategy_s"] = round(sum(float(facts["timings"].get(f"strategy_{k}", 0.0))
                                      for k in ("hello", "domain", "training")), 3)
    # The deployed run scores every round's snapshot at the sites (inside the training phase); the simulation and
    # in-process ways score nothing: their strategy time compares with this one less the scoring.
    timings["strategy_less_scoring_s"] = round(timings["strategy_s"] - float(timings.get("scoring_at_sites", 0.0)), 3)
    secure = bool(facts.get("strategy", {}).get("secure_aggregation", True))
    if secure:
        raise RuntimeError("the deployed benchmark run used secure aggregation; it must run without it")
    lines = {n: [{"message_type": e["message_type"], "bytes": e["bytes"]} for e in _audit_lines(files[n])[len(audit_before[n]):]]
             for n in SITES}
    from fedsynth.generators import load_generator

    strategy_timings = {k[len("strategy_"):]: v for k, v in facts["timings"].items() if k.startswith("strategy_")}
    return {"wall_s": round(wall, 2), "timings": timings, "requests": requests_summary(strategy_timings),
            "secure_aggregation": secure, "sites": per_site(lines), "dropped": facts.get("dropped", []),
            "model": _model_facts(load_generator(run_dir / "model")), "output_tail": done.stdout[-300:]}


def _audit_lines(data: Path) -> list[dict[str, Any]]:
    log_path = data.with_name(data.stem + ".audit.jsonl")
    return [json.loads(x) for x in log_path.read_text().splitlines()] if log_path.is_file() else []


# -- probe: one empty request at a time -----------------------------------------------------------------------------


def clientapp_start_s(env: Mapping[str, str], repeat: int = 3) -> float:
    """Seconds a new Python process takes to import what a ``flwr-clientapp`` process imports before it answers
    (Flower's ClientApp runtime and fedsynth's ClientApp), the median of ``repeat``."""
    import statistics

    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        code = "import flwr.supernode.runtime.run_clientapp, fedsynth.federation.client_app"
        subprocess.run([sys.executable, "-c", code], env=dict(env), check=True)
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 2)


# -- main -------------------------------------------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _write(path: str, out: Mapping[str, Any]) -> None:
    """The results so far (a run stopped half-way keeps what it measured; ``partial`` says so)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1) + "\n")


def _previous_entries(path: str, fresh: Mapping[str, Any]) -> dict[str, Any]:
    """The strategies of an earlier result file that this run did not redo, each with the setup it was measured
    under (``measured_under``): a run of one strategy keeps the other's figures."""
    p = Path(path)
    if not p.is_file():
        return {}
    try:
        old = json.loads(p.read_text())
    except ValueError:
        return {}
    kept = {}
    for name, entry in old.get("strategies", {}).items():
        if name not in fresh:
            under = entry.get("measured_under") or {k: old.get("setup", {}).get(k)
                                                    for k in ("command", "note", "machine", "clientapp_import_s")}
            kept[name] = {**entry, "measured_under": under}
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default="two_step_bn,fedavg_vae_bgm")
    parser.add_argument("--ways", default="deployed,simulation,in_process")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-epochs", type=int, default=60)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "deployment.json"))
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ways = [w.strip() for w in args.ways.split(",") if w.strip()]
    t_bench = time.perf_counter()
    out: dict[str, Any] = {
        "benchmark": "deployment",
        "setup": {
            "cohort": "mds-iwgpm", "sites": dict(zip(SITES, ("60%", "30%", "10%"))), "seeds": dict(zip(SITES, SEEDS)),
            "partition_seed": 0, "secure_aggregation": False, "deployed": "flower-superlink + 3 flower-supernode "
            "processes on 127.0.0.1, TLS and node authentication, started with fedsynth server start / site register "
            "/ site start; run submitted with fedsynth run CONFIG --federation",
            "command": "PYTHONPATH=src .venv/bin/python " + " ".join(["benchmarks/bench_deployment.py", *sys.argv[1:]]),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_at_start":
                        [round(x, 2) for x in os.getloadavg()]},
            "note": args.note,
        },
        "strategies": {},
    }
    with tempfile.TemporaryDirectory(prefix="fedsynth-bench-deploy-") as tmp:
        work = Path(tmp)
        env = _env(work)
        schema_path, files = make_sites(work, env)
        schema, frames = site_frames(schema_path, files)
        out["setup"]["rows"] = {n: len(f) for n, f in frames}
        import pandas as pd

        POOL.update(rows=pd.concat([f for _, f in frames], ignore_index=True), schema=schema)
        out["setup"]["clientapp_import_s"] = clientapp_start_s(env)
        cases = {name.strip(): strategy_settings(name.strip(), args.rounds, args.local_epochs)
                 for name in args.strategies.split(",") if name.strip()}
        results: dict[str, dict[str, Any]] = {name: {"settings": case} for name, case in cases.items()}
        kept = _previous_entries(args.out, cases)  # read before the first partial write replaces the file
        if "deployed" in ways:
            with federation(work, schema_path, files, env) as connection:
                for name, case in cases.items():
                    print(f"[{name}] deployed ...", flush=True)
                    results[name]["deployed"] = run_deployed_case(name, case, schema_path, files, work, env,
                                                                  connection)
                    _write(args.out, {**out, "strategies": {**kept, **results}, "partial": True})
                    print(f"[{name}] deployed: {results[name]['deployed']['wall_s']} s", flush=True)
        for way, fn in (("simulation", run_simulation_case), ("in_process", run_in_process_case)):
            if way not in ways:
                continue
            for name, case in cases.items():
                print(f"[{name}] {way} ...", flush=True)
                folder = work / f"{name}-{way}"
                folder.mkdir()
                results[name][way] = fn(case, schema, frames, folder)
                _write(args.out, {**out, "strategies": {**kept, **results}, "partial": True})
                print(f"[{name}] {way}: {results[name][way]['wall_s']} s", flush=True)
        for name, r in results.items():
            dep, sim, inp = r.get("deployed"), r.get("simulation"), r.get("in_process")
            r["ratios"] = {
                "deployed_vs_simulation_wall": _ratio(dep and dep["wall_s"], sim and sim["wall_s"]),
                "deployed_vs_simulation_strategy": _ratio(dep and dep["timings"]["strategy_s"],
                                                          sim and sim["timings"]["strategy_s"]),
                "deployed_less_scoring_vs_simulation_strategy": _ratio(
                    dep and dep["timings"].get("strategy_less_scoring_s"), sim and sim["timings"]["strategy_s"]),
                "deployed_vs_in_process_wall": _ratio(dep and dep["wall_s"], inp and inp["wall_s"]),
                "simulation_vs_in_process_wall": _ratio(sim and sim["wall_s"], inp and inp["wall_s"]),
            }
            if dep and sim:
                same = {k: dep["model"].get(k) == sim["model"].get(k) for k in ("edges", "weights_sum", "scores")
                        if k in dep["model"]}
                r["deployed_equals_simulation"] = same
        out["strategies"] = {**kept, **results}
    out["setup"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out["bench_wall_s"] = round(time.perf_counter() - t_bench, 1)
    _write(args.out, out)
    print(json.dumps({n: r["ratios"] for n, r in out["strategies"].items()}, indent=1))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
