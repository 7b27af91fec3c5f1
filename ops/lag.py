"""Consumer lag: how far each of the engine's consumer groups is behind, per partition.

Lag is measured like kafka_exporter's ``kafka_consumergroup_lag``: the log end
offset minus the group's committed offset.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

from trade_engine.config import Settings


@dataclass(frozen=True, slots=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(self.end - max(self.committed, 0), 0)


def engine_groups(settings: Settings) -> dict[str, str]:
    """group id -> the topic it consumes, for every stage of the pipeline."""
    prefix = settings.topics.prefix
    names = settings.topic_names
    return {
        f"{prefix}validation": names["commands"],
        f"{prefix}matcher": names["accepted"],
    }


class LagReader:
    """Reuses one metadata consumer; ``read`` queries committed and end offsets."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumers: dict[str, Consumer] = {}

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

    def read(self, group: str, topic: str) -> list[PartitionLag]:
        consumer = self._consumer(group)
        tps = [TopicPartition(topic, p) for p in range(self.settings.topics.partitions)]
        committed = consumer.committed(tps, timeout=10)
        out = []
        for tp in committed:
            end = self._end(consumer, topic, tp.partition)
            out.append(PartitionLag(group, topic, tp.partition, tp.offset, end))
        return out

    def end_offsets(self, topic: str) -> int:
        consumer = self._consumer("lag-reader")
        return sum(self._end(consumer, topic, p) for p in range(self.settings.topics.partitions))

    def close(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers.clear()
