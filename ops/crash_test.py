"""Crash test: SIGKILL matcher workers during a seeded run; trades must equal an offline replay.

Scenarios (each on fresh topics and state):

- ``kill``:        one worker, killed with SIGKILL at random points ``--kills`` times
                   and restarted each time;
- ``two-workers``: two workers share the partitions; one is killed and stays dead,
                   so its partitions move to the survivor;
- ``wipe-state``:  the worker is killed, its local RocksDB folder deleted, and it is
                   restarted (state must come back from the changelog).

The flow carries bursts of commands that are only rejected (cancels of unknown
orders, re-sent duplicates of earlier places); after it, each scenario commits
a batch of only such records, kills and restarts its worker, and sends another,
so a restart right after a rejects-only batch is always exercised.

After each, every record of ``te.executions`` and ``te.trades`` read with
read_committed is compared byte for byte with an uninterrupted offline replay
of the same ``te.commands.accepted`` log, and so is the changelog's final state
(every key's last value). The last stdout line is one JSON object: kills,
orders, trades, lost, duplicated, seq_gaps, hash_equal, executions_compared,
changelog_equal (and per-scenario details).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from trade_engine.agents.matcher.replay import compare, read_partition
from trade_engine.agents.matcher.worker import MatcherTopics
from trade_engine.config import load_settings
from trade_engine.connectors.loadgen import generate
from trade_engine.streams import clients
from trade_engine.streams.codec import encode, new_headers
from trade_engine.streams.commands import CancelOrder, Command, PlaceOrder
from trade_engine.streams.execution_records import decode_execution, decode_trade
from trade_engine.streams.topics import create_topics


def _log(message: str) -> None:
    print(f"[crash-test] {message}", file=sys.stderr, flush=True)


class Scenario:
    def __init__(self, name: str, orders: int, symbols: int, partitions: int, seed: int) -> None:
        self.name = name
        self.seed = seed
        self.orders = orders
        self.prefix = f"crash-{name}-{uuid.uuid4().hex[:8]}."
        self.state_dir = Path(tempfile.mkdtemp(prefix="te-crash-"))
        self.env = {
            **os.environ,
            "TE_TOPICS__PREFIX": self.prefix,
            "TE_TOPICS__PARTITIONS": str(partitions),
            "TE_STATE_DIR": str(self.state_dir),
            "TE_LOG_LEVEL": "WARNING",
        }
        self.settings = load_settings(
            topics={"prefix": self.prefix, "partitions": partitions},
            state_dir=self.state_dir,
        )
        self.symbols = [s.symbol for s in self.settings.market.symbols][:symbols]
        self.topics = MatcherTopics.from_settings(self.settings)
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.kills = 0
        self.rejections = Rejections(self.symbols, seed)

    def publish(self) -> None:
        create_topics(self.settings)
        specs = [s for s in self.settings.market.symbols if s.symbol in self.symbols]
        self._send(self.rejections.interleave(generate(self.orders, self.seed, specs)))
        _log(f"{self.name}: published {self.orders} commands to {self.topics.input}")

    def _send(self, commands: Iterable[Command]) -> None:
        producer = clients.producer(self.settings, **{"linger.ms": 20})
        for command in commands:
            producer.produce(
                self.topics.input, key=command.symbol, value=encode(command), headers=new_headers()
            )
            producer.poll(0)
        producer.flush(60)

    def rejections_across_a_restart(self) -> None:
        """Once the flow is done: a batch of only rejections, committed on its own; a kill
        and a restart; another such batch. The second batch's seq must follow the first's
        (a rejects-only batch used to leave the symbol's seq unsaved)."""
        self._send(self.rejections.burst())
        self.wait_until_done()
        for worker_id in list(self.workers):
            self.kill(worker_id)
        self.start("w1")
        self._send(self.rejections.burst())
        self.wait_until_done()
        _log(f"{self.name}: rejections-only batches before and after a restart")

    def start(self, worker_id: str, *extra: str) -> None:
        self.workers[worker_id] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trade_engine",
                "matcher",
                "run",
                "--worker-id",
                worker_id,
                "--metrics-port",
                "0",
                *extra,
            ],
            env=self.env,
        )

    def kill(self, worker_id: str) -> None:
        proc = self.workers.pop(worker_id)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.kills += 1

    def stop_all(self) -> None:
        for proc in self.workers.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.workers.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.workers.clear()

    def progress(self) -> tuple[int, int]:
        """(committed input offsets, end offsets) summed over partitions."""
        consumer = Consumer(
            {**self.settings.kafka.librdkafka(), "group.id": f"{self.prefix}matcher"}
        )
        try:
            tps = [
                TopicPartition(self.topics.input, p) for p in range(self.settings.topics.partitions)
            ]
            committed = consumer.committed(tps, timeout=30)
            done = sum(max(tp.offset, 0) for tp in committed)
            end = sum(consumer.get_watermark_offsets(tp, timeout=30)[1] for tp in tps)
            return done, end
        finally:
            consumer.close()

    def wait_for_progress(self, timeout_s: float = 120) -> None:
        """Until the matcher has committed its first batch."""
        deadline = time.monotonic() + timeout_s
        while self.progress()[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)

    def wait_until_done(self, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done, end = self.progress()
            if done >= end:
                return
            time.sleep(1)
        raise TimeoutError(f"{self.name}: the matcher did not finish within {timeout_s}s")

    def worker_state(self, worker_id: str) -> Path:
        return self.state_dir / "matcher" / f"{self.prefix}matcher" / worker_id

    def verdict(self, settle_s: float = 30.0) -> dict[str, Any]:
        # A killed worker's open transaction holds back read_committed readers
        # until the broker aborts it (transaction.timeout.ms = 10 s): compare
        # again until the records agree or the wait is over.
        deadline = time.monotonic() + settle_s
        result = compare(self.settings, self.topics)
        while not result.ok and time.monotonic() < deadline:
            time.sleep(2)
            result = compare(self.settings, self.topics)
        expected: set[str] = set()
        actual: list[str] = []
        for partition in result.expected_trades:
            expected.update(decode_trade(v).trade_id for v in result.expected_trades[partition])
            actual.extend(decode_trade(v).trade_id for v in result.actual_trades[partition])
        return {
            "scenario": self.name,
            "kills": self.kills,
            "orders": self.orders,
            "trades": len(set(actual)),
            "lost": len(expected - set(actual)),
            "duplicated": len(actual) - len(set(actual)),
            "unexpected": len(set(actual) - expected),
            "seq_gaps": self.seq_gaps(),
            "hash_equal": all(p.hash_equal for p in result.partitions),
            # Every te.executions record was compared byte for byte with the replay's
            # (first_difference names the first that is not), and the changelog's
            # final entries likewise.
            "executions_compared": sum(p.executions for p in result.partitions),
            "changelog_equal": all(p.changelog_equal for p in result.partitions),
            "changelog_entries": sum(p.changelog_entries for p in result.partitions),
            "first_difference": next(
                (p.first_difference for p in result.partitions if p.first_difference), None
            ),
        }

    def seq_gaps(self) -> int:
        """Gaps or repeats in each symbol's execution sequence as read_committed sees it."""
        seqs: dict[str, list[int]] = defaultdict(list)
        for partition in range(self.settings.topics.partitions):
            for record in read_partition(self.settings, self.topics.executions, partition):
                execution = decode_execution(record.value)
                seqs[execution.symbol].append(execution.seq)
        return sum(
            1 for values in seqs.values() for index, seq in enumerate(values) if seq != index + 1
        )

    def cleanup(self) -> None:
        shutil.rmtree(self.state_dir, ignore_errors=True)


class Rejections:
    """Bursts of commands that are only rejected: cancels of unknown orders and re-sent
    copies of earlier places (duplicates: what the risk stage re-sends after a crash).
    Many matcher batches then hold nothing but REJECTED records for a symbol."""

    def __init__(self, symbols: list[str], seed: int) -> None:
        self.symbols = symbols
        self.rng = random.Random(seed ^ 0x5EED)
        self.places: list[PlaceOrder] = []

    def interleave(self, commands: Iterable[Command], every: int = 997) -> Iterator[Command]:
        """``commands`` with a burst after every ``every`` of them."""
        for index, command in enumerate(commands, 1):
            if isinstance(command, PlaceOrder):
                self.places.append(command)
            yield command
            if index % every == 0:
                yield from self.burst()

    def burst(self) -> Iterator[Command]:
        rng = self.rng
        for symbol in self.symbols:
            mine = [p for p in self.places[-200:] if p.symbol == symbol]
            for n in range(rng.randint(5, 40)):
                if mine and n % 2:
                    yield rng.choice(mine)  # an answered id: MATCHING_DUPLICATE_ORDER_ID
                else:
                    unknown = f"unknown-{rng.getrandbits(48):x}"
                    yield CancelOrder(symbol=symbol, user_id="u1", order_id=unknown)


def run_kill(sc: Scenario, kills: int, rng: random.Random) -> None:
    sc.start("w1")
    while sc.kills < kills:
        # Kill only while the worker is processing: wait for it to make progress
        # after its (re)start, then strike at a random moment.
        before, end = sc.progress()
        deadline = time.monotonic() + 120
        done = before
        while done <= before and done < end and time.monotonic() < deadline:
            time.sleep(0.1)
            done, end = sc.progress()
        if done >= end:
            _log("kill: input exhausted before all kills; stopping early")
            break
        time.sleep(rng.uniform(0.0, 0.6))
        sc.kill("w1")
        _log(f"kill: SIGKILL #{sc.kills} at {done}/{end}")
        sc.start("w1")
    sc.wait_until_done()


def run_two_workers(sc: Scenario, rng: random.Random) -> None:
    # w1 is a warm standby for w2's partitions: it takes them over from its own
    # followed stores rather than from the whole changelog.
    sc.start("w1", "--standby")
    sc.start("w2")
    sc.wait_for_progress()
    time.sleep(rng.uniform(0.0, 1.0))
    done, end = sc.progress()
    sc.kill("w2")
    _log(f"two-workers: SIGKILL w2 at {done}/{end}; w1 takes its partitions")
    sc.wait_until_done()


def run_wipe_state(sc: Scenario, rng: random.Random) -> None:
    sc.start("w1")
    sc.wait_for_progress()
    time.sleep(rng.uniform(0.0, 1.0))
    sc.kill("w1")
    shutil.rmtree(sc.worker_state("w1"), ignore_errors=True)
    _log("wipe-state: killed w1 and deleted its RocksDB folder")
    sc.start("w1")
    sc.wait_until_done()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=200_000)
    parser.add_argument("--symbols", type=int, default=8)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--scenario",
        action="append",
        choices=["kill", "two-workers", "wipe-state"],
        help="default: all three",
    )
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    results = []
    for name in args.scenario or ["kill", "two-workers", "wipe-state"]:
        sc = Scenario(name, args.orders, args.symbols, args.partitions, args.seed)
        try:
            sc.publish()
            started = time.monotonic()
            if name == "kill":
                run_kill(sc, args.kills, rng)
            elif name == "two-workers":
                run_two_workers(sc, rng)
            else:
                run_wipe_state(sc, rng)
            sc.rejections_across_a_restart()
            sc.stop_all()
            verdict = sc.verdict()
            verdict["seconds"] = round(time.monotonic() - started, 1)
            _log(json.dumps(verdict))
            results.append(verdict)
        finally:
            sc.stop_all()
            sc.cleanup()
    summary = {
        "kills": sum(r["kills"] for r in results),
        "orders": sum(r["orders"] for r in results),
        "trades": sum(r["trades"] for r in results),
        "lost": sum(r["lost"] for r in results),
        "duplicated": sum(r["duplicated"] for r in results),
        "seq_gaps": sum(r["seq_gaps"] for r in results),
        "hash_equal": all(r["hash_equal"] for r in results),
        "executions_compared": sum(r["executions_compared"] for r in results),
        "changelog_equal": all(r["changelog_equal"] for r in results),
        "scenarios": results,
    }
    print(json.dumps(summary))
    ok = summary["lost"] == summary["duplicated"] == summary["seq_gaps"] == 0
    same_records = all(r["first_difference"] is None for r in results)
    same_state = summary["hash_equal"] and summary["changelog_equal"]
    return 0 if ok and same_state and same_records else 1


if __name__ == "__main__":
    raise SystemExit(main())
