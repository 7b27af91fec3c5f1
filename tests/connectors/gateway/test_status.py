"""GET /api/v1/status: the build's version, the uptime and the dependencies' states, with
no token, limited per client IP only, and cheap: one probe of the dependencies per few
seconds however many ask."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from trade_engine.config import Settings, load_settings
from trade_engine.connectors.gateway import public
from trade_engine.connectors.gateway.app import create_app
from trade_engine.connectors.gateway.openapi import DEFAULT_FILE
from trade_engine.connectors.gateway.public import GatewayStatus

from .conftest import GatewayTestServer


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def wallet_stub() -> AsyncIterator[str]:
    """A wallet whose /health/ready answers 200."""

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/health/ready", ready)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def _client(settings: Settings) -> TestClient[Any, Any]:
    server = GatewayTestServer(create_app(settings, market_data=False))
    client: TestClient[Any, Any] = TestClient(server)
    await client.start_server()
    return client


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[..., Any]]:
    """Factory: a test client of a REST-only gateway (no market data) built from
    ``load_settings(**overrides)``; nothing here needs Kafka or PostgreSQL to run."""
    clients: list[TestClient[Any, Any]] = []

    async def make(**overrides: Any) -> TestClient[Any, Any]:
        gateway = {"dev_mode": True, **overrides.pop("gateway", {})}
        clients.append(await _client(load_settings(gateway=gateway, **overrides)))
        return clients[-1]

    yield make
    for client in clients:
        await client.close()


async def test_status_answers_without_a_token_even_when_dependencies_are_down(
    client_for: Callable[..., Any],
) -> None:
    client = await client_for(wallet={"url": f"http://127.0.0.1:{_closed_port()}"})
    before = datetime.now(UTC)
    resp = await client.get("/api/v1/status", headers={"Authorization": "Bearer not-a-token"})
    assert resp.status == 200
    body = await resp.json()
    assert body["service"] == "trade-engine-gateway"
    assert body["version"] == metadata.version("trade-engine")
    assert body["status"] == "degraded"
    assert body["dependencies"]["wallet"].startswith("unavailable: ")
    assert set(body["dependencies"]) == {"kafka", "postgres", "wallet"}
    assert 0 <= body["uptime_s"] < 60
    started = datetime.fromisoformat(body["started_at"])
    checked = datetime.fromisoformat(body["checked_at"])
    assert started <= before <= checked
    # Limited per IP like every public route: the rate headers are there.
    assert "X-RateLimit-Limit" in resp.headers


async def test_status_is_limited_per_client_ip(client_for: Callable[..., Any]) -> None:
    client = await client_for(
        gateway={"rate_limit": {"ip_per_s": 0.01, "ip_burst": 2}},
        wallet={"url": f"http://127.0.0.1:{_closed_port()}"},
    )
    statuses = [(await client.get("/api/v1/status")).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    refused = await client.get("/api/v1/status")
    assert (await refused.json())["code"] == "RATE_LIMITED"
    assert int(refused.headers["Retry-After"]) >= 1
    # The probes stay unlimited.
    assert (await client.get("/health/live")).status == 200


@pytest.mark.broker
@pytest.mark.postgres
async def test_status_is_ok_when_every_dependency_answers(
    gateway_env: Callable[..., tuple[str, str]], wallet_stub: str
) -> None:
    prefix, schema = gateway_env()
    settings = load_settings(
        topics={"prefix": prefix, "partitions": 4},
        gateway={"dev_mode": True, "postgres_schema": schema},
        wallet={"url": wallet_stub},
    )
    client = await _client(settings)
    try:
        resp = await client.get("/api/v1/status")
        assert resp.status == 200
        body = await resp.json()
        assert body["dependencies"] == {"kafka": "ok", "postgres": "ok", "wallet": "ok"}
        assert body["status"] == "ok"
        # /health/ready checks the same dependencies the same way.
        ready = await (await client.get("/health/ready")).json()
        assert ready == {"status": "ok", "checks": body["dependencies"]}
    finally:
        await client.close()


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Replaces the dependency checks with a slow fake; the list counts its calls."""
    calls: list[int] = []

    async def check(app: web.Application) -> dict[str, str]:
        calls.append(1)
        await asyncio.sleep(0.05)
        return {"kafka": "ok", "postgres": "ok", "wallet": f"call {len(calls)}"}

    monkeypatch.setattr(public, "check_dependencies", check)
    return calls


async def test_dependencies_are_probed_once_per_ttl_whoever_asks(probes: list[int]) -> None:
    clock = _Clock()
    status = GatewayStatus(ttl_s=5.0, clock=clock)
    app = web.Application()
    # Twenty concurrent askers share one probe.
    answers = await asyncio.gather(*(status.dependencies(app) for _ in range(20)))
    assert len(probes) == 1
    assert {states["wallet"] for _, states in answers} == {"call 1"}
    clock.now += 4.9
    _, states = await status.dependencies(app)
    assert (len(probes), states["wallet"]) == (1, "call 1")
    clock.now += 0.2
    _, states = await status.dependencies(app)
    assert (len(probes), states["wallet"]) == (2, "call 2")
    assert status.uptime_s == pytest.approx(5.1)


async def test_an_asker_that_goes_away_does_not_cancel_the_shared_probe(
    probes: list[int],
) -> None:
    status = GatewayStatus(ttl_s=5.0)
    app = web.Application()
    first = asyncio.ensure_future(status.dependencies(app))
    second = asyncio.ensure_future(status.dependencies(app))
    await asyncio.sleep(0.01)
    first.cancel()
    _, states = await second
    assert states["wallet"] == "call 1"
    assert len(probes) == 1


def test_status_is_in_the_openapi_document() -> None:
    operation = json.loads(DEFAULT_FILE.read_text())["paths"]["/api/v1/status"]["get"]
    assert operation["operationId"] == "getStatus"
    assert operation["security"] == []
    assert set(operation["responses"]) == {"200", "429"}
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/StatusResponse"}
