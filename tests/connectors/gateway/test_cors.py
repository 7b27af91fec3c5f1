"""CORS: off by default (no Access-Control-* header, preflights not answered); when
origins are configured, preflights are answered before routing, authentication and
rate limits, and only allowed origins ever get the headers, on errors too."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from trade_engine.config import load_settings
from trade_engine.connectors.gateway.app import create_app
from trade_engine.errors import ConfigError

from .conftest import GatewayTestServer

APP = "https://app.example.com"
EVIL = "https://evil.example.net"
PREFLIGHT = {
    "Origin": APP,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[..., Any]]:
    """Factory: a test client of a REST-only gateway with ``gateway.cors`` = ``cors``.
    The routes used here need neither Kafka nor PostgreSQL."""
    clients: list[TestClient[Any, Any]] = []

    async def make(cors: dict[str, Any] | None = None, **gateway: Any) -> TestClient[Any, Any]:
        settings = load_settings(gateway={"dev_mode": True, "cors": cors or {}, **gateway})
        client: TestClient[Any, Any] = TestClient(
            GatewayTestServer(create_app(settings, market_data=False))
        )
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def _cors_headers(headers: Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower().startswith("access-control-")}


async def test_off_by_default(client_for: Callable[..., Any]) -> None:
    client = await client_for()
    resp = await client.get("/api/v1/symbols", headers={"Origin": APP})
    assert resp.status == 200
    assert _cors_headers(resp.headers) == {}
    assert "Vary" not in resp.headers
    # A preflight is an ordinary OPTIONS request: no route answers it.
    preflight = await client.options("/api/v1/orders", headers=PREFLIGHT)
    assert preflight.status == 405
    assert _cors_headers(preflight.headers) == {}


async def test_preflight_of_an_allowed_origin(client_for: Callable[..., Any]) -> None:
    client = await client_for({"allowed_origins": [APP], "max_age_s": 120})
    resp = await client.options("/api/v1/orders", headers=PREFLIGHT)
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert resp.headers["Access-Control-Allow-Methods"] == "GET, POST, PATCH, DELETE"
    assert resp.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert resp.headers["Access-Control-Max-Age"] == "120"
    assert resp.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Credentials" not in resp.headers


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({"Origin": EVIL}, "origin"),
        ({"Origin": APP + ":8443"}, "origin"),
        ({"Access-Control-Request-Method": "PUT"}, "method"),
        ({"Access-Control-Request-Headers": "authorization, x-forwarded-for"}, "headers"),
    ],
)
async def test_preflight_refusals_carry_no_cors_header(
    client_for: Callable[..., Any], headers: dict[str, str], refused: str
) -> None:
    client = await client_for({"allowed_origins": [APP]})
    resp = await client.options("/api/v1/orders", headers=PREFLIGHT | headers)
    assert resp.status == 403
    assert _cors_headers(resp.headers) == {}
    body = await resp.json()
    assert body["code"] == "CORS_NOT_ALLOWED"
    assert body["details"] == {"refused": refused}


async def test_responses_to_an_allowed_origin_carry_the_headers(
    client_for: Callable[..., Any],
) -> None:
    client = await client_for({"allowed_origins": [APP, "http://localhost:3000"]})
    resp = await client.get("/api/v1/symbols", headers={"Origin": "http://localhost:3000"})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    exposed = resp.headers["Access-Control-Expose-Headers"].split(", ")
    assert {"Retry-After", "X-RateLimit-Remaining", "Idempotent-Replayed"} <= set(exposed)
    assert resp.headers["Vary"] == "Origin"
    # Errors too: a browser script can read why it was refused.
    refused = await client.get("/api/v1/orders/open", headers={"Origin": APP})
    assert refused.status == 401
    assert refused.headers["Access-Control-Allow-Origin"] == APP
    assert (await refused.json())["code"].startswith("AUTH_")
    missing = await client.get("/api/v1/nowhere", headers={"Origin": APP})
    assert missing.status == 404
    assert missing.headers["Access-Control-Allow-Origin"] == APP


async def test_other_origins_and_same_origin_requests_get_none(
    client_for: Callable[..., Any],
) -> None:
    client = await client_for({"allowed_origins": [APP]})
    other = await client.get("/api/v1/symbols", headers={"Origin": EVIL})
    assert other.status == 200  # the server answers; the browser withholds it from EVIL
    assert _cors_headers(other.headers) == {}
    assert other.headers["Vary"] == "Origin"  # a cache must not serve it to APP either
    plain = await client.get("/api/v1/symbols")
    assert _cors_headers(plain.headers) == {}


async def test_any_origin(client_for: Callable[..., Any]) -> None:
    client = await client_for({"allowed_origins": ["*"]})
    resp = await client.options("/api/v1/orders", headers=PREFLIGHT | {"Origin": EVIL})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Vary" not in resp.headers
    get = await client.get("/api/v1/symbols", headers={"Origin": EVIL})
    assert get.headers["Access-Control-Allow-Origin"] == "*"


async def test_preflights_are_not_rate_limited(client_for: Callable[..., Any]) -> None:
    client = await client_for(
        {"allowed_origins": [APP]}, rate_limit={"ip_per_s": 0.01, "ip_burst": 1}
    )
    preflights = [await client.options("/api/v1/orders", headers=PREFLIGHT) for _ in range(5)]
    assert [r.status for r in preflights] == [204] * 5
    limited = [(await client.get("/api/v1/symbols", headers={"Origin": APP})) for _ in range(2)]
    assert [r.status for r in limited] == [200, 429]
    assert limited[1].headers["Access-Control-Allow-Origin"] == APP


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TE_GATEWAY__CORS__ALLOWED_ORIGINS", f'["{APP}"]')
    monkeypatch.setenv("TE_GATEWAY__CORS__ALLOWED_METHODS", '["get", "post"]')
    monkeypatch.setenv("TE_GATEWAY__CORS__MAX_AGE_S", "60")
    cors = load_settings().gateway.cors
    assert cors.enabled
    assert cors.allowed_origins == [APP]
    assert cors.allowed_methods == ["GET", "POST"]
    assert cors.max_age_s == 60
    assert not load_settings(gateway={"cors": {"allowed_origins": []}}).gateway.cors.enabled


@pytest.mark.parametrize(
    "origin",
    ["app.example.com", "https://app.example.com/", "https://app.example.com/x", "ftp://a"],
)
def test_an_origin_is_scheme_host_and_port(origin: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(gateway={"cors": {"allowed_origins": [origin]}})
    assert excinfo.value.setting.startswith("gateway.cors.allowed_origins")
