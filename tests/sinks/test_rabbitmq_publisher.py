"""The confirming publisher and the bridge's batch guarantee, on the real RabbitMQ: a batch is
committed to Kafka only once the broker confirmed all of it; a nack or a closed channel fails
it and the whole batch is published again."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from types import SimpleNamespace
from typing import Any

import aio_pika
import aiormq
import pytest
from confluent_kafka import Message
from hypothesis import given
from hypothesis import strategies as st
from pika import BasicProperties
from pika.spec import Basic

from trade_engine.config import Settings
from trade_engine.sinks import rabbitmq
from trade_engine.sinks.amqp import ConfirmingPublisher
from trade_engine.sinks.exceptions import AmqpConnectionError, PublishNackedError
from trade_engine.sinks.rabbitmq import RabbitBridge, Topology, events_for
from trade_engine.streams.executions import dumps

PERSISTENT = BasicProperties(delivery_mode=2)


# ------------------------------------------------------------ the body encoder


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.text(),
    lambda inner: st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(), _json_values, max_size=8))
def test_body_encoder_gives_the_bytes_of_dumps(message: dict[str, Any]) -> None:
    # Any text (controls, quotes, backslashes, non-ASCII, U+2028) and nesting: same bytes.
    assert rabbitmq._encode_body(message) == dumps(message)


# ------------------------------------------------------------ confirm bookkeeping (pure)


class _Channel:
    is_open = True

    def basic_publish(self, *args: object, **kwargs: object) -> None:
        pass


def _frame(method: Any) -> SimpleNamespace:
    return SimpleNamespace(method=method)


async def _offline_publisher(published: int) -> ConfirmingPublisher:
    closed = asyncio.get_running_loop().create_future()
    publisher = ConfirmingPublisher(connection=SimpleNamespace(), closed=closed)  # type: ignore[arg-type]
    publisher._channel = _Channel()  # type: ignore[assignment]
    for _ in range(published):
        publisher.publish("x", "k", b"{}", PERSISTENT)
    return publisher


async def test_wait_needs_every_tag_acked_in_any_order_and_multiple() -> None:
    publisher = await _offline_publisher(6)
    waiter = asyncio.create_task(publisher.wait_for_confirms(5))
    for tag, multiple in ((2, True), (5, False), (4, False), (1, False)):
        publisher._on_confirm(_frame(Basic.Ack(delivery_tag=tag, multiple=multiple)))
        await asyncio.sleep(0)
        assert not waiter.done(), f"after ack {tag}: 3 and 6 are not confirmed yet"
    publisher._on_confirm(_frame(Basic.Ack(delivery_tag=3)))
    await asyncio.sleep(0)
    assert not waiter.done(), "6 is not confirmed yet"
    publisher._on_confirm(_frame(Basic.Ack(delivery_tag=6)))
    await asyncio.wait_for(waiter, 1)
    # The next batch: one multiple ack covers it.
    for _ in range(3):
        publisher.publish("x", "k", b"{}", PERSISTENT)
    waiter = asyncio.create_task(publisher.wait_for_confirms(5))
    publisher._on_confirm(_frame(Basic.Ack(delivery_tag=9, multiple=True)))
    await asyncio.wait_for(waiter, 1)


async def test_a_nack_fails_the_wait_and_the_publisher() -> None:
    publisher = await _offline_publisher(3)
    waiter = asyncio.create_task(publisher.wait_for_confirms(5))
    publisher._on_confirm(_frame(Basic.Ack(delivery_tag=1)))
    publisher._on_confirm(_frame(Basic.Nack(delivery_tag=2)))
    publisher._on_confirm(_frame(Basic.Ack(delivery_tag=3, multiple=True)))  # too late
    with pytest.raises(PublishNackedError):
        await waiter
    assert not publisher.is_open
    with pytest.raises(PublishNackedError):
        publisher.publish("x", "k", b"{}", PERSISTENT)


# ------------------------------------------------------------ the publisher, real broker


@pytest.fixture
async def publisher(settings: Settings) -> AsyncIterator[ConfirmingPublisher]:
    publisher = await ConfirmingPublisher.connect(
        settings.rabbitmq.url(), connection_name="te-test-publisher", timeout_s=10
    )
    yield publisher
    await publisher.close()


async def _admin(settings: Settings, action: Callable[[Any], Any]) -> Any:
    connection = await aio_pika.connect(settings.rabbitmq.url())
    async with connection:
        return await action(await connection.channel())


async def _depth(settings: Settings, queue: str) -> int:
    async def passive(channel: Any) -> int:
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return 0
        return int(declared.declaration_result.message_count or 0)

    return int(await _admin(settings, passive))


async def _delete_queues(settings: Settings, *queues: str) -> None:
    async def delete(channel: Any) -> None:
        for queue in queues:
            await channel.queue_delete(queue)

    await _admin(settings, delete)


@pytest.mark.rabbitmq
async def test_every_message_is_in_the_queue_when_the_wait_returns(
    settings: Settings, publisher: ConfirmingPublisher
) -> None:
    queue = f"te-test.{uuid.uuid4().hex[:8]}"
    await publisher.declare_queue(queue, durable=True)
    try:
        for batch in range(3):
            for i in range(500):
                publisher.publish("", queue, b'{"i":%d}' % i, PERSISTENT)
            await publisher.wait_for_confirms(30)
            # Confirmed means enqueued (and, persistent on a durable queue, on disk).
            assert await _depth(settings, queue) == 500 * (batch + 1)
        assert publisher.is_open
    finally:
        await _delete_queues(settings, queue)


@pytest.mark.rabbitmq
async def test_a_queue_refusing_messages_nacks_the_batch(
    settings: Settings, publisher: ConfirmingPublisher
) -> None:
    queue = f"te-test.full.{uuid.uuid4().hex[:8]}"
    # A queue that holds nothing and rejects publishes: the broker answers basic.nack.
    await publisher.declare_queue(
        queue, durable=False, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    try:
        for _ in range(10):
            publisher.publish("", queue, b"{}", PERSISTENT)
        with pytest.raises(PublishNackedError):
            await publisher.wait_for_confirms(30)
        assert not publisher.is_open
    finally:
        await _delete_queues(settings, queue)


@pytest.mark.rabbitmq
async def test_a_channel_closed_by_the_broker_fails_the_batch(
    publisher: ConfirmingPublisher,
) -> None:
    publisher.publish(f"te-test.none.{uuid.uuid4().hex[:8]}", "k", b"{}", PERSISTENT)
    with pytest.raises(AmqpConnectionError, match="NOT_FOUND"):
        await publisher.wait_for_confirms(30)
    assert not publisher.is_open


# ------------------------------------------------------------ the bridge, real brokers


class _CheckedBridge(RabbitBridge):
    """Counts commits, and before each one runs ``before_commit`` with the batch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commits = 0
        self.before_commit: Callable[[Sequence[Message]], Any] | None = None

    async def commit(self, messages: Sequence[Message]) -> None:
        if self.before_commit is not None:
            await self.before_commit(messages)
        self.commits += 1
        await super().commit(messages)


def _trades_in(messages: Sequence[Message]) -> int:
    return sum(1 for m in messages if b'"kind":"TRADE"' in m.value())


async def _messages(settings: Settings, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    async def drain(channel: Any) -> list[Any]:
        declared = await channel.get_queue(queue, ensure=True)
        got = []
        while (message := await declared.get(fail=False, timeout=5)) is not None:
            await message.ack()
            got.append(message)
        return got

    return list(await _admin(settings, drain))


async def _delete_topology(settings: Settings, topology: Topology, *extra: str) -> None:
    async def delete(channel: Any) -> None:
        for queue in (
            *extra,
            topology.wallet_queue,
            topology.notification_queue,
            topology.dead_letter_queue,
        ):
            await channel.queue_delete(queue)
        for exchange in (
            topology.trade_exchange,
            topology.order_exchange,
            topology.dead_letter_exchange,
        ):
            await channel.exchange_delete(exchange)

    await _admin(settings, delete)


@pytest.mark.rabbitmq
@pytest.mark.broker
async def test_offsets_are_committed_only_after_the_whole_batch_is_confirmed(
    settings: Settings, feed: Any
) -> None:
    f = feed(commands=1500)
    topology = Topology(prefix=f"t{f.prefix}")
    bridge = _CheckedBridge(f.settings, topology, batch_size=200)
    handled = 0

    async def confirmed_before_commit(messages: Sequence[Message]) -> None:
        nonlocal handled
        handled += _trades_in(messages)
        # Every trade of this batch and the ones before is already in the queue.
        assert await _depth(settings, topology.wallet_queue) >= handled

    bridge.before_commit = confirmed_before_commit
    try:
        stats = await bridge.run(exit_when_idle_s=2.0)
        assert bridge.commits == stats.batches > 1
        received = await _messages(settings, topology.wallet_queue)
    finally:
        await _delete_topology(settings, topology)
    assert {m.message_id for m in received} == f.trade_ids()
    # Each message as the bridge always sent it: persistent, same properties and body bytes.
    by_id = {e.message_id: e for r in f.decoded() for e in events_for(r)}
    for message in received:
        assert message.message_id is not None
        event = by_id[message.message_id]
        assert message.body == event.body
        assert json.loads(message.body)["trade_id"] == message.message_id
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert (message.content_type, message.type, message.app_id) == (
            "application/json",
            "TRADE",
            "trade-engine",
        )
        assert (message.headers, message.priority) == ({}, 0)


@pytest.mark.rabbitmq
@pytest.mark.broker
async def test_a_nacked_batch_is_not_committed_and_is_published_again(
    settings: Settings, feed: Any
) -> None:
    f = feed(commands=400)
    topology = Topology(prefix=f"t{f.prefix}")
    full = f"{topology.prefix}full"
    # The topology first, then a queue on trade.events that nacks every trade.
    setup = await ConfirmingPublisher.connect(
        settings.rabbitmq.url(), connection_name="te-test-setup", timeout_s=10
    )
    await rabbitmq.declare(setup, topology)
    await setup.declare_queue(
        full, durable=False, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    await setup.bind_queue(full, topology.trade_exchange, "trade.#")
    await setup.close()
    bridge = _CheckedBridge(f.settings, topology, batch_size=5000)
    run = asyncio.create_task(bridge.run(exit_when_idle_s=3.0))
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while bridge.stats.republished_batches < 2:
            assert asyncio.get_running_loop().time() < deadline, "the batch was never retried"
            assert not run.done()
            await asyncio.sleep(0.1)
        assert bridge.commits == 0
        assert bridge.stats.batches == 0
        await _delete_queues(settings, full)  # the broker takes trades again
        stats = await asyncio.wait_for(run, 90)
        assert stats.batches >= 1
        assert bridge.commits == stats.batches
        received = await _messages(settings, topology.wallet_queue)
    finally:
        if not run.done():
            bridge.stop()
            await asyncio.wait_for(run, 30)
        await _delete_topology(settings, topology, full)
    # The other queues took the nacked attempts too: duplicates, deduplicated on message_id.
    ids = [m.message_id for m in received]
    assert set(ids) == f.trade_ids()
    assert len(ids) > len(set(ids))
