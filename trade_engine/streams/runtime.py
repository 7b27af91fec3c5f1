"""The worker runtime: the consume loop every confluent-kafka stage runs on.

One loop, two commit strategies:

- ``TransactionalWorker`` (the matcher, market data): exactly-once effects.
  Outputs, changelog and input positions go in one Kafka transaction per
  batch, which the worker drives itself. The batch is what one transaction
  holds: the loop keeps consuming into the open transaction while the
  consumer has records queued, and commits as soon as the queue runs dry (low
  latency at low rates), or after ``commit_interval_s`` or ``max_batch``
  records (large transactions under load, so a commit's fixed cost is spread
  over many records). Its commit order is written in ``commit``.
- ``AtLeastOnceWorker`` (settlement, the Postgres sink, the RabbitMQ bridge):
  the stage does a batch's effects (each idempotent on a deterministic id),
  then the batch's positions are committed to the group. A crash in between
  re-delivers the batch. Those stages await their effects, so this loop is
  driven from asyncio: ``poll_batch`` and ``commit`` run the blocking client
  calls in a worker thread.

Both share ``Worker``: SIGTERM/SIGINT stop the loop after the current batch,
``--exit-when-idle`` (``IdleClock``), and the ``group_joined`` readiness flag.

The runtime never decides what a record means: decoding, matching, state and
outputs are the stages' (the hooks of ``TransactionalWorker``, the ``handle``
callback of ``AtLeastOnceWorker``). It never commits a position whose
effects are not done.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter

from trade_engine.health import Flag
from trade_engine.streams.exceptions import AbortTransactionError
from trade_engine.streams.records import ConsumedRecord, IdleClock, by_partition, without_errors
from trade_engine.streams.watchdog import StuckCallWatchdog

log = logging.getLogger(__name__)

Rebalance = Callable[[Consumer, list[TopicPartition]], None]


class Worker:
    """Stop flag, signal handling, idle exit and readiness: what every worker loop shares."""

    def __init__(self) -> None:
        self.running = True
        self.idle = IdleClock()
        # Readiness (/health/ready): set by the consumer's rebalance callbacks.
        self.group_joined = Flag("no partitions assigned by the group yet")

    def stop(self, *_: object) -> None:
        """Stop after the batch in hand (its effects and commit complete)."""
        self.running = False

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT call ``stop``. Called inside a running asyncio loop, the loop's
        own handlers are used (a plain one could interrupt the loop mid-callback)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None

        def handler(signum: int, frame: FrameType | None) -> None:
            self.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            if loop is not None:
                loop.add_signal_handler(sig, self.stop)
            else:
                signal.signal(sig, handler)


# --------------------------------------------------------------- exactly once


@dataclass(slots=True)
class Transaction:
    """The open transaction: when it began, its input partitions (in order), what it holds."""

    started: float
    partitions: dict[int, None] = field(default_factory=dict)
    inputs: int = 0
    # Log time of the oldest input in the transaction: entry -> visible output.
    oldest_ms: int | None = None


class TransactionalWorker(Worker, ABC):
    """A consume -> produce worker that commits outputs, changelog and input positions in one
    Kafka transaction per batch. Subclasses supply the stage: ``apply`` (outputs of a batch),
    ``positions`` (where each input partition resumes), ``restore``/``release``/``rewind``
    (state on assignment, revocation and abort), and optionally ``flush_outputs``,
    ``produce_changelog``, ``committed``, ``pending``, ``on_start``, ``on_idle``, ``on_close``.
    """

    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        input_topic: str,
        *,
        batch_size: int,
        poll_timeout_s: float,
        max_batch: int,
        commit_interval_s: float,
        aborted: Counter,
        min_commit_interval_s: float = 0.0,
    ) -> None:
        """``batch_size``: records per consume call; ``poll_timeout_s``: how long an idle
        worker waits for the next record; ``max_batch``/``commit_interval_s``: the most
        records / the longest time one transaction stays open while records keep coming;
        ``aborted``: the counter (label ``reason``) of aborted transactions;
        ``min_commit_interval_s``: a caught-up worker keeps its transaction open at least
        this long, reading what comes meanwhile (0: commit as soon as caught up). For a
        stage off the order path: each transaction costs the broker about ten requests
        and log appends, which a trickle of inputs otherwise pays per batch."""
        super().__init__()
        self.consumer = consumer
        self.producer = producer
        self.input_topic = input_topic
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.max_batch = max(max_batch, batch_size)
        self.commit_interval_s = commit_interval_s
        self.min_commit_interval_s = min_commit_interval_s
        self.aborted = aborted
        self.txn: Transaction | None = None
        self.transactions_ready = Flag("producer transactions not initialised")
        # The transactional calls below are given 30 s; one that outlives it ends the
        # process (streams/watchdog.py: librdkafka can block past its own timeout).
        self.watchdog = StuckCallWatchdog()

    # ------------------------------------------------------------ the loop

    def run(self, max_idle_s: float | None = None) -> None:
        """Consume until stopped (SIGTERM/SIGINT) or idle for ``max_idle_s`` seconds."""
        self.producer.init_transactions(30)
        self.transactions_ready.set()
        self.consumer.subscribe(
            [self.input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self.on_start()
        consumer = self.consumer
        idle = self.idle = IdleClock(max_idle_s)
        try:
            while self.running:
                # What is already fetched, without waiting.
                messages = consumer.consume(self.batch_size, 0)
                if not messages:
                    young = self._young()
                    if young <= 0 and self.pending():
                        self.commit(caught_up=True)  # caught up: make the batch visible now
                        continue
                    if young <= 0:
                        self.on_idle()
                    msg = consumer.poll(young if young > 0 else self.poll_timeout_s)
                    if msg is None:
                        if idle.expired(consumer):
                            break
                        continue
                    messages = [msg]
                idle.busy()
                self.process(messages)
                if self.due():
                    self.commit()
            if self.txn is not None:
                self.commit(caught_up=True)
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self.on_close()

    def _young(self) -> float:
        """Seconds the open transaction must still stay open (``min_commit_interval_s``)."""
        txn = self.txn
        if txn is None or self.min_commit_interval_s <= 0:
            return 0.0
        return txn.started + self.min_commit_interval_s - time.monotonic()

    def due(self) -> bool:
        """The open transaction is full, or has been open long enough."""
        txn = self.txn
        return txn is not None and (
            txn.inputs >= self.max_batch or time.monotonic() - txn.started >= self.commit_interval_s
        )

    def begin(self) -> Transaction:
        self.producer.begin_transaction()
        txn = self.txn = Transaction(time.monotonic())
        return txn

    def process(self, messages: list[Message]) -> None:
        """Apply ``messages`` inside the open transaction (begun here if none is)."""
        records = by_partition(messages)
        if not records:
            return
        try:
            txn = self.txn if self.txn is not None else self.begin()
            txn.partitions.update(dict.fromkeys(records))
            txn.inputs += len(messages)
            oldest = min(batch[0].timestamp_ms for batch in records.values())
            if txn.oldest_ms is None or oldest < txn.oldest_ms:
                txn.oldest_ms = oldest
            self.apply(records, txn)
        except AbortTransactionError as exc:
            self.abort(exc.reason, list(records))
        except (KafkaException, BufferError) as exc:
            self.kafka_failure(exc, list(records))

    def commit(self, *, caught_up: bool = False) -> None:
        """Close the open transaction (begun here if none is open: a stage may hold outputs
        back, like market data's snapshots). The order is the guarantee:

        1. produce outputs: what ``apply`` produced, plus what ``flush_outputs`` held back;
        2. produce changelog (``produce_changelog``): the state the inputs changed;
        3. send offsets (``positions``) with the consumer's group metadata, so a member
           fenced by a rebalance cannot commit;
        4. commit: outputs, changelog and positions become visible together;
        5. write the local store (``committed``): local state moves only past what the log
           already holds.

        A crash before 4 aborts everything: read_committed readers never see it and the
        inputs are re-read from the committed position. A crash between 4 and 5 leaves the
        local store behind the changelog, which a restart reads. A Kafka error in 1-4 aborts
        the transaction and rewinds (``abort``); a fatal one ends the process.
        ``caught_up``: nothing more was queued, so what the stage held back is complete.
        """
        try:
            txn = self.txn if self.txn is not None else self.begin()
            self.flush_outputs(txn, caught_up=caught_up)
            self.produce_changelog(txn)
            offsets = self.positions(txn)
            if offsets:
                with self.watchdog.guard("send_offsets_to_transaction", 30):
                    self.producer.send_offsets_to_transaction(
                        offsets, self.consumer.consumer_group_metadata(), 30
                    )
            with self.watchdog.guard("commit_transaction", 30):
                self.producer.commit_transaction(30)
        except (KafkaException, BufferError) as exc:
            self.kafka_failure(exc)
            return
        self.txn = None
        self.committed(txn)

    def kafka_failure(
        self, exc: KafkaException | BufferError, consumed: Sequence[int] = ()
    ) -> None:
        error = exc.args[0] if exc.args else exc
        if isinstance(error, KafkaError) and error.fatal():
            log.critical("fatal producer error; exiting", extra={"error": str(error)})
            raise exc
        log.warning("transaction failed; rewinding", extra={"error": str(error)})
        self.abort("kafka", consumed)

    def abort(self, reason: str, consumed: Sequence[int] = ()) -> None:
        """Abort the open transaction; its partitions, and those of records consumed but not
        yet in it (``consumed``), restart from their committed state (``rewind``)."""
        txn, self.txn = self.txn, None
        partitions = dict.fromkeys(txn.partitions if txn is not None else ())
        partitions.update(dict.fromkeys(consumed))
        self.aborted.labels(reason).inc()
        try:
            with self.watchdog.guard("abort_transaction", 30):
                self.producer.abort_transaction(30)
        except KafkaException as exc:
            if exc.args[0].fatal():
                raise
        for tp in self.rewind(list(partitions)):
            self.consumer.seek(tp)

    # ------------------------------------------------------------ rebalance

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.txn is not None:
            self.commit()
        assignment = self.restore(consumer, partitions)
        consumer.assign(assignment)
        self.group_joined.set(detail=f"{len(assignment)} partition(s) assigned")
        self.idle.busy()  # the restore above ran inside poll(): not idle time

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Still the owner (the revoke comes before the rejoin): commit what is open.
        if self.txn is not None:
            self.commit()
        self.release(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # No longer the owner: what is open must not commit; partitions kept are rewound.
        self.group_joined.clear("partitions lost; rejoining the group")
        self.release(partitions)
        if self.txn is not None:
            self.abort("lost")

    # ------------------------------------------------------------ the stage

    @abstractmethod
    def apply(self, records: dict[int, list[ConsumedRecord]], txn: Transaction) -> None:
        """Produce the outputs of ``records`` (by partition, in log order) inside ``txn``.
        Raise ``AbortTransactionError`` to abort and rewind."""

    @abstractmethod
    def positions(self, txn: Transaction) -> list[TopicPartition]:
        """Where each input partition resumes once ``txn`` commits."""

    @abstractmethod
    def restore(self, consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """State of newly assigned ``partitions``; returns them with their start offsets."""

    @abstractmethod
    def release(self, partitions: list[TopicPartition]) -> None:
        """Drop the state of partitions revoked or lost."""

    @abstractmethod
    def rewind(self, partitions: list[int]) -> list[TopicPartition]:
        """After an abort: rebuild the committed state of ``partitions`` (those still owned);
        returns the positions to seek the consumer to."""

    def pending(self) -> bool:
        """Whether a caught-up loop has something to commit."""
        return self.txn is not None

    def flush_outputs(self, txn: Transaction, *, caught_up: bool) -> None:
        """Produce outputs held back until the commit."""

    def produce_changelog(self, txn: Transaction) -> None:
        """Produce the state changes of ``txn``'s inputs."""

    def committed(self, txn: Transaction) -> None:
        """After the commit: write local state, publish metrics."""

    def on_start(self) -> None:
        """After subscribing, before the first poll."""

    def on_idle(self) -> None:
        """Nothing fetched and nothing open: before waiting for the next record."""

    def on_close(self) -> None:
        """After the consumer closed: release local resources."""


# --------------------------------------------------------------- at least once


def positions_after(messages: Iterable[Message]) -> list[TopicPartition]:
    """Per topic partition, the offset after the last of ``messages``: what to commit."""
    ends: dict[tuple[str, int], int] = {}
    for msg in messages:
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is None or partition is None or offset is None:
            continue
        key = (topic, partition)
        ends[key] = max(ends.get(key, -1), offset + 1)
    return [TopicPartition(t, p, o) for (t, p), o in ends.items()]


class AtLeastOnceWorker(Worker):
    """At-least-once: poll a batch, do its effects, then commit its positions to the group.

    Driven from asyncio: ``poll_batch`` runs the blocking consume in a worker thread, so
    the loop stays free for the stage's effects and for rebalance callbacks that hand work
    to it (they run in that thread). ``run_batches`` is the loop; a stage may also drive
    ``poll_batch``/``commit`` itself. The stage sets ``consumer`` (one of
    ``streams.clients``), then ``subscribe``s (or assigns partitions by hand).
    """

    def __init__(
        self,
        *,
        stage: str,
        batch_size: int,
        poll_timeout_s: float,
        commit_asynchronously: bool = False,
        linger_s: float = 0.0,
    ) -> None:
        """``linger_s``: once a batch's first record is in, wait up to this long for the
        batch to fill (0: take what is queued; for a sink whose per-batch cost, a database
        transaction or a confirm round trip, matters more than its latency).
        ``commit_asynchronously``: do not wait for the broker to take the positions (a
        stage whose effects are idempotent, so a commit lost to a crash only re-reads, or
        whose real positions live elsewhere, like the Postgres sink's). Closing the
        consumer still waits for the commits in flight."""
        super().__init__()
        self.stage = stage
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.commit_asynchronously = commit_asynchronously
        self.linger_s = linger_s
        self.consumer: Consumer | None = None

    def subscribe(self, topics: list[str], *, restore: Rebalance | None = None) -> None:
        """Join the group for ``topics`` with ``self.consumer``. ``restore`` runs in the
        polling thread on each assignment and may set each partition's start offset."""
        consumer = self._require()

        def assigned(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            if restore is not None:
                restore(consumer, partitions)
            consumer.assign(partitions)
            self.group_joined.set(detail=f"{len(partitions)} partition(s) assigned")
            self.idle.busy()  # a restore inside poll() is not idle time

        def lost(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            self.group_joined.clear("partitions lost; rejoining the group")

        consumer.subscribe(topics, on_assign=assigned, on_lost=lost)

    def _require(self) -> Consumer:
        if self.consumer is None:
            raise RuntimeError("no consumer: set one before polling")
        return self.consumer

    async def poll_batch(self) -> list[Message]:
        """Up to ``batch_size`` messages: what is already fetched, without waiting; only when
        nothing is, wait (up to ``poll_timeout_s``) for the next record and take what came
        with it. Consumer errors are logged and dropped.

        Unless the stage lingers (``linger_s``), never wait for a batch to fill:
        ``consume(n, timeout)`` returns only when ``n`` records or the timeout came, which
        at a low rate put the whole timeout into every record's latency. Batches still
        grow under load, by themselves: what arrives while a batch's effects run is queued
        for the next one."""
        consumer = self._require()
        size, timeout, linger = self.batch_size, self.poll_timeout_s, self.linger_s

        def fetch() -> list[Message]:
            messages = list(consumer.consume(size, 0))
            if not messages:
                first = consumer.poll(timeout)
                if first is None:
                    return []
                messages = [first, *consumer.consume(size - 1, 0)]
            if linger > 0 and len(messages) < size:
                messages += consumer.consume(size - len(messages), linger)
            return messages

        return without_errors(await asyncio.get_running_loop().run_in_executor(None, fetch))

    async def commit(self, messages: Sequence[Message]) -> None:
        """Commit the positions after ``messages``: call only once their effects are done.

        A failed commit is logged, not raised: a rebalance took the partitions and their
        next owner re-reads the batch, whose effects are idempotent.
        """
        consumer = self._require()
        offsets = positions_after(messages)
        if not offsets:
            return
        try:
            if self.commit_asynchronously:
                consumer.commit(offsets=offsets, asynchronous=True)
            else:
                await asyncio.get_running_loop().run_in_executor(
                    None, lambda: consumer.commit(offsets=offsets, asynchronous=False)
                )
        except KafkaException as exc:
            log.warning("offset commit failed", extra={"stage": self.stage, "error": str(exc)})

    async def run_batches(
        self,
        handle: Callable[[list[Message]], Awaitable[bool]],
        *,
        max_idle_s: float | None = None,
        after_batch: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """Until stopped, idle for ``max_idle_s`` seconds, or ``after_batch`` returns False:
        poll a batch, await ``handle`` (the batch's effects, done when it returns), then, if
        it returned True, commit the batch's positions."""
        consumer = self._require()
        idle = self.idle = IdleClock(max_idle_s)
        while self.running:
            messages = await self.poll_batch()
            if messages:
                if await handle(messages):
                    await self.commit(messages)
                idle.busy()
            elif idle.expired(consumer):
                return
            if after_batch is not None and not await after_batch():
                return

    async def close_consumer(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            await asyncio.get_running_loop().run_in_executor(None, consumer.close)
