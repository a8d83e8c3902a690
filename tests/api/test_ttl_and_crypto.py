"""Token lifetimes on a manual clock, ciphertexts bound to their rows, and metrics."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
from api_helpers import (
    PURPOSE,
    assert_reason,
    bearer,
    expect_code,
    tokenize_request,
)
from google.protobuf import duration_pb2
from prometheus_client.parser import text_string_to_metric_families

from vault.v1 import token_service_pb2 as pb


def _ttl(seconds: int, nanos: int = 0) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


async def _not_found_everywhere(vault, token: str) -> None:
    for request_call in (
        vault.stub.Detokenize(
            pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=vault.md
        ),
        vault.stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=[token], purpose=PURPOSE), metadata=vault.md
        ),
        vault.stub.GetToken(pb.GetTokenRequest(token=token), metadata=vault.md),
    ):
        exc = await expect_code(request_call, grpc.StatusCode.NOT_FOUND)
        assert_reason(exc, "TOKEN_NOT_FOUND")


# -- TTL --------------------------------------------------------------------------------


async def test_ttl_expiry_and_purge(vault):
    start = vault.clock.now()
    short = await vault.stub.Tokenize(
        tokenize_request("PAN", "4242424242424242", ttl=_ttl(60)), metadata=vault.md
    )
    forever = await vault.stub.Tokenize(
        tokenize_request("PAN", "5555555555554444"), metadata=vault.md
    )
    assert short.HasField("expire_time")
    assert short.expire_time.seconds == int(start) + 60
    assert short.expire_time.nanos == 0
    assert not forever.HasField("expire_time")
    info = await vault.stub.GetToken(pb.GetTokenRequest(token=short.token), metadata=vault.md)
    assert info.expire_time == short.expire_time
    assert info.create_time.seconds == int(start)

    # One second before the end it still reveals.
    vault.clock.advance(59)
    revealed = await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=short.token, purpose=PURPOSE), metadata=vault.md
    )
    assert revealed.text == "4242424242424242"

    vault.clock.advance(2)
    await _not_found_everywhere(vault, short.token)
    # Expired but not yet purged: the row is still in the file, and still invisible.
    assert vault.count_tokens() == 2

    assert await vault.server.vault.purge_expired() == 1
    assert vault.sql("SELECT token FROM tokens") == [(forever.token,)]
    assert await vault.server.vault.purge_expired() == 0
    await _not_found_everywhere(vault, short.token)

    # The token without a TTL survives, much later too.
    vault.clock.advance(10 * 366 * 86400)
    assert await vault.server.vault.purge_expired() == 0
    kept = await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=forever.token, purpose=PURPOSE), metadata=vault.md
    )
    assert kept.text == "5555555555554444"


async def test_expired_token_cannot_be_deleted_either(vault):
    """An expired token is gone for every read; DeleteToken must agree (NOT_FOUND), not
    report success for a token GetToken says does not exist."""
    short = await vault.stub.Tokenize(
        tokenize_request("TEXT", "ephemeral", ttl=_ttl(60)), metadata=vault.md
    )
    vault.clock.advance(61)
    await _not_found_everywhere(vault, short.token)
    exc = await expect_code(
        vault.stub.DeleteToken(pb.DeleteTokenRequest(token=short.token), metadata=vault.md),
        grpc.StatusCode.NOT_FOUND,
    )
    assert_reason(exc, "TOKEN_NOT_FOUND")


async def test_fractional_ttl(vault_factory):
    vault = await vault_factory(min_ttl=1)  # below the default minimum of 60 s
    start = vault.clock.now()
    resp = await vault.stub.Tokenize(
        tokenize_request("TEXT", "short note", ttl=_ttl(1, 500_000_000)), metadata=vault.md
    )
    assert resp.expire_time.ToNanoseconds() == int(start) * 10**9 + 1_500_000_000
    vault.clock.advance(1.4)
    info = await vault.stub.GetToken(pb.GetTokenRequest(token=resp.token), metadata=vault.md)
    assert info.token == resp.token
    vault.clock.advance(0.2)
    await _not_found_everywhere(vault, resp.token)


async def test_batch_ttl_per_item(vault_factory):
    vault = await vault_factory(min_ttl=1)  # below the default minimum of 60 s
    start = int(vault.clock.now())
    resp = await vault.stub.BatchTokenize(
        pb.BatchTokenizeRequest(
            requests=[
                tokenize_request("TEXT", "ten", ttl=_ttl(10)),
                tokenize_request("TEXT", "none"),
                tokenize_request("TEXT", "hundred", ttl=_ttl(100)),
            ]
        ),
        metadata=vault.md,
    )
    ten, none, hundred = resp.responses
    assert ten.expire_time.seconds == start + 10
    assert not none.HasField("expire_time")
    assert hundred.expire_time.seconds == start + 100
    vault.clock.advance(50)
    assert await vault.server.vault.purge_expired() == 1
    remaining = {t for (t,) in vault.sql("SELECT token FROM tokens")}
    assert remaining == {none.token, hundred.token}


async def test_deterministic_token_is_reissued_after_expiry(vault):
    first = await vault.stub.Tokenize(
        tokenize_request("EMAIL", "jane@example.com", deterministic=True, ttl=_ttl(60)),
        metadata=vault.md,
    )
    again = await vault.stub.Tokenize(
        tokenize_request("EMAIL", "jane@example.com", deterministic=True, ttl=_ttl(60)),
        metadata=vault.md,
    )
    assert (again.token, again.created) == (first.token, False)
    vault.clock.advance(61)
    fresh = await vault.stub.Tokenize(
        tokenize_request("EMAIL", "jane@example.com", deterministic=True, ttl=_ttl(60)),
        metadata=vault.md,
    )
    assert fresh.created is True
    assert fresh.token != first.token
    assert fresh.fingerprint == first.fingerprint
    await _not_found_everywhere(vault, first.token)
    revealed = await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=fresh.token, purpose=PURPOSE), metadata=vault.md
    )
    assert revealed.text == "jane@example.com"


# -- ciphertexts bound to their rows (AAD) -----------------------------------------------


async def _two_tokens(vault, kind="EMAIL", values=("alice@example.com", "bob@example.org")):
    a = await vault.stub.Tokenize(tokenize_request(kind, values[0]), metadata=vault.md)
    b = await vault.stub.Tokenize(tokenize_request(kind, values[1]), metadata=vault.md)
    return a.token, b.token


async def _decryption_fails(vault, token: str, md, forbidden: list[str]) -> None:
    for request_call in (
        vault.stub.Detokenize(pb.DetokenizeRequest(token=token, purpose=PURPOSE), metadata=md),
        vault.stub.BatchDetokenize(
            pb.BatchDetokenizeRequest(tokens=[token], purpose=PURPOSE), metadata=md
        ),
        vault.stub.GetToken(pb.GetTokenRequest(token=token), metadata=md),
    ):
        exc = await expect_code(request_call, grpc.StatusCode.INTERNAL)
        assert exc.details() == "decryption failed"
        for value in forbidden:
            assert value not in (exc.details() or "")


@pytest.mark.parametrize("kind", ["EMAIL", "PAN"])
async def test_swapped_ciphertexts_do_not_decrypt(vault, kind):
    values = (
        ("alice@example.com", "bob@example.org")
        if kind == "EMAIL"
        else ("4242424242424242", "4000056655665556")
    )
    a, b = await _two_tokens(vault, kind, values)
    ((ct_a,),) = vault.sql("SELECT ciphertext FROM tokens WHERE token = ?", (a,))
    ((ct_b,),) = vault.sql("SELECT ciphertext FROM tokens WHERE token = ?", (b,))
    vault.sql("UPDATE tokens SET ciphertext = ? WHERE token = ?", (ct_b, a))
    vault.sql("UPDATE tokens SET ciphertext = ? WHERE token = ?", (ct_a, b))
    await _decryption_fails(vault, a, vault.md, list(values))
    await _decryption_fails(vault, b, vault.md, list(values))


async def test_ciphertext_copied_to_another_row_does_not_decrypt(vault):
    a, b = await _two_tokens(vault)
    ((ct_a,),) = vault.sql("SELECT ciphertext FROM tokens WHERE token = ?", (a,))
    vault.sql("UPDATE tokens SET ciphertext = ? WHERE token = ?", (ct_a, b))
    await _decryption_fails(vault, b, vault.md, ["alice@example.com"])
    # The original row still decrypts.
    ok = await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=a, purpose=PURPOSE), metadata=vault.md
    )
    assert ok.text == "alice@example.com"


async def test_row_moved_to_another_tenant_does_not_decrypt(vault):
    acme = await vault.add_caller("acme-app", tenant="acme")
    a, _ = await _two_tokens(vault)
    vault.sql("UPDATE tokens SET tenant = 'acme' WHERE token = ?", (a,))
    await _decryption_fails(vault, a, acme, ["alice@example.com"])


@pytest.mark.parametrize(
    ("column", "value"),
    [("kind", 10), ("token_format", 1)],
    ids=["kind-to-text", "format"],
)
async def test_row_with_changed_columns_does_not_decrypt(vault, column, value):
    a = (
        await vault.stub.Tokenize(tokenize_request("PAN", "4242424242424242"), metadata=vault.md)
    ).token
    vault.sql(f"UPDATE tokens SET {column} = ? WHERE token = ?", (value, a))  # noqa: S608
    await _decryption_fails(vault, a, vault.md, ["4242424242424242"])


async def test_renamed_token_does_not_decrypt(vault):
    a, _ = await _two_tokens(vault)
    renamed = "tok_" + "c" * 32
    vault.sql("UPDATE tokens SET token = ? WHERE token = ?", (renamed, a))
    await _decryption_fails(vault, renamed, vault.md, ["alice@example.com"])


async def test_ciphertext_in_the_file_holds_no_plaintext(vault):
    values = ["4242424242424242", "carol@example.net", "Meet at the back door"]
    for kind, value in zip(["PAN", "EMAIL", "TEXT"], values, strict=True):
        await vault.stub.Tokenize(
            tokenize_request(kind, value, subject="customer-271828", metadata={"note": "visible?"}),
            metadata=vault.md,
        )
    await vault.server.store.close()  # flush the WAL into the file before reading it raw
    raw = b"".join(p.read_bytes() for p in vault.db_path.parent.glob("vault.db*"))
    for secret in [*values, "customer-271828", "visible?"]:
        assert secret.encode() not in raw


# -- metrics ----------------------------------------------------------------------------


def _samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


async def _scrape(port: int) -> str:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()

    return await asyncio.to_thread(get)


def _calls(samples, method: str, code: str) -> float:
    return samples.get(("vault_rpc_calls_total", (("code", code), ("method", method))), 0.0)


def _created(samples, kind: str) -> float:
    return samples.get(("vault_tokens_created_total", (("kind", kind),)), 0.0)


async def test_metrics(vault_factory):
    vault = await vault_factory(metrics_listen="127.0.0.1:0")
    assert vault.server.metrics_port > 0
    before = _samples(await _scrape(vault.server.metrics_port))

    pan, email, subject = "4000056655665556", "metrics.probe@example.net", "subject-8675309"
    t = await vault.stub.Tokenize(tokenize_request("PAN", pan, subject=subject), metadata=vault.md)
    await vault.stub.Tokenize(tokenize_request("EMAIL", email), metadata=vault.md)
    await vault.stub.Tokenize(tokenize_request("EMAIL", email.upper()), metadata=vault.md)
    await vault.stub.Detokenize(
        pb.DetokenizeRequest(token=t.token, purpose=PURPOSE), metadata=vault.md
    )
    await expect_code(
        vault.stub.Tokenize(tokenize_request("PAN", "4000056655665557"), metadata=vault.md),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await expect_code(
        vault.stub.GetToken(pb.GetTokenRequest(token=t.token), metadata=bearer("nope")),
        grpc.StatusCode.UNAUTHENTICATED,
    )

    body = await _scrape(vault.server.metrics_port)
    after = _samples(body)
    assert _calls(after, "Tokenize", "OK") - _calls(before, "Tokenize", "OK") == 3
    assert _calls(after, "Detokenize", "OK") - _calls(before, "Detokenize", "OK") == 1
    assert (
        _calls(after, "Tokenize", "INVALID_ARGUMENT")
        - _calls(before, "Tokenize", "INVALID_ARGUMENT")
        == 1
    )
    assert (
        _calls(after, "GetToken", "UNAUTHENTICATED") - _calls(before, "GetToken", "UNAUTHENTICATED")
        == 1
    )
    assert _created(after, "PAN") - _created(before, "PAN") == 1
    assert _created(after, "EMAIL") - _created(before, "EMAIL") == 2
    assert "vault_rpc_latency_seconds" in body
    for secret in (pan, "4000056655665557", email, email.upper(), subject, t.token, vault.key):
        assert secret not in body
    assert "example.net" not in body.lower()


def _auth_failures(samples, reason: str) -> float:
    return samples.get(("vault_auth_failures_total", (("reason", reason),)), 0.0)


async def test_refused_credentials_and_scopes_are_counted(vault_factory):
    """vault_auth_failures is documented as "Refused credentials and scopes, by reason":
    a PERMISSION_DENIED for a missing scope must count, as a bad credential does."""
    vault = await vault_factory(metrics_listen="127.0.0.1:0")
    before = _samples(await _scrape(vault.server.metrics_port))
    tokenize_only = await vault.add_caller("tokenize-only", ("tokenize",))
    t = await vault.stub.Tokenize(tokenize_request("TEXT", "note"), metadata=tokenize_only)
    await expect_code(
        vault.stub.GetToken(pb.GetTokenRequest(token=t.token), metadata=bearer("nope")),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    await expect_code(
        vault.stub.Detokenize(
            pb.DetokenizeRequest(token=t.token, purpose=PURPOSE), metadata=tokenize_only
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    after = _samples(await _scrape(vault.server.metrics_port))
    assert _auth_failures(after, "BAD_CREDENTIAL") - _auth_failures(before, "BAD_CREDENTIAL") == 1
    assert _auth_failures(after, "MISSING_SCOPE") - _auth_failures(before, "MISSING_SCOPE") == 1
