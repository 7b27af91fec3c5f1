"""Baseline throughput of the local broker, confluent-kafka and Faust agents.

Run with ``make bench-baseline`` (or ``python -m ops.benchmarks.bench_baseline``).
Progress goes to stderr; the last stdout line is one JSON object of figures.

What is measured, on fresh topics (deleted at the end), with 100-byte JSON
messages keyed by one of 8 symbols, 4 partitions:

- ``confluent_produce_per_s``: an idempotent confluent-kafka producer
  (``acks=all``, ``partitioner=murmur2_random``), produce + final flush.
- ``confluent_consume_per_s``: a confluent-kafka consumer reading them back.
- ``passthrough_per_s``: confluent consumer -> confluent producer, batched
  consume, until every output record is acknowledged.
- ``faust_passthrough_per_s`` / ``faust_batched_passthrough_per_s``: a Faust
  worker (a subprocess running this file with ``--faust-worker``) whose agent
  reads topic A and sends every event to topic B, per event
  (``async for event in stream.events(): await out.send(...)``) and batched
  (``stream.take_events(N, within=...)``).  The rate is messages arriving on B
  per second, between the first and the last arrival, read by a confluent
  consumer in this process.  Both run with the tuned settings
  (:data:`FAUST_TUNED`); ``faust_default_*`` runs the per-event agent with
  Faust's defaults for comparison.

See docs/benchmarks.md for the figures and what the Faust tuning changed.
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from trade_engine.streams.clients import KEYED_PRODUCER

BOOTSTRAP = os.environ.get("TE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
SYMBOLS = [f"{base}/USDT" for base in ("BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "DOT", "LTC")]
PARTITIONS = 4
MESSAGE_BYTES = 100
WORKER_FLAG = "--faust-worker"
WORKER_ENV = "TE_BENCH_FAUST_WORKER"

#: The producer settings every non-Faust producer of the engine uses (DESIGN 1),
#: plus batching: 5 ms linger and up to 10k messages / 1 MiB per batch.
PRODUCER_CONF: dict[str, Any] = {
    **KEYED_PRODUCER,
    "linger.ms": 5,
    "batch.num.messages": 10_000,
    "batch.size": 1_048_576,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
}

#: Faust's own defaults that matter here, spelled out for the report.
FAUST_DEFAULTS: dict[str, Any] = {
    "broker_max_poll_records": None,
    "broker_commit_every": 10_000,
    "broker_commit_interval": 2.8,
    "stream_buffer_maxsize": 4096,
    "stream_wait_empty": True,
    "producer_linger": 0.0,
    "producer_max_batch_size": 16_384,
    "producer_acks": -1,
}

#: The best settings found (see docs/benchmarks.md for the measurements).  The
#: tuned workers also run with ``-l info``: at ``-l warn`` (the CLI default) the
#: worker's progress spinner sets the root logger to DEBUG, so every
#: ``logger.debug()`` of aiokafka and Faust (3 per passed-through message) builds
#: a LogRecord that the handlers then drop.
FAUST_TUNED: dict[str, Any] = {
    "broker_max_poll_records": 2_000,
    "stream_buffer_maxsize": 16_384,
    "producer_linger": 0.005,
    "producer_max_batch_size": 1_048_576,
    "producer_acks": -1,
}

#: Settings every bench worker gets: fast group join, no web server, no tables.
FAUST_COMMON: dict[str, Any] = {
    "web_enabled": False,
    "topic_partitions": PARTITIONS,
    "broker_session_timeout": 10.0,
    "broker_heartbeat_interval": 1.0,
    "consumer_auto_offset_reset": "earliest",
    "table_standby_replicas": 0,
}


def log(text: str) -> None:
    print(f"[bench-baseline {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def payload(i: int, symbol: str) -> bytes:
    """A JSON message of exactly MESSAGE_BYTES bytes."""
    head = f'{{"v":1,"i":{i},"symbol":"{symbol}","pad":"'
    tail = '"}'
    pad = MESSAGE_BYTES - len(head) - len(tail)
    return (head + "x" * pad + tail).encode()


# -- topics -----------------------------------------------------------------


class Topics:
    """Creates uniquely named topics and deletes them (and Faust's) at the end."""

    def __init__(self, run_id: str) -> None:
        self.admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
        self.run_id = run_id
        self.created: list[str] = []
        self.prefixes: list[str] = []

    def create(self, name: str, partitions: int = PARTITIONS) -> str:
        topic = f"bench.{self.run_id}.{name}"
        futures = self.admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
        )
        futures[topic].result(timeout=30)
        self.created.append(topic)
        return topic

    def delete_all(self) -> None:
        names = set(self.created)
        existing = self.admin.list_topics(timeout=10).topics
        names |= {t for t in existing if any(t.startswith(p) for p in self.prefixes)}
        names &= set(existing)
        if names:
            for future in self.admin.delete_topics(sorted(names)).values():
                try:
                    future.result(timeout=30)
                except Exception as exc:  # best effort: report, never fail the run
                    log(f"could not delete a topic: {exc}")


# -- confluent-kafka ----------------------------------------------------------


def _checked(err: KafkaError | None, _msg: Message) -> None:
    if err is not None:
        raise RuntimeError(f"delivery failed: {err}")


def produce(topic: str, count: int) -> float:
    """Produce ``count`` messages; return messages per second (flush included)."""
    producer = Producer({"bootstrap.servers": BOOTSTRAP, **PRODUCER_CONF})
    keys = [s.encode() for s in SYMBOLS]
    values = [payload(0, s) for s in SYMBOLS]
    start = time.perf_counter()
    for i in range(count):
        n = i % len(SYMBOLS)
        while True:
            try:
                producer.produce(topic, value=values[n], key=keys[n], on_delivery=_checked)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    elapsed = time.perf_counter() - start
    if remaining:
        raise RuntimeError(f"{remaining} messages were not delivered")
    return count / elapsed


def _assigned_consumer(
    topic: str, kafka: Mapping[str, Any] | None = None, partitions: int = PARTITIONS
) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            **(kafka or {}),
            "group.id": f"bench-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 100,
        }
    )
    # assign() rather than subscribe(): no group join in the measured time.
    consumer.assign([TopicPartition(topic, p, -2) for p in range(partitions)])
    return consumer


def consume(topic: str, count: int, timeout_s: float = 120.0) -> tuple[float, float]:
    """Read ``count`` messages; return (msgs/s first->last, seconds until first)."""
    consumer = _assigned_consumer(topic)
    start = time.perf_counter()
    first: float | None = None
    seen = 0
    try:
        while seen < count:
            if time.perf_counter() - start > timeout_s:
                raise TimeoutError(f"{topic}: {seen}/{count} after {timeout_s}s")
            batch = consumer.consume(num_messages=10_000, timeout=0.1)
            for msg in batch:
                if msg.error():
                    raise RuntimeError(str(msg.error()))
            if batch and first is None:
                first = time.perf_counter()
            seen += len(batch)
        end = time.perf_counter()
    finally:
        consumer.close()
    assert first is not None
    return count / max(end - first, 1e-9), first - start


def passthrough(
    source: str,
    sink: str,
    count: int,
    kafka: Mapping[str, Any] | None = None,
    partitions: int = PARTITIONS,
) -> float:
    """Copy the first ``count`` records of ``source`` to ``sink``; msgs/s first->last.

    ``kafka``: client settings (default: the local broker); the end-to-end
    benchmark passes the engine's so its baseline runs on the same topics.
    """
    consumer = _assigned_consumer(source, kafka, partitions)
    producer = Producer({"bootstrap.servers": BOOTSTRAP, **(kafka or {}), **PRODUCER_CONF})
    seen = 0
    first: float | None = None
    try:
        while seen < count:
            batch = consumer.consume(num_messages=10_000, timeout=0.1)
            if batch and first is None:
                first = time.perf_counter()
            for msg in batch[: count - seen]:
                while True:
                    try:
                        producer.produce(sink, value=msg.value(), key=msg.key())
                        break
                    except BufferError:
                        producer.poll(0.05)
            seen += len(batch)
            producer.poll(0)
        if producer.flush(60):
            raise RuntimeError("passthrough: undelivered messages")
        end = time.perf_counter()
    finally:
        consumer.close()
    assert first is not None
    return count / (end - first)


# -- Faust ----------------------------------------------------------------------


def _run_faust_worker() -> None:  # pragma: no cover - runs in the worker subprocess
    """Entry point of the worker subprocess: one Faust app, one passthrough agent."""
    import faust  # noqa: PLC0415 - only the worker subprocess needs Faust

    cfg: dict[str, Any] = json.loads(os.environ[WORKER_ENV])
    app = faust.App(
        cfg["app_id"],
        broker=f"kafka://{BOOTSTRAP}",
        datadir=cfg["datadir"],
        **FAUST_COMMON,
        **cfg["settings"],
    )
    source = app.topic(cfg["source"], key_serializer="raw", value_serializer="raw")
    sink = app.topic(cfg["sink"], key_serializer="raw", value_serializer="raw")
    batch_size = int(cfg.get("batch", 0))
    within = float(cfg.get("within", 0.05))
    noack = bool(cfg.get("noack", False))

    if batch_size:

        @app.agent(source)
        async def batched(stream: Any) -> None:
            s = stream.noack() if noack else stream
            async for events in s.take_events(batch_size, within=within):
                for event in events:
                    await sink.send(key=event.key, value=event.value)
                if noack:
                    for event in events:
                        event.ack()

    else:

        @app.agent(source)
        async def per_event(stream: Any) -> None:
            s = stream.noack() if noack else stream
            async for event in s.events():
                await sink.send(key=event.key, value=event.value)
                if noack:
                    event.ack()

    profile_path = cfg.get("profile")
    if profile_path:
        profiler = cProfile.Profile()
        profiler.enable()

        def _dump() -> None:
            profiler.disable()
            profiler.dump_stats(profile_path)

        atexit.register(_dump)
    sys.argv = [sys.argv[0], "worker", "-l", cfg["loglevel"], "--without-web"]
    app.main()


@contextmanager
def _faust_worker(cfg: Mapping[str, Any], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, WORKER_ENV: json.dumps(cfg)}
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), WORKER_FLAG],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def faust_passthrough(
    topics: Topics,
    source: str,
    count: int,
    name: str,
    settings: Mapping[str, Any],
    *,
    batch: int = 0,
    noack: bool = False,
    loglevel: str = "info",
    profile_dir: Path | None = None,
) -> dict[str, float]:
    """Run one Faust worker over ``source``; return its rate on the output topic."""
    app_id = f"bench-{topics.run_id}-{name}"
    topics.prefixes.append(app_id)
    sink = topics.create(f"faust-{name}")
    with tempfile.TemporaryDirectory(prefix="bench-faust-") as datadir:
        cfg = {
            "app_id": app_id,
            "datadir": datadir,
            "source": source,
            "sink": sink,
            "settings": dict(settings),
            "batch": batch,
            "noack": noack,
            "loglevel": loglevel,
            "profile": str(profile_dir / f"{name}.prof") if profile_dir else None,
        }
        log_path = Path(datadir) / "worker.log"
        started = time.perf_counter()
        try:
            with _faust_worker(cfg, log_path) as proc:
                rate, until_first, cpu_share = _consume_watching(sink, count, proc)
        except Exception:
            log(f"faust worker {name} failed; its log:\n{log_path.read_text()[-4000:]}")
            raise
    return {
        "per_s": rate,
        "startup_s": until_first,
        "total_s": time.perf_counter() - started,
        # CPU time per message while streaming: robust against a noisy machine,
        # where the rate mostly says how much CPU the worker was given.
        "cpu_us_per_msg": cpu_share / rate * 1e6,
        "cpu_share": cpu_share,
    }


def _consume_watching(
    topic: str, count: int, proc: subprocess.Popen[bytes]
) -> tuple[float, float, float]:
    """Like consume(), but fail fast when the worker process dies.

    Returns (msgs/s first->last arrival, seconds until the first arrival, share
    of one CPU the worker used between the first and the last arrival).
    """
    consumer = _assigned_consumer(topic)
    start = time.perf_counter()
    first: float | None = None
    cpu_first = 0.0
    seen = 0
    try:
        while seen < count:
            if proc.poll() is not None:
                raise RuntimeError(f"faust worker exited with {proc.returncode}")
            if time.perf_counter() - start > 180:
                raise TimeoutError(f"{topic}: {seen}/{count} after 180s")
            # Small batches, short timeout: consume() waits for num_messages or
            # the timeout, so big values would quantise the arrival times.
            batch = consumer.consume(num_messages=500, timeout=0.02)
            if batch and first is None:
                first = time.perf_counter()
                cpu_first = _process_cpu_s(proc.pid)
            seen += len(batch)
        end = time.perf_counter()
        cpu_share = (_process_cpu_s(proc.pid) - cpu_first) / max(end - (first or end), 1e-9)
    finally:
        consumer.close()
    assert first is not None
    return (count - 1) / max(end - first, 1e-9), first - start, cpu_share


def _process_cpu_s(pid: int) -> float:
    """utime + stime of a live process, all threads (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- main -------------------------------------------------------------------------


def _timed(label: str, fn: Callable[[], float]) -> float:
    rate = fn()
    log(f"{label}: {rate:,.0f} msg/s")
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=200_000, help="confluent message count")
    parser.add_argument("--faust-count", type=int, default=100_000, help="Faust message count")
    parser.add_argument(
        "--faust-default-count",
        type=int,
        default=30_000,
        help="message count of the run with Faust's default settings (0 skips it)",
    )
    parser.add_argument("--skip-confluent", action="store_true")
    parser.add_argument(
        "--faust-settings", type=json.loads, default=None, help="JSON dict overriding tuned"
    )
    parser.add_argument("--batch", type=int, default=1000, help="take_events() batch size")
    parser.add_argument("--noack", action="store_true", help="agents use stream.noack()")
    parser.add_argument("--loglevel", default="info", help="worker -l of the tuned runs")
    parser.add_argument("--profile-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    run_id = uuid.uuid4().hex[:10]
    topics = Topics(run_id)
    tuned = {**FAUST_TUNED, **(args.faust_settings or {})}
    result: dict[str, Any] = {
        "bench": "baseline",
        "run_id": run_id,
        "messages": args.count,
        "faust_messages": args.faust_count,
        "message_bytes": MESSAGE_BYTES,
        "partitions": PARTITIONS,
        "symbols": len(SYMBOLS),
        "producer_conf": PRODUCER_CONF,
        "faust_settings": tuned,
    }
    t0 = time.perf_counter()
    try:
        if not args.skip_confluent:
            source = topics.create("source")
            result["confluent_produce_per_s"] = _timed(
                "confluent produce", lambda: produce(source, args.count)
            )
            rate, _ = consume(source, args.count)
            result["confluent_consume_per_s"] = _timed("confluent consume", lambda: rate)
            sink = topics.create("passthrough")
            result["passthrough_per_s"] = _timed(
                "confluent passthrough", lambda: passthrough(source, sink, args.count)
            )

        faust_source = topics.create("faust-source")
        produce(faust_source, max(args.faust_count, args.faust_default_count))
        variants: list[tuple[str, str, int, Mapping[str, Any], int, str]] = [
            ("faust_passthrough", "per-event", args.faust_count, tuned, 0, args.loglevel),
            (
                "faust_batched_passthrough",
                "batched",
                args.faust_count,
                tuned,
                args.batch,
                args.loglevel,
            ),
        ]
        if args.faust_default_count:
            # Faust's defaults, and the worker's default log level (-l warn).
            variants.append(
                ("faust_default_passthrough", "default", args.faust_default_count, {}, 0, "warn")
            )
        for key, name, count, settings, batch, loglevel in variants:
            figures = faust_passthrough(
                topics,
                faust_source,
                count,
                name,
                settings,
                batch=batch,
                noack=args.noack,
                loglevel=loglevel,
                profile_dir=args.profile_dir,
            )
            log(
                f"faust {name}: {figures['per_s']:,.0f} msg/s "
                f"(worker up to first output {figures['startup_s']:.1f}s, "
                f"{figures['cpu_us_per_msg']:.0f} us CPU/msg, "
                f"{figures['cpu_share']:.0%} of a CPU while streaming)"
            )
            result[f"{key}_cpu_share"] = round(figures["cpu_share"], 2)
            result[f"{key}_cpu_us_per_msg"] = figures["cpu_us_per_msg"]
            result[f"{key}_per_s"] = figures["per_s"]
            result[f"{key}_startup_s"] = figures["startup_s"]
            result[f"{key}_messages"] = count
    finally:
        topics.delete_all()
    result["batch"] = args.batch
    result["noack"] = args.noack
    result["elapsed_s"] = round(time.perf_counter() - t0, 1)
    for key, value in list(result.items()):
        if key.endswith(("_per_s", "_startup_s", "_per_msg")):
            result[key] = round(value, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == WORKER_FLAG:
        _run_faust_worker()
    else:
        sys.exit(main())
