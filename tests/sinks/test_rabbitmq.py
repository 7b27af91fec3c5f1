"""The RabbitMQ bridge: topology, deterministic ids, and a broker restart that loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time

import aio_pika
import aiormq
import pytest

from trade_engine.config import Settings
from trade_engine.operations import synthetic
from trade_engine.sinks.rabbitmq import Topology, events_for

OPS = "ops/rabbitmq/rabbitmq.sh"


def test_events_have_deterministic_ids_and_routing_keys() -> None:
    trade = {
        "v": 1,
        "symbol": "BTC/USDT",
        "seq": 7,
        "kind": "TRADE",
        "at": "2026-01-01T00:00:00.000Z",
        "input": {"partition": 0, "offset": 3},
        "trade_id": "BTC/USDT:7",
        "price": "1.00",
        "quantity": "1",
        "quote_quantity": "1.00",
        "buyer_order_id": "b",
        "seller_order_id": "s",
        "buyer_user_id": "u1",
        "seller_user_id": "u2",
        "buyer_fee": "0",
        "seller_fee": "0",
        "buyer_fee_asset": "BTC",
        "seller_fee_asset": "USDT",
        "is_buyer_maker": True,
    }
    [event] = events_for(trade)
    assert (event.routing_key, event.message_id) == ("trade.BTC-USDT", "BTC/USDT:7")
    assert json.loads(event.body)["executed_at"] == trade["at"]
    ended = {"symbol": "BTC/USDT", "seq": 9, "kind": "ORDER_ENDED", "status": "FILLED"}
    [event] = events_for(ended)
    assert (event.routing_key, event.message_id) == ("order.FILLED", "BTC/USDT:9")
    assert events_for({"symbol": "BTC/USDT", "seq": 10, "kind": "TRADING_STATE"}) == []


async def _drain(settings: Settings, queue_name: str, idle_s: float = 3.0) -> list[str]:
    """Every message id in the queue, acknowledging each (a consumer would apply then ack)."""
    ids: list[str] = []
    connection = await aio_pika.connect(settings.rabbitmq.url())
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=True)
        while True:
            message = await queue.get(fail=False, timeout=5)
            if message is None:
                await asyncio.sleep(idle_s)
                message = await queue.get(fail=False, timeout=5)
                if message is None:
                    return ids
            assert message.message_id is not None
            ids.append(message.message_id)
            await message.ack()


async def _queue_depth(settings: Settings, name: str) -> int:
    connection = await aio_pika.connect(settings.rabbitmq.url())
    async with connection:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return 0
        return queue.declaration_result.message_count or 0


async def _wait_depth(settings: Settings, name: str, n: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while await _queue_depth(settings, name) < n:
        assert time.monotonic() < deadline, f"{name} never reached {n} messages"
        await asyncio.sleep(0.3)


async def _ops(action: str) -> None:
    await asyncio.to_thread(subprocess.run, ["bash", OPS, action], check=True)


@pytest.mark.rabbitmq
@pytest.mark.broker
async def test_broker_restart_with_unacked_messages_loses_no_trade(
    settings: Settings, feed, helpers
) -> None:
    f = feed()
    topology = Topology(prefix=f"t{f.prefix}")
    messages = synthetic.executions(
        3000, 21, f.settings.market.symbols[:4], 4, start_ms=1_767_225_600_000
    )
    f.messages = messages
    first = {p: v[: len(v) // 2] for p, v in messages.items()}
    second = {p: v[len(v) // 2 :] for p, v in messages.items()}
    synthetic.publish(f.settings, f.topic, first)
    first_trades = sum(1 for p in first for v in first[p] if b'"kind":"TRADE"' in v)
    bridge = subprocess.Popen(  # noqa: ASYNC220 - a long-running child, waited on in a thread
        helpers.sink_command(
            "sink", "rabbitmq", "run", "--name-prefix", topology.prefix, "--exit-when-idle", "8"
        ),
        env=f.env(),
    )
    try:
        await _wait_depth(settings, topology.wallet_queue, first_trades, 60)
        # A consumer takes 50 messages and never acknowledges them.
        holder = await aio_pika.connect(settings.rabbitmq.url())
        channel = await holder.channel()
        queue = await channel.get_queue(topology.wallet_queue)
        for _ in range(50):
            assert await queue.get(fail=False, timeout=5) is not None
        await _ops("down")
        await asyncio.to_thread(synthetic.publish, f.settings, f.topic, second)
        await asyncio.sleep(1)
    finally:
        await _ops("up")
    with contextlib.suppress(Exception):
        await holder.close()
    assert await asyncio.to_thread(bridge.wait, 120) == 0
    received = await _drain(settings, topology.wallet_queue)
    applied: set[str] = set()
    for message_id in received:  # the deduplicating consumer of docs/rabbitmq.md
        if message_id not in applied:
            applied.add(message_id)
    await _delete(settings, topology)
    assert applied == f.trade_ids()
    assert len(received) >= len(applied)


async def _delete(settings: Settings, topology: Topology) -> None:
    connection = await aio_pika.connect(settings.rabbitmq.url())
    async with connection:
        channel = await connection.channel()
        for queue in (
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
