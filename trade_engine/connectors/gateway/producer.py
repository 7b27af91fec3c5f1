"""The gateway's producer: commands to ``te.commands``, awaited until durable.

Configured like every producer outside Faust (``streams.clients.producer``):
``partitioner=murmur2_random`` (a symbol lands where Java clients and Faust put
it), ``enable.idempotence=true`` and ``acks=all`` (no duplicate or reordered
command from librdkafka's retries). ``send`` returns once the broker
acknowledged the message: that is when the gateway answers 201. A short
``linger.ms`` batches concurrent requests without adding much latency.

confluent-kafka is synchronous: delivery reports are served by one thread
polling the producer. They are queued and handed to the event loop once per
poll, not once per message: each hand-over writes to the loop's self-pipe, and
at a few thousand orders per second those wake-ups were a tenth of the CPU.

A delivery that was not acknowledged in time has an unknown outcome: the broker
may hold the command and commit it later (a leader whose followers are back),
so the refusal says so instead of "not placed". ``health`` (``write_health``)
follows every outcome: ``/health/ready`` and each refusal say why writes fail.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque

from confluent_kafka import KafkaError, KafkaException, Message

from trade_engine.config import Settings
from trade_engine.connectors.gateway import metrics
from trade_engine.connectors.gateway.exceptions import UnavailableError
from trade_engine.connectors.gateway.write_health import WriteHealth
from trade_engine.connectors.producer import Delivery
from trade_engine.streams import clients, codec
from trade_engine.streams.command_builders import CommandModel

log = logging.getLogger(__name__)


class CommandProducer:
    def __init__(self, settings: Settings, *, topic: str | None = None) -> None:
        gateway = settings.gateway
        self.topic = topic or settings.topic_names["commands"]
        self._timeout_s = gateway.delivery_timeout_s
        self.health = WriteHealth()
        self._producer = clients.producer(
            settings,
            **{
                "linger.ms": gateway.producer_linger_ms,
                "compression.type": "lz4",
                "delivery.timeout.ms": int(gateway.delivery_timeout_s * 1000),
                "socket.nagle.disable": True,
                "logger": log,
            },
        )
        # (future, error, message) of served delivery reports, drained on the loop.
        self._reports: deque[tuple[asyncio.Future[Delivery], KafkaError | None, Message]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="gateway-producer", daemon=True)
        self._thread.start()

    async def send(self, command: CommandModel, trace_id: str | None = None) -> Delivery:
        """Produce one command; returns where it landed once the broker acknowledged it."""
        loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivery] = loop.create_future()
        started = time.perf_counter()

        def report(err: KafkaError | None, msg: Message) -> None:
            self._reports.append((future, err, msg))  # in the polling thread

        try:
            self._producer.produce(
                self.topic,
                codec.encode(command),
                command.symbol.encode(),
                headers=codec.new_headers(trace_id),
                on_delivery=report,
            )
        except BufferError:
            raise UnavailableError(
                "the gateway's produce queue is full", code="KAFKA_BACKPRESSURE"
            ) from None
        except KafkaException as exc:
            raise UnavailableError(f"cannot produce: {exc}", code="KAFKA_UNAVAILABLE") from None
        try:
            delivery = await asyncio.wait_for(future, self._timeout_s + 1.0)
        except TimeoutError:
            self.health.failed("no delivery report in time")
            raise self.unacknowledged("_TIMED_OUT") from None
        metrics.PRODUCE_SECONDS.observe(time.perf_counter() - started)
        return delivery

    def unacknowledged(self, kafka_code: str) -> UnavailableError:
        """The refusal of a command whose fate is unknown: not acknowledged in time."""
        return UnavailableError(
            f"Kafka did not acknowledge the order within {self._timeout_s:g} s; it may still "
            "be placed: look it up (by client_order_id) before placing it again",
            {"kafka_code": kafka_code, "outcome": "unknown", "reason": self.health.reason()},
            code="KAFKA_UNAVAILABLE",
        )

    async def ping(self, timeout_s: float = 2.0) -> None:
        """Raises while writes fail (``health``), or when the broker cannot describe the
        command topic within ``timeout_s``."""
        reason = self.health.reason()
        if reason is not None:
            raise UnavailableError(reason, code="KAFKA_UNAVAILABLE")
        loop = asyncio.get_running_loop()
        meta = await loop.run_in_executor(
            None, lambda: self._producer.list_topics(self.topic, timeout=timeout_s)
        )
        topic = meta.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise KafkaException(f"topic {self.topic} unavailable")

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        remaining = await loop.run_in_executor(None, self._producer.flush, self._timeout_s)
        if remaining:
            log.warning("gateway producer closed with %d unacknowledged message(s)", remaining)
        self._stop.set()
        await loop.run_in_executor(None, self._thread.join, 2.0)
        self._drain()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)
            loop = self._loop
            if self._reports and loop is not None:
                try:
                    loop.call_soon_threadsafe(self._drain)
                except RuntimeError:  # the loop closed under us: nobody is waiting
                    return

    def _drain(self) -> None:
        """On the event loop: settle every queued delivery report (deque ops are thread-safe)."""
        reports = self._reports
        while reports:
            self._resolve(*reports.popleft())

    def _resolve(
        self, future: asyncio.Future[Delivery], err: KafkaError | None, msg: Message
    ) -> None:
        if err is None:
            self.health.succeeded()
        else:
            self.health.failed(f"{err.name()}: {err.str()}")
        if future.done():  # the request gave up waiting
            return
        if err is None:
            future.set_result(_delivery(msg))
        elif err.code() in _UNKNOWN_OUTCOME:
            future.set_exception(self.unacknowledged(err.name()))
        else:
            future.set_exception(
                UnavailableError(
                    f"Kafka refused the order, it was not placed: {err.str()}",
                    {"kafka_code": err.name(), "outcome": "not_placed"},
                    code="KAFKA_UNAVAILABLE",
                )
            )


# Errors after which the broker may still hold (and later commit) the command.
_UNKNOWN_OUTCOME = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._PURGE_INFLIGHT,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    }
)


def _delivery(msg: Message) -> Delivery:
    key = msg.key()
    return Delivery(
        topic=msg.topic() or "",
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        key=key.decode() if isinstance(key, bytes) else str(key),
    )
