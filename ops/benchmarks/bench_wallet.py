"""Benchmark: the wallet service's batched reserve and settle, next to raw PostgreSQL.

Run with ``make bench-wallet`` (or ``python -m ops.benchmarks.bench_wallet``).
Progress goes to stderr; the last stdout line is one JSON object of figures.

The wallet service runs as a subprocess (``trade-engine wallet serve``) on a
fresh schema; ``--streams`` concurrent clients each own a disjoint set of
funded users (as the settlement agent's partitions would) and, over HTTP
with the engine's ``WalletClient``:

1. reserve: one hold per order (a buy in USDT, a sell in BTC), ``reserve_many``
   in calls of ``--reserve-batch`` -> ``reserved_orders_per_s``;
2. settle: one trade per (buy, sell) pair, consuming both holds, with fees,
   ``settle_many`` in calls of ``--settle-batch`` -> ``settled_trades_per_s``,
   ``settle_batch_p50_ms`` / ``settle_batch_p99_ms`` (per call, client side).

CPU per item, from ``/proc/<pid>/stat`` (user + system time) read around each
phase: ``wallet_cpu_us_per_reserve`` / ``wallet_cpu_us_per_settle`` for the
service process, ``pg_cpu_us_per_reserve`` / ``pg_cpu_us_per_settle`` for the
PostgreSQL backends serving the service's own connections (matched on their
client port, so other users of the shared server do not count).

Baseline, same run, same database, another fresh schema of the same tables
and triggers: ``raw_settle_rows_per_s`` -- per batch of trades, one
transaction of set-based asyncpg statements writing exactly the rows a settle
writes (journal entry, six postings, four balance updates, two hold updates,
the idempotency row), no checks, no HTTP. It is the floor of what PostgreSQL
can do for this shape; ``settle_ratio`` is the service over it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from decimal import Decimal
from typing import Any

import asyncpg

from trade_engine.config import Settings, load_settings
from trade_engine.connectors.wallet.client import WalletClient
from trade_engine.connectors.wallet.exceptions import WalletError
from trade_engine.connectors.wallet.models import (
    ReserveRequest,
    SettleTradeRequest,
    TransferRequest,
)
from trade_engine.wallet.ledger import Ledger
from trade_engine.wallet.schema import create_pool, migrate

PRICE = Decimal("50000.00")
QTY = Decimal("0.01")
NOTIONAL = PRICE * QTY
BUYER_FEE = Decimal("0.00001")  # BTC, charged on what the buyer receives
SELLER_FEE = Decimal("0.5")  # USDT


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_us(pid: int) -> float:
    """User + system CPU of ``pid`` so far, in µs (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # Fields after the parenthesised command name; utime and stime are 14 and 15.
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * 1e6 / _CLK_TCK


def _local_pg_ports(pid: int, pg_port: int) -> set[int]:
    """Local TCP ports of ``pid``'s connections to ``pg_port`` (its pool's sockets)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in list(f)[1:]:
                cols = line.split()
                local, remote, inode = cols[1], cols[2], cols[9]
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == pg_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


class _CpuMeter:
    """CPU of the service process and of the PostgreSQL backends of its connections."""

    def __init__(self, pid: int, dsn: str, pg_port: int) -> None:
        self._pid, self._dsn, self._pg_port = pid, dsn, pg_port
        self._start: tuple[float, dict[int, float]] = (0.0, {})

    async def _backends(self) -> list[int]:
        ports = _local_pg_ports(self._pid, self._pg_port)
        conn = await asyncpg.connect(self._dsn)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE client_port = ANY($1::int[])", list(ports)
            )
        finally:
            await conn.close()
        return [r["pid"] for r in rows]

    async def start(self) -> None:
        self._start = (_cpu_us(self._pid), {p: _cpu_us(p) for p in await self._backends()})

    async def stop(self) -> tuple[float, float]:
        """(service µs, backends µs) since ``start``; backends opened meanwhile count from 0."""
        service = _cpu_us(self._pid) - self._start[0]
        before = self._start[1]
        backends = sum(_cpu_us(p) - before.get(p, 0.0) for p in await self._backends())
        return service, backends


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _users(stream: int, users: int) -> list[str]:
    return [f"s{stream}u{n}" for n in range(users)]


def _orders(stream: int, pairs: int, users: int) -> list[tuple[str, str, str, str]]:
    """(buy order, buyer, sell order, seller) per trade; buyer != seller, users rotate."""
    names = _users(stream, users)
    return [
        (f"s{stream}b{i}", names[i % users], f"s{stream}s{i}", names[(i + 1) % users])
        for i in range(pairs)
    ]


async def _fund(ledger: Ledger, streams: int, users: int, pairs: int) -> None:
    per_user = pairs // users + 2
    for stream in range(streams):
        for user in _users(stream, users):
            for asset, amount in (("USDT", NOTIONAL * per_user), ("BTC", QTY * per_user)):
                await ledger.deposit(
                    TransferRequest(
                        user_id=user,
                        asset=asset,
                        amount=amount,
                        idempotency_key=f"fund-{user}-{asset}",
                    )
                )


def _reserves(stream: int, pairs: int, users: int) -> list[ReserveRequest]:
    out = []
    for buy, buyer, sell, seller in _orders(stream, pairs, users):
        out.append(ReserveRequest(user_id=buyer, asset="USDT", amount=NOTIONAL, order_id=buy))
        out.append(ReserveRequest(user_id=seller, asset="BTC", amount=QTY, order_id=sell))
    return out


def _settles(stream: int, pairs: int, users: int) -> list[SettleTradeRequest]:
    return [
        SettleTradeRequest(
            trade_id=f"BTC/USDT:{stream}:{i}",
            symbol="BTC/USDT",
            buyer_user_id=buyer,
            seller_user_id=seller,
            buyer_order_id=buy,
            seller_order_id=sell,
            base_asset="BTC",
            quote_asset="USDT",
            quantity=QTY,
            price=PRICE,
            buyer_fee=BUYER_FEE,
            seller_fee=SELLER_FEE,
        )
        for i, (buy, buyer, sell, seller) in enumerate(_orders(stream, pairs, users))
    ]


async def _drive(
    client: WalletClient, method: str, requests: list[Any], batch: int
) -> tuple[list[float], int]:
    """Send ``requests`` in calls of ``batch``; per-call seconds and the items refused."""
    times: list[float] = []
    refused = 0
    call = getattr(client, method)
    for start in range(0, len(requests), batch):
        chunk = requests[start : start + batch]
        began = time.perf_counter()
        results = await call(chunk)
        times.append(time.perf_counter() - began)
        refused += sum(isinstance(r, WalletError) for r in results)
    return times, refused


async def _service_phase(
    url: str, token: Any, method: str, per_stream: list[list[Any]], batch: int
) -> tuple[float, list[float], int]:
    clients = [WalletClient(url, token, batch_size=batch, timeout_s=10) for _ in per_stream]
    try:
        began = time.perf_counter()
        runs = await asyncio.gather(
            *(_drive(c, method, reqs, batch) for c, reqs in zip(clients, per_stream, strict=True))
        )
        elapsed = time.perf_counter() - began
    finally:
        for client in clients:
            await client.close()
    times = [t for run, _ in runs for t in run]
    return elapsed, times, sum(refused for _, refused in runs)


# --- the raw baseline ------------------------------------------------------------------


async def _raw_setup(conn: asyncpg.Connection, streams: int, pairs: int, users: int) -> None:
    keys = [
        (user, asset, kind)
        for stream in range(streams)
        for user in _users(stream, users)
        for asset in ("BTC", "USDT")
        for kind in ("available", "held")
    ] + [("@system", asset, "fee") for asset in ("BTC", "USDT")]
    await conn.executemany(
        "INSERT INTO accounts (user_id, asset, kind) VALUES ($1, $2, $3)", sorted(keys)
    )
    # Balances and holds as after the reserve phase (what settles consume).
    await conn.execute("UPDATE accounts SET balance = 1000000 WHERE user_id <> '@system'")
    rows = []
    for stream in range(streams):
        for buy, buyer, sell, seller in _orders(stream, pairs, users):
            rows.append((buy, buyer, "USDT", NOTIONAL))
            rows.append((sell, seller, "BTC", QTY))
    await conn.copy_records_to_table(
        "holds", records=rows, columns=["order_id", "user_id", "asset", "reserved"]
    )


async def _raw_batch(
    conn: asyncpg.Connection, ids: dict[tuple[str, str, str], int], trades: list[SettleTradeRequest]
) -> None:
    """The rows of ``len(trades)`` settles in one transaction, set-based, unchecked."""
    async with conn.transaction():
        keys = [t.trade_id for t in trades]
        await conn.execute(
            "INSERT INTO operations (op, key, request_hash)"
            " SELECT 'settle', k, 'x' FROM unnest($1::text[]) AS k",
            keys,
        )
        entries = await conn.fetch(
            "INSERT INTO journal_entries (op, key, ref)"
            " SELECT 'settle', k, k FROM unnest($1::text[]) AS k RETURNING entry_id",
            keys,
        )
        entry_ids, accounts, assets, amounts = [], [], [], []
        deltas: dict[int, Decimal] = {}
        for entry, t in zip(entries, trades, strict=True):
            legs = [
                ((t.buyer_user_id, "USDT", "held"), -NOTIONAL),
                ((t.seller_user_id, "USDT", "available"), NOTIONAL - SELLER_FEE),
                (("@system", "USDT", "fee"), SELLER_FEE),
                ((t.seller_user_id, "BTC", "held"), -QTY),
                ((t.buyer_user_id, "BTC", "available"), QTY - BUYER_FEE),
                (("@system", "BTC", "fee"), BUYER_FEE),
            ]
            for key, amount in legs:
                entry_ids.append(entry["entry_id"])
                accounts.append(ids[key])
                assets.append(key[1])
                amounts.append(amount)
                if key[0] != "@system":
                    deltas[ids[key]] = deltas.get(ids[key], Decimal(0)) + amount
        await conn.execute(
            "INSERT INTO postings (entry_id, account_id, asset, amount)"
            " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::numeric[])",
            entry_ids,
            accounts,
            assets,
            amounts,
        )
        await conn.execute(
            "UPDATE accounts AS a SET balance = a.balance + d.amount"
            " FROM unnest($1::bigint[], $2::numeric[]) AS d(account_id, amount)"
            " WHERE a.account_id = d.account_id",
            list(deltas),
            list(deltas.values()),
        )
        orders = [o for t in trades for o in (t.buyer_order_id, t.seller_order_id)]
        settled = [a for _ in trades for a in (NOTIONAL, QTY)]
        await conn.execute(
            "UPDATE holds AS h SET settled = h.settled + d.amount, updated_at = now()"
            " FROM unnest($1::text[], $2::numeric[]) AS d(order_id, amount)"
            " WHERE h.order_id = d.order_id",
            orders,
            settled,
        )
        await conn.execute(
            "UPDATE operations AS o SET response = '{}'::jsonb, entry_id = d.entry_id"
            " FROM unnest($1::text[], $2::bigint[]) AS d(key, entry_id)"
            " WHERE o.op = 'settle' AND o.key = d.key",
            keys,
            [e["entry_id"] for e in entries],
        )


async def _raw_stream(pool: asyncpg.Pool, trades: list[SettleTradeRequest], batch: int) -> None:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT account_id, user_id, asset, kind FROM accounts")
        ids = {(r["user_id"], r["asset"], r["kind"]): r["account_id"] for r in rows}
        for start in range(0, len(trades), batch):
            await _raw_batch(conn, ids, trades[start : start + batch])


async def _raw(dsn: str, schema: str, args: argparse.Namespace) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, schema)
        await conn.execute(f'SET search_path TO "{schema}"')
        await _raw_setup(conn, args.streams, args.pairs, args.users)
    finally:
        await conn.close()
    pool = await create_pool(dsn, schema, min_size=args.streams, max_size=args.streams)
    try:
        per_stream = [_settles(s, args.pairs, args.users) for s in range(args.streams)]
        began = time.perf_counter()
        await asyncio.gather(*(_raw_stream(pool, t, args.settle_batch) for t in per_stream))
        return time.perf_counter() - began
    finally:
        await pool.close()


# --- the run -----------------------------------------------------------------------------


def _start_service(schema: str, port: int, log_path: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TE_LOG_LEVEL": "WARNING"}
    argv = [sys.executable, "-m", "trade_engine", "wallet", "serve", "--port", str(port)]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([*argv, "--schema", schema], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the wallet service exited; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise TimeoutError("the wallet service did not become ready")


def _py_spy(pid: int, out: str) -> subprocess.Popen[bytes]:
    """py-spy sampling the service for both phases (``-f raw``: folded stacks)."""
    py_spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    argv = [py_spy, "record", "-f", "raw", "-r", "200", "-o", out, "--pid", str(pid)]
    return subprocess.Popen([*argv, "--nonblocking"], stdout=subprocess.DEVNULL)


async def _service(settings: Settings, schema: str, args: argparse.Namespace) -> dict[str, Any]:
    dsn = settings.postgres.dsn()
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, schema)
    finally:
        await conn.close()
    pool = await create_pool(dsn, schema, min_size=1, max_size=4)
    try:
        _log(f"funding {args.streams * args.users} users")
        await _fund(Ledger(pool), args.streams, args.users, args.pairs)
    finally:
        await pool.close()
    port = _free_port()
    proc = _start_service(schema, port, args.service_log)
    url, token = f"http://127.0.0.1:{port}", settings.wallet.service_token
    meter = _CpuMeter(proc.pid, dsn, settings.postgres.port)
    profiler = _py_spy(proc.pid, args.py_spy) if args.py_spy else None
    try:
        reserves = [_reserves(s, args.pairs, args.users) for s in range(args.streams)]
        settles = [_settles(s, args.pairs, args.users) for s in range(args.streams)]
        _log(f"reserving {sum(map(len, reserves))} orders")
        await meter.start()
        r_elapsed, r_times, r_refused = await _service_phase(
            url, token, "reserve_many", reserves, args.reserve_batch
        )
        r_cpu, r_pg_cpu = await meter.stop()
        _log(f"settling {sum(map(len, settles))} trades")
        await meter.start()
        s_elapsed, s_times, s_refused = await _service_phase(
            url, token, "settle_many", settles, args.settle_batch
        )
        s_cpu, s_pg_cpu = await meter.stop()
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            profiler.wait(30)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    if r_refused or s_refused:
        raise RuntimeError(f"the wallet refused {r_refused} reserves and {s_refused} settles")
    orders = sum(map(len, reserves))
    trades = sum(map(len, settles))
    return {
        "reserved_orders_per_s": round(orders / r_elapsed),
        "reserve_batch_p99_ms": round(_percentile(r_times, 0.99) * 1000, 2),
        "settled_trades_per_s": round(trades / s_elapsed),
        "settle_batch_p50_ms": round(_percentile(s_times, 0.50) * 1000, 2),
        "settle_batch_p99_ms": round(_percentile(s_times, 0.99) * 1000, 2),
        "wallet_cpu_us_per_reserve": round(r_cpu / orders, 1),
        "wallet_cpu_us_per_settle": round(s_cpu / trades, 1),
        "pg_cpu_us_per_reserve": round(r_pg_cpu / orders, 1),
        "pg_cpu_us_per_settle": round(s_pg_cpu / trades, 1),
        "orders": orders,
        "trades": trades,
    }


async def _drop(dsn: str, schemas: list[str]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for schema in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings()
    dsn = settings.postgres.dsn()
    tag = uuid.uuid4().hex[:8]
    service_schema, raw_schema = f"wallet_bench_{tag}", f"wallet_bench_raw_{tag}"
    try:
        figures = await _service(settings, service_schema, args)
        _log("raw baseline")
        raw_s = await _raw(dsn, raw_schema, args)
    finally:
        await _drop(dsn, [service_schema, raw_schema])
    trades = figures["trades"]
    figures["raw_settle_rows_per_s"] = round(trades / raw_s)
    figures["settle_ratio"] = round(figures["settled_trades_per_s"] * raw_s / trades, 3)
    figures.update(
        streams=args.streams,
        users_per_stream=args.users,
        reserve_batch=args.reserve_batch,
        settle_batch=args.settle_batch,
    )
    return figures


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5000, help="trades per stream")
    parser.add_argument("--streams", type=int, default=2, help="concurrent clients")
    parser.add_argument("--users", type=int, default=50, help="funded users per stream")
    parser.add_argument("--reserve-batch", type=int, default=500)
    parser.add_argument("--settle-batch", type=int, default=100)
    parser.add_argument("--py-spy", metavar="OUT", help="profile the service into OUT (raw)")
    parser.add_argument("--service-log", default=os.devnull, help="the service's output")
    return parser.parse_args()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(_args()))), flush=True)
