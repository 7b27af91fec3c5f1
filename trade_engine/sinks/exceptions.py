"""Errors of the sinks. Each carries a stable ``code``; ``retriable`` ones are retried by the
sink that raised them (reconnect, then redo the whole batch)."""

from __future__ import annotations

from trade_engine.errors import TradeEngineError


class SinkError(TradeEngineError):
    code = "SINK_ERROR"


class AmqpConnectionError(SinkError):
    """The AMQP connection or channel could not be opened, or closed under a batch."""

    code = "AMQP_CONNECTION_LOST"
    retriable = True


class PublishNackedError(SinkError):
    """The broker refused (basic.nack) at least one message of the batch."""

    code = "AMQP_PUBLISH_NACKED"
    retriable = True


class ConfirmTimeoutError(SinkError):
    """The broker did not confirm the whole batch in time (a blocked or stuck connection)."""

    code = "AMQP_CONFIRM_TIMEOUT"
    retriable = True
