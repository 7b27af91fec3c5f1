"""``trade-engine market-data run``: the market-data agent."""

from __future__ import annotations

import argparse

from trade_engine.config import Settings


def _cmd_market_data_run(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine import logs, metrics
    from trade_engine.agents.market_data import MarketDataWorker
    from trade_engine.health import Health, kafka_check
    from trade_engine.operations.preflight import check_kafka
    from trade_engine.streams.topics import create_topics

    logs.configure(settings.log_level)
    check_kafka(settings)  # an unreachable broker is a named config error, not a traceback
    create_topics(settings)
    port = args.metrics_port
    worker = MarketDataWorker(settings, args.worker_id, batch_size=args.batch_size)
    health = Health({"kafka": kafka_check(settings), "group": worker.group_joined})
    metrics.serve(
        port if port is not None else settings.market_data.metrics_port,
        health,
        addr=settings.metrics_host,
        state_dir=settings.state_dir,
    )
    worker.install_signal_handlers()
    worker.run(max_idle_s=args.exit_when_idle)
    return 0


def add_market_data_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    md = sub.add_parser("market-data", help="the market-data agent: depth, candles, tickers")
    md_sub = md.add_subparsers(dest="market_data_command", required=True)
    run = md_sub.add_parser("run", help="te.executions -> te.md.depth/.depth.snapshot/...")
    run.add_argument(
        "--worker-id", default="md-1", help="stable id: names the transactional id (default md-1)"
    )
    run.add_argument("--batch-size", type=int, default=2000)
    run.add_argument(
        "--metrics-port", type=int, default=None, help="default: market_data.metrics_port (9471)"
    )
    run.add_argument(
        "--exit-when-idle", type=float, default=None, metavar="SECONDS", help="for tests"
    )
    run.set_defaults(handler=_cmd_market_data_run)
