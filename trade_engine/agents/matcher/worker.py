"""The matcher: ``te.commands.accepted`` in, ``te.executions`` and ``te.trades`` out.

Exactly-once effects come from a Kafka transaction the engine drives itself,
one per batch, holding everything the batch caused:

1. the execution and trade records,
2. the book-state changes (changelog topic),
3. the consumer offsets of the inputs (``send_offsets_to_transaction`` with the
   consumer's group metadata, so a member fenced by a rebalance cannot commit).

The loop, the batching of transactions and the commit order (apply commands in
memory -> produce outputs -> produce changelog -> send offsets -> commit ->
write the local RocksDB store) are the worker runtime's
(``streams.runtime.TransactionalWorker``); this module is the matcher's part:
matching a batch, producing the changelog, restoring books on assignment.
A crash anywhere before the commit aborts everything (read_committed readers
never see it) and the inputs are re-read from the committed position; a crash
after it leaves the local store behind the changelog, which a restart reads.
On any transaction failure the partition's books are rebuilt from the store
(which holds only committed state) and the consumer rewinds to their position.

Faust's ``exactly_once`` guarantee is not used: its changelog and offset
commits are not atomic with our outputs (see docs/recovery.md).
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from trade_engine import metrics, tracing
from trade_engine.agents.matcher.standby import StandbyReplicator
from trade_engine.agents.matcher.step import (
    EXECUTIONS,
    STAGE,
    TRADES,
    CorePanicError,
    Output,
    StageCounters,
    match_record,
)
from trade_engine.config import Settings
from trade_engine.streams import clients
from trade_engine.streams.exceptions import AbortTransactionError
from trade_engine.streams.records import ConsumedRecord, is_partition_eof, watermark_offsets
from trade_engine.streams.runtime import Transaction, TransactionalWorker
from trade_engine.streams.topics import partition_count
from trade_engine.tables.durable import Changes, PartitionBooks
from trade_engine.tables.matching.rules import SymbolRules
from trade_engine.tables.store import LocalStore
from trade_engine.tables.symbols import rules_for

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MatcherTopics:
    input: str
    executions: str
    trades: str
    changelog: str
    dead_letter: str

    @classmethod
    def from_settings(cls, settings: Settings) -> MatcherTopics:
        names = settings.topic_names
        return cls(
            input=names["accepted"],
            executions=names["executions"],
            trades=names["trades"],
            changelog=names["matcher_changelog"],
            dead_letter=names["dead_letter"],
        )


class MatcherWorker(TransactionalWorker):
    def __init__(
        self,
        settings: Settings,
        worker_id: str,
        *,
        batch_size: int = 2000,
        batch_timeout_s: float = 0.02,
        max_batch: int = 50_000,
        commit_interval_s: float = 0.25,
        topics: MatcherTopics | None = None,
        group_id: str | None = None,
        tune_gc: bool = True,
        standby: bool = False,
    ) -> None:
        """``batch_size``: records per consume call; ``batch_timeout_s``: how long an idle
        worker waits for the next record; ``max_batch``/``commit_interval_s``: the most
        records / the longest time one transaction stays open while records keep coming."""
        self.settings = settings
        self.worker_id = worker_id
        self.topics = topics or MatcherTopics.from_settings(settings)
        self.group_id = group_id or f"{settings.topics.prefix}matcher"
        self.tune_gc = tune_gc
        self.rules: dict[str, SymbolRules] = {
            spec.symbol: rules_for(spec) for spec in settings.market.symbols
        }
        self.state_root = Path(settings.state_dir) / "matcher" / self.group_id / worker_id
        self.books: dict[int, PartitionBooks] = {}
        self.stores: dict[int, LocalStore] = {}
        self.poison: set[tuple[int, int]] = set()
        self._changelog_offsets: dict[int, int] = {}
        # What the open transaction holds beyond its outputs: metric counts, and (from
        # the changelog step to the local write) the book changes it commits.
        self._counters = StageCounters()
        self._changes: dict[int, Changes] = {}
        # The input topic's partition count (from metadata, refreshed on each assignment):
        # a record on a partition its key does not map to is dead-lettered, never matched.
        self.input_partitions: int | None = None
        # Warm standby: keep the stores of partitions owned elsewhere up to date, so a
        # takeover reads only the changelog tail (see agents/matcher/standby.py).
        self.standby = (
            StandbyReplicator(settings, self.topics.changelog, self.state_root) if standby else None
        )
        super().__init__(
            clients.exactly_once_consumer(
                settings,
                self.group_id,
                worker_id,
                # Keep a full transaction's worth of records prefetched.
                **{"queued.min.messages": 100_000},
            ),
            clients.transactional_producer(
                settings,
                f"{self.group_id}-{worker_id}",
                **{
                    # One transaction may hold max_batch records' outputs and changelog.
                    "queue.buffering.max.messages": 2_000_000,
                    "queue.buffering.max.kbytes": 2_097_151,
                },
            ),
            self.topics.input,
            batch_size=batch_size,
            poll_timeout_s=batch_timeout_s,
            max_batch=max_batch,
            commit_interval_s=commit_interval_s,
            aborted=metrics.TRANSACTIONS_ABORTED,
        )

    # --------------------------------------------------------- lifecycle

    def run(self, max_idle_s: float | None = None) -> None:
        """Consume until stopped (SIGTERM/SIGINT) or idle for ``max_idle_s``."""
        if self.tune_gc:
            # The books are large, long-lived object graphs and every record makes
            # short-lived garbage: collect the young generation 140x less often
            # (young cycles are still found) and rarely walk the whole heap.
            gc.set_threshold(100_000, 50, 100)
        super().run(max_idle_s)

    def on_start(self) -> None:
        if self.standby is not None:
            self.standby.follow(set(range(self.settings.topics.partitions)))
        log.info("matcher started", extra={"worker": self.worker_id, "group": self.group_id})

    def on_idle(self) -> None:
        if self.standby is not None:
            self.standby.poll(max_records=5000)  # idle: follow the others

    def on_close(self) -> None:
        if self.standby is not None:
            self.standby.close()
        for store in self.stores.values():
            store.close()
        self.stores.clear()
        self.books.clear()

    # --------------------------------------------------------- rebalance

    def restore(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        if self.standby is not None:
            self.standby.unfollow({tp.partition for tp in partitions})
        self.input_partitions = partition_count(consumer, self.topics.input)
        for tp in partitions:
            books = self._restore(tp.partition)
            tp.offset = books.position if books.position > 0 else OFFSET_BEGINNING
        metrics.ASSIGNED_PARTITIONS.set(len(self.books))
        return partitions

    def release(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.books.pop(tp.partition, None)
            store = self.stores.pop(tp.partition, None)
            if store is not None:
                store.close()
        if self.standby is not None:
            self.standby.follow({tp.partition for tp in partitions})
        metrics.ASSIGNED_PARTITIONS.set(len(self.books))

    def rewind(self, partitions: list[int]) -> list[TopicPartition]:
        self._counters = StageCounters()
        self._changes = {}
        return [
            TopicPartition(self.topics.input, p, self._restore(p).position)
            for p in partitions
            if p in self.books
        ]

    def _restore(self, partition: int) -> PartitionBooks:
        """Books of ``partition`` = local store + the changelog past it (read_committed)."""
        started = time.monotonic()
        store = self.stores.get(partition)
        if store is None:
            store = self.stores[partition] = LocalStore(self.state_root / f"p{partition}")
        read = self._catch_up(store, partition)
        books = PartitionBooks.restore(partition, self.rules, store.items())
        self.books[partition] = books
        metrics.RECOVERY_SECONDS.observe(time.monotonic() - started)
        log.info(
            "partition restored",
            extra={
                "partition": partition,
                "position": books.position,
                "symbols": sorted(books.books),
                "changelog_records": read,
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        return books

    def _catch_up(self, store: LocalStore, partition: int) -> int:
        reader = clients.reader(
            self.settings, f"{self.group_id}-restore", **{"enable.partition.eof": True}
        )
        try:
            tp = TopicPartition(self.topics.changelog, partition)
            # With read_committed this is the last stable offset: nothing after it
            # can be part of a committed transaction yet.
            _, end = watermark_offsets(reader, tp, 30)
            start = store.changelog_offset() + 1
            if start >= end:
                return 0
            reader.assign([TopicPartition(self.topics.changelog, partition, start)])
            changes: dict[bytes, bytes | None] = {}
            last = start - 1
            read = 0
            while last + 1 < end:
                msg = reader.poll(5.0)
                if msg is None:
                    position = reader.position([tp])[0].offset
                    if position >= end:  # only aborted records or markers were left
                        break
                    continue
                if is_partition_eof(msg):
                    break
                record = ConsumedRecord.from_message(msg)
                if record.key is not None:
                    changes[record.key] = record.value
                last = record.offset
                read += 1
            if changes:
                store.write(changes, last)
            metrics.RECOVERY_RECORDS.inc(read)
            return read
        finally:
            reader.close()

    # ------------------------------------------------------------ batches

    def apply(self, records: dict[int, list[ConsumedRecord]], txn: Transaction) -> None:
        try:
            self._apply(records, self._counters)
        except CorePanicError as exc:
            log.error(
                "core failed on an input; it will be dead-lettered",
                extra={"partition": exc.partition, "offset": exc.offset, "error": repr(exc.cause)},
            )
            self.poison.add((exc.partition, exc.offset))
            raise AbortTransactionError("core_panic") from exc

    def produce_changelog(self, txn: Transaction) -> None:
        changes = self._changes = {}
        for partition in txn.partitions:
            books = self.books.get(partition)
            if books is None:
                continue  # revoked while the batch was in flight
            changes[partition] = partition_changes = books.take_changes()
            self._produce_changelog(partition, partition_changes)

    def positions(self, txn: Transaction) -> list[TopicPartition]:
        return [TopicPartition(self.topics.input, p, self.books[p].position) for p in self._changes]

    def committed(self, txn: Transaction) -> None:
        """The local store, now that the log holds everything it will say."""
        changes, self._changes = self._changes, {}
        counters, self._counters = self._counters, StageCounters()
        self.producer.poll(0)  # serve delivery reports: the changelog offsets below
        for partition, partition_changes in changes.items():
            store = self.stores.get(partition)
            if store is not None:
                store.write(partition_changes, self._changelog_offsets.get(partition, -1))
        metrics.BATCH_SECONDS.observe(time.monotonic() - txn.started)
        metrics.BATCH_SIZE.observe(txn.inputs)
        if txn.oldest_ms is not None and txn.oldest_ms > 0:
            metrics.ORDER_LATENCY.observe(max(time.time() - txn.oldest_ms / 1000, 0.0))
        _publish(counters)

    def _apply(
        self, by_partition: dict[int, list[ConsumedRecord]], counters: StageCounters
    ) -> None:
        """Match every record, producing its outputs inside the open transaction."""
        poison = self.poison
        traced = tracing.enabled()
        partitions = self.input_partitions
        for partition, batch in by_partition.items():
            books = self.books.get(partition)
            if books is None:
                continue  # revoked while the batch was in flight
            executions: list[dict[str, Any]] = []
            trades: list[dict[str, Any]] = []
            for record in batch:
                offset = record.offset
                if offset < books.position:
                    continue  # already applied: re-delivered after a rewind
                books.position = offset + 1
                poisoned = bool(poison) and (partition, offset) in poison
                if traced:
                    self._match_traced(
                        books,
                        record,
                        counters,
                        poisoned=poisoned,
                        executions=executions,
                        trades=trades,
                    )
                    continue
                for out in match_record(
                    books, record, counters, poisoned=poisoned, partitions=partitions
                ):
                    role = out.role
                    if role == EXECUTIONS:
                        executions.append({"key": out.key, "value": out.value})
                    elif role == TRADES:
                        trades.append({"key": out.key, "value": out.value})
                    else:
                        self._dead_letter(out)
            self._produce_batch(self.topics.executions, partition, executions)
            self._produce_batch(self.topics.trades, partition, trades)

    def _dead_letter(self, out: Output) -> None:
        self.producer.produce(
            self.topics.dead_letter, key=out.key, value=out.value, headers=out.headers
        )

    def _match_traced(
        self,
        books: PartitionBooks,
        record: ConsumedRecord,
        counters: StageCounters,
        *,
        poisoned: bool,
        executions: list[dict[str, Any]],
        trades: list[dict[str, Any]],
    ) -> None:
        """``match_record`` inside a span continuing the command's trace; its outputs carry
        that span's trace context. Tracing on only: headers rule out produce_batch."""
        with tracing.span(
            "matcher.match",
            parent_headers=record.headers,
            attributes={
                "messaging.kafka.partition": record.partition,
                "messaging.kafka.offset": record.offset,
                "te.symbol": record.key.decode(errors="replace") if record.key else None,
            },
        ) as current:
            outputs = match_record(
                books, record, counters, poisoned=poisoned, partitions=self.input_partitions
            )
            headers = tracing.inject(span=current)
        for out in outputs:
            if out.role == EXECUTIONS:
                executions.append({"key": out.key, "value": out.value, "headers": headers})
            elif out.role == TRADES:
                trades.append({"key": out.key, "value": out.value, "headers": headers})
            else:
                self._dead_letter(out._replace(headers=tracing.inject(out.headers, current)))

    def _produce_changelog(self, partition: int, changes: Changes) -> None:
        messages: list[dict[str, Any]] = [
            {"key": key, "value": value} for key, value in changes.items()
        ]
        if messages:
            # Offsets grow within a partition: the last record's report is the one needed.
            messages[-1]["callback"] = self._changelog_delivered
            self._produce_batch(self.topics.changelog, partition, messages)

    def _produce_batch(self, topic: str, partition: int, messages: list[dict[str, Any]]) -> None:
        if not messages:
            return
        if "headers" in messages[0]:
            # Tracing on: librdkafka's batch call cannot carry headers.
            for message in messages:
                self.producer.produce(topic, partition=partition, **message)
            return
        queued = self.producer.produce_batch(topic, messages, partition=partition)
        if queued != len(messages):
            error = next((m["_error"] for m in messages if "_error" in m), None)
            raise KafkaException(
                error
                if isinstance(error, KafkaError)
                else KafkaError(KafkaError._FAIL, f"{len(messages) - queued} not queued")
            )

    def _changelog_delivered(self, err: KafkaError | None, msg: Message) -> None:
        partition, offset = msg.partition(), msg.offset()
        if (
            err is None
            and partition is not None
            and offset is not None
            and offset > self._changelog_offsets.get(partition, -1)
        ):
            self._changelog_offsets[partition] = offset


def _publish(counters: StageCounters) -> None:
    for kind, n in counters.executions.items():
        metrics.EXECUTIONS.labels(kind).inc(n)
    for symbol, n in counters.trades.items():
        metrics.TRADES.labels(symbol).inc(n)
    for symbol, n in counters.commands.items():
        metrics.COMMANDS.labels(symbol, "applied").inc(n)
    for code, n in counters.dead_letters.items():
        metrics.DEAD_LETTERS.labels(STAGE, code).inc(n)
