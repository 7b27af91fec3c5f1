"""GCRA buckets: unit and property tests in memory; Redis shared by two gateway processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trade_engine.config import Settings
from trade_engine.connectors.gateway.auth import mint_token
from trade_engine.connectors.gateway.ratelimit import Limit, LocalRateLimiter, RedisRateLimiter

REPO = Path(__file__).resolve().parents[3]
REDIS_PORT = 6392


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_burst_then_rate() -> None:
    clock = Clock()
    limiter = LocalRateLimiter(clock)
    limit = Limit(rate_per_s=2, burst=3)
    decisions = [await limiter.hit([("u", limit)]) for _ in range(4)]
    assert [d.allowed for d in decisions if d] == [True, True, True, False]
    refused = decisions[-1]
    assert refused is not None
    assert refused.headers()["Retry-After"] == "1"
    assert 0.4 < refused.retry_after_s <= 0.5
    clock.now += 0.5
    again = await limiter.hit([("u", limit)])
    assert again is not None
    assert again.allowed


async def test_refused_request_charges_no_key() -> None:
    limiter = LocalRateLimiter(Clock())
    tight, loose = Limit(1, 1), Limit(100, 100)
    assert (await limiter.hit([("ip", loose), ("user", tight)])).allowed  # type: ignore[union-attr]
    for _ in range(5):
        d = await limiter.hit([("ip", loose), ("user", tight)])
        assert d is not None
        assert not d.allowed
    d = await limiter.hit([("ip", loose)])
    assert d is not None
    assert d.remaining == 98


@settings(max_examples=200, deadline=None)
@given(
    rate=st.integers(1, 50),
    burst=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 0.5, allow_nan=False), min_size=1, max_size=200),
)
async def test_never_more_than_burst_plus_rate_times_elapsed(
    rate: int, burst: int, gaps: list[float]
) -> None:
    clock = Clock()
    limiter = LocalRateLimiter(clock)
    limit = Limit(rate, burst)
    allowed = 0
    start = clock.now
    for gap in gaps:
        clock.now += gap
        d = await limiter.hit([("k", limit)])
        assert d is not None
        allowed += d.allowed
        assert allowed <= burst + rate * (clock.now - start) + 1e-6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def redis_server() -> Iterator[str]:
    """A Redis of this test's own (ops/redis/redis.sh on a spare port), stopped after."""
    env = {**os.environ, "TE_REDIS_PORT": str(REDIS_PORT)}
    script = str(REPO / "ops" / "redis" / "redis.sh")
    up = subprocess.run(
        ["bash", script, "up"], env=env, capture_output=True, text=True, check=False
    )
    if up.returncode != 0:
        pytest.fail(f"could not start redis:\n{up.stderr[-2000:]}", pytrace=False)
    try:
        yield f"redis://127.0.0.1:{REDIS_PORT}/0"
    finally:
        subprocess.run(["bash", script, "down"], env=env, capture_output=True, check=False)


async def test_redis_limiter_matches_the_local_one(redis_server: str) -> None:
    limiter = RedisRateLimiter(redis_server, prefix=f"t{time.time_ns()}:")
    try:
        limit = Limit(rate_per_s=1, burst=3)
        results = [await limiter.hit([("u", limit)]) for _ in range(5)]
        assert [d.allowed for d in results if d] == [True, True, True, False, False]
    finally:
        await limiter.close()


def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "gateway exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("gateway did not start")


@pytest.mark.broker
@pytest.mark.postgres
@pytest.mark.slow
def test_limit_is_shared_by_two_gateway_processes(
    redis_server: str,
    gateway_env: Callable[..., tuple[str, str]],
    settings: Settings,
) -> None:
    prefix, schema = gateway_env()
    env = {
        **os.environ,
        "TE_TOPICS__PREFIX": prefix,
        "TE_GATEWAY__POSTGRES_SCHEMA": schema,
        "TE_GATEWAY__REDIS_URL": redis_server,
        "TE_GATEWAY__DEV_MODE": "true",  # the tokens below use the development secret
        "TE_GATEWAY__RATE_LIMIT__USER_PER_S": "0.5",
        "TE_GATEWAY__RATE_LIMIT__USER_BURST": "6",
        "TE_LOG_LEVEL": "WARNING",
    }
    ports = [_free_port(), _free_port()]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from trade_engine.cli import main; raise SystemExit(main())",
                "gateway",
                "run",
                "--port",
                str(port),
            ],
            env=env,
        )
        for port in ports
    ]
    try:
        for port, proc in zip(ports, procs, strict=True):
            _wait_ready(port, proc)
        user = f"rl{time.time_ns()}"
        token = mint_token(settings.gateway.auth, user)
        statuses: list[int] = []
        retry_after: list[str] = []
        for i in range(16):
            request = urllib.request.Request(
                f"http://127.0.0.1:{ports[i % 2]}/api/v1/orders/open",
                headers={"Authorization": f"Bearer {token}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as resp:
                    statuses.append(resp.status)
            except urllib.error.HTTPError as err:
                statuses.append(err.code)
                retry_after.append(err.headers.get("Retry-After", ""))
        allowed = statuses.count(200)
        # One bucket for both processes: the burst (6), not 2 x 6.
        assert 6 <= allowed <= 7, statuses
        assert statuses.count(429) == 16 - allowed
        assert all(int(r) >= 1 for r in retry_after)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)
