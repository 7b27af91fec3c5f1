"""The HTTP service end to end on real PostgreSQL, through raw HTTP and through WalletClient."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from trade_engine.config import Settings
from trade_engine.connectors.wallet.client import WalletClient
from trade_engine.connectors.wallet.exceptions import (
    IdempotencyConflictError,
    InsufficientBalanceError,
    ReservationNotFoundError,
    UnauthorizedError,
)
from trade_engine.connectors.wallet.models import (
    ReleaseRequest,
    ReserveRequest,
    ReserveResponse,
    SettleTradeRequest,
    SettleTradeResponse,
    TransferRequest,
)
from trade_engine.wallet.service import ServiceConfig, create_app

from .conftest import drop_schema, new_schema

pytestmark = pytest.mark.postgres
TOKEN = "service-secret"
ADMIN = "admin-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    schema = new_schema()
    config = ServiceConfig(
        dsn=settings.postgres.dsn(),
        service_token=SecretStr(TOKEN),
        admin_token=SecretStr(ADMIN),
        schema=schema,
        pool_min_size=1,
    )
    client = TestClient(TestServer(create_app(config)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await drop_schema(settings.postgres.dsn(), schema)


async def post(
    http: TestClient[Any, Any], path: str, body: Any, headers: Any = AUTH
) -> tuple[int, Any]:
    resp = await http.post(path, json=body, headers=headers)
    return resp.status, await resp.json()


async def fund(http: TestClient[Any, Any], user: str, asset: str, amount: str) -> None:
    status, body = await post(
        http,
        "/api/v1/admin/deposit",
        {"user_id": user, "asset": asset, "amount": amount, "idempotency_key": f"{user}{asset}"},
        ADMIN_AUTH,
    )
    assert status == 200, body


async def test_auth_health_and_error_format(http: TestClient[Any, Any]) -> None:
    body = {"user_id": "u", "asset": "USDT", "amount": "1", "order_id": "o1"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        status, err = await post(http, "/api/v1/wallets/reserve", body, headers)
        assert (status, err["code"]) == (401, "UNAUTHORIZED")
        assert set(err) == {"code", "message", "details"}
    # Admin routes take only the admin token when one is configured.
    status, err = await post(http, "/api/v1/admin/deposit", {}, AUTH)
    assert (status, err["code"]) == (401, "UNAUTHORIZED")
    assert (await http.get("/health/live")).status == 200
    ready = await http.get("/health/ready")
    assert (ready.status, await ready.json()) == (200, {"status": "ok", "database": "ok"})
    status, err = await post(http, "/api/v1/wallets/reserve", {**body, "amount": "1e3"})
    assert (status, err["code"]) == (400, "VALIDATION_ERROR")
    assert err["details"]["errors"][0]["field"] == "amount"
    resp = await http.post("/api/v1/wallets/reserve", data=b"{nope", headers=AUTH)
    assert (resp.status, (await resp.json())["code"]) == (400, "VALIDATION_ERROR")
    resp = await http.get("/api/v1/wallets/nobody/balances", headers=AUTH)
    assert (resp.status, (await resp.json())["code"]) == (404, "USER_NOT_FOUND")
    resp = await http.get("/api/v1/nothing", headers=AUTH)
    assert (resp.status, (await resp.json())["code"]) == (404, "NOT_FOUND")
    metrics = await (await http.get("/metrics")).text()
    assert 'te_wallet_http_requests_total{route="/api/v1/wallets/reserve",status="401"}' in metrics


async def test_reserve_settle_release_over_http(http: TestClient[Any, Any]) -> None:
    await fund(http, "b", "USDT", "1000")
    await fund(http, "s", "BTC", "1")
    reserve = {
        "user_id": "b",
        "asset": "USDT",
        "amount": "500",
        "order_id": "ob",
        "reason": "BUY_ORDER",
    }
    status, first = await post(http, "/api/v1/wallets/reserve", reserve)
    assert status == 200
    assert first["available_balance"] == "500"
    assert first["reserved_balance"] == "500"
    resp = await http.post("/api/v1/wallets/reserve", json=reserve, headers=AUTH)
    assert resp.headers["Idempotent-Replayed"] == "true"
    assert await resp.json() == first
    status, err = await post(http, "/api/v1/wallets/reserve", {**reserve, "amount": "501"})
    assert (status, err["code"]) == (409, "IDEMPOTENCY_CONFLICT")
    status, err = await post(
        http, "/api/v1/wallets/reserve", {**reserve, "amount": "501", "order_id": "o2"}
    )
    assert (status, err["code"]) == (422, "INSUFFICIENT_BALANCE")
    await post(
        http,
        "/api/v1/wallets/reserve",
        {"user_id": "s", "asset": "BTC", "amount": "1", "order_id": "os"},
    )
    trade = {
        "trade_id": "BTC/USDT:9",
        "symbol": "BTC/USDT",
        "buyer_user_id": "b",
        "seller_user_id": "s",
        "buyer_order_id": "ob",
        "seller_order_id": "os",
        "base_asset": "BTC",
        "quote_asset": "USDT",
        "quantity": "0.5",
        "price": "900",
        "quote_quantity": "450",
        "buyer_fee": "0.0005",
        "seller_fee": "0.45",
        "buyer_fee_asset": "BTC",
        "seller_fee_asset": "USDT",
    }
    status, settled = await post(http, "/api/v1/wallets/settle-trade", trade)
    assert status == 200, settled
    assert settled["buyer_balances"] == {
        "BTC": {"available": "0.4995", "reserved": "0"},
        "USDT": {"available": "500", "reserved": "50"},
    }
    assert settled["seller_balances"]["USDT"] == {"available": "449.55", "reserved": "0"}
    status, released = await post(
        http,
        "/api/v1/wallets/release",
        {
            "user_id": "b",
            "asset": "USDT",
            "order_id": "ob",
            "reservation_id": first["reservation_id"],
        },
    )
    assert (status, released["released_amount"], released["available_balance"]) == (
        200,
        "50",
        "550",
    )
    resp = await http.get("/api/v1/wallets/s/balances", headers=AUTH)
    assert await resp.json() == {
        "user_id": "s",
        "balances": {
            "BTC": {"available": "0", "reserved": "0.5"},
            "USDT": {"available": "449.55", "reserved": "0"},
        },
    }


async def test_batches(http: TestClient[Any, Any]) -> None:
    await fund(http, "u", "USDT", "100")
    await fund(http, "v", "BTC", "10")
    items = [
        {"user_id": "u", "asset": "USDT", "amount": "60", "order_id": "o1"},
        {"user_id": "u", "asset": "USDT", "amount": "60", "order_id": "o2"},  # 40 left: fails
        {"user_id": "u", "asset": "USDT", "amount": "-1", "order_id": "o3"},
        {"user_id": "v", "asset": "BTC", "amount": "2", "order_id": "o4"},
    ]
    status, body = await post(http, "/api/v1/wallets/reserve/batch", {"items": items})
    assert status == 200
    results = body["results"]
    assert [(r["index"], r["ok"]) for r in results] == [
        (0, True),
        (1, False),
        (2, False),
        (3, True),
    ]
    assert results[1]["error"]["code"] == "INSUFFICIENT_BALANCE"
    assert results[2]["error"]["code"] == "VALIDATION_ERROR"
    trade = {
        "trade_id": "t1",
        "buyer_user_id": "u",
        "seller_user_id": "v",
        "buyer_order_id": "o1",
        "seller_order_id": "o4",
        "base_asset": "BTC",
        "quote_asset": "USDT",
        "quantity": "1",
        "price": "30",
    }
    status, body = await post(
        http,
        "/api/v1/wallets/settle-trade/batch",
        {"items": [trade, {**trade, "trade_id": "t2"}, {**trade, "trade_id": "t3"}]},
    )
    assert [r["ok"] for r in body["results"]] == [True, True, False]
    assert body["results"][2]["error"]["code"] == "RESERVATION_EXCEEDED"
    status, body = await post(
        http,
        "/api/v1/wallets/release/batch",
        {
            "items": [
                {"user_id": "u", "asset": "USDT", "order_id": "o1"},
                {"user_id": "v", "asset": "BTC", "order_id": "o4"},
                {"user_id": "v", "asset": "BTC", "order_id": "o9"},
            ]
        },
    )
    assert [r.get("result", {}).get("released_amount") for r in body["results"]] == ["0", "0", None]
    assert body["results"][2]["error"]["code"] == "RESERVATION_NOT_FOUND"
    for bad in ({"items": []}, {"items": "x"}, [1]):
        status, err = await post(http, "/api/v1/wallets/release/batch", bad)
        assert (status, err["code"]) == (400, "VALIDATION_ERROR")


async def test_batch_answers_read_as_single_ones(http: TestClient[Any, Any]) -> None:
    """The msgspec batch path answers what the pydantic single path answers: the same
    fields in the same order, the same stored answer and request hash whichever
    endpoint saw a key first (non-ASCII text and non-canonical amounts included)."""
    await fund(http, "u", "USDT", "100")
    await fund(http, "v", "BTC", "10")
    first = {"user_id": "u", "asset": "USDT", "amount": "1.50", "order_id": "o1", "reason": "café"}
    second = {"user_id": "v", "asset": "BTC", "amount": "2", "order_id": "o2"}
    resp = await http.post("/api/v1/wallets/reserve/batch", json={"items": [first]}, headers=AUTH)
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    (batched,) = (await resp.json())["results"]
    assert list(batched) == ["index", "ok", "result"]
    assert list(batched["result"]) == list(ReserveResponse.model_fields)
    assert batched["result"]["amount"] == "1.5"
    resp = await http.post("/api/v1/wallets/reserve", json=first, headers=AUTH)
    assert resp.headers.get("Idempotent-Replayed") == "true"
    assert await resp.json() == batched["result"]
    # A key first seen by the single endpoint replays through the batch one.
    status, single = await post(http, "/api/v1/wallets/reserve", second)
    assert status == 200
    status, body = await post(http, "/api/v1/wallets/reserve/batch", {"items": [first, second]})
    assert [r["result"] for r in body["results"]] == [batched["result"], single]
    trade = {
        "trade_id": "t1",
        "buyer_user_id": "u",
        "seller_user_id": "v",
        "buyer_order_id": "o1",
        "seller_order_id": "o2",
        "base_asset": "BTC",
        "quote_asset": "USDT",
        "quantity": "0.5",
        "price": "3",
        "buyer_fee": "0.001",
    }
    status, body = await post(http, "/api/v1/wallets/settle-trade/batch", {"items": [trade]})
    (settled,) = body["results"]
    assert list(settled["result"]) == list(SettleTradeResponse.model_fields)
    assert settled["result"]["buyer_balances"] == {
        "BTC": {"available": "0.499", "reserved": "0"},
        "USDT": {"available": "98.5", "reserved": "0"},
    }
    status, again = await post(http, "/api/v1/wallets/settle-trade", trade)
    assert (status, again) == (200, settled["result"])


async def test_client_against_service(http: TestClient[Any, Any]) -> None:
    url = str(http.make_url("")).rstrip("/")
    async with WalletClient(url, ADMIN, max_retries=0) as admin:
        await admin.deposit(
            TransferRequest(user_id="b", asset="USDT", amount="100", idempotency_key="1")
        )  # type: ignore[arg-type]
        await admin.deposit(
            TransferRequest(user_id="s", asset="BTC", amount="1", idempotency_key="2")
        )  # type: ignore[arg-type]
    async with WalletClient(url, SecretStr(TOKEN), max_retries=2) as wallet:
        reserved = await wallet.reserve_many(
            [
                ReserveRequest(user_id="b", asset="USDT", amount="100", order_id=f"b{i}")  # type: ignore[arg-type]
                for i in range(2)
            ]
            + [ReserveRequest(user_id="s", asset="BTC", amount="1", order_id="s0")]
        )  # type: ignore[arg-type]
        assert isinstance(reserved[1], InsufficientBalanceError)
        assert not isinstance(reserved[0], Exception)
        assert reserved[0].hold_remaining == Decimal(100)
        trades = [
            SettleTradeRequest.model_validate(
                {
                    "trade_id": f"t{i}",
                    "buyer_user_id": "b",
                    "seller_user_id": "s",
                    "buyer_order_id": "b0",
                    "seller_order_id": "s0",
                    "base_asset": "BTC",
                    "quote_asset": "USDT",
                    "quantity": "0.25",
                    "price": "100",
                }
            )
            for i in range(4)
        ]
        settled = await wallet.settle_many(trades)
        assert [isinstance(r, Exception) for r in settled] == [False, False, False, False]
        with pytest.raises(IdempotencyConflictError):
            await wallet.settle_trade(trades[0].model_copy(update={"price": Decimal(99)}))
        with pytest.raises(ReservationNotFoundError):
            await wallet.release(ReleaseRequest(user_id="b", asset="USDT", order_id="b1"))
        released = await wallet.release_many(
            [ReleaseRequest(user_id="b", asset="USDT", order_id="b0")]
        )
        assert not isinstance(released[0], Exception)
        assert released[0].released_amount == 0
        balances = await wallet.balances("b")
        assert balances.balances["BTC"].available == Decimal(1)
    async with WalletClient(url, "wrong", max_retries=3) as intruder:
        with pytest.raises(UnauthorizedError):
            await intruder.balances("b")
