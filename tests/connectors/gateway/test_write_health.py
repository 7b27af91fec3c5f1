"""``WriteHealth``: when the gateway says writes to Kafka fail, and why; and the producer
refusing an order it could not get acknowledged (no broker listening)."""

from __future__ import annotations

import socket

import pytest

from trade_engine.config import load_settings
from trade_engine.connectors.gateway.exceptions import UnavailableError
from trade_engine.connectors.gateway.producer import CommandProducer
from trade_engine.connectors.gateway.write_health import WriteHealth
from trade_engine.streams.command_builders import build_place


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_healthy_until_a_write_fails_then_until_one_succeeds() -> None:
    clock = Clock()
    health = WriteHealth(clock=clock)
    assert health.reason() is None
    health.succeeded()
    assert health.reason() is None

    health.failed("_MSG_TIMED_OUT: Local: Message timed out")
    clock.now += 12
    health.failed("_MSG_TIMED_OUT: Local: Message timed out")
    reason = health.reason()
    assert reason is not None
    assert "failed for 12 s" in reason
    assert "_MSG_TIMED_OUT" in reason

    health.succeeded()
    assert health.reason() is None
    assert not health.failing


def test_a_failure_older_than_recent_s_no_longer_counts() -> None:
    clock = Clock()
    health = WriteHealth(clock=clock, recent_s=30)
    health.failed("_MSG_TIMED_OUT: x")
    clock.now += 30
    assert health.reason() is not None
    clock.now += 0.5
    # Half open: nobody sends orders to a gateway that says it is not ready, so the
    # readiness probe must stop blocking on an old failure; the next write decides.
    assert health.reason() is None
    assert health.failing


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: nobody listens


async def test_an_unacknowledged_order_is_refused_with_an_unknown_outcome() -> None:
    settings = load_settings(
        kafka={"bootstrap_servers": f"127.0.0.1:{_closed_port()}"},
        gateway={"delivery_timeout_s": 1.0},
    )
    producer = CommandProducer(settings)
    command = build_place(
        symbol="BTC/USDT", side="BUY", user_id="u1", quantity="0.001", price="50000"
    )
    try:
        with pytest.raises(UnavailableError) as refused:
            await producer.send(command)
        error = refused.value
        assert error.code == "KAFKA_UNAVAILABLE"
        assert error.status == 503
        # The broker might hold it and commit it later: never "not placed".
        assert error.details["outcome"] == "unknown"
        assert error.details["kafka_code"] in ("_MSG_TIMED_OUT", "_TIMED_OUT")
        assert "may still be placed" in error.message
        assert "writes to Kafka have failed" in error.details["reason"]
        # Readiness says why until a write succeeds.
        with pytest.raises(UnavailableError, match="writes to Kafka have failed"):
            await producer.ping(0.5)
    finally:
        await producer.close()
