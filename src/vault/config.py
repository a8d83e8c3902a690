"""Server configuration: defaults < config file (TOML) < VAULT_* environment < flags."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vault.errors import FailedPreconditionError

__all__ = ["ENV_PREFIX", "KEK_PROVIDERS", "Config", "load_config"]

ENV_PREFIX = "VAULT_"
KEK_PROVIDERS = ("file", "pkcs11", "shares")
# A CVC is kept for one authorisation, never long: PCI DSS forbids storing it after.
_CVC_MAX_TTL = 3600.0
_CVC_MAX_REVEALS = 10
_CVC_MIN_MEMORY = 64 * 1024  # room for a hundred CVCs at least
# At most half of 2^32, the most AES-GCM invocations with random 96-bit nonces under one
# key (NIST SP 800-38D): room for the overshoot bounded in domain.keyops.UsageWatch.
_KEY_MAX_ENCRYPTIONS = 2**31


@dataclass(frozen=True, slots=True)
class Config:
    data_dir: Path = Path("var")
    listen: str = "127.0.0.1:50051"
    metrics_listen: str = "127.0.0.1:9464"  # empty string turns the metrics port off
    # HOST:PORT serving the unary methods as HTTP/JSON too ("" = off, the default); TLS
    # (and mTLS) as the gRPC port has it.
    http_listen: str = ""
    dev: bool = False
    log_format: str = "plain"  # plain | json
    log_level: str = "INFO"
    purge_interval: float = 30.0  # seconds between expired-token purges
    retention_interval: float = 300.0  # seconds between retention purges (policies per tenant/kind)
    key_refresh_interval: float = 5.0  # seconds between keyring reloads from the store
    route_refresh_interval: float = 2.0  # seconds between reloads of Forward routes
    shutdown_grace: float = 10.0  # seconds SIGTERM waits for in-flight calls
    max_message_bytes: int = 4 * 1024 * 1024
    max_batch: int = 1000
    cvc_ttl: float = 600.0  # seconds a CVC is held in memory by default (at most 3600)
    cvc_reveals: int = 1  # reveals a CVC allows before it is gone (1 to 10)
    # Memory for CVCs, in bytes (an entry costs ~512 bytes plus its subject and metadata),
    # and the fraction of it one tenant may fill; past either, tokenizing a CVC is refused.
    cvc_memory_bytes: int = 64 * 1024 * 1024
    cvc_tenant_share: float = 0.5
    workers: int = 1  # server processes sharing the listen port (SO_REUSEPORT)
    # What one process accepts at once (0 = no limit). Calls past max_concurrent_rpcs are
    # answered RESOURCE_EXHAUSTED by grpc before any handler runs; request bodies held in
    # memory are at most max_concurrent_rpcs x max_message_bytes.
    max_concurrent_rpcs: int = 256
    max_connections: int = 1000  # open client connections (grpc refuses more at accept)
    max_connection_idle: float = 300.0  # seconds a connection with no call stays open
    # Seconds a connection may live before the server asks the client to reconnect
    # (GOAWAY; in-flight calls get max_connection_age_grace more), so no client holds a
    # connection slot forever and replicas rebalance.
    max_connection_age: float = 3600.0
    max_connection_age_grace: float = 30.0
    # Refusals (bad or missing credential, missing scope). Each peer address may be
    # refused refusal_burst times, then refusal_rate times a second; past that its calls
    # are answered RESOURCE_EXHAUSTED before any store work unless their credential is
    # one the vault already knows (0 = no throttling). Refusals are written to the audit
    # trail as one record per (peer, caller, reason, method) per refusal_audit_window
    # seconds, with the count.
    refusal_rate: float = 10.0
    refusal_burst: int = 100
    refusal_audit_window: float = 60.0
    # Tokenize (issue 13): each caller may tokenize tokenize_burst items at once and
    # tokenize_rate items a second after that (a batch of 100 spends 100; a caller's own
    # --tokenize-rate/--tokenize-burst override these; rate 0 = no budget); past it the
    # call is RESOURCE_EXHAUSTED (TOKENIZE_RATE_EXCEEDED) with RetryInfo. Each caller's
    # volume is one audit record per tokenize_audit_window seconds. A stored token's ttl
    # is at least min_ttl seconds (0 = no minimum; CVCs are exempt).
    tokenize_rate: float = 100.0
    tokenize_burst: int = 1000
    tokenize_audit_window: float = 60.0
    min_ttl: float = 60.0
    # A copy of every committed audit record as one JSON line: "" = off, "stdout", or a
    # file path (created 0600, appended to; one write per commit, so workers can share it).
    audit_sink: str = ""
    # Seconds between heads of the audit chain (seq and MAC, no data) written to the
    # audit sink, on the next append: the outside witness `audit verify --witness` reads.
    audit_head_interval: float = 60.0
    # TLS (paths; "" = off). tls_cert + tls_key: the server speaks TLS only. client_ca:
    # every connection must present a client certificate that chains to it (mTLS), and
    # a caller may be named by it (see ``vaultctl callers add --cert-identity``).
    tls_cert: str = ""
    tls_key: str = ""
    client_ca: str = ""
    # Plaintext on a non-loopback listen address is refused unless this is set (for a
    # TLS-terminating sidecar on the same pod; a warning is logged). Calls carrying a
    # credential from another host over plaintext are refused (TLS_REQUIRED) either way.
    insecure_plaintext: bool = False
    # The tenant whose callers alone may hold the `keys` scope (key lifecycle and custodian
    # shares act on the whole vault, every tenant's data): `callers add --scopes keys` for
    # a caller of another tenant is refused.
    operator_tenant: str = "ops"
    # Auto-rotation: the vault makes a new primary data key once the primary is this many
    # seconds old (the cryptoperiod; 0 = no age limit) or has done this many encryptions.
    key_max_age: float = 365 * 86400.0
    key_max_encryptions: int = 2**30  # 1 to 2^31
    # Where the master key (KEK) lives: file (master.key in the data dir), pkcs11 (an AES
    # key on an HSM token that never leaves it) or shares (k-of-n custodian shares; the
    # server starts sealed). The PKCS#11 PIN comes from VAULT_PKCS11_PIN or pkcs11_pin_file.
    kek_provider: str = "file"
    pkcs11_module: str = ""  # path of the token's PKCS#11 library (.so)
    pkcs11_token_label: str = ""  # label of the token holding the master key
    pkcs11_key_label: str = "vault-master-key"  # label of the AES key on the token
    pkcs11_pin_file: str = ""  # a 0600 file holding the user PIN ("" = VAULT_PKCS11_PIN)
    # The store: "" = SQLite in data_dir (vault.db); sqlite:///PATH; or
    # postgresql://USER[:PASSWORD]@HOST[:PORT]/DB (several replicas may share it). The
    # master key file stays in data_dir either way. Never in a repr (it may hold a password).
    database_url: str = field(default="", repr=False)
    # Per-subject keys (crypto-shredding), apart from the store so its backups never hold
    # them: "" = subject-keys.db in data_dir (SQLite store only); sqlite:///PATH; or
    # postgresql://… naming ANOTHER database (required with a PostgreSQL database_url).
    subject_key_database_url: str = field(default="", repr=False)

    @property
    def master_key_path(self) -> Path:
        return self.data_dir / "master.key"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "vault.db"

    @property
    def subject_keys_path(self) -> Path:
        """Per-subject keys: a file of their own, which backups of vault.db leave out."""
        return self.data_dir / "subject-keys.db"

    @property
    def dev_key_path(self) -> Path:
        return self.data_dir / "dev-api-key"

    @property
    def dev_marker_path(self) -> Path:
        """Written when --dev creates the vault: --dev serves only a store it created."""
        return self.data_dir / "dev-vault"


def _coerce(name: str, raw: Any, like: Any) -> Any:
    try:
        if isinstance(like, bool):
            if isinstance(raw, bool):
                return raw
            return str(raw).strip().lower() in {"1", "true", "yes", "on"}
        if isinstance(like, Path):
            return Path(raw)
        return type(like)(raw)
    except (TypeError, ValueError):
        raise FailedPreconditionError(
            f"configuration {name} has the wrong type", reason="BAD_CONFIG"
        ) from None


_NON_NEGATIVE = (
    "max_concurrent_rpcs",
    "max_connections",
    "max_connection_idle",
    "max_connection_age",
    "max_connection_age_grace",
    "audit_head_interval",  # 0: a head after every append
    "refusal_rate",
    "route_refresh_interval",  # 0: Forward re-reads the routes on every call
    "tokenize_rate",
    "min_ttl",
)


def _check_limits(cfg: Config) -> None:
    for name in _NON_NEGATIVE:
        if getattr(cfg, name) < 0:
            raise FailedPreconditionError(f"{name} must be 0 or more", reason="BAD_CONFIG")
    if cfg.refusal_burst < 1:
        raise FailedPreconditionError("refusal_burst must be 1 or more", reason="BAD_CONFIG")
    if cfg.tokenize_burst < 1:
        raise FailedPreconditionError("tokenize_burst must be 1 or more", reason="BAD_CONFIG")
    for name in ("refusal_audit_window", "tokenize_audit_window"):
        if getattr(cfg, name) <= 0:
            raise FailedPreconditionError(
                f"{name} must be more than 0 seconds", reason="BAD_CONFIG"
            )


def load_config(file: Path | None, overrides: dict[str, Any]) -> Config:
    """Merge the layers; ``overrides`` are flags given on the command line (None = unset)."""
    cfg = Config()
    known = {f.name: getattr(cfg, f.name) for f in fields(Config)}
    layers: list[dict[str, Any]] = []
    if file is not None:
        try:
            layers.append(tomllib.loads(file.read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError):
            raise FailedPreconditionError(
                "the config file cannot be read as TOML", reason="BAD_CONFIG"
            ) from None
    layers.append(
        {
            name: os.environ[ENV_PREFIX + name.upper()]
            for name in known
            if ENV_PREFIX + name.upper() in os.environ
        }
    )
    layers.append({k: v for k, v in overrides.items() if v is not None})
    for layer in layers:
        for name, raw in layer.items():
            key = name.replace("-", "_")
            if key not in known:
                raise FailedPreconditionError(
                    f"unknown configuration setting {key}", reason="BAD_CONFIG"
                )
            cfg = replace(cfg, **{key: _coerce(key, raw, known[key])})
    if not 0 < cfg.cvc_ttl <= _CVC_MAX_TTL:
        raise FailedPreconditionError(
            "cvc_ttl must be more than 0 and at most 3600 seconds", reason="BAD_CONFIG"
        )
    if not 1 <= cfg.cvc_reveals <= _CVC_MAX_REVEALS:
        raise FailedPreconditionError("cvc_reveals must be 1 to 10", reason="BAD_CONFIG")
    if cfg.cvc_memory_bytes < _CVC_MIN_MEMORY:
        raise FailedPreconditionError(
            "cvc_memory_bytes must be at least 65536", reason="BAD_CONFIG"
        )
    if not 0 < cfg.cvc_tenant_share <= 1:
        raise FailedPreconditionError(
            "cvc_tenant_share must be more than 0 and at most 1", reason="BAD_CONFIG"
        )
    if cfg.key_max_age < 0:
        raise FailedPreconditionError(
            "key_max_age must be 0 (off) or a number of seconds", reason="BAD_CONFIG"
        )
    if not 1 <= cfg.key_max_encryptions <= _KEY_MAX_ENCRYPTIONS:
        raise FailedPreconditionError(
            "key_max_encryptions must be 1 to 2147483648 (2^31)", reason="BAD_CONFIG"
        )
    if cfg.kek_provider not in KEK_PROVIDERS:
        raise FailedPreconditionError(
            "kek_provider must be file, pkcs11 or shares", reason="BAD_CONFIG"
        )
    _check_limits(cfg)
    if not cfg.operator_tenant:
        raise FailedPreconditionError("operator_tenant must not be empty", reason="BAD_CONFIG")
    if cfg.log_format not in {"plain", "json"}:
        raise FailedPreconditionError("log_format must be plain or json", reason="BAD_CONFIG")
    return cfg
