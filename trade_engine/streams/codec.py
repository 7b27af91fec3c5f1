"""Encoding and decoding of wire messages, and their headers.

Headers carry the schema version (``v``) and a trace id (``trace_id``) so a
message can be followed from the gateway to the sinks (with tracing on, also
the W3C ``traceparent`` of the producing span: ``trade_engine.tracing``); the dead-letter topic
adds ``dlq.code``, ``dlq.reason``, ``dlq.topic``, ``dlq.partition``, ``dlq.offset``.
"""

from __future__ import annotations

import uuid
from typing import Any, cast

from pydantic import BaseModel, TypeAdapter, ValidationError

from trade_engine import tracing
from trade_engine.streams.codes import DeadLetterCode
from trade_engine.streams.commands import SCHEMA_VERSION, Command
from trade_engine.streams.exceptions import DecodeError

Headers = list[tuple[str, str | bytes | None]]

_COMMAND: TypeAdapter[Any] = TypeAdapter(cast(Any, Command))
MAX_MESSAGE_BYTES = 64 * 1024


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json(exclude_none=True).encode()


def decode_command(raw: bytes | None) -> Command:
    """Bytes from ``te.commands`` to a command model, or ``DecodeError`` with a stable code:
    ``DECODE_EMPTY`` (no value: null or zero bytes), ``DECODE_TOO_LARGE``, ``DECODE_INVALID``.

    The contract's reference decoder (pydantic; the risk stage's). The matcher reads the
    same contract with ``command_records.decode_command_record`` (msgspec), which must
    answer exactly as this does."""
    if not raw:
        raise DecodeError(DeadLetterCode.DECODE_EMPTY, "message has no value")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise DecodeError(
            DeadLetterCode.DECODE_TOO_LARGE, f"message of {len(raw)} bytes exceeds the limit"
        )
    try:
        command: Command = _COMMAND.validate_json(raw)
    except ValidationError as exc:
        raise DecodeError(DeadLetterCode.DECODE_INVALID, _describe(exc)) from None
    return command


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "<message>"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def new_headers(trace_id: str | None = None) -> Headers:
    """``v`` and ``trace_id``; inside a recording span (tracing on) also its W3C
    ``traceparent``, and ``trace_id`` is that span's trace id (``trade_engine.tracing``)."""
    if tracing.enabled() and trace_id is None:
        current = tracing.current_trace_id()
        if current is not None:
            return tracing.inject([("v", str(SCHEMA_VERSION).encode())])
    return [
        ("v", str(SCHEMA_VERSION).encode()),
        ("trace_id", (trace_id or uuid.uuid4().hex).encode()),
    ]


def header(headers: Any, name: str) -> str | None:
    """A header's value as text from confluent-kafka or Faust/aiokafka header lists."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    for key, value in items:
        if key == name:
            return value.decode() if isinstance(value, bytes | bytearray) else str(value)
    return None
