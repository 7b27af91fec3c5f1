"""Prometheus metrics shared by the engine's workers. Base units, ``_total`` on counters,
low-cardinality labels (never order or user ids)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

from trade_engine.health import DISK, Health, HealthServer

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

COMMANDS = Counter(
    "te_matcher_commands_total", "Commands applied by the matcher", ["symbol", "result"]
)
EXECUTIONS = Counter("te_matcher_executions_total", "Execution records emitted", ["kind"])
TRADES = Counter("te_matcher_trades_total", "Trades emitted", ["symbol"])
DEAD_LETTERS = Counter(
    "te_dead_letters_total", "Messages sent to the dead-letter topic", ["stage", "code"]
)
DEAD_LETTER_FAILURES = Counter(
    "te_dead_letter_send_failures_total",
    "Dead letters the broker did not take (retried; the input partition waits)",
    ["stage"],
)
BATCH_SECONDS = Histogram(
    "te_matcher_batch_seconds",
    "Time to apply and commit one batch (transaction included)",
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "te_matcher_batch_messages",
    "Input messages per committed batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)
TRANSACTIONS_ABORTED = Counter(
    "te_matcher_transactions_aborted_total", "Transactions aborted and retried", ["reason"]
)
RECOVERY_RECORDS = Counter(
    "te_matcher_recovery_changelog_records_total", "Changelog records read while restoring"
)
RECOVERY_SECONDS = Histogram(
    "te_matcher_recovery_seconds", "Time to restore one partition's books", buckets=LATENCY_BUCKETS
)
ASSIGNED_PARTITIONS = Gauge("te_matcher_assigned_partitions", "Input partitions owned")
ORDER_LATENCY = Histogram(
    "te_matcher_order_latency_seconds",
    "Per committed transaction: age of its oldest command (producer log time) when the"
    " transaction's executions became visible; the slowest order of each batch",
    buckets=(*LATENCY_BUCKETS, 5.0, 10.0, 30.0),
)


def serve(
    port: int,
    health: Health | None = None,
    *,
    addr: str = "127.0.0.1",
    state_dir: Path | None = None,
) -> HealthServer | None:
    """Expose /metrics, /health/live and /health/ready on ``port`` (0 disables it).

    ``health`` holds the readiness checks (none: ready while the process runs);
    ``state_dir`` is reported as the ``state`` volume of ``te_disk_free_bytes``.
    """
    if state_dir is not None:
        DISK.watch("state", state_dir)
    if not port:
        return None
    return HealthServer(port, health or Health(), addr)
