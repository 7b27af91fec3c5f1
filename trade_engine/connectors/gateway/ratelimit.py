"""Rate limits: GCRA token buckets per user and per client IP, in memory or in Redis.

GCRA (the generic cell rate algorithm) keeps one number per key, the
theoretical arrival time ``tat``: with emission interval ``T = 1/rate`` and
burst tolerance ``tau = burst * T``, a request at ``now`` is allowed when
``max(tat, now) + T - now <= tau``, and then ``tat`` moves to that sum. It is a
token bucket without a refill loop: ``burst`` requests at once, ``rate`` per
second sustained.

A request is checked against several keys at once (its IP and, once
authenticated, its user): all must allow it, and a refused request charges none
of them, so a client hammering with bad tokens cannot drain a user's bucket.

- ``LocalRateLimiter``: a dict in the process (one gateway process);
- ``RedisRateLimiter``: one Lua script per request, atomic on the server, on the
  server's clock (``TIME``), so every gateway process sees the same buckets.
  If Redis fails, requests are let through (and counted in
  ``te_gateway_ratelimit_errors_total``): an outage of the limiter must not stop
  trading, and the engine's own caps still hold.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from trade_engine.connectors.gateway import metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Limit:
    rate_per_s: float
    burst: int

    @property
    def interval_s(self) -> float:
        return 1.0 / self.rate_per_s


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for the most restrictive key of a request."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: float  # until the bucket is full again
    retry_after_s: float  # 0 when allowed

    def headers(self) -> dict[str, str]:
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(self.remaining, 0)),
            "X-RateLimit-Reset": str(math.ceil(self.reset_s)),
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return out


Keyed = Sequence[tuple[str, Limit]]


class RateLimiter(Protocol):
    async def hit(self, keys: Keyed) -> Decision | None:
        """Charge one request to every key, or to none when any refuses.

        None when the limiter cannot decide (its store is down): let it through.
        """
        ...

    async def close(self) -> None: ...


def evaluate(
    tats: Sequence[float | None], limits: Sequence[Limit], now: float
) -> tuple[Decision, list[float]]:
    """GCRA over several keys: the decision and each key's new ``tat``."""
    news: list[float] = []
    decision: Decision | None = None
    allowed = True
    retry = 0.0
    for stored, limit in zip(tats, limits, strict=True):
        t = limit.interval_s
        tau = t * limit.burst
        new = max(stored if stored is not None else now, now) + t
        over = new - now - tau
        if over > 1e-9:
            allowed = False
            retry = max(retry, over)
        remaining = math.floor((tau - (new - now)) / t + 1e-9)
        news.append(new)
        candidate = Decision(True, limit.burst, remaining, new - now, 0.0)
        if decision is None or candidate.remaining < decision.remaining:
            decision = candidate
    assert decision is not None
    if not allowed:
        decision = Decision(False, decision.limit, 0, decision.reset_s, retry)
    return decision, news


class LocalRateLimiter:
    """Buckets in this process. Keys idle for longer than their bucket are forgotten."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tats: dict[str, float] = {}
        self._hits = 0

    async def hit(self, keys: Keyed) -> Decision | None:
        now = self._clock()
        names = [k for k, _ in keys]
        decision, news = evaluate(
            [self._tats.get(k) for k in names], [limit for _, limit in keys], now
        )
        if decision.allowed:
            self._tats.update(zip(names, news, strict=True))
        self._hits += 1
        if self._hits % 10_000 == 0:
            self._tats = {k: v for k, v in self._tats.items() if v > now}
        return decision

    async def close(self) -> None:
        return None


# KEYS: bucket keys; ARGV: interval_s, burst per key. Returns per key
# {tat or "", ...} after charging (or not), and the server time, as strings:
# Lua numbers become integers on the way out, so floats travel as text.
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local news = {}
local olds = {}
local ok = true
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tau = interval * tonumber(ARGV[2 * i])
  olds[i] = redis.call('GET', KEYS[i])
  local tat = tonumber(olds[i] or now)
  if tat < now then tat = now end
  local new = tat + interval
  if new - now - tau > 1e-9 then ok = false end
  news[i] = new
end
local out = {tostring(now)}
for i = 1, #KEYS do
  out[#out + 1] = olds[i] or ''
  if ok then
    local ttl = math.ceil((news[i] - now) * 1000) + 1000
    redis.call('SET', KEYS[i], string.format('%.6f', news[i]), 'PX', ttl)
  end
end
return out
"""


class RedisRateLimiter:
    """Buckets shared by every gateway process through one Redis."""

    def __init__(self, url: str, *, prefix: str = "te:rl:", client: Any = None) -> None:
        import redis.asyncio as redis  # noqa: PLC0415 (only gateways with Redis need it)

        self._redis = client or redis.Redis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        self._prefix = prefix
        self._script = self._redis.register_script(_GCRA_LUA)

    async def hit(self, keys: Keyed) -> Decision | None:
        names = [self._prefix + k for k, _ in keys]
        args: list[str] = []
        for _, limit in keys:
            args += [repr(limit.interval_s), str(limit.burst)]
        try:
            raw = await self._script(keys=names, args=args)
        except Exception as exc:  # fail open: logged and counted
            metrics.RATELIMIT_ERRORS.inc()
            log.warning("rate limiter unavailable: %r", exc)
            return None
        values = [v.decode() if isinstance(v, bytes) else str(v) for v in raw]
        now = float(values[0])
        tats = [float(v) if v else None for v in values[1:]]
        decision, _ = evaluate(tats, [limit for _, limit in keys], now)
        return decision

    async def close(self) -> None:
        await self._redis.aclose()
