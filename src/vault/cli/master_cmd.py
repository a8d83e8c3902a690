"""``vaultctl keys init --shares``, ``keys rotate-master`` and ``unseal``: the master key.

Shares are printed once (or written one 0600 file per custodian) and never stored; the
store keeps only N, K, the kek_id and a verifier per share. ``unseal`` reads a share from
stdin or a prompt, never from a flag (flags show in `ps` and shell history).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from vault.audit.base import OUTCOME_ERROR
from vault.cli.audit_cmd import record_operator_event
from vault.cli.common import (
    CommandError,
    add_client_tls_args,
    add_store_args,
    check_plaintext_target,
    client_channel,
    config_for,
    vault_of,
)
from vault.cli.kek import add_shares_arg
from vault.config import Config
from vault.crypto.base import KekProvider
from vault.crypto.kekring import KekRing
from vault.crypto.keyfile import KeyFileKek
from vault.crypto.shares import MAX_SHARES, MIN_THRESHOLD
from vault.domain import master_rotation
from vault.domain.keys import init_keyring
from vault.domain.unseal import SHARES_SOURCE, new_share_scheme
from vault.errors import VaultError
from vault.master_key import next_key_path, open_pkcs11, retired_key_path
from vault.secrets import SecretBytes
from vault.storage.base import Store

__all__ = [
    "ACTION_KEY_ROTATE_MASTER",
    "add_init_args",
    "init_shares",
    "move_key_files",
    "register",
]

ACTION_KEY_ROTATE_MASTER = "key.rotate_master"  # vaultctl keys rotate-master (kek ids only)
_KEY_BYTES = 32
_MAX_SHARE_CHARS = 256


def add_init_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kek",
        choices=["file", "pkcs11", "shares"],
        help="master-key provider (default: kek_provider from the config, else file)",
    )
    p.add_argument("--shares", type=int, help="split the master key into N custodian shares")
    p.add_argument("--threshold", type=int, help="K: shares needed to unseal (2 <= K <= N)")
    p.add_argument(
        "--share-dir",
        type=Path,
        help="write one 0600 file per custodian here instead of printing the shares",
    )


def _write_share_files(directory: Path, texts: list[str]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = [directory / f"share-{i}.txt" for i in range(1, len(texts) + 1)]
    if any(p.exists() for p in paths):
        raise CommandError("--share-dir already holds share files; use an empty directory")
    for path, text in zip(paths, texts, strict=True):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
    return paths


async def init_shares(args: argparse.Namespace) -> int:
    """A new master key split K of N; data key v1 wrapped under it. The full key exists
    only in this process's memory."""
    count, threshold = args.shares, args.threshold
    if count is None or threshold is None:
        raise CommandError("--shares N and --threshold K go together")
    if not MIN_THRESHOLD <= threshold <= count <= MAX_SHARES:
        raise CommandError("shares need 2 <= --threshold <= --shares <= 255")
    cfg = config_for(args, kek_provider="shares")
    cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    async with vault_of(args, cfg=cfg) as vault:
        store, clock = vault.store, vault.clock
        if await store.key_versions() or await store.share_scheme() is not None:
            raise CommandError("keys already initialised (use `keys rotate-master` to move)")
        key = SecretBytes(os.urandom(_KEY_BYTES))
        scheme, shares = new_share_scheme(key, threshold, count, clock.now())
        texts = [s.text() for s in shares]
        # Files first: if they cannot be written, nothing is recorded.
        paths = _write_share_files(args.share_dir, texts) if args.share_dir else []
        # The facts, then data key v1: a crash in between leaves an empty vault whose
        # shares were never shown; delete the data dir and run init again.
        if not await store.put_share_scheme(scheme):
            raise CommandError("keys already initialised (use `keys rotate-master` to move)")
        await init_keyring(store, KeyFileKek(key, source=SHARES_SOURCE), clock)
    print(
        f"master key {scheme.kek_id} split into {count} shares, {threshold} needed to unseal; "
        "data key created"
    )
    if paths:
        for i, path in enumerate(paths, 1):
            print(f"custodian {i}: {path}")
    else:
        for i, text in enumerate(texts, 1):
            print(f"custodian {i} (shown once, hand it over now): {text}")
    print("serve with kek_provider = shares; custodians unseal with `vaultctl unseal`")
    return 0


# -- rotate-master ----------------------------------------------------------------------


def _target(cfg: Config, args: argparse.Namespace) -> KekProvider:
    """The new master key: a new key file (or the one a killed run left), or the HSM
    key (created on the token if absent)."""
    if args.to == "file":
        path = next_key_path(cfg)
        return KeyFileKek.load(path) if path.exists() else KeyFileKek.create(path)
    overrides: dict[str, Any] = {}
    if args.pkcs11_key_label:
        overrides["pkcs11_key_label"] = args.pkcs11_key_label
    target_cfg = config_for(args, **overrides)
    return open_pkcs11(target_cfg, create=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_key_files(cfg: Config, target: str, key_label: str | None = None) -> str:
    """Every row is under the new key: the key files change places. The retired file is
    kept (0600) so a store backup from before the rotation can still be restored; delete
    it once no such backup is kept. Returns the line telling the operator what to do."""
    current = cfg.master_key_path
    if current.exists():
        old = KeyFileKek.load(current).kek_id
        retired = retired_key_path(cfg, old)
        if not retired.exists():
            os.link(current, retired)
    if target == "file":
        # Atomic: master.key is the old key until this rename, the new one after it.
        next_key_path(cfg).replace(current)
    elif current.exists():
        current.unlink()
    _fsync_dir(cfg.data_dir)
    settings = [] if target == cfg.kek_provider else [f"kek_provider = {target}"]
    if target == "pkcs11" and key_label and key_label != cfg.pkcs11_key_label:
        settings.append(f"pkcs11_key_label = {key_label}")
    if not settings:
        return "servers pick the new master key up when restarted"
    return f"set {' and '.join(settings)} in the config and restart the servers"


async def _rotate_master(args: argparse.Namespace) -> int:
    detail: dict[str, str] = {"to": args.to}
    async with vault_of(args, need_keys=True) as vault:
        cfg, store = vault.config, vault.store
        ring = await vault.master_key()
        new = _target(cfg, args)
        detail["new_kek"] = new.kek_id
        both = KekRing(new, [ring])

        def show(p: master_rotation.MasterProgress) -> None:
            print(f"{p.moved} keys re-wrapped under {new.kek_id}, {p.remaining} to go", flush=True)

        try:
            result = await master_rotation.rotate_master(store, ring, new, progress=show)
        except VaultError as exc:
            await _record(cfg, store, both, detail, exc.reason)
            raise
        detail |= {"old_keks": ",".join(result.old_kek_ids), "moved": str(result.moved)}
        # Recorded under the new key (the audit key has moved with the rest), before the
        # files move: a change the trail lacks is not finished.
        await _record(cfg, store, both, detail, "")
    if new.kek_id == ring.kek_id and args.to != "file":
        print(f"every key is already under {new.kek_id}")
        return 0
    advice = move_key_files(cfg, args.to, args.pkcs11_key_label)
    print(f"master key rotated to {new.kek_id}: {result.moved} keys re-wrapped; {advice}")
    return 0


async def _record(
    cfg: Config, store: Store, kek: KekProvider, detail: dict[str, str], reason: str
) -> None:
    await record_operator_event(
        cfg,
        store,
        ACTION_KEY_ROTATE_MASTER,
        "",
        detail,
        outcome=OUTCOME_ERROR if reason else "ok",
        reason=reason,
        kek=kek,
    )


# -- unseal -----------------------------------------------------------------------------


def _read_share() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("unseal share: ")
    return sys.stdin.readline()[:_MAX_SHARE_CHARS].strip()


def _credential(args: argparse.Namespace) -> str:
    if args.api_key_file:
        try:
            return Path(args.api_key_file).read_text(encoding="utf-8").strip()
        except OSError:
            raise CommandError("--api-key-file cannot be read") from None
    key = os.environ.get("VAULT_API_KEY", "")
    if not key:
        raise CommandError("unseal needs a keys-scope API key: --api-key-file or VAULT_API_KEY")
    return key


async def _unseal(args: argparse.Namespace) -> int:
    import grpc  # noqa: PLC0415 - only this command talks to a server
    from google.rpc import error_details_pb2  # noqa: PLC0415
    from grpc_status import rpc_status  # noqa: PLC0415

    from vault.v1 import seal_service_pb2, seal_service_pb2_grpc  # noqa: PLC0415

    check_plaintext_target(args, args.addr)  # before the share is typed in
    key = _credential(args)
    share = _read_share()
    if not share:
        raise CommandError("no share given on stdin")
    with client_channel(grpc, args, args.addr) as channel:
        stub = seal_service_pb2_grpc.SealServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            reply = stub.SubmitUnsealShare(
                seal_service_pb2.SubmitUnsealShareRequest(share=share),
                metadata=(("authorization", f"Bearer {key}"),),
                timeout=args.timeout,
            )
        except grpc.RpcError as exc:
            reason = exc.code().name
            status = rpc_status.from_call(exc)  # type: ignore[arg-type]
            for d in status.details if status is not None else ():
                info = error_details_pb2.ErrorInfo()
                if d.Unpack(info):
                    reason = info.reason
            raise CommandError(f"unseal refused: {reason}") from None
    if reply.sealed:
        print(f"share accepted: {reply.shares_submitted} of {reply.threshold}; still sealed")
    else:
        print(f"share accepted: {reply.threshold} of {reply.threshold}; the vault is unsealed")
    return 0


def register(subparsers: Any, keys_sub: Any) -> None:
    """Add ``keys rotate-master`` and ``unseal`` to vaultctl's parser."""
    rm = keys_sub.add_parser(
        "rotate-master",
        help="re-wrap every data, fingerprint and service key under a new master key",
    )
    add_store_args(rm)
    add_shares_arg(rm)
    rm.add_argument("--to", choices=["file", "pkcs11"], required=True)
    rm.add_argument(
        "--pkcs11-key-label", help="with --to pkcs11: the new key's label (default: config)"
    )
    rm.set_defaults(handler=_rotate_master)

    unseal = subparsers.add_parser(
        "unseal", help="submit one custodian share (read from stdin or a prompt)"
    )
    unseal.add_argument("--addr", default="127.0.0.1:50051", help="HOST:PORT of the vault")
    unseal.add_argument(
        "--api-key-file", help="file holding a keys-scope API key (else VAULT_API_KEY)"
    )
    unseal.add_argument("--timeout", type=float, default=30.0, help="seconds")
    add_client_tls_args(unseal)
    unseal.set_defaults(handler=_unseal)
