"""OpenTelemetry tracing: spans per stage, trace context carried in Kafka headers.

Off by default. ``configure(settings, service)`` turns it on when
``tracing.otlp_endpoint`` is set (spans exported over OTLP/HTTP, e.g. to
Jaeger's :4318); until then every helper here returns at once, and the hot
loops ask ``enabled()`` before building anything, so disabled tracing costs a
module-global read per record (docs/observability.md has the figure).

**Headers.** A message carries the W3C ``traceparent`` (and ``tracestate``)
of the span that produced it, beside the engine's own ``trace_id`` header
(``streams.codec.new_headers``), which holds the same 32-hex trace id. A
reader prefers ``traceparent``; a message from a producer that does not trace
has only ``trace_id``, and its spans join that trace under a synthetic remote
parent, so one order is still one trace from entry to settlement.

This module owns its tracer provider instead of the process-global one, so a
test can install an in-memory exporter and take it away again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from trade_engine.config import Settings

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACE_ID = "trace_id"

_PROPAGATOR = TraceContextTextMapPropagator()
_NOOP: Tracer = trace.NoOpTracer()


class _State:
    """The installed provider and its tracer (one per process)."""

    provider: TracerProvider | None = None
    tracer: Tracer = _NOOP
    # Traces sampled among those that arrive with a bare trace id (no traceparent).
    sample_ratio: float = 1.0


_state = _State()

HeaderList = list[tuple[str, str | bytes | None]]


def enabled() -> bool:
    """True once a tracer provider is installed; hot paths skip all work otherwise."""
    return _state.provider is not None


def configure(settings: Settings, service: str) -> bool:
    """Install the OTLP exporter when ``tracing.otlp_endpoint`` is set; returns whether it was."""
    config = settings.tracing
    if not config.otlp_endpoint:
        return False
    # The SDK and the exporter (protobuf, requests) load only when tracing is on.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.sampling import (  # noqa: PLC0415
        ParentBased,
        TraceIdRatioBased,
    )

    provider = TracerProvider(
        resource=Resource.create({"service.name": config.service_name or service}),
        sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
    )
    endpoint = config.otlp_endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    use(provider, config.sample_ratio)
    log.info("tracing enabled", extra={"endpoint": endpoint, "service": service})
    return True


def use(provider: TracerProvider | None, sample_ratio: float = 1.0) -> None:
    """Install ``provider`` (None: back to the no-op tracer). Tests pass one with an
    in-memory exporter; the previous provider is shut down (its spans flushed)."""
    previous = _state.provider
    _state.provider = provider
    _state.sample_ratio = sample_ratio
    _state.tracer = provider.get_tracer("trade_engine") if provider is not None else _NOOP
    if previous is not None and previous is not provider:
        previous.shutdown()


def tracer() -> Tracer:
    return _state.tracer


# ------------------------------------------------------------------- headers


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes | bytearray) else str(value)


def _carrier(headers: Any) -> dict[str, str]:
    """Trace-related headers of a confluent-kafka list, a Faust/aiokafka list or a dict."""
    if not headers:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for key, value in items:
        if key in (TRACEPARENT, TRACESTATE, TRACE_ID):
            text = _text(value)
            if text is not None:
                out[key] = text
    return out


def extract(headers: Any) -> Context | None:
    """The remote parent a consumed message names, or None when it names none."""
    carrier = _carrier(headers)
    if TRACEPARENT in carrier:
        context = _PROPAGATOR.extract(carrier)
        if trace.get_current_span(context).get_span_context().is_valid:
            return context
    trace_id = _trace_id(carrier.get(TRACE_ID))
    if trace_id is None:
        return None
    # No span id travels with a bare trace id: a fixed, valid one derived from it
    # keeps every stage's spans in the order's trace.
    low = trace_id & 0xFFFF_FFFF_FFFF_FFFF
    span_id = low or 1
    # The same decision TraceIdRatioBased makes, so every stage samples the same orders.
    sampled = low < round(_state.sample_ratio * (1 << 64))
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
    return trace.set_span_in_context(NonRecordingSpan(parent))


def _trace_id(text: str | None) -> int | None:
    if text is None or len(text) != 32:
        return None
    try:
        value = int(text, 16)
    except ValueError:
        return None
    return value or None


def inject(headers: HeaderList | None = None, span: Span | None = None) -> HeaderList:
    """``headers`` with ``traceparent``/``tracestate``/``trace_id`` of ``span`` (default: the
    current span) in place of any earlier ones; unchanged when there is no valid span."""
    out: HeaderList = list(headers or [])
    target = span if span is not None else trace.get_current_span()
    span_context = target.get_span_context()
    if not span_context.is_valid:
        return out
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(target))
    carrier[TRACE_ID] = format(span_context.trace_id, "032x")
    out = [(k, v) for k, v in out if k not in carrier]
    out.extend((key, value.encode()) for key, value in carrier.items())
    return out


def current_trace_id() -> str | None:
    """The 32-hex trace id of the current span (for ``trace_id`` headers and logs)."""
    if not enabled():
        return None
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


# --------------------------------------------------------------------- spans


@contextmanager
def span(
    name: str,
    *,
    parent_headers: Any = None,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
    links: Sequence[Link] = (),
) -> Iterator[Span]:
    """A current span, child of the context ``parent_headers`` carry (else of the current one).

    With tracing off this yields the invalid no-op span without touching any
    context. An exception marks the span as an error and propagates.
    """
    if _state.provider is None:
        yield trace.INVALID_SPAN
        return
    context = extract(parent_headers) if parent_headers is not None else None
    with _state.tracer.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes={k: v for k, v in (attributes or {}).items() if v is not None},
        links=links,
    ) as current:
        yield current


def start(
    name: str,
    *,
    parent_headers: Any = None,
    kind: SpanKind = SpanKind.CONSUMER,
    attributes: Mapping[str, Any] | None = None,
) -> Span:
    """A span that is not made current: one per message of a batch, ended by ``finish``."""
    if _state.provider is None:
        return trace.INVALID_SPAN
    return _state.tracer.start_span(
        name,
        context=extract(parent_headers),
        kind=kind,
        attributes={k: v for k, v in (attributes or {}).items() if v is not None},
    )


def finish(spans: Sequence[Span], error: str | None = None) -> None:
    for item in spans:
        if error is not None:
            item.set_status(Status(StatusCode.ERROR, error))
        item.end()


def links(headers_list: Sequence[Any]) -> list[Link]:
    """Links to the traces of a batch's messages (a batch span has many parents)."""
    if _state.provider is None:
        return []
    out: list[Link] = []
    for headers in headers_list:
        context = extract(headers)
        if context is not None:
            out.append(Link(trace.get_current_span(context).get_span_context()))
    return out
