"""What the REST and WebSocket halves of the gateway share: the principal and app keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from trade_engine.config import Settings


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


SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("authenticator", Authenticator)
