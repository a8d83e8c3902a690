"""Forward routes below the API, over a real SQLite store and key-file master key: the
client key sealed under route-secrets:1 (bound to its route, rewrapped with the master
key like the other service keys), and the route table's reloads by revision."""

from __future__ import annotations

import pytest
from mtls_certs_local import client_pair

from vault.errors import DecryptionError, NotFoundError
from vault.forward.routes import (
    ROUTE_SECRETS_KEY_NAME,
    RouteAdministration,
    RouteSecrets,
    RouteSpec,
)
from vault.forward.table import RouteTable
from vault.secrets import SecretBytes
from vault.storage.base import WrappedKeyKind


class Monotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def admin(env) -> RouteAdministration:
    async def trail():
        return env.audit

    async def secrets():
        return await RouteSecrets.open(env.store, env.kek, env.clock, create=True)

    return RouteAdministration(env.store, env.clock, trail, secrets, "ops")


async def test_client_key_is_sealed_and_bound_to_its_route(env):
    cert, key = client_pair()
    await admin(env).add(
        RouteSpec(name="acq", url="https://acq.example/pay", client_cert_pem=cert,
                  client_key_pem=SecretBytes(key))
    )  # fmt: skip
    [row] = await env.store.routes()
    assert row.client_key_sealed is not None
    assert key not in row.client_key_sealed
    secrets = await RouteSecrets.open(env.store, env.kek, env.clock, create=False)
    assert secrets is not None
    assert secrets.unseal("acq", row.client_key_sealed).reveal() == key
    with pytest.raises(DecryptionError):
        secrets.unseal("other", row.client_key_sealed)
    # A service key like the others: a master-key rotation rewraps it.
    wrapped = await env.store.wrapped_keys()
    assert (WrappedKeyKind.SERVICE_KEY, ROUTE_SECRETS_KEY_NAME) in {
        (w.kind, w.name) for w in wrapped
    }
    assert "PRIVATE" not in repr(row)


async def test_table_reloads_after_the_interval_and_keeps_unchanged_routes(env):
    clock = Monotonic()

    async def no_secrets():
        return None

    table = RouteTable(env.store, no_secrets, refresh_seconds=2.0, monotonic=clock)
    assert await table.route("stripe") is None
    await admin(env).add(RouteSpec(name="stripe", url="https://api.stripe.example/v1/pi"))
    await env.store.allow_routes("checkout", ["stripe"], env.clock.now())
    assert await table.route("stripe") is None  # within the interval: not re-read yet
    clock.now = 2.5
    first = await table.route("stripe")
    assert first is not None
    assert table.allowed("checkout", "stripe")
    assert not table.allowed("other", "stripe")
    clock.now = 5.0
    assert await table.route("stripe") is first  # same revision: the same object
    await admin(env).add(RouteSpec(name="stripe", url="https://api.stripe.example/v2/pi"))
    clock.now = 7.5
    second = await table.route("stripe")
    assert second is not None
    assert second.revision == first.revision + 1
    assert second.url.endswith("/v2/pi")
    await admin(env).remove("stripe")
    clock.now = 10.0
    assert await table.route("stripe") is None
    assert not table.allowed("checkout", "stripe")
    with pytest.raises(NotFoundError):
        await admin(env).remove("stripe")
