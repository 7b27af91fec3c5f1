"""Generates the Grafana dashboards in ops/grafana/dashboards/ from compact panel lists.

Dashboards are code here so every panel's PromQL is checked (tests/ops/
test_grafana_dashboards.py compiles each expression with promtool) and the JSON
stays consistent. ``python ops/grafana/build_dashboards.py`` rewrites the files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"

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
    "trading": (
        "Trade engine / Trading",
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
