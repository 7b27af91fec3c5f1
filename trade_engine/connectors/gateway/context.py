"""What the REST and WebSocket halves of the gateway share: the principal and app keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from trade_engine.config import Settings
from trade_engine.streams.execution_records import AcceptedExecution, RejectedExecution


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: ``user_id`` is the token's ``sub``."""

    user_id: str
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes


class Authenticator(Protocol):
    """Verifies a bearer token; raises an error mapped to 401 when it is not acceptable."""

    def verify(self, token: str) -> Principal: ...


class ExecutionFeed(Protocol):
    """The gateway's one follower of the executions topic, fanned out in memory.

    REST uses it to wait for an order's first execution record (``?wait=true``);
    the private WebSocket channel subscribes to one user's records.
    """

    async def first_execution(
        self, order_id: str, timeout_s: float
    ) -> AcceptedExecution | RejectedExecution | None:
        """The first execution record of ``order_id`` (its ACCEPTED or REJECTED), or None
        after ``timeout_s``."""
        ...


SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("authenticator", Authenticator)
EXECUTION_FEED: web.AppKey[ExecutionFeed] = web.AppKey("execution_feed", ExecutionFeed)
