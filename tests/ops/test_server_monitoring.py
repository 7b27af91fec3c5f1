"""The servers' monitoring as the project's scripts set it up: PostgreSQL's
pg_stat_statements and slow-query log (ops/postgres/postgres.sh), the PostgreSQL and
Redis exporters from Debian's packages (ops/exporters/exporters.sh), and RabbitMQ's
per-queue metrics (ops/rabbitmq/rabbitmq.sh, the plugin rabbitmq_prometheus)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import aio_pika
import asyncpg
import pytest
import yaml

from trade_engine.config import Settings

REPO = Path(__file__).resolve().parents[2]
OPS = REPO / "ops"


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(OPS / args[0]), *args[1:]], capture_output=True, text=True, check=False
    )


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def _sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of the first sample of ``name`` whose labels include ``labels``."""
    for line in metrics.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def _fetch(settings: Settings, *queries: str) -> list[object]:
    conn = await asyncpg.connect(settings.postgres.dsn())
    try:
        return [await conn.fetchval(query) for query in queries]
    finally:
        await conn.close()


@pytest.mark.postgres
def test_slow_queries_are_logged_and_statements_counted(settings: Settings) -> None:
    # The session fixture ran postgres.sh up: both are configured by now.
    # A statement of its own (a new temporary table: statistics are per statement
    # shape, and literals, aliases and comments do not make a new one).
    table = f"te_probe_{uuid.uuid4().hex[:8]}"
    slow, started, _, _, calls = asyncio.run(
        _fetch(
            settings,
            "SHOW log_min_duration_statement",
            "SELECT pg_postmaster_start_time()::text",
            f"CREATE TEMP TABLE {table} (id int)",
            f"SELECT count(*) FROM {table}",
            # The engine's role reads every statement's statistics, its own included.
            f"SELECT sum(calls) FROM pg_stat_statements WHERE query LIKE '%FROM {table}%'",
        )
    )
    assert slow == "100ms"
    assert calls == 1

    # Idempotent: configured once, so a second `up` restarts nothing.
    result = _script("postgres/postgres.sh", "up")
    assert result.returncode == 0, result.stderr
    assert "restarting" not in result.stderr
    (again,) = asyncio.run(_fetch(settings, "SELECT pg_postmaster_start_time()::text"))
    assert again == started


def _install_or_skip() -> None:
    result = _script("exporters/exporters.sh", "install")
    if result.returncode == 0:
        return
    policy = subprocess.run(
        ["apt-cache", "policy", "prometheus-postgres-exporter", "prometheus-redis-exporter"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    if "Candidate: (none)" in policy or not policy.strip():
        pytest.skip(f"Debian's exporter packages cannot be installed here:\n{policy}")
    pytest.fail(f"exporters.sh install failed:\n{result.stderr[-3000:]}")


@pytest.mark.postgres
def test_exporters_answer_for_the_local_servers() -> None:
    _install_or_skip()
    result = _script("exporters/exporters.sh", "up")
    assert result.returncode == 0, result.stderr
    state = Path(os.environ.get("TE_STATE_DIR") or REPO / ".state")
    pids = sorted((state / "exporters").glob("*.pid"))
    # A freshly started exporter may answer its first scrape before its connection is up.
    deadline = time.monotonic() + 30
    postgres = _get("http://127.0.0.1:9187/metrics")
    while not re.search(r"^pg_up 1$", postgres, re.MULTILINE) and time.monotonic() < deadline:
        time.sleep(0.5)
        postgres = _get("http://127.0.0.1:9187/metrics")
    assert re.search(r"^pg_up 1$", postgres, re.MULTILINE), postgres[-2000:]
    assert _sample(postgres, "pg_stat_database_numbackends", datname="trade_engine") is not None
    # Redis may or may not run: its exporter answers either way, saying which.
    assert _sample(_get("http://127.0.0.1:9121/metrics"), "redis_up") in (0.0, 1.0)

    # Idempotent: a second `up` keeps the running exporters.
    before = {p.name: p.read_text() for p in pids}
    result = _script("exporters/exporters.sh", "up")
    assert result.returncode == 0, result.stderr
    assert {p.name: p.read_text() for p in pids} == before
    status = _script("exporters/exporters.sh", "status")
    assert status.returncode == 0
    assert "postgres-exporter: up" in status.stdout


def _rabbitmq_scrape_url() -> str:
    """The URL Prometheus scrapes RabbitMQ at (ops/prometheus/prometheus.yml)."""
    config = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "rabbitmq"]
    query = urllib.parse.urlencode(
        [(k, v) for k, values in job.get("params", {}).items() for v in values]
    )
    target = job["static_configs"][0]["targets"][0]
    return f"http://{target}{job['metrics_path']}?{query}"


@pytest.mark.rabbitmq
def test_rabbitmq_exports_depth_and_consumers_per_queue(settings: Settings) -> None:
    """The metrics RabbitMQQueueGrowingWithoutConsumer reads, from the real broker."""
    queue_name = f"test.monitoring.{uuid.uuid4().hex[:8]}"
    url = _rabbitmq_scrape_url()

    async def scenario() -> tuple[float | None, float | None]:
        connection = await aio_pika.connect(settings.rabbitmq.url())
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(queue_name, auto_delete=False)
            try:
                for i in range(3):
                    await channel.default_exchange.publish(aio_pika.Message(b"%d" % i), queue.name)
                ready = consumers = None
                deadline = time.monotonic() + 30  # the plugin refreshes queue stats every 5 s
                while time.monotonic() < deadline:
                    metrics = await asyncio.to_thread(_get, url)
                    labels = {"queue": queue_name}
                    ready = _sample(metrics, "rabbitmq_detailed_queue_messages_ready", **labels)
                    consumers = _sample(metrics, "rabbitmq_detailed_queue_consumers", **labels)
                    if ready == 3.0:
                        break
                    await asyncio.sleep(1)
                return ready, consumers
            finally:
                await queue.delete(if_unused=False, if_empty=False)

    assert asyncio.run(scenario()) == (3.0, 0.0)
