"""Flower's own configuration, written the way ``flwr`` reads it: SuperLink connections and run configs.

``flwr`` finds SuperLinks by name in ``$FLWR_HOME/config.toml`` (default ``~/.flwr``); fedsynth adds or
updates one ``[superlink.NAME]`` entry (address, root certificate) with Flower's own writer, and writes a run's
settings as the TOML file ``flwr run --run-config`` reads. Keys cross from snake_case to Flower's kebab-case
at the one translation point, :func:`fedsynth.strategies.records.kebab`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from fedsynth.errors import Problem, ValidationError
from fedsynth.strategies import records

log = logging.getLogger(__name__)


def app_dir() -> Path:
    """The Flower app folder fedsynth ships (``pyproject.toml`` naming fedsynth's ServerApp and ClientApp)."""
    return Path(str(resources.files("fedsynth.deployment") / "app"))


def flower_config_path() -> Path:
    """``$FLWR_HOME/config.toml`` (default ``~/.flwr/config.toml``), as ``flwr`` resolves it."""
    from flwr.cli.constant import FLOWER_CONFIG_FILE
    from flwr.supercore.utils import get_flwr_home

    return get_flwr_home() / FLOWER_CONFIG_FILE


def write_connection(name: str, address: str, *, root_cert: Path | None, insecure: bool = False) -> Path:
    """Add or replace the SuperLink connection ``name`` in Flower's configuration; return the file's path.

    Parameters
    ----------
    name : str
        The connection's name (``flwr run APP NAME``); letters, digits, ``-``, ``_``.
    address : str
        ``HOST:PORT`` of the SuperLink.
    root_cert : Path, optional
        CA certificate that verifies the SuperLink (stored as an absolute path, as Flower requires).
    insecure : bool
        No TLS (only with ``root_cert=None``).

    Raises
    ------
    ValidationError
        A bad name, a missing certificate, or neither a certificate nor ``insecure``.
    """
    from flwr.cli.constant import DEFAULT_FLOWER_CONFIG_TOML
    from flwr.cli.flower_config import write_superlink_connection
    from flwr.cli.typing import SuperLinkConnection

    from fedsynth.deployment.credentials import check_site_name

    problems = check_site_name(name, "--federation")
    if root_cert is not None and not root_cert.is_file():
        problems.append(Problem("--root-cert", f"no file at {root_cert}", "the CA certificate (ca.pem)"))
    if root_cert is None and not insecure:
        problems.append(Problem("--root-cert", "no root certificate given", "the CA certificate that verifies the "
                                "SuperLink", "give --root-cert CA.pem, or --insecure for a SuperLink without TLS"))
    if problems:
        raise ValidationError("Flower connection", problems)
    path = flower_config_path()
    if not path.exists():  # Flower's own default file, written quietly (its initialiser prints)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(DEFAULT_FLOWER_CONFIG_TOML, encoding="utf-8")
    write_superlink_connection(SuperLinkConnection(
        name, address=address, root_certificates=str(root_cert.resolve()) if root_cert is not None else None,
        insecure=True if root_cert is None else None,
    ))
    log.info("SuperLink connection %r (%s) written to %s", name, address, path)
    return path


def run_config(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A Flower run config from snake_case settings: kebab-case keys; mappings and lists as JSON text
    (Flower run-config values are scalars); ``None`` left out."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if value is None:
            continue
        if isinstance(value, (Mapping, list, tuple)):
            value = records.encode_payload(value) if isinstance(value, Mapping) else json.dumps(list(value))
        elif isinstance(value, Path):
            value = str(value)
        out[records.kebab(key)] = value
    return out


def write_run_config(path: Path, settings: Mapping[str, Any]) -> Path:
    """Write :func:`run_config` of ``settings`` as TOML for ``flwr run --run-config PATH``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(run_config(settings)), encoding="utf-8")
    return path
