"""The money pipeline of one chaos scenario: every stage a process of its own.

Fresh topics (``chaos-<scenario>-<run>.`` prefix, three replicas on the three-node
cluster), a fresh wallet schema, a fresh history schema for the Postgres sink and
prefixed RabbitMQ names, so a scenario reads back only what it caused. The stages are
the ones ``make run`` starts for money (wallet service, risk, matcher, settlement,
Postgres sink, RabbitMQ bridge), spawned one by one so that a fault can be aimed at
one of them: each has its own environment, e.g. a Kafka bootstrap on the proxied
listener (``ops/kafka/cluster.sh``) or Postgres through a Toxiproxy proxy.

A stage that exits is restarted after a second, as the demo's supervisor does; the
exit is recorded, never hidden. This module never judges the results (``checks``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pika
from confluent_kafka.admin import AdminClient

from ops.chaos.cluster import REPO, KafkaCluster
from trade_engine.config import Settings, load_settings
from trade_engine.connectors.wallet.client import WalletClient
from trade_engine.connectors.wallet.models import TransferRequest
from trade_engine.operations.lag import engine_groups
from trade_engine.streams.topics import create_topics

PG_PROXY = "chaos-postgres"
PG_PROXY_PORT = 25432
MQ_PROXY = "chaos-rabbitmq"
MQ_PROXY_PORT = 35672  # not 25672: RabbitMQ's own Erlang distribution port
STAGES = (
    "wallet",
    "risk",
    "matcher",
    "settlement",
    "sink-postgres",
    "sink-rabbitmq",
    "lag-exporter",
)
SAMPLED_TOPICS = ("accepted", "executions", "trades")
KAFKA_STAGES = ("risk", "matcher", "settlement", "sink-postgres", "sink-rabbitmq")


def log(text: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# A stage gets SIGTERM when the harness dies (even by SIGKILL or an abort in
# librdkafka), so none outlives a crashed run on the shared machine.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stage:
    """One supervised process: its command line, environment and exits."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready_url: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    exits: list[dict[str, Any]] = field(default_factory=list)
    expected_down: bool = False

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [*DIE_WITH_PARENT, sys.executable, "-m", "trade_engine", *self.argv],
                env=self.env,
                stdout=out,
                stderr=out,
            )
        self.expected_down = False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> int:
        """SIGKILL; returns once the process is gone (its exit status, -9)."""
        assert self.proc is not None
        self.expected_down = True
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.expected_down = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def wait_ready(urls: Iterable[str], timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    for url in urls:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - local http
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} is not ready after {timeout_s:g}s")
            time.sleep(0.5)


class Pipeline:
    """The stages of one scenario, its names, and the readers' view of its progress."""

    def __init__(
        self,
        scenario: str,
        cluster: KafkaCluster,
        *,
        partitions: int = 4,
        users: int = 50,
        proxied: Iterable[str] = (),
    ) -> None:
        run = uuid.uuid4().hex[:6]
        self.scenario = scenario
        self.cluster = cluster
        self.users = users
        self.prefix = f"chaos-{scenario}-{run}."
        tag = re.sub(r"\W", "_", f"{scenario}_{run}")
        self.schema = f"wallet_chaos_{tag}"
        self.history = f"hist_chaos_{tag}"
        self.state = Path(tempfile.mkdtemp(prefix=f"te-chaos-{scenario}-"))
        self.wallet_port = free_port()
        self.env = {
            **os.environ,
            "TE_KAFKA__BOOTSTRAP_SERVERS": cluster.bootstrap,
            "TE_TOPICS__REPLICATION_FACTOR": "3",
            "TE_TOPICS__PREFIX": self.prefix,
            "TE_TOPICS__PARTITIONS": str(partitions),
            "TE_STATE_DIR": str(self.state),
            "TE_WALLET__URL": f"http://127.0.0.1:{self.wallet_port}",
            "TE_LOG_LEVEL": "WARNING",
            # Postgres (wallet ledger, history sink) and RabbitMQ (bridge) through
            # Toxiproxy, so a scenario can cut them off from the engine alone.
            "TE_POSTGRES__PORT": str(PG_PROXY_PORT),
            "TE_RABBITMQ__PORT": str(MQ_PROXY_PORT),
        }
        # The checkers' settings: the direct listener and the real servers.
        self.settings: Settings = load_settings(
            kafka={"bootstrap_servers": cluster.bootstrap},
            topics={"prefix": self.prefix, "partitions": partitions, "replication_factor": 3},
            state_dir=self.state,
            wallet={"url": self.env["TE_WALLET__URL"]},
        )
        # stage -> (its consumer group, the topic it reads); the bridge's group carries
        # its name prefix (sinks/rabbitmq.py), market data is not a money stage.
        self.groups = {
            g.removeprefix(self.prefix): (g, t)
            for g, t in engine_groups(self.settings).items()
            if not g.endswith("market-data")
        }
        bridge = f"{self.prefix}sink.rabbitmq.{self.prefix.rstrip('.')}"
        self.groups["sink.rabbitmq"] = (bridge, self.settings.topic_names["executions"])
        self.stages: dict[str, Stage] = {}
        self._define_stages(set(proxied))
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._sample: dict[str, Any] | None = None
        self._sample_lock = threading.Lock()
        self._sampler: subprocess.Popen[bytes] | None = None
        self.sampler_crashes: list[int] = []
        self.admin = AdminClient({"bootstrap.servers": cluster.bootstrap})

    # ------------------------------------------------------------------ stages

    def _define_stages(self, proxied: set[str]) -> None:
        def stage(name: str, *argv: str, matcher_id: str | None = None) -> None:
            env = dict(self.env)
            if name in proxied:
                env["TE_KAFKA__BOOTSTRAP_SERVERS"] = self.cluster.proxied_bootstrap
            port = free_port()
            args = list(argv)
            ready = f"http://127.0.0.1:{port}/health/ready"
            if name == "wallet":
                args += ["--port", str(self.wallet_port)]
                ready = f"http://127.0.0.1:{self.wallet_port}/health/ready"
            elif name == "lag-exporter":
                args += ["--serve", str(port)]
            else:
                args += ["--metrics-port", str(port)]
            self.stages[name] = Stage(name, args, env, self.state / f"{name}.log", ready)

        stage("wallet", "wallet", "serve", "--schema", self.schema)
        stage("risk", "risk", "run")
        stage("matcher", "matcher", "run", "--worker-id", "c1")
        stage("settlement", "settlement", "run")
        stage("sink-postgres", "sink", "postgres", "run", "--schema", self.history)
        stage("sink-rabbitmq", "sink", "rabbitmq", "run", "--name-prefix", self.prefix)
        # make run's lag exporter (operations/lag.py): not a money stage, but an
        # operator's view of the faults; its exits are reported like any stage's.
        stage(
            "lag-exporter",
            "lag", "--watch", "--json", "--interval", "2", "--no-queues",
            "--group", f"^{re.escape(self.prefix)}",
        )  # fmt: skip
        self.stages["lag-exporter"].ready_url = None
        self.proxied = proxied

    def add_matcher(self, worker_id: str, *extra: str, proxied: bool = False) -> Stage:
        """A second matcher worker in the same group (e.g. a warm standby)."""
        env = dict(self.env)
        if proxied:
            env["TE_KAFKA__BOOTSTRAP_SERVERS"] = self.cluster.proxied_bootstrap
        port = free_port()
        name = f"matcher-{worker_id}"
        argv = ["matcher", "run", "--worker-id", worker_id, "--metrics-port", str(port), *extra]
        stage = Stage(
            name, argv, env, self.state / f"{name}.log", f"http://127.0.0.1:{port}/health/ready"
        )
        self.stages[name] = stage
        stage.start()
        return stage

    def add_gateway(self) -> tuple[Stage, str]:
        """The REST gateway on this scenario's topics and history schema (development
        tokens); the stage and its base URL."""
        port = free_port()
        env = {**self.env, "TE_GATEWAY__POSTGRES_SCHEMA": self.history}
        argv = ["gateway", "run", "--host", "127.0.0.1", "--port", str(port), "--dev-mode"]
        base = f"http://127.0.0.1:{port}"
        stage = Stage("gateway", argv, env, self.state / "gateway.log", f"{base}/health/live")
        self.stages["gateway"] = stage
        stage.start()
        return stage, base

    def start(self) -> None:
        create_topics(self.settings)
        subprocess.run(
            [sys.executable, "-m", "trade_engine", "db", "migrate", "--schema", self.history],
            env=self.env,
            check=True,
            capture_output=True,
        )
        wallet = self.stages["wallet"]
        wallet.start()
        assert wallet.ready_url is not None
        wait_ready([wallet.ready_url])
        asyncio.run(self._fund())
        for name in STAGES[1:]:
            self.stages[name].start()
        wait_ready(s.ready_url for s in self.stages.values() if s.ready_url)
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()
        threading.Thread(target=self._sample_loop, daemon=True).start()

    async def _fund(self) -> None:
        assets = sorted(
            {s.base_asset for s in self.settings.market.symbols}
            | {s.quote_asset for s in self.settings.market.symbols}
        )
        async with WalletClient.from_settings(self.settings) as wallet:
            for n in range(1, self.users + 1):
                await asyncio.gather(
                    *(
                        wallet.deposit(
                            TransferRequest(
                                user_id=f"u{n}",
                                asset=asset,
                                amount=Decimal(10**9 if asset == "USDT" else 10**6),
                                idempotency_key=f"chaos-fund-u{n}-{asset}",
                                reason="chaos funding",
                            )
                        )
                        for asset in assets
                    )
                )

    def _supervise(self) -> None:
        """Restart a stage that exited on its own (not one a scenario killed)."""
        while not self._stop.wait(0.5):
            for stage in list(self.stages.values()):
                if stage.proc is None or stage.expected_down or stage.alive():
                    continue
                code = stage.proc.returncode
                stage.exits.append({"code": code, "at": time.time()})
                log(f"{self.scenario}: {stage.name} exited by itself ({code}); restarting")
                time.sleep(1.0)
                if not self._stop.is_set():
                    stage.start()

    def unexpected_exits(self) -> dict[str, list[int]]:
        return {s.name: [e["code"] for e in s.exits] for s in self.stages.values() if s.exits}

    def stop(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
        if self._sampler is not None and self._sampler.stdin is not None:
            self._sampler.stdin.close()
            try:
                self._sampler.wait(10)
            except subprocess.TimeoutExpired:
                self._sampler.kill()
        # The wallet last: settlement and risk finish their batch against it.
        for stage in self.stages.values():
            if stage.name != "wallet":
                stage.expected_down = True
        for stage in self.stages.values():
            if stage.name != "wallet":
                stage.stop()
        self.stages["wallet"].stop()

    # ------------------------------------------------------------------ progress

    def _sampler_config(self) -> str:
        return json.dumps(
            {
                "bootstrap": self.cluster.bootstrap,
                "prefix": self.prefix,
                "partitions": self.settings.topics.partitions,
                "groups": self.groups,
                "topics": {r: self.settings.topic_names[r] for r in SAMPLED_TOPICS},
                "interval": 0.5,
            }
        )

    def _sample_loop(self) -> None:
        """Keep one sampler process (``ops.chaos.lagwatch``) running; its lines -> latest."""
        while not self._stop.is_set():
            argv = [*DIE_WITH_PARENT, sys.executable, "-m", "ops.chaos.lagwatch"]
            proc = subprocess.Popen(
                [*argv, self._sampler_config()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=REPO,
            )
            self._sampler = proc
            assert proc.stdout is not None
            for line in proc.stdout:
                data = json.loads(line)
                if not data["complete"]:
                    continue
                with self._sample_lock:
                    self._sample = data
            code = proc.wait()
            if not self._stop.is_set():
                self.sampler_crashes.append(code)
                log(f"{self.scenario}: the lag sampler died ({code}); restarting it")

    def sample(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """A sample taken after this call began (the brokers may make one wait)."""
        asked = time.time()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._sample_lock:
                data = self._sample
            if data is not None and data["at"] > asked:
                return data
            time.sleep(0.1)
        raise TimeoutError(f"no lag sample for {timeout_s:g}s")

    def end(self, topic: str) -> int:
        return int(self.sample()["end"][topic])

    def committed(self) -> dict[str, int]:
        """Per stage, the sum of its group's committed offsets (how far it has come)."""
        return dict(self.sample()["committed"])

    def lags(self) -> dict[str, int]:
        return dict(self.sample()["lag"])

    def wait_progress(self, since: dict[str, int], timeout_s: float = 240.0) -> float | None:
        """Seconds until every stage is caught up or has committed past ``since``."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            now = self.committed()
            lags = self.lags()
            if all(now[g] > since.get(g, 0) or lags[g] == 0 for g in self.groups):
                return round(time.monotonic() - start, 2)
            time.sleep(0.5)
        return None

    def drain(self, timeout_s: float = 300.0) -> float | None:
        """Seconds until every group's lag is 0 (twice in a row), or None."""
        start = time.monotonic()
        zero = 0
        while time.monotonic() - start < timeout_s:
            zero = zero + 1 if all(v == 0 for v in self.lags().values()) else 0
            if zero >= 2:
                return round(time.monotonic() - start, 2)
            time.sleep(1.0)
        return None

    # ------------------------------------------------------------------ teardown

    def cleanup(self, keep_logs: Path | None = None) -> None:
        topics = [t for t in self.admin.list_topics(timeout=30).topics if t.startswith(self.prefix)]
        if topics:
            for future in self.admin.delete_topics(topics).values():
                try:
                    future.result(30)
                except Exception as exc:  # a leftover topic only costs disk
                    log(f"could not delete a topic: {exc}")
        asyncio.run(self._drop_schemas())
        self._drop_rabbit()
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            for path in self.state.glob("*.log"):
                shutil.copy(path, keep_logs / f"{self.scenario}-{path.name}")
        shutil.rmtree(self.state, ignore_errors=True)

    async def _drop_schemas(self) -> None:
        conn = await asyncpg.connect(self.settings.postgres.dsn())
        try:
            for schema in (self.schema, self.history):
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    def rabbit(self, timeout_s: float = 90.0) -> pika.BlockingConnection:
        """A connection to the real RabbitMQ (shared: others may be restarting it)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return pika.BlockingConnection(pika.URLParameters(self.settings.rabbitmq.url()))
            except pika.exceptions.AMQPConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2.0)

    def _drop_rabbit(self) -> None:
        self.drop_rabbit(self.settings, self.prefix)

    @staticmethod
    def drop_rabbit(settings: Settings, prefix: str) -> None:
        try:
            conn = pika.BlockingConnection(pika.URLParameters(settings.rabbitmq.url()))
        except Exception as exc:
            log(f"rabbitmq cleanup: {exc!r}")
            return
        try:
            channel = conn.channel()
            for queue in ("wallet.service.trades", "notification.service.trades", "dlx.failed"):
                channel.queue_delete(prefix + queue)
            for exchange in ("trade.events", "order.events", "dlx"):
                channel.exchange_delete(prefix + exchange)
        finally:
            conn.close()
