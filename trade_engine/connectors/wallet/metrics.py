"""Prometheus metrics of the wallet client (the service's: ``trade_engine.wallet.metrics``).
Base units, ``_total`` on counters, low-cardinality labels: never user, order or trade ids."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

CLIENT_REQUESTS = Counter(
    "te_wallet_client_requests_total",
    "Wallet client calls by final outcome: ok or an error code",
    ["operation", "outcome"],
)
CLIENT_SECONDS = Histogram(
    "te_wallet_client_request_seconds",
    "Wallet client call latency, retries included",
    ["operation"],
    buckets=_BUCKETS,
)
CLIENT_RETRIES = Counter(
    "te_wallet_client_retries_total", "Wallet client attempts retried", ["operation"]
)
BREAKER_STATE = Gauge(
    "te_wallet_client_circuit_state",
    "Circuit breaker state of the wallet client: 0 closed, 1 half-open, 2 open",
    ["breaker"],
)
