"""The audit chain's building blocks: the canonical bytes a MAC covers, and the MAC."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

import pytest

from vault.audit.trail import AuditTrail
from vault.secrets import SecretBytes
from vault.storage.base import AUDIT_GENESIS_MAC, AuditHead, AuditRow

KEY = bytes(range(32))


def row(**fields) -> AuditRow:
    values = {
        "seq": 1,
        "time": 1_800_000_000.25,
        "caller": "checkout",
        "tenant": "shop",
        "action": "token.reveal",
        "tokens": ("tok_" + "a" * 32,),
        "purpose": "refund",
        "outcome": "ok",
        "reason": "",
        "request_id": "req-1",
        "peer": "ipv4:127.0.0.1:5000",
        "detail": (("kind", "PAN"),),
        "mac": b"",
    }
    values.update(fields)
    return AuditRow(**values)


# Pairs of rows that a naive encoding (joining fields) would confuse.
LOOKALIKES = [
    ({"caller": "ab", "tenant": "c"}, {"caller": "a", "tenant": "bc"}),
    ({"tokens": ("a,b",)}, {"tokens": ("a", "b")}),
    ({"tokens": ("",)}, {"tokens": ()}),
    ({"tokens": (), "detail": (("k", "v"),)}, {"tokens": ("k", "v"), "detail": ()}),
    ({"detail": (("k", "v=w"),)}, {"detail": (("k=v", "w"),)}),
    ({"purpose": "x", "outcome": ""}, {"purpose": "", "outcome": "x"}),
    ({"seq": 1}, {"seq": 2}),
    ({"time": 1.0}, {"time": 1.0000000001}),
    ({"reason": "A\x00B"}, {"reason": "A", "request_id": "B"}),
]


@pytest.mark.parametrize(("a", "b"), LOOKALIKES)
def test_content_is_unambiguous(a, b):
    assert row(**a).content() != row(**b).content()


def test_content_covers_every_stored_field_but_the_mac():
    base = row()
    changes = {
        "seq": 7,
        "time": 1.5,
        "caller": "other",
        "tenant": "other",
        "action": "token.delete",
        "tokens": ("tok_" + "b" * 32,),
        "purpose": "other",
        "outcome": "denied",
        "reason": "MISSING_SCOPE",
        "request_id": "req-2",
        "peer": "ipv4:10.0.0.1:1",
        "detail": (("kind", "EMAIL"),),
    }
    stored = {f.name for f in dataclasses.fields(AuditRow)} - {"mac"}
    assert set(changes) == stored
    for name, value in changes.items():
        assert dataclasses.replace(base, **{name: value}).content() != base.content(), name
    assert dataclasses.replace(base, mac=b"x" * 32).content() == base.content()


def test_head_content_never_equals_a_record():
    assert AuditHead.content(1)[0] != row().content()[0]


def test_seal_is_hmac_sha256_of_previous_mac_and_content():
    trail = AuditTrail(store=None, key=SecretBytes(KEY))  # type: ignore[arg-type]
    content = row().content()
    expected = hmac.new(KEY, AUDIT_GENESIS_MAC + content, hashlib.sha256).digest()
    assert trail.seal(AUDIT_GENESIS_MAC, content) == expected
    # Chained: the second MAC depends on the first.
    second = row(seq=2).content()
    assert trail.seal(expected, second) != trail.seal(AUDIT_GENESIS_MAC, second)
    # Another key gives other MACs.
    other = AuditTrail(store=None, key=SecretBytes(bytes(32)))  # type: ignore[arg-type]
    assert other.seal(AUDIT_GENESIS_MAC, content) != expected


def test_trail_refuses_pickling_and_hides_its_key():
    import pickle  # noqa: PLC0415

    trail = AuditTrail(store=None, key=SecretBytes(KEY))  # type: ignore[arg-type]
    assert KEY.hex() not in repr(trail)
    with pytest.raises(TypeError):
        pickle.dumps(trail)
