"""The one validated settings object.

Sources, highest priority first: keyword arguments, environment variables
(``TE_`` prefix, ``__`` between nested names, e.g. ``TE_KAFKA__BOOTSTRAP_SERVERS``),
a YAML file (``TE_CONFIG_FILE`` or ``--config``), then defaults that point at the
local stack started by ``ops/stack.sh``. Unknown keys are errors, secrets are
``SecretStr`` and never printed in clear.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import textwrap
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import quote

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from trade_engine.errors import ConfigError

CONFIG_FILE_ENV = "TE_CONFIG_FILE"


class _Section(BaseModel):
    # A field's docstring is its description (``.env.example``, ``env_example()``).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    """The brokers, host:port[,host:port...]."""
    client_id: str = "trade-engine"
    """client.id of every Kafka client (shows in the broker's logs and quotas)."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """How clients talk to the brokers."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """SASL mechanism, with a SASL_* security protocol."""
    sasl_username: str | None = None
    """SASL user name."""
    sasl_password: SecretStr | None = None
    """SASL password."""
    connect_timeout_s: float = Field(default=10.0, gt=0)
    """How long a client waits for the brokers before giving up (checks, admin calls)."""

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port_list(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {server!r}")
        return value

    def librdkafka(self) -> dict[str, Any]:
        """The connection part of a confluent-kafka configuration."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol.lower(),
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username or ""
            conf["sasl.password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else ""
            )
        return conf


class TopicSettings(_Section):
    """Topic layout. Every topic on the order path has the same partition count."""

    prefix: str = "te."
    """Prefix of every topic name (te.commands, te.executions, ...)."""
    partitions: int = Field(default=4, ge=1, le=1024)
    """Partitions of every topic on the order path (keyed by symbol)."""
    replication_factor: int = Field(default=1, ge=1)
    """Replicas of each topic (1 on the single local broker)."""
    retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=-1)
    """Retention of the order-path topics in milliseconds (-1: forever)."""


class PostgresSettings(_Section):
    host: str = "127.0.0.1"
    """PostgreSQL server (history, the gateway's read model, the wallet's ledger)."""
    port: int = Field(default=5432, ge=1, le=65535)
    """PostgreSQL port."""
    user: str = "trade_engine"
    """PostgreSQL role."""
    password: SecretStr = SecretStr("trade_engine")
    """PostgreSQL password (the local stack's default is the role's name)."""
    database: str = "trade_engine"
    """PostgreSQL database."""
    connect_timeout_s: float = Field(default=10.0, gt=0)
    """Seconds to wait for a connection."""
    ssl_mode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = (
        "prefer"
    )
    """libpq ``sslmode``: ``prefer`` (the default) uses TLS when the server offers it; a
    production server across a network wants ``verify-full``."""

    def dsn(self) -> str:
        password = quote(self.password.get_secret_value(), safe="")
        return (
            f"postgresql://{quote(self.user)}:{password}@{self.host}:{self.port}/{self.database}"
            f"?sslmode={self.ssl_mode}"
        )


class RabbitMQSettings(_Section):
    host: str = "127.0.0.1"
    """RabbitMQ broker of the bridge (trade.events, order.events)."""
    port: int = Field(default=5672, ge=1, le=65535)
    """AMQP port."""
    user: str = "trade_engine"
    """RabbitMQ user."""
    password: SecretStr = SecretStr("trade_engine")
    """RabbitMQ password (the local stack's default is the user's name)."""
    vhost: str = "/"
    """RabbitMQ virtual host."""
    management_port: int = Field(default=15672, ge=1, le=65535)
    """Port of the management HTTP API on the same host (queue depths in `trade-engine lag`)."""
    connect_timeout_s: float = Field(default=10.0, gt=0)
    """Seconds to wait for a connection."""

    def url(self) -> str:
        password = quote(self.password.get_secret_value(), safe="")
        vhost = quote(self.vhost, safe="")
        return f"amqp://{quote(self.user)}:{password}@{self.host}:{self.port}/{vhost}"


class WalletSettings(_Section):
    url: str = "http://127.0.0.1:8081"
    """Base URL of the wallet service (``wallet serve`` listens on its port)."""
    service_token: SecretStr = SecretStr("dev-wallet-token")
    """Bearer token of the wallet's service routes (client and service alike)."""
    timeout_s: float = Field(default=2.0, gt=0)
    """Timeout of one wallet call, in seconds."""
    max_retries: int = Field(default=5, ge=0)
    """Retries of a retriable wallet call (connection errors, timeouts, 5xx, 429)."""


class SymbolSettings(_Section):
    """One tradable symbol. Amounts are decimal strings, exactly as on the wire."""

    symbol: str = Field(pattern=r"^[A-Z0-9]{1,16}/[A-Z0-9]{1,16}$")
    """BASE/QUOTE, e.g. BTC/USDT."""
    tick_size: str
    """Price increment."""
    step_size: str
    """Quantity increment."""
    min_qty: str | None = None
    """Smallest quantity (default: one step)."""
    min_notional: str = "0"
    """Smallest price x quantity."""
    price_band_pct: int = Field(default=0, ge=0, le=100)
    """Limit prices within this percentage of the reference price (0: no band)."""
    max_open_orders: int = Field(default=0, ge=0)
    """Open orders per user and symbol (0: no limit)."""
    maker_fee_rate: str = "0.001"
    """Fee rate of the resting order's owner."""
    taker_fee_rate: str = "0.002"
    """Fee rate of the incoming order's owner."""
    reference_price: str | None = None
    """Price the band is centred on until the symbol trades."""

    @property
    def base_asset(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote_asset(self) -> str:
        return self.symbol.split("/")[1]


def _demo_symbols() -> list[SymbolSettings]:
    specs = [
        ("BTC/USDT", "0.01", "0.00001", "50000.00"),
        ("ETH/USDT", "0.01", "0.0001", "3000.00"),
        ("SOL/USDT", "0.001", "0.001", "150.000"),
        ("BNB/USDT", "0.01", "0.001", "600.00"),
        ("XRP/USDT", "0.0001", "0.1", "0.6000"),
        ("ADA/USDT", "0.0001", "0.1", "0.4500"),
        ("DOGE/USDT", "0.00001", "1", "0.15000"),
        ("LTC/USDT", "0.01", "0.001", "80.00"),
    ]
    return [
        SymbolSettings(
            symbol=symbol,
            tick_size=tick,
            step_size=step,
            reference_price=ref,
            min_notional="1",
            price_band_pct=20,
            max_open_orders=1000,
        )
        for symbol, tick, step, ref in specs
    ]


class MarketSettings(_Section):
    symbols: list[SymbolSettings] = Field(default_factory=_demo_symbols, min_length=1)
    """Tradable symbols and their rules, a JSON list of objects (symbol, tick_size,
    step_size, min_qty, min_notional, price_band_pct, max_open_orders, maker_fee_rate,
    taker_fee_rate, reference_price); the default is the demo's eight USDT markets."""

    @field_validator("symbols")
    @classmethod
    def _unique(cls, value: list[SymbolSettings]) -> list[SymbolSettings]:
        names = [s.symbol for s in value]
        if len(set(names)) != len(names):
            raise ValueError("symbols must be unique")
        return value

    def get(self, symbol: str) -> SymbolSettings | None:
        for spec in self.symbols:
            if spec.symbol == symbol:
                return spec
        return None


# The default HS256 secret. It is committed in this repository, so anyone can mint
# tokens with it: the gateway refuses to start with it unless ``gateway.dev_mode``.
DEV_HS256_SECRET = "dev-gateway-secret-change-me-0123456789abcdef"  # noqa: S105 (public on purpose)


class GatewayAuthSettings(_Section):
    """JWT verification. ``algorithms`` is the pinned list: a token whose header names
    any other algorithm (``none``, HS256 when only RS256 is allowed...) is refused.

    HS256 with ``hs256_secret`` is for development (``trade-engine gateway token``
    mints such tokens); production uses RS256 with the identity provider's public
    keys in ``jwks_file`` (a JWKS document; tokens must name their ``kid``). The
    default secret (``DEV_HS256_SECRET``) is public: the gateway starts with it only
    in development mode (``gateway.dev_mode``).
    """

    algorithms: list[Literal["HS256", "RS256"]] = Field(default=["HS256"], min_length=1)
    """Accepted token algorithms, a JSON list: ["HS256"], ["RS256"] or both."""
    hs256_secret: SecretStr | None = SecretStr(DEV_HS256_SECRET)
    """HS256 signing secret, at least 32 characters (the default is the public
    development secret, refused outside dev_mode)."""
    jwks_file: Path | None = None
    """The identity provider's public keys (a JWKS document), for RS256."""
    audience: str = "trade-engine"
    """Required aud claim."""
    issuer: str = "trade-engine-dev"
    """Required iss claim."""
    leeway_s: float = Field(default=30.0, ge=0, le=300)
    """Clock skew allowed on exp/nbf/iat, in seconds."""
    max_token_bytes: int = Field(default=4096, ge=256, le=65536)
    """Longer tokens are refused unparsed."""

    @model_validator(mode="after")
    def _keys_present(self) -> GatewayAuthSettings:
        if "HS256" in self.algorithms and (
            self.hs256_secret is None or len(self.hs256_secret.get_secret_value()) < 32
        ):
            raise ValueError("HS256 needs hs256_secret of at least 32 characters")
        if "RS256" in self.algorithms and self.jwks_file is None:
            raise ValueError("RS256 needs jwks_file (the identity provider's public keys)")
        return self


class GatewayRateLimitSettings(_Section):
    """Token buckets (GCRA): ``*_per_s`` sustained, ``*_burst`` requests at once."""

    enabled: bool = True
    """Rate limits on (429 with Retry-After when exceeded)."""
    user_per_s: float = Field(default=10.0, gt=0)
    """Sustained requests per second of one user."""
    user_burst: int = Field(default=20, ge=1)
    """Requests one user may send at once."""
    ip_per_s: float = Field(default=100.0, gt=0)
    """Sustained requests per second of one client IP (authenticated or not)."""
    ip_burst: int = Field(default=200, ge=1)
    """Requests one client IP may send at once."""


class GatewayCorsSettings(_Section):
    """Cross-origin requests from browsers (CORS). Off while ``allowed_origins`` is
    empty: no ``Access-Control-*`` header is ever sent and preflights are not answered.
    Only origins in the list get the headers; ``"*"`` allows every origin (tokens
    travel in the Authorization header, never in cookies, so no credentials mode)."""

    allowed_origins: list[str] = Field(default_factory=list)
    """Origins allowed to call the API from a browser, a JSON list such as
    ["https://app.example.com"] ("*": any origin). Empty: CORS off."""
    allowed_methods: list[str] = Field(
        default_factory=lambda: ["GET", "POST", "PATCH", "DELETE"], min_length=1
    )
    """Methods a preflight may ask for, a JSON list."""
    allowed_headers: list[str] = Field(
        default_factory=lambda: ["Authorization", "Content-Type"], min_length=1
    )
    """Request headers a preflight may ask for, a JSON list (case-insensitive)."""
    expose_headers: list[str] = Field(
        default_factory=lambda: [
            "Retry-After",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
            "Idempotent-Replayed",
        ]
    )
    """Response headers a browser script may read, a JSON list."""
    max_age_s: int = Field(default=600, ge=0, le=86_400)
    """How long a browser may cache a preflight's answer, in seconds."""

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin == "*":
                continue
            scheme, sep, rest = origin.partition("://")
            if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
                raise ValueError(
                    f"expected an origin such as https://app.example.com (no path), got {origin!r}"
                )
        return value

    @field_validator("allowed_methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        return [method.upper() for method in value]

    @property
    def enabled(self) -> bool:
        return bool(self.allowed_origins)


class GatewaySettings(_Section):
    """The REST/WebSocket gateway (``trade-engine gateway run``).

    ``redis_url`` (e.g. ``redis://127.0.0.1:6379/0``) shares rate limits and
    idempotency records between gateway processes; without it they live in the
    process, so only one process may run.

    ``dev_mode`` (``TE_GATEWAY__DEV_MODE``, or ``gateway run --dev-mode``) allows
    the gateway to start with the development HS256 secret committed in this
    repository; never set it where real users connect.
    """

    dev_mode: bool = False
    """Allow the development HS256 secret committed in this repository; never where
    real users connect."""
    host: str = "127.0.0.1"
    """Address the gateway listens on."""
    port: int = Field(default=8080, ge=1, le=65535)
    """Port the gateway listens on."""
    redis_url: str | None = None
    """Redis shared by several gateway processes (rate limits, idempotency records),
    e.g. redis://127.0.0.1:6379/0; unset: kept in the one process."""
    postgres_schema: str = "public"
    """Schema of the history tables the Postgres sink writes (orders, trades)."""
    auth: GatewayAuthSettings = GatewayAuthSettings()
    rate_limit: GatewayRateLimitSettings = GatewayRateLimitSettings()
    cors: GatewayCorsSettings = GatewayCorsSettings()
    max_open_orders_per_user: int = Field(default=200, ge=0)
    """Open orders one user may hold across symbols (0: no limit)."""
    idempotency_ttl_s: int = Field(default=86_400, ge=60)
    """How long a client_order_id's answer is replayed for a repeated request."""
    wait_timeout_ms: int = Field(default=1_000, ge=1, le=10_000)
    """Default wait of ?wait=true for the engine's first answer."""
    history_days: int = Field(default=90, ge=1)
    """How far back order and trade history queries reach."""
    producer_linger_ms: float = Field(default=1.0, ge=0, le=1000)
    """linger.ms of the gateway's Kafka producer (batching against latency)."""
    delivery_timeout_s: float = Field(default=5.0, gt=0, le=300)
    """How long an order waits for the broker's acknowledgement before a 503."""


class TracingSettings(_Section):
    """OpenTelemetry tracing (``trade_engine.tracing``): off unless ``otlp_endpoint`` is set.

    ``otlp_endpoint`` is an OTLP/HTTP collector base URL (Jaeger all-in-one:
    ``http://127.0.0.1:4318``); spans go to ``<endpoint>/v1/traces``.
    ``service_name`` overrides each worker's own name (``te-matcher``, ...).
    """

    otlp_endpoint: str | None = None
    """OTLP/HTTP collector base URL, e.g. http://127.0.0.1:4318; unset: tracing off."""
    service_name: str | None = None
    """Overrides each worker's own service name (te-matcher, ...)."""
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of new traces sampled (0..1)."""


class MarketDataSettings(_Section):
    """The market-data agent (``trade-engine market-data run``) and its topics.

    ``snapshot_every`` is in execution records per symbol (a snapshot follows the
    update that crosses it); ``snapshot_interval_s`` also snapshots, on idle, any
    symbol that changed since its last snapshot, so a quiet symbol's latest
    snapshot is never far behind its last diff.
    """

    metrics_port: int = Field(default=9471, ge=0, le=65535)
    """/metrics and /health port of the market-data worker."""
    publish_interval_s: float = Field(default=0.1, ge=0, le=5)
    """A caught-up worker publishes (commits a transaction) at most this often: the feeds
    wait up to this long, and the broker handles a few transactions a second instead of
    one per trickle of executions (0: publish as soon as caught up)."""
    snapshot_every: int = Field(default=1000, ge=1)
    """A depth snapshot after this many execution records of a symbol."""
    snapshot_interval_s: float = Field(default=10.0, gt=0)
    """On idle, snapshot every symbol that changed since its last snapshot this often."""
    depth_retention_ms: int = Field(default=24 * 3600 * 1000, ge=60_000)
    """Retention of the depth topics, in milliseconds."""
    candles_retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=60_000)
    """Retention of the candle and ticker topics, in milliseconds."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    postgres: PostgresSettings = PostgresSettings()
    rabbitmq: RabbitMQSettings = RabbitMQSettings()
    wallet: WalletSettings = WalletSettings()
    market: MarketSettings = MarketSettings()
    gateway: GatewaySettings = GatewaySettings()
    market_data: MarketDataSettings = MarketDataSettings()
    tracing: TracingSettings = TracingSettings()
    state_dir: Path = Path(".state")
    """Local state: the matcher's RocksDB books, logs, downloaded jars."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level of every worker (JSON lines)."""
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    """/metrics and /health port of the matcher run without --metrics-port; the demo
    (`make run`) numbers the other workers' ports from it (9465, 9466, ...)."""
    metrics_host: str = "127.0.0.1"
    """Address of each worker's /metrics and /health server; 0.0.0.0 in containers."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = settings_cls.model_config.get("yaml_file") or os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    @cached_property
    def topic_names(self) -> dict[str, str]:
        p = self.topics.prefix
        return {
            "commands": f"{p}commands",
            "accepted": f"{p}commands.accepted",
            "executions": f"{p}executions",
            "trades": f"{p}trades",
            "dead_letter": f"{p}dead-letter",
            "matcher_changelog": f"{p}matcher.changelog",
            "md_depth": f"{p}md.depth",
            "md_depth_snapshot": f"{p}md.depth.snapshot",
            "md_candles": f"{p}md.candles",
            "md_tickers": f"{p}md.tickers",
        }

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data with secrets masked, safe to log."""
        return self.model_dump(mode="json")


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build and validate the settings; any problem becomes one ``ConfigError``.

    The error names each offending setting by its dotted path so that the
    operator sees ``kafka.bootstrap_servers: ...`` rather than a traceback.
    """
    settings_cls = Settings
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(CONFIG_FILE_ENV, f"config file {str(path)!r} does not exist")

        class _SettingsFromFile(Settings):
            model_config = SettingsConfigDict(yaml_file=path)

        settings_cls = _SettingsFromFile
    elif (env_file := os.environ.get(CONFIG_FILE_ENV)) and not Path(env_file).is_file():
        raise ConfigError(CONFIG_FILE_ENV, f"config file {env_file!r} does not exist")
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            setting = ".".join(str(part) for part in err["loc"]) or "<root>"
            message = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append((setting, message))
        first_setting = problems[0][0]
        detail = "; ".join(f"{setting}: {message}" for setting, message in problems)
        raise ConfigError(first_setting, detail.removeprefix(f"{first_setting}: ")) from None


# --- .env.example ------------------------------------------------------------------------

ENV_EXAMPLE_HEADER = """\
# Every setting of the trade engine as an environment variable: TE_ prefix, `__`
# between nested names (trade_engine/config.py; README.md, "Configuration").
# Generated by `python -m trade_engine.config --env-example > .env.example`; a test
# fails when this file is not current. Each line is commented out with its default:
# uncomment and set only what differs. Secrets are left empty here: never commit
# real values. Lists and objects are JSON.
"""


def _env_value(value: Any) -> str:
    """A default as an environment variable's value (shell-quoted when it needs it)."""
    if value is None or isinstance(value, SecretStr):
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | int | float | Path):
        text = str(value)
    else:  # lists and objects: JSON, as pydantic-settings parses them
        text = json.dumps(
            value.model_dump(mode="json") if isinstance(value, BaseModel) else value,
            separators=(",", ":"),
            default=lambda v: v.model_dump(mode="json"),
        )
    return shlex.quote(text)


def _choices(annotation: Any) -> list[str]:
    """The values of a Literal setting (``Literal[...] | None`` too)."""
    if get_origin(annotation) is Literal:
        return [str(v) for v in get_args(annotation)]
    return [c for arg in get_args(annotation) for c in _choices(arg)]


def _secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in get_args(annotation)


def env_variables(
    model: type[BaseModel] = Settings, prefix: str = "TE_"
) -> list[tuple[str, str, str, bool]]:
    """Every leaf setting as (variable, default, description, secret): a section's own
    settings in model order, then its subsections'."""
    out: list[tuple[str, str, str, bool]] = []
    sections: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        variable = f"{prefix}{name.upper()}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sections.append((variable + "__", annotation))
            continue
        default = field.get_default(call_default_factory=True)
        description = " ".join((field.description or "").split())
        choices = _choices(annotation)
        if choices:
            description += f" One of: {', '.join(choices)}."
        secret = _secret(annotation)
        out.append((variable, "" if secret else _env_value(default), description.strip(), secret))
    for section_prefix, section in sections:
        out += env_variables(section, section_prefix)
    return out


def env_example() -> str:
    """The text of ``.env.example``: every TE_* variable, its default and description."""
    entries = [
        (
            CONFIG_FILE_ENV,
            "",
            "A YAML settings file, below the environment in priority "
            "(`trade-engine --config FILE` does the same).",
            False,
        ),
        *env_variables(),
    ]
    lines = [ENV_EXAMPLE_HEADER.rstrip("\n")]
    section = None
    for variable, default, description, secret in entries:
        parts = variable.removeprefix("TE_").lower().split("__")
        current = ".".join(parts[:-1]) or "general"
        if current != section:
            section = current
            lines += ["", f"# --- {section} " + "-" * (84 - len(section))]
        else:
            lines.append("#")
        text = description + (" Secret: set it, never commit it." if secret else "")
        lines += [f"# {line}" for line in textwrap.wrap(text, 86, break_on_hyphens=False)]
        lines.append(f"# {variable}={default}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m trade_engine.config --env-example``: print ``.env.example``."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["--env-example"]:
        print("usage: python -m trade_engine.config --env-example > .env.example", file=sys.stderr)
        return 2
    sys.stdout.write(env_example())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
