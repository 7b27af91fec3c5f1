"""``trade-engine matcher ...`` and ``trade-engine replay``: running and checking the matcher."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys

from trade_engine.cli.market_data import add_market_data_commands
from trade_engine.config import Settings


def _cmd_matcher_run(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine import logs, metrics, tracing
    from trade_engine.agents.matcher.worker import MatcherWorker
    from trade_engine.health import Health, kafka_check
    from trade_engine.operations.preflight import check_kafka
    from trade_engine.streams.topics import create_topics

    logs.configure(settings.log_level)
    tracing.configure(settings, "te-matcher")
    check_kafka(settings)  # an unreachable broker is a named config error, not a traceback
    create_topics(settings)
    worker = MatcherWorker(
        settings,
        args.worker_id or f"{socket.gethostname()}-{os.getpid()}",
        batch_size=args.batch_size,
        standby=args.standby,
    )
    health = Health(
        {
            "kafka": kafka_check(settings),
            "transactions": worker.transactions_ready,
            "group": worker.group_joined,
        }
    )
    metrics.serve(
        args.metrics_port if args.metrics_port is not None else settings.metrics_port,
        health,
        addr=settings.metrics_host,
        state_dir=settings.state_dir,
    )
    worker.install_signal_handlers()
    worker.run(max_idle_s=args.exit_when_idle)
    return 0


def _cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine.agents.matcher.replay import compare, rebuild

    if args.rebuild_partition is not None:
        written = rebuild(settings, args.rebuild_partition)
        print(f"partition {args.rebuild_partition}: {written} changelog records rewritten")
        return 0
    result = compare(settings)
    for report in result.partitions:
        print(json.dumps(report.as_dict()))
    if not result.ok:
        print("replay: the pipeline's records differ from the replay", file=sys.stderr)
        return 1
    return 0


def add_agent_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    matcher = sub.add_parser("matcher", help="the matching worker")
    matcher_sub = matcher.add_subparsers(dest="matcher_command", required=True)
    run = matcher_sub.add_parser("run", help="consume te.commands.accepted and match")
    run.add_argument("--worker-id", help="stable id: names the transactional id and local state")
    run.add_argument("--batch-size", type=int, default=2000)
    run.add_argument(
        "--standby",
        action="store_true",
        help="warm standby: follow the changelog of partitions owned by other workers",
    )
    run.add_argument("--metrics-port", type=int, default=None)
    run.add_argument(
        "--exit-when-idle", type=float, default=None, metavar="SECONDS", help="for tests"
    )
    run.set_defaults(handler=_cmd_matcher_run)

    replay = sub.add_parser(
        "replay",
        help="re-match te.commands.accepted offline and compare with te.executions/te.trades",
    )
    replay.add_argument(
        "--rebuild-partition",
        type=int,
        metavar="P",
        help="rewrite partition P's durable book state from the input log (stop workers first)",
    )
    replay.set_defaults(handler=_cmd_replay)
    add_stage_commands(sub)
    add_demo_command(sub)
    add_lag_command(sub)
    add_market_data_commands(sub)


def _cmd_validation_run(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from trade_engine import logs, metrics
    from trade_engine.agents.risk.worker import AdmissionWorker, run_validation
    from trade_engine.health import Health, kafka_check
    from trade_engine.operations.preflight import check_kafka
    from trade_engine.streams.topics import create_topics

    logs.configure(settings.log_level)
    check_kafka(settings)
    create_topics(settings)
    worker = AdmissionWorker(settings, "validation")
    health = Health({"kafka": kafka_check(settings), "group": worker.group_joined})
    metrics.serve(
        args.metrics_port if args.metrics_port is not None else 0,
        health,
        addr=settings.metrics_host,
        state_dir=settings.state_dir,
    )
    worker.install_signal_handlers()
    asyncio.run(run_validation(settings, worker))
    return 0


def add_stage_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    stage = sub.add_parser("validation", help="the validation stage: admission without a wallet")
    stage_sub = stage.add_subparsers(dest="validation_command", required=True)
    run = stage_sub.add_parser("run", help="te.commands -> te.commands.accepted")
    run.add_argument("--metrics-port", type=int, default=None)
    run.set_defaults(handler=_cmd_validation_run)


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine.operations.demo import run_demo
    from trade_engine.operations.preflight import check_kafka

    check_kafka(settings)
    return run_demo(settings, args.rate, args.seed, args.duration)


def add_demo_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo", help="the main job: a demo market through the whole pipeline")
    demo.add_argument("--rate", type=float, default=200.0, help="orders/s offered")
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--duration", type=float, default=None, metavar="SECONDS")
    demo.set_defaults(handler=_cmd_demo)


def _cmd_lag(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from trade_engine import metrics
    from trade_engine.health import DISK, Health, Recent, kafka_check
    from trade_engine.operations.lag import LagReader, export

    reader = LagReader(settings)
    sampled = Recent("lag sample", max_age_s=max(3 * args.interval, 30.0))
    for volume, path in args.disk:
        DISK.watch(volume, path)
    if args.serve is not None:
        health = Health({"kafka": kafka_check(settings), "sampling": sampled})
        metrics.serve(args.serve, health, addr=settings.metrics_host, state_dir=settings.state_dir)
    try:
        while True:
            lags = reader.read_all()
            export(lags)
            sampled.touch()
            if args.json:
                for item in lags:
                    print(json.dumps(item.as_dict()))
            else:
                print(
                    f"{'group':<24} {'topic':<24} {'part':>4} {'committed':>10} {'end':>10} "
                    f"{'lag':>8} {'lag_s':>7} stalled"
                )
                for item in lags:
                    print(
                        f"{item.group:<24} {item.topic:<24} {item.partition:>4} "
                        f"{item.committed:>10} {item.end:>10} {item.lag:>8} "
                        f"{item.lag_seconds:>7.1f} {'YES' if item.stalled else ''}"
                    )
            sys.stdout.flush()
            if args.serve is None and not args.watch:
                return 0
            time.sleep(args.interval)
    finally:
        reader.close()


def _volume(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name.isidentifier() or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def add_lag_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lag = sub.add_parser(
        "lag", help="consumer lag of every engine group, per partition (messages and seconds)"
    )
    lag.add_argument("--json", action="store_true", help="one JSON object per partition")
    lag.add_argument("--watch", action="store_true", help="repeat every --interval seconds")
    lag.add_argument("--interval", type=float, default=10.0)
    lag.add_argument(
        "--serve", type=int, metavar="PORT", help="export kafka_consumergroup_lag metrics"
    )
    lag.add_argument(
        "--disk",
        type=_volume,
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="also export te_disk_free_bytes of PATH as volume NAME (e.g. kafka=/var/lib/kafka)",
    )
    lag.set_defaults(handler=_cmd_lag)
