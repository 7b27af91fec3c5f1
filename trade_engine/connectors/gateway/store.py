"""Where the gateway remembers the orders it placed: idempotency and "not yet in history".

Each order placed through the gateway has a record: owner, symbol, client order
id, a fingerprint of the request and the response sent. It serves

- idempotency: ``(user, client_order_id)`` is claimed atomically before the
  command is produced; a repeat finds the claim and gets the original response
  (same fingerprint) or a conflict (another payload) — until the order has
  ended, when the id may be reused (unique among *open* orders);
- ``GET``/``DELETE`` of an order the Postgres history does not show yet (the
  sink writes it once the engine accepted it), and its symbol for a cancel.

Records expire after ``gateway.idempotency_ttl_s`` (24 h by default); after
that the Postgres history answers alone. ``LocalOrderStore`` keeps them in the
process (one gateway process); ``RedisOrderStore`` in Redis, shared by every
process, so a retry that lands on another process still finds its original.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class OrderRecord:
    order_id: str
    user_id: str
    symbol: str
    client_order_id: str | None
    fingerprint: str
    created_at: float
    response: dict[str, Any] | None = None  # None while the command is in flight

    def with_response(self, response: dict[str, Any]) -> OrderRecord:
        return replace(self, response=response)

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str | bytes) -> OrderRecord:
        return cls(**json.loads(raw))


def fingerprint(request: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical request: the same order asked twice hashes the same."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class OrderStore(Protocol):
    async def claim(self, record: OrderRecord) -> OrderRecord | None:
        """Store ``record``; with a client order id, only if that id is free.

        Returns the record holding the id when it is taken (nothing stored).
        """
        ...

    async def put(self, record: OrderRecord) -> None: ...

    async def drop(self, record: OrderRecord) -> None:
        """Forget a record whose command never became durable (and free its id)."""
        ...

    async def take_over(self, old: OrderRecord, new: OrderRecord) -> bool:
        """Give ``old``'s client order id (its order has ended) to ``new``; False if it moved."""
        ...

    async def get(self, order_id: str) -> OrderRecord | None: ...

    async def by_client_id(self, user_id: str, client_order_id: str) -> OrderRecord | None: ...

    async def close(self) -> None: ...


class LocalOrderStore:
    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self._ttl = ttl_s
        self._clock = clock
        self._orders: OrderedDict[str, OrderRecord] = OrderedDict()
        self._client_ids: dict[tuple[str, str], str] = {}

    async def claim(self, record: OrderRecord) -> OrderRecord | None:
        self._expire()
        if record.client_order_id is not None:
            key = (record.user_id, record.client_order_id)
            holder = self._client_ids.get(key)
            if holder is not None and holder in self._orders:
                return self._orders[holder]
            self._client_ids[key] = record.order_id
        self._orders[record.order_id] = record
        return None

    async def put(self, record: OrderRecord) -> None:
        self._orders[record.order_id] = record

    async def drop(self, record: OrderRecord) -> None:
        self._orders.pop(record.order_id, None)
        if record.client_order_id is not None:
            key = (record.user_id, record.client_order_id)
            if self._client_ids.get(key) == record.order_id:
                del self._client_ids[key]

    async def take_over(self, old: OrderRecord, new: OrderRecord) -> bool:
        assert new.client_order_id is not None
        key = (new.user_id, new.client_order_id)
        if self._client_ids.get(key) != old.order_id:
            return False
        self._client_ids[key] = new.order_id
        self._orders[new.order_id] = new
        return True

    async def get(self, order_id: str) -> OrderRecord | None:
        record = self._orders.get(order_id)
        if record is not None and record.created_at + self._ttl < self._clock():
            return None
        return record

    async def by_client_id(self, user_id: str, client_order_id: str) -> OrderRecord | None:
        holder = self._client_ids.get((user_id, client_order_id))
        return None if holder is None else await self.get(holder)

    async def close(self) -> None:
        return None

    def _expire(self) -> None:
        horizon = self._clock() - self._ttl
        while self._orders:
            order_id, oldest = next(iter(self._orders.items()))
            if oldest.created_at >= horizon:
                break
            del self._orders[order_id]
            if oldest.client_order_id is not None:
                key = (oldest.user_id, oldest.client_order_id)
                if self._client_ids.get(key) == order_id:
                    del self._client_ids[key]


# KEYS[1] the client-id key; ARGV[1] the old order id, ARGV[2] the new one, ARGV[3] ttl ms.
_TAKE_OVER_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


class RedisOrderStore:
    def __init__(self, url: str, ttl_s: float, *, prefix: str = "te:gw:") -> None:
        import redis.asyncio as redis  # noqa: PLC0415 (only gateways with Redis need it)

        self._redis = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._ttl_ms = int(ttl_s * 1000)
        self._prefix = prefix
        self._take_over = self._redis.register_script(_TAKE_OVER_LUA)

    def _order_key(self, order_id: str) -> str:
        return f"{self._prefix}o:{order_id}"

    def _client_key(self, user_id: str, client_order_id: str) -> str:
        return f"{self._prefix}c:{user_id}|{client_order_id}"

    async def claim(self, record: OrderRecord) -> OrderRecord | None:
        # The record is written before the claim, so a claim never names a missing record.
        await self.put(record)
        if record.client_order_id is None:
            return None
        key = self._client_key(record.user_id, record.client_order_id)
        if await self._redis.set(key, record.order_id, nx=True, px=self._ttl_ms):
            return None
        await self._redis.delete(self._order_key(record.order_id))
        holder = await self._redis.get(key)
        existing = await self.get(holder.decode()) if holder else None
        if existing is None:  # the holder expired in between: try once more
            await self.put(record)
            if await self._redis.set(key, record.order_id, nx=True, px=self._ttl_ms):
                return None
            raise RuntimeError("client order id claim raced twice")
        return existing

    async def put(self, record: OrderRecord) -> None:
        await self._redis.set(self._order_key(record.order_id), record.dumps(), px=self._ttl_ms)

    async def drop(self, record: OrderRecord) -> None:
        await self._redis.delete(self._order_key(record.order_id))
        if record.client_order_id is not None:
            key = self._client_key(record.user_id, record.client_order_id)
            await self._take_over(keys=[key], args=[record.order_id, "", 1])

    async def take_over(self, old: OrderRecord, new: OrderRecord) -> bool:
        assert new.client_order_id is not None
        await self.put(new)
        key = self._client_key(new.user_id, new.client_order_id)
        moved = await self._take_over(keys=[key], args=[old.order_id, new.order_id, self._ttl_ms])
        if not moved:
            await self._redis.delete(self._order_key(new.order_id))
        return bool(moved)

    async def get(self, order_id: str) -> OrderRecord | None:
        raw = await self._redis.get(self._order_key(order_id))
        return None if raw is None else OrderRecord.loads(raw)

    async def by_client_id(self, user_id: str, client_order_id: str) -> OrderRecord | None:
        holder = await self._redis.get(self._client_key(user_id, client_order_id))
        return None if holder is None else await self.get(holder.decode())

    async def close(self) -> None:
        await self._redis.aclose()
