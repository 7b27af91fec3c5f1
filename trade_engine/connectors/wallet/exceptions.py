"""Errors of the wallet service and its client, one class per stable code.

The service renders each as ``{"code", "message", "details"}`` with ``status``;
the client turns such a body back into the same class (``error_from_body``).
``retriable`` is true only where trying the same request again may succeed.
"""

from __future__ import annotations

from typing import Any

from trade_engine.errors import TradeEngineError


class WalletError(TradeEngineError):
    code = "WALLET_ERROR"
    status = 500

    def __init__(
        self,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class ValidationFailedError(WalletError):
    code = "VALIDATION_ERROR"
    status = 400


class UnauthorizedError(WalletError):
    code = "UNAUTHORIZED"
    status = 401


class NotFoundError(WalletError):
    code = "NOT_FOUND"
    status = 404


class UserNotFoundError(NotFoundError):
    code = "USER_NOT_FOUND"


class AccountNotFoundError(NotFoundError):
    code = "ACCOUNT_NOT_FOUND"


class ReservationNotFoundError(NotFoundError):
    code = "RESERVATION_NOT_FOUND"


class ConflictError(WalletError):
    code = "CONFLICT"
    status = 409


class IdempotencyConflictError(ConflictError):
    """The key was used before with a different payload; the first one stands."""

    code = "IDEMPOTENCY_CONFLICT"


class ReservationMismatchError(ConflictError):
    """The order's hold belongs to another user or asset (or another reservation id)."""

    code = "RESERVATION_MISMATCH"


class InsufficientBalanceError(WalletError):
    code = "INSUFFICIENT_BALANCE"
    status = 422


class ReservationExceededError(WalletError):
    """More was settled or released from a hold than remains of it."""

    code = "RESERVATION_EXCEEDED"
    status = 422


class UnavailableError(WalletError):
    """The wallet could not be reached or answered 5xx/429; the same request may succeed later."""

    code = "WALLET_UNAVAILABLE"
    status = 503
    retriable = True

    def __init__(
        self,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, details, code=code, status=status)
        self.retry_after_s = retry_after_s


class CircuitOpenError(UnavailableError):
    """The client's circuit breaker is open: the call was not attempted."""

    code = "WALLET_CIRCUIT_OPEN"


class InternalError(WalletError):
    code = "INTERNAL_ERROR"
    status = 500


_BY_CODE: dict[str, type[WalletError]] = {
    cls.code: cls
    for cls in (
        ValidationFailedError,
        UnauthorizedError,
        NotFoundError,
        UserNotFoundError,
        AccountNotFoundError,
        ReservationNotFoundError,
        ConflictError,
        IdempotencyConflictError,
        ReservationMismatchError,
        InsufficientBalanceError,
        ReservationExceededError,
    )
}


def error_from_body(status: int, body: Any, retry_after_s: float | None = None) -> WalletError:
    """The typed error for an error response; 5xx and 429 are always ``UnavailableError``."""
    code, message = f"HTTP_{status}", f"wallet answered HTTP {status}"
    details: dict[str, Any] = {}
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        code = body["code"]
        message = str(body.get("message") or message)
        details = body["details"] if isinstance(body.get("details"), dict) else {}
    if status >= 500 or status == 429:
        return UnavailableError(
            message, details, code=code, status=status, retry_after_s=retry_after_s
        )
    cls = _BY_CODE.get(code, WalletError)
    return cls(message, details, code=code, status=status)


def error_from_item(body: Any) -> WalletError:
    """The typed error of one failed item of a batch answer."""
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        return WalletError("batch item failed without an error body")
    cls = _BY_CODE.get(body["code"], WalletError)
    details = body["details"] if isinstance(body.get("details"), dict) else {}
    return cls(str(body.get("message") or body["code"]), details, code=body["code"])
