"""``make chaos``: the money pipeline under load on the three-node cluster, one fault per scenario.

Each scenario (``ops.chaos.scenarios``) runs on fresh topics and schemas: the stages
start, the feeder publishes seeded commands at ``--rate``, the fault is injected
mid-stream with proof that it landed and then healed; the load finishes, every group
drains, and independent readers judge (``ops.chaos.checks``). One scenario at a time.

Progress goes to stderr; the last stdout line is one JSON object: ``scenarios``,
``faults_injected``, ``lost``, ``duplicated``, ``negative_balances``, ``stuck_holds``,
``reconcile_clean``, ``max_recovery_s`` and each scenario's details. The exit status
is 1 when any check fails or a fault cannot be shown to have landed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg
from confluent_kafka.admin import AdminClient

from ops.chaos.checks import verdict
from ops.chaos.cluster import REPO, KafkaCluster
from ops.chaos.feeder import Feeder
from ops.chaos.pipeline import MQ_PROXY, MQ_PROXY_PORT, PG_PROXY, PG_PROXY_PORT, Pipeline, log
from ops.chaos.scenarios import SCENARIOS, SHORT, Run
from ops.chaos.toxiproxy import ToxiproxyClient, ToxiproxyError
from trade_engine.config import load_settings


def landed(name: str, r: Run) -> bool:
    """The scenario's own proof that the fault hit what it aimed at."""
    e = r.evidence
    flowed_before = e.get("before", {}).get("trades", 0) > 0
    # Outputs after the heal prove recovery only if there was input left to answer.
    flowed_after = e.get("flowed_after", False) or e.get("at_heal", {}).get("fed", 0) >= len(
        r.feeder.items
    )
    proof: dict[str, Callable[[], bool]] = {
        "leader-kill": lambda: e["node_down"] and e["new_leader"] != e["victim"],
        "coordinator-kill": lambda: e["node_down"] and e["new_coordinator"] != e["victim"],
        "rolling-restart": lambda: all(s["was_down"] for s in e["steps"]),
        "postgres-outage": lambda: e["proxy_disabled"] and e["lag_at_heal"] > 0,
        "rabbitmq-outage": lambda: e["proxy_disabled"] and e["lag_at_heal"] > 0,
        "wallet-kill": lambda: e["exit_code"] == -9 and e["pid_gone"],
        "matcher-settlement-kill": lambda: e["exit_codes"] == [-9, -9] and all(e["pids_gone"]),
        "kafka-latency": lambda: (
            e["metadata_round_trip_s"][0] >= 0.2 and e["executions_during"] > 0
        ),
        "matcher-partition": lambda: e["standby_took_over"] and e["zombie_alive_during"],
        "disk-full": lambda: disk_full_landed(e),
    }
    return bool(flowed_before and flowed_after and proof[name]())


def disk_full_landed(e: dict[str, Any]) -> bool:
    """Both nodes halted on a full disk (their own log says so); with one down the gateway
    still accepted, with two it refused and said why, and it accepted again after."""
    halted = all(
        any("No space left on device" in line for line in e[n]["log"]) for n in ("first", "second")
    )
    kafka_state = (e["ready_refusing"]["checks"] or {}).get("kafka", "")
    return bool(
        halted
        and e["placed_one_full"]["status"] == 201
        and e["executions_one_full"] > 0
        and e["refused"]["status"] == 503
        and e["refused"]["code"] == "KAFKA_UNAVAILABLE"
        and e["ready_refusing"]["status"] == 503
        and "writes to Kafka have failed" in kafka_state
        and e["resumed"]["status"] == 201
    )


def run_scenario(
    name: str, args: argparse.Namespace, cluster: KafkaCluster, toxi: ToxiproxyClient
) -> dict[str, Any]:
    fault, proxied = SCENARIOS[name]
    p = Pipeline(name, cluster, proxied=proxied)
    started = time.monotonic()
    result: dict[str, Any] = {"name": name, "prefix": p.prefix}
    try:
        log(f"{name}: starting the pipeline ({p.prefix}, wallet schema {p.schema})")
        p.start()
        ids = f"{name}-{args.seed}"
        feeder = Feeder(p.settings, args.orders, args.rate, args.seed, p.users, ids)
        r = Run(p, feeder, cluster, toxi, args.short, random.Random(args.seed))
        feeder.start()
        log(f"{name}: feeding {args.orders} commands at {args.rate:g}/s")
        fault(r)
        log(f"{name}: fault injected and healed; measuring recovery")
        if not r.recovered:
            r.recover(timeout_s=120.0 if args.short else 240.0)
        feeder.done.wait(600)
        drain_started = time.monotonic()
        drained = p.drain(args.drain_s)
        result.update(
            faults_injected=r.faults,
            fault_landed=landed(name, r),
            recovery_s=r.recovery_s,
            first_output_s=r.first_output_s,
            drained_s=drained,
            drain_wait_s=round(time.monotonic() - drain_started, 1),
            fed=feeder.sent,
            feeder_acked=feeder.acked,
            feeder_errors=feeder.errors[:5],
            unexpected_exits=p.unexpected_exits(),
            # The harness's own LagReader process dying (librdkafka admin client).
            lag_sampler_crashes=p.sampler_crashes,
            evidence=r.evidence,
        )
        log(f"{name}: drained in {drained}s; checking")
        result.update(verdict(p, feeder))
        if drained is None:
            result["ok"] = False
            result["problem"] = f"not drained within {args.drain_s:g}s: {p.lags()}"
        if not result["fault_landed"]:
            result["ok"] = False
    except Exception as exc:
        log(f"{name}: failed: {exc!r}\n{traceback.format_exc()}")
        result.update(ok=False, error=repr(exc))
    finally:
        p.stop()
        # Logs of a failed scenario, or of one where a stage exited by itself.
        keep = None if result.get("ok") and not p.unexpected_exits() else Path(args.logs)
        try:
            p.cleanup(keep)
        except Exception as exc:
            log(f"{name}: cleanup: {exc!r}")
        toxi.reset()
    result["seconds"] = round(time.monotonic() - started, 1)
    log(f"{name}: {json.dumps(_brief(result))}")
    return result


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("ok", "fault_landed", "lost", "duplicated", "seq_gaps", "negative_balances")
    more = ("stuck_holds", "reconcile_clean", "recovery_s", "first_output_s", "error")
    return {k: result.get(k) for k in (*keys, *more) if k in result}


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    def total(key: str) -> int:
        return sum(int(r.get(key) or 0) for r in results)

    recoveries = [r["recovery_s"] for r in results if r.get("recovery_s") is not None]
    return {
        "scenarios": len(results),
        "faults_injected": total("faults_injected"),
        "lost": total("lost"),
        "duplicated": total("duplicated"),
        "unexpected": total("unexpected"),
        "seq_gaps": total("seq_gaps"),
        "negative_balances": total("negative_balances"),
        "stuck_holds": total("stuck_holds"),
        "reconcile_clean": all(r.get("reconcile_clean") is True for r in results),
        "all_landed": all(r.get("fault_landed") is True for r in results),
        "max_recovery_s": max(recoveries, default=None),
        "recovery_s": {r["name"]: r.get("recovery_s") for r in results},
        "failed": [r["name"] for r in results if not r.get("ok")],
        # Stages that exited by themselves (and were restarted), by scenario: not a
        # failed check, but an availability finding to read.
        "stage_exits": {
            r["name"]: r["unexpected_exits"] for r in results if r.get("unexpected_exits")
        },
        "details": results,
    }


class Services:
    """The cluster and Toxiproxy: started if down, stopped at the end if started here."""

    def __init__(self) -> None:
        self.cluster = KafkaCluster()
        self.toxi = ToxiproxyClient()
        self.started_cluster = False
        self.started_toxiproxy = False

    def __enter__(self) -> Services:
        status = self.cluster.status()
        if status.returncode != 0:
            # Stop it at the end only if it was all down (a node left down by an
            # interrupted run is just started again).
            self.started_cluster = ": up" not in status.stdout
            log("starting the three-node cluster (the nodes that are down)")
            self.cluster.up()
        try:
            self.toxi.version()
        except ToxiproxyError:
            log("starting Toxiproxy")
            _toxiproxy("up")
            self.started_toxiproxy = True
        self.toxi.reset()
        remove_leftovers(self.cluster)
        self.cluster.install_proxies(self.toxi)
        self.toxi.create_proxy(PG_PROXY, f"127.0.0.1:{PG_PROXY_PORT}", "127.0.0.1:5432")
        self.toxi.create_proxy(MQ_PROXY, f"127.0.0.1:{MQ_PROXY_PORT}", "127.0.0.1:5672")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.toxi.reset()
            for name in (PG_PROXY, MQ_PROXY):
                self.toxi.delete_proxy(name)
        except ToxiproxyError as error:
            log(f"toxiproxy cleanup: {error}")
        if self.started_toxiproxy:
            _toxiproxy("down")
        if self.started_cluster:
            self.cluster.down()


def remove_leftovers(cluster: KafkaCluster) -> None:
    """Topics, schemas and queues of a run that died before its cleanup (``chaos-*``)."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    topics = [t for t in admin.list_topics(timeout=30).topics if t.startswith("chaos-")]
    prefixes = {t.split(".", 1)[0] + "." for t in topics}
    if topics:
        log(f"removing {len(topics)} topics of {len(prefixes)} earlier runs")
        for future in admin.delete_topics(topics).values():
            future.result(60)
    for prefix in prefixes:
        Pipeline.drop_rabbit(load_settings(), prefix)

    async def drop_schemas() -> None:
        conn = await asyncpg.connect(load_settings().postgres.dsn())
        try:
            for row in await conn.fetch(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'wallet\\_chaos\\_%'"
                " OR nspname LIKE 'hist\\_chaos\\_%'"
            ):
                await conn.execute(f'DROP SCHEMA IF EXISTS "{row["nspname"]}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop_schemas())


def _toxiproxy(command: str) -> None:
    subprocess.run(
        ["bash", str(REPO / "ops" / "toxiproxy" / "toxiproxy.sh"), command],
        check=True,
        capture_output=True,
        timeout=600,
    )


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    log(f"signal {signal.Signals(signum).name}: stopping")
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--scenarios",
        default=None,
        help=f"comma-separated, from: {', '.join(SCENARIOS)} (default: all; --short: "
        f"{', '.join(SHORT)})",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--orders", type=int, default=None, help="commands per scenario")
    parser.add_argument("--rate", type=float, default=None, help="commands per second")
    parser.add_argument("--short", action="store_true", help="small load, short faults")
    parser.add_argument(
        "--drain-s", type=float, default=None, help="wait for lag 0 (300; --short: 120)"
    )
    parser.add_argument("--logs", default=str(REPO / ".state" / "chaos"), help="failed runs' logs")
    args = parser.parse_args(argv)
    if args.orders is None:
        args.orders = 1500 if args.short else 7000
    if args.drain_s is None:
        args.drain_s = 120.0 if args.short else 300.0
    if args.rate is None:
        args.rate = 60.0 if args.short else 100.0
    default = list(SHORT if args.short else SCENARIOS)
    names = args.scenarios.split(",") if args.scenarios else default
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios: {unknown}")
    # A stop request (Ctrl-C, SIGTERM, a closed terminal) still stops the stages,
    # heals the faults and drops the scenario's topics and schemas on the way out.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    results = []
    with Services() as services:
        for name in names:
            results.append(run_scenario(name, args, services.cluster, services.toxi))
    report = summary(results)
    print(json.dumps(report, default=str))
    return 0 if not report["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
