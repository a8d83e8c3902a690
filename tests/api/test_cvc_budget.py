"""CVC memory is bounded in bytes and per tenant (through a real server and channel):
one tenant filling its share is refused while another keeps tokenizing CVCs."""

from __future__ import annotations

import grpc
import pytest
from api_helpers import assert_invalid, assert_reason, expect_code, tokenize_request
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from vault.auth.policy import ALL_SCOPES
from vault.config import Config, load_config
from vault.domain.ephemeral import ENTRY_OVERHEAD_BYTES, RETRY_AFTER_SECONDS
from vault.errors import FailedPreconditionError
from vault.v1 import token_service_pb2 as pb

PURPOSE = "authorise payment"
SHARE = 40  # CVCs one tenant may hold with the budget below


def _batch(n: int) -> pb.BatchTokenizeRequest:
    return pb.BatchTokenizeRequest(requests=[tokenize_request("CVC", "739") for _ in range(n)])


def _retry_seconds(exc: grpc.aio.AioRpcError) -> float:
    status = rpc_status.from_call(exc)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    raise AssertionError("no RetryInfo")


async def test_one_tenant_fills_its_share_while_another_keeps_tokenizing(vault_factory):
    vault = await vault_factory(
        cvc_memory_bytes=2 * SHARE * ENTRY_OVERHEAD_BYTES, cvc_tenant_share=0.5
    )
    greedy = await vault.add_caller("greedy", ALL_SCOPES, tenant="greedy")
    other = await vault.add_caller("other", ALL_SCOPES, tenant="other")
    await vault.stub.BatchTokenize(_batch(SHARE), metadata=greedy)
    exc = await expect_code(
        vault.stub.Tokenize(tokenize_request("CVC", "739"), metadata=greedy),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )
    assert_reason(exc, "CVC_BUDGET_EXHAUSTED")
    assert _retry_seconds(exc) == RETRY_AFTER_SECONDS
    assert "739" not in (exc.details() or "")
    # The other tenant is untouched: it tokenizes and reveals CVCs as before.
    for _ in range(3):
        resp = await vault.stub.Tokenize(tokenize_request("CVC", "4821"), metadata=other)
        revealed = await vault.stub.Detokenize(
            pb.DetokenizeRequest(token=resp.token, purpose=PURPOSE), metadata=other
        )
        assert revealed.text == "4821"
    await vault.stub.BatchTokenize(_batch(SHARE), metadata=other)
    # The greedy tenant gets room back when its CVCs expire (the default TTL).
    vault.clock.advance(601)
    resp = await vault.stub.Tokenize(tokenize_request("CVC", "739"), metadata=greedy)
    assert resp.token.startswith("tok_")
    assert vault.count_tokens() == 0


async def test_cvc_metadata_is_bounded(vault):
    request = tokenize_request("CVC", "739", metadata={f"k{i}": "v" for i in range(5)})
    exc = await expect_code(
        vault.stub.Tokenize(request, metadata=vault.md), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert_invalid(exc, "metadata")
    request = tokenize_request("CVC", "739", metadata={"order": "x" * 65})
    exc = await expect_code(
        vault.stub.Tokenize(request, metadata=vault.md), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert_invalid(exc, "metadata")
    assert len(vault.server.vault.ephemeral) == 0


async def test_a_batch_past_the_share_is_refused_whole(vault_factory):
    vault = await vault_factory(
        cvc_memory_bytes=2 * SHARE * ENTRY_OVERHEAD_BYTES, cvc_tenant_share=0.5
    )
    await vault.stub.BatchTokenize(_batch(SHARE - 2), metadata=vault.md)
    held = len(vault.server.vault.ephemeral)
    mixed = _batch(3)
    mixed.requests.insert(0, tokenize_request("PAN", "4242424242424242"))
    for request in (_batch(3), mixed):
        exc = await expect_code(
            vault.stub.BatchTokenize(request, metadata=vault.md),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        assert_reason(exc, "CVC_BUDGET_EXHAUSTED")
    # Nothing of either batch was kept: no CVC in memory, no stored token.
    assert len(vault.server.vault.ephemeral) == held
    assert vault.count_tokens() == 0


@pytest.mark.parametrize(
    ("setting", "value"),
    [("cvc_memory_bytes", "1000"), ("cvc_tenant_share", "0"), ("cvc_tenant_share", "1.5")],
)
def test_a_cvc_budget_that_cannot_work_is_refused_at_start(setting, value):
    with pytest.raises(FailedPreconditionError, match=setting):
        load_config(None, {setting: value})


def test_the_cvc_budget_is_configurable():
    cfg = load_config(None, {"cvc_memory_bytes": "1048576", "cvc_tenant_share": "0.25"})
    assert (cfg.cvc_memory_bytes, cfg.cvc_tenant_share) == (1048576, 0.25)
    assert (Config().cvc_memory_bytes, Config().cvc_tenant_share) == (64 * 1024 * 1024, 0.5)
