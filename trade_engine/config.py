"""The one validated settings object.

Sources, highest priority first: keyword arguments, environment variables
(``TE_`` prefix, ``__`` between nested names, e.g. ``TE_KAFKA__BOOTSTRAP_SERVERS``),
a YAML file (``TE_CONFIG_FILE`` or ``--config``), then defaults that point at the
local stack started by ``ops/stack.sh``. Unknown keys are errors, secrets are
``SecretStr`` and never printed in clear.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
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
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "trade-engine"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    connect_timeout_s: float = Field(default=10.0, gt=0)

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
    partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1)
    retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=-1)


class PostgresSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=5432, ge=1, le=65535)
    user: str = "trade_engine"
    password: SecretStr = SecretStr("trade_engine")
    database: str = "trade_engine"
    connect_timeout_s: float = Field(default=10.0, gt=0)

    def dsn(self) -> str:
        password = quote(self.password.get_secret_value(), safe="")
        return f"postgresql://{quote(self.user)}:{password}@{self.host}:{self.port}/{self.database}"


class RabbitMQSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=5672, ge=1, le=65535)
    user: str = "trade_engine"
    password: SecretStr = SecretStr("trade_engine")
    vhost: str = "/"
    connect_timeout_s: float = Field(default=10.0, gt=0)

    def url(self) -> str:
        password = quote(self.password.get_secret_value(), safe="")
        vhost = quote(self.vhost, safe="")
        return f"amqp://{quote(self.user)}:{password}@{self.host}:{self.port}/{vhost}"


class WalletSettings(_Section):
    url: str = "http://127.0.0.1:8081"
    service_token: SecretStr = SecretStr("dev-wallet-token")
    timeout_s: float = Field(default=2.0, gt=0)
    max_retries: int = Field(default=5, ge=0)


class SymbolSettings(_Section):
    """One tradable symbol. Amounts are decimal strings, exactly as on the wire."""

    symbol: str = Field(pattern=r"^[A-Z0-9]{1,16}/[A-Z0-9]{1,16}$")
    tick_size: str
    step_size: str
    min_qty: str | None = None
    min_notional: str = "0"
    price_band_pct: int = Field(default=0, ge=0, le=100)
    max_open_orders: int = Field(default=0, ge=0)
    maker_fee_rate: str = "0.001"
    taker_fee_rate: str = "0.002"
    reference_price: str | None = None

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
    hs256_secret: SecretStr | None = SecretStr(DEV_HS256_SECRET)
    jwks_file: Path | None = None
    audience: str = "trade-engine"
    issuer: str = "trade-engine-dev"
    leeway_s: float = Field(default=30.0, ge=0, le=300)
    max_token_bytes: int = Field(default=4096, ge=256, le=65536)

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
    user_per_s: float = Field(default=10.0, gt=0)
    user_burst: int = Field(default=20, ge=1)
    ip_per_s: float = Field(default=100.0, gt=0)
    ip_burst: int = Field(default=200, ge=1)


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
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    redis_url: str | None = None
    postgres_schema: str = "public"
    auth: GatewayAuthSettings = GatewayAuthSettings()
    rate_limit: GatewayRateLimitSettings = GatewayRateLimitSettings()
    max_open_orders_per_user: int = Field(default=200, ge=0)
    idempotency_ttl_s: int = Field(default=86_400, ge=60)
    wait_timeout_ms: int = Field(default=1_000, ge=1, le=10_000)
    history_days: int = Field(default=90, ge=1)
    producer_linger_ms: float = Field(default=1.0, ge=0, le=1000)
    delivery_timeout_s: float = Field(default=5.0, gt=0, le=300)


class TracingSettings(_Section):
    """OpenTelemetry tracing (``trade_engine.tracing``): off unless ``otlp_endpoint`` is set.

    ``otlp_endpoint`` is an OTLP/HTTP collector base URL (Jaeger all-in-one:
    ``http://127.0.0.1:4318``); spans go to ``<endpoint>/v1/traces``.
    ``service_name`` overrides each worker's own name (``te-matcher``, ...).
    """

    otlp_endpoint: str | None = None
    service_name: str | None = None
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)


class MarketDataSettings(_Section):
    """The market-data agent (``trade-engine market-data run``) and its topics.

    ``snapshot_every`` is in execution records per symbol (a snapshot follows the
    update that crosses it); ``snapshot_interval_s`` also snapshots, on idle, any
    symbol that changed since its last snapshot, so a quiet symbol's latest
    snapshot is never far behind its last diff.
    """

    metrics_port: int = Field(default=9471, ge=0, le=65535)
    snapshot_every: int = Field(default=1000, ge=1)
    snapshot_interval_s: float = Field(default=10.0, gt=0)
    depth_retention_ms: int = Field(default=24 * 3600 * 1000, ge=60_000)
    candles_retention_ms: int = Field(default=7 * 24 * 3600 * 1000, ge=60_000)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
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
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    # Address of each worker's /metrics and /health server; 0.0.0.0 in containers.
    metrics_host: str = "127.0.0.1"

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
