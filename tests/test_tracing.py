"""Tracing: W3C context in Kafka headers; the matcher's and sinks' spans join the order's trace."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from trade_engine import tracing
from trade_engine.agents.matcher.worker import MatcherWorker
from trade_engine.config import load_settings
from trade_engine.sinks.kafka import traced_spans
from trade_engine.streams.codec import encode, header, new_headers
from trade_engine.streams.commands import PlaceOrder
from trade_engine.streams.topics import create_topics


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)


def _trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


def test_off_by_default_costs_nothing_and_adds_no_header() -> None:
    assert not tracing.enabled()
    with tracing.span("x") as current:
        assert not current.get_span_context().is_valid
    headers = new_headers()
    assert [k for k, _ in headers] == ["v", "trace_id"]
    assert tracing.inject(headers) == headers
    assert tracing.configure(load_settings(), "te-test") is False


def test_new_headers_carry_the_current_span(spans: InMemorySpanExporter) -> None:
    with tracing.span("gateway.request") as current:
        headers = new_headers()
    trace_id = format(current.get_span_context().trace_id, "032x")
    assert header(headers, "trace_id") == trace_id
    traceparent = header(headers, "traceparent")
    assert traceparent is not None
    assert traceparent.split("-")[1] == trace_id
    with tracing.span("matcher.match", parent_headers=headers):
        pass
    child = next(s for s in spans.get_finished_spans() if s.name == "matcher.match")
    assert _trace_id(child) == trace_id
    assert child.parent is not None
    assert child.parent.span_id == current.get_span_context().span_id


def test_a_bare_trace_id_header_still_joins_the_trace(spans: InMemorySpanExporter) -> None:
    trace_id = uuid.uuid4().hex
    with tracing.span("settlement.record", parent_headers=[("trace_id", trace_id.encode())]):
        pass
    (span,) = spans.get_finished_spans()
    assert _trace_id(span) == trace_id


def test_bare_trace_ids_are_sampled_like_the_ratio_sampler() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider, sample_ratio=0.0)
    try:
        with tracing.span("x", parent_headers=[("trace_id", uuid.uuid4().hex.encode())]) as s:
            assert not s.is_recording()
    finally:
        tracing.use(None)
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize(
    "headers",
    [
        None,
        [],
        [("trace_id", b"nothex")],
        [("traceparent", b"00-zz-zz-01")],
        {"trace_id": "0" * 32},
    ],
)
def test_malformed_context_starts_a_new_trace(spans: InMemorySpanExporter, headers: object) -> None:
    assert tracing.extract(headers) is None
    with tracing.span("x", parent_headers=headers):
        pass
    (span,) = spans.get_finished_spans()
    assert span.parent is None


@pytest.mark.broker
def test_matcher_and_sink_spans_follow_one_order(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    """A command produced inside a span is matched in a span of the same trace, and its
    execution records carry that trace to the sinks' spans."""
    prefix = f"trace-{uuid.uuid4().hex[:8]}."
    settings = load_settings(topics={"prefix": prefix, "partitions": 1}, state_dir=tmp_path)
    create_topics(settings)
    names = settings.topic_names
    symbol = settings.market.symbols[0].symbol
    place = PlaceOrder(
        symbol=symbol,
        order_id="o-trace-1",
        user_id="u1",
        side="BUY",
        type="LIMIT",
        quantity="1",
        price=str(settings.market.symbols[0].reference_price),
    )
    producer = Producer(settings.kafka.librdkafka())
    with tracing.span("gateway.request") as entry:
        producer.produce(
            names["accepted"], key=symbol, value=encode(place), headers=new_headers(), partition=0
        )
    producer.flush(30)
    trace_id = format(entry.get_span_context().trace_id, "032x")

    MatcherWorker(settings, "trace-1").run(max_idle_s=2.0)

    matched = [s for s in spans.get_finished_spans() if s.name == "matcher.match"]
    assert [_trace_id(s) for s in matched] == [trace_id]

    consumer = Consumer(
        {
            **settings.kafka.librdkafka(),
            "group.id": f"{prefix}check",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([names["executions"]])
    try:
        messages = []
        for _ in range(30):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                messages.append(msg)
                break
        assert messages, "the matcher wrote no execution record"
        assert (header(messages[0].headers(), "trace_id")) == trace_id
        tracing.finish(traced_spans("sink.postgres.write", messages))
    finally:
        consumer.close()
    (sink,) = [s for s in spans.get_finished_spans() if s.name == "sink.postgres.write"]
    assert _trace_id(sink) == trace_id
    assert sink.parent is not None
    assert sink.parent.span_id == matched[0].context.span_id
