"""The admission worker: ``te.commands`` -> ``te.commands.accepted`` (or the dead letters).

It runs the risk stage (``stage.RiskStage``: checks, then the wallet's holds) or,
without a wallet, the validation stage (``validation.Validation``) on the
worker runtime's at-least-once consumer, a batch at a time, two batches in flight
(``AdmissionWorker._pipeline``: batch N+1 is polled and decided while batch N is
sent and committed; decisions are serial and sends are in order):

1. poll what is queued (waiting only while nothing is: latency at low rates);
2. ``decide`` the batch (for risk: one ``reserve_many`` call for its places);
3. forward each admitted command to the same partition of ``te.commands.accepted``
   with its original timestamp and headers, and dead-letter each refused one
   (``streams.dead_letter``: a letter that always fits), in input order;
4. flush the producer: every record of the batch acknowledged by the broker;
5. commit the batch's positions (without waiting for the broker's answer: a lost
   commit only re-reads batches that are answered idempotently).

A step that fails (the wallet unreachable, the broker not taking a record) is
retried with backoff and nothing is skipped or committed meanwhile:
back-pressure. A crash anywhere before step 5 re-reads the batch, which the
stages answer idempotently (the wallet replays a reserve's answer; the matcher
answers a re-sent place as a duplicate).

Why not Faust, which these stages used to run on: Faust's per-event machinery
cost about 190 µs of CPU per command against 7-9 µs for a batched confluent
consume -> produce loop on this broker (docs/benchmarks.md), and the order path
carries every command through here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)
from prometheus_client import Counter, Histogram

from trade_engine import metrics, tracing
from trade_engine.agents.risk.stage import STAGE as RISK
from trade_engine.agents.risk.stage import RiskStage
from trade_engine.agents.risk.validation import Outgoing, Validation
from trade_engine.config import Settings
from trade_engine.connectors.wallet.client import stage_client
from trade_engine.streams import clients
from trade_engine.streams.codec import Headers, header
from trade_engine.streams.dead_letter import dead_letter_headers, dead_letter_value
from trade_engine.streams.records import IdleClock
from trade_engine.streams.runtime import AtLeastOnceWorker
from trade_engine.streams.topics import partition_count
from trade_engine.tables.symbols import rules_for

log = logging.getLogger(__name__)

Decide = Callable[
    [Sequence[tuple[bytes | None, bytes | None]], Sequence[int]], Awaitable[list[Outgoing]]
]

BATCH_SIZE = Histogram(
    "te_admission_batch_commands",
    "Commands per admission batch (risk or validation stage)",
    ["stage"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500),
)
BATCH_SECONDS = Histogram(
    "te_admission_batch_seconds",
    "Time to decide, forward and flush one batch (wallet calls included)",
    ["stage"],
    buckets=(*metrics.LATENCY_BUCKETS, 5.0, 10.0, 30.0),
)
SEND_RETRIES = Counter(
    "te_admission_send_retries_total",
    "Batches sent again because the broker did not take every record",
    ["stage"],
)


class AdmissionWorker(AtLeastOnceWorker):
    """One consumer of ``te.commands`` in the stage's group, one idempotent producer."""

    def __init__(
        self,
        settings: Settings,
        stage: str,
        *,
        batch_size: int = 500,
        idle_wait_s: float = 0.1,
        group_id: str | None = None,
    ) -> None:
        """``idle_wait_s``: how long one poll waits while nothing is queued (a record that
        arrives meanwhile ends the wait at once)."""
        # Positions are committed without waiting for the broker's answer: a commit lost
        # to a crash re-reads batches the wallet and the matcher answer idempotently, and
        # waiting put a round trip into every batch's latency.
        super().__init__(
            stage=stage,
            batch_size=batch_size,
            poll_timeout_s=idle_wait_s,
            commit_asynchronously=True,
        )
        self.settings = settings
        names = settings.topic_names
        self.input = names["commands"]
        self.output = names["accepted"]
        self.dead_letter_topic = names["dead_letter"]
        self.group_id = group_id or f"{settings.topics.prefix}{stage}"
        self.partitions: int | None = None
        self.producer: Producer | None = None

    async def run_async(
        self, make_decide: Callable[[int], Decide], max_idle_s: float | None = None
    ) -> None:
        """Until stopped (or idle for ``max_idle_s``): admit batches with the decision
        ``make_decide`` builds for the command topic's partition count."""
        self.consumer = clients.committing_consumer(
            self.settings,
            self.group_id,
            **{
                "enable.partition.eof": False,
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 1_000,
                # A wallet outage holds a batch back for as long as it lasts.
                "max.poll.interval.ms": 3_600_000,
            },
        )
        self.producer = clients.producer(self.settings, **{"linger.ms": 1})
        self.partitions = partition_count(self.consumer, self.input)
        decide = make_decide(self.partitions)
        self.subscribe([self.input])
        log.info("admission stage started", extra={"stage": self.stage, "group": self.group_id})
        try:
            await self._pipeline(decide, max_idle_s)
        finally:
            if self.producer is not None:
                self.producer.flush(30)
            await self.close_consumer()
            log.info("admission stage stopped", extra={"stage": self.stage})

    async def _pipeline(self, decide: Decide, max_idle_s: float | None) -> None:
        """Two steps in flight: while batch N is sent and committed (in a worker thread),
        batch N+1 is polled and decided (its wallet call). Decisions stay serial, so the
        wallet sees the holds in log order, and N+1 is sent only after N was delivered
        and its positions committed, so the output keeps the input's order."""
        consumer = self._require()
        idle = self.idle = IdleClock(max_idle_s)
        sending: asyncio.Task[None] | None = None
        try:
            while self.running:
                messages = await self.poll_batch()
                if not messages:
                    if sending is not None and sending.done():
                        await sending  # raises what the send raised
                        sending = None
                    if sending is None and idle.expired(consumer):
                        return
                    continue
                idle.busy()
                started = time.perf_counter()
                decisions = await self._decide(decide, messages)
                if sending is not None:
                    await sending
                sending = asyncio.create_task(self._deliver(messages, decisions, started))
        finally:
            if sending is not None:
                await sending

    async def _decide(self, decide: Decide, messages: list[Message]) -> list[Outgoing]:
        BATCH_SIZE.labels(self.stage).observe(len(messages))
        with tracing.span(
            f"{self.stage}.batch",
            attributes={"te.commands": len(messages)},
            links=tracing.links([m.headers() for m in messages]),
        ):
            return await decide(
                [(m.key(), m.value()) for m in messages],
                [m.partition() or 0 for m in messages],
            )

    async def _deliver(
        self, messages: list[Message], decisions: list[Outgoing], started: float
    ) -> None:
        """Send the batch until the broker took every record, then commit its positions."""
        loop = asyncio.get_running_loop()
        delay = 0.1
        while not await loop.run_in_executor(None, self._send, messages, decisions):
            SEND_RETRIES.labels(self.stage).inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        await self.commit(messages)
        BATCH_SECONDS.labels(self.stage).observe(time.perf_counter() - started)

    def _send(self, messages: list[Message], decisions: list[Outgoing]) -> bool:
        """Forward or dead-letter every record and wait for the broker; False when it did
        not take them all (the caller sends the batch again: idempotent downstream)."""
        producer = self.producer
        assert producer is not None
        failed: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failed.append(err)

        try:
            for msg, decision in zip(messages, decisions, strict=True):
                self._produce(producer, msg, decision, delivered)
            remaining = producer.flush(30)
        except KafkaException as exc:
            log.error("could not send the batch", extra={"stage": self.stage, "error": str(exc)})
            return False
        if failed or remaining:
            log.error(
                "the broker did not take the batch; sending it again",
                extra={"stage": self.stage, "error": str(failed[0]) if failed else "timeout"},
            )
            return False
        return True

    def _produce(
        self,
        producer: Producer,
        msg: Message,
        decision: Outgoing,
        delivered: Callable[[KafkaError | None, Message], None],
    ) -> None:
        headers: Headers = list(msg.headers() or [])  # type: ignore[arg-type]
        if decision.dead_letter is None:
            if tracing.enabled():
                with tracing.span(
                    f"{self.stage}.process",
                    parent_headers=headers,
                    attributes={
                        "messaging.kafka.partition": msg.partition(),
                        "messaging.kafka.offset": msg.offset(),
                    },
                ):
                    headers = tracing.inject(headers)
            kind, timestamp = msg.timestamp()
            # The producer's time goes on, so latency is measured from the order's entry.
            timestamp = timestamp if kind != TIMESTAMP_NOT_AVAILABLE and timestamp > 0 else 0
            _produce(
                producer,
                self.output,
                key=msg.key(),
                value=decision.value,
                partition=msg.partition(),
                timestamp=timestamp,
                headers=headers,
                on_delivery=delivered,
            )
            return
        code, reason = decision.dead_letter
        metrics.DEAD_LETTERS.labels(self.stage, code).inc()
        log.warning(
            "command dead-lettered",
            extra={
                "stage": self.stage,
                "code": code,
                "reason": reason,
                "topic": msg.topic(),
                "partition": msg.partition(),
                "offset": msg.offset(),
                "trace_id": header(headers, "trace_id"),
            },
        )
        value, cut = dead_letter_value(msg.value())
        _produce(
            producer,
            self.dead_letter_topic,
            key=msg.key(),
            value=value,
            headers=dead_letter_headers(
                headers,
                code=code,
                reason=reason,
                stage=self.stage,
                topic=msg.topic() or self.input,
                partition=msg.partition() or 0,
                offset=msg.offset() or 0,
                extra=cut,
            ),
            on_delivery=delivered,
        )


def _produce(producer: Producer, topic: str, **kwargs: object) -> None:
    """``produce``, waiting for room when the local queue is full."""
    while True:
        try:
            producer.produce(topic, **kwargs)  # type: ignore[arg-type]
            return
        except BufferError:
            producer.poll(0.05)


async def run_risk(
    settings: Settings, worker: AdmissionWorker, max_idle_s: float | None = None
) -> None:
    """The risk stage: admission plus the wallet's holds, for as long as the worker runs."""
    rules = {spec.symbol: rules_for(spec) for spec in settings.market.symbols}
    async with stage_client(settings, RISK) as wallet:

        def make(partitions: int) -> Decide:
            return RiskStage(rules, wallet.reserve_many, partitions=partitions).decide

        await worker.run_async(make, max_idle_s)


async def run_validation(
    settings: Settings, worker: AdmissionWorker, max_idle_s: float | None = None
) -> None:
    """The validation stage: admission without a wallet."""
    symbols = frozenset(spec.symbol for spec in settings.market.symbols)
    await worker.run_async(lambda partitions: Validation(symbols, partitions).decide, max_idle_s)
