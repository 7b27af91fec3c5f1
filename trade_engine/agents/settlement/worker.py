"""The settlement worker: ``te.executions`` (read_committed) -> the wallet, offsets
committed only after every record of a batch was answered or dead-lettered.

It runs on the at-least-once runtime (``streams.runtime.AtLeastOnceWorker``): poll a
batch, settle it (awaiting the wallet), dead-letter what cannot settle, then commit
the batch's positions. A crash in between re-reads the batch; the wallet answers
the replays from its idempotency records.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from confluent_kafka import Message, Producer

from trade_engine import metrics
from trade_engine.agents.settlement.effects import Settler
from trade_engine.agents.settlement.metrics import BATCH_SECONDS, DEAD_LETTERS
from trade_engine.agents.settlement.plan import STAGE
from trade_engine.config import Settings
from trade_engine.connectors.wallet.client import stage_client
from trade_engine.streams import clients
from trade_engine.streams.dead_letter import dead_letter
from trade_engine.streams.records import ConsumedRecord
from trade_engine.streams.runtime import AtLeastOnceWorker

log = logging.getLogger(__name__)


def publish_dead_letters(
    producer: Producer, topic: str, dead: Sequence[tuple[ConsumedRecord, str, str]]
) -> None:
    """Send and flush; raises when the broker did not take every record (nothing is committed).

    A record re-driven from the dead-letter topic keeps its origin (``keep_origin``)."""
    for record, code, reason in dead:
        DEAD_LETTERS.labels(code).inc()
        metrics.DEAD_LETTERS.labels(STAGE, code).inc()
        value, headers = dead_letter(record, code, reason, stage=STAGE, keep_origin=True)
        producer.produce(topic, key=record.key, value=value, headers=headers)
        producer.poll(0)
    if dead and producer.flush(60):
        raise RuntimeError("dead-letter records were not delivered; not committing offsets")


class SettlementWorker(AtLeastOnceWorker):
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
        # Asynchronous commits: a position lost to a crash re-reads trades the wallet
        # answers from its idempotency records; waiting cost a round trip per batch.
        super().__init__(
            stage=STAGE,
            batch_size=batch_size,
            poll_timeout_s=poll_timeout_s,
            commit_asynchronously=True,
        )
        self.settings = settings
        names = settings.topic_names
        self.topic = names["executions"]
        self.dead_letter_topic = names["dead_letter"]
        self.group_id = group_id or f"{settings.topics.prefix}settlement"
        self.retry_budget_s = retry_budget_s

    def run(self, max_idle_s: float | None = None) -> None:
        asyncio.run(self.run_async(max_idle_s))

    async def run_async(self, max_idle_s: float | None = None) -> None:
        self.consumer = clients.committing_consumer(
            self.settings,
            self.group_id,
            **{
                "enable.partition.eof": False,
                "session.timeout.ms": 6_000,
                "heartbeat.interval.ms": 1_000,
                "max.poll.interval.ms": max(int(self.retry_budget_s * 1000) + 60_000, 300_000),
            },
        )
        producer = clients.dead_letter_producer(self.settings)
        self.subscribe([self.topic])
        log.info("settlement agent started", extra={"stage": STAGE, "group": self.group_id})
        try:
            async with stage_client(self.settings, STAGE) as wallet:
                settler = Settler(wallet, retry_budget_s=self.retry_budget_s)

                async def settle(messages: list[Message]) -> bool:
                    await self._settle_batch(producer, settler, messages)
                    return True

                await self.run_batches(settle, max_idle_s=max_idle_s)
        finally:
            producer.flush(30)
            await self.close_consumer()
            log.info("settlement agent stopped", extra={"stage": STAGE})

    async def _settle_batch(
        self, producer: Producer, settler: Settler, messages: list[Message]
    ) -> None:
        """The batch's effects: every record settled or dead-lettered (the runtime commits
        the batch's positions after this returns)."""
        started = time.perf_counter()
        records = [ConsumedRecord.from_message(msg) for msg in messages]
        result = await settler.settle(records)
        publish_dead_letters(producer, self.dead_letter_topic, result.dead)
        BATCH_SECONDS.observe(time.perf_counter() - started)
