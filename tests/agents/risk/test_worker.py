"""The admission worker's sending: forwarded in order with partition, timestamp and
headers; dead letters that fit; a batch the broker did not take is sent again, never
committed past."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError

from trade_engine.agents.risk import worker as worker_module
from trade_engine.agents.risk.validation import Outgoing
from trade_engine.agents.risk.worker import AdmissionWorker
from trade_engine.config import load_settings


class FakeMessage:
    def __init__(self, offset: int, value: bytes, partition: int = 2) -> None:
        self._offset, self._value, self._partition = offset, value, partition

    def key(self) -> bytes:
        return b"BTC/USDT"

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return "te.commands"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, 1_795_000_000_000 + self._offset

    def headers(self) -> list[tuple[str, bytes]]:
        return [("trace_id", f"t{self._offset}".encode())]

    def error(self) -> None:
        return None


class FakeProducer:
    """Takes every record; fails the deliveries of the first ``failures`` flushes."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self._pending: list[Any] = []

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.sent.append((topic, kwargs))
        self._pending.append(kwargs["on_delivery"])

    def flush(self, timeout: float) -> int:
        error = KafkaError(KafkaError._MSG_TIMED_OUT) if self.failures > 0 else None
        self.failures -= 1
        for callback in self._pending:
            callback(error, None)
        self._pending.clear()
        return 0


def _worker(producer: FakeProducer) -> AdmissionWorker:
    worker = AdmissionWorker(load_settings(), "risk")
    worker.producer = producer  # type: ignore[assignment]
    return worker


def test_forwarded_to_the_same_partition_with_timestamp_and_headers_dead_letters_cut() -> None:
    producer = FakeProducer()
    messages = [FakeMessage(5, b"ok"), FakeMessage(6, b"x" * 100_000)]
    decisions = [Outgoing(b"ok"), Outgoing(b"x" * 100_000, ("DECODE_TOO_LARGE", "too big"))]
    assert _worker(producer)._send(messages, decisions)  # type: ignore[arg-type]
    (topic, forwarded), (dlq_topic, letter) = producer.sent
    assert topic == "te.commands.accepted"
    assert forwarded["partition"] == 2
    assert forwarded["timestamp"] == 1_795_000_000_005
    assert ("trace_id", b"t5") in forwarded["headers"]
    assert dlq_topic == "te.dead-letter"
    assert len(letter["value"]) == 64 * 1024
    headers = dict(letter["headers"])
    assert headers["dlq.code"] == b"DECODE_TOO_LARGE"
    assert headers["dlq.offset"] == b"6"
    assert headers["dlq.original_size"] == b"100000"


class FakeConsumer:
    """Hands out ``batches`` one poll at a time, then nothing; records commits."""

    def __init__(self, batches: list[list[FakeMessage]], log: list[str]) -> None:
        self.batches, self.log = batches, log

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        return self.batches.pop(0) if self.batches else []

    def poll(self, timeout: float = -1) -> FakeMessage | None:
        return None

    def assignment(self) -> list[int]:
        return [0]

    def commit(self, *, offsets: Any, asynchronous: bool) -> None:
        self.log.append("commit " + ",".join(str(tp.offset) for tp in offsets))


def _echo(log: list[str]) -> Any:
    async def decide(inputs: Any, partitions: Any) -> list[Outgoing]:
        log.append("decide " + ",".join(value.decode() for _, value in inputs))
        await asyncio.sleep(0.01)  # the wallet call
        return [Outgoing(value) for _, value in inputs]

    return decide


def test_a_batch_the_broker_did_not_take_is_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = FakeProducer(failures=2)
    worker = _worker(producer)
    log: list[str] = []
    worker.consumer = FakeConsumer([[FakeMessage(1, b"a"), FakeMessage(2, b"b")]], log)  # type: ignore[assignment]
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def no_sleep(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(worker_module.asyncio, "sleep", no_sleep)
    asyncio.run(worker._pipeline(_echo([]), max_idle_s=0))
    assert [kwargs["value"] for _, kwargs in producer.sent] == [b"a", b"b"] * 3
    assert [d for d in slept if d >= 0.1] == [0.1, 0.2]  # the backoff, not the wallet call
    assert log == ["commit 3"]  # once, after the batch was taken


def test_the_next_batch_is_decided_while_one_is_sent_and_sent_only_after_its_commit() -> None:
    log: list[str] = []

    class SlowProducer(FakeProducer):
        def flush(self, timeout: float) -> int:
            log.append("flush " + ",".join(kwargs["value"].decode() for _, kwargs in self.sent))
            time.sleep(0.1)  # the broker's acknowledgements, in the worker thread
            return super().flush(timeout)

    producer = SlowProducer()
    worker = _worker(producer)
    batches = [[FakeMessage(1, b"a")], [FakeMessage(2, b"b")], [FakeMessage(3, b"c")]]
    worker.consumer = FakeConsumer(batches, log)  # type: ignore[assignment]
    asyncio.run(worker._pipeline(_echo(log), max_idle_s=0))
    expected = ["decide a", "flush a", "decide b", "commit 2", "flush a,b"]
    expected += ["decide c", "commit 3", "flush a,b,c", "commit 4"]
    assert sorted(log) == sorted(expected)
    at = log.index
    # Decisions stay in log order, each batch is sent after its decision...
    assert at("decide a") < at("decide b") < at("decide c")
    assert at("decide a") < at("flush a")
    assert at("decide b") < at("flush a,b")
    # ...the next batch's wallet call overlaps the send of the one before (a's flush runs
    # in a worker thread, so which of the two is logged first is the scheduler's choice)...
    assert at("decide b") < at("commit 2")
    assert at("decide c") < at("commit 3")
    # ...and a batch is sent only after the one before was delivered and committed.
    assert at("commit 2") < at("flush a,b")
    assert at("commit 3") < at("flush a,b,c")
