"""The fingerprint and deterministic-token oracle (issue 13, item 1), tried as an attacker.

A caller holding only `tokenize` (and `reveal-masked`) gets a PAN token with the BIN and
last four kept, then tokenizes the Luhn-valid candidates behind it with BatchTokenize
(and asks for deterministic tokens) and compares what comes back. It must learn nothing:
no fingerprint without the `fingerprint` scope, deterministic tokenize refused, no
fingerprint through GetToken. It is stopped by its tokenize budget within the burst, its
volume is in the audit trail as one aggregated record per window, and the alert rule
fires on the metrics the server exported. A caller with the `fingerprint` scope still
gets fingerprints. Everything runs through a real server on port 0.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from api_helpers import (
    assert_invalid,
    assert_reason,
    expect_code,
    luhn_valid,
    tokenize_request,
)
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from prometheus_client.parser import text_string_to_metric_families

from vault.v1 import token_service_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
BIN, LAST4, LENGTH = "411111", "1111", 16
BURST = 1000  # the default tokenize_burst
BATCH = 100  # candidates per BatchTokenize call
VOLUME_WINDOW = 60.0  # the default tokenize_audit_window


def candidates() -> Iterator[str]:
    """The Luhn-valid PANs a BIN+last4 token of length 16 leaves (about 10^5)."""
    middle = LENGTH - len(BIN) - len(LAST4)
    for n in range(10**middle):
        pan = f"{BIN}{n:0{middle}d}{LAST4}"
        if luhn_valid(pan):
            yield pan


def retry_delay(exc: grpc.aio.AioRpcError) -> float:
    status = rpc_status.from_call(exc)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToNanoseconds() / 1e9
    raise AssertionError("no RetryInfo in the status")


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample the metrics port shows, by (name, labels)."""

    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(await asyncio.to_thread(get))
        for s in family.samples
    }


def sample(samples: dict, name: str, caller: str) -> float:
    return samples.get((name, (("caller", caller),)), 0.0)


def volume_rows(vault, caller: str) -> list[tuple[str, str, dict[str, str]]]:
    rows = vault.sql(
        "SELECT outcome, reason, detail FROM audit_log "
        "WHERE action = 'token.tokenize' AND caller = ? ORDER BY seq",
        (caller,),
    )
    return [(outcome, reason, dict(json.loads(detail))) for outcome, reason, detail in rows]


async def wait_for_rows(vault, caller: str, expected: int) -> list:
    """Move the clock past the volume window and wait (real time, 5 s at most) for the
    background flush to write ``expected`` records."""
    vault.clock.advance(VOLUME_WINDOW + 1)
    deadline = time.monotonic() + 5.0
    while len(got := volume_rows(vault, caller)) < expected:
        assert time.monotonic() < deadline, got
        await asyncio.sleep(0.05)
    return got


def promtool_fires(tmp_path: Path, before: float, after: float, caller: str) -> str:
    """`promtool test rules` of VaultTokenizeBudgetExhausted with the counter values the
    server exported before and after the attack, one minute apart; its output."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (Debian package `prometheus`)")
    series = f'vault_tokenize_budget_refused_items_total{{job="payment-vault",caller="{caller}"}}'
    test = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": series, "values": f"{before:g} {after:g}x5"}],
                "alert_rule_test": [
                    {"eval_time": "0m", "alertname": "VaultTokenizeBudgetExhausted"},
                    {
                        "eval_time": "2m",
                        "alertname": "VaultTokenizeBudgetExhausted",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical", "caller": caller},
                                "exp_annotations": {
                                    "summary": f"Caller {caller} spent its tokenize budget",
                                    "description": (
                                        "Its calls are refused (TOKENIZE_RATE_EXCEEDED). "
                                        "Check the token.tokenize records of the audit "
                                        "trail for its volume, and revoke its credential "
                                        "if it is not a known bulk job."
                                    ),
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "oracle_alert_test.yaml"
    path.write_text(json.dumps(test), encoding="utf-8")  # JSON is YAML
    result = subprocess.run(
        [promtool, "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


async def test_a_tokenize_only_caller_learns_nothing_and_is_stopped(vault_factory, tmp_path):
    vault = await vault_factory(metrics_listen="127.0.0.1:0")
    rng = random.Random(13)
    pool = list(candidates())
    assert 90_000 < len(pool) < 110_000  # the ~10^5 the issue counts
    victim = rng.choice(pool)
    # The victim's card, tokenized by the checkout that owns it (BIN and last four kept).
    owned = await vault.stub.Tokenize(
        tokenize_request("PAN", victim, format="TOKEN_FORMAT_PAN_BIN_LAST4"), metadata=vault.md
    )
    assert owned.fingerprint  # the dev caller holds every scope, fingerprint included
    attacker = await vault.add_caller("attacker", ("tokenize", "reveal-masked"))
    before = await scrape(vault.server.metrics_port)
    stored_before = vault.count_tokens()

    # GetToken to reveal-masked: the shape, never the fingerprint.
    info = await vault.stub.GetToken(pb.GetTokenRequest(token=owned.token), metadata=attacker)
    assert (info.masked, info.token) == ("************1111", owned.token)
    assert info.token[:6] == BIN
    assert info.fingerprint == ""

    # Deterministic tokenize answers "stored already" with created: false: refused, with
    # the field named, nothing written.
    exc = await expect_code(
        vault.stub.Tokenize(tokenize_request("PAN", victim, deterministic=True), metadata=attacker),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert_reason(exc, "DETERMINISTIC_NOT_ALLOWED")
    assert "deterministic" in (exc.details() or "")
    exc = await expect_code(
        vault.stub.BatchTokenize(
            pb.BatchTokenizeRequest(
                requests=[
                    tokenize_request("PAN", p, deterministic=i == 7)
                    for i, p in enumerate(pool[:BATCH])
                ]
            ),
            metadata=attacker,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert "requests[7].deterministic" in (exc.details() or "")
    assert vault.count_tokens() == stored_before

    # The enumeration: the victim is among the first batch. Every answer looks alike.
    order = [victim] + [p for p in pool if p != victim]
    head = order[:BATCH]
    rng.shuffle(head)
    order[:BATCH] = head
    seen: list[pb.TokenizeResponse] = []
    calls = 0
    refused: grpc.aio.AioRpcError | None = None
    for start in range(0, len(order), BATCH):
        chunk = order[start : start + BATCH]
        try:
            resp = await vault.stub.BatchTokenize(
                pb.BatchTokenizeRequest(
                    requests=[
                        tokenize_request("PAN", p, format="TOKEN_FORMAT_PAN_BIN_LAST4")
                        for p in chunk
                    ]
                ),
                metadata=attacker,
            )
        except grpc.aio.AioRpcError as e:
            refused = e
            break
        calls += 1
        seen.extend(resp.responses)
    # Stopped by the budget within the burst: BURST items, then RESOURCE_EXHAUSTED.
    assert refused is not None
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_reason(refused, "TOKENIZE_RATE_EXCEEDED")
    assert retry_delay(refused) > 0
    assert len(seen) == BURST
    assert calls == BURST // BATCH
    assert vault.count_tokens() == stored_before + BURST
    # Nothing tells the victim's card from the others: no fingerprint, a new random token
    # every time, the same masked form and flags.
    assert {r.fingerprint for r in seen} == {""}
    assert {(r.masked, r.created, r.HasField("expire_time")) for r in seen} == {
        ("************1111", True, False)
    }
    assert owned.token not in {r.token for r in seen}
    assert len({r.token for r in seen}) == BURST

    # The volume is in the audit trail, aggregated: one record for the tokenized items,
    # one for the refused ones, not one per call.
    rows = await wait_for_rows(vault, "attacker", 2)
    assert [(o, r, d["count"], d["calls"]) for o, r, d in rows] == [
        ("ok", "", str(BURST), str(calls)),
        ("denied", "TOKENIZE_RATE_EXCEEDED", str(BATCH), "1"),
    ]

    # Metrics: the caller's items and budget refusals; the alert fires on them.
    after = await scrape(vault.server.metrics_port)
    items = "vault_tokenize_items_total"
    refused_items = "vault_tokenize_budget_refused_items_total"
    assert sample(after, items, "attacker") - sample(before, items, "attacker") == BURST
    gained = sample(after, refused_items, "attacker") - sample(before, refused_items, "attacker")
    assert gained == BATCH
    promtool_fires(
        tmp_path,
        sample(before, refused_items, "attacker"),
        sample(after, refused_items, "attacker"),
        "attacker",
    )


async def test_a_caller_with_the_fingerprint_scope_still_gets_it(vault):
    pan = next(candidates())
    dedup = await vault.add_caller("dedup", ("tokenize", "fingerprint", "reveal-masked"))
    plain = await vault.add_caller("plain", ("tokenize", "reveal-masked"))
    first = await vault.stub.Tokenize(tokenize_request("PAN", pan), metadata=dedup)
    again = await vault.stub.Tokenize(tokenize_request("PAN", pan), metadata=dedup)
    batch = await vault.stub.BatchTokenize(
        pb.BatchTokenizeRequest(requests=[tokenize_request("PAN", pan)]), metadata=dedup
    )
    # The same card, the same tenant-wide fingerprint (as the dev caller sees it).
    dev = await vault.stub.Tokenize(tokenize_request("PAN", pan), metadata=vault.md)
    assert first.fingerprint
    assert first.fingerprint == again.fingerprint == batch.responses[0].fingerprint
    assert first.fingerprint == dev.fingerprint
    info = await vault.stub.GetToken(pb.GetTokenRequest(token=first.token), metadata=dedup)
    assert info.fingerprint == first.fingerprint
    # Nothing else changes between the two callers' answers.
    other = await vault.stub.Tokenize(tokenize_request("PAN", pan), metadata=plain)
    assert other.fingerprint == ""
    assert (other.masked, other.created) == (first.masked, first.created)
    shown = await vault.stub.GetToken(pb.GetTokenRequest(token=first.token), metadata=plain)
    assert shown.fingerprint == ""
    info.ClearField("fingerprint")
    assert shown == info


async def test_deterministic_tokens_need_their_scope(vault):
    email = "jane@example.com"
    allowed = await vault.add_caller("dedup", ("tokenize", "tokenize-deterministic"))
    first = await vault.stub.Tokenize(
        tokenize_request("EMAIL", email, deterministic=True), metadata=allowed
    )
    again = await vault.stub.Tokenize(
        tokenize_request("EMAIL", email, deterministic=True), metadata=allowed
    )
    assert (first.created, again.created, again.token) == (True, False, first.token)
    assert first.fingerprint == ""  # deterministic tokens do not imply fingerprints
    # Correcting a deterministic token would answer DETERMINISTIC_COLLISION: the same
    # oracle, so it needs the scope too.
    plain = await vault.add_caller("plain", ("tokenize",))
    exc = await expect_code(
        vault.stub.UpdateToken(
            pb.UpdateTokenRequest(token=first.token, text="john@example.com"), metadata=plain
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert_reason(exc, "DETERMINISTIC_NOT_ALLOWED")


async def test_a_per_caller_budget_overrides_the_default(vault):
    slow = await vault.add_caller("slow", ("tokenize",), tokenize_rate=1.0, tokenize_burst=3)
    await vault.stub.BatchTokenize(
        pb.BatchTokenizeRequest(requests=[tokenize_request("TEXT", f"n{i}") for i in range(3)]),
        metadata=slow,
    )
    exc = await expect_code(
        vault.stub.Tokenize(tokenize_request("TEXT", "one more"), metadata=slow),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert_reason(exc, "TOKENIZE_RATE_EXCEEDED")
    assert 0.9 < retry_delay(exc) <= 1.0
    vault.clock.advance(1.0)
    await vault.stub.Tokenize(tokenize_request("TEXT", "one more"), metadata=slow)
    # A batch over the burst can never pass: the message says so.
    vault.clock.advance(10.0)
    exc = await expect_code(
        vault.stub.BatchTokenize(
            pb.BatchTokenizeRequest(requests=[tokenize_request("TEXT", "x")] * 4),
            metadata=slow,
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert "smaller batches" in (exc.details() or "")


async def test_a_tiny_ttl_is_refused_and_nothing_written(vault):
    stored = vault.count_tokens()
    exc = await expect_code(
        vault.stub.Tokenize(
            tokenize_request("PAN", next(candidates()), ttl=duration_pb2.Duration(seconds=1)),
            metadata=vault.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert_invalid(exc, "ttl")
    exc = await expect_code(
        vault.stub.BatchTokenize(
            pb.BatchTokenizeRequest(
                requests=[
                    tokenize_request("TEXT", "kept", ttl=duration_pb2.Duration(seconds=60)),
                    tokenize_request("TEXT", "short", ttl=duration_pb2.Duration(seconds=59)),
                ]
            ),
            metadata=vault.md,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert_invalid(exc, "requests[1].ttl")
    assert "requests[0].ttl" not in str(exc.details())
    assert vault.count_tokens() == stored
    # At the minimum it passes; a CVC (memory only, minutes by design) is exempt.
    await vault.stub.Tokenize(
        tokenize_request("TEXT", "kept", ttl=duration_pb2.Duration(seconds=60)),
        metadata=vault.md,
    )
    cvc = await vault.stub.Tokenize(
        tokenize_request("CVC", "123", ttl=duration_pb2.Duration(seconds=5)), metadata=vault.md
    )
    assert cvc.token
