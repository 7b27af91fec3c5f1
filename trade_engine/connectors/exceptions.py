"""Errors of the connectors (producer SDK, CLI, load generator, tail).

All derive from ``TradeEngineError`` and carry a stable ``code``. A command
that fails the wire contract raises ``InvalidCommandError``, which belongs to
the contract (``streams.exceptions``) and is re-exported here for the SDK's users.
"""

from __future__ import annotations

from trade_engine.errors import TradeEngineError
from trade_engine.streams.exceptions import InvalidCommandError

__all__ = [
    "ConnectorError",
    "DeliveryTimeoutError",
    "InvalidCommandError",
    "ProduceError",
    "TailError",
]


class ConnectorError(TradeEngineError):
    code = "CONNECTOR_ERROR"


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
