"""The pipeline benchmark's verdict on a step, on made-up lag series."""

from __future__ import annotations

import os

from ops.benchmarks.bench_pipeline import _pct, _ticks, judge


def test_bounded_flat_lag_is_sustained() -> None:
    ok, reason = judge({"risk": [40, 60, 50, 45, 55, 50, 48, 52, 47]}, {"risk": 1000.0})
    assert ok, reason


def test_lag_above_two_seconds_of_input_is_not() -> None:
    ok, reason = judge({"matcher": [100, 300, 2500, 800, 100, 50]}, {"matcher": 1000.0})
    assert not ok
    assert "matcher lag 2500" in reason


def test_a_growing_lag_is_not_even_when_still_small() -> None:
    growing = [10, 20, 30, 200, 400, 600, 800, 1000, 1200]
    ok, reason = judge({"settlement": growing}, {"settlement": 1000.0})
    assert not ok
    assert "grew" in reason


def test_percentiles_and_cpu_ticks() -> None:
    assert _pct([], 0.5) is None
    assert _pct([float(v) for v in range(1, 101)], 0.99) == 100.0
    assert _ticks(os.getpid()) >= 0
