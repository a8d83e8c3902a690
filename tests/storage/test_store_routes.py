"""Store contract: Forward routes and the callers allowed to use them (migration 0011)."""

from __future__ import annotations

from dataclasses import replace

from vault.storage.route_store import RouteRow

NOW = 1_800_000_000.0  # the suite's fixed clock (as in conftest.py)


def _route(name: str = "stripe", **fields) -> RouteRow:
    values = {
        "name": name,
        "url": "https://api.processor.example/v1/charges",
        "method": "POST",
        "ca_pem": b"-----BEGIN CERTIFICATE-----\n...\n",
        "client_cert_pem": None,
        "client_key_sealed": b"\x00sealed\xff",
        "allow_headers": ("authorization", "idempotency-key"),
        "timeout": 2.5,
        "max_response_bytes": 65536,
        "tokenize_paths": ("card.number",),
        "created_at": NOW,
    }
    return RouteRow(**(values | fields))


async def test_no_routes_in_a_new_store(store):
    assert await store.routes() == []
    assert await store.route_permissions() == []


async def test_route_round_trip(store):
    await store.put_route(_route())
    [row] = await store.routes()
    assert row == _route(revision=1)
    assert type(row.client_key_sealed) is bytes
    assert type(row.ca_pem) is bytes


async def test_put_again_replaces_and_moves_the_revision(store):
    await store.put_route(_route())
    await store.put_route(_route(url="https://other.example/pay", ca_pem=None, timeout=9.0))
    [row] = await store.routes()
    assert row.url == "https://other.example/pay"
    assert row.ca_pem is None
    assert row.timeout == 9.0
    assert row.revision == 2


async def test_routes_are_listed_by_name(store):
    for name in ("worldpay", "adyen", "stripe"):
        await store.put_route(_route(name, allow_headers=(), tokenize_paths=()))
    rows = await store.routes()
    assert [r.name for r in rows] == ["adyen", "stripe", "worldpay"]
    assert rows[0].allow_headers == ()
    assert rows[0].tokenize_paths == ()


async def test_permissions_are_kept_once_and_go_with_the_route(store):
    await store.put_route(_route("stripe"))
    await store.put_route(_route("adyen"))
    await store.allow_routes("checkout", ["stripe", "adyen"], NOW)
    await store.allow_routes("checkout", ["stripe"], NOW + 1)
    await store.allow_routes("refunds", ["adyen"], NOW)
    await store.allow_routes("nobody", [], NOW)
    assert await store.route_permissions() == [
        ("checkout", "adyen"),
        ("checkout", "stripe"),
        ("refunds", "adyen"),
    ]
    assert await store.remove_route("adyen") is True
    assert await store.remove_route("adyen") is False
    assert [r.name for r in await store.routes()] == ["stripe"]
    # Re-adding a removed route does not silently give back its old permissions.
    await store.put_route(replace(_route("adyen")))
    assert await store.route_permissions() == [("checkout", "stripe")]


async def test_a_second_process_sees_the_routes(backend, store):
    await store.put_route(_route())
    other = backend.new_store()
    await other.open()
    try:
        assert [r.name for r in await other.routes()] == ["stripe"]
    finally:
        await other.close()
