"""``trade-engine wallet ...``: serve the reference wallet, deposit, balances, reconcile.

Registered by ``add_wallet_commands`` (wired in ``trade_engine.cli``). Handlers
import aiohttp/asyncpg only when they run. Exit codes: 0 done; 1 the wallet
refused (an error code is printed) or reconciliation found drift; 2 it could
not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit

from trade_engine.config import Settings

if TYPE_CHECKING:
    from pydantic import BaseModel

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_wallet_commands(sub: SubParsers) -> None:
    wallet = sub.add_parser(
        "wallet", help="the wallet service: serve, deposit, balances, reconcile"
    )
    cmds = wallet.add_subparsers(dest="wallet_command", required=True)

    serve = cmds.add_parser("serve", help="run the reference wallet service (HTTP + PostgreSQL)")
    serve.add_argument("--host", help="default: the host of wallet.url")
    serve.add_argument("--port", type=int, help="default: the port of wallet.url")
    serve.add_argument("--schema", default="wallet", help="PostgreSQL schema of the ledger")
    serve.add_argument(
        "--admin-token-file",
        type=Path,
        help="file holding a separate token for /api/v1/admin/* (default: the service token)",
    )
    serve.set_defaults(handler=_cmd_serve)

    for name, text in (("deposit", "credit"), ("withdraw", "debit")):
        p = cmds.add_parser(name, help=f"{text} a user's available balance (admin API)")
        p.add_argument("--user", required=True)
        p.add_argument("--asset", required=True, type=str.upper)
        p.add_argument("--amount", required=True, help="decimal string, e.g. 1000.50")
        p.add_argument("--ref", help="idempotency key (default: a new UUID)")
        p.add_argument("--admin-token-file", type=Path, help="admin token (default: service token)")
        p.set_defaults(handler=_cmd_transfer, transfer=name)

    balances = cmds.add_parser("balances", help="a user's balances per asset")
    balances.add_argument("--user", required=True)
    balances.set_defaults(handler=_cmd_balances)

    rec = cmds.add_parser(
        "reconcile", help="check the ledger's invariants (exit 1 on drift); reads PostgreSQL"
    )
    rec.add_argument("--schema", default="wallet")
    rec.add_argument("--holds", action="store_true", help="also print every open hold")
    rec.set_defaults(handler=_cmd_reconcile)


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from aiohttp import web
    from pydantic import SecretStr

    from trade_engine import logs
    from trade_engine.wallet.service import ServiceConfig, create_app

    logs.configure(settings.log_level)
    url = urlsplit(settings.wallet.url)
    admin = None
    if args.admin_token_file is not None:
        admin = SecretStr(args.admin_token_file.read_text(encoding="utf-8").strip())
    config = ServiceConfig(
        dsn=settings.postgres.dsn(),
        service_token=settings.wallet.service_token,
        admin_token=admin,
        schema=args.schema,
    )
    web.run_app(
        create_app(config),
        host=args.host or url.hostname or "127.0.0.1",
        port=args.port or url.port or 8081,
        print=None,
    )
    return 0


def _cmd_transfer(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine.connectors.wallet.models import TransferRequest

    async def run() -> BaseModel:
        from trade_engine.connectors.wallet.client import WalletClient

        req = TransferRequest(
            user_id=args.user,
            asset=args.asset,
            amount=args.amount,
            idempotency_key=args.ref or str(uuid.uuid4()),
            reason="CLI",
        )
        token = settings.wallet.service_token.get_secret_value()
        if args.admin_token_file is not None:
            token = args.admin_token_file.read_text(encoding="utf-8").strip()
        async with WalletClient.from_settings(settings, token=token, max_retries=0) as client:
            call = client.deposit if args.transfer == "deposit" else client.withdraw
            return await call(req)

    return _print_result(run)


def _cmd_balances(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> BaseModel:
        from trade_engine.connectors.wallet.client import WalletClient

        async with WalletClient.from_settings(settings, max_retries=0) as client:
            return await client.balances(args.user)

    return _print_result(run)


def _print_result(run: Callable[[], Coroutine[Any, Any, BaseModel]]) -> int:
    import asyncio

    from pydantic import ValidationError

    from trade_engine.connectors.wallet.exceptions import WalletError

    try:
        result = asyncio.run(run())
    except ValidationError as exc:
        print(f"trade-engine: invalid input: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    except WalletError as exc:
        print(f"trade-engine: {exc.code}: {exc.message}", file=sys.stderr)
        return 2 if exc.retriable else 1
    print(result.model_dump_json(indent=2))
    return 0


def _cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    import asyncpg

    from trade_engine.wallet.reconcile import ReconcileReport, reconcile

    async def run() -> ReconcileReport:
        conn = await asyncpg.connect(
            settings.postgres.dsn(), timeout=settings.postgres.connect_timeout_s
        )
        try:
            return await reconcile(conn, args.schema)
        finally:
            await conn.close()

    try:
        report = asyncio.run(run())
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"trade-engine: reconcile: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    data = report.to_dict()
    holds = data.pop("open_holds")
    data["open_holds_count"] = len(holds)
    print(json.dumps(data, indent=2))
    if args.holds:
        for hold in holds:
            print(json.dumps(hold))
    for problem in report.problems:
        print(f"DRIFT: {problem}", file=sys.stderr)
    return 0 if report.ok else 1
