"""A real vault below the API: a SQLite store and subject-key store on temporary files,
a key-file master key, data-key version 1, the audit trail and a manual clock; the use
cases are built by ``build_use_cases`` as the server builds them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from vault.audit.trail import AuditTrail
from vault.auth.policy import ALL_SCOPES, Caller
from vault.clock import ManualClock
from vault.crypto.keyfile import KeyFileKek
from vault.domain.keys import KeyMaterial, init_keyring
from vault.domain.subject_keys import SubjectKeys
from vault.domain.usecases import UseCases, build_use_cases
from vault.domain.validation import Limits
from vault.storage.sqlite import SqliteStore
from vault.storage.subject_keys_sqlite import SqliteSubjectKeyStore

TENANT = "acme"
# The purpose of a subject export in these tests (an export is a reveal: it needs one).
ACCESS_REQUEST = "GDPR art. 15 request #1"
EVERYTHING = Caller("ops", TENANT, frozenset(ALL_SCOPES))


@dataclass
class Env:
    store: SqliteStore
    keys: KeyMaterial
    clock: ManualClock
    audit: AuditTrail
    subject_keys: SubjectKeys
    kek: KeyFileKek

    def build(self, limits: Limits | None = None, **kw: object) -> UseCases:
        return build_use_cases(
            self.store,
            self.keys,
            self.clock,
            limits,
            audit=self.audit,
            subject_keys=self.subject_keys,
            **kw,  # type: ignore[arg-type]
        )


@pytest.fixture
async def env(tmp_path):
    clock = ManualClock()
    store = SqliteStore(tmp_path / "vault.db")
    key_store = SqliteSubjectKeyStore(tmp_path / "subject-keys.db")
    await store.open()
    await key_store.open()
    kek = KeyFileKek.create(tmp_path / "master.key")
    await init_keyring(store, kek, clock)
    keys = KeyMaterial(store, kek, clock)
    await keys.load()
    audit = await AuditTrail.open(store, kek, clock)
    subject_keys = await SubjectKeys.open(store, key_store, kek, clock)
    yield Env(store, keys, clock, audit, subject_keys, kek)
    audit.close()
    await key_store.close()
    await store.close()


@pytest.fixture
async def vault(env):
    return env.build()
