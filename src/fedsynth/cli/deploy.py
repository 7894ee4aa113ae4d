"""Deployment commands: ``credentials``, ``server start``, ``site register``, ``site start``, ``site audit``.

Each wraps one of Flower's own executables (``flower-superlink``, ``flower-supernode``, ``flwr``); fedsynth
checks its inputs first, so that a missing certificate, a wrong CA or an expired certificate is reported in one
message a person can act on (exit code 2) instead of a connection error from deep inside Flower.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from fedsynth.cli._common import EXIT_BAD_INPUT, console, err_console, handle_errors, print_json

server_app = typer.Typer(help="The coordinator: a Flower SuperLink.", no_args_is_help=True)
site_app = typer.Typer(help="A hospital: its SuperNode, its registration, its audit log.", no_args_is_help=True)

#: Connection name ``site register`` writes into Flower's configuration unless told otherwise.
DEFAULT_CONNECTION = "fedsynth"


def register(app: typer.Typer) -> None:
    app.command("credentials")(credentials)
    app.add_typer(server_app, name="server")
    app.add_typer(site_app, name="site")
    server_app.command("start")(server_start)
    site_app.command("register")(site_register)
    site_app.command("start")(site_start)
    site_app.command("audit")(site_audit)


def _sites(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


@handle_errors
def credentials(
    out: Annotated[Path, typer.Option("--out", help="Folder for ca.pem, server.pem, server.key and nodes/<site>[.pub].")],
    sites: Annotated[str, typer.Option("--sites", help="Site names, comma-separated, e.g. A,B,C.")],
    hosts: Annotated[str, typer.Option("--hosts", help="Host names/IPs the SuperLink is reached at.")] = "127.0.0.1,localhost",
    valid_days: Annotated[int, typer.Option("--valid-days", help="Validity of the certificates, days.")] = 365,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace credentials already in --out.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> None:
    """Development credentials: a CA, a SuperLink certificate for --hosts, an ECDSA node key pair per site.

    For trials only; production uses the hospitals' PKI and keys generated at each site.
    """
    from fedsynth.deployment.credentials import make_credentials

    creds = make_credentials(out, _sites(sites), hosts=_sites(hosts), valid_days=valid_days, overwrite=overwrite)
    files = {"ca": str(creds.ca_cert), "server_cert": str(creds.server_cert), "server_key": str(creds.server_key),
             "nodes": {s: {"private": str(k), "public": str(p)} for s, (k, p) in creds.node_keys.items()}}
    if fmt == "json":
        print_json(files)
        return
    console.print(f"Development CA:      {creds.ca_cert}  (give it to every site: --root-cert)")
    console.print(f"SuperLink TLS:       {creds.server_cert}, {creds.server_key}  (coordinator only)")
    for s, (k, p) in creds.node_keys.items():
        console.print(f"Site {s}: private key {k} (stays at the site), public key {p} (register it)")


@handle_errors
def server_start(
    port: Annotated[int, typer.Option("--port", help="Port of the SuperLink (Fleet, Control and Runtime APIs).")] = 9093,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (127.0.0.1 for loopback only).")] = "0.0.0.0",
    credentials_dir: Annotated[Path | None, typer.Option("--credentials", help="A `fedsynth credentials` folder "
                                                "(ca.pem, server.pem, server.key).")] = None,
    ssl_ca: Annotated[Path | None, typer.Option("--ssl-ca", help="CA certificate (PEM).")] = None,
    ssl_cert: Annotated[Path | None, typer.Option("--ssl-cert", help="SuperLink certificate (PEM).")] = None,
    ssl_key: Annotated[Path | None, typer.Option("--ssl-key", help="SuperLink private key (PEM).")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="No TLS (loopback trials only).")] = False,
    no_node_auth: Annotated[bool, typer.Option("--no-node-auth", help="Accept any SuperNode (trials only).")] = False,
    database: Annotated[Path | None, typer.Option("--database", help="SuperLink state file (default: in memory).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the inputs and print the command; start nothing.")] = False,
) -> None:
    """Start the coordinator's Flower SuperLink: TLS and node authentication on, app dependencies not installed
    at run time. Refuses to start without certificates unless --insecure is given."""
    from fedsynth.deployment import processes
    from fedsynth.errors import Problem, ValidationError

    tls = _server_tls(credentials_dir, ssl_ca, ssl_cert, ssl_key, insecure)
    cmd = processes.superlink_command(host=host, port=port, tls=tls, node_auth=not no_node_auth, database=database)
    if insecure:
        err_console.print("[yellow]Warning:[/] --insecure: the SuperLink runs WITHOUT TLS; traffic is readable "
                          "by anyone on the network.")
    if no_node_auth:
        err_console.print("[yellow]Warning:[/] --no-node-auth: any SuperNode may join.")
    if dry_run:
        # one unwrapped line a shell reads back as the same arguments (--node-config is a single argument)
        console.print(shlex.join(cmd), markup=False, highlight=False, soft_wrap=True)
        return
    if not 0 < port < 65536:
        raise ValidationError("Command line", [Problem("--port", f"got {port}", "1-65535")])
    console.print(f"SuperLink on {host}:{port} ({'no TLS' if tls is None else 'TLS'}, "
                  f"{'no node authentication' if no_node_auth else 'node authentication'}); Ctrl-C stops it.")
    code, output = processes.run_foreground(cmd)
    if processes.flower_exit_code(output) is not None:
        err_console.print(f"[bold red]Error:[/] the SuperLink stopped with Flower exit code "
                          f"{processes.flower_exit_code(output)} (see above).")
        raise typer.Exit(EXIT_BAD_INPUT)
    raise typer.Exit(code)


def _server_tls(credentials_dir: Path | None, ca: Path | None, cert: Path | None, key: Path | None,
                insecure: bool) -> Any:
    from fedsynth.deployment import processes
    from fedsynth.errors import Problem, ValidationError

    if credentials_dir is not None:
        ca = ca or credentials_dir / "ca.pem"
        cert = cert or credentials_dir / "server.pem"
        key = key or credentials_dir / "server.key"
    if insecure:
        return None
    if ca is None or cert is None or key is None:
        raise ValidationError("SuperLink", [Problem(
            "TLS", "no certificates given, and the SuperLink does not start without TLS",
            "--credentials DIR, or --ssl-ca, --ssl-cert and --ssl-key",
            "make development ones with `fedsynth credentials --out DIR --sites A,B,C`, or " + processes.INSECURE_FIX)])
    problems = processes.check_server_tls(ca, cert, key)
    if problems:
        raise ValidationError("SuperLink TLS files", problems)
    return processes.ServerTLS(ca, cert, key)


@handle_errors
def site_register(
    name: Annotated[str, typer.Argument(help="The site's name (as in its SuperNode's --name).")],
    public_key: Annotated[Path, typer.Argument(help="The site's public node key (OpenSSH), e.g. nodes/A.pub.")],
    superlink: Annotated[str, typer.Option("--superlink", help="HOST:PORT of the SuperLink.")] = "127.0.0.1:9093",
    root_cert: Annotated[Path | None, typer.Option("--root-cert", help="CA certificate that verifies the SuperLink.")] = None,
    connection: Annotated[str, typer.Option("--federation", help="Name of the Flower connection entry "
                                   "to write and use.")] = DEFAULT_CONNECTION,
    insecure: Annotated[bool, typer.Option("--insecure", help="The SuperLink runs without TLS.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> None:
    """Register a site's public node key with the SuperLink (`flwr supernode register`), on the coordinator."""
    import json
    import subprocess

    from fedsynth.deployment import flower_config, processes
    from fedsynth.deployment.credentials import check_site_name
    from fedsynth.errors import FedsynthError, ValidationError

    problems = check_site_name(name, "NAME") + processes.check_public_key(public_key)
    if problems:
        raise ValidationError("Site registration", problems)
    problem = processes.probe_superlink(superlink, None if insecure else root_cert) if (root_cert or insecure) else None
    if problem is not None:
        raise ValidationError("Site registration", [problem])
    flower_config.write_connection(connection, superlink, root_cert=root_cert, insecure=insecure)
    cmd = [processes.executable("flwr"), "supernode", "register", str(public_key.resolve()), connection,
           "--name", name, "--format", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=processes.child_env(), check=False)
    try:
        answer = json.loads(done.stdout[done.stdout.find("{"):]) if "{" in done.stdout else {}
    except ValueError:
        answer = {}
    if done.returncode != 0 or not answer.get("success"):
        detail = (answer.get("error-message") or done.stderr or done.stdout or "").strip().splitlines()
        raise FedsynthError(f"the SuperLink did not register site {name!r}: {' '.join(detail)[-400:]}. "
                            "A key can be registered once; `flwr supernode list " + connection + "` shows the nodes.")
    if fmt == "json":
        print_json({"site": name, "node_id": answer.get("node-id"), "connection": connection})
    else:
        console.print(f"Site {name} registered as node {answer.get('node-id')} at {superlink}.")


@handle_errors
def site_start(
    superlink: Annotated[str, typer.Option("--superlink", help="HOST:PORT of the coordinator's SuperLink.")],
    data: Annotated[Path, typer.Option("--data", help="This site's rows: CSV or Parquet (never leaves the site).")],
    schema: Annotated[Path, typer.Option("--schema", help="The federation's schema YAML (the same at every site).")],
    name: Annotated[str, typer.Option("--name", help="This site's name.")],
    root_cert: Annotated[Path | None, typer.Option("--root-cert", help="CA certificate that verifies the SuperLink.")] = None,
    key: Annotated[Path | None, typer.Option("--key", help="This site's private node key (OpenSSH).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="This site's seed.")] = 0,
    audit_log: Annotated[Path | None, typer.Option("--audit-log", help="Audit log (default: beside --data, "
                                          "<data>.audit.jsonl).")] = None,
    holdout: Annotated[Path | None, typer.Option("--holdout", help="This site's holdout: its own rows kept out of "
                                        "training, for the privacy figures of the snapshots it scores (default: "
                                        "<data>.holdout.csv beside --data, when present).")] = None,
    port: Annotated[int, typer.Option("--port", help="Local port of the node's ClientApp API (one per node).")] = 9094,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help="This site's own folder for its state "
                                         "between rounds, per run (default: beside --data, <data>.state/).")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="The SuperLink runs without TLS (trials only).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check everything and print the command; start nothing.")] = False,
) -> None:
    """Start this hospital's Flower SuperNode: its rows stay here, its replies are written to its audit log.

    Refuses to start without --root-cert unless --insecure is given; checks the data, schema, key and the
    SuperLink's certificate first.
    """
    from fedsynth.deployment import audit, processes
    from fedsynth.deployment.credentials import check_site_name
    from fedsynth.errors import Problem, ValidationError

    problems = check_site_name(name, "--name") + _check_site_data(data, schema)
    if holdout is None and data.with_name(data.stem + ".holdout" + data.suffix).is_file():
        holdout = data.with_name(data.stem + ".holdout" + data.suffix)
    if holdout is not None:
        problems += [Problem("--holdout", p.found, p.valid, p.fix) for p in _check_site_data(holdout, schema)
                     if p.where == "--data"]
    if not insecure and root_cert is None:
        problems.append(Problem("--root-cert", "no root certificate given, and the site does not connect without TLS",
                                "the coordinator's CA certificate (ca.pem)", "give --root-cert, or " +
                                processes.INSECURE_FIX))
    elif root_cert is not None and not root_cert.is_file():
        problems.append(Problem("--root-cert", f"no file at {root_cert}", "the coordinator's CA certificate"))
    if key is not None:
        problems += processes.check_node_key(key)
    if problems:
        raise ValidationError(f"Site {name}", problems)
    problem = processes.probe_superlink(superlink, None if insecure else root_cert)
    if problem is not None:
        raise ValidationError(f"Site {name}", [problem])
    log_path = (audit_log or audit.default_log_path(data)).resolve()
    node_config = {"site-name": name, "data-path": str(data.resolve()), "schema-path": str(schema.resolve()),
                   "seed": seed, "audit-log": str(log_path),
                   "state-dir": str((state_dir or data.with_name(data.stem + ".state")).resolve())}
    if holdout is not None:
        node_config["holdout-path"] = str(holdout.resolve())
    cmd = processes.supernode_command(superlink=superlink, root_cert=None if insecure else root_cert, key=key,
                                      node_config=node_config, port=port)
    if dry_run:
        # one unwrapped line a shell reads back as the same arguments (--node-config is a single argument)
        console.print(shlex.join(cmd), markup=False, highlight=False, soft_wrap=True)
        return
    if insecure:
        err_console.print("[yellow]Warning:[/] --insecure: this site talks to the SuperLink WITHOUT TLS.")
    console.print(f"Site {name}: SuperNode connecting to {superlink}; audit log {log_path}; "
                  f"holdout {holdout or 'none (no holdout-based privacy figures)'}; Ctrl-C stops it.")
    code, output = processes.run_foreground(cmd)
    flower_code = processes.flower_exit_code(output)
    if flower_code == processes.SUPERNODE_CONNECTION_ERROR:
        err_console.print(
            f"[bold red]Error:[/] the SuperLink at {superlink} refused site {name}. Its TLS certificate was accepted, "
            "so the node key is the likely cause: ask the coordinator to register this site's public key "
            f"(`fedsynth site register {name} {name}.pub`), and check that --key is this site's private key.",
            markup=True, highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT)
    if flower_code == processes.SUPERNODE_NODE_AUTH_KEY_INVALID:
        err_console.print("[bold red]Error:[/] Flower could not read the node key given as --key.")
        raise typer.Exit(EXIT_BAD_INPUT)
    raise typer.Exit(code)


def _check_site_data(data: Path, schema: Path) -> list[Any]:
    """Problems with a site's data file and schema (readable, CSV/Parquet, columns the schema knows)."""
    import importlib.util

    from fedsynth.cohort.schema import TableSchema
    from fedsynth.errors import FedsynthError, Problem

    problems: list[Problem] = []
    if not schema.is_file():
        problems.append(Problem("--schema", f"no file at {schema}", "the federation's schema YAML"))
    if not data.is_file():
        problems.append(Problem("--data", f"no file at {data}", "this site's CSV or Parquet file"))
    elif data.suffix.lower() not in (".csv", ".parquet"):
        problems.append(Problem("--data", f"a {data.suffix or 'suffix-less'} file", ".csv or .parquet (pickle is "
                                "never read: it can run code)"))
    elif data.suffix.lower() == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        problems.append(Problem("--data", "Parquet needs the pyarrow package", ".csv, or install pyarrow"))
    if problems:
        return problems
    try:
        table = TableSchema.from_yaml(schema)
    except FedsynthError as exc:
        return [Problem("--schema", f"not a valid schema ({str(exc).splitlines()[0]})", "a schema YAML")]
    import pandas as pd

    header = list(pd.read_csv(data, nrows=0).columns) if data.suffix.lower() == ".csv" else \
        list(pd.read_parquet(data).columns)
    held = [c for c in table.model_columns if c in header]
    if not held:
        problems.append(Problem("--data", "none of the schema's columns is in the file",
                                f"a header naming the schema's columns ({len(table.model_columns)} of them)"))
    return problems


@handle_errors
def site_audit(
    log: Annotated[Path, typer.Argument(help="A site's audit log (JSON lines).")],
    fmt: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> None:
    """Summarise what left this site: replies, bytes and kinds of content, per run and message type, and when."""
    from rich.table import Table

    from fedsynth.deployment.audit import format_bytes, read_log, summarize

    summary = summarize(read_log(log))
    if fmt == "json":
        print_json(summary.to_dict())
        return
    console.print(f"Site {summary.site}: {summary.n_replies} replies ({summary.n_errors} errors), "
                  f"{format_bytes(summary.bytes)}, from {summary.first} to {summary.last}. No value is logged.")
    for title, rows, unit in (("Kind of content", summary.by_kind, "fields"),
                              ("Message type", summary.by_message_type, "replies"),
                              ("Run", summary.runs, "replies")):
        table = Table(title=title)
        table.add_column(title)
        table.add_column(unit, justify="right")
        table.add_column("bytes", justify="right")
        if title == "Run":
            table.add_column("from")
            table.add_column("to")
        for key, v in rows.items():
            extra = [str(v["first"]), str(v["last"])] if title == "Run" else []
            table.add_row(key, str(v[unit]), format_bytes(int(v["bytes"])), *extra)
        console.print(table)


def run_deployed(
    cfg: Any,
    *,
    federation: str,
    out: Path | None,
    superlink: str | None,
    root_cert: Path | None,
    insecure: bool,
    num_sites: int | None,
    resume: Path | None = None,
) -> None:
    """``fedsynth run CONFIG --federation NAME``: submit the experiment to a SuperLink with ``flwr run``.

    Writes the connection entry ``NAME`` into Flower's configuration when ``superlink`` is given, then runs
    ``flwr run`` from the app folder fedsynth ships, with the resolved config, the schema and the number of site
    nodes as its run config, and waits for the run to end. The ServerApp (:mod:`fedsynth.experiments.deployed`)
    runs on the SuperLink's machine and writes the run directory there, at the absolute path this command
    prints: run it on the coordinator. ``resume``: a deployed run directory to continue (same config).
    While the run goes on, ``flwr run --stream`` passes on the ServerApp's log, whose progress lines
    (:mod:`fedsynth.deployment.progress`) say how each request and round went.
    """
    import datetime as dt
    import tempfile

    from fedsynth.cohort.datasets import NAMED_COHORTS
    from fedsynth.cohort.schema import TableSchema
    from fedsynth.deployment import flower_config, processes
    from fedsynth.deployment.progress import PREFIX
    from fedsynth.errors import FedsynthError, Problem, ValidationError
    from fedsynth.experiments.deployed import run_config_settings
    from fedsynth.experiments.run_state import read_manifest
    from fedsynth.strategies.registry import STRATEGIES

    problems = []
    if cfg.cohort.schema_file:
        schema = TableSchema.from_yaml(cfg.cohort.schema_file)
    elif cfg.cohort.name in NAMED_COHORTS:
        schema = NAMED_COHORTS[cfg.cohort.name].schema_factory()
    else:
        problems.append(Problem("cohort.schema_file", "not set, and the coordinator holds no rows to infer it from",
                                "the federation's schema YAML", "fedsynth describe site.csv --schema-out schema.yaml"))
    if cfg.cohort.schema_overrides:
        problems.append(Problem("cohort.schema_overrides", "not applied in a deployment",
                                "overrides written into cohort.schema_file (the file every site starts with)"))
    if STRATEGIES[cfg.strategy.name].baseline:
        problems.append(Problem("strategy.name", f"{cfg.strategy.name} is a baseline (it pools or isolates rows)",
                                "a federated strategy: " + ", ".join(k for k, v in STRATEGIES.items() if not v.baseline),
                                "run baselines without --federation"))
    n_sites = num_sites or cfg.sites.n_sites
    if not n_sites:
        problems.append(Problem("--num-sites", "unknown", "how many site nodes the run waits for"))
    if resume is not None and read_manifest(resume) is None:
        problems.append(Problem("--resume", f"{str(resume)!r} is not a run directory (no readable manifest.json)",
                                "a folder a deployed run wrote"))
    if problems:
        raise ValidationError("Deployed run", problems)
    if cfg.evaluation.arms:  # read by the ServerApp on this machine, from wherever the SuperLink was started
        from fedsynth.experiments.run_arms import plan_arms

        arms = [a.model_copy(update={"criteria": str(Path(a.criteria).resolve())}) for a in cfg.evaluation.arms]
        cfg = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"arms": arms})})
        plan_arms(cfg, schema)  # every criteria file checked before the run is submitted
    if superlink is not None:
        flower_config.write_connection(federation, superlink, root_cert=root_cert, insecure=insecure)
    if resume is not None:
        run_id, out_dir = resume.name, resume.resolve().parent
    else:
        run_id = cfg.output.run_id or f"{cfg.name}-deployed-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}"
        out_dir = Path(out or cfg.output.dir).resolve()
    cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"dir": str(out_dir), "run_id": run_id})})
    run_dir = out_dir / run_id
    console.print(f"Run directory (on this machine, the coordinator's): {run_dir}", soft_wrap=True, markup=False)
    console.print(f"Progress follows from the ServerApp's log: one '{PREFIX.strip()}' line per request as its "
                  "replies are in and per round as it is scored (`flwr log RUN_ID "
                  f"{federation}` shows the log again).", markup=False, highlight=False)
    with tempfile.TemporaryDirectory(prefix="fedsynth-run-config-") as tmp:
        rc_path = flower_config.write_run_config(
            Path(tmp) / "run-config.toml",
            run_config_settings(cfg, schema, num_sites=int(n_sites), resume=resume is not None))
        cmd = [processes.executable("flwr"), "run", str(flower_config.app_dir()), federation,
               "--run-config", str(rc_path), "--stream"]
        code, _ = processes.run_foreground(cmd)
    manifest = read_manifest(run_dir) or {}
    if code != 0 or manifest.get("status") != "finished":
        state = manifest.get("status", "not started")
        detail = f": {manifest['error']}" if manifest.get("error") else ""
        raise FedsynthError(f"the deployed run did not finish (flwr run exited with {code}; the run is "
                            f"{state}{detail}); `flwr log RUN_ID {federation}` shows the ServerApp's log")
    console.print(f"Report: {run_dir / 'report.html'}")
    sites = ", ".join(f"{s['name']} ({s['n_rows']} rows)" for s in manifest.get("sites", []))
    console.print(f"Sites that took part: {sites or '-'}")
    from rich.markup import escape

    for d in manifest.get("dropped", []):
        err_console.print(f"[yellow]left out:[/] site {escape(str(d['site']))} in {escape(str(d['round']))} "
                          f"({escape(str(d['message_type']))}: {escape(str(d['reason']))})", highlight=False)
