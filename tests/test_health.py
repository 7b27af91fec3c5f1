"""Health endpoints: liveness, readiness from real dependency checks, /metrics on the same port."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from trade_engine.config import load_settings
from trade_engine.health import (
    DISK,
    Flag,
    Health,
    HealthServer,
    Recent,
    http_check,
    kafka_check,
    postgres_check,
    tcp_check,
)
from trade_engine.streams.topics import create_topics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def server() -> Iterator[HealthServer]:
    srv = HealthServer(0, Health())
    try:
        yield srv
    finally:
        srv.close()


def test_live_ready_and_metrics_on_one_port(server: HealthServer, tmp_path: Path) -> None:
    flag = Flag("waiting for the group")
    server.health.add("group", flag)
    DISK.watch("test", tmp_path)

    assert _get(server.port, "/health/live")[0] == 200
    status, body = _get(server.port, "/health/ready")
    assert status == 503
    assert json.loads(body)["group"] == {"ok": False, "detail": "waiting for the group"}

    flag.set(detail="2 partition(s) assigned")
    status, body = _get(server.port, "/health/ready")
    assert status == 200
    assert json.loads(body) == {
        "status": "ok",
        "group": {"ok": True, "detail": "2 partition(s) assigned"},
    }

    status, metrics = _get(server.port, "/metrics")
    assert status == 200
    assert f'te_disk_free_bytes{{path="{tmp_path}",volume="test"}}'.encode() in metrics
    assert _get(server.port, "/nothing")[0] == 404


def test_a_raising_or_hanging_check_is_not_ready(server: HealthServer) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("probe bug")

    def hanging() -> tuple[bool, str]:
        time.sleep(10)
        return True, "late"

    server.health.add("broken", broken)
    server.health.add("hanging", hanging)
    started = time.monotonic()
    status, body = _get(server.port, "/health/ready")
    assert status == 503
    assert time.monotonic() - started < 8
    answer = json.loads(body)
    assert "probe bug" in answer["broken"]["detail"]
    assert answer["hanging"]["ok"] is False


def test_recent_turns_unready_when_the_loop_stops() -> None:
    recent = Recent("lag sample", max_age_s=0.05)
    assert recent() == (False, "no lag sample yet")
    recent.touch()
    assert recent()[0]
    time.sleep(0.1)
    ok, detail = recent()
    assert not ok
    assert detail.startswith("last lag sample")


def test_probes_of_closed_ports_fail() -> None:
    port = _free_port()
    assert not tcp_check("127.0.0.1", port, 0.5)()[0]
    assert not http_check(f"http://127.0.0.1:{port}/health/ready", 0.5)()[0]
    closed = load_settings(kafka={"bootstrap_servers": f"127.0.0.1:{port}"})
    ok, detail = kafka_check(closed, 0.5)()
    assert not ok
    assert "kafka" in detail


@pytest.mark.broker
def test_kafka_probe_against_the_broker() -> None:
    assert kafka_check(load_settings())()[0]


@pytest.mark.postgres
def test_postgres_probe() -> None:
    settings = load_settings()
    assert postgres_check(settings.postgres.dsn())() == (True, "ok")
    bad = load_settings(postgres={"password": "wrong-password"})
    ok, detail = postgres_check(bad.postgres.dsn())()
    assert not ok
    assert "postgres" in detail


def _wait_ready(proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout_s
    last: dict[str, object] = {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the worker exited"
        try:
            status, body = _get(port, "/health/ready")
        except OSError:
            time.sleep(0.3)
            continue
        last = json.loads(body)
        if status == 200:
            return last
        time.sleep(0.3)
    raise AssertionError(f"not ready in {timeout_s}s: {last}")


def _worker(args: list[str], prefix: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TE_TOPICS__PREFIX": prefix,
        "TE_TOPICS__PARTITIONS": "2",
        "TE_STATE_DIR": str(tmp_path),
        "TE_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "trade_engine", *args], env=env)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.broker
def test_matcher_worker_is_ready_once_it_owns_partitions(tmp_path: Path) -> None:
    prefix = f"health-{uuid.uuid4().hex[:8]}."
    port = _free_port()
    proc = _worker(
        ["matcher", "run", "--worker-id", "h1", "--metrics-port", str(port)], prefix, tmp_path
    )
    try:
        answer = _wait_ready(proc, port, 90)
        assert answer["transactions"] == {"ok": True, "detail": "ok"}
        assert answer["group"] == {"ok": True, "detail": "2 partition(s) assigned"}
        assert answer["kafka"]["ok"] is True  # type: ignore[index]
        _, metrics = _get(port, "/metrics")
        assert b"te_matcher_assigned_partitions 2.0" in metrics
        assert b'te_disk_free_bytes{path="' in metrics
    finally:
        _stop(proc)


@pytest.mark.broker
@pytest.mark.postgres
def test_postgres_sink_ready_checks_the_database(tmp_path: Path) -> None:
    prefix = f"health-{uuid.uuid4().hex[:8]}."
    schema = f"health_{uuid.uuid4().hex[:8]}"
    port = _free_port()
    create_topics(load_settings(topics={"prefix": prefix, "partitions": 2}))
    migrate = _worker(["db", "migrate", "--schema", schema], prefix, tmp_path)
    assert migrate.wait(120) == 0
    proc = _worker(
        ["sink", "postgres", "run", "--schema", schema, "--metrics-port", str(port)],
        prefix,
        tmp_path,
    )
    try:
        answer = _wait_ready(proc, port, 90)
        assert answer["postgres"] == {"ok": True, "detail": "ok"}
        assert answer["group"]["ok"] is True  # type: ignore[index]
        _, metrics = _get(port, "/metrics")
        assert b"te_sink_partition_maintenance_last_success_timestamp_seconds" in metrics
    finally:
        _stop(proc)
        _drop_schema(schema)


def _drop_schema(schema: str) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(load_settings().postgres.dsn())
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())
