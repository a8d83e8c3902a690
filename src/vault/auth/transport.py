"""Where plaintext is allowed: the rules that keep API keys, card numbers and custodian
shares off the network in clear.

One rule, used three times: a listen address, a client's target and a call's peer are
"local" when they are a loopback address (127.0.0.0/8, ::1, ``localhost``) or a Unix
socket. The server refuses to listen in plaintext elsewhere (unless the operator says
``--insecure-plaintext``), refuses a call carrying a credential from a non-local peer
over plaintext, and vaultctl refuses to dial a non-local address in plaintext (unless
``--insecure``). Pure functions over strings: no grpc here.
"""

from __future__ import annotations

import ipaddress

__all__ = ["TLS_REQUIRED", "is_local_address", "is_local_peer"]

# The reason (ErrorInfo) of a call or a command refused for lack of TLS.
TLS_REQUIRED = "TLS_REQUIRED"

_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def _is_loopback_host(host: str) -> bool:
    host = host.strip().lower().removeprefix("[").removesuffix("]")
    if host in _LOCAL_NAMES or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False  # a DNS name may resolve anywhere: not local
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def is_local_address(address: str) -> bool:
    """Is a ``HOST:PORT`` (listen address or dial target) loopback or a Unix socket?
    ``0.0.0.0``, ``[::]``, an empty host and any DNS name but localhost are not."""
    address = address.strip()
    scheme, sep, rest = address.partition(":")
    if sep and scheme in {"unix", "unix-abstract"}:
        return True
    if sep and scheme in {"dns", "ipv4", "ipv6"}:
        address = rest.removeprefix("///")
    if address.startswith("["):
        host = address[1:].partition("]")[0]
    elif address.count(":") > 1:
        host = address  # a bare IPv6 address without a port
    else:
        host = address.rpartition(":")[0] if ":" in address else address
    return bool(host) and _is_loopback_host(host)


def is_local_peer(peer: str) -> bool:
    """Is a grpc peer string (``ipv4:127.0.0.1:5123``, ``ipv6:[::1]:5123``,
    ``unix:/run/vault.sock``) a loopback address or a Unix socket? An empty or unknown
    peer is not: the rule fails closed."""
    scheme, sep, rest = peer.partition(":")
    if not sep:
        return False
    if scheme in {"unix", "unix-abstract"}:
        return True
    if scheme == "ipv4":
        return _is_loopback_host(rest.rpartition(":")[0])
    if scheme == "ipv6":
        return rest.startswith("[") and _is_loopback_host(rest[1:].partition("]")[0])
    return False
