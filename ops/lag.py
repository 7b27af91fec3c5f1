"""Consumer lag: how far each of the engine's consumer groups is behind, per partition.

Lag in messages is measured like kafka_exporter's ``kafka_consumergroup_lag``:
the log end offset minus the group's committed offset. Lag in seconds is the
age of the oldest record the group has not consumed (the record at its
committed offset), zero when it is caught up. A group is *stalled* on a
partition when, between two samples, its lag grew and its committed offset did
not move.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import Gauge

from trade_engine.config import Settings

LAG = Gauge(
    "kafka_consumergroup_lag",
    "Log end offset minus committed offset",
    ["consumergroup", "topic", "partition"],
)
LAG_SECONDS = Gauge(
    "kafka_consumergroup_lag_seconds",
    "Age of the oldest unconsumed record",
    ["consumergroup", "topic", "partition"],
)
CURRENT_OFFSET = Gauge(
    "kafka_consumergroup_current_offset",
    "Committed offset of the group",
    ["consumergroup", "topic", "partition"],
)
END_OFFSET = Gauge("kafka_topic_partition_current_offset", "Log end offset", ["topic", "partition"])
STALLED = Gauge(
    "te_consumergroup_stalled",
    "1 when lag grew and the committed offset did not move between samples",
    ["consumergroup", "topic", "partition"],
)


@dataclass(frozen=True, slots=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int
    end: int
    lag_seconds: float = 0.0
    stalled: bool = False

    @property
    def lag(self) -> int:
        return max(self.end - max(self.committed, 0), 0)

    def as_dict(self) -> dict[str, object]:
        return {
            "group": self.group,
            "topic": self.topic,
            "partition": self.partition,
            "committed": self.committed,
            "end": self.end,
            "lag": self.lag,
            "lag_seconds": round(self.lag_seconds, 3),
            "stalled": self.stalled,
        }


def engine_groups(settings: Settings) -> dict[str, str]:
    """group id -> the topic it consumes, for every stage of the pipeline."""
    prefix = settings.topics.prefix
    names = settings.topic_names
    return {
        f"{prefix}risk": names["commands"],
        f"{prefix}matcher": names["accepted"],
        f"{prefix}settlement": names["executions"],
        f"{prefix}sink.postgres": names["executions"],
        f"{prefix}sink.rabbitmq": names["executions"],
        f"{prefix}market-data": names["executions"],
    }


class LagReader:
    """Reuses one metadata consumer per group; ``read`` queries committed and end offsets."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumers: dict[str, Consumer] = {}
        self._previous: dict[tuple[str, str, int], PartitionLag] = {}

    def _consumer(self, group: str) -> Consumer:
        consumer = self._consumers.get(group)
        if consumer is None:
            consumer = self._consumers[group] = Consumer(
                {
                    **self.settings.kafka.librdkafka(),
                    "group.id": group,
                    "enable.auto.commit": False,
                    "client.id": f"lag-reader-{uuid.uuid4().hex[:6]}",
                }
            )
        return consumer

    def _end(self, consumer: Consumer, topic: str, partition: int) -> int:
        # Right after a topic is created its leader may not answer yet: retry briefly.
        for attempt in range(50):
            try:
                return int(
                    consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
                )
            except KafkaException as exc:
                if not exc.args[0].retriable() and attempt > 0:
                    raise
                time.sleep(0.2)
        raise TimeoutError(f"no end offset for {topic}[{partition}]")

    def _age_seconds(self, topic: str, partition: int, offset: int) -> float:
        """Age of the record at ``offset`` (the oldest one the group has not consumed)."""
        reader = self._consumer(f"lag-reader-{self.settings.topics.prefix}")
        reader.assign([TopicPartition(topic, partition, max(offset, 0))])
        try:
            msg = reader.poll(2.0)
            if msg is None or msg.error() is not None:
                return 0.0
            return max(time.time() - msg.timestamp()[1] / 1000, 0.0)
        finally:
            reader.unassign()

    def read(self, group: str, topic: str, *, with_seconds: bool = False) -> list[PartitionLag]:
        consumer = self._consumer(group)
        tps = [TopicPartition(topic, p) for p in range(self.settings.topics.partitions)]
        committed = consumer.committed(tps, timeout=10)
        out = []
        for tp in committed:
            end = self._end(consumer, topic, tp.partition)
            lag = max(end - max(tp.offset, 0), 0)
            seconds = (
                self._age_seconds(topic, tp.partition, tp.offset) if with_seconds and lag else 0.0
            )
            key = (group, topic, tp.partition)
            before = self._previous.get(key)
            stalled = (
                before is not None
                and lag > before.lag
                and tp.offset == before.committed
                and lag > 0
            )
            current = PartitionLag(group, topic, tp.partition, tp.offset, end, seconds, stalled)
            self._previous[key] = current
            out.append(current)
        return out

    def read_all(self, *, with_seconds: bool = True) -> list[PartitionLag]:
        result = []
        for group, topic in engine_groups(self.settings).items():
            result.extend(self.read(group, topic, with_seconds=with_seconds))
        return result

    def end_offsets(self, topic: str) -> int:
        consumer = self._consumer("lag-reader")
        return sum(self._end(consumer, topic, p) for p in range(self.settings.topics.partitions))

    def close(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers.clear()


def export(lags: list[PartitionLag]) -> None:
    """Publish one sample as kafka_exporter-style gauges."""
    for item in lags:
        labels = (item.group, item.topic, str(item.partition))
        LAG.labels(*labels).set(item.lag)
        LAG_SECONDS.labels(*labels).set(item.lag_seconds)
        CURRENT_OFFSET.labels(*labels).set(max(item.committed, 0))
        END_OFFSET.labels(item.topic, str(item.partition)).set(item.end)
        STALLED.labels(*labels).set(1 if item.stalled else 0)
