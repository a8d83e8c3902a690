"""Certificates for the mTLS tests, made at test time with ``cryptography``.

A CA, a server certificate for 127.0.0.1/localhost, and client certificates: one with a
SPIFFE URI SAN, one with a subject CN only, one from an untrusted CA, one expired.
Imported by name from the API tests (``from mtls_certs import ...``) and by path from the
end-to-end tests.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SPIFFE_ID = "spiffe://checkout.example/ns/pay/sa/checkout"
CN_ONLY = "reports-batch"
UNBOUND_ID = "spiffe://checkout.example/ns/pay/sa/stranger"
SERVER_NAME = "localhost"


@dataclass(frozen=True)
class Pair:
    """A certificate and its key, both PEM."""

    cert: bytes
    key: bytes

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """``name.crt`` and ``name.key`` (0600) in ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
        cert_path.write_bytes(self.cert)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.key)
        return cert_path, key_path


@dataclass(frozen=True)
class Authority:
    name: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(name: str) -> Authority:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
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
        .sign(key, hashes.SHA256())
    )
    return Authority(name, cert, key)


def issue(
    ca: Authority,
    common_name: str,
    *,
    uris: tuple[str, ...] = (),
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    server: bool = False,
    expired: bool = False,
) -> Pair:
    key = _key()
    now = _now()
    if expired:
        before, after = now - dt.timedelta(days=2), now - dt.timedelta(days=1)
    else:
        before, after = now - dt.timedelta(hours=1), now + dt.timedelta(days=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(before)
        .not_valid_after(after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    names += [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    return Pair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@dataclass(frozen=True)
class CertSet:
    ca: Authority
    server: Pair
    spiffe: Pair  # SAN URI = SPIFFE_ID (and a CN that must not be used)
    cn_only: Pair  # subject CN = CN_ONLY, no SAN
    unbound: Pair  # valid, SAN URI = UNBOUND_ID, bound to no caller
    untrusted: Pair  # SAN URI = SPIFFE_ID, signed by another CA
    expired: Pair  # SAN URI = SPIFFE_ID, validity ended yesterday


def make_cert_set() -> CertSet:
    ca = make_ca("vault test CA")
    rogue = make_ca("rogue CA")
    return CertSet(
        ca=ca,
        server=issue(ca, SERVER_NAME, dns=(SERVER_NAME,), ips=("127.0.0.1",), server=True),
        spiffe=issue(ca, "checkout-cn-ignored", uris=(SPIFFE_ID,)),
        cn_only=issue(ca, CN_ONLY),
        unbound=issue(ca, "stranger", uris=(UNBOUND_ID,)),
        untrusted=issue(rogue, "checkout", uris=(SPIFFE_ID,)),
        expired=issue(ca, "checkout", uris=(SPIFFE_ID,), expired=True),
    )
