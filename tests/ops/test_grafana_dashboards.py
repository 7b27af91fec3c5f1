"""Grafana dashboards: committed JSON equals the generator's; every PromQL expression compiles."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ops.grafana.build_dashboards import DASHBOARDS_DIR, render_all

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
    # The four boards operations asks for: system health, pipeline and lag,
    # trading and settlement, database.
    assert uids == {
        "trade-engine-system-health",
        "trade-engine-pipeline-and-lag",
        "trade-engine-trading-and-settlement",
        "trade-engine-database",
    }


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
