"""Alert rules are valid and behave as their unit tests say (promtool from Debian's package)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

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
