"""The short crash test: SIGKILL matcher workers mid-run; trades equal an offline replay.

``make crash-test`` runs the long version (200k orders, 8 symbols, 4 partitions).
"""

from __future__ import annotations

import json

import pytest

from ops import crash_test


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["kill", "two-workers", "wipe-state"])
def test_killed_workers_lose_and_duplicate_nothing(
    scenario: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = crash_test.main(
        ["--orders", "40000", "--kills", "2", "--scenario", scenario, "--seed", "11"]
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["trades"] > 500, "the flow must actually trade for the test to mean anything"
    assert summary["kills"] >= (2 if scenario == "kill" else 1)
    assert summary["lost"] == 0
    assert summary["duplicated"] == 0
    assert summary["seq_gaps"] == 0
    assert summary["hash_equal"] is True
    assert summary["changelog_equal"] is True
    assert summary["executions_compared"] > summary["trades"], "every record, not only trades"
    assert summary["scenarios"][0]["first_difference"] is None
    assert code == 0
