"""What the sinks share on the Kafka side: consumer settings, decoding, tracing, retries.

The sinks read ``te.executions`` with an at-least-once consumer
(``streams.clients.committing_consumer``: ``read_committed``, no auto-commit) on
the at-least-once runtime (``streams.runtime.AtLeastOnceWorker``), which polls in
a worker thread so the asyncio loop stays free for asyncpg / aio-pika, and for
the rebalance callbacks that need them (they run in that worker thread and hand
work to the loop).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import Consumer, Message
from opentelemetry.trace import Span

from trade_engine import tracing
from trade_engine.config import Settings
from trade_engine.streams import clients
from trade_engine.streams.exceptions import DecodeError
from trade_engine.streams.execution_records import ExecutionRecord, decode_execution

log = logging.getLogger(__name__)
T = TypeVar("T")

FAULT_ENV = "TE_SINK_FAULT"


#: What both sinks add to an at-least-once consumer's settings.
SINK_CONSUMER: dict[str, Any] = {
    "enable.auto.offset.store": False,
    # Off the order path: the broker holds a fetch until 64 KiB or 100 ms, so a trickle
    # of executions costs it ten fetches a second per sink instead of one per commit
    # (each request costs the broker about as much as a few hundred records).
    "fetch.min.bytes": 65536,
    "fetch.wait.max.ms": 100,
    # A killed member is noticed within 10 s, not librdkafka's default 45 s.
    "session.timeout.ms": 10000,
}


def sink_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    return clients.committing_consumer(settings, group_id, **{**SINK_CONSUMER, **overrides})


def decode(msg: Message) -> ExecutionRecord | None:
    """The execution record, or None (logged) when it is not one of the contract."""
    try:
        return decode_execution(msg.value())
    except DecodeError as exc:
        log.error(
            "undecodable execution message skipped",
            extra={
                "topic": msg.topic(),
                "partition": msg.partition(),
                "offset": msg.offset(),
                "code": exc.code,
                "reason": str(exc)[:300],
            },
        )
        return None


def traced_spans(name: str, messages: list[Message]) -> list[Span]:
    """One span per message, in the trace its headers name (tracing on only); the caller
    ends them with ``tracing.finish`` once the batch is written."""
    if not tracing.enabled():
        return []
    return [
        tracing.start(
            name,
            parent_headers=m.headers(),
            attributes={
                "messaging.kafka.partition": m.partition(),
                "messaging.kafka.offset": m.offset(),
            },
        )
        for m in messages
    ]


async def retrying(
    action: Callable[[], Awaitable[T]],
    transient: tuple[type[BaseException], ...],
    what: str,
    on_error: Callable[[], Awaitable[None]] | None = None,
    max_delay_s: float = 5.0,
) -> T:
    """Run ``action`` until it succeeds, backing off on ``transient`` errors."""
    delay = 0.1
    while True:
        try:
            return await action()
        except transient as exc:
            log.warning(f"{what} failed; retrying in {delay:.1f}s", extra={"error": repr(exc)})
            if on_error is not None:
                # The reset (a reconnect) can fail for the same reason while the
                # server is still down: that is one more retry, not the end.
                try:
                    await on_error()
                except transient as reset_exc:
                    log.warning(f"{what}: reset failed", extra={"error": repr(reset_exc)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)


@dataclass
class FaultHook:
    """Test-only fault injection from ``TE_SINK_FAULT``: ``kill-before-commit:N`` sends the
    process SIGKILL in batch N after its rows are written and before COMMIT;
    ``sleep-before-commit:S`` sleeps S seconds there (to widen the window)."""

    action: str = ""
    arg: float = 0.0
    batches: int = 0

    @classmethod
    def from_env(cls) -> FaultHook:
        spec = os.environ.get(FAULT_ENV, "")
        if not spec:
            return cls()
        action, _, arg = spec.partition(":")
        return cls(action, float(arg or 0))

    async def before_commit(self) -> None:
        if not self.action:
            return
        self.batches += 1
        if self.action == "kill-before-commit" and self.batches >= self.arg:
            log.warning("fault injection: SIGKILL before commit", extra={"batch": self.batches})
            os.kill(os.getpid(), signal.SIGKILL)
            await asyncio.sleep(10)  # never returns: SIGKILL cannot be handled
        elif self.action == "sleep-before-commit":
            await asyncio.sleep(self.arg)
