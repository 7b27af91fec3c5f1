"""The execution feed without a broker: what each user's private channel carries, and the
first answers REST waits on, from decoded records (``streams.execution_records``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from trade_engine.config import load_settings
from trade_engine.connectors.gateway.feeds import ExecutionFollower, private_updates
from trade_engine.connectors.gateway.hub import SEND_QUEUE, Client, Hub, private_channel
from trade_engine.operations import synthetic
from trade_engine.streams.execution_records import AcceptedExecution, decode_execution


def _json_path_updates(msg: dict[str, Any]) -> list[tuple[str, str]]:
    """What the feed sent before it read typed records: json.loads, then this."""
    if msg["kind"] == "TRADE":
        out = []
        for role, liquidity in (("taker", "TAKER"), ("maker", "MAKER")):
            side = msg["taker_side"]
            if role == "maker":
                side = "SELL" if side == "BUY" else "BUY"
            buyer = side == "BUY"
            fill = {
                "type": "fill",
                "symbol": msg["symbol"],
                "seq": msg["seq"],
                "trade_id": msg["trade_id"],
                "order_id": msg[f"{role}_order_id"],
                "side": side,
                "liquidity": liquidity,
                "price": msg["price"],
                "quantity": msg["quantity"],
                "quote_quantity": msg["quote_quantity"],
                "fee": msg["buyer_fee"] if buyer else msg["seller_fee"],
                "fee_asset": msg["buyer_fee_asset"] if buyer else msg["seller_fee_asset"],
                "remaining": msg[f"{role}_remaining"],
                "at": msg["at"],
            }
            out.append((msg[f"{role}_user_id"], json.dumps(fill, separators=(",", ":"))))
        return out
    user = msg.get("user_id")
    if not isinstance(user, str):
        return []
    update = {"type": "order_update", **{k: v for k, v in msg.items() if k != "input"}}
    return [(user, json.dumps(update, separators=(",", ":")))]


def _values() -> list[bytes]:
    symbols = load_settings().market.symbols[:3]
    return synthetic.executions(3000, 5, symbols, 1, start_ms=1_767_225_600_000)[0]


def test_private_updates_keep_their_bytes() -> None:
    for value in _values():
        got = [
            (user, json.dumps(update, separators=(",", ":")))
            for user, update in private_updates(decode_execution(value))
        ]
        assert got == _json_path_updates(json.loads(value)), value


async def test_the_feed_remembers_first_answers_and_fans_out_updates() -> None:
    values = _values()
    hub = Hub()
    feed = ExecutionFollower(load_settings(), hub)
    first = decode_execution(values[0])
    assert isinstance(first, AcceptedExecution)
    client = Client(ws=cast(Any, None))
    hub.subscribe(client, private_channel(first.user_id))
    waiting = asyncio.ensure_future(feed.first_execution(first.order_id, 5))
    await asyncio.sleep(0)
    feed.handle([("te.executions", None, value, 0) for value in [b"not json", *values]])
    assert await waiting == first
    assert await feed.first_execution(first.order_id, 0) == first
    sent = [client.queue.get_nowait() for _ in range(client.queue.qsize())]
    expected = [
        f'{{"channel":"orders","data":{text}}}'
        for value in values
        for user, text in _json_path_updates(json.loads(value))
        if user == first.user_id
    ]
    assert 0 < len(expected) < SEND_QUEUE  # within what one client's queue holds
    assert sent == expected
