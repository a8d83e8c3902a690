"""Coverage-guided fuzzing (atheris, libFuzzer) of the request decoders: bytes → the
server's tolerant protobuf decoder → the domain's checks of what the request carries
(a tokenize item validated and normalised, tokens checked), exactly as a call runs them
before anything touches the store. Anything raised but the vault's InvalidArgumentError
is a crash; libFuzzer writes the input to ``-artifact_prefix`` and exits non-zero.

Run by tests/fuzz/test_decoders_atheris.py (``make test``: fixed runs and seed) and by
``make fuzz`` (longer). Arguments are libFuzzer's, e.g. ``-runs=20000 -seed=1 CORPUS``.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports(include=["vault"]):
    from vault.api.rpc import MALFORMED, _decoder
    from vault.api.token_service import _item
    from vault.domain import kinds
    from vault.domain.validation import Limits, Validator
    from vault.errors import InvalidArgumentError
    from vault.v1 import key_service_pb2, subject_service_pb2, token_service_pb2

    _REQUESTS = [
        token_service_pb2.TokenizeRequest,
        token_service_pb2.BatchTokenizeRequest,
        token_service_pb2.DetokenizeRequest,
        token_service_pb2.BatchDetokenizeRequest,
        token_service_pb2.GetTokenRequest,
        token_service_pb2.DeleteTokenRequest,
        token_service_pb2.UpdateTokenRequest,
        key_service_pb2.RewrapKeysRequest,
        key_service_pb2.RetireKeyVersionRequest,
        subject_service_pb2.ExportSubjectRequest,
        subject_service_pb2.EraseSubjectRequest,
        subject_service_pb2.SetLegalHoldRequest,
    ]
    _DECODERS = [_decoder(cls) for cls in _REQUESTS]
    # Validation needs only the limits: no store is reached by these checks.
    _VALIDATOR = Validator(Limits())


def _check_tokens(tokens: list[str]) -> None:
    for token in tokens:
        with contextlib.suppress(InvalidArgumentError):
            kinds.validate_token_string(token, "token")


def one_input(data: bytes) -> None:
    if not data:
        return
    decoded = _DECODERS[data[0] % len(_DECODERS)](data[1:])
    if decoded is MALFORMED:
        return
    items = []
    if isinstance(decoded, token_service_pb2.TokenizeRequest):
        items = [decoded]
    elif isinstance(decoded, token_service_pb2.BatchTokenizeRequest):
        items = list(decoded.requests)
    for request in items:
        with contextlib.suppress(InvalidArgumentError):
            _VALIDATOR.check_item(_item(request))
    if hasattr(decoded, "tokens"):
        _check_tokens(list(decoded.tokens))
    if hasattr(decoded, "token"):
        _check_tokens([decoded.token])


def main() -> None:
    atheris.instrument_func(one_input)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
