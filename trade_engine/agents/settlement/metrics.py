"""Prometheus metrics of the settlement stage (base units, ``_total`` on counters)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from trade_engine import metrics

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
