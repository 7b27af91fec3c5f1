"""RabbitMQ queue depths from the management API: the real server, a queue the test declares."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from prometheus_client import CollectorRegistry

from trade_engine.config import Settings, load_settings
from trade_engine.operations.queues import (
    QueueCollector,
    QueueDepth,
    QueueView,
    bridged_queues,
    read_queues,
    render,
)


def test_the_bridged_queues() -> None:
    assert bridged_queues() == [
        "wallet.service.trades",
        "notification.service.trades",
        "dlx.failed",
    ]
    assert bridged_queues("t1.")[0] == "t1.wallet.service.trades"


@pytest.fixture
async def declared(settings: Settings) -> AsyncIterator[tuple[str, str]]:
    """The bridge's three queues under a fresh prefix; 3 messages in the wallet queue,
    one of them delivered and not acknowledged, and a consumer on the notification queue."""
    prefix = f"q{uuid.uuid4().hex[:8]}."
    names = bridged_queues(prefix)
    connection = await aio_pika.connect(settings.rabbitmq.url())
    try:
        channel = await connection.channel()
        queues = [await channel.declare_queue(name, durable=False) for name in names]
        for i in range(3):
            await channel.default_exchange.publish(
                aio_pika.Message(body=str(i).encode()), routing_key=names[0]
            )
        taken = await queues[0].get(timeout=5)
        assert taken is not None

        async def ack(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()

        await queues[1].consume(ack)
        yield prefix, names[0]
    finally:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
        await connection.close()


async def _until(settings: Settings, names: list[str], ok: object, timeout_s: float) -> QueueView:
    """Read until ``ok(view)``: the management plugin publishes its figures every 5 s."""
    deadline = time.monotonic() + timeout_s
    while True:
        view = await asyncio.to_thread(read_queues, settings, names)
        if ok(view) or time.monotonic() > deadline:  # type: ignore[operator]
            return view
        await asyncio.sleep(0.5)


@pytest.mark.rabbitmq
async def test_ready_unacknowledged_and_consumers(
    settings: Settings, declared: tuple[str, str]
) -> None:
    prefix, _ = declared
    names = bridged_queues(prefix)

    def settled(view: QueueView) -> bool:
        q = {d.queue: d for d in view.queues}
        return (q[names[0]].messages_ready, q[names[0]].messages_unacknowledged) == (2, 1) and q[
            names[1]
        ].consumers == 1

    view = await _until(settings, [*names, f"{prefix}not.declared"], settled, 20)
    assert view.error is None
    wallet, notification, dead_letters, missing = view.queues
    assert (wallet.exists, wallet.messages_ready, wallet.messages_unacknowledged) == (True, 2, 1)
    assert wallet.consumers == 0
    assert notification.consumers == 1
    assert (dead_letters.messages_ready, dead_letters.consumers) == (0, 0)
    assert missing == QueueDepth(f"{prefix}not.declared", exists=False)
    text = "\n".join(render(view))
    assert f"{prefix}not.declared" in text
    assert "(not declared)" in text

    registry = CollectorRegistry()
    collector = QueueCollector()
    registry.register(collector)
    collector.update(view)
    labels = {"queue": names[0]}
    assert registry.get_sample_value("te_rabbitmq_queue_messages_ready", labels) == 2
    assert registry.get_sample_value("te_rabbitmq_queue_messages_unacknowledged", labels) == 1
    assert registry.get_sample_value("te_rabbitmq_queue_consumers", {"queue": names[1]}) == 1
    assert registry.get_sample_value("te_rabbitmq_management_up", {}) == 1


def test_unreachable_management_api_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings(rabbitmq={"management_port": 1})
    view = read_queues(settings, bridged_queues(), timeout_s=1)
    assert view.error is not None
    assert view.queues == []
    (line,) = render(view)
    assert line.startswith("rabbitmq: management API at http://127.0.0.1:1 unreachable")
    registry = CollectorRegistry()
    collector = QueueCollector()
    registry.register(collector)
    collector.update(view)
    assert registry.get_sample_value("te_rabbitmq_management_up", {}) == 0


@pytest.mark.rabbitmq
def test_wrong_password_names_the_setting() -> None:
    settings = load_settings(rabbitmq={"password": "wrong"})
    view = read_queues(settings, bridged_queues())
    assert view.error is not None
    assert view.error.startswith("rabbitmq.password: the management API refused user")
