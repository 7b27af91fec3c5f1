"""The mypyc-compiled core must behave exactly like the pure source it is built from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ops.benchmarks import bench_matching, compiled_core
from ops.benchmarks.compiled_core import build

BENCH = Path(bench_matching.__file__)


@pytest.mark.slow
def test_compiled_core_reaches_the_same_state_as_the_pure_one() -> None:
    path = build()
    args = ["--ops=20000", "--resting=2000", "--seed=11"]
    child = subprocess.run(
        [sys.executable, str(BENCH), "--timed-only", *args],
        env={**os.environ, bench_matching.CORE_PATH_ENV: str(path)},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    compiled = json.loads(child.stdout.strip().splitlines()[-1])
    assert compiled["core_module"].endswith(".so"), compiled["core_module"]

    setup, cmds = bench_matching.build_workload(20_000, 2_000, 11)
    pure = bench_matching.run_timed(setup, cmds)
    assert compiled["records"] == pure["records"]
    assert compiled["state_hash"] == pure["state_hash"]


def test_build_reuses_an_unchanged_core(tmp_path: Path) -> None:
    """A finished build is found by digest, so a second call does not recompile."""
    done = tmp_path / compiled_core.digest()
    done.mkdir()
    (done / compiled_core.READY).write_text("x\n")
    assert build(tmp_path) == done
