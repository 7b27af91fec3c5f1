"""IdleClock: idle time counts only while partitions are owned, from the last busy()."""

from __future__ import annotations

from typing import Any, cast

import pytest
from confluent_kafka import Consumer

from trade_engine.streams import records
from trade_engine.streams.records import IdleClock


class FakeConsumer:
    def __init__(self) -> None:
        self.partitions: list[Any] = []

    def assignment(self) -> list[Any]:
        return self.partitions


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(records.time, "monotonic", lambda: now[0])
    return now


def test_idle_counts_only_once_partitions_are_owned(clock: list[float]) -> None:
    consumer = FakeConsumer()
    idle = IdleClock(3.0)
    clock[0] += 10  # a slow group join
    assert not idle.expired(cast(Consumer, consumer))
    consumer.partitions = ["p0"]
    clock[0] += 2
    assert not idle.expired(cast(Consumer, consumer))
    clock[0] += 1.5
    assert idle.expired(cast(Consumer, consumer))


def test_busy_restarts_the_count(clock: list[float]) -> None:
    consumer = FakeConsumer()
    consumer.partitions = ["p0"]
    idle = IdleClock(3.0)
    clock[0] += 2.5
    idle.busy()  # records processed, or an assignment restored inside poll()
    clock[0] += 2.5
    assert not idle.expired(cast(Consumer, consumer))
    clock[0] += 1
    assert idle.expired(cast(Consumer, consumer))


def test_without_a_limit_it_never_expires(clock: list[float]) -> None:
    consumer = FakeConsumer()
    consumer.partitions = ["p0"]
    idle = IdleClock(None)
    clock[0] += 10_000
    assert not idle.expired(cast(Consumer, consumer))
