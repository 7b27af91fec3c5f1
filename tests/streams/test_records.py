"""Consumer errors in a batch: logged and skipped, except a fatal one, which ends the worker
(its supervisor restarts it with a consumer that rejoins)."""

from __future__ import annotations

from typing import Any, cast

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from trade_engine.streams.records import by_partition, watermark_offsets, without_errors


class ErrorMessage:
    def __init__(self, error: KafkaError) -> None:
        self._error = error

    def error(self) -> KafkaError:
        return self._error


def _batch(error: KafkaError) -> list[Message]:
    return cast(list[Message], [ErrorMessage(error)])


@pytest.mark.parametrize("read", [by_partition, without_errors])
def test_a_transient_consumer_error_is_skipped(read: Any) -> None:
    assert not read(_batch(KafkaError(KafkaError._TRANSPORT, "broker down")))


@pytest.mark.parametrize("read", [by_partition, without_errors])
@pytest.mark.parametrize("flagged", [True, False], ids=["fatal-flag", "as-polled"])
def test_a_fatal_consumer_error_ends_the_worker(read: Any, flagged: bool) -> None:
    # As polled (the full chaos run's coordinator-kill): code _FATAL, fatal() False,
    # printed KafkaError{code=_FATAL,val=-150,str="Fatal error: Broker: Static consumer
    # fenced by other consumer with same group.instance.id: ..."}.
    fenced = KafkaError(KafkaError._FATAL, "static consumer fenced", fatal=flagged)
    with pytest.raises(KafkaException) as raised:
        read(_batch(fenced))
    assert raised.value.args[0].code() == KafkaError._FATAL


class WatermarkConsumer:
    """Raises the given errors in turn, then answers (0, 42)."""

    def __init__(self, errors: list[KafkaError]) -> None:
        self.errors = errors
        self.calls = 0

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        self.calls += 1
        if self.errors:
            raise KafkaException(self.errors.pop(0))
        return 0, 42


def test_watermarks_are_asked_again_while_the_leader_moves() -> None:
    # Seen in CI: a matcher restoring a partition of a changelog created a moment before.
    moving = [
        KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION),
        KafkaError(KafkaError.LEADER_NOT_AVAILABLE),
    ]
    consumer = WatermarkConsumer(moving)
    tp = TopicPartition("te.matcher.changelog", 0)
    assert watermark_offsets(cast(Consumer, consumer), tp, 5.0) == (0, 42)
    assert consumer.calls == 3


def test_watermarks_raise_other_errors_at_once_and_give_up_at_the_deadline() -> None:
    tp = TopicPartition("te.matcher.changelog", 0)
    denied = WatermarkConsumer([KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)])
    with pytest.raises(KafkaException):
        watermark_offsets(cast(Consumer, denied), tp, 5.0)
    assert denied.calls == 1
    forever = WatermarkConsumer([KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)] * 100)
    with pytest.raises(KafkaException):
        watermark_offsets(cast(Consumer, forever), tp, 0.5)
    assert 2 <= forever.calls < 100
