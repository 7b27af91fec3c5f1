"""docker-compose.yml is well formed: infrastructure has healthchecks, mounted files exist."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_compose_services_and_mounts() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("kafka", "postgres", "rabbitmq", "prometheus", "grafana", "matcher", "risk"):
        assert name in services, name
    for name in ("kafka", "postgres", "rabbitmq", "prometheus", "matcher"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{source} is mounted but missing"
