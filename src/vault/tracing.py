"""OpenTelemetry tracing: one server span per call, child spans for store commits and
master-key (KEK, HSM with pkcs11) calls.

Off by default: nothing is traced and nothing wraps the hot path unless ``configure``
finds the usual OTEL_* settings (``OTEL_TRACES_EXPORTER=otlp`` or
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; the exporter,
sampler, batch processor and ``OTEL_SERVICE_NAME`` read their own OTEL_* variables) or
an SDK tracer provider already installed by the embedding program (the tests').

gRPC calls get their span from the maintained grpc.aio server instrumentation
(opentelemetry-instrumentation-grpc); HTTP/JSON calls from ``http_span`` with the same
names and attributes. Attributes are names only: method, code, tenant, caller, the
store operation, the KEK provider type. Never a value, token, key or credential: the
instrumentation records no message, and nothing here is given one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

from opentelemetry import propagate, trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from vault.auth.policy import Caller
    from vault.crypto.base import KekProvider
    from vault.secrets import SecretBytes

# Only the OpenTelemetry API is imported here (the CLI loads this module through the
# master keys); the SDK, the exporter and the grpc instrumentation load when tracing is
# turned on, in the server.

__all__ = [
    "annotate_call",
    "annotate_code",
    "configure",
    "enabled",
    "http_span",
    "reset",
    "server_interceptors",
    "set_code",
    "traced_kek",
    "traced_store",
]


class _State:
    """Whether tracing is on, and the provider every vault span comes from."""

    provider: TracerProvider | None = None
    tracer: trace.Tracer = trace.NoOpTracer()


_state = _State()

_OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

# The store methods that write (each one transaction, group-committed): their span is
# the call's wait for its commit.
_COMMITS = (
    "insert_tokens",
    "delete_token",
    "update_token",
    "purge_expired",
    "add_key_version",
    "add_next_key_version",
    "retire_key_version",
    "put_fingerprint_key",
    "put_service_key",
    "replace_wrapped_key",
    "put_share_scheme",
    "rewrap_tokens",
    "put_rewrap_progress",
    "add_caller",
    "revoke_caller",
    "append_audit",
    "erase_subject",
    "set_subject_hold",
    "release_subject_hold",
    "set_retention_policy",
    "clear_retention_policy",
    "purge_retained",
    "put_subject_key",
    "destroy_subject_key",
)

T = TypeVar("T")

# An exception's text may quote input: a span records neither it nor a status built
# from it (the code attribute says how the call ended).
_QUIET: dict[str, Any] = {"record_exception": False, "set_status_on_exception": False}


def _exporting() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporters = os.environ.get("OTEL_TRACES_EXPORTER", "").lower().split(",")
    return "otlp" in exporters or any(os.environ.get(name) for name in _OTLP_ENDPOINTS)


def configure(provider: TracerProvider | None = None) -> bool:
    """Turn tracing on with ``provider`` (tests, an embedding program), else if OTEL_*
    asks for OTLP export (installing the SDK provider) or an SDK provider is installed
    already; returns whether it is on. Once on, it stays on with its provider."""
    if _state.provider is not None:
        return True
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415 - see above

    installed = trace.get_tracer_provider()
    if provider is None and isinstance(installed, TracerProvider):
        provider = installed
    elif provider is None and _exporting():
        # Imported only when asked for: the exporter pulls in its own grpc channel code.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

        name = os.environ.get("OTEL_SERVICE_NAME", "payment-vault")
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
    if provider is not None:
        _state.provider = provider
        _state.tracer = provider.get_tracer("vault")
    return provider is not None


def reset() -> None:
    """Tracing off again (for tests; servers already built keep their wrappers)."""
    _state.provider = None
    _state.tracer = trace.NoOpTracer()


def enabled() -> bool:
    return _state.provider is not None


def server_interceptors() -> list[Any]:
    """The grpc.aio server interceptors tracing needs (none when it is off)."""
    if _state.provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor  # noqa: PLC0415

    interceptor = aio_server_interceptor(_state.provider)  # type: ignore[no-untyped-call]
    return [interceptor]


def annotate_call(caller: Caller) -> None:
    """Name the authenticated caller and its tenant on the call's span."""
    span = trace.get_current_span()
    span.set_attribute("vault.caller", caller.name)
    span.set_attribute("vault.tenant", caller.tenant)


def annotate_code(code: int) -> None:
    """The call's status (a google.rpc.Code number) on its span: the instrumentation
    sees ``abort`` only, and the vault answers with ``abort_with_status``."""
    set_code(trace.get_current_span(), code)


def set_code(span: trace.Span, code: int) -> None:
    span.set_attribute("rpc.grpc.status_code", code)
    if code:
        span.set_status(trace.Status(trace.StatusCode.ERROR))


@contextlib.contextmanager
def http_span(
    service: str, method: str, headers: Iterable[tuple[str, str]] = ()
) -> Iterator[trace.Span]:
    """The server span of one HTTP/JSON call, named as the gRPC one is; a ``traceparent``
    header continues the caller's trace."""
    if _state.provider is None:
        yield trace.INVALID_SPAN
        return
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
    with _state.tracer.start_as_current_span(
        f"/{service}/{method}",
        context=propagate.extract(dict(headers)),
        kind=trace.SpanKind.SERVER,
        attributes={**attributes, "vault.transport": "http-json"},
        **_QUIET,
    ) as span:
        yield span


def _commit_span(name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    async def traced(*args: Any, **kwargs: Any) -> Any:
        with _state.tracer.start_as_current_span(
            "vault.store.commit",
            attributes={"vault.store.operation": name},
            **_QUIET,
        ):
            return await method(*args, **kwargs)

    return traced


class _TracedStore:
    """The store with a span around each write; everything else passes through."""

    def __init__(self, store: object) -> None:
        self._store = store
        for name in _COMMITS:
            method = getattr(store, name, None)
            if method is not None:
                setattr(self, name, _commit_span(name, method))

    def __repr__(self) -> str:
        return f"traced {self._store!r}"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def traced_store(store: T) -> T:
    """``store`` with commit spans when tracing is on; ``store`` itself otherwise."""
    if _state.provider is None:
        return store
    return cast("T", _TracedStore(store))


class _TracedKek:
    """A master key whose wrap and unwrap (an HSM round trip with pkcs11) get a span."""

    def __init__(self, kek: KekProvider) -> None:
        self._kek = kek
        self._attributes = {"vault.kek.provider": type(kek).__name__}

    def __repr__(self) -> str:
        return f"traced {self._kek!r}"

    @property
    def kek_id(self) -> str:
        return self._kek.kek_id

    def wrap(self, key: SecretBytes, label: bytes) -> bytes:
        with _state.tracer.start_as_current_span(
            "vault.kek.wrap", attributes=self._attributes, **_QUIET
        ):
            return self._kek.wrap(key, label)

    def unwrap(self, wrapped: bytes, label: bytes) -> SecretBytes:
        with _state.tracer.start_as_current_span(
            "vault.kek.unwrap", attributes=self._attributes, **_QUIET
        ):
            return self._kek.unwrap(wrapped, label)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kek, name)


def traced_kek(kek: KekProvider) -> KekProvider:
    """``kek`` with spans around its calls when tracing is on; ``kek`` itself otherwise."""
    return _TracedKek(kek) if _state.provider is not None else kek
