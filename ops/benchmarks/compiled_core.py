"""Build the matching core with mypyc, beside (never instead of) the pure source.

The pure Python package stays the executable reference: the engine imports it,
the tests run it. This builds a compiled copy of ``trade_engine.tables.matching``
into ``.state/compiled-core/<digest>/`` (the digest covers the sources and the
mypy version, so an unchanged core is not rebuilt) that a separate process puts
first on ``sys.path``. The benchmark runs both on the same workload and refuses
a compiled result whose state hash differs from the pure one.

    python -m ops.benchmarks.compiled_core        # build (or reuse) and print the path
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import mypy.version

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "trade_engine" / "tables" / "matching"
# What the core imports from outside its own package (checked by import-linter).
SUPPORT = (REPO / "trade_engine" / "errors.py",)
DEFAULT_ROOT = REPO / ".state" / "compiled-core"
READY = ".built"


def sources() -> list[Path]:
    return sorted(CORE.glob("*.py")) + list(SUPPORT)


def digest() -> str:
    h = hashlib.sha256(f"mypy {mypy.version.__version__} {sys.version}".encode())
    for path in sources():
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def build(root: Path = DEFAULT_ROOT, quiet: bool = True) -> Path:
    """The directory to put first on ``sys.path`` for the compiled core."""
    dest = root / digest()
    if (dest / READY).exists():
        return dest
    if dest.exists():
        shutil.rmtree(dest)  # a build that did not finish
    pkg = dest / "trade_engine" / "tables" / "matching"
    pkg.mkdir(parents=True)
    # Minimal parents: only the core and what it imports are in this tree.
    (dest / "trade_engine" / "__init__.py").write_text('"""Compiled core build."""\n')
    (dest / "trade_engine" / "tables" / "__init__.py").write_text("")
    for path in SUPPORT:
        shutil.copy2(path, dest / "trade_engine" / path.name)
    for path in sorted(CORE.glob("*.py")):
        shutil.copy2(path, pkg / path.name)
    result = subprocess.run(
        [sys.executable, "-m", "mypyc", "trade_engine/tables/matching/"],
        cwd=dest,
        capture_output=quiet,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"mypyc failed:\n{result.stdout}\n{result.stderr}")
    compiled = list(pkg.glob("engine.*.so"))
    if not compiled:
        raise RuntimeError(f"mypyc produced no extension module in {pkg}")
    shutil.rmtree(dest / "build", ignore_errors=True)
    (dest / READY).write_text(digest() + "\n")
    return dest


if __name__ == "__main__":
    print(build(quiet=False))
