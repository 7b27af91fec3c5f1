"""REST in, WebSocket out, through the real pipeline: the gateway app (``create_app``) on a
local port, real Kafka, and the validation stage and the matcher as subprocesses on the
test's own topic prefix (te.commands -> validation -> te.commands.accepted -> matcher).

An order placed over REST is in te.commands; its fill comes back on the maker's private
WebSocket channel without the counterparty's ids; ``?wait=true`` answers with the status
the engine gave; a place the matcher rejects is reported REJECTED by GET although no
history row exists (the gateway's execution feed remembered the first answer).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from trade_engine.config import Settings
from trade_engine.connectors.gateway.app import RUNNER_ARGS, create_app
from trade_engine.connectors.gateway.auth import mint_token

from .conftest import LIMIT_ORDER, Gateway, gateway_settings

pytestmark = [pytest.mark.broker, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def env(gateway_env: Callable[..., tuple[str, str]]) -> Settings:
    return gateway_settings(*gateway_env())


@pytest.fixture
def pipeline(env: Settings, tmp_path: Path) -> Iterator[None]:
    child_env = {
        **os.environ,
        "TE_TOPICS__PREFIX": env.topics.prefix,
        "TE_TOPICS__PARTITIONS": str(env.topics.partitions),
        "TE_STATE_DIR": str(tmp_path),
        "TE_LOG_LEVEL": "WARNING",
    }
    base = [sys.executable, "-m", "trade_engine"]
    procs = [
        subprocess.Popen([*base, "validation", "run", "--metrics-port", "0"], env=child_env),
        subprocess.Popen(
            [*base, "matcher", "run", "--worker-id", "e2e", "--metrics-port", "0"], env=child_env
        ),
    ]
    yield
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(30)


@pytest.fixture
async def base_url(env: Settings) -> AsyncIterator[str]:
    runner = web.AppRunner(create_app(env), access_log=None, **RUNNER_ARGS)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def _until(ws: aiohttp.ClientWebSocketResponse, predicate: Any) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(90):
        while True:
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            data: dict[str, Any] = json.loads(msg.data)
            seen.append(data)
            if predicate(data):
                return seen


async def test_rest_order_fills_come_back_on_the_private_websocket(
    env: Settings, pipeline: None, base_url: str
) -> None:
    def auth(user: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + mint_token(env.gateway.auth, user)}

    async with aiohttp.ClientSession() as http, http.ws_connect(f"{base_url}/api/v1/ws") as ws:
        await ws.send_json({"op": "auth", "token": mint_token(env.gateway.auth, "ua"), "id": 1})
        assert (await ws.receive_json(timeout=10))["type"] == "authenticated"
        await ws.send_json({"op": "subscribe", "channels": ["orders"], "id": 2})
        assert (await ws.receive_json(timeout=10))["channels"] == ["orders"]

        # A rests a sell; its ACCEPTED update on the channel also shows the pipeline is up.
        sell = {**LIMIT_ORDER, "side": "SELL", "quantity": "0.01000", "client_order_id": "a-1"}
        placed = await http.post(f"{base_url}/api/v1/orders", json=sell, headers=auth("ua"))
        assert placed.status == 201
        maker = await placed.json()
        assert maker["status"] == "PENDING"
        seen = await _until(ws, lambda m: m.get("data", {}).get("kind") == "ACCEPTED")
        accepted = seen[-1]
        assert accepted["channel"] == "orders"
        assert accepted["data"]["order_id"] == maker["order_id"]
        assert accepted["data"]["status"] == "OPEN"

        # B crosses it and waits for the engine's first answer: its ACCEPTED record, whose
        # status is the order's on acceptance (OPEN); the fills follow as executions.
        buy = {**LIMIT_ORDER, "quantity": "0.00400"}
        crossed = await http.post(
            f"{base_url}/api/v1/orders?wait=true&wait_timeout_ms=10000",
            json=buy,
            headers=auth("ub"),
        )
        assert crossed.status == 201
        taker = await crossed.json()
        assert taker["status"] == "OPEN", taker
        assert taker["order_id"] != maker["order_id"]

        updates = [m["data"] for m in await _until(ws, lambda m: m["data"].get("type") == "fill")]
        fill = updates[-1]
        assert fill["order_id"] == maker["order_id"]
        assert (fill["side"], fill["liquidity"], fill["price"], fill["quantity"]) == (
            "SELL",
            "MAKER",
            "50000.00",
            "0.00400",
        )
        assert fill["remaining"] == "0.00600"
        text = json.dumps(updates)
        assert '"ub"' not in text  # no counterparty user id ...
        assert taker["order_id"] not in text  # ... nor its order id

        # Both places are in te.commands as the gateway built them.
        reader = Gateway(env, cast(Any, None), "")  # only its command-topic reader
        commands = [json.loads(m.value()) for m in reader.commands()]
        assert {(c["cmd"], c["order_id"], c["user_id"]) for c in commands} == {
            ("place", maker["order_id"], "ua"),
            ("place", taker["order_id"], "ub"),
        }

        # A fill-or-kill B cannot fill: the matcher rejects it. Nothing writes a history row
        # here, yet GET (without having waited) reports the rejection and its code.
        fok = {**LIMIT_ORDER, "quantity": "1.00000", "time_in_force": "FOK"}
        refused = await (
            await http.post(f"{base_url}/api/v1/orders", json=fok, headers=auth("ub"))
        ).json()
        assert refused["status"] == "PENDING"
        async with asyncio.timeout(30):
            while True:
                got = await (
                    await http.get(
                        f"{base_url}/api/v1/orders/{refused['order_id']}", headers=auth("ub")
                    )
                ).json()
                if got["status"] != "PENDING":
                    break
                await asyncio.sleep(0.1)
        assert got["status"] == "REJECTED"
        assert got["reject_code"] == "MATCHING_FOK_NOT_FILLABLE"
        # Still the owner's only: another user gets a 404.
        other = await http.get(
            f"{base_url}/api/v1/orders/{refused['order_id']}", headers=auth("ua")
        )
        assert other.status == 404
