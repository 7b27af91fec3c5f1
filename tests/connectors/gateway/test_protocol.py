"""The WebSocket protocol against the real pipeline: broker, matcher and market-data agent.

The gateway half under test (``protocol.setup_market_data``: the WebSocket, the
hub, the Kafka followers of ``feeds`` and the REST ``snapshots``) runs on an
aiohttp test server with the real JWT authenticator (``ws_server``); the matcher
and the market-data agent run as subprocesses on the test's own topic prefix.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from confluent_kafka import Producer

from trade_engine.agents.matcher.worker import MatcherTopics
from trade_engine.config import Settings
from trade_engine.connectors.gateway.auth import mint_token
from trade_engine.connectors.gateway.context import EXECUTION_FEED
from trade_engine.connectors.gateway.depth_client import DepthClient
from trade_engine.connectors.loadgen import generate
from trade_engine.connectors.producer import build_place
from trade_engine.streams.codec import encode

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture
def settings(ws_settings: Settings) -> Settings:
    return ws_settings


@pytest.fixture
def server(ws_server: TestServer) -> TestServer:
    return ws_server


@pytest.fixture
def pipeline(settings: Settings, tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    env = {
        **os.environ,
        "TE_TOPICS__PREFIX": settings.topics.prefix,
        "TE_TOPICS__PARTITIONS": "2",
        "TE_STATE_DIR": str(tmp_path),
        "TE_LOG_LEVEL": "WARNING",
        "TE_MARKET_DATA__SNAPSHOT_EVERY": "200",
        "TE_MARKET_DATA__SNAPSHOT_INTERVAL_S": "1",
    }
    base = [sys.executable, "-m", "trade_engine"]
    idle = ["--metrics-port", "0", "--exit-when-idle", "15"]
    procs = {
        "matcher": subprocess.Popen([*base, "matcher", "run", "--worker-id", "w1", *idle], env=env),
        "market-data": subprocess.Popen([*base, "market-data", "run", *idle], env=env),
    }
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


def _produce(settings: Settings, commands: list[Any]) -> None:
    producer = Producer({**settings.kafka.librdkafka(), "partitioner": "murmur2_random"})
    topic = MatcherTopics.from_settings(settings).input
    for command in commands:
        producer.produce(topic, key=command.symbol, value=encode(command))
    producer.flush(30)


async def _next(ws: aiohttp.ClientWebSocketResponse, timeout_s: float = 30.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout_s)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def _until(
    ws: aiohttp.ClientWebSocketResponse, predicate: Any, timeout_s: float = 60.0
) -> list[dict[str, Any]]:
    seen = []
    async with asyncio.timeout(timeout_s):
        while True:
            data = await _next(ws, timeout_s)
            seen.append(data)
            if predicate(data):
                return seen


async def test_fills_of_an_order_come_back_on_the_private_channel(
    settings: Settings, pipeline: Any, server: TestServer
) -> None:
    async with aiohttp.ClientSession() as session:
        url = str(server.make_url("/api/v1/ws"))
        async with session.ws_connect(url) as anon, session.ws_connect(url) as seller:
            await anon.send_json({"op": "subscribe", "channels": ["orders"], "id": 1})
            refused = await _next(anon)
            assert refused["type"] == "error"
            assert refused["code"] == "AUTH_REQUIRED"
            await anon.send_json({"op": "auth", "token": "not-a-jwt", "id": 2})
            assert (await _next(anon))["code"].startswith("AUTH_")
            await anon.send_json({"op": "subscribe", "channels": ["depth.NOPE/USDT"]})
            assert (await _next(anon))["code"] == "VALIDATION_UNKNOWN_SYMBOL"

            token = mint_token(settings.gateway.auth, "u1")
            await seller.send_json({"op": "auth", "token": token, "id": 3})
            assert await _next(seller) == {"type": "authenticated", "id": 3, "user_id": "u1"}
            await seller.send_json({"op": "subscribe", "channels": ["orders"], "id": 4})
            assert (await _next(seller))["channels"] == ["orders"]

            sell = build_place(
                symbol="BTC/USDT", side="SELL", user_id="u1", quantity="0.01000", price="50000.00"
            )
            buy = build_place(
                symbol="BTC/USDT", side="BUY", user_id="u2", quantity="0.00400", price="50000.00"
            )
            _produce(settings, [sell, buy])
            feed = server.app[EXECUTION_FEED]
            first = await feed.first_execution(buy.order_id, 60)
            assert first is not None
            assert first.kind == "ACCEPTED"
            seen = await _until(seller, lambda m: m["data"].get("type") == "fill")
            updates = [m["data"] for m in seen]
            assert all(m["channel"] == "orders" for m in seen)
            assert updates[0]["kind"] == "ACCEPTED"
            assert updates[0]["order_id"] == sell.order_id
            fill = updates[-1]
            assert fill["order_id"] == sell.order_id
            assert fill["liquidity"] == "MAKER"
            assert (fill["side"], fill["price"], fill["quantity"]) == (
                "SELL",
                "50000.00",
                "0.00400",
            )
            assert fill["remaining"] == "0.00600"
            assert fill["fee_asset"] == "USDT"
            # The counterparty is never named on the private channel.
            assert "u2" not in json.dumps(updates)
            assert buy.order_id not in json.dumps(updates)
            # A REST caller asking after the answer arrived still gets it.
            again = await feed.first_execution(sell.order_id, 0.01)
            assert again is not None
            assert again.seq == updates[0]["seq"]


async def test_a_client_following_the_resync_procedure_keeps_the_engines_book(
    settings: Settings,
    pipeline: dict[str, subprocess.Popen[bytes]],
    server: TestServer,
    engine_depth: Callable[[Settings], Any],
) -> None:
    symbols = settings.market.symbols[:2]
    async with aiohttp.ClientSession() as session:
        base = str(server.make_url(""))
        clients = [DepthClient(session, base, s.symbol) for s in symbols]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        async with asyncio.timeout(30):
            for c in clients:
                await c.subscribed.wait()
        commands = generate(2500, 5, symbols, users=5)
        _produce(settings, commands[:1200])
        await asyncio.sleep(1.0)  # diffs flow while the clients fetch their snapshots
        _produce(settings, commands[1200:])
        for proc in pipeline.values():  # both exit once idle: everything is published
            await asyncio.to_thread(proc.wait, 240)
            assert proc.returncode == 0
        engine = await asyncio.to_thread(engine_depth, settings)

        def book_of(client: DepthClient) -> dict[str, list[list[str]]]:
            return {"bids": client.book.levels("bids"), "asks": client.book.levels("asks")}

        # Everything is published; wait (not a fixed sleep) for the last diffs to
        # reach the clients through the gateway.
        deadline = asyncio.get_running_loop().time() + 30
        while any(book_of(c) != engine[c.symbol] for c in clients):
            if asyncio.get_running_loop().time() > deadline:
                break  # the assertions below show the difference
            await asyncio.sleep(0.2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

        for client in clients:
            assert client.snapshots_fetched >= 1
            book = client.book
            assert book.synced
            assert book_of(client) == engine[client.symbol]
            rest = await (
                await session.get(f"{base}/api/v1/depth/{client.symbol.replace('/', '-')}")
            ).json()
            assert rest["lastUpdateId"] == book.last_update_id
            ticker = await (
                await session.get(f"{base}/api/v1/ticker/{client.symbol.replace('/', '_')}")
            ).json()
            assert ticker["symbol"] == client.symbol
            candles = await (
                await session.get(f"{base}/api/v1/candles/{client.symbol.replace('/', '-')}")
            ).json()
            assert candles["candles"]
        bad = await session.get(f"{base}/api/v1/depth/NOPE-USDT")
        assert bad.status == 400
        assert (await bad.json())["code"] == "VALIDATION_UNKNOWN_SYMBOL"
