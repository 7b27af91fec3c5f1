"""Errors of the wire layer. Each carries a stable ``code`` that lands in the dead-letter header."""

from __future__ import annotations

from trade_engine.errors import TradeEngineError


class StreamsError(TradeEngineError):
    code = "STREAMS_ERROR"


class DecodeError(StreamsError):
    """A message could not be turned into a command or event; it is dead-lettered, never retried."""

    code = "DECODE_ERROR"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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
