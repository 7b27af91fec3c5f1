"""``trade-engine matcher ...`` and ``trade-engine replay``: running and checking the matcher."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
from typing import TYPE_CHECKING

from trade_engine.cli.market_data import add_market_data_commands
from trade_engine.config import Settings

if TYPE_CHECKING:
    from trade_engine.operations.lag import LagView
    from trade_engine.operations.queues import QueueView


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


#: One ``trade-engine lag``: this many samples, this far apart, unless --window says.
LAG_SAMPLES = 3
LAG_SAMPLE_INTERVAL_S = 0.8
#: --watch / --serve: the status is judged over this many recent samples.
LAG_WATCH_WINDOW = 10


def _print_lag(args: argparse.Namespace, view: LagView, mq: QueueView | None) -> None:
    from trade_engine.operations import lag, queues

    if args.json:
        doc = view.as_dict()
        if mq is not None:
            doc["rabbitmq"] = {"endpoint": mq.endpoint, "error": mq.error}
            doc["queues"] = [q.as_dict() for q in mq.queues]
        print(json.dumps(doc))
    else:
        lines = lag.render(view, every_partition=args.partitions)
        if mq is not None:
            lines += ["", *queues.render(mq)]
        print("\n".join(lines))
    sys.stdout.flush()
    for problem in view.problems:
        print(f"lag: {problem.message}", file=sys.stderr)
    if mq is not None and mq.error is not None and args.json:
        print(f"lag: rabbitmq: {mq.error}", file=sys.stderr)
    sys.stderr.flush()


def _lag_once(args: argparse.Namespace, settings: Settings, size: int) -> int:
    """A few samples 0.8 s apart (one when nothing is behind), then the verdict."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from trade_engine.operations import lag, queues

    reader = lag.LagReader(settings)
    window = lag.LagWindow(settings, size)
    names = [] if args.no_queues else queues.bridged_queues(args.queue_prefix)
    pool = ThreadPoolExecutor(max_workers=1)
    # RabbitMQ is read meanwhile; its answer (or its one-line error) waits for ours.
    mq = pool.submit(queues.read_queues, settings, names) if names else None
    try:
        for i in range(size):
            started = time.monotonic()
            last = i == size - 1
            # Lag in seconds needs the oldest unconsumed record of every lagging
            # partition: the first sample finds them, the last one only those of the
            # groups that moved meanwhile (the reader remembers the others).
            view = window.add(
                reader.snapshot(groups=args.group, topics=args.topic, with_seconds=i == 0 or last)
            )
            if all(p.lag.lag == 0 for g in view.groups for p in g.partitions):
                break  # nothing behind: nothing to judge over a window
            if not last:
                time.sleep(max(LAG_SAMPLE_INTERVAL_S - (time.monotonic() - started), 0))
        _print_lag(args, view, mq.result() if mq is not None else None)
    except lag.LagError as exc:
        print(f"lag: {exc}", file=sys.stderr)
        return lag.EXIT_UNAVAILABLE
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        reader.close()
    return view.exit_code()


def _lag_loop(args: argparse.Namespace, settings: Settings, size: int) -> int:
    """--watch / --serve: a sample every --interval, judged over the last ``size``."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from prometheus_client import REGISTRY

    from trade_engine import metrics
    from trade_engine.health import DISK, Health, Recent, kafka_check
    from trade_engine.operations import lag, queues

    reader = lag.LagReader(settings)
    window = lag.LagWindow(settings, size)
    names = [] if args.no_queues else queues.bridged_queues(args.queue_prefix)
    sampled = Recent("lag sample", max_age_s=max(3 * args.interval, 30.0))
    for volume, path in args.disk:
        DISK.watch(volume, path)
    lag_metrics, queue_metrics = lag.LagCollector(), queues.QueueCollector()
    if args.serve is not None:
        REGISTRY.register(lag_metrics)
        REGISTRY.register(queue_metrics)
        health = Health({"kafka": kafka_check(settings), "sampling": sampled})
        metrics.serve(args.serve, health, addr=settings.metrics_host, state_dir=settings.state_dir)
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        while True:
            started = time.monotonic()
            pending = pool.submit(queues.read_queues, settings, names) if names else None
            view: LagView | None = None
            try:
                view = window.add(reader.snapshot(groups=args.group, topics=args.topic))
            except lag.LagError as exc:
                # The exporter keeps serving (not ready) and tries again next interval.
                print(f"lag: {exc}", file=sys.stderr, flush=True)
            else:
                lag_metrics.update(view)
                sampled.touch()
            mq = pending.result() if pending is not None else None
            if mq is not None:
                queue_metrics.update(mq)
            if view is not None:
                _print_lag(args, view, mq)
            time.sleep(max(args.interval - (time.monotonic() - started), 0))
    except KeyboardInterrupt:
        return 0
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        reader.close()


def _cmd_lag(args: argparse.Namespace, settings: Settings) -> int:
    if args.serve is not None or args.watch:
        return _lag_loop(args, settings, args.window or LAG_WATCH_WINDOW)
    return _lag_once(args, settings, args.window or LAG_SAMPLES)


def _regex(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"not a regular expression: {exc}") from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive count, got {text}")
    return value


def _volume(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name.isidentifier() or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def add_lag_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lag = sub.add_parser(
        "lag",
        help="lag and status of every consumer group (messages, seconds), and the bridge's "
        "RabbitMQ queues; exit 0 all OK, 1 a group lagging/stalled/stopped, 2 broker "
        "unreachable or no such topics/groups",
        description="Every consumer group on the cluster: committed offsets against the last "
        "stable offsets, lag in messages and seconds, and a status (OK, LAGGING, STALLED, "
        "STOPPED) judged over a window of samples: one call takes 3 samples 0.8 s apart "
        "(one when nothing is behind); --watch and --serve judge over the recent ones.",
    )
    lag.add_argument("--json", action="store_true", help="one JSON document (per sample)")
    lag.add_argument("--watch", action="store_true", help="repeat every --interval seconds")
    lag.add_argument("--interval", type=float, default=10.0)
    lag.add_argument(
        "--window",
        type=_positive,
        metavar="N",
        help=f"judge over N samples (default {LAG_SAMPLES} for one call, "
        f"{LAG_WATCH_WINDOW} with --watch/--serve; 1: only STOPPED or OK)",
    )
    lag.add_argument("--group", type=_regex, metavar="REGEX", help="only groups matching REGEX")
    lag.add_argument(
        "--topic", type=_regex, metavar="REGEX", help="only offsets on topics matching REGEX"
    )
    lag.add_argument(
        "--partitions", action="store_true", help="a row for every partition, not only those not OK"
    )
    lag.add_argument(
        "--queue-prefix",
        default="",
        metavar="P",
        help="the bridge's --name-prefix (its queues are P + wallet.service.trades, ...)",
    )
    lag.add_argument("--no-queues", action="store_true", help="leave RabbitMQ out")
    lag.add_argument(
        "--serve",
        type=int,
        metavar="PORT",
        help="export kafka_consumergroup_lag, ..._lag_seconds, te_consumergroup_status and "
        "te_rabbitmq_queue_* metrics (samples every --interval seconds)",
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
