"""The RabbitMQ bridge: topology, deterministic ids, and a broker restart that loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from typing import Any

import aio_pika
import aiormq
import pytest

from trade_engine.config import Settings, load_settings
from trade_engine.operations import synthetic
from trade_engine.sinks.rabbitmq import Topology, events_for
from trade_engine.streams.execution_records import decode_execution
from trade_engine.streams.executions import dumps, trade_message

OPS = "ops/rabbitmq/rabbitmq.sh"


ENVELOPE = {"v": 1, "symbol": "BTC/USDT"}
TAIL = {"input": {"partition": 0, "offset": 3}, "at": "2026-01-01T00:00:00.000Z"}
TRADE = {
    **ENVELOPE,
    "seq": 7,
    "kind": "TRADE",
    **TAIL,
    "trade_id": "BTC/USDT:7",
    "price": "1.00",
    "quantity": "1",
    "quote_quantity": "1.00",
    "taker_side": "SELL",
    "taker_order_id": "s",
    "taker_user_id": "u2",
    "maker_order_id": "b",
    "maker_user_id": "u1",
    "buyer_fee": "0",
    "seller_fee": "0",
    "taker_remaining": "0",
    "maker_remaining": "0",
    "buyer_order_id": "b",
    "seller_order_id": "s",
    "buyer_user_id": "u1",
    "seller_user_id": "u2",
    "buyer_fee_asset": "BTC",
    "seller_fee_asset": "USDT",
    "is_buyer_maker": True,
}
ENDED = {
    **ENVELOPE,
    "seq": 9,
    "kind": "ORDER_ENDED",
    **TAIL,
    "order_id": "b",
    "user_id": "u1",
    "status": "FILLED",
    "reason": "FILLED",
    "filled": "1",
    "quote_filled": "1.00",
    "cancelled": "0",
    "reserved": "1.00",
    "release": "0.00",
    "side": "BUY",
}


def test_events_have_deterministic_ids_and_routing_keys() -> None:
    [event] = events_for(decode_execution(dumps(TRADE)))
    assert (event.routing_key, event.message_id) == ("trade.BTC-USDT", "BTC/USDT:7")
    assert json.loads(event.body)["executed_at"] == TRADE["at"]
    [event] = events_for(decode_execution(dumps(ENDED)))
    assert (event.routing_key, event.message_id) == ("order.FILLED", "BTC/USDT:9")
    # The body is the execution as it was read, plus the event's id and name.
    assert event.body == dumps({**ENDED, "event_id": "BTC/USDT:9", "event": "FILLED"})
    state = {**ENVELOPE, "seq": 10, "kind": "TRADING_STATE", **TAIL, "old": "TRADING"}
    assert events_for(decode_execution(dumps({**state, "new": "HALT"}))) == []


def _json_path_events(message: dict[str, Any]) -> list[tuple[str, str, bytes]]:
    """What the bridge published before it read typed records: json.loads, then this."""
    kind = message["kind"]
    if kind == "TRADE":
        symbol = message["symbol"].replace("/", "-")
        return [(f"trade.{symbol}", message["trade_id"], dumps(trade_message(message)))]
    order_kinds = ("ACCEPTED", "REJECTED", "TRIGGERED", "AMENDED", "ORDER_ENDED", "STP_PREVENTED")
    if kind not in order_kinds or (kind == "REJECTED" and not message.get("order_id")):
        return []
    if kind in ("ACCEPTED", "ORDER_ENDED"):
        event = message["status"]
    else:
        event = {"TRIGGERED": "OPEN"}.get(kind, kind)
    event_id = f"{message['symbol']}:{message['seq']}"
    body = dumps({**message, "event_id": event_id, "event": event})
    return [(f"order.{event}", event_id, body)]


def test_event_bodies_keep_their_bytes() -> None:
    symbols = load_settings().market.symbols[:3]
    values = synthetic.executions(3000, 11, symbols, 1, start_ms=1_767_225_600_000)[0]
    for value in values:
        events = events_for(decode_execution(value))
        got = [(e.routing_key, e.message_id, e.body) for e in events]
        assert got == _json_path_events(json.loads(value)), value


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
        # The idle exit is well beyond the broker's stop and start: it must not end the
        # bridge while RabbitMQ is down (a slow stop once outlasted 8 s in CI, and the
        # second half then had no bridge to go through).
        helpers.sink_command(
            "sink", "rabbitmq", "run", "--name-prefix", topology.prefix, "--exit-when-idle", "30"
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
        assert bridge.poll() is None, "the bridge must be running when RabbitMQ goes down"
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
