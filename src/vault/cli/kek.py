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
from vault.wiring import ShareReader

__all__ = ["add_shares_arg", "master_key", "read_shares", "shares_reader"]

_MAX_SHARE_LINES = 255
# The key this vaultctl run rebuilt from the shares on stdin (stdin is read once; a
# command that needs the key twice, e.g. for its change and for its audit record, gets
# the same one).
_rebuilt: dict[str, KekProvider] = {}


def add_shares_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shares-from",
        choices=["-"],
        help="with kek_provider = shares: read K custodian shares from stdin, one a line",
    )


async def read_shares(store: Store) -> KekProvider:
    """K share lines from stdin → the rebuilt master key (checked against the store)."""
    lines = [line.strip() for line in sys.stdin.readlines()[:_MAX_SHARE_LINES]]
    kek = await kek_from_share_texts(store, [line for line in lines if line])
    _rebuilt["shares"] = kek
    return kek


async def master_key(cfg: Config, store: Store, args: argparse.Namespace) -> KekRing:
    """The configured master key (with any other the store's rows still name); with
    kek_provider = shares, rebuilt from stdin when the command got ``--shares-from -``."""
    shares_kek = _rebuilt.get("shares")
    asked = getattr(args, "shares_from", None) == "-"
    if cfg.kek_provider == "shares" and shares_kek is None and asked:
        shares_kek = await read_shares(store)
    return await open_kek(cfg, store, shares_kek)


def shares_reader(args: argparse.Namespace) -> ShareReader | None:
    """For the wiring: with ``--shares-from -``, the shares on stdin (read once a run)."""
    if getattr(args, "shares_from", None) != "-":
        return None

    async def read(store: Store) -> KekProvider:
        return _rebuilt.get("shares") or await read_shares(store)

    return read
