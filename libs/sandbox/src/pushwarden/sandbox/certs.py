"""TLS material for the sandbox: a throwaway CA and a server certificate it signs.

Generated at run time (nothing secret is committed) and reused when already
present in the directory, so a client that trusted the CA once keeps trusting
restarts of the fake.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ALPN_PROTOCOLS = ["h2", "http/1.1"]
_VALIDITY = dt.timedelta(days=825)


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """Paths of the CA certificate (what clients trust) and the server's cert and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Pushwarden sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _build(now: dt.datetime) -> tuple[bytes, bytes, bytes]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Pushwarden sandbox CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                    x509.IPAddress(ipaddress.IPv6Address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return ca_cert.public_bytes(pem), cert.public_bytes(pem), _pem_key(key)


def generate_tls_material(directory: Path) -> TlsMaterial:
    """CA and server certificate (SAN 127.0.0.1, ::1, localhost) under ``directory``.

    Files already there are reused; otherwise a fresh set is written (the key
    readable by its owner only).
    """
    directory.mkdir(parents=True, exist_ok=True)
    material = TlsMaterial(
        ca_file=directory / "sandbox-ca.pem",
        cert_file=directory / "sandbox-server.pem",
        key_file=directory / "sandbox-server.key",
    )
    if all(p.is_file() for p in (material.ca_file, material.cert_file, material.key_file)):
        return material
    ca_pem, cert_pem, key_pem = _build(dt.datetime.now(dt.UTC))
    # Write to temporary names and rename, so two processes starting at once
    # never read a half-written set.
    for path, data in (
        (material.key_file, key_pem),
        (material.cert_file, cert_pem),
        (material.ca_file, ca_pem),
    ):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.chmod(0o600 if path is material.key_file else 0o644)
        tmp.replace(path)
    return material


def server_ssl_context(material: TlsMaterial) -> ssl.SSLContext:
    """Server-side TLS context offering ALPN h2 and http/1.1."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(material.cert_file, material.key_file)
    ctx.set_alpn_protocols(ALPN_PROTOCOLS)
    return ctx


def client_ssl_context(ca_file: Path | str) -> ssl.SSLContext:
    """Client-side TLS context that trusts the sandbox CA (and only it), offering ALPN.

    For HTTP clients that negotiate (httpx sets its own ALPN anyway); aioapns
    offers none, and ``clients.apns_client`` keeps it that way.
    """
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.set_alpn_protocols(ALPN_PROTOCOLS)
    return ctx
