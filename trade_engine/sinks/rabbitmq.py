"""The RabbitMQ bridge: trade and order events from ``te.executions``, at least once.

Topology (the seeds' TE-104, declared idempotently at start, names optionally
prefixed for tests):

- exchanges ``trade.events`` and ``order.events``: durable, topic;
- queues ``wallet.service.trades`` and ``notification.service.trades``: durable,
  bound to ``trade.events`` with ``trade.#``; dead-lettered to exchange ``dlx``
  (durable topic) by **queue arguments** (``x-dead-letter-exchange``,
  ``x-dead-letter-routing-key``; the wallet queue also has the seeds' 24 h
  ``x-message-ttl``), where queue ``dlx.failed`` (bound ``#``) keeps them.

Per batch: consume from Kafka (read_committed) -> publish every event as a
persistent message with ``message_id`` = ``trade_id`` (trades) or
``"<symbol>:<seq>"`` (order events) -> wait for the broker's confirms of the whole
batch (``sinks.amqp.ConfirmingPublisher``: basic.ack, ``multiple`` honoured) -> only
then commit the batch's offsets to the Kafka group. A basic.nack, a lost
connection or a broker restart fails the batch; the bridge drops the connection,
connects a new one (with backoff), declares the topology again and republishes
the whole batch. So nothing is lost, some messages may arrive twice, and
consumers deduplicate on ``message_id`` (``docs/rabbitmq.md``). Never do: advance
Kafka before confirms.

Why no Faust agent: the offsets must move only after RabbitMQ confirms a whole
batch, which a plain consumer with manual commits states directly.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

import msgspec
from confluent_kafka import Message
from pika.exceptions import AMQPError
from pika.spec import BasicProperties

from trade_engine import tracing
from trade_engine.config import Settings
from trade_engine.sinks import metrics
from trade_engine.sinks.amqp import ConfirmingPublisher
from trade_engine.sinks.exceptions import SinkError
from trade_engine.sinks.kafka import decode, retrying, sink_consumer, traced_spans
from trade_engine.streams.execution_records import (
    AcceptedExecution,
    ExecutionRecord,
    OrderEndedExecution,
    RejectedExecution,
    TradeExecution,
    TriggeredExecution,
    execution_wire,
    public_trade,
    trade_wire,
)
from trade_engine.streams.runtime import AtLeastOnceWorker

log = logging.getLogger(__name__)

#: What a reconnect and a republish can cure: the publisher's own errors, pika's, the socket's.
_TRANSIENT: tuple[type[BaseException], ...] = (SinkError, AMQPError, OSError)

TRADE, ORDER = "trade", "order"
_ORDER_KINDS = frozenset(
    {"ACCEPTED", "REJECTED", "TRIGGERED", "AMENDED", "ORDER_ENDED", "STP_PREVENTED"}
)

#: The bodies' encoder. For the wire dicts (str, int, bool, None, nested dicts) it gives
#: the bytes of ``streams.executions.dumps`` (compact, UTF-8, keys in order, the same
#: escapes; tests/sinks/test_rabbitmq*.py hold it to that) at a tenth of the CPU.
_encode_body = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Topology:
    prefix: str = ""
    message_ttl_ms: int = 86_400_000

    def name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    @property
    def trade_exchange(self) -> str:
        return self.name("trade.events")

    @property
    def order_exchange(self) -> str:
        return self.name("order.events")

    @property
    def dead_letter_exchange(self) -> str:
        return self.name("dlx")

    @property
    def dead_letter_queue(self) -> str:
        return self.name("dlx.failed")

    @property
    def wallet_queue(self) -> str:
        return self.name("wallet.service.trades")

    @property
    def notification_queue(self) -> str:
        return self.name("notification.service.trades")


async def declare(publisher: ConfirmingPublisher, topology: Topology) -> dict[str, str]:
    """Declare every exchange, queue and binding (idempotent). Returns the two event
    exchanges' names by event kind (TRADE, ORDER)."""
    topic, durable = "topic", True
    for exchange in (
        topology.trade_exchange,
        topology.order_exchange,
        topology.dead_letter_exchange,
    ):
        await publisher.declare_exchange(exchange, topic, durable=durable)
    await publisher.declare_queue(topology.dead_letter_queue, durable=durable)
    await publisher.bind_queue(topology.dead_letter_queue, topology.dead_letter_exchange, "#")
    await publisher.declare_queue(
        topology.wallet_queue,
        durable=durable,
        arguments={
            "x-message-ttl": topology.message_ttl_ms,
            "x-dead-letter-exchange": topology.dead_letter_exchange,
            "x-dead-letter-routing-key": "failed.trades",
        },
    )
    await publisher.declare_queue(
        topology.notification_queue,
        durable=durable,
        arguments={
            "x-dead-letter-exchange": topology.dead_letter_exchange,
            "x-dead-letter-routing-key": "failed.notifications",
        },
    )
    for queue in (topology.wallet_queue, topology.notification_queue):
        await publisher.bind_queue(queue, topology.trade_exchange, "trade.#")
    return {TRADE: topology.trade_exchange, ORDER: topology.order_exchange}


@dataclass(frozen=True, slots=True)
class Event:
    exchange: str  # TRADE or ORDER
    routing_key: str
    message_id: str
    body: bytes
    kind: str

    def properties(self) -> BasicProperties:
        """Persistent, and the same properties aio-pika sent before (an empty ``headers``
        table and ``priority`` 0 included), so consumers see the same messages."""
        return BasicProperties(
            content_type="application/json",
            headers={},
            delivery_mode=2,
            priority=0,
            message_id=self.message_id,
            type=self.kind,
            app_id="trade-engine",
        )


def routing_symbol(symbol: str) -> str:
    """``BTC/USDT`` -> ``BTC-USDT``: one routing-key word, readable in bindings."""
    return symbol.replace("/", "-").replace(".", "_")


def events_for(record: ExecutionRecord) -> list[Event]:
    """The RabbitMQ events of one execution record (pure; ids are deterministic). Bodies are
    the record's wire JSON: a trade as on ``te.trades``, an order event as on
    ``te.executions`` plus ``event_id`` and ``event``."""
    kind = record.kind
    if isinstance(record, TradeExecution):
        body = _encode_body(trade_wire(public_trade(record)))
        return [Event(TRADE, f"trade.{routing_symbol(record.symbol)}", record.trade_id, body, kind)]
    if kind not in _ORDER_KINDS or (isinstance(record, RejectedExecution) and not record.order_id):
        return []
    event: str
    if isinstance(record, AcceptedExecution | OrderEndedExecution):
        event = record.status
    elif isinstance(record, TriggeredExecution):
        event = "OPEN"
    else:
        event = kind
    event_id = f"{record.symbol}:{record.seq}"
    message = {**execution_wire(record), "event_id": event_id, "event": event}
    return [Event(ORDER, f"order.{event}", event_id, _encode_body(message), kind)]


@dataclass
class BridgeStats:
    batches: int = 0
    messages: int = 0
    published: int = 0
    republished_batches: int = 0


class RabbitBridge(AtLeastOnceWorker):
    """Runs on the at-least-once runtime: ``_process`` publishes a batch and waits for every
    confirm; only then does the runtime commit the batch's positions."""

    def __init__(
        self,
        settings: Settings,
        topology: Topology | None = None,
        *,
        topic: str | None = None,
        group_id: str | None = None,
        batch_size: int = 1000,
        poll_timeout_s: float = 0.2,
        confirm_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(
            stage="sink.rabbitmq", batch_size=batch_size, poll_timeout_s=poll_timeout_s
        )
        self.settings = settings
        self.topology = topology or Topology()
        self.topic = topic or settings.topic_names["executions"]
        suffix = f".{self.topology.prefix.rstrip('.')}" if self.topology.prefix else ""
        self.group_id = group_id or f"{settings.topics.prefix}sink.rabbitmq{suffix}"
        self.confirm_timeout_s = confirm_timeout_s
        self.stats = BridgeStats()
        self._publisher: ConfirmingPublisher | None = None
        self._exchanges: dict[str, str] = {}
        self.first_publish_at: float | None = None  # monotonic; for benchmarks
        self.last_confirm_at: float | None = None

    def connection_open(self) -> tuple[bool, str]:
        """Readiness: the AMQP connection and its confirm-mode channel are up."""
        publisher = self._publisher
        if publisher is None:
            return False, "not connected to rabbitmq yet"
        if not publisher.is_open:
            return False, "rabbitmq connection closed; reconnecting"
        return True, "ok"

    async def connect(self) -> None:
        """A new connection and channel, and the topology declared on it (idempotent: after a
        broker restart it is there again even if someone deleted it meanwhile)."""
        publisher = await ConfirmingPublisher.connect(
            self.settings.rabbitmq.url(),
            connection_name="te-sink-rabbitmq",
            timeout_s=self.settings.rabbitmq.connect_timeout_s,
        )
        try:
            self._exchanges = await declare(publisher, self.topology)
        except BaseException:
            await publisher.close()
            raise
        self._publisher = publisher

    async def close(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await publisher.close()

    async def publish(self, events: list[Event]) -> None:
        """Publish every event, then wait for the broker's confirms of all of them; raises
        (``SinkError``) if any is nacked or missing. Connects first if there is no open
        connection; a failed one is dropped, so the next call starts on a fresh channel."""
        publisher = self._publisher
        if publisher is None or not publisher.is_open:
            await self.close()
            await self.connect()
            publisher = self._publisher
            assert publisher is not None
        exchanges, send = self._exchanges, publisher.publish
        try:
            for event in events:
                send(exchanges[event.exchange], event.routing_key, event.body, event.properties())
            await publisher.wait_for_confirms(self.confirm_timeout_s)
        except BaseException:
            # Whatever went wrong, this channel's tags no longer say which of this batch
            # the broker holds: drop it, and let the retry republish the whole batch.
            await self.close()
            raise

    async def _publish_until_confirmed(self, events: list[Event]) -> None:
        attempts = 0

        async def attempt() -> None:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                self.stats.republished_batches += 1
            await self.publish(events)

        # A nack, a closed channel, a broker restart or a confirm timeout: reconnect with
        # backoff and send the whole batch again (consumers deduplicate on message_id).
        await retrying(attempt, _TRANSIENT, "publishing to rabbitmq", max_delay_s=3.0)

    async def run(self, exit_when_idle_s: float | None = None) -> BridgeStats:
        await retrying(self.connect, _TRANSIENT, "connecting to rabbitmq", max_delay_s=3.0)
        self.consumer = sink_consumer(self.settings, self.group_id)
        try:
            self.subscribe([self.topic])
            await self.run_batches(self._process, max_idle_s=exit_when_idle_s)
        finally:
            await self.close_consumer()
            await self.close()
        return self.stats

    async def _process(self, messages: list[Message]) -> bool:
        """Publish the batch's events and wait for every confirm. True: commit its positions
        (a commit that fails is logged: the partitions' new owner republishes, deduplicated)."""
        events: list[Event] = []
        for msg in messages:
            decoded = decode(msg)
            if decoded is not None:
                events.extend(events_for(decoded))
        started = time.perf_counter()
        if self.first_publish_at is None:
            self.first_publish_at = time.monotonic()
        spans = traced_spans("sink.rabbitmq.publish", messages)
        if events:
            await self._publish_until_confirmed(events)
        tracing.finish(spans)
        self.last_confirm_at = time.monotonic()
        metrics.BATCH_SECONDS.labels("rabbitmq").observe(time.perf_counter() - started)
        for exchange, published in Counter(event.exchange for event in events).items():
            metrics.PUBLISHED.labels(exchange).inc(published)
        self.stats.batches += 1
        self.stats.messages += len(messages)
        self.stats.published += len(events)
        metrics.MESSAGES.labels("rabbitmq").inc(len(messages))
        return True
