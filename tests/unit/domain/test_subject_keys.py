"""SubjectKeys: get-or-create, the bounded cache, and how long a destroyed key lives on.

Runs on the real SQLite subject-key store in a temporary directory; the cache's clock
(``monotonic``) is injected so no test sleeps.
"""

from __future__ import annotations

import pytest

from vault.clock import ManualClock
from vault.crypto.subject import SubjectKeyWrapper, new_subject_key
from vault.domain.subject_keys import SubjectKeys
from vault.storage.subject_keys_sqlite import SqliteSubjectKeyStore

REF = b"\x05" * 32
AAD = b"aad"


class Tick:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def key_store(tmp_path):
    ks = SqliteSubjectKeyStore(tmp_path / "subject-keys.db")
    await ks.open()
    yield ks
    await ks.close()


def _keys(key_store, wrapper, tick, **kw):
    return SubjectKeys(key_store, wrapper, ManualClock(), monotonic=tick, **kw)


async def test_write_creates_read_finds_destroy_forgets(key_store):
    wrapper, tick = SubjectKeyWrapper(new_subject_key()), Tick()
    keys = _keys(key_store, wrapper, tick)
    assert await keys.for_read("t", REF) is None  # never created
    created = await keys.for_write("t", REF)
    blob = created.encrypt(b"v", AAD)
    # Another process (its own cache) reads the same key from the store.
    other = _keys(key_store, wrapper, tick)
    found = await other.for_read("t", REF)
    assert found is not None
    assert found.decrypt(blob, AAD) == b"v"
    assert await keys.destroy("t", REF)
    assert await keys.for_read("t", REF) is None  # this process: at once
    assert not await keys.destroy("t", REF)


async def test_another_process_stops_using_a_destroyed_key_after_the_recheck(key_store):
    wrapper, tick = SubjectKeyWrapper(new_subject_key()), Tick()
    eraser = _keys(key_store, wrapper, tick)
    server = _keys(key_store, wrapper, tick, recheck_seconds=2.0)
    await server.for_write("t", REF)
    await eraser.destroy("t", REF)
    tick.now = 1.0
    assert await server.for_read("t", REF) is not None  # within the documented window
    tick.now = 2.5
    assert await server.for_read("t", REF) is None
    # A write after the window makes a new key, never the destroyed one again.
    fresh = await server.for_write("t", REF)
    assert await key_store.subject_key("t", REF) is not None
    assert fresh is not None


async def test_the_cache_is_bounded(key_store):
    wrapper, tick = SubjectKeyWrapper(new_subject_key()), Tick()
    keys = _keys(key_store, wrapper, tick, max_entries=3)
    for i in range(10):
        await keys.for_write("t", bytes([i]) * 32)
    assert repr(keys) == "SubjectKeys(3 cached)"
