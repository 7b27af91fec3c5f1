"""The client's resilience against a local fake wallet: retries, backoff, breaker, timeouts."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY
from pydantic import ValidationError

from trade_engine.connectors.wallet import wire
from trade_engine.connectors.wallet.breaker import BreakerState, CircuitBreaker
from trade_engine.connectors.wallet.client import WalletClient
from trade_engine.connectors.wallet.exceptions import (
    CircuitOpenError,
    InsufficientBalanceError,
    UnavailableError,
)
from trade_engine.connectors.wallet.models import ReserveRequest

OK = {
    "success": True,
    "reservation_id": "r1",
    "order_id": "o1",
    "user_id": "u",
    "asset": "USDT",
    "amount": "1",
    "hold_remaining": "1",
    "available_balance": "9",
    "reserved_balance": "1",
    "entry_id": 1,
}
REQ = ReserveRequest(user_id="u", asset="USDT", amount="1", order_id="o1")  # type: ignore[arg-type]


@dataclass
class Fake:
    """Answers ``failures`` with ``fail_status`` first, then OK (or ``final``)."""

    failures: int = 0
    fail_status: int = 503
    final: tuple[int, dict[str, Any]] = (200, OK)
    delay_s: float = 0.0
    hits: int = 0
    auth: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        self.auth.append(request.headers.get("Authorization", ""))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.hits <= self.failures:
            return web.json_response(
                {"code": "WALLET_UNAVAILABLE", "message": "down", "details": {}},
                status=self.fail_status,
            )
        status, body = self.final
        return web.json_response(body, status=status)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[Fake, str]]:
    state = Fake()
    app = web.Application()
    app.router.add_post("/api/v1/wallets/reserve", state.handle)
    server = TestServer(app)
    await server.start_server()
    try:
        yield state, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def client(url: str, sleeps: Callable[[float], Any], **kw: Any) -> WalletClient:
    kw.setdefault("rng", lambda: 1.0)  # the full backoff cap, so it can be checked
    return WalletClient(url, "t", sleep=sleeps, backoff_base_s=0.1, backoff_max_s=0.5, **kw)


async def test_retries_5xx_with_backoff_then_succeeds(fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.failures = 3
    sleeps = Sleeps()
    async with client(url, sleeps, max_retries=5) as wallet:
        response = await wallet.reserve(REQ)
    assert response.available_balance == 9
    assert state.hits == 4
    assert sleeps.delays == [0.1, 0.2, 0.4]
    assert state.auth[0] == "Bearer t"


async def test_gives_up_after_max_retries_and_retries_429(fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.failures, state.fail_status = 10, 429
    sleeps = Sleeps()
    async with client(url, sleeps, max_retries=4) as wallet:
        with pytest.raises(UnavailableError) as exc:
            await wallet.reserve(REQ)
    assert exc.value.retriable
    assert exc.value.status == 429
    assert state.hits == 5
    assert sleeps.delays == [0.1, 0.2, 0.4, 0.5]  # capped at backoff_max_s


async def test_jitter_stays_under_the_cap(fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.failures = 2
    sleeps = Sleeps()
    async with client(url, sleeps, rng=lambda: 0.25) as wallet:
        await wallet.reserve(REQ)
    assert sleeps.delays == [0.025, 0.05]


async def test_no_retry_on_business_errors(fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.final = (
        422,
        {"code": "INSUFFICIENT_BALANCE", "message": "short", "details": {"available": "0"}},
    )
    sleeps = Sleeps()
    async with client(url, sleeps, max_retries=5) as wallet:
        with pytest.raises(InsufficientBalanceError) as exc:
            await wallet.reserve(REQ)
    assert (exc.value.code, exc.value.details, exc.value.retriable) == (
        "INSUFFICIENT_BALANCE",
        {"available": "0"},
        False,
    )
    assert state.hits == 1
    assert sleeps.delays == []
    assert wallet.breaker.state is BreakerState.CLOSED  # an answer is not a failure


async def test_connection_refused_is_retried() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps = Sleeps()
    async with client(f"http://127.0.0.1:{port}", sleeps, max_retries=2) as wallet:
        with pytest.raises(UnavailableError, match="unreachable"):
            await wallet.reserve(REQ)
    assert len(sleeps.delays) == 2


async def test_timeout_is_retriable(fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.delay_s = 0.5
    async with client(url, Sleeps(), max_retries=1, timeout_s=0.05) as wallet:
        with pytest.raises(UnavailableError):
            await wallet.reserve(REQ)
    assert state.hits == 2


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value("te_wallet_client_circuit_state", {"breaker": name})


async def test_breaker_opens_then_half_opens(fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.failures = 4
    clock = Clock()
    breaker = CircuitBreaker("test-breaker", failure_threshold=3, reset_timeout_s=30, clock=clock)
    async with client(url, Sleeps(), max_retries=0, breaker=breaker) as wallet:
        for _ in range(3):
            with pytest.raises(UnavailableError):
                await wallet.reserve(REQ)
        assert breaker.state is BreakerState.OPEN
        assert gauge("test-breaker") == 2
        with pytest.raises(CircuitOpenError) as exc:
            await wallet.reserve(REQ)
        assert state.hits == 3  # not attempted
        assert exc.value.details == {"retry_in_s": 30.0}

        clock.now += 30
        assert breaker.state is BreakerState.HALF_OPEN
        assert gauge("test-breaker") == 1
        with pytest.raises(UnavailableError):  # the trial call fails: open again
            await wallet.reserve(REQ)
        assert breaker.state is BreakerState.OPEN
        clock.now += 29
        with pytest.raises(CircuitOpenError):
            await wallet.reserve(REQ)

        clock.now += 1
        await wallet.reserve(REQ)  # the trial succeeds: closed
        assert breaker.state is BreakerState.CLOSED
        assert gauge("test-breaker") == 0
        assert state.hits == 5


def test_half_open_admits_limited_trials() -> None:
    clock = Clock()
    breaker = CircuitBreaker("trials", failure_threshold=1, reset_timeout_s=5, clock=clock)
    breaker.before_call()
    breaker.record_failure()
    clock.now += 5
    breaker.before_call()  # the one trial
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    breaker.record_abandoned()  # cancelled: the slot is free again
    breaker.before_call()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0


async def test_open_breaker_stops_retries(fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.failures = 100
    breaker = CircuitBreaker("stops", failure_threshold=2, reset_timeout_s=60, clock=Clock())
    sleeps = Sleeps()
    async with client(url, sleeps, max_retries=10, breaker=breaker) as wallet:
        with pytest.raises(UnavailableError) as exc:
            await wallet.reserve(REQ)
        assert exc.value.status == 503  # the failure that opened it
        with pytest.raises(CircuitOpenError):
            await wallet.reserve(REQ)
    assert state.hits == 2
    assert len(sleeps.delays) == 1  # one retry after the first failure, then no more


@dataclass
class FakeBatch:
    """A reserve batch endpoint: answers each item OK (or per ``answer``), after
    ``failures`` 503s; keeps the bodies it was sent."""

    failures: int = 0
    answer: Callable[[int, dict[str, Any]], dict[str, Any]] | None = None
    raw: bytes | None = None
    bodies: list[bytes] = field(default_factory=list)
    types: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(body)
        self.types.append(request.content_type)
        if len(self.bodies) <= self.failures:
            return web.json_response({"code": "WALLET_UNAVAILABLE", "message": "down"}, status=503)
        if self.raw is not None:
            return web.Response(body=self.raw, content_type="application/json")
        items = json.loads(body)["items"]
        answer = self.answer or (lambda i, item: {"index": i, "ok": True, "result": OK})
        return web.json_response({"results": [answer(i, it) for i, it in enumerate(items)]})


@pytest.fixture
async def batch() -> AsyncIterator[tuple[FakeBatch, str]]:
    state = FakeBatch()
    app = web.Application()
    app.router.add_post("/api/v1/wallets/reserve/batch", state.handle)
    server = TestServer(app)
    await server.start_server()
    try:
        yield state, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def _items(n: int) -> list[wire.ReserveItem]:
    fields = {"user_id": "u", "asset": "USDT", "amount": "1.50"}
    return [wire.ReserveItem(**fields, order_id=f"o{i}") for i in range(n)]  # type: ignore[arg-type]


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_batches_are_sent_once_per_chunk_and_read_as_structs(
    batch: tuple[FakeBatch, str],
) -> None:
    state, url = batch
    state.failures = 1
    error = {"code": "INSUFFICIENT_BALANCE", "message": "not enough", "details": {}}
    state.answer = lambda i, item: (
        {"index": i, "ok": False, "error": error}
        if item["order_id"] == "o1"
        else {"index": i, "ok": True, "result": OK | {"order_id": item["order_id"]}}
    )
    before = _sample("te_wallet_client_retries_total", operation="reserve_many")
    sleeps = Sleeps()
    async with client(url, sleeps, batch_size=2) as wallet:
        results = await wallet.reserve_many([*_items(2), REQ.model_copy(update={"order_id": "o2"})])
    # The first chunk once refused (503) then sent again, the second chunk once.
    assert len(state.bodies) == 3
    assert state.types == ["application/json"] * 3
    sent = [json.loads(b)["items"] for b in state.bodies]
    assert (
        sent[0]
        == sent[1]
        == [
            {"user_id": "u", "asset": "USDT", "amount": "1.5", "order_id": "o0"},
            {"user_id": "u", "asset": "USDT", "amount": "1.5", "order_id": "o1"},
        ]
    )
    assert sent[2] == [REQ.model_dump(mode="json", exclude_none=True) | {"order_id": "o2"}]
    assert _sample("te_wallet_client_retries_total", operation="reserve_many") == before + 1
    first, refused, third = results
    assert isinstance(first, wire.ReserveAnswer)
    assert (first.order_id, first.available_balance) == ("o0", Decimal(9))
    assert isinstance(refused, InsufficientBalanceError)
    assert refused.message == "not enough"
    assert isinstance(third, wire.ReserveAnswer)
    assert third.order_id == "o2"


async def test_answers_the_structs_refuse_are_read_as_before(
    batch: tuple[FakeBatch, str],
) -> None:
    state, url = batch
    lax = OK | {"entry_id": "7"}  # pydantic's lax int
    state.raw = json.dumps({"results": [{"index": 0, "ok": True, "result": lax}]}).encode()
    async with client(url, Sleeps()) as wallet:
        (answer,) = await wallet.reserve_many(_items(1))
        assert isinstance(answer, wire.ReserveAnswer)
        assert answer.entry_id == 7
        state.raw = json.dumps({"results": [{"index": 0, "ok": True, "result": {}}]}).encode()
        with pytest.raises(ValidationError):
            await wallet.reserve_many(_items(1))
        state.raw = json.dumps({"results": []}).encode()
        with pytest.raises(UnavailableError, match="answered 0 of 1"):
            await wallet.reserve_many(_items(1))


async def test_a_200_that_is_not_json_is_retried(batch: tuple[FakeBatch, str]) -> None:
    state, url = batch
    state.raw = b"<html>"
    sleeps = Sleeps()
    async with client(url, sleeps, max_retries=2) as wallet:
        with pytest.raises(UnavailableError, match="without a JSON body"):
            await wallet.reserve_many(_items(1))
    assert len(state.bodies) == 3
