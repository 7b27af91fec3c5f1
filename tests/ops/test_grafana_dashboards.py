"""Grafana dashboards: committed JSON equals the generator's; every PromQL expression compiles."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ops.grafana.build_dashboards import DASHBOARDS_DIR, render_all

from .metric_names import service_metric_names

PROMETHEUS = Path(__file__).resolve().parents[2] / "ops" / "prometheus"


def test_committed_dashboards_are_current() -> None:
    for name, text in render_all().items():
        assert (DASHBOARDS_DIR / name).read_text() == text, (
            f"{name} is stale: run python ops/grafana/build_dashboards.py"
        )


def test_dashboards_are_valid_grafana_json() -> None:
    uids = set()
    for path in DASHBOARDS_DIR.glob("*.json"):
        board = json.loads(path.read_text())
        assert board["uid"] not in uids
        uids.add(board["uid"])
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in board["panels"]:
            assert panel["targets"], f"{path.name}: panel {panel['title']!r} has no query"
    # The boards operations asks for: system health, pipeline and lag, trading and
    # settlement, database, and the API (the gateway).
    assert uids == {
        "trade-engine-system-health",
        "trade-engine-pipeline-and-lag",
        "trade-engine-trading-and-settlement",
        "trade-engine-database",
        "trade-engine-api",
    }


def _expressions(name: str) -> dict[str, list[str]]:
    board = json.loads((DASHBOARDS_DIR / name).read_text())
    return {p["title"]: [t["expr"] for t in p["targets"]] for p in board["panels"]}


def test_api_dashboard_covers_the_gateway() -> None:
    panels = _expressions("api.json")
    every = " ".join(e for exprs in panels.values() for e in exprs)
    # Request rate by route and status.
    assert any(
        "te_gateway_http_requests_total" in e and "by (method, route, status)" in e
        for exprs in panels.values()
        for e in exprs
    )
    # p50 and p99 latency of the REST routes (the WebSocket's "latency" is its lifetime).
    latency = panels["Latency (REST routes)"]
    quantiles = [e.split(",")[0] for e in latency]
    assert quantiles == ["histogram_quantile(0.5", "histogram_quantile(0.99"]
    assert all("te_gateway_http_request_seconds_bucket" in e and "/api/v1/ws" in e for e in latency)
    # 5xx rate, rate-limited requests, WebSocket connections.
    assert 'status=~"5.."' in every
    assert "te_gateway_rate_limited_total" in every
    assert "te_gateway_ws_connections" in every


def test_dashboards_name_only_metrics_the_services_export() -> None:
    """Every gateway and wallet-service metric a panel reads is one the code defines."""
    exported = service_metric_names()
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        for exprs in _expressions(path.name).values():
            for name in re.findall(r"\b(te_(?:gateway|wallet_http)_[a-z0-9_]+)", " ".join(exprs)):
                assert name in exported, f"{path.name}: {name} is not exported"


def test_every_panel_expression_compiles(tmp_path: Path) -> None:
    if shutil.which("promtool") is None:
        subprocess.run(["bash", str(PROMETHEUS / "prometheus.sh"), "install"], check=True)
    promtool = shutil.which("promtool")
    assert promtool is not None
    rules = []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                rules.append({"record": f"check:{len(rules)}", "expr": target["expr"]})
    rules_file = tmp_path / "panels.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["datasources/prometheus.yml", "dashboards/trade-engine.yml"])
def test_provisioning_files_parse(name: str) -> None:
    path = DASHBOARDS_DIR.parent / "provisioning" / name
    assert yaml.safe_load(path.read_text())["apiVersion"] == 1
