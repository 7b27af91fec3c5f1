"""Alert rules are valid and behave as their unit tests say (promtool from Debian's package)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .metric_names import service_metric_names

PROMETHEUS = Path(__file__).resolve().parents[2] / "ops" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    if shutil.which("promtool") is None:
        subprocess.run(["bash", str(PROMETHEUS / "prometheus.sh"), "install"], check=True)
    path = shutil.which("promtool")
    assert path is not None
    return path


def test_rules_are_valid(promtool: str) -> None:
    subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=PROMETHEUS, check=True)


def test_rules_unit_tests_pass(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_links_an_existing_runbook() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    repo = PROMETHEUS.parents[1]
    for group in rules["groups"]:
        for rule in group["rules"]:
            runbook = rule["annotations"]["runbook_url"]
            assert (repo / runbook).is_file(), f"{rule['alert']}: {runbook} is missing"


def test_alerts_name_only_metrics_the_services_export() -> None:
    """Every gateway and wallet-service metric an alert reads is one the code defines."""
    exported = service_metric_names()
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    seen = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            for name in re.findall(r"\b(te_(?:gateway|wallet_http)_[a-z0-9_]+)", rule["expr"]):
                assert name in exported, f"{rule['alert']}: {name} is not exported"
                seen.add(name)
    assert {
        "te_gateway_http_requests_total",
        "te_gateway_http_request_seconds_bucket",
        "te_wallet_http_requests_total",
        "te_wallet_http_request_seconds_bucket",
    } <= seen


def test_http_and_queue_alerts_use_the_seeds_thresholds() -> None:
    rules = {
        rule["alert"]: rule
        for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    for service in ("Gateway", "Wallet"):
        latency, errors = rules[f"{service}LatencyHigh"], rules[f"{service}ErrorRateHigh"]
        assert "histogram_quantile(0.99," in latency["expr"]
        assert latency["expr"].rstrip().endswith("> 0.2")  # p99 > 200 ms
        assert errors["expr"].rstrip().endswith("> 0.05")  # 5xx > 5 %
        assert (latency["for"], errors["for"]) == ("2m", "2m")
        assert (latency["labels"]["severity"], errors["labels"]["severity"]) == (
            "warning",
            "critical",
        )
    # The bridged queues (docs/rabbitmq.md); dlx.failed receives failed.trades.
    queue = rules["RabbitMQQueueGrowingWithoutConsumer"]["expr"].replace("\\", "")
    for name in ("wallet.service.trades", "notification.service.trades", "dlx.failed"):
        assert name in queue
    assert "rabbitmq_detailed_queue_consumers == 0" in queue
