"""``trade-engine gateway ...``: run the REST gateway, mint a development token.

``run --workers N`` starts N processes sharing one port (``SO_REUSEPORT``); they
share rate limits and idempotency records only through Redis, so N > 1 needs
``gateway.redis_url``. ``run`` refuses to start with the development HS256 secret
committed in this repository unless ``gateway.dev_mode`` (``TE_GATEWAY__DEV_MODE``,
or ``--dev-mode``) is set.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from types import FrameType
from typing import TypeAlias

from trade_engine.config import CONFIG_FILE_ENV, Settings

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_gateway_commands(sub: SubParsers) -> None:
    gateway = sub.add_parser("gateway", help="the REST gateway: run it, mint a dev token")
    cmds = gateway.add_subparsers(dest="gateway_command", required=True)

    run = cmds.add_parser("run", help="serve the REST API (TE_GATEWAY__*)")
    run.add_argument("--host", help="default: gateway.host (TE_GATEWAY__HOST)")
    run.add_argument("--port", type=int, help="default: gateway.port (TE_GATEWAY__PORT)")
    run.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port (>1 needs Redis)"
    )
    run.add_argument(
        "--dev-mode",
        action="store_true",
        help="allow the development HS256 secret (gateway.dev_mode, TE_GATEWAY__DEV_MODE); "
        "local development only",
    )
    run.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    run.set_defaults(handler=_cmd_run)

    token = cmds.add_parser(
        "token", help="print an HS256 token signed with gateway.auth.hs256_secret (development)"
    )
    token.add_argument("--user", required=True)
    token.add_argument("--admin", action="store_true", help="add the admin scope")
    token.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    token.set_defaults(handler=_cmd_token)


def _cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine import logs
    from trade_engine.connectors.gateway.app import serve
    from trade_engine.connectors.gateway.auth import refuse_dev_secret

    if args.dev_mode:
        gateway = settings.gateway.model_copy(update={"dev_mode": True})
        settings = settings.model_copy(update={"gateway": gateway})
    refuse_dev_secret(settings.gateway)  # before any worker starts: ConfigError, exit 2
    host = args.host or settings.gateway.host
    port = args.port or settings.gateway.port
    if args.workers < 1:
        print("trade-engine gateway: --workers must be >= 1", file=sys.stderr)
        return 2
    if args.workers > 1:
        if not settings.gateway.redis_url:
            print(
                "trade-engine gateway: --workers > 1 needs gateway.redis_url "
                "(TE_GATEWAY__REDIS_URL): rate limits and idempotency must be shared",
                file=sys.stderr,
            )
            return 2
        return _run_workers(args, host, port)
    logs.configure(settings.log_level)
    serve(settings, host, port, reuse_port=args.reuse_port)
    return 0


def _run_workers(args: argparse.Namespace, host: str, port: int) -> int:
    env = dict(os.environ)
    if args.config:
        env[CONFIG_FILE_ENV] = args.config
    command = [
        sys.executable,
        "-c",
        "from trade_engine.cli import main; raise SystemExit(main())",
        "gateway",
        "run",
        "--host",
        host,
        "--port",
        str(port),
        "--reuse-port",
        *(["--dev-mode"] if args.dev_mode else []),
    ]
    children = [subprocess.Popen(command, env=env) for _ in range(args.workers)]

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes)


def _cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine.connectors.gateway.auth import USER_ID, mint_token

    if not USER_ID.fullmatch(args.user):
        print(f"trade-engine gateway: not a valid user id: {args.user!r}", file=sys.stderr)
        return 2
    if "HS256" not in settings.gateway.auth.algorithms:
        print("trade-engine gateway: HS256 is not among gateway.auth.algorithms", file=sys.stderr)
        return 2
    print(mint_token(settings.gateway.auth, args.user, admin=args.admin, ttl_s=args.ttl))
    return 0
