"""SecretBytes: key material that never prints, pickles, copies or hashes."""

from __future__ import annotations

import copy
import hmac
import io
import logging
import pickle
import types

import pytest

from vault import secrets as vault_secrets
from vault.secrets import SecretBytes

# Printable on purpose: a leak of the raw bytes would show up as text too.
RAW = b"sk_live_TOPSECRET_key_material_0123"


@pytest.fixture
def secret():
    return SecretBytes(RAW)


def assert_no_key(text: str):
    assert RAW.hex() not in text
    assert RAW.hex().upper() not in text
    assert "TOPSECRET" not in text
    assert repr(RAW) not in text
    assert RAW[:8].hex() not in text


def test_reveal_and_len(secret):
    assert secret.reveal() == RAW
    assert type(secret.reveal()) is bytes
    assert len(secret) == len(RAW)


def test_bytearray_is_copied():
    source = bytearray(RAW)
    secret = SecretBytes(source)
    source[:] = b"\x00" * len(source)
    assert secret.reveal() == RAW


@pytest.mark.parametrize("value", ["a string", 42, None, memoryview(b"abc")])
def test_only_bytes_are_accepted(value):
    with pytest.raises(TypeError):
        SecretBytes(value)


@pytest.mark.parametrize(
    "render",
    [
        repr,
        str,
        format,
        lambda s: f"{s}",
        lambda s: f"{s!r}",
        lambda s: f"{s:>80}",
        lambda s: "%s %r" % (s, s),  # noqa: UP031 - the old formatting path too
        lambda s: "{} {!r}".format(s, s),  # noqa: UP032 - and str.format
        lambda s: repr([s, {"key": s}]),
        lambda s: str((s,)),
    ],
    ids=[
        "repr",
        "str",
        "format",
        "fstring",
        "fstring-r",
        "fstring-spec",
        "percent",
        "str.format",
        "in-containers",
        "in-tuple",
    ],
)
def test_no_rendering_shows_the_bytes(secret, render):
    text = render(secret)
    assert_no_key(text)
    assert "redacted" in text


def test_logging_does_not_show_the_bytes(secret):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("test_secrets.leak")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logger.info("loaded key %s (%r)", secret, secret)
        logger.info("key: %s", {"dek": secret})
    finally:
        logger.removeHandler(handler)
    logged = stream.getvalue()
    assert "loaded key" in logged
    assert_no_key(logged)


def test_no_implicit_conversion_to_bytes(secret):
    with pytest.raises(TypeError):
        bytes(secret)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_is_refused(secret, protocol):
    with pytest.raises(TypeError):
        pickle.dumps(secret, protocol=protocol)
    with pytest.raises(TypeError):
        pickle.dumps({"nested": [secret]}, protocol=protocol)


def test_copy_is_refused(secret):
    with pytest.raises(TypeError):
        copy.copy(secret)


def test_deepcopy_is_refused(secret):
    with pytest.raises(TypeError):
        copy.deepcopy(secret)
    with pytest.raises(TypeError):
        copy.deepcopy({"nested": [secret]})


def test_hash_is_refused(secret):
    with pytest.raises(TypeError):
        hash(secret)
    with pytest.raises(TypeError):
        {secret}  # noqa: B018 - building the set is the check
    with pytest.raises(TypeError):
        {secret: 1}  # noqa: B018


def test_equality_by_value(secret):
    assert secret == SecretBytes(RAW)
    assert not secret != SecretBytes(RAW)  # noqa: SIM202 - __ne__ is what is checked
    assert secret != SecretBytes(RAW[:-1] + b"X")
    assert secret != SecretBytes(RAW[:-1])  # another length
    assert secret != SecretBytes(b"")
    assert SecretBytes(b"") == SecretBytes(b"")


def test_never_equal_to_raw_bytes(secret):
    """Comparing with raw bytes is a bug in the caller; it never says "equal"."""
    assert secret != RAW
    assert RAW != secret  # noqa: SIM300 - the reflected comparison is what is checked
    assert secret != RAW.hex()
    assert secret != None  # noqa: E711 - the comparison operator is what is checked


def test_equality_uses_a_constant_time_compare(secret, monkeypatch):
    calls = []

    def spy(a, b):
        calls.append((a, b))
        return hmac.compare_digest(a, b)

    monkeypatch.setattr(vault_secrets, "hmac", types.SimpleNamespace(compare_digest=spy))
    assert secret == SecretBytes(RAW)
    assert secret != SecretBytes(b"x" * len(RAW))
    assert calls == [(RAW, RAW), (RAW, b"x" * len(RAW))]


def test_no_instance_dict_to_leak_through(secret):
    assert not hasattr(secret, "__dict__")
    with pytest.raises(TypeError):
        vars(secret)
