#!/usr/bin/env python3
"""A throwaway local CA for deploy/compose.yaml: the vault's server certificate and two
client certificates (mTLS callers), written as PEM files into one directory.

    python make-certs.py DIR [--trust-domain payment-vault.local] [--days 90]

DIR gets (cert-manager's names, so the image's TLS paths fit both):
  ca.crt                     the CA (the vault's client_ca; the callers' --tls-ca)
  tls.crt, tls.key           the vault: SAN DNS vault, vault-1, vault-2, localhost, IP 127.0.0.1;
                             usable as a client certificate too (the health probe's)
  ops.crt, ops.key           client: SAN URI spiffe://TRUST_DOMAIN/ops
  checkout.crt, checkout.key client: SAN URI spiffe://TRUST_DOMAIN/checkout
The CA's private key is not kept: to add a certificate, run the script again (into a new
directory) and restart the vaults. Keys are written 0600, existing files are refused.
For anything but a local set-up use your own CA (deploy/README.md, "TLS").
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_DNS = ("vault", "vault-1", "vault-2", "localhost")
SERVER_IPS = ("127.0.0.1",)
CLIENTS = ("ops", "checkout")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: str, issuer: str, key: ec.EllipticCurvePrivateKey, days: int
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _leaf(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    subject: str,
    sans: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
    days: int,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = ca_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    cert = (
        _builder(subject, str(issuer), key, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _save(out: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    _write(out / f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(out / f"{stem}.key", pem, 0o600)


def make_certs(out: Path, trust_domain: str, days: int) -> None:
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        _builder("payment-vault local CA", "payment-vault local CA", ca_key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .sign(ca_key, hashes.SHA256())
    )
    _write(out / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    ca = (ca_cert, ca_key)
    server_sans: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_DNS]
    server_sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    _save(out, "tls", *_leaf(ca, "vault", server_sans, both, days))
    for client in CLIENTS:
        uri = x509.UniformResourceIdentifier(f"spiffe://{trust_domain}/{client}")
        _save(out, client, *_leaf(ca, client, [uri], [ExtendedKeyUsageOID.CLIENT_AUTH], days))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory to write the PEM files into")
    parser.add_argument("--trust-domain", default="payment-vault.local")
    parser.add_argument("--days", type=int, default=90)
    args = parser.parse_args(argv)
    try:
        make_certs(args.out, args.trust_domain, args.days)
    except FileExistsError as exc:
        sys.stderr.write(f"make-certs: {exc.filename} exists; use an empty directory\n")
        return 1
    sys.stdout.write(f"wrote ca.crt, tls.*, {', '.join(c + '.*' for c in CLIENTS)} to {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
