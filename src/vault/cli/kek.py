"""The master key for vaultctl commands, from the configured provider (see master_key).

With kek_provider = shares the key exists only when K custodians supply their shares:
commands that need it take ``--shares-from -`` (K share lines on stdin, never a flag
value) and otherwise refuse with one line ("the vault is sealed: ..."). A key rebuilt
once is kept for the rest of this vaultctl run (its audit record needs it too).
"""

from __future__ import annotations

import argparse
import sys

from vault.config import Config
from vault.crypto.base import KekProvider
from vault.crypto.kekring import KekRing
from vault.domain.unseal import kek_from_share_texts
from vault.master_key import open_kek
from vault.storage.base import Store

__all__ = ["add_shares_arg", "master_key", "read_shares"]

_MAX_SHARE_LINES = 255
# This run's rebuilt key, and whether --shares-from - was given (recorded when parsed,
# so helpers that open the audit trail without the parsed arguments see it too).
_rebuilt: dict[str, KekProvider] = {}
_asked: dict[str, bool] = {}


class _SharesFrom(argparse.Action):
    def __call__(
        self,
        _parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        _option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        _asked["stdin"] = values == "-"


def add_shares_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shares-from",
        choices=["-"],
        action=_SharesFrom,
        help="with kek_provider = shares: read K custodian shares from stdin, one a line",
    )


async def read_shares(store: Store) -> KekProvider:
    """K share lines from stdin → the rebuilt master key (checked against the store)."""
    lines = [line.strip() for line in sys.stdin.readlines()[:_MAX_SHARE_LINES]]
    kek = await kek_from_share_texts(store, [line for line in lines if line])
    _rebuilt["shares"] = kek
    return kek


async def master_key(cfg: Config, store: Store, args: argparse.Namespace | None = None) -> KekRing:
    """The configured master key (with any other the store's rows still name)."""
    shares_kek = _rebuilt.get("shares")
    asked = _asked.get("stdin", False) or getattr(args, "shares_from", None) == "-"
    if cfg.kek_provider == "shares" and shares_kek is None and asked:
        shares_kek = await read_shares(store)
    return await open_kek(cfg, store, shares_kek)
