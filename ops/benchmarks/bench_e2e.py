"""End-to-end matcher benchmark on the local broker.

Run with ``make bench-e2e`` (or ``python ops/benchmarks/bench_e2e.py``).
Progress goes to stderr; the last stdout line is one JSON object of figures.

Everything runs on fresh topics (``topics.prefix = bench-<run>.``, deleted at
the end) and a fresh state directory, with the engine's default symbols and
partition count:

1. **Pre-load**: ``--orders`` seeded commands (``connectors.loadgen.generate``)
   are published by a confluent producer (``murmur2_random``, idempotent) to
   ``te.commands.accepted``.
2. **Passthrough baseline** (same run, same input topic, before the matcher
   starts so the two never share the CPU): a raw confluent consumer -> producer
   loop copies ``--passthrough-count`` of those records to a sink topic, as in
   ``bench_baseline.passthrough``; the rate is records per second from the
   first consumed record until every produced record is acknowledged.
3. **Sustained rate**: the matcher runs as a subprocess
   (``python -m trade_engine matcher run``). The rate is the growth of the
   matcher group's *committed* input offsets (they move only when the Kafka
   transaction holding the outputs commits) over a ``--seconds`` window that
   starts at the first commit; if the input runs out first, the window ends
   at the last commit.
4. **Latency**: with the same worker caught up, commands are offered at fixed
   rates (``--rates``, token bucket) for ``--latency-seconds`` each. Latency =
   the time an input's first ACCEPTED/REJECTED execution became visible to a
   ``read_committed`` consumer of ``te.executions`` minus the input record's
   produce timestamp (the execution's ``at``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from ops.benchmarks.bench_baseline import PRODUCER_CONF, passthrough
from trade_engine.agents.matcher.worker import MatcherTopics
from trade_engine.config import Settings, load_settings
from trade_engine.connectors.loadgen import iter_commands
from trade_engine.streams.codec import encode
from trade_engine.streams.execution_records import decode_execution
from trade_engine.streams.topics import create_topics

#: The paced (latency) producer: a gateway sending as orders come, 1 ms linger.
PACED_CONF: dict[str, Any] = {**PRODUCER_CONF, "linger.ms": 1}


def log(text: str) -> None:
    print(f"[bench-e2e {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _checked(err: KafkaError | None, _msg: Message) -> None:
    if err is not None:
        raise RuntimeError(f"delivery failed: {err}")


def _produce_all(producer: Producer, topic: str, items: Iterable[tuple[bytes, bytes]]) -> int:
    n = 0
    for key, value in items:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=_checked)
                break
            except BufferError:
                producer.poll(0.05)
        n += 1
        if n % 1000 == 0:
            producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("undelivered messages")
    return n


def _encoded(
    settings: Settings, n: int, seed: int, id_prefix: str
) -> Iterable[tuple[bytes, bytes]]:
    flow = iter_commands(settings.market.symbols, seed, id_prefix=id_prefix)
    for _ in range(n):
        command = next(flow)
        yield command.symbol.encode(), encode(command)


# -- the matcher ------------------------------------------------------------------


class Matcher:
    def __init__(self, settings: Settings, state_dir: Path, worker_id: str, profile: Path | None):
        self.settings = settings
        env = {
            **os.environ,
            "TE_TOPICS__PREFIX": settings.topics.prefix,
            "TE_TOPICS__PARTITIONS": str(settings.topics.partitions),
            "TE_STATE_DIR": str(state_dir),
            "TE_LOG_LEVEL": "WARNING",
        }
        cmd = [sys.executable]
        if profile is not None:
            cmd += ["-m", "cProfile", "-o", str(profile)]
        cmd += ["-m", "trade_engine", "matcher", "run", "--worker-id", worker_id]
        cmd += ["--metrics-port", "0"]
        if profile is not None:  # cProfile needs a normal exit to write its file
            cmd += ["--exit-when-idle", "5"]
        self.proc = subprocess.Popen(cmd, env=env)
        self.group = f"{settings.topics.prefix}matcher"
        self._offsets = Consumer({**settings.kafka.librdkafka(), "group.id": self.group})
        self.tps = [
            TopicPartition(settings.topic_names["accepted"], p)
            for p in range(settings.topics.partitions)
        ]

    def committed(self) -> int:
        if self.proc.poll() is not None:
            raise RuntimeError(f"matcher exited with {self.proc.returncode}")
        return sum(max(tp.offset, 0) for tp in self._offsets.committed(self.tps, timeout=30))

    def cpu_s(self) -> float:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_for(self, target: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.committed() < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"matcher did not reach {target} within {timeout_s}s")
            time.sleep(0.2)

    def stop(self) -> None:
        self._offsets.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def sustained(matcher: Matcher, total: int, seconds: float) -> dict[str, float]:
    """Committed inputs per second over ``seconds`` from the first commit (or until done)."""
    started = time.monotonic()
    while (c0 := matcher.committed()) == 0:
        if time.monotonic() - started > 120:
            raise TimeoutError("the matcher committed nothing within 120 s")
        time.sleep(0.05)
    t0, cpu0 = time.monotonic(), matcher.cpu_s()
    log(f"first commit after {t0 - started:.1f}s ({c0} inputs)")
    c1, t1 = c0, t0
    next_report = t0 + 10
    while True:
        time.sleep(0.1)
        c, t = matcher.committed(), time.monotonic()
        if c > c1:
            c1, t1 = c, t
        if t >= next_report:
            log(f"  {c1:,} / {total:,} inputs committed, {(c1 - c0) / (t1 - t0):,.0f}/s")
            next_report += 10
        if c1 >= total or t - t0 >= seconds:
            break
    cpu = matcher.cpu_s() - cpu0
    return {
        "orders_per_s": (c1 - c0) / (t1 - t0),
        "window_s": t1 - t0,
        "inputs_in_window": c1 - c0,
        "matcher_cpu_share": cpu / (t1 - t0),
        # CPU per order is steadier than the rate on a shared machine, where the
        # rate mostly says how much CPU the worker was given.
        "matcher_cpu_us_per_order": cpu / max(c1 - c0, 1) * 1e6,
        "startup_s": t0 - started,
    }


# -- latency ----------------------------------------------------------------------


class ExecutionReader(threading.Thread):
    """read_committed reader of te.executions: latency of each input's first answer."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {
                **settings.kafka.librdkafka(),
                "group.id": f"bench-reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 5,
                "fetch.min.bytes": 1,
            }
        )
        topic = settings.topic_names["executions"]
        tps = []
        for p in range(settings.topics.partitions):
            _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            tps.append(TopicPartition(topic, p, high))
        self.consumer.assign(tps)
        self.lock = threading.Lock()
        self.latencies: dict[tuple[int, int], float] = {}
        self._done = threading.Event()

    def run(self) -> None:
        consumer = self.consumer
        while not self._done.is_set():
            # poll() returns at the first record (consume() would wait out its timeout).
            first = consumer.poll(0.05)
            if first is None:
                continue
            now_ms = time.time() * 1000.0
            batch = [first, *consumer.consume(num_messages=1000, timeout=0)]
            for msg in batch:
                if msg.error() is not None:
                    continue
                m = decode_execution(msg.value())
                if m.kind not in ("ACCEPTED", "REJECTED"):
                    continue
                key = (m.input.partition, m.input.offset)
                if key in self.latencies:
                    continue
                at_ms = datetime.fromisoformat(m.at).timestamp() * 1000.0
                with self.lock:
                    self.latencies[key] = now_ms - at_ms
        consumer.close()

    def take(self) -> list[float]:
        with self.lock:
            values = list(self.latencies.values())
            self.latencies.clear()
        return values

    def stop(self) -> None:
        self._done.set()
        self.join(10)


def paced_producer(settings: Settings, topic: str, warm_topic: str) -> Producer:
    """A producer that already has its idempotent producer id and the topic's metadata:
    a fresh one holds its first records ~0.5 s for those, which is not the matcher's."""
    producer = Producer({**settings.kafka.librdkafka(), **PACED_CONF})
    producer.list_topics(topic, timeout=30)
    producer.produce(warm_topic, value=b"warm-up", on_delivery=_checked)
    if producer.flush(30):
        raise RuntimeError("paced producer: warm-up not delivered")
    return producer


def paced(producer: Producer, topic: str, items: list[tuple[bytes, bytes]], rate: float) -> float:
    """Offer ``items`` at ``rate`` per second; return the achieved offered rate."""
    start = time.perf_counter()
    for i, (key, value) in enumerate(items):
        due = start + i / rate
        ahead = due - time.perf_counter()
        if ahead > 0.0005:
            time.sleep(ahead)
        producer.produce(topic, value=value, key=key, on_delivery=_checked)
        producer.poll(0)
    elapsed = time.perf_counter() - start
    if producer.flush(60):
        raise RuntimeError("paced producer: undelivered messages")
    return len(items) / elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def latency_runs(
    settings: Settings,
    matcher: Matcher,
    total: int,
    args: argparse.Namespace,
    *,
    warm_topic: str,
) -> dict[str, float]:
    """p50/p99/max order->execution latency at each offered rate, with a caught-up worker."""
    topic = settings.topic_names["accepted"]
    result: dict[str, float] = {}
    rates = [float(r) for r in args.rates.split(",") if r]
    producer = paced_producer(settings, topic, warm_topic)
    reader = ExecutionReader(settings)
    reader.start()
    try:
        for i, rate in enumerate(rates):
            k = int(rate * args.latency_seconds)
            items = list(_encoded(settings, k, args.seed + 1 + i, f"L{i}"))
            offered = paced(producer, topic, items, rate)
            total += k
            # Committed input offsets become visible with the outputs (one
            # transaction); give the reader a moment to fetch the last ones.
            matcher.wait_for(total, timeout_s=120)
            time.sleep(1.0)
            values = reader.take()
            tag = f"{int(rate) // 1000}k" if rate >= 1000 else str(int(rate))
            result[f"p50_ms_at_{tag}"] = percentile(values, 0.50)
            result[f"p99_ms_at_{tag}"] = percentile(values, 0.99)
            result[f"max_ms_at_{tag}"] = max(values)
            result[f"offered_per_s_at_{tag}"] = offered
            result[f"answered_at_{tag}"] = len(values)
            log(
                f"latency at {offered:,.0f}/s: p50 {result[f'p50_ms_at_{tag}']:.1f} ms, "
                f"p99 {result[f'p99_ms_at_{tag}']:.1f} ms, "
                f"max {result[f'max_ms_at_{tag}']:.1f} ms ({len(values)}/{k} answered)"
            )
    finally:
        reader.stop()
    return result


# -- main -------------------------------------------------------------------------


def _delete_topics(settings: Settings, extra: list[str]) -> None:
    admin = AdminClient(settings.kafka.librdkafka())
    existing = admin.list_topics(timeout=10).topics
    names = [t for t in existing if t.startswith(settings.topics.prefix)] + [
        t for t in extra if t in existing
    ]
    if names:
        for future in admin.delete_topics(sorted(set(names))).values():
            try:
                future.result(timeout=30)
            except Exception as exc:  # best effort
                log(f"could not delete a topic: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_500_000, help="pre-loaded commands")
    parser.add_argument("--seconds", type=float, default=60.0, help="sustained window")
    parser.add_argument("--passthrough-count", type=int, default=300_000)
    parser.add_argument("--rates", default="1000,5000", help="offered rates for latency")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the matcher")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args(argv)

    run_id = uuid.uuid4().hex[:8]
    state_dir = Path(tempfile.mkdtemp(prefix="te-bench-e2e-"))
    settings = load_settings(topics={"prefix": f"bench-{run_id}."}, state_dir=state_dir)
    topics = MatcherTopics.from_settings(settings)
    sink = f"bench-{run_id}-passthrough"
    result: dict[str, Any] = {
        "bench": "e2e",
        "run_id": run_id,
        "orders": args.orders,
        "partitions": settings.topics.partitions,
        "symbols": len(settings.market.symbols),
    }
    t_start = time.perf_counter()
    matcher: Matcher | None = None
    try:
        create_topics(settings)
        admin = AdminClient(settings.kafka.librdkafka())
        futures = admin.create_topics(
            [NewTopic(sink, num_partitions=settings.topics.partitions, replication_factor=1)]
        )
        futures[sink].result(timeout=30)

        t = time.perf_counter()
        producer = Producer({**settings.kafka.librdkafka(), **PRODUCER_CONF})
        n = _produce_all(producer, topics.input, _encoded(settings, args.orders, args.seed, "s"))
        log(f"pre-loaded {n:,} commands in {time.perf_counter() - t:.1f}s")

        count = min(args.passthrough_count, n)
        result["passthrough_per_s"] = passthrough(
            topics.input, sink, count, settings.kafka.librdkafka(), settings.topics.partitions
        )
        result["passthrough_count"] = count
        log(f"passthrough: {result['passthrough_per_s']:,.0f} msg/s")

        matcher = Matcher(settings, state_dir, "bench-w1", args.profile)
        figures = sustained(matcher, n, args.seconds)
        result.update(figures)
        log(
            f"sustained: {figures['orders_per_s']:,.0f} orders/s over {figures['window_s']:.1f}s "
            f"(matcher at {figures['matcher_cpu_share']:.0%} of a CPU)"
        )
        result["ratio"] = result["orders_per_s"] / result["passthrough_per_s"]

        if not args.skip_latency:
            log("draining the pre-load before the latency runs")
            matcher.wait_for(n, timeout_s=900)
            result.update(latency_runs(settings, matcher, n, args, warm_topic=sink))
    finally:
        if matcher is not None:
            matcher.stop()
        _delete_topics(settings, [sink])
        shutil.rmtree(state_dir, ignore_errors=True)
    result["elapsed_s"] = time.perf_counter() - t_start
    for key, value in list(result.items()):
        if isinstance(value, float):
            result[key] = round(value, 3 if key == "ratio" else 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
