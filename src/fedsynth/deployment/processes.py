"""Flower's own executables, started the way fedsynth deploys them, and the checks that make them fail closed.

fedsynth never talks to a SuperLink itself: it builds the command lines of ``flower-superlink``,
``flower-supernode`` and ``flwr`` and runs them. Before starting, it checks what Flower would only report as
"could not establish a connection": the certificate files exist, parse, are in date and chain to the CA; the
SuperLink answers a TLS handshake with a certificate the site's CA accepts.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedsynth.errors import FedsynthError, Problem, ValidationError

log = logging.getLogger(__name__)

#: Flower's exit code when a SuperNode cannot connect or is refused (``ExitCode.SUPERNODE_CONNECTION_ERROR``);
#: the SuperNode prints it ("Exit Code: 305") but its process may end with status 1.
SUPERNODE_CONNECTION_ERROR = 305
#: Flower's exit code when the node key cannot be parsed (``ExitCode.SUPERNODE_NODE_AUTH_KEY_INVALID``).
SUPERNODE_NODE_AUTH_KEY_INVALID = 302


def flower_exit_code(output: str) -> int | None:
    """The last Flower exit code a Flower executable printed ("Exit Code: NNN"), if any."""
    import re

    found = re.findall(r"Exit Code: (\d+)", output)
    return int(found[-1]) if found else None

INSECURE_FIX = "pass --insecure to run without TLS (loopback trials only; never across a hospital network)"


def executable(name: str) -> str:
    """Path of one of Flower's executables: beside this Python first (the same environment), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise FedsynthError(f"Flower's {name!r} was not found beside {sys.executable} or on PATH; "
                            "install fedsynth with its dependencies (pip install fedsynth) in this environment")
    return found


#: How often Flower's SuperExec looks for a new app task (seconds; Flower's default is 1.0). Each message a site
#: answers waits for one such look, so a short interval takes up to a second off every round trip.
SUPEREXEC_TASK_POLL_INTERVAL = "0.1"


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for Flower's processes: this environment's ``bin`` first on PATH (the SuperLink and
    SuperNode start ``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp`` by name), no telemetry,
    and SuperExec's task poll interval (``FLWR_SUPEREXEC_TASK_POLL_INTERVAL``) unless already set."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", SUPEREXEC_TASK_POLL_INTERVAL)
    env.update(extra or {})
    return env


# -- certificates --------------------------------------------------------------------------------------------


def _load_cert(path: Path, where: str, problems: list[Problem]) -> x509.Certificate | None:
    if not path.is_file():
        problems.append(Problem(where, f"no file at {path}", "a PEM certificate",
                                "run `fedsynth credentials` (development) or use your PKI's files"))
        return None
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        problems.append(Problem(where, f"{path} is not a PEM certificate", "a file starting with -----BEGIN CERTIFICATE"))
        return None


def _check_dates(cert: x509.Certificate, where: str, now: dt.datetime, problems: list[Problem]) -> None:
    if cert.not_valid_after_utc < now:
        problems.append(Problem(where, f"the certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
                                "a certificate valid now", "issue a new one (fedsynth credentials --overwrite)"))
    elif cert.not_valid_before_utc > now:
        problems.append(Problem(where, f"the certificate is valid only from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
                                "a certificate valid now", "check this machine's clock"))


def check_server_tls(ca: Path, cert: Path, key: Path, *, now: dt.datetime | None = None) -> list[Problem]:
    """Problems with the SuperLink's TLS files: missing, unparsable, out of date, not issued by ``ca``, or a
    key that does not belong to the certificate."""
    now = now or dt.datetime.now(dt.UTC)
    problems: list[Problem] = []
    ca_cert = _load_cert(ca, "--ssl-ca", problems)
    server_cert = _load_cert(cert, "--ssl-cert", problems)
    for c, where in ((ca_cert, "--ssl-ca"), (server_cert, "--ssl-cert")):
        if c is not None:
            _check_dates(c, where, now, problems)
    if ca_cert is not None and server_cert is not None:
        try:
            server_cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            problems.append(Problem("--ssl-cert", "the server certificate was not issued by the CA given as --ssl-ca",
                                    "a certificate signed by that CA", "give the CA that issued it"))
    if not key.is_file():
        problems.append(Problem("--ssl-key", f"no file at {key}", "the server certificate's private key (PEM)"))
    elif server_cert is not None:
        try:
            private = serialization.load_pem_private_key(key.read_bytes(), password=None)
        except (ValueError, TypeError):
            problems.append(Problem("--ssl-key", f"{key} is not an unencrypted PEM private key", "a PEM private key"))
        else:
            if private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
                    server_cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
                problems.append(Problem("--ssl-key", "the key does not belong to the server certificate",
                                        "the private key the certificate was issued for"))
    return problems


def check_node_key(key: Path, where: str = "--key") -> list[Problem]:
    """Problems with a SuperNode's private key (Flower reads OpenSSH-format keys on a NIST curve)."""
    if not key.is_file():
        return [Problem(where, f"no file at {key}", "the site's private node key (OpenSSH format)",
                        "use nodes/<site> from `fedsynth credentials`, or ssh-keygen -t ecdsa -b 384")]
    try:
        private = serialization.load_ssh_private_key(key.read_bytes(), password=None)
    except (ValueError, TypeError):
        return [Problem(where, f"{key} is not an unencrypted OpenSSH private key", "an ECDSA key in OpenSSH format",
                        "ssh-keygen -t ecdsa -b 384 -m OpenSSH -N ''")]
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        return [Problem(where, "the key is not an ECDSA key", "an ECDSA key on a NIST curve (P-256/384/521)")]
    return []


def check_public_key(key: Path, where: str = "KEY.pub") -> list[Problem]:
    """Problems with a node's public key for ``flwr supernode register`` (OpenSSH, ECDSA)."""
    if not key.is_file():
        return [Problem(where, f"no file at {key}", "the site's public node key (OpenSSH, e.g. nodes/A.pub)")]
    try:
        public = serialization.load_ssh_public_key(key.read_bytes())
    except (ValueError, TypeError):
        return [Problem(where, f"{key} is not an OpenSSH public key", "a line starting with ecdsa-sha2-nistp384")]
    if not isinstance(public, ec.EllipticCurvePublicKey):
        return [Problem(where, "the key is not an ECDSA key", "an ECDSA public key on a NIST curve")]
    return []


def split_address(address: str, where: str = "--superlink") -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) -> (host, port); a :class:`ValidationError` otherwise."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValidationError("Command line", [Problem(where, f"{address!r} is not HOST:PORT",
                                                       "e.g. coordinator.example.org:9093 or 127.0.0.1:9093")])
    return host, int(port)


def probe_superlink(address: str, root_cert: Path | None, *, timeout: float = 10.0) -> Problem | None:
    """Connect to the SuperLink and check its certificate against ``root_cert``; ``None`` when it is fine.

    A wrong CA, an expired or not-yet-valid server certificate, a host name the certificate does not name and
    nothing listening all come back as a :class:`Problem` that says what to do. With ``root_cert=None`` only
    the TCP connection is checked (``--insecure``).
    """
    host, port = split_address(address)
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return Problem("--superlink", f"nothing answers at {address} ({exc.strerror or type(exc).__name__})",
                       "the address the coordinator's `fedsynth server start` listens on",
                       "check the address, that the SuperLink is running, and the firewall between you")
    with sock:
        if root_cert is None:
            return None
        ctx = ssl.create_default_context(cafile=str(root_cert))
        try:
            with ctx.wrap_socket(sock, server_hostname=host):
                return None
        except ssl.SSLCertVerificationError as exc:
            reason = exc.verify_message or str(exc)
            if "expired" in reason:
                fix = "the coordinator must renew the SuperLink's certificate"
            elif "hostname" in reason.lower() or "IP address mismatch" in reason:
                fix = f"the SuperLink's certificate does not name {host}; connect by a name it holds or reissue it"
            else:
                fix = "use the CA certificate that issued the SuperLink's certificate (the coordinator's ca.pem)"
            return Problem("--root-cert", f"the SuperLink's certificate was rejected: {reason}",
                           "a root certificate that verifies the SuperLink", fix)
        except (ssl.SSLError, OSError) as exc:
            return Problem("--superlink", f"no TLS handshake with {address} ({type(exc).__name__})",
                           "a SuperLink started with TLS", "check the port, or whether it was started with --insecure")


# -- command lines -----------------------------------------------------------------------------------------


def node_config_text(config: Mapping[str, Any]) -> str:
    """Flower's ``--node-config`` text: space-separated ``key=value`` with TOML values.

    Strings become TOML literal strings (``'...'``: no escapes, so Windows paths survive), or basic strings when
    they hold a ``'``; Flower's parser cannot read a value holding both quote characters.
    """
    parts, problems = [], []
    for key, value in config.items():
        if isinstance(value, bool):
            v = "true" if value else "false"
        elif isinstance(value, (int, float)):
            v = repr(value)
        else:
            text = str(value)
            if "'" not in text:
                v = f"'{text}'"
            elif '"' not in text:
                v = json.dumps(text)
            else:
                problems.append(Problem(key, "holds both ' and \"", "a value with at most one kind of quote",
                                        "rename the file or folder"))
                continue
        parts.append(f"{key}={v}")
    if problems:
        raise ValidationError("Node config", problems)
    return " ".join(parts)


@dataclass(frozen=True)
class ServerTLS:
    """The SuperLink's TLS files (PEM)."""

    ca: Path
    cert: Path
    key: Path


def superlink_command(
    *,
    host: str,
    port: int,
    tls: ServerTLS | None,
    node_auth: bool = True,
    database: Path | None = None,
    log_file: Path | None = None,
) -> list[str]:
    """``flower-superlink`` with TLS (``tls=None``: ``--insecure``), node authentication and no runtime
    installation of app dependencies (the coordinator runs the fedsynth it has installed)."""
    cmd = [executable("flower-superlink"), "--host", host, "--port", str(port),
           "--disable-runtime-dependency-installation"]
    if tls is None:
        cmd.append("--insecure")
    else:
        cmd += ["--ssl-ca-certfile", str(tls.ca.resolve()), "--ssl-certfile", str(tls.cert.resolve()),
                "--ssl-keyfile", str(tls.key.resolve())]
    if node_auth:
        cmd.append("--enable-supernode-auth")
    if database is not None:
        cmd += ["--database", str(database)]
    if log_file is not None:
        cmd += ["--log-file", str(log_file)]
    return cmd


def supernode_command(
    *,
    superlink: str,
    root_cert: Path | None,
    key: Path | None,
    node_config: Mapping[str, Any],
    port: int,
) -> list[str]:
    """``flower-supernode`` for one site: TLS to the SuperLink (``root_cert=None``: ``--insecure``), the site's
    node key, its node config, and the local port of its ClientApp runtime API."""
    cmd = [executable("flower-supernode"), "--superlink", superlink, "--port", str(port),
           "--node-config", node_config_text(node_config)]
    cmd += ["--insecure"] if root_cert is None else ["--root-certificates", str(root_cert.resolve())]
    if key is not None:
        cmd += ["--auth-supernode-private-key", str(key.resolve())]
    return cmd


# -- running ------------------------------------------------------------------------------------------------


def start(cmd: Sequence[str], *, log_path: Path | None = None, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group (so :func:`stop` ends the children Flower starts, too)."""
    out = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(list(cmd), stdout=out if out else None, stderr=subprocess.STDOUT if out else None,
                                env=dict(env) if env is not None else child_env(), cwd=cwd, start_new_session=True)
    finally:
        if out is not None:
            out.close()


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (children, their children ...), read from ``/proc``; empty where there is none."""
    parents: dict[int, list[int]] = {}
    try:
        entries = [e for e in Path("/proc").iterdir() if e.name.isdigit()]
    except OSError:
        return []
    for entry in entries:
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop(proc: subprocess.Popen[bytes], *, grace: float = 10.0) -> int:
    """End ``proc`` and its process group: SIGTERM, then SIGKILL after ``grace`` seconds; its exit code.

    Flower's SuperLink and SuperNode start their SuperExec in a session of its own, and SuperExec starts the
    ServerApp and ClientApp processes in that session's group: those groups are ended too (a ServerApp left
    behind would go on waiting for a SuperLink that is gone).
    """
    groups: set[int] = set()
    for pid in _descendants(proc.pid):
        try:
            groups.add(os.getpgid(pid))
        except (ProcessLookupError, PermissionError):
            pass
    groups.discard(proc.pid)
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    for group in (proc.pid, *sorted(groups)):  # what Flower started, in the group or in sessions of its own
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return int(proc.returncode)


def run_foreground(cmd: Sequence[str], *, env: Mapping[str, str] | None = None, keep: int = 200) -> tuple[int, str]:
    """Run ``cmd`` until it ends, passing its output through; Ctrl-C or SIGTERM stops it and its children.

    Returns its exit code and the last ``keep`` lines of its output: Flower reports some failures (a refused
    node: "Exit Code: 305") only in its output, not in the process's exit status. When the command ends, the
    helpers it started in its process group (Flower's SuperExec) are ended too.
    """
    import threading
    from collections import deque

    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(env) if env is not None else child_env(), start_new_session=True)
    tail: deque[str] = deque(maxlen=keep)

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            sys.stdout.buffer.write(raw)
            sys.stdout.flush()
            tail.append(raw.decode(errors="replace"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    terminated: list[float] = []

    def forward_sigterm(*_: Any) -> None:
        # Only pass the signal on: waiting for the child here would re-enter the ``proc.wait`` this handler
        # interrupted, which holds the child's wait lock (a deadlock); the loop below waits and escalates.
        terminated.append(time.monotonic())
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    previous = signal.signal(signal.SIGTERM, forward_sigterm)
    try:
        while True:
            try:
                code = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if terminated and time.monotonic() - terminated[0] > _TERM_GRACE_S:
                    code = stop(proc, grace=0)
                    break
    except KeyboardInterrupt:
        code = stop(proc)
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop(proc, grace=5)  # the group: children still holding the output pipe
        reader.join(timeout=5)
    return code, "".join(tail)


#: Seconds a Flower process has to end after a forwarded SIGTERM before its group is killed.
_TERM_GRACE_S = 10.0
