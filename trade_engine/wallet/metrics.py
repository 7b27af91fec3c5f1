"""Prometheus metrics of the wallet service. Base units, ``_total`` on counters,
low-cardinality labels: routes and codes, never user, order or trade ids."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HTTP_REQUESTS = Counter(
    "te_wallet_http_requests_total", "Requests answered by the wallet service", ["route", "status"]
)
HTTP_SECONDS = Histogram(
    "te_wallet_http_request_seconds", "Wallet service request latency", ["route"], buckets=_BUCKETS
)
OPERATIONS = Counter(
    "te_wallet_operations_total",
    "Ledger operations by result: applied, replayed (idempotent repeat) or an error code",
    ["operation", "result"],
)
