"""The matcher worker against the real broker: promises kept at the edges.

Each test runs ``MatcherWorker`` on fresh topics until it has been idle, reads
what a read_committed consumer sees, and checks one promise: a misrouted
command opens no second book, ``seq`` survives a restart, and a command of any
size ends in exactly one of the outputs or the dead-letter topic.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from trade_engine.agents.matcher.replay import read_partition
from trade_engine.agents.matcher.worker import MatcherWorker
from trade_engine.config import Settings, load_settings
from trade_engine.streams.codec import encode
from trade_engine.streams.commands import CancelOrder, PlaceOrder
from trade_engine.streams.dead_letter import MAX_VALUE_BYTES
from trade_engine.streams.partitioning import partition_for
from trade_engine.streams.records import ConsumedRecord
from trade_engine.streams.topics import create_topics

pytestmark = pytest.mark.broker
PARTITIONS = 4


def _settings(tmp_path: Path, name: str) -> Settings:
    prefix = f"{name}-{uuid.uuid4().hex[:8]}."
    settings = load_settings(
        topics={"prefix": prefix, "partitions": PARTITIONS}, state_dir=tmp_path / "state"
    )
    create_topics(settings)
    return settings


def _produce(settings: Settings, items: list[tuple[str, bytes, int | None]]) -> None:
    """``(key, value, partition)`` to the accepted topic; None = the key's own partition."""
    producer = Producer({**settings.kafka.librdkafka(), "message.max.bytes": 2_000_000})
    topic = settings.topic_names["accepted"]
    for key, value, partition in items:
        where = partition_for(key.encode(), PARTITIONS) if partition is None else partition
        producer.produce(topic, key=key, value=value, partition=where)
    assert producer.flush(30) == 0


def _all(settings: Settings, role: str) -> list[ConsumedRecord]:
    topic = settings.topic_names[role]
    return [r for p in range(PARTITIONS) for r in read_partition(settings, topic, p)]


def _run(settings: Settings, worker: str = "w1") -> None:
    MatcherWorker(settings, worker).run(max_idle_s=1.5)


def _place(symbol: str, order_id: str, **kw: Any) -> PlaceOrder:
    fields: dict[str, Any] = {
        "symbol": symbol,
        "order_id": order_id,
        "user_id": "u1",
        "side": "BUY",
        "type": "LIMIT",
        "quantity": "0.100",
        "price": "600.00",
        **kw,
    }
    return PlaceOrder(**fields)


def test_a_command_on_the_wrong_partition_is_dead_lettered_not_matched(tmp_path: Path) -> None:
    """Regression: a valid BTC/USDT command on another partition opened a second book
    there, with its own seq from 1 (duplicated seq values and trade ids)."""
    settings = _settings(tmp_path, "wrongpart")
    symbol = "BTC/USDT"
    home = partition_for(symbol.encode(), PARTITIONS)
    stray = (home + 1) % PARTITIONS
    place = _place(symbol, "b-home", price="50000.00", quantity="0.01000")
    misrouted = _place(symbol, "b-stray", price="50000.00", quantity="0.01000")
    _produce(settings, [(symbol, encode(place), None), (symbol, encode(misrouted), stray)])
    _run(settings)
    executions = _all(settings, "executions")
    assert [(r.partition, json.loads(r.value or b"")["seq"]) for r in executions] == [(home, 1)]
    (letter,) = _all(settings, "dead_letter")
    headers = dict(letter.headers or [])
    assert headers["dlq.code"] == b"WRONG_PARTITION"
    assert headers["dlq.stage"] == b"matcher"
    assert headers["dlq.partition"] == str(stray).encode()
    assert letter.value == encode(misrouted)


def test_seq_survives_a_restart_after_a_batch_of_only_rejections(tmp_path: Path) -> None:
    """Regression: the symbol header was saved only when an order changed, so after a
    restart the matcher handed out again the seq of a batch that held only REJECTED."""
    settings = _settings(tmp_path, "seqrestart")
    symbol = "BNB/USDT"
    _produce(settings, [(symbol, encode(_place(symbol, "n1")), None)])
    _run(settings)
    unknown = CancelOrder(symbol=symbol, user_id="u1", order_id="nope-1")
    _produce(settings, [(symbol, encode(unknown), None)])
    _run(settings)
    again = CancelOrder(symbol=symbol, user_id="u1", order_id="nope-2")
    _produce(settings, [(symbol, encode(again), None)])
    _run(settings)
    records = [json.loads(r.value or b"") for r in _all(settings, "executions")]
    assert [(r["kind"], r["seq"]) for r in records] == [
        ("ACCEPTED", 1),
        ("REJECTED", 2),
        ("REJECTED", 3),
    ]


def test_a_one_megabyte_command_is_dead_lettered_truncated(tmp_path: Path) -> None:
    """Any size ends in exactly one place: a command too large to dead-letter whole goes
    there cut, with its size and hash; the partition goes on."""
    settings = _settings(tmp_path, "huge")
    symbol = "BNB/USDT"
    huge = encode(_place(symbol, "h1", client_order_id="c")).replace(
        b'"c"', b'"' + b"x" * 1_000_000 + b'"'
    )
    after = _place(symbol, "h2")
    _produce(settings, [(symbol, huge, None), (symbol, encode(after), None)])
    _run(settings)
    (letter,) = _all(settings, "dead_letter")
    headers = dict(letter.headers or [])
    assert headers["dlq.code"] == b"DECODE_TOO_LARGE"
    assert headers["dlq.truncated"] == b"true"
    assert headers["dlq.original_size"] == str(len(huge)).encode()
    assert letter.value == huge[:MAX_VALUE_BYTES]
    records = [json.loads(r.value or b"") for r in _all(settings, "executions")]
    assert [(r["kind"], r["order_id"]) for r in records] == [("ACCEPTED", "h2")]
