"""The codec benchmark on a small flow: every figure is there, and the records it times
are the matcher's own."""

from __future__ import annotations

from ops.benchmarks.bench_codecs import records, run
from trade_engine.streams.execution_records import decode_execution, decode_trade


def test_a_small_run_reports_every_figure() -> None:
    result = run(300, 1, 1)
    assert result["commands"] == 300
    for topic in ("executions", "trades", "commands"):
        assert result[f"{topic}_old_us"] > 0
        assert result[f"{topic}_new_us"] > 0
        assert result[f"{topic}_ratio"] > 0
    assert "ACCEPTED" in result["executions_by_kind_us"]


def test_the_timed_records_decode() -> None:
    data = records(200, 2)
    assert data["executions"]
    assert data["trades"]
    assert all(decode_execution(v).seq > 0 for v in data["executions"])
    assert all(decode_trade(v).trade_id for v in data["trades"])
