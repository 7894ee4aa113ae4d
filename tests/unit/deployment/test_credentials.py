"""Development credentials: a CA that verifies the server certificate, node keys Flower itself can read."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedsynth.deployment.credentials import Credentials, make_credentials
from fedsynth.errors import ValidationError


def test_server_certificate_is_issued_by_the_ca_for_the_given_hosts(creds: Credentials) -> None:
    # Setup
    ca = x509.load_pem_x509_certificate(creds.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(creds.server_cert.read_bytes())

    # Run
    server.verify_directly_issued_by(ca)  # raises when the signature does not verify
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value

    # Assert
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_private_files_are_readable_by_their_owner_only(creds: Credentials) -> None:
    private = [creds.server_key] + [k for k, _ in creds.node_keys.values()]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(creds.ca_cert.stat().st_mode) == 0o644


def test_node_keys_are_read_by_flowers_own_loaders(creds: Credentials) -> None:
    # Setup: the functions flower-supernode and `flwr supernode register` use
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    private_path, public_path = creds.node_keys["A"]

    # Run
    private = serialization.load_ssh_private_key(private_path.read_bytes(), None)
    registered = try_load_public_key(public_path)

    # Assert: the registered public key is the private key's own
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.curve.name == "secp384r1"
    assert registered == public_key_to_bytes(private.public_key())


def test_every_bad_request_is_listed_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        make_credentials(tmp_path, ["A", "bad name", "A"], hosts=["127.0.0.1", " "], valid_days=0)
    text = str(info.value)
    assert "4 problems" in text
    assert "'bad name' is not a usable site name" in text
    assert "given more than once: A" in text
    assert "--hosts" in text and "--valid-days" in text


def test_existing_credentials_are_not_replaced_silently(tmp_path: Path) -> None:
    first = make_credentials(tmp_path, ["A"])
    with pytest.raises(ValidationError, match="already holds credentials"):
        make_credentials(tmp_path, ["A"])
    again = make_credentials(tmp_path, ["A"], overwrite=True)
    assert again.ca_cert.read_bytes() != b"" and first.ca_cert == again.ca_cert
