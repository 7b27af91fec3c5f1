"""A consumed Kafka record as plain, typed data, detached from the client library."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from trade_engine.streams.codec import Headers

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None

    @classmethod
    def from_message(cls, msg: Message) -> ConsumedRecord:
        """A record from a confluent-kafka message that carries no error."""
        error = msg.error()
        if error is not None:
            raise KafkaException(error)
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is None or partition is None or offset is None:
            raise KafkaException(KafkaError(KafkaError._BAD_MSG, "message without position"))
        headers = msg.headers()
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp_ms=msg.timestamp()[1],
            key=msg.key(),
            value=msg.value(),
            headers=list(headers) if isinstance(headers, list) else None,
        )


def is_partition_eof(msg: Message) -> bool:
    error = msg.error()
    return error is not None and error.code() == KafkaError._PARTITION_EOF


def by_partition(messages: Iterable[Message]) -> dict[int, list[ConsumedRecord]]:
    """The records of ``messages`` grouped by partition, each group in log order. Consumer
    errors are logged and skipped, end-of-partition events silently."""
    grouped: dict[int, list[ConsumedRecord]] = defaultdict(list)
    from_message = ConsumedRecord.from_message
    for msg in messages:
        error = msg.error()
        if error is not None:
            if not is_partition_eof(msg):
                _consumer_error(error)
            continue
        record = from_message(msg)
        grouped[record.partition].append(record)
    return grouped


def without_errors(messages: Iterable[Message]) -> list[Message]:
    """``messages`` minus consumer errors (logged) and end-of-partition events."""
    good = []
    for msg in messages:
        error = msg.error()
        if error is None:
            good.append(msg)
        elif error.code() != KafkaError._PARTITION_EOF:
            _consumer_error(error)
    return good


def _consumer_error(error: KafkaError) -> None:
    """Log a consumer error; raise a fatal one. A fatal error (a static member fenced by
    its own earlier join after a broker failover, seen in the chaos tests) leaves the
    consumer dead for good: skipping it kept the worker alive, polling, outside its
    group and never restarted. Raising ends the process, and its supervisor restarts it
    with a fresh consumer that rejoins. librdkafka hands that error to the poll as a
    message whose code is ``_FATAL`` but whose ``fatal()`` flag is not set (the flag
    belongs to the client's own fatal error): both count."""
    if error.fatal() or error.code() == KafkaError._FATAL:
        log.critical("fatal consumer error; exiting", extra={"error": str(error)})
        raise KafkaException(error)
    log.warning("consumer error", extra={"error": str(error)})


# A partition whose leader is moving or not elected yet (a topic just created, a failover):
# asking again shortly succeeds. librdkafka does not mark these retriable on this call.
_LEADER_MOVING = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
)


def watermark_offsets(
    consumer: Consumer, tp: TopicPartition, timeout_s: float = 30.0
) -> tuple[int, int]:
    """``get_watermark_offsets``, asked again while the partition's leader is moving or a
    retriable error says so, until ``timeout_s`` (then the last error is raised). A worker
    restoring a partition of a topic created a moment ago got NOT_LEADER_FOR_PARTITION
    and exited."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(
                tp, timeout=max(deadline - time.monotonic(), 0.1)
            )
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            transient = isinstance(error, KafkaError) and (
                error.code() in _LEADER_MOVING or error.retriable()
            )
            if not transient or time.monotonic() >= deadline:
                raise
            log.warning("watermarks of %s[%d]: %s; asking again", tp.topic, tp.partition, error)
            time.sleep(0.2)


class IdleClock:
    """When a consumer loop has been idle for ``limit_s`` (``--exit-when-idle``).

    Idle time counts only while the consumer owns partitions, and from the last
    ``busy()``: records processed, or an assignment restored. Joining a group,
    and restoring state inside ``poll()`` (the rebalance callback), can each
    outlast the limit on a loaded machine; counting them made workers exit
    before consuming anything. ``limit_s`` None: never idle.
    """

    def __init__(self, limit_s: float | None = None) -> None:
        self.limit_s = limit_s
        self._since = time.monotonic()

    def busy(self) -> None:
        self._since = time.monotonic()

    def expired(self, consumer: Consumer) -> bool:
        """Call when a poll found nothing."""
        if not consumer.assignment():
            self.busy()
            return False
        return self.limit_s is not None and time.monotonic() - self._since > self.limit_s
