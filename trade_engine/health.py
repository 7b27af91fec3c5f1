"""One small HTTP server per worker: ``/metrics``, ``/health/live`` and ``/health/ready``.

Liveness answers 200 while the process serves requests at all. Readiness runs
the worker's checks and answers 200 only when every one passes, 503 otherwise,
with a JSON body naming each check's result so an operator (or a compose
healthcheck) sees *which* dependency is missing.

A check is a callable returning ``(ok, detail)``. Two kinds exist:

- ``Flag``: a fact the worker's own loop records (its consumer joined the
  group, its producer's transactions are initialised). The server thread only
  reads it, so no client object is shared across threads;
- probes of a dependency made from the server's thread with their own short
  connections (``kafka_check``, ``postgres_check``, ``http_check``,
  ``tcp_check``); a probe never touches the worker's clients.

The server runs in a daemon thread (``http.server``), like prometheus-client's
own, and never blocks the worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
from confluent_kafka import KafkaException
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from trade_engine.config import Settings
from trade_engine.streams import clients

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]
CHECK_TIMEOUT_S = 3.0


class Flag:
    """A readiness fact set by the worker's loop; ``detail`` says what is missing until then."""

    def __init__(self, waiting_for: str) -> None:
        self.waiting_for = waiting_for
        self._value = False
        self._detail = waiting_for

    def set(self, value: bool = True, detail: str = "ok") -> None:
        self._value = value
        self._detail = detail if value else (detail if detail != "ok" else self.waiting_for)

    def clear(self, detail: str | None = None) -> None:
        self.set(False, detail or self.waiting_for)

    @property
    def value(self) -> bool:
        return self._value

    def __call__(self) -> tuple[bool, str]:
        return self._value, self._detail


class Recent:
    """Ready while the worker reported success within ``max_age_s`` (a loop that stopped
    working, e.g. the lag exporter's sampling, turns it unready)."""

    def __init__(self, what: str, max_age_s: float) -> None:
        self.what = what
        self.max_age_s = max_age_s
        self._at: float | None = None

    def touch(self) -> None:
        self._at = time.monotonic()

    def __call__(self) -> tuple[bool, str]:
        if self._at is None:
            return False, f"no {self.what} yet"
        age = time.monotonic() - self._at
        if age > self.max_age_s:
            return False, f"last {self.what} {age:.0f}s ago"
        return True, "ok"


def tcp_check(host: str, port: int, timeout_s: float = 2.0) -> Check:
    def check() -> tuple[bool, str]:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return True, "ok"
        except OSError as exc:
            return False, f"{host}:{port}: {exc}"

    return check


def http_check(url: str, timeout_s: float = 2.0) -> Check:
    """GET ``url`` (for example another service's /health/ready); 2xx is ready."""

    def check() -> tuple[bool, str]:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            return False, f"{url}: HTTP {exc.code}"
        except OSError as exc:
            return False, f"{url}: {exc}"
        return (200 <= status < 300), f"HTTP {status}"

    return check


def kafka_check(settings: Settings, timeout_s: float = 2.0) -> Check:
    """A metadata request from an admin client of the probe's own (created on first use)."""
    holder: dict[str, Any] = {}

    def check() -> tuple[bool, str]:
        admin = holder.get("admin")
        if admin is None:
            admin = holder["admin"] = clients.admin_client(
                settings, **{"client.id": "health-probe"}
            )
        try:
            metadata = admin.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            return False, f"kafka: {exc.args[0] if exc.args else exc}"
        return bool(metadata.brokers), f"{len(metadata.brokers)} broker(s)"

    return check


def postgres_check(dsn: str, timeout_s: float = 2.0) -> Check:
    """Connect and ``SELECT 1`` on a connection of the probe's own."""

    def check() -> tuple[bool, str]:
        async def ping() -> None:
            conn = await asyncpg.connect(dsn, timeout=timeout_s)
            try:
                await conn.fetchval("SELECT 1")
            finally:
                await conn.close()

        try:
            asyncio.run(ping())
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            return False, f"postgres: {exc!r}"
        return True, "ok"

    return check


class DiskCollector(Collector):
    """``te_disk_free_bytes`` / ``te_disk_size_bytes`` of named paths, read at scrape time.

    Labels: ``volume`` (a fixed name such as ``state`` or ``kafka``, never a
    user path) and ``path``. A path that does not exist is skipped.
    """

    def __init__(self) -> None:
        self._paths: dict[str, Path] = {}
        self._lock = threading.Lock()

    def watch(self, volume: str, path: Path | str) -> None:
        with self._lock:
            self._paths[volume] = Path(path)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        free = GaugeMetricFamily(
            "te_disk_free_bytes", "Bytes available to the engine", labels=["volume", "path"]
        )
        size = GaugeMetricFamily(
            "te_disk_size_bytes", "Size of the file system", labels=["volume", "path"]
        )
        with self._lock:
            paths = dict(self._paths)
        for volume, path in sorted(paths.items()):
            try:
                usage = shutil.disk_usage(path)
            except OSError:
                continue
            free.add_metric([volume, str(path)], usage.free)
            size.add_metric([volume, str(path)], usage.total)
        return [free, size]


DISK = DiskCollector()
REGISTRY.register(DISK)


class Health:
    """The readiness checks of one process, by name."""

    def __init__(self, checks: Mapping[str, Check] | None = None) -> None:
        self.checks: dict[str, Check] = dict(checks or {})
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="health-check")

    def add(self, name: str, check: Check) -> None:
        self.checks[name] = check

    def ready(self) -> tuple[bool, dict[str, dict[str, object]]]:
        """Every check at once (each bounded by ``CHECK_TIMEOUT_S``)."""
        futures = {name: self._pool.submit(_safe, check) for name, check in self.checks.items()}
        results: dict[str, dict[str, object]] = {}
        for name, future in futures.items():
            try:
                ok, detail = future.result(timeout=CHECK_TIMEOUT_S)
            except FutureTimeout:
                ok, detail = False, f"no answer within {CHECK_TIMEOUT_S:.0f}s"
            results[name] = {"ok": ok, "detail": detail}
        return all(r["ok"] for r in results.values()), results


def _safe(check: Check) -> tuple[bool, str]:
    try:
        return check()
    except Exception as exc:  # a broken probe is "not ready", never a crashed server
        return False, repr(exc)


def _handler(health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path == "/health/live":
                self._json(200, {"status": "ok"})
            elif path == "/health/ready":
                ok, checks = health.ready()
                self._json(200 if ok else 503, {"status": "ok" if ok else "unavailable", **checks})
            else:
                self._json(404, {"code": "NOT_FOUND", "message": f"no route {path}"})

        def _json(self, status: int, body: dict[str, object]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every few seconds would drown the worker's log

    return Handler


class HealthServer:
    """The server thread; ``close`` stops it (tests start several in one process)."""

    def __init__(self, port: int, health: Health, addr: str = "127.0.0.1") -> None:
        self.health = health
        self.httpd = ThreadingHTTPServer((addr, port), _handler(health))
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name=f"health-{self.port}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
