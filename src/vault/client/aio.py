"""The asyncio client, the same calls as vault.client.sync.Vault (kept method for method
in step with it) (grpc.aio): ``AsyncVault.connect(...)``, each call awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

import grpc

from vault.client import results as r
from vault.client.calls import (
    DEFAULT_TIMEOUT,
    NO_RETRY,
    RETRIED_CODES,
    RetryPolicy,
    Target,
    tokenize_request,
    tokenize_retry,
    update_request,
)
from vault.client.errors import VaultError, error_from_rpc, error_from_status
from vault.v1 import key_service_pb2 as keys_pb
from vault.v1 import key_service_pb2_grpc as keys_grpc
from vault.v1 import subject_service_pb2 as subjects_pb
from vault.v1 import subject_service_pb2_grpc as subjects_grpc
from vault.v1 import token_service_pb2 as tokens_pb
from vault.v1 import token_service_pb2_grpc as tokens_grpc

__all__ = ["AsyncVault"]


class AsyncVault:
    """One channel to the vault. Every call has a deadline (``timeout`` seconds per
    attempt); reads, reveals and tokenizes with a request id are retried on UNAVAILABLE
    with backoff; failures raise VaultError subclasses."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        target: Target,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._channel = channel
        self._metadata = target.metadata
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._tokens = tokens_grpc.TokenServiceStub(channel)  # type: ignore[no-untyped-call]
        self._keys = keys_grpc.KeyServiceStub(channel)  # type: ignore[no-untyped-call]
        self._subjects = subjects_grpc.SubjectServiceStub(channel)  # type: ignore[no-untyped-call]

    @classmethod
    def connect(
        cls,
        address: str,
        *,
        api_key: str | None = None,
        tls: bool | grpc.ChannelCredentials = True,
        insecure: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
    ) -> AsyncVault:
        """``tls=True`` verifies the server against the system roots; pass
        ``grpc.ssl_channel_credentials(...)`` for a private CA or mTLS, or ``tls=False``
        for plaintext, which only a loopback address gets unless ``insecure=True``."""
        target = Target.build(address, api_key, tls, insecure)
        if target.credentials is None:
            channel = grpc.aio.insecure_channel(target.address)
        else:
            channel = grpc.aio.secure_channel(target.address, target.credentials)
        return cls(channel, target, timeout, retry)

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _call(self, method: Callable[..., Any], request: Any, policy: RetryPolicy) -> Any:
        attempt = 1
        while True:
            try:
                return await method(request, timeout=self._timeout, metadata=self._metadata)
            except grpc.RpcError as error:
                if error.code() not in RETRIED_CODES or attempt >= policy.attempts:
                    raise error_from_rpc(error) from None
            await asyncio.sleep(policy.delay(attempt))
            attempt += 1

    # -- TokenService ------------------------------------------------------------------

    async def tokenize(
        self,
        kind: r.DataKind,
        value: str | r.Address,
        *,
        format: r.TokenFormat = r.TokenFormat.UNSPECIFIED,  # noqa: A002
        deterministic: bool = False,
        subject: str = "",
        metadata: Mapping[str, str] | None = None,
        ttl: timedelta | float | None = None,
        request_id: str | None = None,
    ) -> r.Tokenized:
        request = tokenize_request(
            kind, value, format=format, deterministic=deterministic, subject=subject,
            metadata=metadata, ttl=ttl, request_id=request_id,
        )  # fmt: skip
        policy = tokenize_retry([request], self._retry)
        return r.Tokenized.from_proto(await self._call(self._tokens.Tokenize, request, policy))

    async def batch_tokenize(
        self, requests: Sequence[tokens_pb.TokenizeRequest]
    ) -> list[r.Tokenized]:
        """All or nothing, order kept; build each with ``vault.client.tokenize_request``."""
        request = tokens_pb.BatchTokenizeRequest(requests=list(requests))
        policy = tokenize_retry(request.requests, self._retry)
        reply = await self._call(self._tokens.BatchTokenize, request, policy)
        return [r.Tokenized.from_proto(item) for item in reply.responses]

    async def detokenize(self, token: str, *, purpose: str) -> r.Revealed:
        request = tokens_pb.DetokenizeRequest(token=token, purpose=purpose)
        return r.Revealed.from_proto(
            await self._call(self._tokens.Detokenize, request, self._retry)
        )

    async def batch_detokenize(self, tokens: Sequence[str], *, purpose: str) -> list[r.Revealed]:
        request = tokens_pb.BatchDetokenizeRequest(tokens=list(tokens), purpose=purpose)
        reply = await self._call(self._tokens.BatchDetokenize, request, self._retry)
        return [r.Revealed.from_proto(item) for item in reply.responses]

    async def tokenize_stream(
        self, kind: r.DataKind, values: Iterable[str | r.Address]
    ) -> AsyncIterator[r.Tokenized | VaultError]:
        """TokenizeStream: one answer per value, in order; a value the vault refuses
        yields its VaultError and the stream goes on. A refused stream (credential,
        scope) raises. Not retried: each request carries its own request id, so run the
        failed ones again with ``tokenize``."""
        requests = (tokenize_request(kind, v) for v in values)
        call = self._tokens.TokenizeStream(requests, metadata=self._metadata)
        try:
            async for answer in call:
                if answer.WhichOneof("result") == "error":
                    yield error_from_status(answer.error)
                else:
                    yield r.Tokenized.from_proto(answer.response)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    async def detokenize_stream(
        self, tokens: Iterable[str], *, purpose: str
    ) -> AsyncIterator[r.Revealed | VaultError]:
        """DetokenizeStream: one answer per token, in order (a value, or that token's
        VaultError); a refused stream raises."""
        requests = (tokens_pb.DetokenizeStreamRequest(token=t, purpose=purpose) for t in tokens)
        call = self._tokens.DetokenizeStream(requests, metadata=self._metadata)
        try:
            async for answer in call:
                if answer.WhichOneof("result") == "error":
                    yield error_from_status(answer.error)
                else:
                    yield r.Revealed.from_proto(answer.response)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    async def get_token(self, token: str) -> r.TokenInfo:
        request = tokens_pb.GetTokenRequest(token=token)
        return r.TokenInfo.from_proto(await self._call(self._tokens.GetToken, request, self._retry))

    async def delete_token(self, token: str) -> None:
        # Not repeated: a retry after a delete that did happen would answer NOT_FOUND.
        await self._call(
            self._tokens.DeleteToken, tokens_pb.DeleteTokenRequest(token=token), NO_RETRY
        )

    async def update_token(
        self,
        token: str,
        value: str | r.Address,
        *,
        metadata: Mapping[str, str] | None = None,
        replace_metadata: bool = False,
    ) -> r.Updated:
        request = update_request(token, value, metadata, replace_metadata)
        reply = await self._call(self._tokens.UpdateToken, request, NO_RETRY)
        return r.Updated(reply.token, reply.masked, reply.fingerprint)

    # -- KeyService --------------------------------------------------------------------

    async def get_key_status(self) -> r.KeyStatus:
        reply = await self._call(
            self._keys.GetKeyStatus, keys_pb.GetKeyStatusRequest(), self._retry
        )
        return r.KeyStatus.from_proto(reply)

    async def rotate_key(self) -> r.Rotated:
        reply = await self._call(self._keys.RotateKey, keys_pb.RotateKeyRequest(), NO_RETRY)
        return r.Rotated(reply.previous_primary_version, r.KeyVersion.from_proto(reply.primary))

    async def rewrap_keys(self, *, batch_size: int = 0, rate: float = 0.0) -> r.RewrapJob:
        request = keys_pb.RewrapKeysRequest(batch_size=batch_size, rate=rate)
        reply = await self._call(self._keys.RewrapKeys, request, NO_RETRY)
        return r.RewrapJob.from_proto(reply.job)

    async def retire_key_version(self, version: int) -> r.KeyVersion:
        request = keys_pb.RetireKeyVersionRequest(version=version)
        reply = await self._call(self._keys.RetireKeyVersion, request, NO_RETRY)
        return r.KeyVersion.from_proto(reply.key_version)

    # -- SubjectService ----------------------------------------------------------------

    async def export_subject(self, subject: str, *, purpose: str) -> r.SubjectExport:
        """Every value held for the subject; each is audited as revealed for ``purpose``."""
        request = subjects_pb.ExportSubjectRequest(subject=subject, purpose=purpose)
        reply = await self._call(self._subjects.ExportSubject, request, self._retry)
        return r.SubjectExport.from_proto(reply)

    async def erase_subject(self, subject: str, *, reason: str) -> int:
        """The number of tokens erased."""
        request = subjects_pb.EraseSubjectRequest(subject=subject, reason=reason)
        reply = await self._call(self._subjects.EraseSubject, request, NO_RETRY)
        return int(reply.erased_count)

    async def set_legal_hold(self, subject: str, *, hold: bool, reason: str) -> r.LegalHold:
        request = subjects_pb.SetLegalHoldRequest(subject=subject, hold=hold, reason=reason)
        reply = await self._call(self._subjects.SetLegalHold, request, NO_RETRY)
        return r.LegalHold(reply.held, reply.changed)
