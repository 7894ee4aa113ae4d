"""Development credentials for a deployment: a CA, the SuperLink's TLS certificate, one node key pair per site.

Everything is made with the ``cryptography`` package. These are for trying a federation out (loopback, a test
network); production brings certificates from the hospitals' own PKI and keys generated at each site.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedsynth.errors import Problem, ValidationError

log = logging.getLogger(__name__)

#: Site names become file names and Flower node names: letters, digits, ``-`` and ``_``.
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


@dataclass(frozen=True)
class Credentials:
    """Paths of the files :func:`make_credentials` wrote.

    Attributes
    ----------
    ca_cert : Path
        The CA certificate (PEM): the SuperLink's ``--ssl-ca-certfile`` and every site's ``--root-cert``.
    server_cert, server_key : Path
        The SuperLink's TLS certificate and private key (PEM); the key is readable by its owner only.
    node_keys : dict of str to (Path, Path)
        Per site: the node's private key (OpenSSH, owner only) and public key (OpenSSH, ``site register``).
    """

    ca_cert: Path
    server_cert: Path
    server_key: Path
    node_keys: dict[str, tuple[Path, Path]]


def check_site_name(name: str, where: str = "site name") -> list[Problem]:
    """Problems with a site name (empty, or characters other than letters, digits, ``-``, ``_``)."""
    if not name or not set(name) <= _NAME_OK or len(name) > 64:
        return [Problem(where, f"{name!r} is not a usable site name", "1-64 letters, digits, '-' or '_'",
                        "rename the site, e.g. hospital-a")]
    return []


def _write(path: Path, data: bytes, *, private: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def make_credentials(
    out_dir: str | Path,
    sites: Sequence[str],
    *,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    valid_days: int = 365,
    overwrite: bool = False,
    now: dt.datetime | None = None,
) -> Credentials:
    """Write a development CA, a SuperLink certificate for ``hosts`` and an ECDSA node key pair per site.

    Parameters
    ----------
    out_dir : str or Path
        Folder to write into (created): ``ca.pem``, ``server.pem``, ``server.key``, ``nodes/<site>``,
        ``nodes/<site>.pub``.
    sites : sequence of str
        Site names (letters, digits, ``-``, ``_``), unique.
    hosts : sequence of str
        Host names and IP addresses the SuperLink is reached at (the certificate's subject alternative names).
    valid_days : int
        Validity of the CA and server certificates, in days from ``now``.
    overwrite : bool
        Replace existing files; without it an existing ``ca.pem`` is an error (keys are not silently rotated).
    now : datetime, optional
        Start of validity (UTC); tests pass a past date to make an expired certificate.

    Returns
    -------
    Credentials
        The paths written.

    Raises
    ------
    ValidationError
        Every problem with the sites, hosts, validity or an existing output at once.

    Notes
    -----
    Keys are ECDSA on NIST P-384: Flower's node authentication accepts NIST curves only, and reads node private
    keys in OpenSSH format (``flower-supernode --auth-supernode-private-key``) and public keys in OpenSSH format
    (``flwr supernode register``). TLS keys and certificates are PEM (PKCS#8 keys).
    """
    out = Path(out_dir)
    problems: list[Problem] = []
    if not sites:
        problems.append(Problem("--sites", "no site given", "a comma-separated list of names, e.g. A,B,C"))
    for s in sites:
        problems += check_site_name(s, "--sites")
    dupes = sorted({s for s in sites if list(sites).count(s) > 1})
    if dupes:
        problems.append(Problem("--sites", f"{len(dupes)} name(s) given more than once: {', '.join(dupes)}",
                                "unique site names"))
    if not hosts or any(not h.strip() for h in hosts):
        problems.append(Problem("--hosts", "an empty host name", "host names or IP addresses, e.g. 127.0.0.1"))
    if valid_days < 1:
        problems.append(Problem("--valid-days", f"got {valid_days}", "an int in the range [1, inf)"))
    if (out / "ca.pem").exists() and not overwrite:
        problems.append(Problem("--out", f"{out} already holds credentials (ca.pem)", "an empty folder",
                                "choose another folder, or pass --overwrite to replace them"))
    if problems:
        raise ValidationError("Credentials request", problems)

    start = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(minutes=5)
    end = start + dt.timedelta(days=valid_days)
    (out / "nodes").mkdir(parents=True, exist_ok=True)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedsynth development CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name).public_key(server_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    creds = Credentials(out / "ca.pem", out / "server.pem", out / "server.key", {})
    _write(creds.ca_cert, ca_cert.public_bytes(pem), private=False)
    _write(creds.server_cert, server_cert.public_bytes(pem), private=False)
    _write(creds.server_key, server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()), private=True)
    for site in sites:
        key = ec.generate_private_key(ec.SECP384R1())
        private = out / "nodes" / site
        public = out / "nodes" / f"{site}.pub"
        _write(private, key.private_bytes(pem, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()),
               private=True)
        _write(public, key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                      serialization.PublicFormat.OpenSSH) + b"\n", private=False)
        creds.node_keys[site] = (private, public)
    log.info("wrote a development CA, a server certificate for %s and %d node key pairs to %s",
             ", ".join(hosts), len(sites), out)
    return creds
