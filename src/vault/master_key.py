"""Part of the composition root: which master key (KEK provider) the configuration names,
and the other master keys the store still needs while a master-key rotation runs.

``kek_provider``: ``file`` (DATA_DIR/master.key, the default), ``pkcs11`` (an AES key on
an HSM token; PIN from VAULT_PKCS11_PIN or ``pkcs11_pin_file``) or ``shares`` (rebuilt
from custodian shares, never on disk: the server starts sealed).

Every wrapped key records the kek_id of the master key that wrapped it. When the store
names a kek_id the configured provider is not, the loader adds the master keys it can
find that are named: ``master.key.next`` (the new key file of a running rotation),
``master.key`` (when the provider is not ``file``), and the configured HSM key (when the
provider is not ``pkcs11``). A kek_id still unaccounted for is a one-line refusal.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from vault.config import Config
from vault.crypto.base import KekProvider
from vault.crypto.kekring import KekRing
from vault.crypto.keyfile import KeyFileKek
from vault.crypto.pkcs11 import Pkcs11Kek, Pkcs11Settings
from vault.errors import FailedPreconditionError
from vault.secrets import SecretBytes
from vault.storage.base import Store
from vault.tracing import traced_kek

__all__ = [
    "PIN_ENV",
    "next_key_path",
    "open_kek",
    "open_pkcs11",
    "pkcs11_settings",
    "retired_key_path",
]

PIN_ENV = "VAULT_PKCS11_PIN"
_MAX_PIN_BYTES = 256


def next_key_path(cfg: Config) -> Path:
    """The new key file of a rotate-master to ``file`` until every row has moved."""
    return cfg.data_dir / "master.key.next"


def retired_key_path(cfg: Config, kek_id: str) -> Path:
    """Where a key file goes once no row needs it (kept for restoring older backups)."""
    return cfg.data_dir / f"master.key.retired-{kek_id.partition(':')[2]}"


def pkcs11_settings(cfg: Config) -> Pkcs11Settings:
    if not cfg.pkcs11_module or not cfg.pkcs11_token_label or not cfg.pkcs11_key_label:
        raise FailedPreconditionError(
            "pkcs11_module, pkcs11_token_label and pkcs11_key_label must be set",
            reason="BAD_CONFIG",
        )
    return Pkcs11Settings(cfg.pkcs11_module, cfg.pkcs11_token_label, cfg.pkcs11_key_label)


def _pin(cfg: Config) -> SecretBytes:
    """The HSM user PIN: VAULT_PKCS11_PIN, else the 0600 file pkcs11_pin_file. Never a
    flag (flags show in `ps`), never logged."""
    if cfg.pkcs11_pin_file:
        path = Path(cfg.pkcs11_pin_file)
        try:
            info = path.stat()
            if stat.S_IMODE(info.st_mode) & 0o077:
                raise FailedPreconditionError(
                    "the PKCS#11 PIN file is readable by group or others; chmod 600 it",
                    reason="HSM_PIN_FILE_PERMISSIONS",
                )
            pin = path.read_bytes()[:_MAX_PIN_BYTES].strip()
        except OSError:
            raise FailedPreconditionError(
                "the PKCS#11 PIN file cannot be read", reason="HSM_PIN_MISSING"
            ) from None
    else:
        pin = os.environ.get(PIN_ENV, "").encode()
    if not pin:
        raise FailedPreconditionError(
            f"no PKCS#11 PIN: set {PIN_ENV} or pkcs11_pin_file", reason="HSM_PIN_MISSING"
        )
    return SecretBytes(pin)


def open_pkcs11(cfg: Config, *, create: bool = False) -> Pkcs11Kek:
    return Pkcs11Kek.open(pkcs11_settings(cfg), _pin(cfg), create=create)


def _primary(cfg: Config, shares_kek: KekProvider | None) -> KekProvider:
    if cfg.kek_provider == "pkcs11":
        return open_pkcs11(cfg)
    if cfg.kek_provider == "shares":
        if shares_kek is None:
            raise FailedPreconditionError(
                "the vault is sealed: this needs K custodian shares (--shares-from -)",
                reason="VAULT_SEALED",
            )
        return shares_kek
    return KeyFileKek.load(cfg.master_key_path)


def _candidates(cfg: Config, needed: set[str]) -> list[KekProvider]:
    found: list[KekProvider] = []
    files = [next_key_path(cfg)]
    if cfg.kek_provider != "file":
        files.append(cfg.master_key_path)
    found.extend(KeyFileKek.load(path) for path in files if path.exists())
    if cfg.kek_provider != "pkcs11" and cfg.pkcs11_token_label:
        settings = pkcs11_settings(cfg)
        if settings.kek_id in needed:
            found.append(Pkcs11Kek.open(settings, _pin(cfg)))
    return found


async def open_kek(cfg: Config, store: Store, shares_kek: KekProvider | None = None) -> KekRing:
    """The configured master key, with whichever others the store's rows still name."""
    primary = _primary(cfg, shares_kek)
    needed = {row.kek_id for row in await store.wrapped_keys()} - {primary.kek_id}
    others = [k for k in _candidates(cfg, needed) if k.kek_id in needed] if needed else []
    missing = needed - {k.kek_id for k in others}
    if missing:
        raise FailedPreconditionError(
            f"the store has keys wrapped by master key {min(missing)}, which is not "
            "configured here",
            reason="MASTER_KEY_NOT_CONFIGURED",
        )
    # Each master key's calls get a span when tracing is on (an HSM round trip with pkcs11).
    return KekRing(traced_kek(primary), [traced_kek(k) for k in others])
