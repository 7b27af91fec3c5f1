"""Applying a batch of planned operations to the wallet: batch calls per phase, retries
with capped, jittered backoff within a budget, and what to dead-letter.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from trade_engine import tracing
from trade_engine.agents.settlement.metrics import OPERATIONS, RECORDS, RETRIES
from trade_engine.agents.settlement.plan import (
    BAD_RECORD,
    STAGE,
    BadRecordError,
    Kind,
    WalletOp,
    WalletRequest,
    phases,
    plan,
)
from trade_engine.connectors.wallet.client import WalletClient
from trade_engine.connectors.wallet.exceptions import WalletError
from trade_engine.streams.records import ConsumedRecord

log = logging.getLogger(__name__)


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


def _ids(request: WalletRequest) -> dict[str, Any]:
    return {
        name: getattr(request, name)
        for name in ("trade_id", "order_id", "symbol")
        if getattr(request, name, None) is not None
    }
