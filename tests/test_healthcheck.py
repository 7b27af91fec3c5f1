"""The image's HEALTHCHECK (``python -m trade_engine.healthcheck``): which port it probes
for each way a worker is started, and its exit status against a live and a dead port."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from trade_engine.healthcheck import check, health_port, worker_argv

TE = ["/usr/local/bin/python3.11", "/usr/local/bin/trade-engine"]


@pytest.mark.parametrize(
    ("argv", "env", "port"),
    [
        ([*TE, "matcher", "run", "--worker-id", "m1", "--metrics-port", "9464"], {}, 9464),
        ([*TE, "risk", "run", "--metrics-port=9465"], {}, 9465),
        ([*TE, "lag", "--serve", "9466", "--watch"], {}, 9466),
        ([*TE, "gateway", "run", "--host", "0.0.0.0", "--port", "8000"], {}, 8000),
        ([*TE, "gateway", "run"], {}, 8080),
        ([*TE, "gateway", "run"], {"TE_GATEWAY__PORT": "8090"}, 8090),
        ([*TE, "wallet", "serve"], {"TE_WALLET__URL": "http://wallet:8181"}, 8181),
        ([*TE, "wallet", "serve"], {}, 8081),
        ([*TE, "market-data", "run"], {}, 9471),
        ([*TE, "matcher", "run"], {}, 9464),
        ([*TE, "matcher", "run"], {"TE_METRICS_PORT": "9500"}, 9500),
        # --metrics-port 0 serves nothing: the default is all that is left to try.
        ([*TE, "sink", "postgres", "run", "--metrics-port", "0"], {}, 9464),
        # An explicit TE_HEALTH_PORT wins over everything.
        ([*TE, "risk", "run", "--metrics-port", "9465"], {"TE_HEALTH_PORT": "9999"}, 9999),
        ([], {}, 9464),
    ],
)
def test_health_port(argv: list[str], env: dict[str, str], port: int) -> None:
    assert health_port(argv, env) == port


def _proc(tmp_path: Path, processes: dict[int, list[str]]) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for pid, argv in processes.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (tmp_path / "self").mkdir()  # not a pid
    return tmp_path


def test_worker_is_pid_1(tmp_path: Path) -> None:
    proc = _proc(tmp_path, {1: [*TE, "risk", "run"], 7: ["sleep", "1"]})
    assert worker_argv(proc) == [*TE, "risk", "run"]


def test_worker_under_an_init(tmp_path: Path) -> None:
    # An init (tini, docker run --init) is PID 1; the worker is one of its descendants.
    proc = _proc(
        tmp_path,
        {
            1: ["/sbin/tini", "--", "/entrypoint.sh"],
            10: ["/bin/sh", "/entrypoint.sh"],
            12: [*TE, "lag", "--serve", "9466"],
        },
    )
    assert worker_argv(proc) == [*TE, "lag", "--serve", "9466"]
    module = _proc(tmp_path / "m", {1: ["/usr/local/bin/python", "-m", "trade_engine.cli"]})
    assert worker_argv(module) == ["/usr/local/bin/python", "-m", "trade_engine.cli"]


def test_no_worker(tmp_path: Path) -> None:
    assert worker_argv(_proc(tmp_path, {1: ["/sbin/tini", "--", "sh"], 9: ["sleep"]})) == []


@pytest.fixture
def live_port() -> Iterator[int]:
    """A server answering 200 on /health/live and 503 elsewhere."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health/live" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_check(live_port: int) -> None:
    assert check(live_port) is None
    problem = check(_dead_port())
    assert problem is not None
    assert "refused" in problem.lower()


def test_the_image_command(live_port: int) -> None:
    """As Docker runs it: exit 0 when healthy, 1 with the reason otherwise."""

    def run(port: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "trade_engine.healthcheck"],
            env={**os.environ, "TE_HEALTH_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    assert run(live_port).returncode == 0
    dead = run(_dead_port())
    assert dead.returncode == 1
    assert dead.stderr.startswith("unhealthy: http://127.0.0.1:")
