"""Prometheus metrics of the sinks (base units, ``_total`` counters, label ``sink``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from trade_engine.metrics import LATENCY_BUCKETS

MESSAGES = Counter("te_sink_messages_total", "Execution messages consumed", ["sink"])
DUPLICATES = Counter(
    "te_sink_duplicates_total", "Messages skipped as already applied (redelivery)", ["sink"]
)
ROWS = Counter("te_sink_rows_total", "Rows written by the Postgres sink", ["table", "op"])
PUBLISHED = Counter("te_sink_published_total", "Messages confirmed by RabbitMQ", ["exchange"])
BATCH_SECONDS = Histogram(
    "te_sink_batch_seconds",
    "Time to write one batch, commit included",
    ["sink"],
    buckets=LATENCY_BUCKETS,
)
ASSIGNED = Gauge("te_sink_assigned_partitions", "te.executions partitions owned", ["sink"])
DEFAULT_PARTITION_ROWS = Gauge(
    "te_sink_default_partition_rows", "Rows caught by a DEFAULT partition (should be 0)", ["table"]
)
MAINTENANCE_FAILURES = Counter(
    "te_sink_partition_maintenance_failures_total",
    "Partition maintenance runs (create ahead, detach old) that failed",
)
MAINTENANCE_LAST_SUCCESS = Gauge(
    "te_sink_partition_maintenance_last_success_timestamp_seconds",
    "Unix time of the last partition maintenance run that succeeded",
)
