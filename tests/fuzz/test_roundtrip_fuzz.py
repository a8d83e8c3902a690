"""Round trip through the real server: tokenize then detokenize gives back the
normalised value, for any valid input hypothesis can generate (unicode names, addresses
and free text included)."""

from __future__ import annotations

import asyncio

from fuzz_server import Served
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import EMAILS, HUMAN_TEXT, IBANS, PHONES, addresses, expiries, pans

from vault.domain import kinds
from vault.domain.kinds import addresses as addresses_module
from vault.domain.model import Address, DataKind
from vault.errors import InvalidArgumentError
from vault.v1 import token_service_pb2, types_pb2

REGION_CODES = sorted(addresses_module.REGION_CODES)
_VALUES: dict[DataKind, st.SearchStrategy[str | Address]] = {
    DataKind.PAN: pans(),
    DataKind.CARD_EXPIRY: expiries(),
    DataKind.CARDHOLDER_NAME: HUMAN_TEXT,
    DataKind.CVC: st.text("0123456789", min_size=3, max_size=4),
    DataKind.BANK_ACCOUNT: st.one_of(IBANS, st.text("0123456789", min_size=4, max_size=34)),
    DataKind.BILLING_ADDRESS: addresses(REGION_CODES),
    DataKind.SHIPPING_ADDRESS: addresses(REGION_CODES),
    DataKind.EMAIL: EMAILS,
    DataKind.PHONE: PHONES,
    DataKind.TEXT: st.text(
        st.characters(categories=["L", "M", "N", "P", "S", "Zs"], include_characters="\n\t"),
        min_size=1,
        max_size=300,
    ),
}
_CASES = st.sampled_from(sorted(_VALUES)).flatmap(
    lambda kind: st.tuples(st.just(kind), _VALUES[kind])
)


def _request(kind: DataKind, value: str | Address) -> token_service_pb2.TokenizeRequest:
    request = token_service_pb2.TokenizeRequest(kind=int(kind))
    if isinstance(value, Address):
        request.address.CopyFrom(
            types_pb2.Address(
                recipient=value.recipient,
                lines=value.lines,
                locality=value.locality,
                administrative_area=value.administrative_area,
                postal_code=value.postal_code,
                region_code=value.region_code,
            )
        )
    else:
        request.text = value
    return request


def _revealed(response: token_service_pb2.DetokenizeResponse) -> str | Address:
    if response.WhichOneof("value") == "address":
        a = response.address
        return Address(
            a.recipient,
            tuple(a.lines),
            a.locality,
            a.administrative_area,
            a.postal_code,
            a.region_code,
        )
    return response.text


async def test_tokenize_then_detokenize_gives_the_normal_form(served: Served) -> None:
    detokenize = served.channel.unary_unary(
        "/vault.v1.TokenService/Detokenize",
        request_serializer=token_service_pb2.DetokenizeRequest.SerializeToString,
        response_deserializer=token_service_pb2.DetokenizeResponse.FromString,
    )

    @settings(max_examples=settings.default.max_examples * 3)
    @given(case=_CASES)
    def run(case: tuple[DataKind, str | Address]) -> None:
        kind, value = case
        field = "address" if isinstance(value, Address) else "text"
        try:
            normal = kinds.normalize(kind, value, field)
        except InvalidArgumentError:
            normal = None
        assume(normal is not None)  # not a valid input after all (whitespace only)
        token = served.tokenize(_request(kind, value))
        response = detokenize(
            token_service_pb2.DetokenizeRequest(token=token, purpose="round trip"),
            metadata=served.md,
            timeout=20,
        )
        assert response.kind == int(kind)
        assert _revealed(response) == normal

    await asyncio.to_thread(run)
