"""Gateway accept-latency benchmark: POST /api/v1/orders -> 201 once durable in Kafka.

Run with ``make bench-gateway`` (or ``python -m ops.benchmarks.bench_gateway``).
Progress goes to stderr; the last stdout line is one JSON object of figures.

On fresh topics (``bench-gw-<run>.``) and a fresh history schema:

1. **Baseline** (same run, same commands, before the gateway starts): a raw
   confluent producer configured like the gateway's (murmur2, idempotent,
   acks=all, same linger) sends the commands at ``--rate`` per second; latency
   = produce() to its delivery report. Then as fast as it can: ``baseline_per_s``.
2. **Gateway**: one ``trade-engine gateway run`` process (``--workers`` for more,
   which needs Redis). This process, separate from it, offers orders at
   ``--rate`` per second for ``--seconds`` (open loop: latency counts from each
   request's *scheduled* time, so a stall is not hidden), from ``--users``
   users with their own tokens; then ``--concurrency`` requests kept in flight
   for ``--seconds``: ``orders_per_s`` is 201s per second at saturation.

Rate limits are raised for the run (the goal measures the accept path, not
the limiter's refusals); everything else is the gateway's default path: JWT
check (cached), both rate-limit buckets, strict validation, the open-orders
cap, produce, acknowledgement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from confluent_kafka.admin import AdminClient

from trade_engine.config import Settings, load_settings
from trade_engine.connectors.gateway.auth import mint_token
from trade_engine.connectors.producer import build_place
from trade_engine.migrations.runner import migrate_schema
from trade_engine.streams import clients, codec
from trade_engine.streams.topics import create_topics

SYMBOLS = [("BTC/USDT", 50000, "0.001"), ("ETH/USDT", 3000, "0.01"), ("SOL/USDT", 150, "0.1")]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def order_body(rng: random.Random) -> dict[str, Any]:
    symbol, ref, qty = rng.choice(SYMBOLS)
    price = ref + rng.randint(-50, 50)
    return {
        "symbol": symbol,
        "side": rng.choice(["BUY", "SELL"]),
        "type": "LIMIT",
        "quantity": qty,
        "price": f"{price}.00" if symbol != "SOL/USDT" else f"{price}.000",
    }


def baseline(settings: Settings, rate: float, seconds: float) -> dict[str, float]:
    """The same commands through a bare producer configured like the gateway's."""
    gw = settings.gateway
    producer = clients.producer(
        settings,
        **{
            "linger.ms": gw.producer_linger_ms,
            "compression.type": "lz4",
            "socket.nagle.disable": True,
        },
    )
    topic = settings.topic_names["commands"]
    rng = random.Random(7)
    latencies: list[float] = []

    def send(started: float) -> None:
        body = order_body(rng)
        cmd = build_place(user_id="base", **body)

        def done(err: Any, msg: Any) -> None:
            if err is None:
                latencies.append(time.perf_counter() - started)

        producer.produce(
            topic,
            codec.encode(cmd),
            cmd.symbol.encode(),
            headers=codec.new_headers(),
            on_delivery=done,
        )
        producer.poll(0)

    n = int(rate * seconds)
    start = time.perf_counter()
    for i in range(n):
        due = start + i / rate
        while (now := time.perf_counter()) < due:
            producer.poll(min(due - now, 0.001))
        send(due)
    producer.flush(30)
    fixed = {
        "baseline_p50_ms": pct(latencies, 0.5) * 1000,
        "baseline_p99_ms": pct(latencies, 0.99) * 1000,
    }
    count = int(rate * seconds)
    start = time.perf_counter()
    latencies.clear()
    for _ in range(count):
        send(time.perf_counter())
    producer.flush(30)
    fixed["baseline_per_s"] = count / (time.perf_counter() - start)
    return fixed


class Connection:
    """One keep-alive HTTP/1.1 connection sending pre-encoded requests.

    The load generator shares the machine's two cores with the gateway, and
    aiohttp's client spends about as much CPU per request as the server does: it
    capped the measurement near 1.5k/s. Pre-encoded requests and a minimal
    response parser leave the CPU to the gateway.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> int:
        """Send one request; the response's status once its body has been read."""
        self.writer.write(raw)
        head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            raise RuntimeError(f"response without content-length: {head[:200]!r}")
        end = head.find(b"\r\n", at + 2)
        await self.reader.readexactly(int(head[at + 17 : end]))
        return int(head[9:12])

    def close(self) -> None:
        self.writer.close()


def encoded_requests(host: str, port: int, tokens: list[str], seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(1000):
        body = json.dumps(order_body(rng)).encode()
        head = (
            f"POST /api/v1/orders HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {tokens[i % len(tokens)]}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def offered(
    host: str, port: int, tokens: list[str], rate: float, seconds: float
) -> dict[str, float]:
    """Open loop at ``rate``: latency from each request's scheduled time to its 201."""
    requests = encoded_requests(host, port, tokens, 11)
    latencies: list[float] = []
    errors: dict[int, int] = {}
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    conns = [await Connection.open(host, port) for _ in range(128)]
    for c in conns:
        pool.put_nowait(c)

    async def one(i: int, due: float) -> None:
        conn = await pool.get()
        try:
            status = await conn.request(requests[i % len(requests)])
        finally:
            pool.put_nowait(conn)
        if status == 201:
            latencies.append(time.perf_counter() - due)
        else:
            errors[status] = errors.get(status, 0) + 1

    n = int(rate * seconds)
    start = time.perf_counter() + 0.1
    tasks = []
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    for c in conns:
        c.close()
    if errors:
        log(f"non-201 answers at {rate}/s: {errors}")
    return {
        "p50_ms": pct(latencies, 0.5) * 1000,
        "p99_ms": pct(latencies, 0.99) * 1000,
        "accepted": len(latencies),
    }


async def saturation(
    host: str, port: int, tokens: list[str], concurrency: int, seconds: float
) -> float:
    """``concurrency`` connections each sending back to back: 201s per second."""
    requests = encoded_requests(host, port, tokens, 13)
    statuses: dict[int, int] = {}
    stop = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        conn = await Connection.open(host, port)
        i = w
        try:
            while time.perf_counter() < stop:
                status = await conn.request(requests[i % len(requests)])
                statuses[status] = statuses.get(status, 0) + 1
                i += concurrency
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    if set(statuses) - {201}:
        log(f"answers at saturation: {statuses}")
    return statuses.get(201, 0) / elapsed


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_gateway(args: argparse.Namespace, prefix: str, schema: str) -> subprocess.Popen[bytes]:
    """The gateway under test, started and answering."""
    env = {
        **os.environ,
        "TE_TOPICS__PREFIX": prefix,
        "TE_GATEWAY__POSTGRES_SCHEMA": schema,
        "TE_GATEWAY__DEV_MODE": "true",  # tokens signed with the development secret
        "TE_GATEWAY__RATE_LIMIT__USER_PER_S": "1000000",
        "TE_GATEWAY__RATE_LIMIT__USER_BURST": "1000000",
        "TE_GATEWAY__RATE_LIMIT__IP_PER_S": "1000000",
        "TE_GATEWAY__RATE_LIMIT__IP_BURST": "1000000",
        "TE_GATEWAY__MAX_OPEN_ORDERS_PER_USER": "1000000",
        "TE_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from trade_engine.cli import main; raise SystemExit(main())",
            "gateway",
            "run",
            "--port",
            str(args.port),
            "--workers",
            str(args.workers),
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{args.port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(base + "/health/live", timeout=1).close()  # noqa: S310
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("gateway did not start") from None
            time.sleep(0.2)
    return proc


def cleanup(settings: Settings, prefix: str, schema: str) -> None:
    admin = AdminClient(settings.kafka.librdkafka())
    names = [n for n in admin.list_topics(timeout=10).topics if n.startswith(prefix)]
    for future in admin.delete_topics(names).values():
        future.result(timeout=30)

    async def drop() -> None:
        conn = await asyncpg.connect(settings.postgres.dsn())
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()

    asyncio.run(drop())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--port", type=int, default=18480)
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    prefix, schema = f"bench-gw-{run}.", f"bench_gw_{run}"
    settings = load_settings(topics={"prefix": prefix})
    create_topics(settings)
    asyncio.run(migrate_schema(settings.postgres.dsn(), schema))
    proc: subprocess.Popen[bytes] | None = None
    try:
        log(f"baseline: raw produce at {args.rate:g}/s for {args.seconds:g}s, then flat out")
        base_figures = baseline(settings, args.rate, args.seconds)
        proc = start_gateway(args, prefix, schema)
        host, port = "127.0.0.1", args.port
        tokens = [mint_token(settings.gateway.auth, f"b{i}", ttl_s=3600) for i in range(args.users)]
        log("warm-up")
        asyncio.run(offered(host, port, tokens, 500, 2))
        log(f"gateway: {args.rate:g} orders/s offered for {args.seconds:g}s")
        fixed = asyncio.run(offered(host, port, tokens, args.rate, args.seconds))
        log(f"gateway: saturation with {args.concurrency} in flight for {args.seconds:g}s")
        cpu_before, client_before = cpu_s(proc.pid), time.process_time()
        sat = asyncio.run(saturation(host, port, tokens, args.concurrency, args.seconds))
        sat_cpu = cpu_s(proc.pid) - cpu_before
        client_cpu = time.process_time() - client_before
        sat_orders = sat * args.seconds
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
        cleanup(settings, prefix, schema)
    figures = {
        "orders_per_s": round(sat, 1),
        "p50_ms": round(fixed["p50_ms"], 2),
        "p99_ms": round(fixed["p99_ms"], 2),
        "offered_per_s": args.rate,
        "accepted_at_rate": fixed["accepted"],
        "baseline_per_s": round(base_figures["baseline_per_s"], 1),
        "baseline_p50_ms": round(base_figures["baseline_p50_ms"], 2),
        "baseline_p99_ms": round(base_figures["baseline_p99_ms"], 2),
        "gateway_processes": args.workers,
        # CPU per accepted order at saturation: the steadier figure on a shared machine
        # (with --workers > 1 it counts the parent process only).
        "gateway_cpu_us_per_order": round(sat_cpu / max(sat_orders, 1) * 1e6, 1),
        "client_cpu_us_per_order": round(client_cpu / max(sat_orders, 1) * 1e6, 1),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
