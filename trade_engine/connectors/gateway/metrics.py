"""Prometheus metrics of the gateway: base units, ``_total`` counters, low-cardinality labels
(the route's pattern, never an order or user id)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from trade_engine.metrics import LATENCY_BUCKETS

HTTP_REQUESTS = Counter(
    "te_gateway_http_requests_total",
    "HTTP requests by route pattern",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "te_gateway_http_request_seconds",
    "Time from request to response, by route pattern",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
ORDERS = Counter(
    "te_gateway_orders_total",
    "Order requests by command and result (accepted = durable in Kafka)",
    ["cmd", "result"],
)
PRODUCE_SECONDS = Histogram(
    "te_gateway_produce_seconds",
    "From produce() to the broker's acknowledgement (acks=all)",
    buckets=LATENCY_BUCKETS,
)
KAFKA_WRITES_FAILING = Gauge(
    "te_gateway_kafka_writes_failing",
    "1 from a command Kafka refused or did not acknowledge until the next it acknowledged",
)
AUTH_FAILURES = Counter("te_gateway_auth_failures_total", "Refused bearer tokens", ["code"])
RATE_LIMITED = Counter("te_gateway_rate_limited_total", "Requests refused with 429", ["scope"])
RATELIMIT_ERRORS = Counter(
    "te_gateway_ratelimit_errors_total", "Rate-limiter calls that failed (requests let through)"
)
