"""Errors of the connectors (producer SDK, CLI, load generator, tail).

All derive from ``TradeEngineError`` and carry a stable ``code``.
"""

from __future__ import annotations

from pydantic import ValidationError

from trade_engine.errors import TradeEngineError


class ConnectorError(TradeEngineError):
    code = "CONNECTOR_ERROR"


class InvalidCommandError(ConnectorError):
    """A command failed validation against the wire contract; nothing was sent.

    The message names each offending field, e.g. ``quantity: String should match
    pattern ... (got '1e5')``; ``field`` is the first one.
    """

    code = "VALIDATION_INVALID_COMMAND"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    @classmethod
    def from_validation(
        cls, exc: ValidationError, *, strip_tag: bool = False
    ) -> InvalidCommandError:
        parts: list[str] = []
        first: str | None = None
        for err in exc.errors()[:5]:
            loc = [str(p) for p in err["loc"]]
            if strip_tag and loc:
                loc = loc[1:]  # the discriminator tag ("place", "cancel", ...)
            where = ".".join(loc) or "<command>"
            first = first or where
            text = f"{where}: {err['msg']}"
            if err["type"] not in ("missing", "extra_forbidden") and isinstance(
                err.get("input"), str | int | bool
            ):
                text += f" (got {err['input']!r})"
            parts.append(text)
        return cls("; ".join(parts), first)


class ProduceError(ConnectorError):
    """A message could not be handed to the broker or was not acknowledged by it."""

    code = "PRODUCE_FAILED"
    retriable = True

    def __init__(self, message: str, *, kafka_code: str | None = None, retriable: bool = True):
        super().__init__(message)
        self.kafka_code = kafka_code
        self.retriable = retriable


class DeliveryTimeoutError(ProduceError):
    """``flush``/``send_and_wait`` ran out of time with messages still unacknowledged."""

    code = "PRODUCE_TIMEOUT"


class TailError(ConnectorError):
    code = "TAIL_FAILED"
