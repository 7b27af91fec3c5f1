"""Generates the Grafana dashboards in ops/grafana/dashboards/ from compact panel lists.

Dashboards are code here so every panel's PromQL is checked (tests/ops/
test_grafana_dashboards.py compiles each expression with promtool) and the JSON
stays consistent. ``python -m ops.grafana.build_dashboards`` rewrites the files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"


def _quantile(q: float, histogram: str, selector: str = "") -> str:
    """``histogram_quantile`` of a histogram over every instance, 5 m rate."""
    braces = f"{{{selector}}}" if selector else ""
    return f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket{braces}[5m])))"


# Gateway routes whose latency is a request's: not the WebSocket, the probes, /metrics.
_NOT_PROBES = 'route!~"/health/.*|/metrics"'
_API_ROUTES = 'route!~"/api/v1/ws|/health/.*|/metrics"'

# (title, unit, [(legend, expr)])
Panel = tuple[str, str, list[tuple[str, str]]]

DASHBOARDS: dict[str, tuple[str, list[Panel]]] = {
    "system-health": (
        "Trade engine / System health",
        [
            ("Workers up", "none", [("{{job}} {{instance}}", "up")]),
            ("CPU per worker", "percentunit", [("{{job}}", "rate(process_cpu_seconds_total[1m])")]),
            ("Resident memory", "bytes", [("{{job}}", "process_resident_memory_bytes")]),
            ("Open file descriptors", "none", [("{{job}}", "process_open_fds")]),
            (
                "Partitions owned by the matcher",
                "none",
                [("{{instance}}", "te_matcher_assigned_partitions")],
            ),
            (
                "Book restore time p99",
                "s",
                [
                    (
                        "p99",
                        "histogram_quantile(0.99, sum by (le) "
                        "(rate(te_matcher_recovery_seconds_bucket[5m])))",
                    )
                ],
            ),
        ],
    ),
    "pipeline-and-lag": (
        "Trade engine / Pipeline and lag",
        [
            (
                "Commands applied by the matcher",
                "ops",
                [("{{symbol}}", "sum by (symbol) (rate(te_matcher_commands_total[1m]))")],
            ),
            (
                "Execution records",
                "ops",
                [("{{kind}}", "sum by (kind) (rate(te_matcher_executions_total[1m]))")],
            ),
            (
                "Topic write rate",
                "ops",
                [("{{topic}}", "sum by (topic) (rate(kafka_topic_partition_current_offset[1m]))")],
            ),
            (
                "Consumer lag (messages)",
                "none",
                [("{{consumergroup}}", "sum by (consumergroup) (kafka_consumergroup_lag)")],
            ),
            (
                "Consumer lag (seconds)",
                "s",
                [("{{consumergroup}}", "max by (consumergroup) (kafka_consumergroup_lag_seconds)")],
            ),
            (
                "Stalled partitions",
                "none",
                [("{{consumergroup}}", "sum by (consumergroup) (te_consumergroup_stalled)")],
            ),
            (
                "Matcher batch latency",
                "s",
                [
                    (
                        "p50",
                        "histogram_quantile(0.5, sum by (le) "
                        "(rate(te_matcher_batch_seconds_bucket[5m])))",
                    ),
                    (
                        "p99",
                        "histogram_quantile(0.99, sum by (le) "
                        "(rate(te_matcher_batch_seconds_bucket[5m])))",
                    ),
                ],
            ),
            (
                "Matcher batch size",
                "none",
                [
                    (
                        "p50",
                        "histogram_quantile(0.5, sum by (le) "
                        "(rate(te_matcher_batch_messages_bucket[5m])))",
                    )
                ],
            ),
            (
                "Aborted transactions",
                "ops",
                [
                    (
                        "{{reason}}",
                        "sum by (reason) (rate(te_matcher_transactions_aborted_total[5m]))",
                    )
                ],
            ),
            (
                "Dead letters",
                "ops",
                [("{{stage}} {{code}}", "sum by (stage, code) (rate(te_dead_letters_total[5m]))")],
            ),
        ],
    ),
    "trading-and-settlement": (
        "Trade engine / Trading and settlement",
        [
            (
                "Trades per symbol",
                "ops",
                [("{{symbol}}", "sum by (symbol) (rate(te_matcher_trades_total[1m]))")],
            ),
            (
                "Rejects",
                "ops",
                [("rejected", 'sum(rate(te_matcher_executions_total{kind="REJECTED"}[1m]))')],
            ),
            (
                "Orders accepted vs ended",
                "ops",
                [
                    ("accepted", 'sum(rate(te_matcher_executions_total{kind="ACCEPTED"}[1m]))'),
                    ("ended", 'sum(rate(te_matcher_executions_total{kind="ORDER_ENDED"}[1m]))'),
                ],
            ),
            (
                "Self-trade preventions",
                "ops",
                [("prevented", 'sum(rate(te_matcher_executions_total{kind="STP_PREVENTED"}[5m]))')],
            ),
            (
                "Order -> execution latency (oldest order of each batch)",
                "s",
                [
                    ("p50", _quantile(0.5, "te_matcher_order_latency_seconds")),
                    ("p99", _quantile(0.99, "te_matcher_order_latency_seconds")),
                ],
            ),
            (
                "Risk stage: commands by result",
                "ops",
                [("{{cmd}} {{result}}", "sum by (cmd, result) (rate(te_risk_commands_total[1m]))")],
            ),
            (
                "Risk stage: hold latency",
                "s",
                [("p99", _quantile(0.99, "te_risk_reserve_seconds"))],
            ),
            (
                "Settlement: wallet operations",
                "ops",
                [
                    (
                        "{{operation}} {{result}}",
                        "sum by (operation, result) (rate(te_settlement_operations_total[1m]))",
                    )
                ],
            ),
            (
                "Settlement: batch latency",
                "s",
                [
                    ("p50", _quantile(0.5, "te_settlement_batch_seconds")),
                    ("p99", _quantile(0.99, "te_settlement_batch_seconds")),
                ],
            ),
            (
                "Settlement: dead letters and retries",
                "ops",
                [
                    (
                        "dead-lettered {{code}}",
                        "sum by (code) (rate(te_settlement_dead_letters_total[5m]))",
                    ),
                    (
                        "retried {{operation}}",
                        "sum by (operation) (rate(te_settlement_wallet_retries_total[5m]))",
                    ),
                ],
            ),
            (
                "Wallet client: call latency p99",
                "s",
                [
                    (
                        "{{operation}}",
                        "histogram_quantile(0.99, sum by (le, operation) "
                        "(rate(te_wallet_client_request_seconds_bucket[5m])))",
                    )
                ],
            ),
            (
                "Wallet circuit breakers (0 closed, 1 half-open, 2 open)",
                "none",
                [("{{breaker}}", "max by (breaker) (te_wallet_client_circuit_state)")],
            ),
            (
                "Reconcile: persistent drift",
                "none",
                [("{{check}}", "max by (check) (te_reconcile_drift)")],
            ),
        ],
    ),
    # The REST/WebSocket gateway (trade_engine/connectors/gateway/metrics.py, hub.py,
    # feeds.py and protocol.py). Latency leaves out the WebSocket (a "request" lasts its
    # connection's life), the probes and /metrics, as GatewayLatencyHigh does.
    "api": (
        "Trade engine / API",
        [
            (
                "Requests by route and status",
                "reqps",
                [
                    (
                        "{{method}} {{route}} {{status}}",
                        "sum by (method, route, status) (rate(te_gateway_http_requests_total[1m]))",
                    )
                ],
            ),
            (
                "Latency (REST routes)",
                "s",
                [
                    ("p50", _quantile(0.5, "te_gateway_http_request_seconds", _API_ROUTES)),
                    ("p99", _quantile(0.99, "te_gateway_http_request_seconds", _API_ROUTES)),
                ],
            ),
            (
                "Latency p99 by route",
                "s",
                [
                    (
                        "{{method}} {{route}}",
                        "histogram_quantile(0.99, sum by (le, method, route) "
                        f"(rate(te_gateway_http_request_seconds_bucket{{{_API_ROUTES}}}[5m])))",
                    )
                ],
            ),
            (
                "5xx share of requests (alert: > 5 %)",
                "percentunit",
                [
                    (
                        "5xx",
                        f'sum(rate(te_gateway_http_requests_total{{status=~"5..", {_NOT_PROBES}}}'
                        "[5m])) / sum(rate(te_gateway_http_requests_total"
                        f"{{{_NOT_PROBES}}}[5m]))",
                    )
                ],
            ),
            (
                "5xx by route and status",
                "reqps",
                [
                    (
                        "{{route}} {{status}}",
                        "sum by (route, status) "
                        '(rate(te_gateway_http_requests_total{status=~"5.."}[5m]))',
                    )
                ],
            ),
            (
                "Rate-limited requests (429)",
                "reqps",
                [("{{scope}}", "sum by (scope) (rate(te_gateway_rate_limited_total[1m]))")],
            ),
            (
                "Refused tokens and rate-limiter errors",
                "reqps",
                [
                    ("{{code}}", "sum by (code) (rate(te_gateway_auth_failures_total[5m]))"),
                    ("limiter errors", "sum(rate(te_gateway_ratelimit_errors_total[5m]))"),
                ],
            ),
            (
                "Orders by command and result",
                "ops",
                [
                    (
                        "{{cmd}} {{result}}",
                        "sum by (cmd, result) (rate(te_gateway_orders_total[1m]))",
                    )
                ],
            ),
            (
                "Produce -> broker acknowledgement",
                "s",
                [
                    ("p50", _quantile(0.5, "te_gateway_produce_seconds")),
                    ("p99", _quantile(0.99, "te_gateway_produce_seconds")),
                ],
            ),
            (
                "WebSocket connections",
                "none",
                [("{{instance}}", "sum by (instance) (te_gateway_ws_connections)")],
            ),
            (
                "WebSocket messages and disconnects",
                "ops",
                [
                    ("{{channel}}", "sum by (channel) (rate(te_gateway_ws_messages_total[1m]))"),
                    (
                        "closed: {{reason}}",
                        "sum by (reason) (rate(te_gateway_ws_disconnects_total[5m]))",
                    ),
                ],
            ),
        ],
    ),
    "database": (
        "Trade engine / Database",
        [
            (
                "Postgres sink batch latency",
                "s",
                [
                    ("p50", _quantile(0.5, "te_sink_batch_seconds", 'sink="postgres"')),
                    ("p99", _quantile(0.99, "te_sink_batch_seconds", 'sink="postgres"')),
                ],
            ),
            (
                "Rows written",
                "rowsps",
                [("{{table}} {{op}}", "sum by (table, op) (rate(te_sink_rows_total[1m]))")],
            ),
            (
                "Messages consumed and redeliveries skipped",
                "ops",
                [
                    ("{{sink}}", "sum by (sink) (rate(te_sink_messages_total[1m]))"),
                    ("{{sink}} duplicates", "sum by (sink) (rate(te_sink_duplicates_total[5m]))"),
                ],
            ),
            (
                "Sink position behind te.executions (messages)",
                "none",
                [
                    (
                        "{{consumergroup}}",
                        "sum by (consumergroup) "
                        '(kafka_consumergroup_lag{consumergroup=~".*sink.*"})',
                    )
                ],
            ),
            (
                "Rows in DEFAULT partitions (should be 0)",
                "none",
                [("{{table}}", "max by (table) (te_sink_default_partition_rows)")],
            ),
            (
                "Partition maintenance: failures and age of last success",
                "s",
                [
                    (
                        "since last success",
                        "time() - max("
                        "te_sink_partition_maintenance_last_success_timestamp_seconds)",
                    ),
                    (
                        "failures (1h)",
                        "sum(increase(te_sink_partition_maintenance_failures_total[1h]))",
                    ),
                ],
            ),
            (
                "Wallet service: requests",
                "ops",
                [
                    (
                        "{{route}} {{status}}",
                        "sum by (route, status) (rate(te_wallet_http_requests_total[1m]))",
                    )
                ],
            ),
            (
                "Wallet service: latency p99 (ledger transactions)",
                "s",
                [
                    (
                        "{{route}}",
                        "histogram_quantile(0.99, sum by (le, route) "
                        "(rate(te_wallet_http_request_seconds_bucket[5m])))",
                    )
                ],
            ),
            (
                "Database unavailable (wallet answers 503)",
                "ops",
                [("503", 'sum(rate(te_wallet_http_requests_total{status="503"}[5m]))')],
            ),
            (
                "Disk free",
                "percentunit",
                [
                    (
                        "{{job}} {{volume}}",
                        "min by (job, volume) (te_disk_free_bytes / te_disk_size_bytes)",
                    )
                ],
            ),
            # The servers themselves, from their exporters (ops/exporters/exporters.sh)
            # and RabbitMQ's own plugin.
            (
                "Servers up (PostgreSQL, Redis)",
                "none",
                [("postgres", "max(pg_up)"), ("redis", "max(redis_up)")],
            ),
            (
                "PostgreSQL: connections by database",
                "none",
                [("{{datname}}", "sum by (datname) (pg_stat_database_numbackends)")],
            ),
            (
                "PostgreSQL: transactions, rollbacks, deadlocks",
                "ops",
                [
                    ("commits", "sum(rate(pg_stat_database_xact_commit[1m]))"),
                    ("rollbacks", "sum(rate(pg_stat_database_xact_rollback[1m]))"),
                    ("deadlocks", "sum(rate(pg_stat_database_deadlocks[5m]))"),
                ],
            ),
            (
                "PostgreSQL: cache hit ratio",
                "percentunit",
                [
                    (
                        "{{datname}}",
                        "sum by (datname) (rate(pg_stat_database_blks_hit[5m])) / "
                        "(sum by (datname) (rate(pg_stat_database_blks_hit[5m])) "
                        "+ sum by (datname) (rate(pg_stat_database_blks_read[5m])))",
                    )
                ],
            ),
            (
                "Redis: clients and memory",
                "none",
                [
                    ("clients", "sum(redis_connected_clients)"),
                    ("memory MiB", "sum(redis_memory_used_bytes) / 1048576"),
                ],
            ),
            (
                "RabbitMQ: bridged queues, ready messages and consumers",
                "none",
                [
                    ("{{queue}} ready", "sum by (queue) (rabbitmq_detailed_queue_messages_ready)"),
                    ("{{queue}} consumers", "sum by (queue) (rabbitmq_detailed_queue_consumers)"),
                ],
            ),
        ],
    ),
}


def _panel(index: int, panel: Panel) -> dict[str, Any]:
    title, unit, targets = panel
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "prometheus"},
        "gridPos": {"h": 8, "w": 12, "x": (index % 2) * 12, "y": (index // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (legend, expr) in enumerate(targets)
        ],
    }


def dashboard(uid: str, title: str, panels: list[Panel]) -> dict[str, Any]:
    return {
        "uid": f"trade-engine-{uid}",
        "title": title,
        "tags": ["trade-engine"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "panels": [_panel(i, p) for i, p in enumerate(panels)],
    }


def render_all() -> dict[str, str]:
    return {
        f"{uid}.json": json.dumps(dashboard(uid, title, panels), indent=2) + "\n"
        for uid, (title, panels) in DASHBOARDS.items()
    }


if __name__ == "__main__":
    DASHBOARDS_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (DASHBOARDS_DIR / name).write_text(text)
        print(DASHBOARDS_DIR / name)
