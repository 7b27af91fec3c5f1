"""Order routes against real Kafka and PostgreSQL: what reaches te.commands, idempotency,
ownership, strict decimals, history pages, the open-orders cap."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from trade_engine.connectors.gateway.app import RUNNER_ARGS, create_app
from trade_engine.connectors.gateway.auth import mint_token
from trade_engine.streams.partitioning import partition_for

from .conftest import LIMIT_ORDER, Gateway, gateway_settings

pytestmark = [pytest.mark.broker, pytest.mark.postgres]


async def _place(gw: Gateway, user: str, **over: Any) -> Any:
    return await gw.client.post(
        "/api/v1/orders", json={**LIMIT_ORDER, **over}, headers=gw.auth(user)
    )


async def test_place_is_durable_in_commands_on_the_murmur2_partition(gateway: Gateway) -> None:
    resp = await _place(gateway, "u1", client_order_id="c-1")
    assert resp.status == 201
    body = await resp.json()
    assert body["status"] == "PENDING"
    assert len(body["order_id"]) == 26
    assert resp.headers["Location"] == f"/api/v1/orders/{body['order_id']}"
    assert int(resp.headers["X-RateLimit-Remaining"]) >= 0
    [msg] = gateway.commands()
    assert msg.key() == b"BTC/USDT"
    assert msg.partition() == partition_for(b"BTC/USDT", 4)
    value = json.loads(msg.value())
    assert value["cmd"] == "place"
    assert value["order_id"] == body["order_id"]
    assert value["user_id"] == "u1"  # from the token, never from the body
    assert value["client_order_id"] == "c-1"
    assert value["price"] == "50000.00"
    assert dict(msg.headers())["v"] == b"1"
    # Known to the gateway before the history has it.
    got = await gateway.client.get(f"/api/v1/orders/{body['order_id']}", headers=gateway.auth("u1"))
    assert got.status == 200
    assert (await got.json())["order_id"] == body["order_id"]


async def test_repeat_returns_the_original_and_other_payload_conflicts(gateway: Gateway) -> None:
    first = await _place(gateway, "u1", client_order_id="same")
    again = await _place(gateway, "u1", client_order_id="same")
    assert first.status == again.status == 201
    assert await first.json() == await again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await _place(gateway, "u1", client_order_id="same", price="49999.00")
    assert other.status == 409
    assert (await other.json())["code"] == "CLIENT_ORDER_ID_IN_USE"
    # Another user may use the same client order id.
    theirs = await _place(gateway, "u2", client_order_id="same")
    assert theirs.status == 201
    assert len(gateway.commands()) == 2


async def test_other_users_order_is_404_and_nothing_changes(gateway: Gateway) -> None:
    placed = await (await _place(gateway, "u1", client_order_id="mine")).json()
    order_id = placed["order_id"]
    thief = gateway.auth("u2")
    c = gateway.client
    for method, path in (
        ("GET", f"/api/v1/orders/{order_id}"),
        ("DELETE", f"/api/v1/orders/{order_id}"),
        ("GET", "/api/v1/orders/client/mine"),
        ("DELETE", "/api/v1/orders/client/mine"),
    ):
        resp = await c.request(method, path, headers=thief)
        assert resp.status == 404, (method, path)
        assert (await resp.json())["code"] == "ORDER_NOT_FOUND"
    amend = await c.patch(f"/api/v1/orders/{order_id}", json={"quantity": "0.4"}, headers=thief)
    assert amend.status == 404
    assert [json.loads(m.value())["cmd"] for m in gateway.commands()] == ["place"]
    # The owner can cancel, by id and by client order id.
    mine = gateway.auth("u1")
    assert (await c.delete(f"/api/v1/orders/{order_id}", headers=mine)).status == 202
    assert (await c.delete("/api/v1/orders/client/mine", headers=mine)).status == 202
    cancels = [json.loads(m.value()) for m in gateway.commands()][1:]
    assert [(m["cmd"], m["order_id"], m["user_id"]) for m in cancels] == [
        ("cancel", order_id, "u1")
    ] * 2


BAD_DECIMALS = [
    ("NaN", "VALIDATION_NUMBER_FORMAT"),
    ("Infinity", "VALIDATION_NUMBER_FORMAT"),
    ("-Infinity", "VALIDATION_NUMBER_FORMAT"),
    ("1e3", "VALIDATION_NUMBER_FORMAT"),
    ("1E+999999999", "VALIDATION_NUMBER_FORMAT"),
    ("-0", "VALIDATION_NUMBER_FORMAT"),
    ("-1", "VALIDATION_NUMBER_FORMAT"),
    ("0x10", "VALIDATION_NUMBER_FORMAT"),
    ("1_000", "VALIDATION_NUMBER_FORMAT"),
    (" 1", "VALIDATION_NUMBER_FORMAT"),
    ("1.", "VALIDATION_NUMBER_FORMAT"),
    (".5", "VALIDATION_NUMBER_FORMAT"),
    ("01", "VALIDATION_NUMBER_FORMAT"),
    ("1" * 40, "VALIDATION_NUMBER_TOO_LARGE"),
    ("1" * 19, "VALIDATION_NUMBER_FORMAT"),
    ("0." + "1" * 19, "VALIDATION_NUMBER_FORMAT"),
    ("9" * 10_000, "VALIDATION_NUMBER_TOO_LARGE"),
    (1.5, "VALIDATION_NUMBER_FORMAT"),
    (None, "VALIDATION_PRICE_REQUIRED"),
]


@pytest.mark.parametrize(("price", "code"), BAD_DECIMALS)
async def test_bad_decimal_is_400_fast_and_nothing_produced(
    gateway: Gateway, price: Any, code: str
) -> None:
    headers = gateway.auth("u1")
    await gateway.client.get("/api/v1/symbols")  # warm the connection
    started = time.perf_counter()
    resp = await gateway.client.post(
        "/api/v1/orders", json={**LIMIT_ORDER, "price": price}, headers=headers
    )
    elapsed = time.perf_counter() - started
    assert resp.status == 400
    body = await resp.json()
    assert body["code"] == code, body
    assert elapsed < 0.05
    quantity = await gateway.client.post(
        "/api/v1/orders", json={**LIMIT_ORDER, "quantity": price or "-0"}, headers=headers
    )
    assert quantity.status == 400
    assert gateway.commands(wait_s=0.5) == []


@pytest.mark.parametrize(
    ("over", "code"),
    [
        ({"price": "50000.001"}, "VALIDATION_PRICE_OFF_TICK"),
        ({"quantity": "0.000001"}, "VALIDATION_QUANTITY_OFF_STEP"),
        ({"quantity": "0"}, "VALIDATION_QUANTITY_NOT_POSITIVE"),
        ({"type": "MARKET"}, "VALIDATION_PRICE_NOT_ALLOWED"),
        ({"time_in_force": "GTD"}, "VALIDATION_EXPIRE_AT_REQUIRED"),
        ({"symbol": "NOPE/USDT"}, "VALIDATION_UNKNOWN_SYMBOL"),
        ({"side": "HOLD"}, "VALIDATION_ERROR"),
        ({"leverage": "100"}, "VALIDATION_ERROR"),
    ],
)
async def test_static_rules_match_the_engine(
    gateway: Gateway, over: dict[str, Any], code: str
) -> None:
    resp = await _place(gateway, "u1", **over)
    assert resp.status == 400
    assert (await resp.json())["code"] == code


async def test_malformed_bodies_are_400(gateway: Gateway) -> None:
    headers = gateway.auth("u1") | {"Content-Type": "application/json"}
    for raw, code in (
        (b"{", "VALIDATION_INVALID_JSON"),
        (b"[" * 100_00 + b"]" * 100_00, "VALIDATION_INVALID_JSON"),
        (b'"x"', "VALIDATION_ERROR"),
        (b"\xff\xfe", "VALIDATION_INVALID_JSON"),
    ):
        resp = await gateway.client.post("/api/v1/orders", data=raw, headers=headers)
        assert resp.status == 400, raw[:10]
        assert (await resp.json())["code"] == code
    big = await gateway.client.post("/api/v1/orders", data=b" " * 100_000, headers=headers)
    assert big.status == 413
    assert gateway.commands(wait_s=0.5) == []


async def test_wait_without_a_matcher_answers_pending_after_the_timeout(gateway: Gateway) -> None:
    # The execution feed runs (create_app starts it), but no matcher answers on this
    # prefix: the order is durable, so the answer is PENDING once the wait times out.
    # The engine's own status with a matcher running: test_end_to_end.py.
    started = time.perf_counter()
    resp = await gateway.client.post(
        "/api/v1/orders?wait=true&wait_timeout_ms=300", json=LIMIT_ORDER, headers=gateway.auth("u1")
    )
    assert resp.status == 201
    assert (await resp.json())["status"] == "PENDING"
    assert time.perf_counter() - started >= 0.3
    assert [json.loads(m.value())["cmd"] for m in gateway.commands()] == ["place"]


async def test_wait_without_market_data_is_501_and_nothing_produced(
    gateway_env: Callable[..., tuple[str, str]],
) -> None:
    settings = gateway_settings(*gateway_env())
    server = TestServer(create_app(settings, market_data=False))
    await server.start_server(**RUNNER_ARGS)
    async with TestClient(server) as client:
        headers = {"Authorization": "Bearer " + mint_token(settings.gateway.auth, "u1")}
        resp = await client.post("/api/v1/orders?wait=true", json=LIMIT_ORDER, headers=headers)
        assert resp.status == 501
        assert (await resp.json())["code"] == "WAIT_NOT_AVAILABLE"
        depth = await client.get("/api/v1/depth/BTC-USDT")
        assert depth.status == 503
        assert (await depth.json())["code"] == "MARKET_DATA_UNAVAILABLE"
        gw = Gateway(settings, client, "")
        assert gw.commands(wait_s=0.5) == []


async def test_amend_mass_cancel_and_admin(gateway: Gateway) -> None:
    placed = await (await _place(gateway, "u1")).json()
    c, mine = gateway.client, gateway.auth("u1")
    off = await c.patch(
        f"/api/v1/orders/{placed['order_id']}", json={"price": "1.001"}, headers=mine
    )
    assert (await off.json())["code"] == "VALIDATION_PRICE_OFF_TICK"
    amend = await c.patch(
        f"/api/v1/orders/{placed['order_id']}", json={"quantity": "0.4"}, headers=mine
    )
    assert amend.status == 202
    mass = await c.delete("/api/v1/orders?symbol=ETH/USDT&side=SELL", headers=mine)
    assert mass.status == 202
    admin_path = "/api/v1/admin/symbols/state"
    halt = {"symbol": "ETH/USDT", "trading_state": "HALT"}
    assert (await c.post(admin_path, json=halt, headers=mine)).status == 403
    ok = await c.post(admin_path, json=halt, headers=gateway.auth("ops", admin=True))
    assert ok.status == 202
    # BTC and ETH sit on different partitions: compare per command.
    cmds = {m["cmd"]: m for m in (json.loads(m.value()) for m in gateway.commands())}
    assert sorted(cmds) == ["amend", "mass_cancel", "place", "symbol_admin"]
    assert cmds["amend"]["quantity"] == "0.4"
    assert cmds["symbol_admin"]["trading_state"] == "HALT"
    assert cmds["mass_cancel"] == {
        "v": 1,
        "cmd": "mass_cancel",
        "symbol": "ETH/USDT",
        "user_id": "u1",
        "side": "SELL",
    }


async def _insert_orders(
    settings: Any, schema: str, rows: list[tuple[str, str, str, datetime]]
) -> None:
    conn = await asyncpg.connect(settings.postgres.dsn())
    try:
        await conn.executemany(
            f'INSERT INTO "{schema}".orders (order_id, user_id, symbol, side, order_type, status, '
            "quantity, price, created_at, updated_at, accepted_seq, last_seq) "
            "VALUES ($1, $2, 'BTC/USDT', 'BUY', 'LIMIT', $3, 1, 50000, $4, $4, 1, 1)",
            rows,
        )
    finally:
        await conn.close()


async def test_history_pages_and_open_orders_are_the_callers_only(gateway: Gateway) -> None:
    base = datetime.now(UTC) - timedelta(hours=1)
    rows = [
        (f"o{i:02d}", "u1", "OPEN" if i % 2 else "FILLED", base + timedelta(minutes=i))
        for i in range(7)
    ]
    rows += [("x1", "u2", "OPEN", base)]
    await _insert_orders(gateway.settings, gateway.schema, rows)
    c, mine = gateway.client, gateway.auth("u1")
    seen: list[str] = []
    cursor = ""
    while True:
        resp = await c.get(f"/api/v1/orders?symbol=BTC/USDT&limit=3{cursor}", headers=mine)
        assert resp.status == 200
        page = await resp.json()
        seen += [o["order_id"] for o in page["items"]]
        if not page["next_cursor"]:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == [f"o{i:02d}" for i in reversed(range(7))]
    open_ = await (await c.get("/api/v1/orders/open", headers=mine)).json()
    assert [o["order_id"] for o in open_["items"]] == ["o05", "o03", "o01"]
    bad = await c.get("/api/v1/orders?symbol=BTC/USDT&cursor=bm9wZQ", headers=mine)
    assert (await bad.json())["code"] == "VALIDATION_INVALID_CURSOR"
    other = await c.get("/api/v1/orders/x1", headers=mine)
    assert other.status == 404


async def test_open_orders_cap(
    gateway_env: Callable[..., tuple[str, str]],
) -> None:
    prefix, schema = gateway_env()
    settings = gateway_settings(prefix, schema, max_open_orders_per_user=2)
    now = datetime.now(UTC)
    await _insert_orders(settings, schema, [("a", "u1", "OPEN", now), ("b", "u1", "OPEN", now)])
    server = TestServer(create_app(settings))
    await server.start_server(**RUNNER_ARGS)
    async with TestClient(server) as client:
        headers = {"Authorization": "Bearer " + mint_token(settings.gateway.auth, "u1")}
        resp = await client.post("/api/v1/orders", json=LIMIT_ORDER, headers=headers)
        assert resp.status == 422
        assert (await resp.json())["code"] == "LIMIT_OPEN_ORDERS"
        ioc = await client.post(
            "/api/v1/orders", json={**LIMIT_ORDER, "time_in_force": "IOC"}, headers=headers
        )
        assert ioc.status == 201  # cannot rest, so it does not count against the cap


async def test_orders_only_the_history_knows_are_found_and_keep_their_client_ids(
    gateway: Gateway,
) -> None:
    """Orders this gateway's store never saw (placed through another gateway) are read from
    the history: by client order id, in the open orders, and an open one's client order id
    is refused to a new place while an ended one's is free."""
    now = datetime.now(UTC)
    conn = await asyncpg.connect(gateway.settings.postgres.dsn())
    try:
        await conn.executemany(
            f'INSERT INTO "{gateway.schema}".orders (order_id, user_id, symbol, side, '
            "order_type, status, client_order_id, quantity, price, created_at, updated_at, "
            "accepted_seq, last_seq) "
            "VALUES ($1, 'u1', $2, 'BUY', 'LIMIT', $3, $4, 1, 50000, $5, $5, 1, 1)",
            [
                ("h1", "BTC/USDT", "OPEN", "old-open", now - timedelta(minutes=2)),
                ("h2", "ETH/USDT", "PARTIALLY_FILLED", None, now - timedelta(minutes=1)),
                ("h3", "BTC/USDT", "FILLED", "old-done", now),
            ],
        )
    finally:
        await conn.close()
    c, mine = gateway.client, gateway.auth("u1")

    got = await c.get("/api/v1/orders/client/old-open", headers=mine)
    assert got.status == 200
    body = await got.json()
    assert (body["order_id"], body["status"], body["symbol"]) == ("h1", "OPEN", "BTC/USDT")
    assert (await c.get("/api/v1/orders/client/old-open", headers=gateway.auth("u2"))).status == 404

    every = await (await c.get("/api/v1/orders/open", headers=mine)).json()
    assert [o["order_id"] for o in every["items"]] == ["h2", "h1"]
    btc = await (await c.get("/api/v1/orders/open?symbol=BTC/USDT", headers=mine)).json()
    assert [o["order_id"] for o in btc["items"]] == ["h1"]

    taken = await _place(gateway, "u1", client_order_id="old-open")
    assert taken.status == 409
    assert (await taken.json())["code"] == "CLIENT_ORDER_ID_IN_USE"
    free = await _place(gateway, "u1", client_order_id="old-done")
    assert free.status == 201
    assert [json.loads(m.value())["client_order_id"] for m in gateway.commands()] == ["old-done"]
