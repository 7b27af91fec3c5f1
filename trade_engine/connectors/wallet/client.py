"""The engine's client of the wallet service (aiohttp).

Each call has a timeout; calls that fail in a way that may pass (connection
error, timeout, 5xx, 429) are retried with full-jitter exponential backoff, up to
``max_retries`` times; business errors (4xx) are raised at once as typed
errors. Retrying is safe because every wallet operation is idempotent on its
key: a retry of a request that did reach the ledger returns the first result.
A circuit breaker stops calling a wallet that keeps failing. Batch helpers send
up to ``batch_size`` operations per call and return one result or error per item;
they speak msgspec (``wire``): one encode per call, one decode per answer, the answers
as ``wire`` Structs (pydantic reads an answer only when a Struct refuses it).

    async with WalletClient.from_settings(settings) as wallet:
        await wallet.reserve(ReserveRequest(user_id="u1", asset="USDT", amount="100",
                                            order_id="o1"))
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import BaseModel, SecretStr

from trade_engine import tracing
from trade_engine.config import Settings
from trade_engine.connectors.wallet import metrics, wire
from trade_engine.connectors.wallet.breaker import BreakerState, CircuitBreaker
from trade_engine.connectors.wallet.exceptions import (
    CircuitOpenError,
    UnavailableError,
    WalletError,
    error_from_body,
    error_from_item,
)
from trade_engine.connectors.wallet.models import (
    BalancesResponse,
    ReleaseRequest,
    ReleaseResponse,
    ReserveRequest,
    ReserveResponse,
    SettleTradeRequest,
    SettleTradeResponse,
    TransferRequest,
    TransferResponse,
)

M = TypeVar("M", bound=BaseModel)
_API = "/api/v1"


class WalletClient:
    def __init__(
        self,
        base_url: str,
        token: str | SecretStr,
        *,
        timeout_s: float = 2.0,
        batch_timeout_s: float | None = None,
        max_retries: int = 5,
        backoff_base_s: float = 0.05,
        backoff_max_s: float = 2.0,
        batch_size: int = 500,
        breaker: CircuitBreaker | None = None,
        session: aiohttp.ClientSession | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._base = base_url.rstrip("/")
        secret = token.get_secret_value() if isinstance(token, SecretStr) else token
        self._headers = {"Authorization": f"Bearer {secret}"}
        self._json_headers = self._headers | {"Content-Type": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._batch_timeout = aiohttp.ClientTimeout(total=batch_timeout_s or timeout_s * 5)
        self.max_retries = max_retries
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self.batch_size = batch_size
        self.breaker = breaker or CircuitBreaker()
        self._session = session
        self._owns_session = session is None
        self._sleep = sleep
        self._rng = rng

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> WalletClient:
        wallet = settings.wallet
        options: dict[str, Any] = {"timeout_s": wallet.timeout_s, "max_retries": wallet.max_retries}
        token = kwargs.pop("token", wallet.service_token)
        return cls(wallet.url, token, **(options | kwargs))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    # --- operations ------------------------------------------------------------------

    async def reserve(self, req: ReserveRequest) -> ReserveResponse:
        return await self._one("reserve", "/wallets/reserve", req, ReserveResponse)

    async def release(self, req: ReleaseRequest) -> ReleaseResponse:
        return await self._one("release", "/wallets/release", req, ReleaseResponse)

    async def settle_trade(self, req: SettleTradeRequest) -> SettleTradeResponse:
        return await self._one("settle_trade", "/wallets/settle-trade", req, SettleTradeResponse)

    async def deposit(self, req: TransferRequest) -> TransferResponse:
        return await self._one("deposit", "/admin/deposit", req, TransferResponse)

    async def withdraw(self, req: TransferRequest) -> TransferResponse:
        return await self._one("withdraw", "/admin/withdraw", req, TransferResponse)

    async def balances(self, user_id: str) -> BalancesResponse:
        body = await self._call("balances", "GET", f"/wallets/{user_id}/balances", None)
        return BalancesResponse.model_validate(body)

    async def reserve_many(
        self, reqs: Sequence[wire.ReserveItem | ReserveRequest]
    ) -> list[wire.ReserveAnswer | WalletError]:
        return await self._many("reserve_many", "reserve", "/wallets/reserve/batch", reqs)

    async def release_many(
        self, reqs: Sequence[wire.ReleaseItem | ReleaseRequest]
    ) -> list[wire.ReleaseAnswer | WalletError]:
        return await self._many("release_many", "release", "/wallets/release/batch", reqs)

    async def settle_many(
        self, reqs: Sequence[wire.SettleItem | SettleTradeRequest]
    ) -> list[wire.SettleAnswer | WalletError]:
        return await self._many("settle_many", "settle", "/wallets/settle-trade/batch", reqs)

    # --- plumbing --------------------------------------------------------------------

    async def _one(self, op: str, path: str, req: BaseModel, model: type[M]) -> M:
        body = await self._call(op, "POST", path, req.model_dump(mode="json", exclude_none=True))
        return model.model_validate(body)

    async def _many(self, op: str, kind: str, path: str, reqs: Sequence[Any]) -> list[Any]:
        """Per item, the answer (a ``wire`` Struct of ``kind``) or the typed error (not
        raised); an error of the call itself (unavailable, unauthorized) is raised."""
        out: list[Any] = []
        decode = _ANSWER_READERS[kind]
        for start in range(0, len(reqs), self.batch_size):
            chunk = reqs[start : start + self.batch_size]
            payload = wire.encode_items([wire.as_item(kind, r) for r in chunk])
            body = await self._call(op, "POST", path, payload, batch=True, decode=decode)
            if isinstance(body, list):
                if len(body) != len(chunk):
                    raise UnavailableError(f"wallet answered {len(body)} of {len(chunk)} items")
                out.extend(r.result if r.ok else error_from_item(r.error) for r in body)
            else:  # an answer the Structs refused: read as JSON, as it always was
                out.extend(_read_answers(kind, body, len(chunk)))
        return out

    async def _call(
        self,
        op: str,
        method: str,
        path: str,
        payload: Any,
        *,
        batch: bool = False,
        decode: Decode | None = None,
    ) -> Any:
        started = time.perf_counter()
        outcome = "ok"
        with tracing.span(
            f"wallet.{op}",
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": method, "url.path": f"{_API}{path}"},
        ) as current:
            try:
                return await self._call_retrying(
                    op, method, path, payload, batch=batch, decode=decode
                )
            except WalletError as exc:
                outcome = exc.code
                current.set_status(Status(StatusCode.ERROR, exc.code))
                raise
            finally:
                metrics.CLIENT_REQUESTS.labels(op, outcome).inc()
                metrics.CLIENT_SECONDS.labels(op).observe(time.perf_counter() - started)

    async def _call_retrying(
        self,
        op: str,
        method: str,
        path: str,
        payload: Any,
        *,
        batch: bool,
        decode: Decode | None,
    ) -> Any:
        attempt = 0
        while True:
            try:
                return await self._attempt(method, path, payload, batch, decode)
            except WalletError as exc:
                # An open circuit fails fast: waiting out its cool-down is the caller's call.
                give_up = not exc.retriable or isinstance(exc, CircuitOpenError)
                give_up = give_up or self.breaker.state is BreakerState.OPEN
                if give_up or attempt >= self.max_retries:
                    raise
                await self._sleep(self._backoff(attempt, exc))
                attempt += 1
                metrics.CLIENT_RETRIES.labels(op).inc()

    def _backoff(self, attempt: int, exc: WalletError) -> float:
        cap = min(self._backoff_max_s, self._backoff_base_s * 2.0**attempt)
        delay = self._rng() * cap
        retry_after = getattr(exc, "retry_after_s", None)
        if retry_after:
            delay = max(delay, min(float(retry_after), self._backoff_max_s))
        return delay

    async def _attempt(
        self, method: str, path: str, payload: Any, batch: bool, decode: Decode | None
    ) -> Any:
        self.breaker.before_call()
        try:
            body = await self._request(method, path, payload, batch, decode)
        except WalletError as exc:
            if exc.retriable:
                self.breaker.record_failure()
            else:
                self.breaker.record_success()  # the service answered: it is up
            raise
        except BaseException:
            self.breaker.record_abandoned()
            raise
        self.breaker.record_success()
        return body

    async def _request(
        self, method: str, path: str, payload: Any, batch: bool, decode: Decode | None = None
    ) -> Any:
        """The JSON body of a 200, or what ``decode`` makes of its bytes when it makes
        something of them; ``payload`` bytes are sent as they are (JSON)."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = f"{self._base}{_API}{path}"
        timeout = self._batch_timeout if batch else self._timeout
        if isinstance(payload, bytes):
            body_args: dict[str, Any] = {"data": payload, "headers": self._json_headers}
        else:
            body_args = {"json": payload, "headers": self._headers}
        decoded = None
        try:
            async with self._session.request(method, url, timeout=timeout, **body_args) as resp:
                status = resp.status
                if decode is not None and status == 200:
                    decoded = decode(await resp.read())
                text = "" if decoded is not None else await resp.text()
                retry_after = _retry_after(resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UnavailableError(
                f"wallet at {self._base} unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        if decoded is not None:
            return decoded
        try:
            body = json.loads(text) if text else None
        except json.JSONDecodeError:
            body = None
        if status == 200 and body is not None:
            return body
        if status == 200:
            raise UnavailableError("wallet answered 200 without a JSON body", status=502)
        raise error_from_body(status, body, retry_after)


Decode = Callable[[bytes], Any]
_ANSWER_READERS: dict[str, Decode] = {
    kind: functools.partial(wire.decode_answers, kind) for kind in wire.ANSWERS
}


def _read_answers(kind: str, body: Any, expected: int) -> list[Any]:
    """A batch answer read as JSON (what every answer was before the Structs): the same
    checks, the same errors (``KeyError``, pydantic's ``ValidationError``...)."""
    results = sorted(body["results"], key=lambda r: r["index"])
    if len(results) != expected:
        raise UnavailableError(f"wallet answered {len(results)} of {expected} items")
    return [
        wire.answer_from_json(kind, r["result"]) if r.get("ok") else error_from_item(r.get("error"))
        for r in results
    ]


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def stage_client(settings: Settings, name: str, reset_timeout_s: float = 5.0) -> WalletClient:
    """The client of a pipeline stage (risk, settlement): its breaker half-opens quickly,
    since these stages hold their input back and wait for the wallet anyway."""
    breaker = CircuitBreaker(f"wallet-{name}", reset_timeout_s=reset_timeout_s)
    return WalletClient.from_settings(settings, breaker=breaker)
