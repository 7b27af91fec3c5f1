"""Errors of the gateway, one class per stable code family.

Each renders as ``{"error": message, "code": code, "details": {...}}`` with its
HTTP ``status`` (the seeds' error format). Codes never change once released;
``docs/api.md`` lists every one.
"""

from __future__ import annotations

from typing import Any

from trade_engine.errors import TradeEngineError


class GatewayError(TradeEngineError):
    code = "INTERNAL_ERROR"
    status = 500

    def __init__(
        self,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}
        self.headers = headers or {}
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code, "details": self.details}


class BadRequestError(GatewayError):
    """Malformed input or against a static rule; nothing was sent to the engine."""

    code = "VALIDATION_ERROR"
    status = 400


class AuthError(GatewayError):
    """The bearer token is missing or not acceptable; ``code`` says why (AUTH_*)."""

    code = "AUTH_INVALID_TOKEN"
    status = 401


class ForbiddenError(GatewayError):
    code = "FORBIDDEN"
    status = 403


class NotFoundError(GatewayError):
    """Also for other users' orders: existence is never revealed."""

    code = "NOT_FOUND"
    status = 404


class ConflictError(GatewayError):
    code = "CONFLICT"
    status = 409


class UnprocessableError(GatewayError):
    code = "UNPROCESSABLE"
    status = 422


class RateLimitedError(GatewayError):
    code = "RATE_LIMITED"
    status = 429


class NotImplementedFeatureError(GatewayError):
    code = "NOT_IMPLEMENTED"
    status = 501


class UnavailableError(GatewayError):
    """A dependency (Kafka, PostgreSQL, wallet) is down; the same request may succeed later."""

    code = "SERVICE_UNAVAILABLE"
    status = 503
