"""Print a topic as JSON lines, the way a downstream consumer sees it.

The consumer reads with ``isolation.level=read_committed`` (aborted transactional
records are never shown), assigns every partition itself (no group
rebalancing) and never commits offsets, so running it leaves no trace in the
cluster. Each run uses a fresh ``group.id``. Records of ``te.executions`` and
``te.trades`` are read with their topic's decoder (``streams.execution_records``)
and printed in their wire form; anything else, or a record that does not decode,
is printed as the JSON it holds.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any, TextIO

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from trade_engine.config import Settings
from trade_engine.connectors.exceptions import TailError
from trade_engine.streams import clients
from trade_engine.streams.exceptions import DecodeError
from trade_engine.streams.execution_records import (
    decode_execution,
    decode_trade,
    execution_wire,
    trade_wire,
)

log = logging.getLogger(__name__)

Reader = Callable[[bytes], dict[str, Any]]
"""A topic's decoder, back to the record's wire dict."""


def read_execution(raw: bytes) -> dict[str, Any]:
    return execution_wire(decode_execution(raw))


def read_trade(raw: bytes) -> dict[str, Any]:
    return trade_wire(decode_trade(raw))


def reader_for(settings: Settings, topic: str) -> Reader | None:
    names = settings.topic_names
    return {names["executions"]: read_execution, names["trades"]: read_trade}.get(topic)


def _value(raw: bytes | None, reader: Reader | None) -> Any:
    if raw is None:
        return None
    if reader is not None:
        try:
            return reader(raw)
        except DecodeError:
            pass  # shown as whatever JSON it holds
    try:
        return json.loads(raw)
    except ValueError:
        return {"raw": raw.decode("utf-8", "replace")}


def render(msg: Message, *, verbose: bool = False, reader: Reader | None = None) -> str:
    """One JSON line for a message: its value, or with ``verbose`` an envelope
    with topic, partition, offset, timestamp, key and headers. ``reader``: the topic's
    decoder (``reader_for``)."""
    value = _value(msg.value(), reader)
    if not verbose:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    key = msg.key()
    _, timestamp = msg.timestamp()
    raw_headers: Any = msg.headers() or []
    pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
    headers = {
        str(name): (data.decode("utf-8", "replace") if isinstance(data, bytes) else data)
        for name, data in pairs
    }
    envelope = {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp_ms": timestamp,
        "key": key.decode("utf-8", "replace") if isinstance(key, bytes) else key,
        "headers": headers,
        "value": value,
    }
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)


def tail(
    settings: Settings,
    topic: str,
    *,
    from_beginning: bool = False,
    max_messages: int | None = None,
    symbol: str | None = None,
    verbose: bool = False,
    idle_timeout_s: float | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print messages of ``topic`` to ``out`` until ``max_messages`` were printed or
    nothing arrived for ``idle_timeout_s`` seconds (None: run until interrupted).
    Only messages keyed ``symbol`` are printed when it is given. Returns the count."""
    consumer = clients.reader(
        settings,
        f"te-tail-{uuid.uuid4().hex[:12]}",
        **{
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "logger": log,
        },
    )
    printed = 0
    wanted = symbol.encode() if symbol is not None else None
    reader = reader_for(settings, topic)
    try:
        metadata = consumer.list_topics(topic, timeout=settings.kafka.connect_timeout_s)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise TailError(f"topic {topic} does not exist")
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in sorted(info.partitions)])
        last_seen = time.monotonic()
        while max_messages is None or printed < max_messages:
            msg = consumer.poll(0.2)
            if msg is None:
                if idle_timeout_s is not None and time.monotonic() - last_seen >= idle_timeout_s:
                    break
                continue
            last_seen = time.monotonic()
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal() or not err.retriable():
                    raise TailError(f"consuming {topic}: {err.str()} ({err.name()})")
                continue
            if wanted is not None and msg.key() != wanted:
                continue
            print(render(msg, verbose=verbose, reader=reader), file=out, flush=True)
            printed += 1
    except KafkaException as exc:
        raise TailError(f"consuming {topic}: {exc}") from exc
    finally:
        consumer.close()
    return printed
