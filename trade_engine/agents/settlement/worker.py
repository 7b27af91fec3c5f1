"""The settlement worker: ``te.executions`` (read_committed) -> the wallet, offsets
committed only after every record of a batch was answered or dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Sequence
from types import FrameType

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from trade_engine import metrics
from trade_engine.agents.settlement.effects import Settler
from trade_engine.agents.settlement.metrics import BATCH_SECONDS, DEAD_LETTERS
from trade_engine.agents.settlement.plan import STAGE, dead_letter_headers
from trade_engine.config import Settings
from trade_engine.connectors.wallet.client import stage_client
from trade_engine.health import Flag
from trade_engine.streams.records import ConsumedRecord, IdleClock, is_partition_eof

log = logging.getLogger(__name__)


def dead_letter_producer(settings: Settings) -> Producer:
    return Producer(
        {
            **settings.kafka.librdkafka(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
        }
    )


def publish_dead_letters(
    producer: Producer, topic: str, dead: Sequence[tuple[ConsumedRecord, str, str]]
) -> None:
    """Send and flush; raises when the broker did not take every record (nothing is committed)."""
    for record, code, reason in dead:
        DEAD_LETTERS.labels(code).inc()
        metrics.DEAD_LETTERS.labels(STAGE, code).inc()
        producer.produce(
            topic,
            key=record.key,
            value=record.value,
            headers=list(dead_letter_headers(record, code, reason).items()),
        )
        producer.poll(0)
    if dead and producer.flush(60):
        raise RuntimeError("dead-letter records were not delivered; not committing offsets")


class SettlementWorker:
    """Consume ``te.executions`` (read_committed), settle through the wallet, commit after."""

    def __init__(
        self,
        settings: Settings,
        *,
        batch_size: int = 1000,
        poll_timeout_s: float = 0.5,
        retry_budget_s: float = 300.0,
        group_id: str | None = None,
    ) -> None:
        self.settings = settings
        names = settings.topic_names
        self.topic = names["executions"]
        self.dead_letter_topic = names["dead_letter"]
        self.group_id = group_id or f"{settings.topics.prefix}settlement"
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.retry_budget_s = retry_budget_s
        self._stop = False
        # Readiness (/health/ready): set by the consumer's rebalance callbacks.
        self.group_joined = Flag("no partitions assigned by the group yet")

    def install_signal_handlers(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            self._stop = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def stop(self) -> None:
        self._stop = True

    def run(self, max_idle_s: float | None = None) -> None:
        asyncio.run(self.run_async(max_idle_s))

    async def run_async(self, max_idle_s: float | None = None) -> None:
        consumer = Consumer(
            {
                **self.settings.kafka.librdkafka(),
                "group.id": self.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.partition.eof": False,
                "session.timeout.ms": 6_000,
                "heartbeat.interval.ms": 1_000,
                "max.poll.interval.ms": max(int(self.retry_budget_s * 1000) + 60_000, 300_000),
            }
        )
        producer = dead_letter_producer(self.settings)
        consumer.subscribe(
            [self.topic],
            on_assign=lambda _c, tps: self.group_joined.set(
                detail=f"{len(tps)} partition(s) assigned"
            ),
            on_lost=lambda _c, _tps: self.group_joined.clear("partitions lost; rejoining"),
        )
        idle = IdleClock(max_idle_s)
        log.info("settlement agent started", extra={"stage": STAGE, "group": self.group_id})
        try:
            async with stage_client(self.settings, STAGE) as wallet:
                settler = Settler(wallet, retry_budget_s=self.retry_budget_s)
                while not self._stop:
                    messages = consumer.consume(self.batch_size, self.poll_timeout_s)
                    records = []
                    for msg in messages:
                        if is_partition_eof(msg):
                            continue
                        if msg.error() is not None:
                            log.warning("consumer error", extra={"error": str(msg.error())})
                            continue
                        records.append(ConsumedRecord.from_message(msg))
                    if not records:
                        if idle.expired(consumer):
                            break
                        continue
                    idle.busy()
                    await self._settle_batch(consumer, producer, settler, records)
        finally:
            producer.flush(30)
            consumer.close()
            log.info("settlement agent stopped", extra={"stage": STAGE})

    async def _settle_batch(
        self,
        consumer: Consumer,
        producer: Producer,
        settler: Settler,
        records: list[ConsumedRecord],
    ) -> None:
        started = time.perf_counter()
        result = await settler.settle(records)
        publish_dead_letters(producer, self.dead_letter_topic, result.dead)
        offsets: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            offsets[key] = max(offsets.get(key, -1), record.offset + 1)
        try:
            consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            # A rebalance took the partitions: the next owner re-reads and the
            # wallet answers the replays from its idempotency records.
            log.warning("offset commit failed", extra={"stage": STAGE, "error": str(exc)})
        BATCH_SECONDS.observe(time.perf_counter() - started)
