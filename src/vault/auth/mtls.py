"""mTLS: the server's certificate files, read and checked once at start, and the rule
that names a caller from its client certificate.

The transport (grpc) verifies the client certificate against the client CA during the
handshake; a connection without a valid one never reaches a handler. What is left here
is which name of a verified certificate is the caller's identity: its first SAN URI
(SPIFFE style, e.g. ``spiffe://checkout.example/ns/pay/sa/checkout``) or, when it has
none, its subject CN. The identity is typed, ``uri:<SAN URI>`` or ``cn:<CN>``, as the
caller was bound (``callers add --cert-uri`` / ``--cert-cn``), and looked up with its
type like an API key id (see ``Authenticator``): a CN that reads ``spiffe://…`` never
names the caller bound to that URI, and a certificate nobody bound is refused.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from vault.errors import FailedPreconditionError

__all__ = [
    "IDENTITY_TYPES",
    "MAX_IDENTITY_CHARS",
    "TlsMaterial",
    "certificate_identity",
    "load_tls_material",
    "parse_cert_identity",
    "typed_certificate_identity",
    "untyped",
]

# Longest identity looked up; a longer one is refused without touching the store.
MAX_IDENTITY_CHARS = 2048
# The kinds of certificate name a caller may be bound to: a SAN URI or a subject CN.
IDENTITY_TYPES = ("uri", "cn")


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """PEM bytes for the server: its chain and key, and the CA client certificates must
    chain to (None = clients are not asked for a certificate)."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None

    def __repr__(self) -> str:
        return f"TlsMaterial(client_auth={self.client_ca is not None})"


def _bad(what: str, reason: str) -> FailedPreconditionError:
    return FailedPreconditionError(what, reason=reason)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        raise _bad(f"the {what} file cannot be read", "TLS_FILE_UNREADABLE") from None


def _certificates(path: Path, what: str) -> tuple[bytes, x509.Certificate]:
    """The file's bytes and its first certificate."""
    data = _read(path, what)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise _bad(f"the {what} file holds no PEM certificate", "TLS_FILE_INVALID")
    return data, certs[0]


def _public_der(key: Any) -> bytes:
    return bytes(
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _private_key(path: Path) -> tuple[bytes, bytes]:
    """The file's bytes and the DER of its public key."""
    try:
        info = path.stat()
    except OSError:
        raise _bad("the TLS key file cannot be read", "TLS_FILE_UNREADABLE") from None
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise _bad(
            "the TLS key file is readable by group or others; chmod 600 it",
            "TLS_KEY_PERMISSIONS",
        )
    data = _read(path, "TLS key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # TypeError: an encrypted key, which the server cannot use without a passphrase.
        raise _bad("the TLS key file holds no unencrypted PEM key", "TLS_FILE_INVALID") from None
    return data, _public_der(key.public_key())


def load_tls_material(tls_cert: str, tls_key: str, client_ca: str) -> TlsMaterial | None:
    """The configured files (paths; "" = unset), checked; None when TLS is off."""
    if bool(tls_cert) != bool(tls_key):
        raise _bad("--tls-cert and --tls-key go together", "TLS_CONFIG")
    if not tls_cert:
        if client_ca:
            raise _bad("--client-ca needs --tls-cert and --tls-key", "TLS_CONFIG")
        return None
    chain, leaf = _certificates(Path(tls_cert), "TLS certificate")
    key, public = _private_key(Path(tls_key))
    if _public_der(leaf.public_key()) != public:
        raise _bad("the TLS key does not match the TLS certificate", "TLS_FILE_INVALID")
    ca = _certificates(Path(client_ca), "client CA")[0] if client_ca else None
    return TlsMaterial(chain, key, ca)


def certificate_identity(uris: Iterable[str], common_names: Iterable[str]) -> str | None:
    """The caller identity of a verified client certificate: its first SAN URI, else its
    subject CN; None when it has neither."""
    for name in (*uris, *common_names):
        if name:
            return name
    return None


def typed_certificate_identity(uris: Iterable[str], common_names: Iterable[str]) -> str | None:
    """The typed identity of a verified client certificate: ``uri:`` and its first SAN
    URI, else ``cn:`` and its subject CN; None when it has neither."""
    for uri in uris:
        if uri:
            return f"uri:{uri}"
    for name in common_names:
        if name:
            return f"cn:{name}"
    return None


def untyped(identity: str) -> str:
    """The name of a typed identity without its type (for people and the trail)."""
    kind, sep, name = identity.partition(":")
    return name if sep and kind in IDENTITY_TYPES else identity


def parse_cert_identity(text: str) -> str:
    """A typed identity as an operator binds it (``uri:spiffe://…`` or ``cn:checkout``);
    ValueError names what is wrong."""
    kind, sep, name = text.partition(":")
    if not sep or kind not in IDENTITY_TYPES:
        raise ValueError("a certificate identity is uri:<SAN URI> or cn:<subject CN>")
    if not name or len(text) > MAX_IDENTITY_CHARS or not name.isprintable():
        raise ValueError("the certificate identity must be 1 to 2048 printable characters")
    if kind == "uri" and "://" not in name:
        raise ValueError("a uri: identity is a URI with a scheme, e.g. spiffe://…")
    return text
