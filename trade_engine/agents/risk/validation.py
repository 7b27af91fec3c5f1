"""The validation stage: ``te.commands`` -> ``te.commands.accepted`` (a Faust agent).

It checks each command's shape and that its key is its configured symbol, and
forwards it unchanged to the same partition of ``te.commands.accepted``,
keeping the original record timestamp so order->execution latency is measured
from the producer. Anything else goes to the dead-letter topic with its code.
It reserves no funds: the risk stage (``agents.risk``) is this stage plus the
wallet's holds, and is what the pipeline runs.

Delivery is at-least-once: a command forwarded twice after a crash is
answered by the matching core as a duplicate order id (a sequenced reject), so
no order is applied twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

from trade_engine import metrics
from trade_engine.agents.risk.app import create_app, raw_topic
from trade_engine.config import Settings
from trade_engine.streams.codec import decode_command, header
from trade_engine.streams.commands import PlaceOrder
from trade_engine.streams.dead_letter import dead_letter_headers, dead_letter_value
from trade_engine.streams.exceptions import DecodeError
from trade_engine.streams.partitioning import wrong_partition

log = logging.getLogger(__name__)

STAGE = "validation"


def check(
    key: bytes | None,
    value: bytes | None,
    symbols: frozenset[str],
    *,
    partition: int | None = None,
    partitions: int | None = None,
) -> tuple[str, str] | None:
    """None when the command may pass, else (code, reason). With ``partition`` and
    ``partitions``, a command not on its key's partition is ``WRONG_PARTITION``."""
    try:
        command = decode_command(value)
    except DecodeError as exc:
        return exc.code, str(exc)
    if key is None or key != command.symbol.encode():
        return "KEY_SYMBOL_MISMATCH", f"key {key!r} is not the command's symbol {command.symbol}"
    if partition is not None and partitions is not None:
        misrouted = wrong_partition(key, partition, partitions)
        if misrouted is not None:
            return misrouted
    if command.symbol not in symbols:
        return "UNKNOWN_SYMBOL", f"{command.symbol} is not configured"
    if isinstance(command, PlaceOrder) and command.risk_reject is not None:
        return "FORBIDDEN_FIELD", "risk_reject is set by the risk stage only"
    return None


async def send_dead_letter(
    topic: Any, event: Any, code: str, reason: str, stage: str = STAGE
) -> None:
    """Quarantine ``event``: a dead letter that always fits (``streams.dead_letter``), sent
    until the broker takes it. Never skipped: the input's offset must not move past a
    record that is in neither output topic, so a failure to send holds the partition
    (with a log line and a metric each time) rather than losing the record."""
    message = event.message
    headers = message.headers
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    value, cut = dead_letter_value(event.value)
    letter = dead_letter_headers(
        items,
        code=code,
        reason=reason,
        stage=stage,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        extra=cut,
    )
    delay = 0.1
    while True:
        try:
            await topic.send(key=event.key, value=value, headers=letter)
            return
        except Exception as exc:  # the send itself failed: hold the partition, retry
            metrics.DEAD_LETTER_FAILURES.labels(stage).inc()
            log.error(
                "dead letter not sent; the partition waits for it",
                extra={
                    "stage": stage,
                    "code": code,
                    "partition": message.partition,
                    "offset": message.offset,
                    "error": repr(exc),
                },
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def build(settings: Settings) -> faust.App:
    app = create_app(settings, "validation")
    names = settings.topic_names
    commands = raw_topic(app, names["commands"])
    accepted = raw_topic(app, names["accepted"])
    dead_letter = raw_topic(app, names["dead_letter"])
    symbols = frozenset(s.symbol for s in settings.market.symbols)
    # Order-path topics are created with this count (``streams.topics`` refuses to start
    # on a topic that has another), so it is the command topic's own.
    partitions = settings.topics.partitions

    @app.agent(commands)
    async def validate(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            problem = check(
                event.key,
                event.value,
                symbols,
                partition=message.partition,
                partitions=partitions,
            )
            if problem is None:
                await accepted.send(
                    key=event.key,
                    value=event.value,
                    partition=message.partition,
                    timestamp=message.timestamp,
                    headers=message.headers,
                )
                continue
            code, reason = problem
            metrics.DEAD_LETTERS.labels(STAGE, code).inc()
            log.warning(
                "command dead-lettered",
                extra={
                    "stage": STAGE,
                    "code": code,
                    "reason": reason,
                    "partition": message.partition,
                    "offset": message.offset,
                    "trace_id": header(message.headers, "trace_id"),
                },
            )
            await send_dead_letter(dead_letter, event, code, reason)

    return app
