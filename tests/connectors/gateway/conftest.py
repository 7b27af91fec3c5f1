"""Gateway fixtures: an app on its own topic prefix and history schema, real Kafka and
PostgreSQL, clients holding tokens, and a reader of what reached the command topic.

Gateways here run in development mode (``gateway.dev_mode``): their tokens are signed
with the development secret, which the gateway refuses outside that mode."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from trade_engine.config import Settings, load_settings
from trade_engine.connectors.gateway.app import GatewayRunner, create_app
from trade_engine.connectors.gateway.auth import JwtAuthenticator, mint_token
from trade_engine.connectors.gateway.context import AUTHENTICATOR, SETTINGS
from trade_engine.connectors.gateway.protocol import setup_market_data
from trade_engine.migrations.runner import migrate_schema
from trade_engine.streams.topics import create_topics


@dataclass
class Gateway:
    settings: Settings
    client: TestClient[Any, Any]
    schema: str

    def token(self, user: str, *, admin: bool = False) -> str:
        return mint_token(self.settings.gateway.auth, user, admin=admin)

    def auth(self, user: str, *, admin: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user, admin=admin)}"}

    def commands(self, wait_s: float = 1.0) -> list[Message]:
        """Everything on the command topic (read until ``wait_s`` passes with nothing new)."""
        topic = self.settings.topic_names["commands"]
        consumer = Consumer(
            self.settings.kafka.librdkafka()
            | {"group.id": f"t-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
        )
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            consumer.assign(
                [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.partitions)]
            )
            out: list[Message] = []
            quiet_until = time.monotonic() + wait_s
            while time.monotonic() < quiet_until:
                msg = consumer.poll(0.2)
                if msg is not None and msg.error() is None:
                    out.append(msg)
                    quiet_until = time.monotonic() + wait_s
            return out
        finally:
            consumer.close()


def gateway_settings(prefix: str, schema: str, **gateway: Any) -> Settings:
    limits = gateway.pop(
        "rate_limit", {"user_per_s": 1000, "user_burst": 1000, "ip_per_s": 10000, "ip_burst": 10000}
    )
    return load_settings(
        topics={"prefix": prefix, "partitions": 4},
        gateway={"dev_mode": True, "postgres_schema": schema, "rate_limit": limits, **gateway},
    )


class GatewayTestServer(TestServer):
    """``TestServer`` on the gateway's own runner (``GatewayRunner``: its header limits and
    the error body for requests the HTTP parser refuses), as ``trade-engine gateway run``."""

    async def _make_runner(self, **kwargs: Any) -> GatewayRunner:
        return GatewayRunner(self.app, **kwargs)


def make_env(settings: Settings) -> tuple[str, str]:
    """A fresh topic prefix (all order-path topics) and a migrated history schema."""
    prefix = f"gw{uuid.uuid4().hex[:10]}."
    schema = f"gw_{uuid.uuid4().hex[:10]}"
    create_topics(load_settings(topics={"prefix": prefix, "partitions": 4}))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(migrate_schema(settings.postgres.dsn(), schema))).result()
    return prefix, schema


def drop_env(settings: Settings, made: list[tuple[str, str]]) -> None:
    admin = AdminClient(settings.kafka.librdkafka())
    names = [n for p, _ in made for n in admin.list_topics(timeout=10).topics if n.startswith(p)]
    if names:
        for future in admin.delete_topics(names).values():
            future.result(timeout=30)

    async def drop() -> None:
        conn = await asyncpg.connect(settings.postgres.dsn())
        try:
            for _, schema in made:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(drop())).result()


@pytest.fixture
def gateway_env(settings: Settings) -> Iterator[Callable[..., tuple[str, str]]]:
    """Factory: (topic prefix, history schema), both created now and removed after."""
    made: list[tuple[str, str]] = []

    def make() -> tuple[str, str]:
        made.append(make_env(settings))
        return made[-1]

    yield make
    if made:
        drop_env(settings, made)


@pytest.fixture
async def gateway(gateway_env: Callable[..., tuple[str, str]]) -> AsyncIterator[Gateway]:
    prefix, schema = gateway_env()
    settings = gateway_settings(prefix, schema)
    app = create_app(settings)
    server = GatewayTestServer(app)
    await server.start_server()
    async with TestClient(server) as client:
        yield Gateway(settings, client, schema)


@pytest.fixture
def ws_settings(tmp_path: Path) -> Settings:
    """Settings on a fresh two-partition topic prefix, for the WebSocket half."""
    prefix = f"ws-{uuid.uuid4().hex[:8]}."
    settings = load_settings(topics={"prefix": prefix, "partitions": 2}, state_dir=tmp_path)
    create_topics(settings)
    return settings


@pytest.fixture
async def ws_server(ws_settings: Settings) -> AsyncIterator[TestServer]:
    """The gateway's market-data half alone (``setup_market_data``) with the real JWT check."""
    app = web.Application()
    app[SETTINGS] = ws_settings
    app[AUTHENTICATOR] = JwtAuthenticator(ws_settings.gateway.auth)
    setup_market_data(app)
    async with TestServer(app) as server:
        yield server


LIMIT_ORDER = {
    "symbol": "BTC/USDT",
    "side": "BUY",
    "type": "LIMIT",
    "quantity": "0.5",
    "price": "50000.00",
}
