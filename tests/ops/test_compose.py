"""docker-compose.yml is well formed: infrastructure has healthchecks, mounted files exist."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
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


ENGINE_PORTS = {
    "matcher": 9464,
    "risk": 9465,
    "lag-exporter": 9466,
    "sink-postgres": 9467,
    "sink-rabbitmq": 9468,
    "settlement": 9469,
    "reconcile": 9470,
    "wallet": 8081,
}


def test_engine_services_are_checked_by_their_readiness_endpoint() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("jaeger", "kafka-ui"):
        assert name in services, name
    for name, port in ENGINE_PORTS.items():
        test = " ".join(services[name]["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/health/ready" in test, f"{name}: {test}"
        env = services[name].get("environment", {})
        if name != "wallet":
            # Prometheus in another container must reach the metrics server.
            assert env.get("TE_METRICS_HOST") == "0.0.0.0", name
            assert env.get("TE_TRACING__OTLP_ENDPOINT") == "http://jaeger:4318", name
    scraped = (REPO / "ops" / "prometheus" / "prometheus-docker.yml").read_text()
    for name, port in ENGINE_PORTS.items():
        assert f"{name}:{port}" in scraped, f"prometheus does not scrape {name}"


def test_docker_compose_config_validates() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    result = subprocess.run(
        [docker, "compose", "-f", str(REPO / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
