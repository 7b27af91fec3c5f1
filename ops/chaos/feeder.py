"""The load of a chaos scenario: pre-encoded seeded commands at a steady rate.

The commands are the load generator's (``connectors.loadgen``), published to
``te.commands`` with the engine's producer settings (idempotent, ``acks=all``,
murmur2 partitioner) from a thread, in 5 ms ticks. The feeder is not a stage under
test: it always uses the direct listener. What it had acknowledged is what the
checks expect the pipeline to have answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, Producer

from trade_engine.config import Settings
from trade_engine.connectors.loadgen import generate
from trade_engine.streams.codec import encode
from trade_engine.streams.commands import PlaceOrder

TICK_S = 0.005


@dataclass
class Feeder:
    settings: Settings
    orders: int
    rate: float
    seed: int
    users: int
    id_prefix: str
    items: list[tuple[bytes, bytes]] = field(default_factory=list)
    places: list[str] = field(default_factory=list)
    sent: int = 0
    acked: int = 0
    errors: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _acked_places: set[str] = field(default_factory=set)
    _place_of: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        commands = generate(
            self.orders,
            self.seed,
            self.settings.market.symbols,
            users=self.users,
            id_prefix=self.id_prefix,
        )
        for index, command in enumerate(commands):
            self.items.append((command.symbol.encode(), encode(command)))
            if isinstance(command, PlaceOrder):
                self._place_of[index] = command.order_id

    @property
    def acked_places(self) -> set[str]:
        """Place order ids the broker acknowledged: each must get an answer."""
        return set(self._acked_places)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(120)

    def _run(self) -> None:
        producer = Producer(
            {
                **self.settings.kafka.librdkafka(),
                "partitioner": "murmur2_random",
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                # Ride out a leader election or a rolling restart instead of failing.
                "message.timeout.ms": 300_000,
            }
        )
        topic = self.settings.topic_names["commands"]
        started = time.monotonic()
        try:
            while self.sent < len(self.items) and not self._stop.is_set():
                due = min(len(self.items), int((time.monotonic() - started) * self.rate) + 1)
                while self.sent < due:
                    key, value = self.items[self.sent]
                    try:
                        producer.produce(
                            topic, key=key, value=value, on_delivery=self._callback(self.sent)
                        )
                    except BufferError:
                        producer.poll(0.01)
                        continue
                    self.sent += 1
                producer.poll(0)
                time.sleep(TICK_S)
            left = producer.flush(300)
            if left:
                self.errors.append(f"{left} commands not acknowledged after 300 s")
        finally:
            self.done.set()

    def _callback(self, index: int) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            self._delivered(err, index)

        return on_delivery

    def _delivered(self, err: KafkaError | None, index: int) -> None:
        if err is not None:
            self.errors.append(str(err))
            return
        self.acked += 1
        order_id = self._place_of.get(index)
        if order_id is not None:
            self._acked_places.add(order_id)
