"""The local stack is real: a Kafka broker with transactions, PostgreSQL, RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import aio_pika
import aiormq.abc
import asyncpg
import pytest
from confluent_kafka import Consumer, Producer

from trade_engine.config import Settings


def _read_all(conf: dict[str, object], topic: str, isolation: str, expect: int) -> list[bytes]:
    consumer = Consumer(
        {
            **conf,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    idle_polls = 0
    try:
        # Read until `expect` records arrived and then a few idle polls more, so
        # records that should not be visible had their chance to show up.
        while idle_polls < 6:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                if len(values) >= expect:
                    idle_polls += 1
                continue
            value = msg.value()
            assert value is not None
            values.append(value)
    finally:
        consumer.close()
    return values


@pytest.mark.broker
def test_transactions_hide_aborted_records_from_read_committed(
    kafka_conf: dict[str, object], new_topic: Callable[..., str]
) -> None:
    topic = new_topic(partitions=1)
    producer = Producer({**kafka_conf, "transactional.id": f"test-{uuid.uuid4().hex}"})
    producer.init_transactions(30)

    producer.begin_transaction()
    producer.produce(topic, key=b"BTC/USDT", value=b"aborted")
    producer.flush()
    producer.abort_transaction(30)

    producer.begin_transaction()
    producer.produce(topic, key=b"BTC/USDT", value=b"committed")
    producer.commit_transaction(30)

    assert _read_all(kafka_conf, topic, "read_committed", expect=1) == [b"committed"]
    # The aborted record is in the log: an uncommitted reader sees both.
    assert _read_all(kafka_conf, topic, "read_uncommitted", expect=2) == [
        b"aborted",
        b"committed",
    ]


@pytest.mark.postgres
def test_asyncpg_round_trip(settings: Settings) -> None:
    async def round_trip() -> list[tuple[int, str]]:
        conn = await asyncpg.connect(settings.postgres.dsn())
        try:
            await conn.execute("CREATE TEMP TABLE probe (id int PRIMARY KEY, price numeric)")
            await conn.executemany(
                "INSERT INTO probe VALUES ($1, $2::numeric)", [(1, "50000.10"), (2, "0.00000001")]
            )
            rows = await conn.fetch("SELECT id, price::text FROM probe ORDER BY id")
            return [(row["id"], row["price"]) for row in rows]
        finally:
            await conn.close()

    assert asyncio.run(round_trip()) == [(1, "50000.10"), (2, "0.00000001")]


@pytest.mark.rabbitmq
def test_rabbitmq_publish_with_confirms_and_consume(settings: Settings) -> None:
    async def round_trip() -> tuple[bytes, str | None]:
        connection = await aio_pika.connect(settings.rabbitmq.url())
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            queue = await channel.declare_queue(f"test.{uuid.uuid4().hex}", auto_delete=True)
            # With publisher confirms on, publish() returns only once the broker acked.
            confirmation = await channel.default_exchange.publish(
                aio_pika.Message(b'{"trade_id":"BTC/USDT:1"}', message_id="BTC/USDT:1"),
                routing_key=queue.name,
            )
            assert isinstance(confirmation, aiormq.abc.ConfirmationFrameType)
            message = await queue.get(timeout=10)
            await message.ack()
            return message.body, message.message_id

    body, message_id = asyncio.run(round_trip())
    assert body == b'{"trade_id":"BTC/USDT:1"}'
    assert message_id == "BTC/USDT:1"
