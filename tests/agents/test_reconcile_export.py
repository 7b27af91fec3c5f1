"""The reconcile exporter counts only drift that two runs in a row report, per check."""

from __future__ import annotations

from trade_engine.agents.reconcile import (
    DRIFT,
    LAST_RUN,
    PROBLEMS,
    DriftTracker,
    EngineReport,
    check_of,
    export,
)


def test_each_problem_line_has_its_check() -> None:
    assert check_of("wallet ledger: asset BTC postings sum to 1") == "ledger"
    assert check_of("trade BTC/USDT:7 was not settled") == "trades"
    assert check_of("... 3 more trades that was not settled") == "trades"
    assert check_of("order o1 (BTC/USDT BUY): wallet holds 5 USDT, engine expects 4") == "holds"
    assert check_of("the wallet holds 1 BTC of u1 for order o9, which is not open") == "holds"
    assert check_of("... and 4 more hold differences") == "holds"


def test_only_problems_seen_twice_in_a_row_are_drift() -> None:
    tracker = DriftTracker()
    in_flight = "order o1 (BTC/USDT BUY): wallet holds 5 USDT, engine expects 4"
    stuck = "trade BTC/USDT:7 was not settled"
    assert tracker.update([in_flight, stuck]) == {"ledger": 0, "holds": 0, "trades": 0}
    # o1 moved on (a fill changed its amounts); the trade is still unsettled.
    moved = "order o1 (BTC/USDT BUY): wallet holds 3 USDT, engine expects 2"
    assert tracker.update([moved, stuck]) == {"ledger": 0, "holds": 0, "trades": 1}
    assert tracker.update([]) == {"ledger": 0, "holds": 0, "trades": 0}


def test_export_sets_the_gauges() -> None:
    tracker = DriftTracker()
    report = EngineReport(problems=["wallet ledger: USDT balance of u1 is negative"])
    export(report, tracker)
    assert PROBLEMS.labels("ledger")._value.get() == 1
    assert DRIFT.labels("ledger")._value.get() == 0
    export(report, tracker)
    assert DRIFT.labels("ledger")._value.get() == 1
    assert LAST_RUN._value.get() > 0
    export(EngineReport(), tracker)
    assert DRIFT.labels("ledger")._value.get() == 0
    assert PROBLEMS.labels("ledger")._value.get() == 0
