"""Workers refuse to start on an unreachable broker with one line naming the setting."""

from __future__ import annotations

import pytest

from trade_engine.cli import main


@pytest.mark.parametrize(
    "argv",
    [["matcher", "run", "--worker-id", "x"], ["validation", "run"], ["demo", "--duration", "1"]],
)
def test_unreachable_broker_is_a_named_config_error(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("TE_KAFKA__CONNECT_TIMEOUT_S", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "kafka.bootstrap_servers: no broker answered" in err
    assert "Traceback" not in err
