"""The market-data agent: ``te.executions`` in; depth, snapshots, candles, tickers out.

It decodes each execution record once (``streams.execution_records``), hands
it to the pure builders (``tables.market_data``) and publishes what they
return to the ``te.md.*`` topics, on the partition the record came from (so a
symbol's market data stays in one ordered partition, like its executions).

**Exactly once, the matcher's way.** Outputs and the consumer offsets go in one
Kafka transaction. The offset committed for a partition is the builders'
``safe_position``: every record before it has had its outputs published. A
batch cut for size or time leaves the trailing input's records after that
position; they are re-read after a crash.

**Recovery.** The builders' state is not stored: on assignment the agent
replays the partition of ``te.executions`` from its first offset up to the
committed position without publishing (``te_md_replay_records_total`` counts
it), then consumes from there. Executions are retained for
``topics.retention_ms`` (7 d), and every output is a function of the records,
so the rebuilt state is the state the agent had. After a rebuild it
publishes a snapshot of every symbol of the partition.

**Why confluent-kafka, not Faust.** The same reasons as the matcher: a
``read_committed`` input and a transaction the agent drives itself. It runs on
the matcher's runtime (``streams.runtime.TransactionalWorker``, which holds the
loop and the commit order); this module is the market-data part: applying
records to the builders, holding groups back until they are complete,
rebuilding on assignment.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from trade_engine import metrics
from trade_engine.config import Settings
from trade_engine.streams import clients
from trade_engine.streams.exceptions import DecodeError
from trade_engine.streams.execution_records import decode_execution
from trade_engine.streams.records import ConsumedRecord, is_partition_eof, watermark_offsets
from trade_engine.streams.runtime import Transaction, TransactionalWorker
from trade_engine.tables.market_data import MarketDataBuilder, MarketDataError, Output
from trade_engine.tables.market_data.builder import PartitionMarketData
from trade_engine.tables.symbols import rules_for

log = logging.getLogger(__name__)

STAGE = "market_data"

RECORDS = Counter("te_md_records_total", "Execution records applied to market data")
OUTPUTS = Counter("te_md_messages_total", "Market-data messages published", ["type"])
BAD_RECORDS = Counter(
    "te_md_bad_records_total", "Execution records market data could not apply", ["code"]
)
REPLAY_RECORDS = Counter(
    "te_md_replay_records_total", "Execution records replayed to rebuild state on assignment"
)
REPLAY_SECONDS = Histogram(
    "te_md_replay_seconds",
    "Time to rebuild one partition's market data",
    buckets=(*metrics.LATENCY_BUCKETS, 5.0, 10.0, 30.0, 60.0, 300.0),
)
BATCH_SECONDS = Histogram(
    "te_md_batch_seconds",
    "Time from the first record of a transaction to its commit",
    buckets=metrics.LATENCY_BUCKETS,
)
LAST_SEQ = Gauge("te_md_last_seq", "Last execution seq applied", ["symbol"])
ABORTED = Counter("te_md_transactions_aborted_total", "Transactions aborted", ["reason"])


class MarketDataWorker(TransactionalWorker):
    """Consume ``te.executions`` (read_committed); publish ``te.md.*`` transactionally."""

    def __init__(
        self,
        settings: Settings,
        worker_id: str = "md-1",
        *,
        group_id: str | None = None,
        batch_size: int = 2000,
        idle_wait_s: float = 0.05,
        max_batch: int = 20_000,
        commit_interval_s: float = 0.25,
    ) -> None:
        self.settings = settings
        names = settings.topic_names
        self.input = names["executions"]
        self.topics = {role: names[role] for role in ("md_depth", "md_depth_snapshot")}
        self.topics["md_candles"] = names["md_candles"]
        self.topics["md_tickers"] = names["md_tickers"]
        self.group_id = group_id or f"{settings.topics.prefix}market-data"
        md = settings.market_data
        self.snapshot_every = md.snapshot_every
        self.snapshot_interval_s = md.snapshot_interval_s
        self.rules = {spec.symbol: rules_for(spec) for spec in settings.market.symbols}
        self.parts: dict[int, PartitionMarketData] = {}
        self._startup_snapshots: set[int] = set()
        self._last_snapshot_check = time.monotonic()
        super().__init__(
            clients.exactly_once_consumer(
                settings,
                self.group_id,
                f"{self.group_id}-{worker_id}",
                # Publishes every publish_interval_s anyway: fewer, fuller fetches.
                **{"fetch.min.bytes": 65536, "fetch.wait.max.ms": 100},
            ),
            clients.transactional_producer(
                settings,
                f"{self.group_id}-{worker_id}",
                **{"queue.buffering.max.messages": 1_000_000},
            ),
            self.input,
            batch_size=batch_size,
            poll_timeout_s=idle_wait_s,
            max_batch=max_batch,
            commit_interval_s=commit_interval_s,
            aborted=ABORTED,
            min_commit_interval_s=md.publish_interval_s,
        )

    # ------------------------------------------------------------ lifecycle

    def on_start(self) -> None:
        log.info("market data started", extra={"group": self.group_id})

    def on_idle(self) -> None:
        self._idle_snapshots()

    def on_close(self) -> None:
        log.info("market data stopped", extra={"group": self.group_id})

    def pending(self) -> bool:
        # Caught up: the trailing inputs are complete (the matcher commits an input's
        # records in one transaction), so publish everything: what the open transaction
        # read, startup snapshots, and a group held back by a commit cut for size or time
        # (without this, a group cut off as the input went quiet waited for the next record).
        return (
            self.txn is not None
            or bool(self._startup_snapshots)
            or any(part.safe_position < part.position for part in self.parts.values())
        )

    # ------------------------------------------------------------ rebalance

    def restore(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        committed = consumer.committed(partitions, timeout=30)
        for tp in committed:
            end = tp.offset if tp.offset >= 0 else 0
            self.parts[tp.partition] = self._rebuild(tp.partition, end)
            self._startup_snapshots.add(tp.partition)
            tp.offset = end if end > 0 else OFFSET_BEGINNING
        return list(committed)

    def release(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.parts.pop(tp.partition, None)
            self._startup_snapshots.discard(tp.partition)

    def rewind(self, partitions: list[int]) -> list[TopicPartition]:
        """Every owned partition, not only ``partitions``: rebuilt from its committed
        position (an earlier transaction cut for size may have read its open groups)."""
        owned = [TopicPartition(self.input, p) for p in self.parts]
        if not owned:
            return []
        positions = []
        for tp in self.consumer.committed(owned, timeout=30):
            end = max(tp.offset, 0)
            self.parts[tp.partition] = self._rebuild(tp.partition, end)
            self._startup_snapshots.add(tp.partition)
            positions.append(
                TopicPartition(self.input, tp.partition, end if end > 0 else OFFSET_BEGINNING)
            )
        return positions

    def _rebuild(self, partition: int, end: int) -> PartitionMarketData:
        """Builders of ``partition`` after the records ``[0, end)``, nothing published."""
        started = time.monotonic()
        part = PartitionMarketData(
            MarketDataBuilder(self.rules, snapshot_every=self.snapshot_every)
        )
        replayed = 0
        if end > 0:
            for record in read_range(self.settings, self.input, partition, end):
                self._apply(part, record)
                replayed += 1
            part.flush()  # published before the crash or revoke; drop it
            part.position = max(part.position, end)
        REPLAY_RECORDS.inc(replayed)
        REPLAY_SECONDS.observe(time.monotonic() - started)
        log.info(
            "market data rebuilt",
            extra={
                "partition": partition,
                "position": end,
                "records": replayed,
                "symbols": sorted(part.builder.symbols),
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        return part

    # -------------------------------------------------------------- batches

    def _apply(self, part: PartitionMarketData, record: ConsumedRecord) -> list[Output]:
        try:
            out = part.apply(record.offset, decode_execution(record.value))
        except (DecodeError, MarketDataError) as exc:
            code = exc.code if isinstance(exc, MarketDataError) else MarketDataError.code
            BAD_RECORDS.labels(code).inc()
            part.position = max(part.position, record.offset + 1)
            log.error(
                "execution record skipped by market data",
                extra={
                    "stage": STAGE,
                    "code": code,
                    "reason": str(exc)[:300],
                    "partition": record.partition,
                    "offset": record.offset,
                },
            )
            return []
        return out

    def apply(self, records: dict[int, list[ConsumedRecord]], txn: Transaction) -> None:
        applied = 0
        for partition, batch in records.items():
            part = self.parts.get(partition)
            if part is None:
                continue  # revoked while the batch was in flight
            for record in batch:
                if record.offset < part.position:
                    continue  # already applied: re-delivered after a rewind
                applied += 1
                self._publish(partition, self._apply(part, record))
        RECORDS.inc(applied)

    def _publish(self, partition: int, outputs: Iterable[Output]) -> None:
        for out in outputs:
            self.producer.produce(
                self.topics[out.role],
                key=out.key.encode(),
                value=json.dumps(out.value, separators=(",", ":")).encode(),
                partition=partition,
            )
            OUTPUTS.labels(out.value["type"]).inc()
            if out.value["type"] == "depth_update":
                LAST_SEQ.labels(out.key).set(out.value["u"])

    def flush_outputs(self, txn: Transaction, *, caught_up: bool) -> None:
        """Caught up: publish the groups still open, and the startup snapshots."""
        if not caught_up:
            return
        for partition, part in self.parts.items():
            self._publish(partition, part.flush())
        for partition in sorted(self._startup_snapshots):
            part = self.parts[partition]
            self._publish(partition, [b.snapshot() for b in part.builder.symbols.values()])
        self._startup_snapshots.clear()

    def positions(self, txn: Transaction) -> list[TopicPartition]:
        # Every owned partition: a group published now may have been read by an
        # earlier transaction (cut for size), and its position must move with it.
        return [TopicPartition(self.input, p, part.safe_position) for p, part in self.parts.items()]

    def committed(self, txn: Transaction) -> None:
        BATCH_SECONDS.observe(time.monotonic() - txn.started)

    def _idle_snapshots(self) -> None:
        """Now and then, snapshot every symbol that changed since its last snapshot."""
        now = time.monotonic()
        if now - self._last_snapshot_check < self.snapshot_interval_s:
            return
        self._last_snapshot_check = now
        due = {p: part.snapshots_due() for p, part in self.parts.items()}
        if not any(due.values()):
            return
        try:
            self.begin()
            for partition, outputs in due.items():
                self._publish(partition, outputs)
        except (KafkaException, BufferError) as exc:
            self.kafka_failure(exc)
            return
        self.commit()


def read_range(
    settings: Settings, topic: str, partition: int, end: int
) -> Iterable[ConsumedRecord]:
    """Committed records of ``[0, end)`` of one partition, in order."""
    reader = clients.reader(
        settings,
        f"md-replay-{uuid.uuid4().hex}",
        **{"enable.partition.eof": True, "fetch.max.bytes": 52_428_800},
    )
    try:
        tp = TopicPartition(topic, partition)
        low, _ = watermark_offsets(reader, tp, 30)
        if low >= end:
            return
        reader.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        while True:
            batch = reader.consume(5000, 5.0)
            if not batch:
                if reader.position([tp])[0].offset >= end:
                    return  # only aborted records or markers were left
                continue
            for msg in batch:
                if is_partition_eof(msg):
                    if reader.position([tp])[0].offset >= end:
                        return
                    continue
                if msg.error() is not None:
                    continue
                record = ConsumedRecord.from_message(msg)
                if record.offset >= end:
                    return
                yield record
                if record.offset + 1 >= end:
                    return
    finally:
        reader.close()
