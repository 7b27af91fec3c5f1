"""The dead-letter record: what every stage publishes for an input it quarantines.

One builder for every stage, so an operator reads one shape whatever stage
refused the input: the input's key, its value (truncated when large, see
below), its headers, and ``dlq.*`` headers naming the code (a
``streams.codes.DeadLetterCode``, or the wallet's code for settlement), the
reason, the stage and the input's position (topic, partition, offset).
``dead_letter`` also writes the one log line that names that position.

A record re-driven from the dead-letter topic (``trade-engine settlement
redrive``) and refused again keeps its origin: ``keep_origin`` takes the
position from its ``dlq.*`` headers instead of the dead-letter topic's, and
``dlq.redrives`` counts the attempts (0 the first time).

A dead letter must always fit in one produce request, whatever came in: a
value over ``MAX_VALUE_BYTES`` is cut to that size and the headers say so
(``dlq.truncated``, ``dlq.original_size``, ``dlq.sha256`` of the whole value),
and original headers over ``MAX_HEADER_BYTES`` in total are dropped
(``dlq.headers_dropped``). The input itself stays in its topic at the named
position until retention removes it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

from trade_engine.streams.codec import Headers, header
from trade_engine.streams.records import ConsumedRecord

log = logging.getLogger(__name__)

MAX_VALUE_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_REASON_BYTES = 1000


def dead_letter_value(value: bytes | None) -> tuple[bytes | None, Headers]:
    """``value`` as the dead letter carries it, and the headers that describe a cut."""
    if value is None or len(value) <= MAX_VALUE_BYTES:
        return value, []
    return value[:MAX_VALUE_BYTES], [
        ("dlq.truncated", b"true"),
        ("dlq.original_size", str(len(value)).encode()),
        ("dlq.sha256", hashlib.sha256(value).hexdigest().encode()),
    ]


def dead_letter_headers(
    original: Iterable[tuple[str, str | bytes | None]] | None,
    *,
    code: str,
    reason: str,
    stage: str,
    topic: str,
    partition: int | str,
    offset: int | str,
    extra: Headers = (),  # type: ignore[assignment]
) -> Headers:
    """The input's headers (unless too large) followed by the ``dlq.*`` ones."""
    kept: Headers = []
    size = 0
    for name, value in original or ():
        if name.startswith("dlq."):
            continue  # a forged or re-sent dead letter: ours replace them
        size += len(name) + (len(value) if value is not None else 0)
        kept.append((name, value))
    if size > MAX_HEADER_BYTES:
        kept = [("dlq.headers_dropped", str(size).encode())]
    return [
        *kept,
        ("dlq.code", code.encode()),
        ("dlq.reason", reason.encode()[:MAX_REASON_BYTES]),
        ("dlq.stage", stage.encode()),
        ("dlq.topic", topic.encode()),
        ("dlq.partition", str(partition).encode()),
        ("dlq.offset", str(offset).encode()),
        *extra,
    ]


def dead_letter(
    record: ConsumedRecord,
    code: str,
    reason: str,
    *,
    stage: str,
    keep_origin: bool = False,
) -> tuple[bytes | None, Headers]:
    """Log ``record``'s dead-lettering and return the value and headers to publish under
    its key. With ``keep_origin``, a record that already is a dead letter (it carries
    ``dlq.topic``) keeps the position it first failed at, and ``dlq.redrives`` counts."""
    topic: str = record.topic
    partition: int | str = record.partition
    offset: int | str = record.offset
    extra: Headers = []
    if keep_origin:
        redrives = 0
        origin = header(record.headers, "dlq.topic")
        if origin is not None:  # read back from the dead-letter topic: a redrive
            topic = origin
            partition = header(record.headers, "dlq.partition") or partition
            offset = header(record.headers, "dlq.offset") or offset
            redrives = int(header(record.headers, "dlq.redrives") or 0) + 1
        extra.append(("dlq.redrives", str(redrives).encode()))
    log.warning(
        "input dead-lettered",
        extra={
            "stage": stage,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "code": code,
            "reason": reason,
            "trace_id": header(record.headers, "trace_id"),
        },
    )
    value, cut = dead_letter_value(record.value)
    headers = dead_letter_headers(
        record.headers,
        code=code,
        reason=reason,
        stage=stage,
        topic=topic,
        partition=partition,
        offset=offset,
        extra=[*cut, *extra],
    )
    return value, headers
