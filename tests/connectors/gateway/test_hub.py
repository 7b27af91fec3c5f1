"""The hub's fan-out: a client that stops reading is disconnected without holding others."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from trade_engine.connectors.gateway.hub import CLOSE_SLOW_CONSUMER, HUB, Client

pytestmark = [pytest.mark.broker, pytest.mark.slow]


async def _next(ws: aiohttp.ClientWebSocketResponse, timeout_s: float = 30.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout_s)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def test_a_slow_consumer_is_disconnected_without_holding_others(
    ws_server: TestServer,
) -> None:
    async with aiohttp.ClientSession() as session:
        url = str(ws_server.make_url("/api/v1/ws"))
        async with session.ws_connect(url) as slow, session.ws_connect(url) as fast:
            for ws in (slow, fast):
                await ws.send_json({"op": "subscribe", "channels": ["trades.BTC/USDT"], "id": 1})
                assert (await _next(ws))["type"] == "subscribed"
            hub = ws_server.app[HUB]
            members = set(hub.channels["trades.BTC/USDT"])
            assert len(members) == 2
            # The slow one stops reading; the gateway floods the channel far past its queue.
            payload = json.dumps({"type": "trade", "pad": "x" * 8000})
            received = 0
            for _ in range(50):
                for _ in range(100):
                    hub.publish("trades.BTC/USDT", payload)
                while True:  # the fast client drains what it got
                    try:
                        msg = await fast.receive(timeout=0.05)
                    except TimeoutError:
                        break
                    received += msg.type is aiohttp.WSMsgType.TEXT
            assert received == 5000
            closed: list[Client] = [c for c in members if c.closing]
            assert len(closed) == 1
            msg = await slow.receive(timeout=30)
            while msg.type is aiohttp.WSMsgType.TEXT:
                msg = await slow.receive(timeout=30)
            assert slow.close_code == CLOSE_SLOW_CONSUMER
