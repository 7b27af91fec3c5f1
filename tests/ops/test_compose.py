"""docker-compose.yml is well formed: infrastructure has healthchecks, mounted files exist."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from trade_engine.healthcheck import health_port

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


def _scrapes(name: str) -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((REPO / "ops" / "prometheus" / name).read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_servers_are_scraped_through_their_exporters() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    # The official images of the exporters the local stack runs from Debian's packages.
    assert services["postgres-exporter"]["image"].startswith(
        "quay.io/prometheuscommunity/postgres-exporter:"
    )
    assert "@postgres:5432/" in services["postgres-exporter"]["environment"]["DATA_SOURCE_NAME"]
    assert services["redis-exporter"]["image"].startswith("oliver006/redis_exporter:")
    assert services["redis-exporter"]["environment"]["REDIS_ADDR"] == "redis://redis:6379"
    assert "healthcheck" in services["redis"]
    # Query monitoring in the compose Postgres as in the local one.
    command = " ".join(services["postgres"]["command"])
    assert "shared_preload_libraries=pg_stat_statements" in command
    assert "log_min_duration_statement=100ms" in command

    for name, hosts in (
        ("prometheus-docker.yml", ("postgres-exporter:9187", "redis-exporter:9121", "rabbitmq")),
        ("prometheus.yml", ("127.0.0.1:9187", "127.0.0.1:9121", "127.0.0.1")),
    ):
        jobs = _scrapes(name)
        assert jobs["postgres"]["static_configs"][0]["targets"] == [hosts[0]], name
        assert jobs["redis"]["static_configs"][0]["targets"] == [hosts[1]], name
        # RabbitMQ's own plugin, per queue (what RabbitMQQueueGrowingWithoutConsumer reads).
        rabbitmq = jobs["rabbitmq"]
        assert rabbitmq["static_configs"][0]["targets"] == [f"{hosts[2]}:15692"], name
        assert rabbitmq["metrics_path"] == "/metrics/detailed", name
        assert set(rabbitmq["params"]["family"]) == {
            "queue_coarse_metrics",
            "queue_consumer_count",
        }, name


def test_image_healthcheck_probes_each_services_own_port() -> None:
    """The image's HEALTHCHECK finds the port on the worker's command line: for every
    engine service it probes the port that service's own healthcheck uses."""
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'CMD ["python", "-m", "trade_engine.healthcheck"]' in dockerfile
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    checked = 0
    for name, service in compose["services"].items():
        if service.get("image") != "trade-engine:local" or "healthcheck" not in service:
            continue
        url = re.search(r"127\.0\.0\.1:(\d+)/health/", " ".join(service["healthcheck"]["test"]))
        assert url is not None, name
        env = {k: str(v) for k, v in service.get("environment", {}).items()}
        argv = ["/usr/local/bin/python3.11", "/usr/local/bin/trade-engine", *service["command"]]
        assert health_port(argv, env) == int(url.group(1)), name
        checked += 1
    assert checked >= 10
