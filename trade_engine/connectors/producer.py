"""Producer SDK: send commands to the engine's command topic.

``OrderProducer`` wraps a confluent-kafka ``Producer`` configured the way the
design asks of every producer outside Faust (``streams.clients.producer``):

- ``partitioner=murmur2_random``: a key lands in the partition that Java
  clients and Faust pick for it (librdkafka's default, CRC32, does not);
- ``enable.idempotence=true`` and ``acks=all``: no duplicates or reordering
  from retries within a partition;
- key = symbol, value = the command's JSON (``streams.codec.encode``), headers
  ``v`` and ``trace_id`` (``streams.codec.new_headers``).

Sending is asynchronous. A failed delivery is raised as ``ProduceError`` by the
next ``send``/``poll``/``flush``; ``send_and_wait`` blocks for one message and
returns where it landed. Used by the gateway, the CLI and the load generator::

    with OrderProducer(settings) as producer:
        order = producer.place(symbol="BTC/USDT", side="BUY", type="LIMIT",
                               quantity="0.5", price="50000.00", user_id="u1")
    # leaving the block flushes; a delivery failure raises ProduceError

The command builders (``build_place``, ..., ``validate_command``,
``new_order_id``) belong to the ``te.commands`` contract and live in
``streams.command_builders``; this module re-exports them as the SDK's API.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self

from confluent_kafka import KafkaError, KafkaException, Message

from trade_engine.config import Settings
from trade_engine.connectors.exceptions import DeliveryTimeoutError, ProduceError
from trade_engine.streams import clients, codec

# The builders belong to the te.commands contract; the SDK's API re-exports them.
from trade_engine.streams.command_builders import (
    COMMAND_TYPES,
    Amount,
    CommandModel,
    build_amend,
    build_cancel,
    build_mass_cancel,
    build_place,
    build_symbol_admin,
    build_time_tick,
    new_order_id,
    validate_command,
)
from trade_engine.streams.commands import (
    AmendOrder,
    CancelOrder,
    MassCancel,
    PlaceOrder,
    SymbolAdmin,
    TimeTick,
)
from trade_engine.tables.matching.enums import (
    OrderType,
    Side,
    StpMode,
    TimeInForce,
    TradingState,
)

__all__ = [
    "Amount",
    "CommandModel",
    "Compression",
    "Delivery",
    "OrderProducer",
    "build_amend",
    "build_cancel",
    "build_mass_cancel",
    "build_place",
    "build_symbol_admin",
    "build_time_tick",
    "new_order_id",
    "validate_command",
]

log = logging.getLogger(__name__)

Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where the broker stored a message."""

    topic: str
    partition: int
    offset: int
    key: str


class OrderProducer:
    """Sends engine commands to a topic keyed by symbol. A context manager; not fork-safe.

    ``topic`` defaults to ``settings.topic_names["commands"]`` (``te.commands``);
    tests that bypass the risk stage point it at ``te.commands.accepted``.
    ``validate=False`` trusts command models as built (the load generator's
    hot path); mappings are always validated. ``on_delivery`` is called from
    ``poll``/``flush`` for each acknowledged message. ``config`` overrides or
    extends the librdkafka settings.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        topic: str | None = None,
        compression: Compression = "lz4",
        linger_ms: float = 5.0,
        batch_size: int = 1_000_000,
        delivery_timeout_s: float = 30.0,
        validate: bool = True,
        on_delivery: Callable[[Delivery], None] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.topic = topic or settings.topic_names["commands"]
        self.delivery_timeout_s = delivery_timeout_s
        self._validate = validate
        self._on_delivery_cb = on_delivery
        self._lock = threading.Lock()
        self._error: ProduceError | None = None
        self._failures = 0
        self.delivered = 0
        self.sent = 0
        overrides: dict[str, Any] = {
            "linger.ms": linger_ms,
            "batch.size": batch_size,
            "compression.type": compression,
            "delivery.timeout.ms": int(delivery_timeout_s * 1000),
            "queue.buffering.max.messages": 200_000,
            "error_cb": self._on_error,
            "logger": log,
            **(config or {}),
        }
        conf = clients.producer_conf(settings, **overrides)
        self.config = {
            k: v for k, v in conf.items() if k not in ("error_cb", "logger", "sasl.password")
        }
        try:
            self._producer = clients.producer(settings, **overrides)
        except KafkaException as exc:
            raise ProduceError(f"cannot create producer: {exc}", retriable=False) from exc

    # -- context manager -------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.flush()
            return
        try:  # already failing: deliver what we can, but keep the original error
            self.flush()
        except ProduceError as flush_exc:
            log.warning("flush after error failed: %s", flush_exc)

    # -- sending ---------------------------------------------------------------

    def send(
        self,
        command: CommandModel | Mapping[str, Any],
        *,
        trace_id: str | None = None,
        topic: str | None = None,
    ) -> CommandModel:
        """Validate, encode and enqueue one command; returns the command as sent.

        Raises ``InvalidCommandError`` (nothing sent) or ``ProduceError`` for this
        message or an earlier one whose delivery failed.
        """
        self._raise_pending()
        model = self._check(command)
        self._produce(model, trace_id, topic or self.topic, None)
        return model

    def send_and_wait(
        self,
        command: CommandModel | Mapping[str, Any],
        *,
        trace_id: str | None = None,
        topic: str | None = None,
        timeout: float | None = None,
    ) -> Delivery:
        """Send one command and block until the broker acknowledged it."""
        self._raise_pending()
        model = self._check(command)
        box: list[Delivery | ProduceError] = []
        self._produce(model, trace_id, topic or self.topic, box)
        deadline = time.monotonic() + (self.delivery_timeout_s if timeout is None else timeout)
        while not box:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeliveryTimeoutError(
                    f"no acknowledgement for {model.cmd} on {model.symbol} in time"
                )
            self._producer.poll(min(left, 0.1))
        result = box[0]
        if isinstance(result, ProduceError):
            raise result
        return result

    def place(
        self,
        *,
        symbol: str,
        side: Side | str,
        user_id: str,
        type: OrderType | str = OrderType.LIMIT,
        quantity: Amount | None = None,
        price: Amount | None = None,
        time_in_force: TimeInForce | str | None = None,
        order_id: str | None = None,
        client_order_id: str | None = None,
        stop_price: Amount | None = None,
        quote_quantity: Amount | None = None,
        post_only: bool = False,
        stp_mode: StpMode | str = StpMode.NONE,
        expire_at: datetime | str | None = None,
        ts: datetime | None = None,
        trace_id: str | None = None,
    ) -> PlaceOrder:
        """Place an order; returns the ``PlaceOrder`` sent (its ``order_id`` is the handle)."""
        command = build_place(
            symbol=symbol,
            side=side,
            user_id=user_id,
            type=type,
            quantity=quantity,
            price=price,
            time_in_force=time_in_force,
            order_id=order_id,
            client_order_id=client_order_id,
            stop_price=stop_price,
            quote_quantity=quote_quantity,
            post_only=post_only,
            stp_mode=stp_mode,
            expire_at=expire_at,
            ts=ts,
        )
        self._send_built(command, trace_id)
        return command

    def cancel(
        self,
        *,
        symbol: str,
        user_id: str,
        order_id: str | None = None,
        client_order_id: str | None = None,
        trace_id: str | None = None,
    ) -> CancelOrder:
        command = build_cancel(
            symbol=symbol, user_id=user_id, order_id=order_id, client_order_id=client_order_id
        )
        self._send_built(command, trace_id)
        return command

    def amend(
        self,
        *,
        symbol: str,
        user_id: str,
        order_id: str,
        quantity: Amount | None = None,
        price: Amount | None = None,
        trace_id: str | None = None,
    ) -> AmendOrder:
        command = build_amend(
            symbol=symbol, user_id=user_id, order_id=order_id, quantity=quantity, price=price
        )
        self._send_built(command, trace_id)
        return command

    def mass_cancel(
        self,
        *,
        symbol: str,
        user_id: str,
        side: Side | str | None = None,
        trace_id: str | None = None,
    ) -> MassCancel:
        command = build_mass_cancel(symbol=symbol, user_id=user_id, side=side)
        self._send_built(command, trace_id)
        return command

    def symbol_admin(
        self,
        *,
        symbol: str,
        trading_state: TradingState | str,
        reference_price: Amount | None = None,
        trace_id: str | None = None,
    ) -> SymbolAdmin:
        command = build_symbol_admin(
            symbol=symbol, trading_state=trading_state, reference_price=reference_price
        )
        self._send_built(command, trace_id)
        return command

    def time_tick(
        self, *, symbol: str, now: datetime | str | None = None, trace_id: str | None = None
    ) -> TimeTick:
        command = build_time_tick(symbol=symbol, now=now)
        self._send_built(command, trace_id)
        return command

    # -- delivery --------------------------------------------------------------

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports; raises ``ProduceError`` if a delivery failed."""
        served: int = self._producer.poll(timeout)
        self._raise_pending()
        return served

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every enqueued message is acknowledged.

        Raises ``ProduceError`` if any delivery failed, ``DeliveryTimeoutError``
        if messages are still in flight after ``timeout`` seconds (default: the
        delivery timeout plus a margin).
        """
        limit = self.delivery_timeout_s + 5.0 if timeout is None else timeout
        remaining: int = self._producer.flush(limit)
        self._raise_pending()
        if remaining:
            raise DeliveryTimeoutError(
                f"{remaining} message(s) to {self.topic} not acknowledged within {limit:g}s"
            )

    def __len__(self) -> int:
        """Messages enqueued and not yet acknowledged."""
        return len(self._producer)

    # -- internals -------------------------------------------------------------

    def _check(self, command: CommandModel | Mapping[str, Any]) -> CommandModel:
        if not self._validate and isinstance(command, COMMAND_TYPES):
            return command
        return validate_command(command)

    def _send_built(self, command: CommandModel, trace_id: str | None) -> None:
        self._raise_pending()
        self._produce(command, trace_id, self.topic, None)

    def _produce(
        self,
        model: CommandModel,
        trace_id: str | None,
        topic: str,
        box: list[Delivery | ProduceError] | None,
    ) -> None:
        value = codec.encode(model)
        key = model.symbol.encode()
        headers = codec.new_headers(trace_id)

        def report(err: KafkaError | None, msg: Message) -> None:
            self._on_delivery(err, msg, box)

        deadline: float | None = None
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers, on_delivery=report)
                break
            except BufferError:
                # The local queue is full: serve delivery reports until there is room.
                now = time.monotonic()
                deadline = deadline or now + self.delivery_timeout_s
                if now >= deadline:
                    raise DeliveryTimeoutError(
                        f"producer queue full for {self.delivery_timeout_s:g}s"
                    ) from None
                self._producer.poll(0.05)
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                name = err.name() if isinstance(err, KafkaError) else None
                raise ProduceError(f"cannot produce to {topic}: {exc}", kafka_code=name) from exc
        self.sent += 1
        self._producer.poll(0)

    def _on_delivery(
        self, err: KafkaError | None, msg: Message, box: list[Delivery | ProduceError] | None
    ) -> None:
        if err is not None:
            error = ProduceError(
                f"delivery to {msg.topic()} failed: {err.str()} ({err.name()})",
                kafka_code=err.name(),
                retriable=bool(err.retriable()),
            )
            if box is not None:
                box.append(error)
                return
            with self._lock:
                self._failures += 1
                if self._error is None:
                    self._error = error
            return
        key = msg.key()
        partition, offset = msg.partition(), msg.offset()
        delivery = Delivery(
            topic=msg.topic() or "",
            partition=-1 if partition is None else partition,
            offset=-1 if offset is None else offset,
            key=key.decode() if isinstance(key, bytes) else str(key),
        )
        self.delivered += 1
        if box is not None:
            box.append(delivery)
        if self._on_delivery_cb is not None:
            self._on_delivery_cb(delivery)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            with self._lock:
                self._error = ProduceError(
                    f"fatal producer error: {err.str()} ({err.name()})",
                    kafka_code=err.name(),
                    retriable=False,
                )
        else:
            log.warning("kafka producer: %s (%s)", err.str(), err.name())

    def _raise_pending(self) -> None:
        if self._error is None:
            return
        with self._lock:
            error, failures = self._error, self._failures
            self._error, self._failures = None, 0
        if error is not None:
            if failures > 1:
                error.args = (f"{error.args[0]} (and {failures - 1} more failed)",)
            raise error
