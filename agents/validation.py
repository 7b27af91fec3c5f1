"""The validation stage: ``te.commands`` -> ``te.commands.accepted`` (a Faust agent).

It checks each command's shape and that its key is its configured symbol, and
forwards it unchanged to the same partition of ``te.commands.accepted``,
keeping the original record timestamp so order->execution latency is measured
from the producer. Anything else goes to the dead-letter topic with its code.
Until the wallet issue lands this stage reserves no funds.

Delivery is at-least-once: a command forwarded twice after a crash is
answered by the matching core as a duplicate order id (a sequenced reject), so
no order is applied twice.
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from trade_engine import metrics
from trade_engine.agents.app import create_app, raw_topic
from trade_engine.config import Settings
from trade_engine.streams.codec import decode_command, header
from trade_engine.streams.commands import PlaceOrder
from trade_engine.streams.exceptions import DecodeError

log = logging.getLogger(__name__)

STAGE = "validation"


def check(
    key: bytes | None, value: bytes | None, symbols: frozenset[str]
) -> tuple[str, str] | None:
    """None when the command may pass, else (code, reason)."""
    try:
        command = decode_command(value)
    except DecodeError as exc:
        return exc.code, str(exc)
    if key is None or key != command.symbol.encode():
        return "KEY_SYMBOL_MISMATCH", f"key {key!r} is not the command's symbol {command.symbol}"
    if command.symbol not in symbols:
        return "UNKNOWN_SYMBOL", f"{command.symbol} is not configured"
    if isinstance(command, PlaceOrder) and command.risk_reject is not None:
        return "FORBIDDEN_FIELD", "risk_reject is set by the risk stage only"
    return None


def dead_letter_headers(event: Any, code: str, reason: str) -> dict[str, bytes]:
    message = event.message
    headers = {k: v for k, v in (message.headers or [])}
    headers.update(
        {
            "dlq.code": code.encode(),
            "dlq.reason": reason.encode()[:1000],
            "dlq.stage": STAGE.encode(),
            "dlq.topic": message.topic.encode(),
            "dlq.partition": str(message.partition).encode(),
            "dlq.offset": str(message.offset).encode(),
        }
    )
    return headers


def build(settings: Settings) -> faust.App:
    app = create_app(settings, "validation")
    names = settings.topic_names
    commands = raw_topic(app, names["commands"])
    accepted = raw_topic(app, names["accepted"])
    dead_letter = raw_topic(app, names["dead_letter"])
    symbols = frozenset(s.symbol for s in settings.market.symbols)

    @app.agent(commands)
    async def validate(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            problem = check(event.key, event.value, symbols)
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
            await dead_letter.send(
                key=event.key, value=event.value, headers=dead_letter_headers(event, code, reason)
            )

    return app
