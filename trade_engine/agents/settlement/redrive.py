"""``trade-engine settlement redrive``: apply dead-lettered settlement records again."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from trade_engine.agents.settlement.effects import Settler
from trade_engine.agents.settlement.metrics import REDRIVEN
from trade_engine.agents.settlement.plan import STAGE
from trade_engine.agents.settlement.worker import publish_dead_letters
from trade_engine.config import Settings
from trade_engine.connectors.wallet.client import stage_client
from trade_engine.streams import clients
from trade_engine.streams.codec import header
from trade_engine.streams.records import ConsumedRecord

log = logging.getLogger(__name__)


@dataclass
class RedriveReport:
    read: int = 0
    other_stages: int = 0
    applied: int = 0
    skipped: int = 0
    dead_lettered_again: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "read": self.read,
            "other_stages": self.other_stages,
            "applied": self.applied,
            "skipped": self.skipped,
            "dead_lettered_again": self.dead_lettered_again,
        }


def _stage_of(record: ConsumedRecord) -> str | None:
    return header(record.headers, "dlq.stage")


def _dlq(record: ConsumedRecord, name: str) -> str:
    return header(record.headers, f"dlq.{name}") or ""


async def redrive(
    settings: Settings,
    *,
    dry_run: bool = False,
    group_id: str | None = None,
    retry_budget_s: float = 60.0,
) -> RedriveReport:
    """Apply again every settlement record dead-lettered since the last redrive.

    The redrive group's committed offsets on the dead-letter topic mark what was
    re-driven; records that fail again are dead-lettered again (with their
    origin and ``dlq.redrives`` + 1), so the next redrive sees them.
    ``dry_run`` lists without calling the wallet or committing.
    """
    names = settings.topic_names
    topic = names["dead_letter"]
    group = group_id or f"{settings.topics.prefix}settlement-redrive"
    consumer = clients.committing_consumer(settings, group)
    report = RedriveReport()
    producer = clients.dead_letter_producer(settings)
    try:
        metadata = consumer.list_topics(topic, timeout=30)
        partitions = sorted(metadata.topics[topic].partitions)
        tps = [TopicPartition(topic, p) for p in partitions]
        committed = consumer.committed(tps, timeout=30)
        ranges: dict[int, tuple[int, int]] = {}
        for tp in committed:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), 30)
            start = tp.offset if tp.offset >= 0 else low
            if start < high:
                ranges[tp.partition] = (max(start, low), high)
        records = _read_ranges(consumer, topic, ranges)
        report.read = len(records)
        mine = [r for r in records if _stage_of(r) == STAGE]
        report.other_stages = len(records) - len(mine)
        if dry_run:
            for record in mine:
                origin = f"{_dlq(record, 'topic')}[{_dlq(record, 'partition')}]"
                print(
                    json.dumps(
                        {
                            "offset": record.offset,
                            "partition": record.partition,
                            "code": _dlq(record, "code"),
                            "origin": f"{origin}@{_dlq(record, 'offset')}",
                        }
                    )
                )
            return report
        async with stage_client(settings, "redrive") as wallet:
            result = await Settler(wallet, retry_budget_s=retry_budget_s).settle(mine)
        publish_dead_letters(producer, topic, result.dead)
        report.applied = result.applied
        report.skipped = result.skipped
        report.dead_lettered_again = result.dead_lettered
        REDRIVEN.labels("applied").inc(result.applied)
        REDRIVEN.labels("dead_lettered").inc(result.dead_lettered)
        if ranges:
            consumer.commit(
                offsets=[TopicPartition(topic, p, high) for p, (_, high) in ranges.items()],
                asynchronous=False,
            )
    finally:
        producer.flush(30)
        consumer.close()
    return report


def _read_ranges(
    consumer: Consumer, topic: str, ranges: dict[int, tuple[int, int]]
) -> list[ConsumedRecord]:
    """Records of ``[start, end)`` per partition, partition by partition in log order."""
    out: list[ConsumedRecord] = []
    for partition, (start, end) in sorted(ranges.items()):
        consumer.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                if consumer.position([TopicPartition(topic, partition)])[0].offset >= end:
                    break
                continue
            if msg.error() is not None:
                continue
            record = ConsumedRecord.from_message(msg)
            if record.offset >= end:
                break
            out.append(record)
            if record.offset + 1 >= end:
                break
        consumer.unassign()
    return out
