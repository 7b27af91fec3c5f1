"""The producer SDK against the real broker: keys, partitions (Java murmur2), payloads."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from decimal import Decimal

import pytest
from confluent_kafka import Message

from trade_engine.config import MarketSettings, Settings
from trade_engine.connectors.exceptions import (
    DeliveryTimeoutError,
    InvalidCommandError,
    ProduceError,
)
from trade_engine.connectors.loadgen import generate
from trade_engine.connectors.producer import (
    Delivery,
    OrderProducer,
    build_cancel,
    build_place,
    new_order_id,
    validate_command,
)
from trade_engine.errors import TradeEngineError
from trade_engine.streams import codec
from trade_engine.streams.commands import CancelOrder, PlaceOrder, TimeTick
from trade_engine.streams.partitioning import murmur2, partition_for

SYMBOLS = MarketSettings().symbols


def java_partition(key: bytes, partitions: int) -> int:
    """``Utils.toPositive(Utils.murmur2(key)) % numPartitions`` of Kafka's default partitioner."""
    return partition_for(key, partitions)


def _signed(value: int) -> int:
    return value - (1 << 32) if value & 0x80000000 else value


@pytest.mark.parametrize(
    ("text", "expected"),
    # Kafka's UtilsTest.testMurmur2 vectors.
    [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_reference_murmur2_matches_kafka(text: bytes, expected: int) -> None:
    assert _signed(murmur2(text)) == expected


@pytest.mark.broker
def test_keys_land_in_the_java_partition(
    settings: Settings, new_topic: Callable[..., str], read_topic: Callable[..., list[Message]]
) -> None:
    partitions = 7
    topic = new_topic("sdk", partitions=partitions)
    commands = generate(400, 42, SYMBOLS, 20)
    deliveries: list[Delivery] = []
    with OrderProducer(settings, topic=topic, on_delivery=deliveries.append) as producer:
        for command in commands:
            assert producer.send(command) == command
    assert producer.delivered == len(commands) == len(deliveries)

    messages = read_topic(topic, len(commands))
    partition_of: dict[str, set[int]] = {}
    by_partition: dict[int, list[Message]] = {}
    for msg in messages:
        key = msg.key()
        assert key is not None
        partition_of.setdefault(key.decode(), set()).add(msg.partition() or 0)
        by_partition.setdefault(msg.partition() or 0, []).append(msg)
        assert codec.header(msg.headers(), "v") == "1"
        assert codec.header(msg.headers(), "trace_id")
    # Each symbol's messages all in one partition: Kafka's murmur2 partition of the key.
    for symbol, parts in partition_of.items():
        assert parts == {java_partition(symbol.encode(), partitions)}, symbol
    assert set(partition_of) == {s.symbol for s in SYMBOLS}
    # librdkafka's default (CRC32) would put some of these keys elsewhere.
    assert any(
        zlib.crc32(s.encode()) % partitions != java_partition(s.encode(), partitions)
        for s in partition_of
    )
    # Decoded equal and, per symbol, in the order sent.
    received: dict[str, list[object]] = {}
    for part in sorted(by_partition):
        for msg in sorted(by_partition[part], key=lambda m: m.offset() or 0):
            command = codec.decode_command(msg.value())
            assert msg.key() == command.symbol.encode()
            received.setdefault(command.symbol, []).append(command)
    for symbol, got in received.items():
        assert got == [c for c in commands if c.symbol == symbol]


@pytest.mark.broker
def test_convenience_methods_round_trip(
    settings: Settings, new_topic: Callable[..., str], read_topic: Callable[..., list[Message]]
) -> None:
    topic = new_topic("sdk", partitions=3)
    with OrderProducer(settings, topic=topic, compression="zstd") as producer:
        order = producer.place(
            symbol="BTC/USDT",
            side="BUY",
            type="LIMIT",
            quantity=Decimal("0.5"),
            price="50000.00",
            user_id="u1",
            client_order_id="c-1",
            trace_id="trace-abc",
        )
        market = producer.place(
            symbol="BTC/USDT", side="BUY", type="MARKET", quote_quantity="100", user_id="u2"
        )
        producer.amend(symbol="BTC/USDT", user_id="u1", order_id=order.order_id, quantity="0.4")
        producer.cancel(symbol="BTC/USDT", user_id="u1", client_order_id="c-1")
        producer.mass_cancel(symbol="BTC/USDT", user_id="u1", side="SELL")
        producer.symbol_admin(symbol="BTC/USDT", trading_state="HALT")
        producer.time_tick(symbol="BTC/USDT", now="2030-01-01T00:00:00Z")
        delivery = producer.send_and_wait(
            {"cmd": "symbol_admin", "symbol": "BTC/USDT", "trading_state": "TRADING"}
        )
    assert delivery.topic == topic
    assert delivery.key == "BTC/USDT"
    assert delivery.partition == java_partition(b"BTC/USDT", 3)
    assert len(order.order_id) == 26
    assert order.quantity == "0.5"
    assert market.time_in_force.value == "IOC"

    messages = sorted(read_topic(topic, 8), key=lambda m: m.offset() or 0)
    decoded = [codec.decode_command(m.value()) for m in messages]
    assert [c.cmd for c in decoded] == [
        "place",
        "place",
        "amend",
        "cancel",
        "mass_cancel",
        "symbol_admin",
        "time_tick",
        "symbol_admin",
    ]
    assert decoded[0] == order
    assert codec.header(messages[0].headers(), "trace_id") == "trace-abc"
    assert isinstance(decoded[6], TimeTick)
    assert delivery.offset == messages[-1].offset()


def test_invalid_commands_are_typed_errors_naming_the_field() -> None:
    with pytest.raises(InvalidCommandError, match=r"^quantity: .*'1e5'") as info:
        build_place(symbol="BTC/USDT", side="BUY", user_id="u1", quantity="1e5", price="1")
    assert info.value.field == "quantity"
    assert isinstance(info.value, TradeEngineError)
    with pytest.raises(InvalidCommandError, match="side"):
        build_place(symbol="BTC/USDT", side="UP", user_id="u1", quantity="1", price="1")
    with pytest.raises(InvalidCommandError, match="not float"):
        build_place(symbol="BTC/USDT", side="BUY", user_id="u1", quantity=0.5, price="1")  # type: ignore[arg-type]
    with pytest.raises(InvalidCommandError, match="exactly one"):
        build_cancel(symbol="BTC/USDT", user_id="u1")
    with pytest.raises(InvalidCommandError, match=r"^price: "):
        validate_command(
            {
                "cmd": "place",
                "symbol": "BTC/USDT",
                "order_id": "o",
                "user_id": "u",
                "side": "BUY",
                "type": "LIMIT",
                "price": "-1",
                "quantity": "1",
            }
        )
    # A model built without validation is validated again before it is sent.
    bad = CancelOrder.model_construct(symbol="btc-usdt", user_id="u1", order_id="o1")
    with pytest.raises(InvalidCommandError, match="symbol"):
        validate_command(bad)
    with pytest.raises(InvalidCommandError, match="not a command"):
        validate_command(42)  # type: ignore[arg-type]


def test_order_ids_are_unique_and_sortable() -> None:
    ids = [new_order_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == 26 for i in ids)
    assert ids[0][:9] <= ids[-1][:9]
    assert isinstance(
        build_place(symbol="BTC/USDT", side="SELL", user_id="u", quantity="1", price="2"),
        PlaceOrder,
    )


@pytest.mark.broker
def test_invalid_command_sends_nothing(settings: Settings, new_topic: Callable[..., str]) -> None:
    topic = new_topic("sdk", partitions=1)
    with OrderProducer(settings, topic=topic) as producer:
        with pytest.raises(InvalidCommandError):
            producer.place(symbol="BTC/USDT", side="BUY", user_id="u1", quantity="-1", price="1")
        assert producer.sent == 0


@pytest.mark.broker
def test_delivery_failure_raises_produce_error(settings: Settings) -> None:
    # Auto-create is off: a missing topic fails delivery, and that surfaces as an exception.
    producer = OrderProducer(settings, topic="test.missing.topic.x", delivery_timeout_s=3.0)
    producer.place(symbol="BTC/USDT", side="BUY", user_id="u1", quantity="1", price="1.00")
    with pytest.raises(ProduceError) as info:
        producer.flush(10)
    assert info.value.kafka_code is not None
    producer.flush(1)  # the error was reported once; nothing is left


@pytest.mark.broker
def test_flush_times_out_when_the_broker_is_unreachable(settings: Settings) -> None:
    producer = OrderProducer(
        settings,
        topic="te.commands",
        delivery_timeout_s=30.0,
        config={"bootstrap.servers": "127.0.0.1:1"},
    )
    producer.place(symbol="BTC/USDT", side="BUY", user_id="u1", quantity="1", price="1.00")
    assert len(producer) >= 1  # the message, plus any librdkafka event queued meanwhile
    with pytest.raises(DeliveryTimeoutError):
        producer.flush(0.5)
    with pytest.raises(ProduceError):
        producer.send_and_wait(
            build_place(symbol="BTC/USDT", side="BUY", user_id="u1", quantity="1", price="1"),
            timeout=0.5,
        )
