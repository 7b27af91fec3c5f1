"""Errors of the wire layer. Each carries a stable ``code`` that lands in the dead-letter header."""

from __future__ import annotations

from pydantic import ValidationError

from trade_engine.errors import TradeEngineError


class StreamsError(TradeEngineError):
    code = "STREAMS_ERROR"


class DecodeError(StreamsError):
    """A message could not be turned into a command or event; it is dead-lettered, never retried."""

    code = "DECODE_ERROR"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class InvalidCommandError(StreamsError):
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


class TopicAdminError(StreamsError):
    code = "TOPIC_ADMIN_FAILED"
    retriable = True


class AbortTransactionError(StreamsError):
    """Raised by a transactional stage while applying a batch: abort the open transaction and
    rewind its partitions to their committed state. ``reason`` labels the abort metric."""

    code = "TRANSACTION_ABORTED"
    retriable = True

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
