"""Hypothesis strategies for the campaign: any message of a descriptor, mutations of
valid ones, call metadata, and valid values of every data kind."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

from vault.domain.kinds import luhn_valid
from vault.domain.model import Address

_INT_BOUNDS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}

# Strings a fuzzer should try in any field: empty, huge, control characters, digits
# that look like cards, lone surrogates are impossible in proto strings (UTF-8 only).
_INTERESTING = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\n",
        "4242424242424242",
        "4242 4242 4242 4242",
        "tok_" + "a" * 32,
        "0" * 19,
        "x" * 5000,
        "\u202e\u0301",
        "é",
        "DATA_KIND_PAN",
        "-1",
    ]
)
TEXT = st.one_of(st.text(max_size=40), _INTERESTING)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t in _INT_BOUNDS:
        lo, hi = _INT_BOUNDS[t]
        return st.one_of(st.integers(max(lo, -3), 20), st.integers(lo, hi))
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, width=32 if t == FieldDescriptor.TYPE_FLOAT else 64)
    if t == FieldDescriptor.TYPE_STRING:
        return TEXT
    if t == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-(2**31), 2**31 - 1))
    msg = f"no strategy for field type {t}"
    raise AssertionError(msg)


def _map_entry(field: FieldDescriptor, depth: int) -> st.SearchStrategy[dict[Any, Any]]:
    key_field = field.message_type.fields_by_name["key"]
    value_field = field.message_type.fields_by_name["value"]
    if value_field.type == FieldDescriptor.TYPE_MESSAGE:
        values: st.SearchStrategy[Any] = messages(value_field.message_type, depth + 1)
    else:
        values = _scalar(value_field)
    return st.dictionaries(_scalar(key_field), values, max_size=4)


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


@st.composite
def _fill(draw: st.DrawFn, descriptor: Descriptor, depth: int) -> Message:
    message = GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        if _is_map(field):
            entries = draw(_map_entry(field, depth))
            target = getattr(message, field.name)
            for key, value in entries.items():
                if isinstance(value, Message):
                    target[key].CopyFrom(value)
                else:
                    target[key] = value
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3:
                continue
            if _repeated(field):
                for sub in draw(st.lists(messages(field.message_type, depth + 1), max_size=3)):
                    getattr(message, field.name).add().CopyFrom(sub)
            else:
                getattr(message, field.name).CopyFrom(draw(messages(field.message_type, depth + 1)))
        elif _repeated(field):
            getattr(message, field.name).extend(draw(st.lists(_scalar(field), max_size=4)))
        else:
            setattr(message, field.name, draw(_scalar(field)))
    return message


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of the descriptor: every field set or not, any value its type allows."""
    return _fill(descriptor, depth)


@st.composite
def mutated_bytes(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` with a few bytes flipped, cut, inserted or duplicated."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif op == "cut":
            data = data[:at]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            data += data[at:]
    return bytes(data)


_MD_KEY = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=12).filter(
    lambda k: not k.startswith("grpc-") and not k.endswith("-bin") and k not in {"te", "host"}
)
_MD_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)


def call_metadata(key: str) -> st.SearchStrategy[tuple[tuple[str, str], ...]]:
    """Metadata as a hostile or careless client sends it, around the dev credential."""
    auth = st.one_of(
        st.just(f"Bearer {key}"),
        st.just(f"Bearer {key}x"),
        st.just(f"bearer {key}"),
        st.just(f"Bearer {key[: len(key) // 2]}"),
        _MD_VALUE,
        st.builds(lambda v: f"Bearer {v}", _MD_VALUE),
    )
    pairs = st.lists(
        st.one_of(
            st.tuples(st.just("authorization"), auth),
            st.tuples(st.just("x-request-id"), _MD_VALUE),
            st.tuples(_MD_KEY, _MD_VALUE),
        ),
        max_size=4,
    )
    return st.builds(tuple, pairs)


# -- valid values (the round trip) -------------------------------------------------------


@st.composite
def pans(draw: st.DrawFn) -> str:
    """A Luhn-valid PAN, as a person types it (spaces or dashes between groups)."""
    body = draw(st.text("0123456789", min_size=11, max_size=18))
    digits = next(body + d for d in "0123456789" if luhn_valid(body + d))
    sep = draw(st.sampled_from(["", " ", "-"]))
    if sep:
        digits = sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))
    return draw(st.sampled_from(["", " "])) + digits


@st.composite
def expiries(draw: st.DrawFn) -> str:
    month = draw(st.integers(1, 12))
    year = draw(st.integers(2000, 2099))
    form = draw(
        st.sampled_from(["{m:02d}/{y}", "{m:02d}/{s:02d}", "{m:02d}-{y}", "{m:02d}{s:02d}"])
    )
    return form.format(m=month, y=year, s=year % 100)


# Any character a person may write in a name or an address: letters and marks of every
# script, spaces and punctuation (no control, format or private-use characters).
_HUMAN = st.characters(categories=["L", "M", "N", "P", "S", "Zs"])
HUMAN_TEXT = st.text(_HUMAN, min_size=1, max_size=60)

EMAILS = st.emails()
PHONES = st.builds(
    lambda cc, rest: f"+{cc}{rest}",
    st.sampled_from(["1", "44", "33", "49", "81", "353"]),
    st.text("0123456789", min_size=7, max_size=10),
)
IBANS = st.sampled_from(
    ["GB82WEST12345698765432", "DE89370400440532013000", "FR1420041010050500013M02606"]
)


def addresses(region_codes: list[str]) -> st.SearchStrategy[Address]:
    return st.builds(
        Address,
        recipient=HUMAN_TEXT,
        lines=st.lists(HUMAN_TEXT, min_size=1, max_size=3).map(tuple),
        locality=HUMAN_TEXT,
        administrative_area=st.one_of(st.just(""), HUMAN_TEXT),
        postal_code=st.text("ABCDEFGHJK0123456789 -", max_size=10),
        region_code=st.sampled_from(region_codes),
    )
