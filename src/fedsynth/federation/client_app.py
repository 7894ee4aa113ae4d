"""The ClientApp: a node holds exactly one site's rows and answers every strategy's messages with its handlers.

Which site a node is comes from the node's config: in simulation, ``partition-id`` picks one of the
:class:`SiteSource` entries handed to :func:`make_client_app`; in a deployment, the node config names the
site directly (``site-name``, ``data-path`` — a CSV or Parquet file; never a pickle, which could run code —,
``schema-path``, ``seed``, ``audit-log``, and optionally ``state-dir``, the site's own folder for its state between
rounds). Rows are read inside the node and cached per process; only what a handler puts in its reply leaves the node,
and in a deployment every reply is first described in the site's audit log (:mod:`fedsynth.deployment.audit`).

A deployed SuperNode starts a fresh ClientApp process for every message, so nothing a site needs from one message
to the next may live in the process: it lives in Flower's ``context.state`` (which the SuperNode hands to the next
process) and, with ``state-dir``, in that folder per run and step, so that a restarted node or a resumed run
continues exactly (:func:`fedsynth.strategies.site.save_site_state`; FedAvg's optimiser moments and random
generator, the latent codes, the noisy count tables a site already released). Per-process caches only spare
rebuilding what the rows and the message determine.


The site's disclosure policy (:class:`~fedsynth.strategies.policy.SitePolicy`) is the node's own: in a
deployment ``policy-path`` or a ``site-policy.yaml`` beside the data file, then ``policy-<field>`` keys of the
node config; in simulation the :class:`SiteSource`'s ``policy`` (else the node config's keys, else defaults).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedsynth.cohort.schema import TableSchema
from fedsynth.deployment import audit
from fedsynth.errors import FedsynthError
from fedsynth.strategies import records
from fedsynth.strategies.policy import SitePolicy
from fedsynth.strategies.site import SiteHandler, SiteRuntime, all_site_handlers, handle
from fedsynth.strategies.site_budget import site_ledger

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteSource:
    """Where a node finds its site: a name, a data file readable only by that node, and the site's seed."""

    name: str
    data_path: str
    seed: int = 0
    #: The site's own folder for its state between rounds (``None``: memory only).
    state_dir: str | None = None
    #: The site's own disclosure policy (:class:`SitePolicy` fields); ``None``: the safe defaults.
    policy: Mapping[str, Any] | None = None


#: Formats a node reads its rows from (no pickle: a data file must not be able to run code).
ROW_FORMATS = (".csv", ".parquet")


#: Per-process caches (a simulation actor serves several nodes): path -> rows, schema text -> schema.
_DATA: dict[str, pd.DataFrame] = {}
_SCHEMAS: dict[str, TableSchema] = {}


def _read_rows(path: str, schema: TableSchema) -> pd.DataFrame:
    if path not in _DATA:
        p = Path(path)
        if p.suffix.lower() not in ROW_FORMATS:
            raise FedsynthError(
                f"a site's data-path must be a CSV or Parquet file ({', '.join(ROW_FORMATS)}); got a "
                f"{p.suffix or 'suffix-less'} file. Pickles are not read: they can run code."
            )
        frame = pd.read_parquet(p) if p.suffix.lower() == ".parquet" else pd.read_csv(p)
        present = [c for c in schema.model_columns if c in frame.columns]
        _DATA[path] = schema.select(present).coerce(frame[present])
    return _DATA[path]


def _schema(source: Mapping[str, Any] | str) -> TableSchema:
    key = source if isinstance(source, str) else repr(sorted(source.items()))
    if key not in _SCHEMAS:
        _SCHEMAS[key] = TableSchema.from_yaml(source) if isinstance(source, str) else TableSchema.from_dict(source)
    return _SCHEMAS[key]


def site_runtime(context: Context, sources: Sequence[SiteSource], schema: Mapping[str, Any] | None) -> SiteRuntime:
    """The site this node is, from its node config (simulation: ``partition-id``; deployment: explicit keys)."""
    cfg = {records.snake(str(k)): v for k, v in context.node_config.items()}
    if "data_path" in cfg:
        table_schema = _schema(str(cfg["schema_path"]) if "schema_path" in cfg else dict(schema or {}))
        source = SiteSource(str(cfg.get("site_name", f"site-{context.node_id}")), str(cfg["data_path"]),
                            int(cfg.get("seed", 0)), str(cfg["state_dir"]) if cfg.get("state_dir") else None)
        policy = SitePolicy.from_node_config(cfg, source.data_path)
    else:
        source = sources[int(cfg["partition_id"])]
        table_schema = _schema(dict(schema or {}))
        policy = SitePolicy.from_mapping(source.policy) if source.policy else SitePolicy.from_node_config(cfg)
    data = _read_rows(source.data_path, table_schema)
    state_dir = Path(source.state_dir) if source.state_dir else None
    # The ε ledger lives beside the site's data in a deployment, in its private state folder in simulation.
    ledger_dir = Path(source.data_path).parent if "data_path" in cfg else state_dir
    holdout = _read_rows(str(cfg["holdout_path"]), table_schema) if cfg.get("holdout_path") else None
    return SiteRuntime(source.name, data, table_schema, source.seed, context.state, policy=policy,
                       state_dir=state_dir, privacy_ledger=site_ledger(policy, ledger_dir), holdout=holdout)


def audit_log_path(context: Context) -> Path | None:
    """A deployed node's audit log: ``audit-log`` from its node config, else beside its data file; ``None`` in
    simulation (no ``data-path`` in the node config)."""
    cfg = {records.snake(str(k)): v for k, v in context.node_config.items()}
    if cfg.get("audit_log"):
        return Path(str(cfg["audit_log"]))
    return audit.default_log_path(str(cfg["data_path"])) if "data_path" in cfg else None


def make_client_app(
    sources: Sequence[SiteSource] = (),
    schema: Mapping[str, Any] | None = None,
    handlers: Mapping[str, SiteHandler] | None = None,
) -> ClientApp:
    """A ClientApp answering every registered message type (``all_site_handlers``) for the node's site.

    ``sources`` and ``schema`` (``TableSchema.to_dict()``) are small and travel with the app; the rows do not.
    """
    app = ClientApp()
    table = dict(handlers) if handlers is not None else all_site_handlers()
    srcs = tuple(sources)
    sch = dict(schema) if schema is not None else None
    for message_type, handler in table.items():
        category, _, action = message_type.partition(".")
        register = getattr(app, category)(action)

        def run(msg: Message, context: Context, _handler: SiteHandler = handler) -> Message:
            site = site_runtime(context, srcs, sch)
            reply = handle(_handler, msg, site)
            log_path = audit_log_path(context)
            if log_path is not None:
                audit.append_entry(log_path, audit.audit_entry(site.name, msg, reply))
            return reply

        register(run)
    return app


#: The ClientApp a deployment runs (``fedsynth.federation.client_app:app``): each SuperNode's node config names
#: its site (``site-name``, ``data-path``, ``schema-path``, ``seed``).
app = make_client_app()
