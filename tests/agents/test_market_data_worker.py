"""The market-data worker's loop with fake clients: what it publishes once caught up."""

from __future__ import annotations

import json
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from trade_engine.agents import market_data
from trade_engine.agents.market_data import MarketDataWorker
from trade_engine.config import load_settings
from trade_engine.operations import synthetic


class FakeMessage:
    def __init__(self, offset: int, value: bytes) -> None:
        self._offset, self._value = offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "executions"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_000)

    def headers(self) -> None:
        return None


class FakeConsumer:
    """Hands out ``chunks`` one per consume/poll (an empty chunk: caught up)."""

    def __init__(self, chunks: list[list[FakeMessage]]) -> None:
        self.chunks = chunks
        self.on_assign: Any = None
        self.assigned: list[TopicPartition] = []

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.on_assign = callbacks["on_assign"]

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        if self.on_assign is not None:
            on_assign, self.on_assign = self.on_assign, None
            on_assign(self, [TopicPartition("executions", 0)])
        return self.chunks.pop(0) if self.chunks else []

    def poll(self, timeout: float) -> FakeMessage | None:
        batch = self.consume(1, timeout)
        return batch[0] if batch else None

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in partitions]

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions

    def assignment(self) -> list[TopicPartition]:
        return self.assigned

    def consumer_group_metadata(self) -> str:
        return "group-metadata"

    def close(self) -> None:
        pass


class FakeProducer:
    def __init__(self) -> None:
        self.open: list[tuple[str, bytes]] | None = None
        self.published: list[tuple[str, bytes]] = []

    def init_transactions(self, timeout: float) -> None:
        pass

    def begin_transaction(self) -> None:
        self.open = []

    def produce(self, topic: str, key: bytes, value: bytes, partition: int) -> None:
        assert self.open is not None
        self.open.append((topic, value))

    def send_offsets_to_transaction(self, *_: object) -> None:
        pass

    def commit_transaction(self, timeout: float) -> None:
        assert self.open is not None
        self.published += self.open
        self.open = None


def test_a_group_held_back_by_a_cut_commit_is_published_once_the_input_goes_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: a transaction cut for time right at the last record left that input's
    group unpublished (its depth diff missing) until another record arrived."""
    settings = load_settings(topics={"partitions": 1})
    values = synthetic.executions(
        300, 3, settings.market.symbols[:1], 1, start_ms=1_700_000_000_000
    )[0]
    messages = [FakeMessage(offset, value) for offset, value in enumerate(values)]
    chunks = [messages[i : i + 50] for i in range(0, len(messages), 50)]
    chunks.insert(1, [])  # caught up once early on: the startup snapshots go out then
    consumer, producer = FakeConsumer(chunks), FakeProducer()
    monkeypatch.setattr(market_data.clients, "exactly_once_consumer", lambda *a, **k: consumer)
    monkeypatch.setattr(market_data.clients, "transactional_producer", lambda *a, **k: producer)

    worker = MarketDataWorker(settings, batch_size=50, commit_interval_s=0.0)  # cut every batch
    worker.run(max_idle_s=0.2)

    depth = [
        json.loads(value)
        for topic, value in producer.published
        if topic == settings.topic_names["md_depth"]
    ]
    assert depth[-1]["u"] == json.loads(values[-1])["seq"]
    part = worker.parts[0]
    assert part.safe_position == part.position == len(values)
