"""Settings: defaults point at the local stack; bad configuration names the setting."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from trade_engine.cli import main
from trade_engine.config import (
    DEV_HS256_SECRET,
    Settings,
    env_example,
    env_variables,
    load_settings,
)
from trade_engine.config import main as config_main
from trade_engine.errors import ConfigError


def test_defaults_point_at_the_local_stack() -> None:
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.postgres.dsn().startswith("postgresql://trade_engine:")
    assert settings.topic_names["commands"] == "te.commands"


def test_environment_overrides_nested_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TE_KAFKA__BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("TE_TOPICS__PARTITIONS", "12")
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert settings.topics.partitions == 12


def test_yaml_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TE_CONFIG_FILE", raising=False)
    config = tmp_path / "engine.yaml"
    config.write_text("postgres:\n  host: db.internal\n  password: s3cret\n")
    settings = load_settings(config)
    assert settings.postgres.host == "db.internal"
    assert "s3cret" not in str(settings.redacted())
    assert "s3cret" in settings.postgres.dsn()


@pytest.mark.parametrize(
    ("env", "value", "setting"),
    [
        ("TE_KAFKA__BOGUS", "1", "kafka.bogus"),
        ("TE_KAFKA__BOOTSTRAP_SERVERS", "no-port", "kafka.bootstrap_servers"),
        ("TE_POSTGRES__PORT", "seventy", "postgres.port"),
        ("TE_TOPICS__PARTITIONS", "0", "topics.partitions"),
    ],
)
def test_invalid_settings_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, setting: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as excinfo:
        load_settings()
    assert excinfo.value.setting == setting


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.yaml")


def test_cli_reports_config_errors_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TE_RABBITMQ__PORT", "99999")
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err
    assert "rabbitmq.port" in err
    assert "Traceback" not in err


def test_cli_config_show_masks_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "**********" in out
    assert "dev-wallet-token" not in out


@pytest.mark.broker
@pytest.mark.postgres
@pytest.mark.rabbitmq
def test_check_names_unreachable_broker_and_wrong_passwords(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check"]) == 0
    monkeypatch.setenv("TE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("TE_KAFKA__CONNECT_TIMEOUT_S", "1")
    monkeypatch.setenv("TE_POSTGRES__PASSWORD", "wrong")
    monkeypatch.setenv("TE_RABBITMQ__PASSWORD", "wrong")
    assert main(["check"]) == 2
    out = capsys.readouterr().out
    assert "kafka.bootstrap_servers: no broker answered" in out
    assert "postgres.password: authentication failed" in out
    assert "rabbitmq.password: authentication failed" in out


REPO = Path(__file__).resolve().parent.parent


def test_env_example_is_current() -> None:
    assert (REPO / ".env.example").read_text() == env_example(), (
        ".env.example is stale: python -m trade_engine.config --env-example > .env.example"
    )


def test_env_example_lists_every_setting_with_a_description() -> None:
    text = (REPO / ".env.example").read_text()
    variables = env_variables()
    assert len(variables) > 60
    for variable, _, description, _ in variables:
        assert f"\n# {variable}=" in text, variable
        assert description, f"{variable} has no description: give its field a docstring"
    assert "\n# TE_GATEWAY__CORS__ALLOWED_ORIGINS='[]'\n" in text
    assert "\n# TE_GATEWAY__RATE_LIMIT__USER_PER_S=10.0\n" in text
    assert "\n# TE_CONFIG_FILE=\n" in text
    # Nothing is set by copying it as it is.
    assert all(line.startswith("#") for line in text.splitlines() if line)


def test_env_example_masks_secrets() -> None:
    text = (REPO / ".env.example").read_text()
    secrets = {v for v, _, _, secret in env_variables() if secret}
    assert secrets == {
        "TE_KAFKA__SASL_PASSWORD",
        "TE_POSTGRES__PASSWORD",
        "TE_RABBITMQ__PASSWORD",
        "TE_WALLET__SERVICE_TOKEN",
        "TE_GATEWAY__AUTH__HS256_SECRET",
    }
    for variable in secrets:
        assert f"\n# {variable}=\n" in text
    for value in (DEV_HS256_SECRET, "dev-wallet-token"):
        assert value not in text


def test_env_example_defaults_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Uncommenting every line that has a value changes no setting: each default is
    written as the environment variable pydantic-settings parses back to it."""
    for key in [k for k in os.environ if k.startswith("TE_")]:
        monkeypatch.delenv(key)
    assigned = 0
    for line in (REPO / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"# (TE_[A-Z0-9_]+)=(.+)", line)
        if match:
            (value,) = shlex.split(match.group(2))
            monkeypatch.setenv(match.group(1), value)
            assigned += 1
    assert assigned > 50
    assert load_settings() == Settings()


def test_env_example_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert config_main(["--env-example"]) == 0
    assert capsys.readouterr().out == env_example()
    assert config_main([]) == 2
