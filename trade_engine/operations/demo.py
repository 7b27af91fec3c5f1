"""The main job: a demo market flowing through the whole pipeline, watched live.

``make run`` (or ``trade-engine demo``) starts the validation stage, the
matcher and the seeded load generator as child processes on the local stack
and prints, every two seconds: the rate of each topic, order->execution
latency (from the command's log timestamp to its first execution record, as a
read_committed reader sees it) and each stage's consumer lag. Ctrl-C stops
everything cleanly.

The workers are supervised: one that exits is restarted after a backoff (1 s,
2 s, 4 s ... at most 30 s); only a worker that keeps failing within seconds of
its start (5 times in a row) stops the demo, with a non-zero exit status.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import FrameType
from urllib.parse import urlsplit

from trade_engine.config import Settings
from trade_engine.connectors.wallet.client import WalletClient
from trade_engine.connectors.wallet.models import TransferRequest
from trade_engine.operations.lag import LagReader
from trade_engine.streams import clients
from trade_engine.streams.execution_records import decode_execution
from trade_engine.streams.topics import create_topics

REFRESH_S = 2.0


@dataclass
class LatencyWindow:
    """Order->execution latencies of the last few seconds, in milliseconds."""

    samples: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, value: float) -> None:
        with self.lock:
            self.samples.append(value)

    def percentiles(self) -> tuple[float, float] | None:
        with self.lock:
            values = sorted(self.samples)
            self.samples.clear()
        if not values:
            return None
        return values[len(values) // 2], values[min(len(values) - 1, int(len(values) * 0.99))]


def _watch_latency(settings: Settings, window: LatencyWindow, stop: threading.Event) -> None:
    consumer = clients.reader(
        settings, f"demo-monitor-{uuid.uuid4().hex[:8]}", **{"auto.offset.reset": "latest"}
    )
    consumer.subscribe([settings.topic_names["executions"]])
    try:
        while not stop.is_set():
            for msg in consumer.consume(1000, 0.5):
                value = msg.value()
                if msg.error() is not None or value is None:
                    continue
                # ACCEPTED/REJECTED are the first answer to a place command; the
                # record's timestamp is when it became readable to consumers.
                if b'"kind":"ACCEPTED"' in value or b'"kind":"REJECTED"' in value:
                    sent_ms = _millis(decode_execution(value).at)
                    window.add(msg.timestamp()[1] - sent_ms)
    finally:
        consumer.close()


def _millis(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


# ------------------------------------------------------------------ supervision


@dataclass(frozen=True, slots=True)
class Decision:
    restart: bool
    delay_s: float = 0.0
    reason: str = ""


@dataclass
class RestartPolicy:
    """When to restart a worker that exited, and when to give up on it.

    The delay doubles with each failure in a row (``base_delay_s`` ... at most
    ``max_delay_s``) and starts over once a run lasted ``healthy_after_s``. A run
    shorter than ``fast_failure_s`` is a fast failure; ``max_fast_failures`` of them
    in a row and the worker is given up on. Pure: times are passed in.
    """

    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    fast_failure_s: float = 10.0
    max_fast_failures: int = 5
    healthy_after_s: float = 60.0
    failures: int = 0  # in a row, since the last healthy run
    fast_failures: int = 0  # in a row
    restarts: int = 0

    def on_exit(self, started_at: float, exited_at: float) -> Decision:
        ran = exited_at - started_at
        if ran >= self.healthy_after_s:
            self.failures = 0
        self.failures += 1
        self.fast_failures = self.fast_failures + 1 if ran < self.fast_failure_s else 0
        if self.fast_failures >= self.max_fast_failures:
            return Decision(
                False,
                reason=f"{self.fast_failures} failures in a row, each within "
                f"{self.fast_failure_s:g}s of its start",
            )
        self.restarts += 1
        delay = min(self.base_delay_s * 2 ** (self.failures - 1), self.max_delay_s)
        return Decision(True, delay)


@dataclass
class Worker:
    """A supervised process: how to start it, its current process, its policy."""

    start: Callable[[], subprocess.Popen[bytes]]
    log: str = ""
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    proc: subprocess.Popen[bytes] | None = None  # None: waiting for its restart
    started_at: float = 0.0
    restart_at: float = 0.0
    restarts: int = 0

    def launch(self, now: float) -> Worker:
        self.proc = self.start()
        self.started_at = now
        return self


class Supervisor:
    """Restarts workers that exit, as their RestartPolicy says; ``poll`` often."""

    def __init__(
        self,
        workers: dict[str, Worker],
        *,
        clock: Callable[[], float] = time.monotonic,
        out: Callable[[str], None] = print,
    ) -> None:
        self.workers = workers
        self.clock = clock
        self.out = out

    def poll(self) -> str | None:
        """Restart what exited or is due; a message when a worker is given up on."""
        now = self.clock()
        for name, worker in self.workers.items():
            if worker.proc is None:
                if now >= worker.restart_at:
                    worker.launch(now)
                    worker.restarts += 1
                    self.out(f"supervisor: {name} restarted (restart {worker.restarts})")
                continue
            code = worker.proc.poll()
            if code is None:
                continue
            ran = now - worker.started_at
            see = f"; see {worker.log}" if worker.log else ""
            decision = worker.policy.on_exit(worker.started_at, now)
            if not decision.restart:
                message = (
                    f"supervisor: {name} exited with code {code} after {ran:.1f}s: "
                    f"{decision.reason}; giving up{see}"
                )
                self.out(message)
                return message
            worker.proc = None
            worker.restart_at = now + decision.delay_s
            self.out(
                f"supervisor: {name} exited with code {code} after {ran:.1f}s; "
                f"restarting in {decision.delay_s:g}s{see}"
            )
        return None

    def restarts(self) -> dict[str, int]:
        return {n: w.restarts for n, w in self.workers.items() if w.restarts}

    def stop(self, *, last: Iterable[str] = ()) -> None:
        """Stop every worker, the ``last`` ones after all the others."""
        late = set(last)
        _stop([w.proc for n, w in self.workers.items() if n not in late and w.proc is not None])
        _stop([w.proc for n, w in self.workers.items() if n in late and w.proc is not None])


def _spawn(args: list[str], log_name: str, settings: Settings) -> Worker:
    log_dir = settings.state_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / log_name

    def start() -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log_file:  # the child keeps its own descriptor
            return subprocess.Popen(
                [sys.executable, "-m", "trade_engine", *args], stdout=log_file, stderr=log_file
            )

    return Worker(start, log=str(log_path)).launch(time.monotonic())


DEMO_USERS = 100


async def _fund_users(settings: Settings, users: int) -> None:
    """Give the load generator's users (u1..uN) plenty of every asset, once.

    Deposits are idempotent on their key, so a second demo run adds nothing.
    """
    assets = sorted(
        {spec.base_asset for spec in settings.market.symbols}
        | {spec.quote_asset for spec in settings.market.symbols}
    )
    url = urlsplit(settings.wallet.url)
    for _ in range(120):  # the service was just started: wait for its port
        try:
            _, writer = await asyncio.open_connection(url.hostname, url.port)
        except OSError:
            await asyncio.sleep(0.5)
        else:
            writer.close()
            break
    async with WalletClient.from_settings(settings) as wallet:
        for n in range(1, users + 1):
            await asyncio.gather(
                *(
                    wallet.deposit(
                        TransferRequest(
                            user_id=f"u{n}",
                            asset=asset,
                            amount=Decimal(10**9 if asset == "USDT" else 10**6),
                            idempotency_key=f"demo-fund-u{n}-{asset}",
                            reason="demo funding",
                        )
                    )
                    for asset in assets
                )
            )


def run_demo(settings: Settings, rate: float, seed: int, duration_s: float | None) -> int:
    print(f"creating topics: {create_topics(settings)}")
    # The history tables must exist before the Postgres sink starts writing.
    subprocess.run([sys.executable, "-m", "trade_engine", "db", "migrate"], check=True)
    port = settings.metrics_port
    # Trade ids are <symbol>:<seq> of this engine's topics: a demo on other topics
    # (another prefix) gets a ledger of its own, or its ids would collide.
    prefix = settings.topics.prefix
    schema = "wallet" if prefix == "te." else "wallet_" + re.sub(r"\W", "_", prefix).strip("_")
    wallet = _spawn(["wallet", "serve", "--schema", schema], "wallet.log", settings)
    try:
        asyncio.run(_fund_users(settings, DEMO_USERS))
    except Exception:
        _stop([wallet.proc] if wallet.proc is not None else [])
        raise
    print(f"funded users u1..u{DEMO_USERS} in the wallet service ({settings.wallet.url})")
    children = {
        "wallet": wallet,
        "risk": _spawn(
            ["risk", "run", "--metrics-port", str(settings.metrics_port + 1)],
            "risk.log",
            settings,
        ),
        "settlement": _spawn(
            ["settlement", "run", "--metrics-port", str(port + 5)],
            "settlement.log",
            settings,
        ),
        "matcher": _spawn(
            [
                "matcher",
                "run",
                "--worker-id",
                "demo-1",
                "--metrics-port",
                str(settings.metrics_port),
            ],
            "matcher.log",
            settings,
        ),
        "sink-postgres": _spawn(
            ["sink", "postgres", "run", "--metrics-port", str(port + 3)],
            "sink-postgres.log",
            settings,
        ),
        "sink-rabbitmq": _spawn(
            ["sink", "rabbitmq", "run", "--metrics-port", str(port + 4)],
            "sink-rabbitmq.log",
            settings,
        ),
        # One gateway process: its rate limits and idempotency records stay in memory.
        # --dev-mode: the demo's tokens use the development secret committed here.
        "gateway": _spawn(["gateway", "run", "--dev-mode"], "gateway.log", settings),
        "lag-exporter": _spawn(
            [
                "lag",
                "--serve",
                str(settings.metrics_port + 2),
                "--watch",
                "--interval",
                "5",
                "--json",
                # Only this pipeline's groups: one JSON document per sample goes to the log.
                "--group",
                f"^{re.escape(prefix)}",
                # The local broker's log.dirs (ops/kafka/kafka.sh): DiskSpaceLow watches it.
                "--disk",
                f"kafka={settings.state_dir / 'kafka' / 'data'}",
            ],
            "lag.log",
            settings,
        ),
        # Ledger vs engine every five minutes; only drift two runs agree on is exported.
        "reconcile": _spawn(
            [
                "reconcile",
                "--schema",
                schema,
                "--every",
                "300",
                "--wait",
                "30",
                "--metrics-port",
                str(port + 6),
            ],
            "reconcile.log",
            settings,
        ),
        # Depth, candles and tickers from te.executions, for the gateway's channels.
        "market-data": _spawn(
            [
                "market-data",
                "run",
                "--metrics-port",
                str(settings.market_data.metrics_port),
            ],
            "market-data.log",
            settings,
        ),
    }
    if rate > 0:  # --rate 0: the pipeline only, for a load of the caller's own
        children["load"] = _spawn(
            [
                "load",
                "--rate",
                str(rate),
                "--seed",
                str(seed),
                "--duration",
                "24h",
                "--users",
                str(DEMO_USERS),
                "--run-id",
                f"demo{uuid.uuid4().hex[:6]}",
            ],
            "load.log",
            settings,
        )
    _print_gateway_help(settings)
    supervisor = Supervisor(children)
    try:
        return _monitor(settings, supervisor, duration_s)
    finally:
        # The wallet goes last: settlement and risk finish their batch against it
        # instead of retrying a stopped service until they are killed.
        supervisor.stop(last=["wallet"])
        print("stopped")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _print_gateway_help(settings: Settings) -> None:
    base = f"http://{settings.gateway.host}:{settings.gateway.port}"
    print(
        f"REST gateway on {base} (docs/api.md). Trade as a funded demo user:\n"
        "  TOKEN=$(trade-engine gateway token --user u1)\n"
        f'  curl -s {base}/api/v1/balances -H "Authorization: Bearer $TOKEN"\n'
        f'  curl -s -X POST {base}/api/v1/orders -H "Authorization: Bearer $TOKEN" '
        "-H 'Content-Type: application/json' "
        """-d '{"symbol":"BTC/USDT","side":"BUY","type":"LIMIT","""
        """"quantity":"0.01","price":"50000.00"}'\n"""
        "Watch the market (docs/market-data.md):\n"
        f"  curl -s {base}/api/v1/depth/BTC-USDT?limit=10\n"
        f"  WebSocket {base.replace('http', 'ws', 1)}/api/v1/ws, then "
        """{"op":"subscribe","channels":["trades.BTC/USDT","depth.BTC/USDT"]}"""
    )


SUPERVISE_S = 0.2


def _monitor(settings: Settings, supervisor: Supervisor, duration_s: float | None) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    window = LatencyWindow()
    watcher = threading.Thread(target=_watch_latency, args=(settings, window, stop), daemon=True)
    watcher.start()
    reader = LagReader(settings)
    names = settings.topic_names
    roles = ["commands", "accepted", "executions", "trades", "dead_letter"]
    previous = {role: reader.end_offsets(names[role]) for role in roles}
    started = sampled_at = time.monotonic()
    print(f"logs: {settings.state_dir / 'logs'}   stop with Ctrl-C")
    try:
        while not stop.wait(SUPERVISE_S):
            given_up = supervisor.poll()
            if given_up is not None:
                print(f"stopping the demo: {given_up}", file=sys.stderr, flush=True)
                return 1
            if time.monotonic() - sampled_at < REFRESH_S:
                continue
            current = {role: reader.end_offsets(names[role]) for role in roles}
            now = time.monotonic()
            rates = {r: (current[r] - previous[r]) / (now - sampled_at) for r in roles}
            previous, sampled_at = current, now
            latency = window.percentiles()
            lags: dict[str, int] = {}
            for item in reader.read_all(with_seconds=False):
                group = item.group.removeprefix(settings.topics.prefix)
                lags[group] = lags.get(group, 0) + item.lag
            restarts = " ".join(f"{n}={c}" for n, c in supervisor.restarts().items())
            print(
                f"[{now - started:6.0f}s] "
                + "  ".join(f"{r}={rates[r]:,.0f}/s" for r in roles)
                + "  latency "
                + (f"p50={latency[0]:.0f}ms p99={latency[1]:.0f}ms" if latency else "n/a")
                + "  lag "
                + " ".join(f"{g}={n}" for g, n in lags.items())
                + (f"  restarts {restarts}" if restarts else ""),
                flush=True,
            )
            if duration_s is not None and now - started >= duration_s:
                break
    finally:
        stop.set()
        reader.close()
    return 0
