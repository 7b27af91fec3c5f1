"""``trade-engine`` subcommands of the connectors: orders, symbols, topics, load, tail.

Registered by ``add_connector_commands`` from ``trade_engine.cli``. Handlers import
Kafka modules only when they run, so ``--help`` stays fast. Exit codes: 0 done,
1 the broker failed us (delivery, topic admin), 2 bad input (one line on stderr
naming the field, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any, TypeAlias

from trade_engine.config import Settings, SymbolSettings
from trade_engine.errors import TradeEngineError

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

_TAIL_ROLES = {
    "commands": "commands",
    "accepted": "accepted",
    "executions": "executions",
    "trades": "trades",
    "dead-letter": "dead_letter",
}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class InputError(TradeEngineError):
    """Bad command-line input; printed as one line, exit code 2."""

    code = "CLI_INVALID_INPUT"


def parse_duration(text: str) -> float:
    """``30s``, ``500ms``, ``2m``, ``1h`` or plain seconds, to seconds."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (examples: 30s, 500ms, 2m)")
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


def _upper(text: str) -> str:
    return text.strip().upper()


def _fail(message: str, code: int) -> int:
    print(f"trade-engine: {message}", file=sys.stderr)
    return code


def _run(args: argparse.Namespace, settings: Settings) -> int:
    """Call the real handler and turn expected errors into one line and an exit code."""
    from confluent_kafka import KafkaException

    from trade_engine.connectors.exceptions import ConnectorError, InvalidCommandError
    from trade_engine.streams.exceptions import StreamsError

    try:
        code: int = args.connector_handler(args, settings)
        return code
    except (InputError, InvalidCommandError) as exc:
        return _fail(f"invalid input: {exc}", 2)
    except (ConnectorError, StreamsError) as exc:
        return _fail(f"{exc.code}: {exc}", 1)
    except KafkaException as exc:
        return _fail(f"kafka: {exc}", 1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `trade-engine tail trades | head`
        return 0


def _set(parser: argparse.ArgumentParser, handler: Any) -> None:
    parser.set_defaults(handler=_run, connector_handler=handler)


def _symbol_spec(settings: Settings, symbol: str) -> SymbolSettings:
    spec = settings.market.get(symbol)
    if spec is None:
        known = ", ".join(s.symbol for s in settings.market.symbols)
        raise InputError(f"symbol: {symbol!r} is not a configured symbol (known: {known})")
    return spec


def _check_grid(settings: Settings, command: Any) -> None:
    """Price on tick, quantity on step: caught here with a clear message rather than
    as an engine reject (``--no-grid-check`` sends it anyway)."""
    from trade_engine.tables.matching.codes import RejectCode
    from trade_engine.tables.matching.exceptions import NumberFormatError
    from trade_engine.tables.matching.numbers import Scale

    spec = _symbol_spec(settings, command.symbol)
    price = Scale(spec.tick_size)
    qty = Scale(spec.step_size)
    quote = price.times(qty, RejectCode.VALIDATION_FUNDS_OFF_UNIT)
    checks = (
        ("price", price, f"tick size {spec.tick_size}"),
        ("stop_price", price, f"tick size {spec.tick_size}"),
        ("reference_price", price, f"tick size {spec.tick_size}"),
        ("quantity", qty, f"step size {spec.step_size}"),
        ("quote_quantity", quote, f"quote unit {quote.text}"),
    )
    for name, scale, unit in checks:
        value = getattr(command, name, None)
        if value is None:
            continue
        try:
            scale.parse(value)
        except NumberFormatError:
            raise InputError(
                f"{name}: {value} is not a multiple of the {unit} of {spec.symbol}"
            ) from None


def _send(args: argparse.Namespace, settings: Settings, command: Any) -> int:
    from trade_engine.connectors.producer import OrderProducer
    from trade_engine.streams.codec import encode

    if not args.no_grid_check:
        _check_grid(settings, command)
    with OrderProducer(
        settings, topic=args.topic, delivery_timeout_s=args.timeout, linger_ms=0
    ) as producer:
        delivery = producer.send_and_wait(command, trace_id=args.trace_id)
    print(
        json.dumps(
            {
                "topic": delivery.topic,
                "partition": delivery.partition,
                "offset": delivery.offset,
                "command": json.loads(encode(command)),
            },
            separators=(",", ":"),
        )
    )
    return 0


# -- orders ----------------------------------------------------------------------


def _cmd_place(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine.connectors.producer import build_place

    command = build_place(
        symbol=args.symbol,
        side=args.side,
        user_id=args.user,
        type=args.type,
        quantity=args.quantity,
        price=args.price,
        time_in_force=args.tif,
        order_id=args.order_id,
        client_order_id=args.client_order_id,
        stop_price=args.stop_price,
        quote_quantity=args.quote_quantity,
        post_only=args.post_only,
        stp_mode=args.stp,
        expire_at=args.expire_at,
    )
    return _send(args, settings, command)


def _cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine.connectors.producer import build_cancel

    command = build_cancel(
        symbol=args.symbol,
        user_id=args.user,
        order_id=args.order_id,
        client_order_id=args.client_order_id,
    )
    return _send(args, settings, command)


def _cmd_amend(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine.connectors.producer import build_amend

    command = build_amend(
        symbol=args.symbol,
        user_id=args.user,
        order_id=args.order_id,
        quantity=args.quantity,
        price=args.price,
    )
    return _send(args, settings, command)


def _cmd_mass_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine.connectors.producer import build_mass_cancel

    command = build_mass_cancel(symbol=args.symbol, user_id=args.user, side=args.side)
    return _send(args, settings, command)


def _cmd_symbol_admin(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine.connectors.producer import build_symbol_admin

    command = build_symbol_admin(
        symbol=args.symbol, trading_state=args.state, reference_price=args.reference_price
    )
    return _send(args, settings, command)


def _producing(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--topic", help="topic to write to (default: the commands topic, te.commands)"
    )
    parser.add_argument("--trace-id", help="trace id header (default: a new one)")
    parser.add_argument(
        "--timeout", type=float, default=15.0, help="seconds to wait for the broker (default 15)"
    )
    parser.add_argument(
        "--no-grid-check",
        action="store_true",
        help="send prices/quantities even when off the symbol's tick/step (the engine rejects)",
    )


def _add_orders(sub: SubParsers) -> None:
    orders = sub.add_parser("orders", help="send order commands (place, cancel, amend, ...)")
    osub = orders.add_subparsers(dest="orders_command", required=True, metavar="ACTION")

    p = osub.add_parser("place", help="place an order; prints where it landed as JSON")
    p.add_argument("--symbol", required=True, help="e.g. BTC/USDT")
    p.add_argument("--side", required=True, type=_upper, metavar="BUY|SELL")
    p.add_argument("--type", default="LIMIT", type=_upper, metavar="LIMIT|MARKET|STOP|STOP_LIMIT")
    p.add_argument("--quantity", help="base quantity, a plain decimal on the step size")
    p.add_argument("--price", help="limit price, a plain decimal on the tick size")
    p.add_argument("--stop-price", help="trigger price of STOP/STOP_LIMIT orders")
    p.add_argument("--quote-quantity", help="MARKET/STOP buys: quote amount to spend")
    p.add_argument(
        "--tif",
        type=_upper,
        metavar="GTC|IOC|FOK|DAY|GTD",
        help="time in force (default: IOC for MARKET/STOP, else GTC)",
    )
    p.add_argument("--expire-at", help="GTD expiry, RFC 3339 UTC (e.g. 2030-01-01T00:00:00Z)")
    p.add_argument("--user", default="u1", help="user id (default u1)")
    p.add_argument("--order-id", help="order id (default: a new ULID)")
    p.add_argument("--client-order-id")
    p.add_argument("--post-only", action="store_true")
    p.add_argument(
        "--stp",
        default="NONE",
        type=_upper,
        metavar="NONE|EXPIRE_TAKER|EXPIRE_MAKER|EXPIRE_BOTH|DECREMENT",
        help="self-trade prevention mode",
    )
    _producing(p)
    _set(p, _cmd_place)

    p = osub.add_parser("cancel", help="cancel one order")
    p.add_argument("--symbol", required=True)
    p.add_argument("--user", required=True)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--order-id")
    target.add_argument("--client-order-id")
    _producing(p)
    _set(p, _cmd_cancel)

    p = osub.add_parser("amend", help="amend quantity (keeps priority if reduced) and/or price")
    p.add_argument("--symbol", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--order-id", required=True)
    p.add_argument("--quantity", help="new total quantity")
    p.add_argument("--price", help="new price (loses priority)")
    _producing(p)
    _set(p, _cmd_amend)

    p = osub.add_parser("mass-cancel", help="cancel all of a user's orders on a symbol")
    p.add_argument("--symbol", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--side", type=_upper, metavar="BUY|SELL", help="only this side")
    _producing(p)
    _set(p, _cmd_mass_cancel)


def _add_symbols(sub: SubParsers) -> None:
    symbols = sub.add_parser("symbols", help="symbol administration commands")
    ssub = symbols.add_subparsers(dest="symbols_command", required=True, metavar="ACTION")
    p = ssub.add_parser("admin", help="set a symbol's trading state")
    p.add_argument("--symbol", required=True)
    p.add_argument(
        "--state",
        required=True,
        type=_upper,
        metavar="TRADING|HALT|CANCEL_ONLY|POST_ONLY|LIMIT_ONLY",
    )
    p.add_argument("--reference-price", help="new reference price for the price band")
    _producing(p)
    _set(p, _cmd_symbol_admin)


# -- topics ----------------------------------------------------------------------


def _cmd_topics_create(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine.streams.topics import create_topics

    for name, outcome in create_topics(settings).items():
        print(f"{name}: {outcome}")
    return 0


def _add_topics(sub: SubParsers) -> None:
    topics = sub.add_parser("topics", help="the engine's Kafka topics")
    tsub = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    p = tsub.add_parser("create", help="create missing topics (idempotent); prints each outcome")
    _set(p, _cmd_topics_create)


# -- load --------------------------------------------------------------------------


def _cmd_load(args: argparse.Namespace, settings: Settings) -> int:
    import secrets

    from trade_engine.connectors.loadgen import iter_commands, publish
    from trade_engine.connectors.producer import OrderProducer

    if args.symbols:
        names = [s.strip() for s in args.symbols.split(",") if s.strip()]
        specs = [_symbol_spec(settings, name) for name in names]
    else:
        specs = list(settings.market.symbols)
    if not specs:
        raise InputError("symbols: no symbols given")
    if args.rate < 0:
        raise InputError("rate: must be >= 0")
    if args.users < 1:
        raise InputError("users: must be >= 1")
    run_id = args.run_id or f"lg{args.seed}x{secrets.token_hex(3)}"
    print(
        f"load: seed={args.seed} run_id={run_id} symbols={','.join(s.symbol for s in specs)} "
        f"users={args.users}",
        file=sys.stderr,
    )
    commands = iter_commands(specs, args.seed, args.users, id_prefix=run_id)
    with OrderProducer(
        settings, topic=args.topic, validate=False, compression=args.compression
    ) as producer:
        stats = publish(
            producer,
            commands,
            rate=args.rate or None,
            duration_s=args.duration,
            count=args.count,
        )
    print(json.dumps({"topic": producer.topic, "run_id": run_id, **stats.as_dict()}))
    return 0


def _add_load(sub: SubParsers) -> None:
    p = sub.add_parser(
        "load",
        help="publish a seeded, realistic order flow at a given rate",
        description="Publish the load generator's flow. Stops after --count commands or "
        "--duration, whichever comes first (neither: until Ctrl-C). The flow is a function "
        "of --seed; order ids are prefixed with --run-id (default: lg<seed>x<random>, so two "
        "runs do not collide; pass --run-id lg<seed> to reproduce generate()'s ids).",
    )
    p.add_argument("--rate", type=float, default=1000.0, help="messages/s (0 = unlimited)")
    p.add_argument("--symbols", help="comma-separated (default: every configured symbol)")
    p.add_argument("--duration", type=parse_duration, help="e.g. 30s, 2m")
    p.add_argument("--count", type=int, help="stop after this many commands")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--run-id", help="order id prefix")
    p.add_argument("--topic", help="default: the commands topic (te.commands)")
    p.add_argument(
        "--compression", default="lz4", choices=["none", "gzip", "snappy", "lz4", "zstd"]
    )
    _set(p, _cmd_load)


# -- tail --------------------------------------------------------------------------


def _cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    from trade_engine.connectors.tail import tail

    topic = args.topic or settings.topic_names[_TAIL_ROLES[args.what]]
    tail(
        settings,
        topic,
        from_beginning=args.from_beginning,
        max_messages=args.max,
        symbol=args.symbol,
        verbose=args.verbose,
        idle_timeout_s=args.idle_timeout,
    )
    return 0


def _add_tail(sub: SubParsers) -> None:
    p = sub.add_parser("tail", help="print a topic as JSON lines (read_committed, commits nothing)")
    p.add_argument("what", choices=list(_TAIL_ROLES))
    p.add_argument("--from-beginning", action="store_true")
    p.add_argument("--max", type=int, help="stop after this many messages")
    p.add_argument("--symbol", help="only messages with this key")
    p.add_argument("--topic", help="read this topic instead")
    p.add_argument("--verbose", "-v", action="store_true", help="with partition, offset, key")
    p.add_argument(
        "--idle-timeout", type=parse_duration, help="stop when nothing arrived for this long"
    )
    _set(p, _cmd_tail)


def add_connector_commands(sub: SubParsers) -> None:
    """Register ``orders``, ``symbols``, ``topics``, ``load`` and ``tail``."""
    for add in (_add_orders, _add_symbols, _add_topics, _add_load, _add_tail):
        add(sub)
