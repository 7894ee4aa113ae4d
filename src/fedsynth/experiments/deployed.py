"""The ServerApp a deployment runs: the experiment's strategy over the hospitals' SuperNodes, written to a run
directory on the coordinator's machine.

``fedsynth run CONFIG --federation NAME`` submits the shipped Flower app (``deployment/app``), whose
``serverapp`` is :data:`app`. The Flower run config carries the resolved experiment config, the federation's
schema and the number of site nodes to wait for (:func:`run_config_settings`, translated into Flower's keys at
:func:`fedsynth.deployment.flower_config.run_config`); the run directory is ``output.dir/output.run_id`` of that
config, a folder on the machine where the SuperLink runs the ServerApp.

The run directory is written by the same code as a simulated run (:mod:`fedsynth.experiments.run_writer`):
``config.yaml``, ``manifest.json`` (``"engine": "deployment"``, the sites that took part, every site left out of
a request by round), ``snapshots/``, ``metrics.jsonl``, ``model/``, ``report.json`` and ``report.html``. What
differs, because the coordinator holds no real rows:

- each round's snapshot is scored *at the sites* (:mod:`fedsynth.strategies.site_scoring`): every site scores it
  against its own rows and holdout and returns aggregate figures, combined here by row counts;
- the centralized and site-alone references and the final full evaluation are not run;
- ``audit/<site>.jsonl`` is the coordinator's copy of the audit: one line per reply received (message type,
  round, bytes, kind of content per field, never a value), in the format of the sites' own logs, so
  ``fedsynth site audit <run>/audit/A.jsonl`` reads it;
- ``schema.yaml`` is the federation's schema the run was given;
- the control arms of ``evaluation.arms`` are drawn from the final model as in a simulated run
  (:mod:`fedsynth.experiments.run_arms`, ``arms/<name>/``), without a reference arm: the coordinator holds no
  eligible patients to compare them with. Their criteria files are read on the coordinator's machine
  (``fedsynth run --federation`` passes their absolute paths).

A deployed run whose ServerApp died (killed, the coordinator's machine restarted) continues with
``fedsynth run CONFIG --federation NAME --resume RUN_DIR``: the run config says ``resume``, the finished rounds in
the run directory are kept, the strategy continues from its checkpoint (``RUN_DIR/checkpoint``) under the
interrupted run's token, and each site continues from its own state of that run in its state folder
(``fedsynth site start --state-dir``), so the result is the uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from fedsynth.cohort.schema import TableSchema
from fedsynth.deployment import audit
from fedsynth.errors import Problem, ValidationError
from fedsynth.experiments.config import ExperimentConfig, parse_config
from fedsynth.experiments.run import build_strategy, privacy_summary, strategy_settings
from fedsynth.experiments.run_arms import arm_summaries, draw_run_arms, plan_arms
from fedsynth.experiments.run_setup import _expected_rounds, _references, _run_id
from fedsynth.experiments.run_state import run_identity
from fedsynth.experiments.run_writer import Progress, ReportSection, RunDirectory, RunResult, write_run
from fedsynth.federation.server_app import wait_for_nodes
from fedsynth.strategies import records
from fedsynth.strategies.exchange import SiteInfo

log = logging.getLogger(__name__)

#: What the manifest and the report say about the references a simulated run draws.
NO_REFERENCES = ("centralized and site-alone references are not run in a deployment, and there is no final full "
                 "evaluation: both need the sites' rows in one place")

#: A site name that may name a file (site names come from the sites' own node configs).
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


# -- the run config ---------------------------------------------------------------------------------------


def run_config_settings(config: ExperimentConfig, schema: TableSchema, *, num_sites: int,
                        resume: bool = False) -> dict[str, Any]:
    """The snake_case settings of a deployed run's Flower run config (``flower_config.run_config`` makes them
    Flower's): the resolved experiment config, the schema, the site nodes to wait for, and whether to resume."""
    return {"experiment": config.to_yaml_dict(), "schema": schema.to_dict(), "num_sites": int(num_sites),
            "resume": bool(resume)}


@dataclass(frozen=True)
class DeployedSettings:
    """A deployed run's settings, read back from its Flower run config."""

    config: ExperimentConfig
    schema: TableSchema
    num_sites: int
    resume: bool


def read_run_config(run_config: Mapping[str, Any]) -> DeployedSettings:
    """:func:`run_config_settings` read back from a Flower run config (kebab-case keys, JSON text values).

    Raises
    ------
    ValidationError
        A key is missing or not what :func:`run_config_settings` writes; the config does not validate.
    """
    cfg = {records.snake(str(k)): v for k, v in run_config.items()}
    problems = [Problem(k, "missing from the run config", "what `fedsynth run --federation` writes")
                for k in ("experiment", "schema") if not str(cfg.get(k) or "").strip()]
    if problems:
        raise ValidationError("Deployed run config", problems)
    config = parse_config(records.decode_payload(str(cfg["experiment"])), source="deployed run config")
    schema = TableSchema.from_dict(records.decode_payload(str(cfg["schema"])))
    return DeployedSettings(config, schema, int(cfg.get("num_sites") or 1), bool(cfg.get("resume", False)))


# -- the coordinator's audit --------------------------------------------------------------------------------


class AuditingGrid:
    """A grid that appends every reply it receives to ``<folder>/<site>.jsonl`` (:func:`audit.audit_entry`) and
    learns each node's site name from the replies that carry it (``info.site_name``).

    Parameters
    ----------
    grid : Grid
        Flower's grid (or any object with ``get_node_ids`` and ``send_and_receive``).
    folder : Path
        The run directory's ``audit/`` folder.
    progress : callable, optional
        Receives a ``request`` event once each request's replies are in (or its wait ended): its group id, message
        types, how many sites it went to, which answered, answered with an error or sent nothing, and the seconds
        it took (:func:`fedsynth.deployment.progress.describe`).
    """

    def __init__(self, grid: Any, folder: Path, progress: Progress | None = None) -> None:
        self.grid = grid
        self.folder = Path(folder)
        self.progress = progress
        #: Site name by node id, from the sites' replies.
        self.names: dict[int, str] = {}
        #: Training rows by node id, from the sites' hello replies.
        self.rows: dict[int, int] = {}

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()  # type: ignore[no-any-return]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        msgs = list(messages)
        t0 = time.monotonic()
        replies = list(self.grid.send_and_receive(msgs, timeout=timeout))
        seconds = time.monotonic() - t0
        sent = {m.metadata.message_id: m for m in msgs if m.metadata.message_id}
        matched = []
        for reply in replies:
            msg = sent.get(reply.metadata.reply_to_message_id)
            node = msg.metadata.dst_node_id if msg is not None else reply.metadata.src_node_id
            matched.append((node, msg, reply))
            if not reply.has_error():  # names first: one exchange may carry a site's hello and other requests
                self._learn(node, reply)
        for node, msg, reply in matched:
            name = self.names.get(node, f"node-{node}")
            audit.append_entry(self.folder / f"{name}.jsonl", audit.audit_entry(name, msg or reply, reply))
        if self.progress is not None and msgs:
            self.progress("request", self._request_facts(msgs, matched, seconds))
        return replies

    def _request_facts(self, msgs: list[Message], matched: list[tuple[int, Message | None, Message]],
                       seconds: float) -> dict[str, Any]:
        """One request's ``request`` event: which sites answered, answered with an error, or sent nothing."""
        to = sorted({int(m.metadata.dst_node_id) for m in msgs})
        ok = {int(n) for n, _, r in matched if not r.has_error()}
        failed = {int(n) for n, _, r in matched if r.has_error()} - ok

        def name(node: int) -> str:
            return self.names.get(node, f"node-{node}")

        return {"group": ",".join(sorted({str(m.metadata.group_id) for m in msgs if m.metadata.group_id})),
                "message_types": sorted({m.metadata.message_type for m in msgs}), "sent": len(to),
                "answered": [name(n) for n in to if n in ok], "errors": [name(n) for n in to if n in failed],
                "silent": [name(n) for n in to if n not in ok and n not in failed], "seconds": round(seconds, 1)}

    def _learn(self, node: int, reply: Message) -> None:
        content = reply.content
        if "info" in content:
            name = str(records.from_config_record(content["info"]).get("site_name", ""))
            if _FILE_NAME.match(name):
                self.names[node] = name
        if reply.metadata.message_type == "query.hello" and "metrics" in content:
            self.rows[node] = int(records.from_metric_record(content["metrics"]).get("num_examples", 0))

    def sites(self) -> list[SiteInfo]:
        """The sites that said who they are (node id and name), by name."""
        return sorted((SiteInfo(n, name, self.rows.get(n, 0), ()) for n, name in self.names.items()),
                      key=lambda s: s.name)


# -- the run ------------------------------------------------------------------------------------------------


def run_deployed(grid: Any, run_config: Mapping[str, Any], *, progress: Progress | None = None) -> RunResult:
    """Run the experiment a Flower run config describes over ``grid`` and write its run directory.

    Parameters
    ----------
    grid : Grid
        Flower's grid of the deployment (or an in-process grid in tests).
    run_config : mapping
        The Flower run config (:func:`run_config_settings` as ``flwr run`` passes it on).
    progress : callable, optional
        Receives the run's progress events (as :func:`fedsynth.experiments.run.run_experiment`).

    Raises
    ------
    ValidationError
        A bad run config, or a baseline strategy (``centralized``, ``local``: they pool or isolate rows).
    FedsynthError
        Fewer site nodes than ``num_sites`` connected in time; another process writes the run directory.
    """
    settings = read_run_config(run_config)
    config = settings.config
    from fedsynth.strategies.registry import STRATEGIES

    if STRATEGIES[config.strategy.name].baseline:
        raise ValidationError("Deployed run", [Problem("strategy.name", f"{config.strategy.name} is a baseline",
                                                       "a federated strategy (two_step_bn, fedavg, sd_sharing)",
                                                       "run baselines on the simulation engine")])
    run_id = _run_id(config)
    run = RunDirectory(run_id, Path(config.output.dir) / run_id, progress=progress)
    return write_run(run, lambda: _run_locked(grid, settings, run))


def schema_fingerprint(schema: TableSchema) -> str:
    """What stands for the data's fingerprint in a deployment (the coordinator never sees the rows): the
    schema's sha256."""
    text = json.dumps(schema.to_dict(), sort_keys=True, default=str)
    return "schema-sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _privacy_after_stop(config: ExperimentConfig, strategy: Any, grid: Any, *, interrupted: bool) -> dict[str, Any]:
    """What a deployed private run's manifest says of differential privacy when it stops before its end: per site,
    the ε the run's releases cost it, read by the site from its own ledger at the run's δ
    (:func:`~fedsynth.strategies.site_budget.spending_at_sites`); after an interrupt the sites are not asked."""
    from fedsynth.privacy.accounting import json_float
    from fedsynth.strategies.site_budget import spending_at_sites

    budget = config.privacy
    assert budget is not None
    out: dict[str, Any] = {"budget": {"epsilon": budget.epsilon, "delta": budget.delta},
                           "status": "the run stopped before its end",
                           "epsilon_left_before": {k: json_float(v) for k, v in (strategy.epsilon_left_ or {}).items()}}
    not_asked = {"epsilon_spent_by_site": {}, "not_reached": sorted(out["epsilon_left_before"])}
    note = ("what each site's ledger records of this run, read by the site at the run's delta when asked after the "
            "run stopped; a site not reached holds its own figure in its ledger (privacy_ledger.json beside its data)")
    if interrupted:
        return {**out, **not_asked, "note": "the run was interrupted, so the sites were not asked; " + note}
    try:
        asked = spending_at_sites(strategy, grid, budget.delta)
    except KeyboardInterrupt:  # a signal while asking: stop asking; the run's own error is still the one raised
        return {**out, **not_asked, "note": "interrupted while the sites were asked; " + note}
    except Exception:  # never hide the run's own error behind the ledgers'
        log.exception("could not ask the sites what the stopped run cost them")
        return {**out, **not_asked, "note": "the sites could not be asked; " + note}
    figures = [v for v in asked["epsilon_spent_by_site"].values() if not isinstance(v, str)]
    if figures and not any(figures):
        out["status"] = "the run stopped before any site released"
    return {**out, **asked, "note": note}


def _run_locked(grid: Any, settings: DeployedSettings, run: RunDirectory) -> RunResult:
    config, schema = settings.config, settings.schema
    arm_plan = plan_arms(config, schema)  # every criteria file read and checked before anything trains
    identity = run_identity(config, schema_fingerprint(schema))
    deployed_settings = strategy_settings(config, deployed=True)
    strategy_facts = {k: v for k, v in deployed_settings.items() if k != "params"}
    # On by default in a deployment: the coordinator learns sums over the sites, never one site's table or update.
    strategy_facts["secure_aggregation"] = bool(deployed_settings["params"].get("secure_aggregation", False))
    skipped = list(_references(config))
    notes = [*config.notes]
    if skipped:
        notes.append(f"references {', '.join(skipped)} asked for: {NO_REFERENCES}")
    facts = {
        "engine": "deployment",
        "seeds": {"seed": config.seed, "site_seeds": "each site's own (fedsynth site start --seed)"},
        "data": {"fingerprint": identity["data_fingerprint"], "n_train": None, "n_holdout": None,
                 "note": "the coordinator holds no rows: each site reads its own file and keeps its own holdout"},
        "sites": [],
        "strategy": {"name": config.strategy.name, "engine": "deployment", **strategy_facts},
        "notes": notes,
        "sites_left_out": [],
        "references": NO_REFERENCES,
    }
    run.begin(config, schema, identity, facts, resume=settings.resume,
              expected_rounds=_expected_rounds(config, settings.num_sites))
    schema.to_yaml(run.path / "schema.yaml")
    audited = AuditingGrid(grid, run.path / "audit", progress=run.emit)
    strategy = build_strategy(config, schema, run.path, deployed=True)
    scoring_seconds: list[float] = []

    def score(synthetic: pd.DataFrame, rr: Any) -> dict[str, Any]:  # at the sites, against their own rows
        from fedsynth.encoding.domain import Domain
        from fedsynth.strategies.site_scoring import score_at_sites

        t0 = time.perf_counter()
        domain = getattr(rr.generator, "domain", None) or Domain.from_data(synthetic, schema)
        got = score_at_sites(strategy, audited, audited.sites(), synthetic, domain, seed=config.seed,
                             server_round=int(rr.server_round))
        scoring_seconds.append(time.perf_counter() - t0)
        return got.as_scores()

    on_round, _ = run.callbacks(score, n_default=lambda: sum(audited.rows.values()))
    run.emit("phase", {"phase": f"{config.strategy.name} (deployment)"})
    t0 = time.perf_counter()
    wait_for_nodes(audited, settings.num_sites, timeout=float(strategy.params["node_timeout"]))  # type: ignore[arg-type]
    try:
        result = strategy.start(audited, on_round=on_round)
    except BaseException as exc:
        if config.privacy is not None:  # the manifest says what the sites' ledgers hold of the run
            run.manifest["privacy"] = _privacy_after_stop(config, strategy, audited, interrupted=not isinstance(
                exc, Exception))
        raise
    run.timings["strategy"] = time.perf_counter() - t0
    run.timings["scoring_at_sites"] = sum(scoring_seconds)
    run.timings.update({f"strategy_{k}": v for k, v in result.timings.items()})
    held = {s.name: s for s in result.sites}
    run.manifest["sites"] = [{"name": s.name, "n_rows": s.n_rows,
                              "lacks": [c for c in schema.model_columns if c not in s.columns]} for s in held.values()]
    run.manifest["data"]["n_train"] = sum(s.n_rows for s in result.sites)
    run.manifest["dropped"] = result.dropped
    run.manifest["dropped_by_round"] = dropped_by_round(result.dropped)
    run.manifest["left_out"] = result.left_out
    run.manifest["privacy"] = privacy_summary(config, strategy)
    run.write_manifest()
    run.save_model(result, config.strategy.name)
    t0 = time.perf_counter()
    # no real reference: the coordinator holds no eligible patients (run_arms.REFERENCE_SOURCE)
    arms = draw_run_arms(arm_plan, run.path, real_data=None, random_state=config.seed, progress=run.emit)
    run.timings["arms"] = time.perf_counter() - t0

    final = run.rounds[-1] if run.rounds else {}
    final_scores = dict(final.get("scores") or {})
    sections = report_sections(final, result.dropped, run.path / "audit")
    final_extra = {k: final_scores.get(k) for k in ("dcr_share", "mia_auc", "exact_copies", "scored_at_sites")}
    deployment = {"engine": "deployment", "scores": "computed at the sites, combined by row counts",
                  "figures": {row[0]: {"what": row[1], "combined": row[2]} for row in _method_rows()},
                  "references": NO_REFERENCES, "dropped": result.dropped,
                  "audit": {site: summary.to_dict() for site, summary in audit_summaries(run.path / "audit").items()}}
    return run.finish(left_out=result.left_out, final_extra=final_extra, sections=sections, arms=arms,
                      report_extra={"deployment": deployment, "arms": arm_summaries(arms)})


def dropped_by_round(dropped: Iterable[Mapping[str, str]]) -> dict[str, list[dict[str, str]]]:
    """The sites left out of each request, by its round (the request's group id: ``summary``, ``counts-003``,
    ``round-002``, ``score-001`` ...)."""
    out: dict[str, list[dict[str, str]]] = defaultdict(list)
    for d in dropped:
        out[str(d["round"])].append({"site": d["site"], "message_type": d["message_type"], "reason": d["reason"]})
    return dict(out)


def audit_summaries(folder: Path) -> dict[str, audit.AuditSummary]:
    """The coordinator's audit per site (``audit/<site>.jsonl``), summarised."""
    if not folder.is_dir():
        return {}
    return {p.stem: audit.summarize(audit.read_log(p)) for p in sorted(folder.glob("*.jsonl"))}


def _method_rows() -> list[list[str]]:
    from fedsynth.strategies.site_scoring import method_lines

    return method_lines()


#: The figures whose holdout baseline the report shows beside them (figure -> its holdout counterpart).
_HOLDOUT_BESIDE = {"nndr_mean": "nndr_holdout_mean", "nndr_p5": "nndr_holdout_p5", "exact_copies": "exact_copies_holdout"}

#: The method row standing for every CSF/GSF component (:func:`fedsynth.strategies.site_scoring.method_lines`).
_COMPONENT_ROW = "csf_component.* / gsf_component.*"

#: The per-site figures of the report: key in the site's scores -> column heading.
_SITE_COLUMNS = {"num_examples": "training rows", "holdout_rows": "holdout rows", "csf": "CSF", "gsf": "GSF",
                 "nndr_p5": "NNDR p5", "dcr_share": "DCR share", "mia_auc": "MIA AUC", "exact_copies": "exact copies"}


def final_figures(final: Mapping[str, Any]) -> dict[str, Any]:
    """The combined figures of a round's metrics entry, flat and by the names of :data:`site_scoring.FIGURES`
    (``nndr_mean``, ``nndr_holdout_p5`` ...; ``csf_component.<name>`` for the components): numbers, or None."""
    scores = dict(final.get("scores") or {})
    components = dict(final.get("components") or {})
    nndr = scores.get("nndr")
    if not isinstance(nndr, Mapping):
        nndr = {}
    syn = dict(nndr.get("synthetic") or {})
    hold = dict(nndr.get("holdout") or {})
    out: dict[str, Any] = {k: v for k, v in {**components, **scores}.items() if isinstance(v, (int, float))}
    out.update(csf=final.get("csf"), gsf=final.get("gsf"),
               nndr_mean=syn.get("mean", final.get("nndr")), nndr_p5=syn.get("p5", final.get("nndr_p5")),
               nndr_holdout_mean=hold.get("mean"), nndr_holdout_p5=hold.get("p5"))
    for key in ("csf_components", "gsf_components"):
        prefix = key.replace("_components", "_component.")
        out.update({prefix + str(name): v for name, v in dict(components.get(key) or {}).items()})
    return out


def report_sections(final: Mapping[str, Any], dropped: Iterable[Mapping[str, str]], audit_dir: Path) -> list[ReportSection]:
    """The deployment's parts of ``report.html``: how each figure was computed, the final round per site, the
    sites left out, and what the coordinator received from each site."""
    from fedsynth.deployment.audit import format_bytes

    values = final_figures(final)
    components = sorted(k for k in values if k.startswith(("csf_component.", "gsf_component.")))
    rows: list[list[Any]] = []
    for name, what, how in _method_rows():
        if name == _COMPONENT_ROW:  # one row per component the sites returned
            rows.extend([c, f"component of {c.split('_', 1)[0].upper()}, at the site", how, values[c], ""]
                        for c in components)
            continue
        baseline = values.get(_HOLDOUT_BESIDE[name]) if name in _HOLDOUT_BESIDE else ""
        rows.append([name, what, how, values.get(name), baseline])
    paragraphs = [
        ("This run was deployed: the coordinator holds no real rows. After each round the coordinator sent the "
         "synthetic snapshot to the sites; each site scored it against its own training rows and, when it keeps "
         "one, its own holdout (rows that never trained the model), and returned aggregate figures only (one "
         "number per figure, rounded under its policy). The figures below are combined over the sites as stated; "
         "they are not the pooled figures: nearest neighbours are searched within one site's rows, and "
         "significance-based components use each site's own tests."),
        NO_REFERENCES[0].upper() + NO_REFERENCES[1:] + ".",
    ]
    if not components:
        paragraphs.append("The components of CSF and GSF are not shown: no site returned any for this round.")
    methods = ReportSection(
        "Scores computed at the sites", paragraphs,
        ["figure", "what", "how the sites' values were combined", f"round {final.get('round', '-')}",
         "holdout baseline"],
        rows,
    )
    scores = dict(final.get("scores") or {})
    per_site = dict(scores.get("site_scores") or {})
    counts = ("num_examples", "holdout_rows")
    sites = ReportSection(
        "Figures per site (last round)",
        [("Each site's own figures of the last snapshot, against its own rows and holdout; its training rows "
          "(holdout rows for the holdout-based figures) are its weight in the combined figures above.")]
        if per_site else ["No site returned scores."],
        ["site", *_SITE_COLUMNS.values()],
        [[site, *(None if f.get(k) is None else (int(f[k]) if k in counts else f[k]) for k in _SITE_COLUMNS)]
         for site, f in sorted(per_site.items())],
    )
    for reason_site, reason in dict(scores.get("scoring_left_out") or {}).items():
        sites.paragraphs.append(f"Site {reason_site} did not score the last snapshot: {reason}.")
    dropped = list(dropped)
    left = ReportSection(
        "Sites left out",
        [("Every request a site did not answer in time (or answered with an error): that site was left out of that "
         "request and the run went on with the sites that answered.")] if dropped else
        ["No site was left out of any request."],
        ["site", "message type", "round", "reason"] if dropped else [],
        [[d["site"], d["message_type"], d["round"], d["reason"]] for d in dropped],
    )
    summaries = audit_summaries(audit_dir)
    received = ReportSection(
        "What the coordinator received (audit)",
        [("One line per reply received is kept in audit/<site>.jsonl (message type, round, bytes, kind of content per "
         "field; never a value); `fedsynth site audit` reads it like a site's own log.")],
        ["site", "replies", "errors", "size", "kinds of content (fields, size)", "first", "last"],
        [[site, s.n_replies, s.n_errors, format_bytes(s.bytes),
          "; ".join(f"{k}: {v['fields']} fields, {format_bytes(v['bytes'])}" for k, v in sorted(s.by_kind.items())),
          s.first, s.last]
         for site, s in summaries.items()],
    )
    return [methods, sites, left, received]


#: The ServerApp a deployment runs (``fedsynth.experiments.deployed:app``, named by the shipped Flower app).
app = ServerApp()


@app.main()
def _main(grid: Grid, context: Context) -> None:
    from fedsynth.deployment.progress import stdout_progress
    from fedsynth.federation.polling import PollingGrid

    # Replies are pulled every 50 ms, not every 3 s as Flower's send_and_receive does (see federation.polling).
    # Progress goes to standard output: Flower keeps it as the run's log, streamed to `fedsynth run --federation`.
    result = run_deployed(PollingGrid(grid), context.run_config, progress=stdout_progress())
    log.info("run directory %s; report %s", result.run_dir, result.report_html)
