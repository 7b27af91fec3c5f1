"""``StuckCallWatchdog``: a guarded call that outlives its own timeout ends the process
(here: a recorded exit), one that returns in time does not."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from trade_engine.streams.watchdog import EXIT_STUCK, StuckCallWatchdog


def _watchdog(exits: list[int]) -> StuckCallWatchdog:
    return StuckCallWatchdog(grace_s=0.2, check_every_s=0.05, exit=exits.append)


def test_a_call_stuck_past_its_timeout_ends_the_process(caplog: pytest.LogCaptureFixture) -> None:
    exits: list[int] = []
    watchdog = _watchdog(exits)
    with caplog.at_level(logging.CRITICAL), watchdog.guard("send_offsets_to_transaction", 0.1):
        assert watchdog.fired.wait(5.0), "the watchdog never fired"
    assert exits == [EXIT_STUCK]
    assert "send_offsets_to_transaction has not returned" in caplog.text


def test_calls_that_return_in_time_are_left_alone() -> None:
    exits: list[int] = []
    watchdog = _watchdog(exits)
    for _ in range(5):
        with watchdog.guard("commit_transaction", 0.1):
            time.sleep(0.05)
    time.sleep(0.6)  # well past every deadline, with no call in progress
    assert exits == []
    assert not watchdog.fired.is_set()


def test_a_slow_call_within_its_timeout_and_grace_is_left_alone() -> None:
    exits: list[int] = []
    watchdog = _watchdog(exits)
    with watchdog.guard("abort_transaction", 0.2):
        time.sleep(0.3)  # past the timeout, within the grace
    time.sleep(0.2)
    assert exits == []


def test_it_fires_even_when_a_log_handler_cannot_flush(tmp_path: Path) -> None:
    # Seen under pytest: a handler left on the root logger by an earlier test wrote to a
    # stream since closed; its flush raised and killed the watchdog thread before the exit.
    stream = (tmp_path / "closed.log").open("w")
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    stream.close()
    exits: list[int] = []
    watchdog = _watchdog(exits)
    try:
        with watchdog.guard("commit_transaction", 0.1):
            assert watchdog.fired.wait(5.0), "the watchdog never fired"
    finally:
        root.removeHandler(handler)
    assert exits == [EXIT_STUCK]
