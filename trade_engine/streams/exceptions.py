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
