"""The whole pipeline's capacity: every stage as ``make run`` starts it, stepped offered rates.

Run with ``make bench-pipeline`` (or ``python -m ops.benchmarks.bench_pipeline``).
Progress goes to stderr; the last stdout line is one JSON object of figures.

1. **The pipeline** is ``trade-engine demo`` with no load generator of its own
   (``--rate 0``): the wallet service, the risk stage, the matcher, settlement,
   the Postgres sink, the RabbitMQ bridge, market data, the lag exporter, the
   reconcile loop and the gateway (with its Kafka followers), on fresh topics
   (``bench-<run>.`` prefix) and a fresh wallet schema, on ports of their own.
2. **The feeder** (this process) publishes pre-encoded seeded commands
   (``connectors.loadgen``, users u1..u100, funded by the demo) to
   ``te.commands`` with the engine's producer settings, paced in 5 ms ticks, at
   each offered rate of ``--steps`` for ``--step-s`` seconds, then waits up to
   ``--drain-s`` for every group to drain. Five seconds at the first rate go
   first, unmeasured, so that every stage has joined its group and answered.
3. **A step is sustained** when, over the step, no group's lag grew (the mean of
   its last third of samples is not above the mean of its first third plus two
   seconds' worth of input... and never exceeded two seconds of that topic's
   input) and every group's lag reached 0 within ``--drain-s`` after the step.
4. **Latency**: order -> first execution visible to a read_committed reader of
   ``te.executions`` (the reader's clock minus the execution's ``at``, the
   command's log time); order -> settled: the wallet's ``settle`` journal entry
   time minus the trade's ``at``.
5. **CPU**: utime + stime from ``/proc`` of every process, from the step's start
   to the end of its drain, per order offered: the stages (by their command
   line), Kafka, PostgreSQL, RabbitMQ and Redis; this process (feeder and
   measuring readers) is reported apart and not counted.
6. **Baseline**: the raw confluent consume -> produce passthrough
   (``bench_baseline.passthrough``) over this run's own command topic, measured
   after the steps, with the pipeline stopped, and the broker's CPU per record
   of it (``passthrough_kafka_cpu_us_per_record``): the floor of one Kafka hop.
7. **Idle**: after the warm-up, ``--idle-s`` seconds with no input; each
   process's CPU in percent of one core (``idle_cpu_percent_by_process``), the
   fixed cost that a low rate's CPU per order carries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from ops.benchmarks.bench_baseline import passthrough
from trade_engine.config import Settings, load_settings
from trade_engine.connectors.loadgen import generate
from trade_engine.operations.lag import LagReader, engine_groups
from trade_engine.streams.codec import encode

CLK_TCK = os.sysconf("SC_CLK_TCK")
PORT_BASE = 19464  # away from make run's 9464..9471 and 8080/8081
TICK_S = 0.005


def log(text: str) -> None:
    print(f"[bench-pipeline {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ processes and CPU


def _ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


_STAGES = (
    ("wallet", " wallet serve"),
    ("risk", " risk run"),
    ("matcher", " matcher run"),
    ("settlement", " settlement run"),
    ("sink.postgres", " sink postgres run"),
    ("sink.rabbitmq", " sink rabbitmq run"),
    ("market-data", " market-data run"),
    ("gateway", " gateway run"),
    ("lag-exporter", " lag "),
    ("reconcile", " reconcile "),
    ("demo-monitor", " demo "),
)
_SERVERS = (
    ("kafka", re.compile(r"kafka\.Kafka|org\.apache\.kafka")),
    ("postgres", re.compile(r"^postgres|/postgres ")),
    ("rabbitmq", re.compile(r"beam\.smp|erl_child_setup|inet_gethost|epmd")),
    ("redis", re.compile(r"redis-server")),
)


def classify(demo_pid: int, own_pid: int) -> dict[int, str]:
    """pid -> the name its CPU is counted under (stages below the demo, and the servers)."""
    names: dict[int, str] = {}
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    for pid in pids:
        cmd = _cmdline(pid)
        if not cmd or pid == own_pid:
            continue
        ancestor, chain = pid, 0
        while ancestor > 1 and ancestor != demo_pid and chain < 6:
            ancestor, chain = _ppid(ancestor), chain + 1
        if demo_pid in (ancestor, pid):
            name = next((n for n, marker in _STAGES if marker in f" {cmd} "), None)
            names[pid] = name or "other-stage"
            continue
        if "kafka-cluster" in cmd:
            continue  # the chaos tests' three brokers (ops/kafka/cluster.sh), not this broker
        server = next((n for n, pattern in _SERVERS if pattern.search(cmd)), None)
        if server is not None:
            names[pid] = server
    return names


def cpu_by_name(names: dict[int, str]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for pid, name in names.items():
        out[name] += _ticks(pid)
    return out


def ticks_by_pid(names: dict[int, str]) -> dict[int, int]:
    return {pid: _ticks(pid) for pid in names}


def spent_by_name(
    names: dict[int, str], before: dict[int, int], after: dict[int, int]
) -> dict[str, int]:
    """CPU ticks per name between two snapshots, per pid: a process that exited meanwhile
    (a database backend) drops out instead of making its name's figure negative."""
    out: dict[str, int] = defaultdict(int)
    for pid, ticks in after.items():
        if pid in names:
            out[names[pid]] += max(ticks - before.get(pid, 0), 0)
    return out


# ------------------------------------------------------------------ measuring readers


@dataclass
class Samples:
    """What the readers saw, keyed by the offered-rate step that was running."""

    step: int = -1
    first_ms: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    trades: dict[int, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    lock: threading.Lock = field(default_factory=threading.Lock)


_INPUT = re.compile(rb'"input":\{"partition":(\d+),"offset":(\d+)\},"at":"([^"]+)"')
_TRADE = re.compile(rb'"trade_id":"([^"]+)"')
_EXECUTED = re.compile(rb'"executed_at":"([^"]+)"')


# Where an order's time goes, from the stages' own histograms: (port offset, metric).
_TIMINGS = (
    (1, "te_admission_batch_seconds"),
    (1, "te_admission_batch_commands"),
    (1, 'te_wallet_client_request_seconds{operation="reserve_many"}'),
    (0, "te_matcher_batch_seconds"),
    (0, "te_matcher_batch_messages"),
    (5, "te_settlement_batch_seconds"),
    (5, 'te_wallet_client_request_seconds{operation="settle_many"}'),
)


def scrape_timings() -> dict[str, tuple[float, float]]:
    """metric -> (sum, count) of each histogram in ``_TIMINGS``, read from /metrics."""
    out: dict[str, tuple[float, float]] = {}
    for offset, metric in _TIMINGS:
        name, _, labels = metric.partition("{")
        try:
            url = f"http://127.0.0.1:{PORT_BASE + offset}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            continue
        total = count = 0.0
        for line in text.splitlines():
            if labels and labels.rstrip("}") not in line:
                continue
            if line.startswith(name + "_sum"):
                total += float(line.rsplit(" ", 1)[1])
            elif line.startswith(name + "_count"):
                count += float(line.rsplit(" ", 1)[1])
        out[metric] = (total, count)
    return out


def timing_means(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Per metric, the mean over the step (seconds become ms), and how many were observed."""
    means: dict[str, float] = {}
    for metric, (total, count) in after.items():
        total0, count0 = before.get(metric, (0.0, 0.0))
        n = count - count0
        if n <= 0:
            continue
        scale = 1000.0 if "_seconds" in metric else 1.0
        key = metric.replace("_seconds", "_ms").replace("te_", "", 1)
        means[key] = round((total - total0) / n * scale, 1)
        means[key + ":n"] = n
    return means


def idle_cpu(demo_pid: int, seconds: float) -> dict[str, float]:
    """CPU of every process with no input at all, in percent of one core: the fixed cost
    (polls, heartbeats, timers) that every order's share above includes at a low rate."""
    pids = classify(demo_pid, os.getpid())
    before, t0 = ticks_by_pid(pids), time.monotonic()
    time.sleep(seconds)
    pids.update(classify(demo_pid, os.getpid()))
    spent = spent_by_name(pids, before, ticks_by_pid(pids))
    elapsed = time.monotonic() - t0
    percent = {name: round(ticks / CLK_TCK / elapsed * 100, 1) for name, ticks in spent.items()}
    return dict(sorted(percent.items(), key=lambda item: -item[1]))


def _ms(rfc3339: bytes) -> int:
    return int(datetime.fromisoformat(rfc3339.decode().replace("Z", "+00:00")).timestamp() * 1000)


def read_executions(settings: Settings, samples: Samples, stop: threading.Event) -> None:
    """Order -> first execution visible to a read_committed reader, per input record."""
    consumer = Consumer(
        {
            **settings.kafka.librdkafka(),
            "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.topic_names["executions"]])
    seen: set[tuple[int, int]] = set()
    try:
        while not stop.is_set():
            for msg in consumer.consume(5000, 0.1):
                value = msg.value()
                if msg.error() is not None or not value:
                    continue
                now_ms = time.time() * 1000
                match = _INPUT.search(value)
                if match is None:
                    continue
                key = (int(match[1]), int(match[2]))
                if key in seen:
                    continue
                seen.add(key)
                with samples.lock:
                    samples.first_ms[samples.step].append(now_ms - _ms(match[3]))
    finally:
        consumer.close()


def read_trades(settings: Settings, samples: Samples, stop: threading.Event) -> None:
    consumer = Consumer(
        {
            **settings.kafka.librdkafka(),
            "group.id": f"bench-trades-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.topic_names["trades"]])
    try:
        while not stop.is_set():
            for msg in consumer.consume(5000, 0.1):
                value = msg.value()
                if msg.error() is not None or not value:
                    continue
                trade, at = _TRADE.search(value), _EXECUTED.search(value)
                if trade is not None and at is not None:
                    with samples.lock:
                        samples.trades[samples.step][trade[1].decode()] = _ms(at[1])
    finally:
        consumer.close()


async def settled_ms(settings: Settings, schema: str, trades: dict[str, int]) -> list[float]:
    """Per trade: the wallet's settle entry time minus the trade's ``at``."""
    if not trades:
        return []
    conn = await asyncpg.connect(settings.postgres.dsn())
    try:
        rows = await conn.fetch(
            f'SELECT key, created_at FROM "{schema}".journal_entries'  # noqa: S608
            " WHERE op = 'settle' AND key = ANY($1::text[])",
            list(trades),
        )
    finally:
        await conn.close()
    return [row["created_at"].timestamp() * 1000 - trades[row["key"]] for row in rows]


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


# ------------------------------------------------------------------------ the run


def _wait_ready(ports: list[int], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    for port in ports:
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/health/ready", timeout=2
                ) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker on :{port} is not ready")
            time.sleep(0.5)


def feed(producer: Producer, topic: str, items: list[tuple[bytes, bytes]], rate: float) -> int:
    """Publish ``items`` at ``rate`` per second (5 ms ticks); returns how many were sent."""
    started, sent = time.monotonic(), 0
    total = len(items)
    while sent < total:
        due = min(total, int((time.monotonic() - started) * rate) + 1)
        while sent < due:
            key, value = items[sent]
            try:
                producer.produce(topic, key=key, value=value)
            except BufferError:
                producer.poll(0.01)
                continue
            sent += 1
        producer.poll(0)
        time.sleep(TICK_S)
    producer.flush(60)
    return sent


@dataclass
class StepResult:
    rate: int
    offered: int
    seconds: float
    sustained: bool
    reason: str
    max_lag: dict[str, int]
    drained_s: float | None
    p50_ms: float | None
    p99_ms: float | None
    settled_p99_ms: float | None
    cpu_us_per_order: float
    cpu_us_per_order_by_process: dict[str, float]
    feeder_us_per_order: float
    # Means over the step of the stages' batch and wallet-call histograms (ms, sizes).
    stage_means: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        top = sorted(self.cpu_us_per_order_by_process.items(), key=lambda kv: -kv[1])[:6]
        return (
            f"{self.rate:>6}/s sustained={self.sustained!s:<5} p50={self.p50_ms}ms "
            f"p99={self.p99_ms}ms settled_p99={self.settled_p99_ms}ms "
            f"cpu={self.cpu_us_per_order:.0f}us/order ({', '.join(f'{k} {v:.0f}' for k, v in top)})"
            f"{'' if self.sustained else '  [' + self.reason + ']'}\n    means: "
            + ", ".join(f"{k} {v:g}" for k, v in self.stage_means.items() if ":n" not in k)
        )


def _drain(reader: LagReader, within_s: float) -> float | None:
    """Seconds until every group's lag is 0, or None if it was not within ``within_s``."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if all(lag.lag == 0 for lag in reader.read_all(with_seconds=False)):
            return round(time.monotonic() - started, 1)
        time.sleep(0.5)
    return None


def judge(series: dict[str, list[int]], input_rates: dict[str, float]) -> tuple[bool, str]:
    for group, values in series.items():
        if len(values) < 6:
            continue
        bound = max(2.0 * input_rates.get(group, 0.0), 50.0)
        third = max(1, len(values) // 3)
        first, last = statistics.mean(values[:third]), statistics.mean(values[-third:])
        if max(values) > bound:
            return False, f"{group} lag {max(values)} > 2 s of input ({bound:.0f})"
        if last > first + bound / 4 and last > 2 * first:
            return False, f"{group} lag grew {first:.0f} -> {last:.0f}"
    return True, ""


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", default="500,1000,2000,3000,5000,8000")
    parser.add_argument("--step-s", type=float, default=60.0)
    parser.add_argument("--drain-s", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--passthrough-count", type=int, default=200_000)
    parser.add_argument("--stop-after-failures", type=int, default=1)
    parser.add_argument(
        "--idle-s", type=float, default=15.0, help="seconds of no input measured after warm-up"
    )
    args = parser.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]

    run = uuid.uuid4().hex[:8]
    prefix = f"bench-{run}."
    state = Path(tempfile.mkdtemp(prefix="te-bench-pipeline-"))
    env = {
        **os.environ,
        "TE_TOPICS__PREFIX": prefix,
        "TE_STATE_DIR": str(state),
        "TE_METRICS_PORT": str(PORT_BASE),
        "TE_MARKET_DATA__METRICS_PORT": str(PORT_BASE + 7),
        "TE_GATEWAY__PORT": str(PORT_BASE + 8),
        "TE_WALLET__URL": f"http://127.0.0.1:{PORT_BASE + 9}",
        "TE_LOG_LEVEL": "WARNING",
    }
    settings = load_settings(
        topics={"prefix": prefix},
        state_dir=state,
        metrics_port=PORT_BASE,
        wallet={"url": env["TE_WALLET__URL"]},
    )
    schema = "wallet_" + re.sub(r"\W", "_", prefix).strip("_")  # what the demo derives
    names = settings.topic_names
    total = int(sum(r * args.step_s for r in steps) + steps[0] * 5)
    log(f"run {run}: preparing {total} commands")
    commands = generate(
        total,
        args.seed,
        settings.market.symbols,
        users=100,
        id_prefix=f"b{run}",
    )
    items = [(c.symbol.encode(), encode(c)) for c in commands]
    del commands

    demo_log = (state / "demo.out").open("wb")
    demo = subprocess.Popen(
        [sys.executable, "-m", "trade_engine", "demo", "--rate", "0"],
        env=env,
        stdout=demo_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stop = threading.Event()
    samples = Samples()
    results: list[StepResult] = []
    idle: dict[str, float] = {}
    try:
        ports = [PORT_BASE + n for n in (0, 1, 3, 4, 5)] + [PORT_BASE + 7]
        _wait_ready(ports)
        log("pipeline ready")
        for target in (read_executions, read_trades):
            threading.Thread(target=target, args=(settings, samples, stop), daemon=True).start()
        producer = Producer(
            {
                **settings.kafka.librdkafka(),
                "partitioner": "murmur2_random",
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
            }
        )
        reader = LagReader(settings)
        groups = engine_groups(settings)
        # Warm-up, not measured: every stage has joined its group, caught up and
        # answered once (Faust's first assignment takes seconds after /health/ready).
        cursor = int(steps[0] * 5)
        feed(producer, names["commands"], items[:cursor], steps[0])
        _drain(reader, 120.0)
        log(f"warmed up with {cursor} commands")
        idle = idle_cpu(demo.pid, args.idle_s)
        log("idle CPU, % of one core: " + ", ".join(f"{k} {v}" for k, v in idle.items()))
        failures = 0
        for index, rate in enumerate(steps):
            chunk = items[cursor : cursor + int(rate * args.step_s)]
            cursor += len(chunk)
            with samples.lock:
                samples.step = index
            pids = classify(demo.pid, os.getpid())
            timings0 = scrape_timings()
            cpu0, own0, t0 = ticks_by_pid(pids), _ticks(os.getpid()), time.monotonic()
            ends0 = {g: reader.end_offsets(t) for g, t in groups.items()}
            series: dict[str, list[int]] = defaultdict(list)
            done = threading.Event()

            def sample(series: dict[str, list[int]] = series, done: threading.Event = done) -> None:
                while not done.wait(1.0):
                    per: dict[str, int] = defaultdict(int)
                    for lag in reader.read_all(with_seconds=False):
                        per[lag.group.removeprefix(prefix)] += lag.lag
                    for group, value in per.items():
                        series[group].append(value)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            offered = feed(producer, names["commands"], chunk, rate)
            seconds = time.monotonic() - t0
            done.set()
            sampler.join()
            input_rates = {
                g.removeprefix(prefix): (reader.end_offsets(t) - ends0[g]) / seconds
                for g, t in groups.items()
            }
            drained_s = _drain(reader, args.drain_s)
            sustained, reason = judge(series, input_rates)
            if drained_s is None:
                sustained, reason = False, reason or f"not drained within {args.drain_s:g} s"
            pids.update(classify(demo.pid, os.getpid()))
            spent, own1 = spent_by_name(pids, cpu0, ticks_by_pid(pids)), _ticks(os.getpid())
            timings = timing_means(timings0, scrape_timings())
            us = 1e6 / CLK_TCK / max(offered, 1)
            by_process = {name: round(ticks * us, 1) for name, ticks in spent.items()}
            with samples.lock:
                first = list(samples.first_ms[index])
                trades = dict(samples.trades[index])
            settled = asyncio.run(settled_ms(settings, schema, trades))
            result = StepResult(
                rate=rate,
                offered=offered,
                seconds=round(seconds, 1),
                sustained=sustained,
                reason=reason,
                max_lag={g: max(v) for g, v in series.items() if v},
                drained_s=drained_s,
                p50_ms=_pct(first, 0.50),
                p99_ms=_pct(first, 0.99),
                settled_p99_ms=_pct(settled, 0.99),
                cpu_us_per_order=round(sum(by_process.values()), 1),
                cpu_us_per_order_by_process=dict(sorted(by_process.items())),
                feeder_us_per_order=round((own1 - own0) * us, 1),
                stage_means=timings,
            )
            results.append(result)
            log(result.line())
            failures = 0 if sustained else failures + 1
            if failures >= args.stop_after_failures:
                break
        reader.close()
    finally:
        stop.set()
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)
            try:
                demo.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
        demo_log.close()

    sink = f"{prefix}passthrough"
    admin = AdminClient(settings.kafka.librdkafka())
    admin.create_topics(
        [NewTopic(sink, num_partitions=settings.topics.partitions, replication_factor=1)]
    )[sink].result(30)
    count = min(args.passthrough_count, cursor)
    brokers = {pid: n for pid, n in classify(-1, os.getpid()).items() if n == "kafka"}
    broker_ticks = cpu_by_name(brokers).get("kafka", 0)
    passthrough_per_s = passthrough(
        names["commands"],
        sink,
        count,
        settings.kafka.librdkafka(),
        settings.topics.partitions,
    )
    # The broker's CPU per record consumed and produced once at full batching: a floor for
    # each Kafka hop of the pipeline (an order crosses about a dozen).
    broker_us = (cpu_by_name(brokers).get("kafka", 0) - broker_ticks) * 1e6 / CLK_TCK / count
    _cleanup(settings, prefix, schema)

    sustained_rates = [r.rate for r in results if r.sustained]
    at_1k = min(results, key=lambda r: abs(r.rate - 1000)) if results else None
    best = max((r for r in results if r.sustained), key=lambda r: r.rate, default=at_1k)
    summary: dict[str, Any] = {
        "sustained_orders_per_s": max(sustained_rates, default=0),
        "p50_ms_at_1k": at_1k.p50_ms if at_1k else None,
        "p99_ms_at_1k": at_1k.p99_ms if at_1k else None,
        "settled_p99_ms_at_1k": at_1k.settled_p99_ms if at_1k else None,
        "cpu_us_per_order": best.cpu_us_per_order if best else None,
        "cpu_us_per_order_by_process": best.cpu_us_per_order_by_process if best else {},
        "cpu_measured_at_orders_per_s": best.rate if best else None,
        "feeder_us_per_order": best.feeder_us_per_order if best else None,
        "passthrough_per_s": round(passthrough_per_s),
        "passthrough_kafka_cpu_us_per_record": round(broker_us, 1),
        "idle_cpu_percent_by_process": idle,
        "steps": [r.__dict__ for r in results],
    }
    print(json.dumps(summary))
    return 0


def _cleanup(settings: Settings, prefix: str, schema: str) -> None:
    admin = AdminClient(settings.kafka.librdkafka())
    topics = [t for t in admin.list_topics(timeout=30).topics if t.startswith(prefix)]
    if topics:
        for future in admin.delete_topics(topics).values():
            try:
                future.result(30)
            except Exception as exc:  # a leftover topic only costs disk
                log(f"could not delete a topic: {exc}")

    async def drop() -> None:
        conn = await asyncpg.connect(settings.postgres.dsn())
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


if __name__ == "__main__":
    raise SystemExit(main())
