"""Benchmark of the matching core (trade_engine.tables.matching), pure and compiled.

Runs a seeded mixed workload (passive and crossing limits, market orders,
cancels, amends) over a book pre-loaded with resting orders, timing every
operation with perf_counter_ns, then restores a snapshot holding 1M resting
orders. Baselines measured in the same run: the naive reference book on a
smaller workload, and the PyPI package ``fastlob`` on the same workload if it
is installed. GC policy: after setup ``gc.collect(); gc.freeze()`` and the
timed loop runs with ``gc.disable()`` (the book breaks its own reference
cycles on removal, so nothing accumulates for the cycle collector).

The same timed workload then runs in a second process on the mypyc-compiled copy
of the core (``compiled_core.py``; skipped with ``--no-compiled``), whose final
state hash must equal the pure run's: the pure source is the reference.

    python -m ops.benchmarks.bench_matching [--ops N] [--seed S] [--resting R]

The last line printed is one JSON object of figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# The compiled run puts the mypyc build first; otherwise the repository's pure source.
sys.path.insert(0, os.environ.get("TE_BENCH_CORE_PATH") or str(Path(__file__).resolve().parents[2]))

from trade_engine.tables.matching import (
    Amend,
    Cancel,
    Command,
    MatchingEngine,
    OrderType,
    Place,
    Side,
    SymbolRules,
    TimeInForce,
)
from trade_engine.tables.matching.reference import NaiveBook

CORE_PATH_ENV = "TE_BENCH_CORE_PATH"
MID = 100_000  # ticks: 1000.00 at tick 0.01
RULES = SymbolRules(
    "BTC/USDT", "0.01", "0.001", maker_fee_ppm=1_000, taker_fee_ppm=2_000, dedup_window=100_000
)


def build_workload(ops: int, resting: int, seed: int) -> tuple[list[Command], list[Command]]:
    """(setup commands, measured commands); deterministic for a seed."""
    rng = random.Random(seed)
    setup: list[Command] = []
    for i in range(resting):
        side = Side.BUY if i % 2 else Side.SELL
        off = 1 + int(rng.expovariate(1 / 150)) % 2_000
        price = MID - off if side is Side.BUY else MID + off
        setup.append(
            Place(f"s{i}", f"u{i % 1000}", side, OrderType.LIMIT, rng.randint(1, 100), price)
        )
    live: list[tuple[str, str, int]] = [
        (c.order_id, c.user_id, c.quantity or 0) for c in setup if isinstance(c, Place)
    ]
    cmds: list[Command] = []
    for i in range(ops):
        r = rng.random()
        user = f"u{rng.randrange(1000)}"
        oid = f"o{i}"
        buy = rng.random() < 0.5
        side = Side.BUY if buy else Side.SELL
        if r < 0.55 or not live:
            off = 1 + int(rng.expovariate(1 / 150)) % 2_000
            qty = rng.randint(1, 100)
            cmds.append(
                Place(oid, user, side, OrderType.LIMIT, qty, MID - off if buy else MID + off)
            )
            live.append((oid, user, qty))
        elif r < 0.65:
            off = rng.randint(0, 5)
            tif = TimeInForce.IOC if rng.random() < 0.5 else TimeInForce.GTC
            qty = rng.randint(1, 50)
            price = MID + off if buy else MID - off
            cmds.append(Place(oid, user, side, OrderType.LIMIT, qty, price, tif=tif))
            live.append((oid, user, qty))
        elif r < 0.70:
            qty = rng.randint(1, 50)
            if buy:
                cmds.append(
                    Place(oid, user, side, OrderType.MARKET, funds=qty * MID, tif=TimeInForce.IOC)
                )
            else:
                cmds.append(Place(oid, user, side, OrderType.MARKET, qty, tif=TimeInForce.IOC))
        elif r < 0.88:
            j = rng.randrange(max(0, len(live) - 20_000), len(live))
            target, owner, _ = live[j]
            cmds.append(Cancel(owner, target))
        else:
            j = rng.randrange(max(0, len(live) - 20_000), len(live))
            target, owner, qty = live[j]
            if rng.random() < 0.7:
                cmds.append(Amend(target, owner, quantity=max(1, qty // 2)))
            else:
                off = 1 + int(rng.expovariate(1 / 150)) % 2_000
                cmds.append(
                    Amend(target, owner, price=MID - off if rng.random() < 0.5 else MID + off)
                )
    return setup, cmds


def percentile(sorted_ns: Sequence[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1_000


def run_timed(setup: list[Command], cmds: list[Command]) -> dict[str, Any]:
    engine = MatchingEngine(RULES)
    for c in setup:
        engine.apply(c)
    records = 0
    kinds: dict[str, int] = {}
    gc.collect()
    gc.freeze()
    gc.disable()
    apply = engine.apply
    clock = time.perf_counter_ns
    lat = [0] * len(cmds)
    try:
        start = clock()
        for i, c in enumerate(cmds):
            t0 = clock()
            out = apply(c)
            lat[i] = clock() - t0
            records += len(out)
        total = clock() - start
    finally:
        gc.enable()
        gc.unfreeze()
    for c in cmds[:50_000]:
        kinds[type(c).__name__] = kinds.get(type(c).__name__, 0) + 1
    engine.validate()
    lat.sort()
    return {
        "ops_per_s": round(len(cmds) / (total / 1e9)),
        "p50_us": round(percentile(lat, 0.50), 2),
        "p99_us": round(percentile(lat, 0.99), 2),
        "p999_us": round(percentile(lat, 0.999), 2),
        "mean_us": round(statistics.fmean(lat) / 1_000, 2),
        "max_pause_ms": round(lat[-1] / 1e6, 3),
        "records": records,
        "resting_after": len(engine.orders),
        "levels_after": len(engine.depth(Side.BUY, 10**9)) + len(engine.depth(Side.SELL, 10**9)),
        "state_hash": engine.state_hash(),
    }


def run_untimed(
    make: Callable[[], MatchingEngine], setup: list[Command], cmds: list[Command]
) -> float:
    engine = make()
    for c in setup:
        engine.apply(c)
    gc.collect()
    gc.freeze()
    gc.disable()
    apply = engine.apply
    try:
        start = time.perf_counter()
        for c in cmds:
            apply(c)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
        gc.unfreeze()
    return len(cmds) / elapsed


def run_fastlob(setup: list[Command], cmds: list[Command]) -> tuple[float, int] | None:
    """The same workload on PyPI's ``fastlob`` (Decimal prices), if installed."""
    try:
        import fastlob  # noqa: PLC0415 - optional comparison package
    except ImportError:
        return None
    import logging  # noqa: PLC0415

    logging.getLogger().setLevel(logging.ERROR)
    book = fastlob.Orderbook("bench")
    book.start()
    ids: dict[str, str] = {}
    errors = 0
    ask, bid, gtc, fak = (
        fastlob.OrderSide.ASK,
        fastlob.OrderSide.BID,
        fastlob.OrderType.GTC,
        fastlob.OrderType.FAKE,
    )

    def place(c: Place) -> None:
        side = bid if c.side is Side.BUY else ask
        if c.order_type is OrderType.MARKET:
            price = (MID + 2_000) if c.side is Side.BUY else (MID - 2_000)
            qty = (c.funds or 0) // MID if c.quantity is None else c.quantity
            otype = fak
        else:
            price, qty = c.price or 0, c.quantity or 0
            otype = fak if c.tif is TimeInForce.IOC else gtc
        if qty <= 0:
            return
        res = book.process(fastlob.OrderParams(side, price / 100, qty / 100, otype))
        oid = getattr(res, "orderid", None)
        if callable(oid):
            oid = oid()
        if isinstance(oid, str):
            ids[c.order_id] = oid

    try:
        for c in setup:
            if isinstance(c, Place):
                place(c)
        start = time.perf_counter()
        for c in cmds:
            try:
                if isinstance(c, Place):
                    place(c)
                elif isinstance(c, Cancel) and c.order_id in ids:
                    book.cancel(ids[c.order_id])
                elif isinstance(c, Amend) and c.order_id in ids and c.quantity is not None:
                    book.update(ids[c.order_id], c.quantity / 100)
            except Exception:
                errors += 1
        return len(cmds) / (time.perf_counter() - start), errors
    finally:
        book.stop()


def restore_million(n: int) -> dict[str, float]:
    """Build a book of ``n`` resting orders, snapshot it, time the restore."""
    engine = MatchingEngine(RULES)
    for i in range(n):
        buy = i % 2 == 0
        off = 1 + (i // 2) % 5_000
        price = MID - off if buy else MID + off
        side = Side.BUY if buy else Side.SELL
        engine.apply(Place(f"r{i}", f"u{i % 1000}", side, OrderType.LIMIT, 1 + i % 100, price))
    t0 = time.perf_counter()
    snap = engine.snapshot()
    t1 = time.perf_counter()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        t2 = time.perf_counter()
        restored = MatchingEngine.restore(snap)
        t3 = time.perf_counter()
    finally:
        gc.enable()
        gc.unfreeze()
    t4 = time.perf_counter()
    same = restored.state_hash() == engine.state_hash()
    t5 = time.perf_counter()
    if not same or len(restored.orders) != n:
        raise SystemExit("restore did not reproduce the state hash")
    return {
        "restore_1m_s": round(t3 - t2, 3),
        "snapshot_1m_s": round(t1 - t0, 3),
        "hash_twice_1m_s": round(t5 - t4, 3),
    }


def stamp(since: float) -> str:
    return f"{time.perf_counter() - since:.1f} s"


def run_compiled(args: argparse.Namespace, pure_hash: str) -> dict[str, Any]:
    """The timed workload on the mypyc build, in a child process; same final state or fail."""
    # Not at the top: the compiled run's child has only the core on its path.
    from ops.benchmarks.compiled_core import build  # noqa: PLC0415

    t = time.perf_counter()
    path = build()
    print(f"compiled core: {path} ({stamp(t)})")
    t = time.perf_counter()
    child = subprocess.run(
        [
            sys.executable,
            __file__,
            "--timed-only",
            f"--ops={args.ops}",
            f"--seed={args.seed}",
            f"--resting={args.resting}",
        ],
        env={**os.environ, CORE_PATH_ENV: str(path)},
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    if not str(result["core_module"]).endswith(".so"):
        raise RuntimeError(f"the compiled run imported {result['core_module']}")
    if result["state_hash"] != pure_hash:
        raise RuntimeError("the compiled core ended in a different state than the pure one")
    print(f"compiled timed loop: {result} ({stamp(t)})")
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--ops", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--resting", type=int, default=20_000)
    ap.add_argument("--restore-orders", type=int, default=1_000_000)
    ap.add_argument("--baseline-ops", type=int, default=5_000)
    ap.add_argument("--fastlob-ops", type=int, default=200_000)
    ap.add_argument("--no-compiled", action="store_true", help="skip the mypyc-compiled run")
    ap.add_argument("--timed-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    setup, cmds = build_workload(args.ops, args.resting, args.seed)
    if args.timed_only:  # the compiled run's child process
        timed = run_timed(setup, cmds)
        timed["untimed_ops_per_s"] = round(run_untimed(lambda: MatchingEngine(RULES), setup, cmds))
        timed["core_module"] = sys.modules[MatchingEngine.__module__].__file__
        print(json.dumps(timed, sort_keys=True))
        return
    print(f"workload: {len(setup)} resting, {len(cmds)} ops, seed {args.seed}")
    t = time.perf_counter()
    timed = run_timed(setup, cmds)
    print(f"timed loop: {timed} ({stamp(t)})")
    t = time.perf_counter()
    untimed = run_untimed(lambda: MatchingEngine(RULES), setup, cmds)
    print(f"untimed loop: {untimed:,.0f} ops/s ({stamp(t)})")
    t = time.perf_counter()

    small_setup, small_cmds = build_workload(args.baseline_ops, 1_000, args.seed)
    naive = run_untimed(lambda: MatchingEngine(RULES, book=NaiveBook()), small_setup, small_cmds)
    fast_small = run_untimed(lambda: MatchingEngine(RULES), small_setup, small_cmds)
    print(f"small workload: fast {fast_small:,.0f}/s, naive {naive:,.0f}/s ({stamp(t)})")

    n_fl = min(args.fastlob_ops, len(cmds))
    t = time.perf_counter()
    fl_run = run_fastlob(setup, cmds[:n_fl])
    fl, fl_errors = (None, 0) if fl_run is None else fl_run
    fast_fl = run_untimed(lambda: MatchingEngine(RULES), setup, cmds[:n_fl])
    print(f"fastlob on first {n_fl} ops: {fl} ops/s, {fl_errors} errors ({stamp(t)})")

    t = time.perf_counter()
    restore = restore_million(args.restore_orders)
    print(f"restore of {args.restore_orders} resting orders: {restore} ({stamp(t)})")

    compiled = None if args.no_compiled else run_compiled(args, timed["state_hash"])

    figures = {
        "ops": len(cmds),
        "resting_start": len(setup),
        "seed": args.seed,
        "ops_per_s": timed["ops_per_s"],
        "ops_per_s_untimed": round(untimed),
        "p50_us": timed["p50_us"],
        "p99_us": timed["p99_us"],
        "p999_us": timed["p999_us"],
        "max_pause_ms": timed["max_pause_ms"],
        **restore,
        "baseline_naive_ops_per_s": round(naive),
        "fast_same_small_workload_ops_per_s": round(fast_small),
        "ratio_vs_naive": round(fast_small / naive, 1),
        "fastlob_ops_per_s": None if fl is None else round(fl),
        "fast_same_fastlob_workload_ops_per_s": round(fast_fl),
        "fastlob_errors": fl_errors,
        "ratio_vs_fastlob": None if fl is None else round(fast_fl / fl, 1),
        "python": sys.version.split()[0],
        "state_hash": timed["state_hash"],
    }
    if compiled is not None:
        figures |= {
            "compiled_ops_per_s": compiled["ops_per_s"],
            "compiled_ops_per_s_untimed": compiled["untimed_ops_per_s"],
            "compiled_p50_us": compiled["p50_us"],
            "compiled_p99_us": compiled["p99_us"],
            "compiled_max_pause_ms": compiled["max_pause_ms"],
            "ratio_compiled_vs_pure": round(compiled["ops_per_s"] / timed["ops_per_s"], 2),
        }
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
