"""The settlement agent: ``te.executions`` -> the wallet service.

For each execution record it makes the wallet call the record implies:

- ``TRADE``: settle-trade, key ``trade_id``;
- ``ORDER_ENDED`` / ``REJECTED`` of a PLACE with ``release > 0``: release of
  exactly ``release``, key ``order_id``;
- ``AMENDED`` with ``reserve_delta < 0``: partial release of ``-reserve_delta``,
  key ``<order_id>:<seq>``; with ``reserve_delta > 0``: a top-up reserve, key
  ``<order_id>:amend:<seq>``.

Everything else needs no money movement. Every key is deterministic, so a
record delivered twice (a crash before the offset commit, a redrive) replays
the wallet's stored answer instead of moving money twice.

**Ordering.** A poll returns records in log order per partition, and one
order's records all live in one partition. A batch is cut into *phases*, each
one batch call of one kind (reserve, settle or release), executed one after
the other. A record may join an earlier phase than its predecessors only if
no earlier record of the same order sits in a later phase, so each order's
operations keep their log order (a trade settles before its order's final
release). Top-up reserves take funds from the available balance, which other
orders' settles and releases feed, so a reserve never moves ahead of any
record before it.

**Failures.** Errors of the call itself (wallet unreachable, 5xx, open
circuit) and per-item retriable errors are retried with capped, jittered
exponential backoff for up to ``retry_budget_s``; nothing is skipped
meanwhile (back-pressure). Business errors (the wallet refused the item:
``RESERVATION_EXCEEDED``, ``IDEMPOTENCY_CONFLICT``...) and exhausted retries
send the record to the dead-letter topic with ``dlq.*`` headers and count in
``te_settlement_dead_letters_total``; ``trade-engine settlement redrive``
applies them again later. Offsets are committed only after every record of
the batch was acknowledged by the wallet or durably dead-lettered.

**Why confluent-kafka, not Faust.** The agent's correctness rests on three
things Faust hides: ``read_committed`` isolation on the matcher's
transactional output, committing an offset only after the wallet answered for
every record before it, and a blocking back-pressure loop that never skips a
record. A plain consumer with manual commits states all three in a few lines
(and is several times faster per record, see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import FrameType
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ValidationError

from trade_engine import metrics, tracing
from trade_engine.config import Settings
from trade_engine.connectors.wallet.breaker import CircuitBreaker
from trade_engine.connectors.wallet.client import WalletClient
from trade_engine.connectors.wallet.exceptions import WalletError
from trade_engine.connectors.wallet.models import (
    ReleaseRequest,
    ReserveRequest,
    SettleTradeRequest,
)
from trade_engine.health import Flag
from trade_engine.streams.records import ConsumedRecord, IdleClock, is_partition_eof

log = logging.getLogger(__name__)

STAGE = "settlement"
BAD_RECORD = "SETTLEMENT_BAD_RECORD"

Kind = Literal["reserve", "settle", "release"]
WalletRequest = ReserveRequest | ReleaseRequest | SettleTradeRequest

RECORDS = Counter("te_settlement_records_total", "Execution records consumed", ["kind"])
OPERATIONS = Counter(
    "te_settlement_operations_total",
    "Wallet operations by final outcome (applied, dead_lettered)",
    ["operation", "result"],
)
DEAD_LETTERS = Counter(
    "te_settlement_dead_letters_total", "Execution records sent to the dead-letter topic", ["code"]
)
RETRIES = Counter(
    "te_settlement_wallet_retries_total",
    "Wallet calls or items retried after a retriable failure",
    ["operation"],
)
REDRIVEN = Counter("te_settlement_redriven_total", "Dead-lettered records re-driven", ["result"])
BATCH_SECONDS = Histogram(
    "te_settlement_batch_seconds",
    "Time to settle one polled batch (wallet calls, dead letters, offset commit)",
    buckets=(*metrics.LATENCY_BUCKETS, 5.0, 10.0, 30.0),
)


class BadRecordError(ValueError):
    """An execution record the agent cannot turn into a wallet call."""


@dataclass(frozen=True, slots=True)
class WalletOp:
    kind: Kind
    request: WalletRequest
    orders: tuple[str, ...]


# ----------------------------------------------------------------- planning (pure)


def _amount(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise BadRecordError(f"amount {value!r} is not a decimal string")
    try:
        return Decimal(value)
    except InvalidOperation:
        raise BadRecordError(f"amount {value!r} is not a decimal") from None


def _plain(value: Decimal) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _hold_asset(symbol: str, side: Any) -> str:
    base, _, quote = symbol.partition("/")
    if side == "BUY":
        return quote
    if side == "SELL":
        return base
    raise BadRecordError(f"a hold needs the order's side, got {side!r}")


def _release(msg: dict[str, Any], amount: Decimal, reason: str, key: str | None) -> WalletOp:
    order_id = msg["order_id"]
    request = ReleaseRequest(
        user_id=msg["user_id"],
        asset=_hold_asset(msg["symbol"], msg.get("side")),
        order_id=order_id,
        amount=_plain(amount),  # type: ignore[arg-type]
        reason=reason,
        idempotency_key=key,
    )
    return WalletOp("release", request, (order_id,))


def _settle(msg: dict[str, Any]) -> WalletOp:
    base, _, quote = msg["symbol"].partition("/")
    request = SettleTradeRequest(
        trade_id=msg["trade_id"],
        symbol=msg["symbol"],
        buyer_user_id=msg["buyer_user_id"],
        seller_user_id=msg["seller_user_id"],
        buyer_order_id=msg["buyer_order_id"],
        seller_order_id=msg["seller_order_id"],
        base_asset=base,
        quote_asset=quote,
        quantity=msg["quantity"],
        price=msg["price"],
        quote_quantity=msg["quote_quantity"],
        buyer_fee=msg["buyer_fee"],
        seller_fee=msg["seller_fee"],
        buyer_fee_asset=msg.get("buyer_fee_asset", base),
        seller_fee_asset=msg.get("seller_fee_asset", quote),
    )
    return WalletOp("settle", request, (msg["buyer_order_id"], msg["seller_order_id"]))


def _amended(msg: dict[str, Any]) -> WalletOp | None:
    delta = _amount(msg.get("reserve_delta", "0"))
    order_id, seq = msg["order_id"], msg["seq"]
    if delta < 0:
        return _release(msg, -delta, "AMEND_DECREASE", f"{order_id}:{seq}")
    if delta > 0:
        # The matcher now refuses amends that need a larger hold
        # (MATCHING_AMEND_EXCEEDS_HOLD); records written before that rule are
        # still topped up here when replayed (docs/money-flow.md).
        request = ReserveRequest(
            user_id=msg["user_id"],
            asset=_hold_asset(msg["symbol"], msg.get("side")),
            amount=_plain(delta),  # type: ignore[arg-type]
            order_id=order_id,
            reason="AMEND_INCREASE",
            idempotency_key=f"{order_id}:amend:{seq}",
        )
        return WalletOp("reserve", request, (order_id,))
    return None


def plan(value: bytes | None) -> WalletOp | None:  # noqa: PLR0911
    """The wallet operation one ``te.executions`` record needs; None when it needs none.

    Raises ``BadRecordError`` for a record that cannot be turned into a valid request.
    """
    if value is None:
        raise BadRecordError("record has no value")
    try:
        msg = json.loads(value)
    except ValueError as exc:
        raise BadRecordError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise BadRecordError("not a JSON object")
    kind = msg.get("kind")
    try:
        if kind == "TRADE":
            return _settle(msg)
        if kind == "ORDER_ENDED":
            release = _amount(msg.get("release", "0"))
            if release <= 0:
                return None
            return _release(msg, release, f"ORDER_{msg.get('status', 'ENDED')}"[:64], None)
        if kind == "REJECTED" and msg.get("request") == "PLACE":
            release = _amount(msg.get("release", "0"))
            if release <= 0:
                return None
            return _release(msg, release, "ORDER_REJECTED", None)
        if kind == "AMENDED":
            return _amended(msg)
    except BadRecordError:
        raise
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<request>'}: {e['msg']}"
            for e in exc.errors()[:3]
        )
        raise BadRecordError(f"{kind}: invalid wallet request: {problems}") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise BadRecordError(f"{kind}: missing or malformed field {exc}") from None
    return None


def phases(items: Sequence[tuple[int, WalletOp]]) -> list[tuple[Kind, list[tuple[int, WalletOp]]]]:
    """Group ``(index, op)`` items (in log order) into sequential one-kind batch calls.

    Each order's operations stay in log order: an item joins the first phase
    of its kind at or after the last phase holding an earlier item of any of
    its orders (within one phase the wallet applies items in request order).
    A reserve never moves before an earlier item of any order.
    """
    out: list[tuple[Kind, list[tuple[int, WalletOp]]]] = []
    last: dict[str, int] = {}
    for index, op in items:
        if op.kind == "reserve":
            floor = max(len(out) - 1, 0)
        else:
            floor = max((last.get(order, 0) for order in op.orders), default=0)
        chosen = next((p for p in range(floor, len(out)) if out[p][0] == op.kind), None)
        if chosen is None:
            out.append((op.kind, []))
            chosen = len(out) - 1
        out[chosen][1].append((index, op))
        for order in op.orders:
            last[order] = chosen
    return out


def _header_dict(headers: Any) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, value in headers or []:
        if value is None:
            continue
        out[key] = value if isinstance(value, bytes) else str(value).encode()
    return out


def dead_letter_headers(record: ConsumedRecord, code: str, reason: str) -> dict[str, bytes]:
    """The record's headers plus ``dlq.*``; a re-dead-lettered record keeps its origin."""
    headers = _header_dict(record.headers)
    redrives = 0
    if "dlq.topic" in headers:  # it came from the dead-letter topic (a redrive)
        redrives = int(headers.get("dlq.redrives", b"0") or b"0") + 1
    else:
        headers["dlq.topic"] = record.topic.encode()
        headers["dlq.partition"] = str(record.partition).encode()
        headers["dlq.offset"] = str(record.offset).encode()
    headers.update(
        {
            "dlq.code": code.encode(),
            "dlq.reason": reason.encode()[:1000],
            "dlq.stage": STAGE.encode(),
            "dlq.redrives": str(redrives).encode(),
        }
    )
    return headers


# ----------------------------------------------------------------------- effects


@dataclass
class BatchResult:
    applied: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    dead: list[tuple[ConsumedRecord, str, str]] = field(default_factory=list)


Sleep = Callable[[float], Awaitable[None]]


class Settler:
    """Turns a batch of execution records into wallet calls; reports what to dead-letter."""

    def __init__(
        self,
        wallet: WalletClient,
        *,
        retry_budget_s: float = 300.0,
        backoff_base_s: float = 0.1,
        backoff_max_s: float = 5.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.wallet = wallet
        self.retry_budget_s = retry_budget_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._sleep = sleep
        self._clock = clock

    async def settle(self, records: Sequence[ConsumedRecord]) -> BatchResult:
        if not tracing.enabled():
            return await self._settle(records)
        # One span per record, in the trace its order came with; the batch's wallet
        # calls are spans of their own (the client's), linked to every record.
        spans = [
            tracing.start(
                "settlement.record",
                parent_headers=record.headers,
                attributes={
                    "messaging.kafka.partition": record.partition,
                    "messaging.kafka.offset": record.offset,
                },
            )
            for record in records
        ]
        try:
            with tracing.span(
                "settlement.batch",
                attributes={"te.records": len(records)},
                links=tracing.links([r.headers for r in records]),
            ):
                result = await self._settle(records)
        except BaseException as exc:
            tracing.finish(spans, error=repr(exc))
            raise
        dead = {(r.partition, r.offset): code for r, code, _ in result.dead}
        for record, item in zip(records, spans, strict=True):
            tracing.finish([item], error=dead.get((record.partition, record.offset)))
        return result

    async def _settle(self, records: Sequence[ConsumedRecord]) -> BatchResult:
        result = BatchResult()
        items: list[tuple[int, WalletOp]] = []
        for index, record in enumerate(records):
            try:
                op = plan(record.value)
            except BadRecordError as exc:
                RECORDS.labels("BAD").inc()
                result.dead.append((record, BAD_RECORD, str(exc)))
                continue
            RECORDS.labels(op.kind if op is not None else "none").inc()
            if op is None:
                result.skipped += 1
            else:
                items.append((index, op))
        for kind, members in phases(items):
            failures = await self._call(kind, members)
            for index, op in members:
                error = failures.get(index)
                if error is None:
                    result.applied += 1
                    OPERATIONS.labels(kind, "applied").inc()
                    continue
                OPERATIONS.labels(kind, "dead_lettered").inc()
                record = records[index]
                result.dead.append((record, error.code, f"{kind}: {error.message}"))
                log.error(
                    "wallet refused a settlement record",
                    extra={
                        "stage": STAGE,
                        "code": error.code,
                        "reason": error.message,
                        "operation": kind,
                        "partition": record.partition,
                        "offset": record.offset,
                        **_ids(op.request),
                    },
                )
        result.dead_lettered = len(result.dead)
        return result

    async def _call(
        self, kind: Kind, members: list[tuple[int, WalletOp]]
    ) -> dict[int, WalletError]:
        """Apply one phase; the non-retriable (or exhausted) failures by index."""
        pending = list(members)
        failures: dict[int, WalletError] = {}
        deadline = self._clock() + self.retry_budget_s
        attempt = 0
        while pending:
            requests = [op.request for _, op in pending]
            retry: list[tuple[int, WalletOp]] = []
            last_error: WalletError | None = None
            try:
                results = await self._many(kind, requests)
            except WalletError as exc:
                # The call itself failed (unreachable, 5xx, open circuit, auth): all pending retry.
                retry, last_error = pending, exc
            else:
                for (index, op), outcome in zip(pending, results, strict=True):
                    if isinstance(outcome, WalletError):
                        if outcome.retriable:
                            retry.append((index, op))
                            last_error = outcome
                        else:
                            failures[index] = outcome
            if not retry:
                break
            assert last_error is not None
            if self._clock() >= deadline:
                log.error(
                    "wallet retries exhausted; dead-lettering",
                    extra={"stage": STAGE, "operation": kind, "code": last_error.code},
                )
                for index, _ in retry:
                    failures[index] = last_error
                break
            RETRIES.labels(kind).inc()
            delay = min(self.backoff_max_s, self.backoff_base_s * 2.0**attempt)
            delay = delay / 2 + random.random() * delay / 2
            log.warning(
                "wallet unavailable; retrying",
                extra={
                    "stage": STAGE,
                    "operation": kind,
                    "code": last_error.code,
                    "items": len(retry),
                    "delay_s": round(delay, 3),
                },
            )
            await self._sleep(min(delay, max(deadline - self._clock(), 0.0)))
            attempt += 1
            pending = retry
        return failures

    async def _many(self, kind: Kind, requests: list[WalletRequest]) -> Sequence[Any]:
        if kind == "settle":
            return await self.wallet.settle_many(requests)  # type: ignore[arg-type]
        if kind == "release":
            return await self.wallet.release_many(requests)  # type: ignore[arg-type]
        return await self.wallet.reserve_many(requests)  # type: ignore[arg-type]


def _ids(request: BaseModel) -> dict[str, Any]:
    return {
        name: getattr(request, name)
        for name in ("trade_id", "order_id", "symbol")
        if getattr(request, name, None) is not None
    }


# -------------------------------------------------------------------- the worker


def wallet_client(settings: Settings, name: str, reset_timeout_s: float = 5.0) -> WalletClient:
    """A client whose breaker half-opens quickly: these stages wait for the wallet anyway."""
    breaker = CircuitBreaker(f"wallet-{name}", reset_timeout_s=reset_timeout_s)
    return WalletClient.from_settings(settings, breaker=breaker)


def dead_letter_producer(settings: Settings) -> Producer:
    return Producer(
        {
            **settings.kafka.librdkafka(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
        }
    )


def publish_dead_letters(
    producer: Producer, topic: str, dead: Sequence[tuple[ConsumedRecord, str, str]]
) -> None:
    """Send and flush; raises when the broker did not take every record (nothing is committed)."""
    for record, code, reason in dead:
        DEAD_LETTERS.labels(code).inc()
        metrics.DEAD_LETTERS.labels(STAGE, code).inc()
        producer.produce(
            topic,
            key=record.key,
            value=record.value,
            headers=list(dead_letter_headers(record, code, reason).items()),
        )
        producer.poll(0)
    if dead and producer.flush(60):
        raise RuntimeError("dead-letter records were not delivered; not committing offsets")


class SettlementWorker:
    """Consume ``te.executions`` (read_committed), settle through the wallet, commit after."""

    def __init__(
        self,
        settings: Settings,
        *,
        batch_size: int = 1000,
        poll_timeout_s: float = 0.5,
        retry_budget_s: float = 300.0,
        group_id: str | None = None,
    ) -> None:
        self.settings = settings
        names = settings.topic_names
        self.topic = names["executions"]
        self.dead_letter_topic = names["dead_letter"]
        self.group_id = group_id or f"{settings.topics.prefix}settlement"
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.retry_budget_s = retry_budget_s
        self._stop = False
        # Readiness (/health/ready): set by the consumer's rebalance callbacks.
        self.group_joined = Flag("no partitions assigned by the group yet")

    def install_signal_handlers(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            self._stop = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def stop(self) -> None:
        self._stop = True

    def run(self, max_idle_s: float | None = None) -> None:
        asyncio.run(self.run_async(max_idle_s))

    async def run_async(self, max_idle_s: float | None = None) -> None:
        consumer = Consumer(
            {
                **self.settings.kafka.librdkafka(),
                "group.id": self.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.partition.eof": False,
                "session.timeout.ms": 6_000,
                "heartbeat.interval.ms": 1_000,
                "max.poll.interval.ms": max(int(self.retry_budget_s * 1000) + 60_000, 300_000),
            }
        )
        producer = dead_letter_producer(self.settings)
        consumer.subscribe(
            [self.topic],
            on_assign=lambda _c, tps: self.group_joined.set(
                detail=f"{len(tps)} partition(s) assigned"
            ),
            on_lost=lambda _c, _tps: self.group_joined.clear("partitions lost; rejoining"),
        )
        idle = IdleClock(max_idle_s)
        log.info("settlement agent started", extra={"stage": STAGE, "group": self.group_id})
        try:
            async with wallet_client(self.settings, STAGE) as wallet:
                settler = Settler(wallet, retry_budget_s=self.retry_budget_s)
                while not self._stop:
                    messages = consumer.consume(self.batch_size, self.poll_timeout_s)
                    records = []
                    for msg in messages:
                        if is_partition_eof(msg):
                            continue
                        if msg.error() is not None:
                            log.warning("consumer error", extra={"error": str(msg.error())})
                            continue
                        records.append(ConsumedRecord.from_message(msg))
                    if not records:
                        if idle.expired(consumer):
                            break
                        continue
                    idle.busy()
                    await self._settle_batch(consumer, producer, settler, records)
        finally:
            producer.flush(30)
            consumer.close()
            log.info("settlement agent stopped", extra={"stage": STAGE})

    async def _settle_batch(
        self,
        consumer: Consumer,
        producer: Producer,
        settler: Settler,
        records: list[ConsumedRecord],
    ) -> None:
        started = time.perf_counter()
        result = await settler.settle(records)
        publish_dead_letters(producer, self.dead_letter_topic, result.dead)
        offsets: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            offsets[key] = max(offsets.get(key, -1), record.offset + 1)
        try:
            consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            # A rebalance took the partitions: the next owner re-reads and the
            # wallet answers the replays from its idempotency records.
            log.warning("offset commit failed", extra={"stage": STAGE, "error": str(exc)})
        BATCH_SECONDS.observe(time.perf_counter() - started)


# ----------------------------------------------------------------------- redrive


@dataclass
class RedriveReport:
    read: int = 0
    other_stages: int = 0
    applied: int = 0
    skipped: int = 0
    dead_lettered_again: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "read": self.read,
            "other_stages": self.other_stages,
            "applied": self.applied,
            "skipped": self.skipped,
            "dead_lettered_again": self.dead_lettered_again,
        }


def _stage_of(record: ConsumedRecord) -> str | None:
    value = _header_dict(record.headers).get("dlq.stage")
    return value.decode() if value is not None else None


async def redrive(
    settings: Settings,
    *,
    dry_run: bool = False,
    group_id: str | None = None,
    retry_budget_s: float = 60.0,
) -> RedriveReport:
    """Apply again every settlement record dead-lettered since the last redrive.

    The redrive group's committed offsets on the dead-letter topic mark what was
    re-driven; records that fail again are dead-lettered again (with their
    origin and ``dlq.redrives`` + 1), so the next redrive sees them.
    ``dry_run`` lists without calling the wallet or committing.
    """
    names = settings.topic_names
    topic = names["dead_letter"]
    group = group_id or f"{settings.topics.prefix}settlement-redrive"
    consumer = Consumer(
        {
            **settings.kafka.librdkafka(),
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    report = RedriveReport()
    producer = dead_letter_producer(settings)
    try:
        metadata = consumer.list_topics(topic, timeout=30)
        partitions = sorted(metadata.topics[topic].partitions)
        tps = [TopicPartition(topic, p) for p in partitions]
        committed = consumer.committed(tps, timeout=30)
        ranges: dict[int, tuple[int, int]] = {}
        for tp in committed:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), 30)
            start = tp.offset if tp.offset >= 0 else low
            if start < high:
                ranges[tp.partition] = (max(start, low), high)
        records = _read_ranges(consumer, topic, ranges)
        report.read = len(records)
        mine = [r for r in records if _stage_of(r) == STAGE]
        report.other_stages = len(records) - len(mine)
        if dry_run:
            for record in mine:
                headers = _header_dict(record.headers)
                print(
                    json.dumps(
                        {
                            "offset": record.offset,
                            "partition": record.partition,
                            "code": headers.get("dlq.code", b"").decode(),
                            "origin": f"{headers.get('dlq.topic', b'').decode()}"
                            f"[{headers.get('dlq.partition', b'').decode()}]"
                            f"@{headers.get('dlq.offset', b'').decode()}",
                        }
                    )
                )
            return report
        async with wallet_client(settings, "redrive") as wallet:
            result = await Settler(wallet, retry_budget_s=retry_budget_s).settle(mine)
        publish_dead_letters(producer, topic, result.dead)
        report.applied = result.applied
        report.skipped = result.skipped
        report.dead_lettered_again = result.dead_lettered
        REDRIVEN.labels("applied").inc(result.applied)
        REDRIVEN.labels("dead_lettered").inc(result.dead_lettered)
        if ranges:
            consumer.commit(
                offsets=[TopicPartition(topic, p, high) for p, (_, high) in ranges.items()],
                asynchronous=False,
            )
    finally:
        producer.flush(30)
        consumer.close()
    return report


def _read_ranges(
    consumer: Consumer, topic: str, ranges: dict[int, tuple[int, int]]
) -> list[ConsumedRecord]:
    """Records of ``[start, end)`` per partition, partition by partition in log order."""
    out: list[ConsumedRecord] = []
    for partition, (start, end) in sorted(ranges.items()):
        consumer.assign([TopicPartition(topic, partition, start)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                if consumer.position([TopicPartition(topic, partition)])[0].offset >= end:
                    break
                continue
            if msg.error() is not None:
                continue
            record = ConsumedRecord.from_message(msg)
            if record.offset >= end:
                break
            out.append(record)
            if record.offset + 1 >= end:
                break
        consumer.unassign()
    return out
