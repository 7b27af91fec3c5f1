"""The local RocksDB store of one partition's book state (rocksdict).

It is a cache of the changelog topic: every write is one atomic WriteBatch
that also records the changelog offset it reflects, so after a crash the store
is either before or after a batch, never inside one, and a restart reads the
changelog only past that offset.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import cast

from rocksdict import Options, Rdict, WriteBatch

from trade_engine.tables.durable import CHANGELOG_OFFSET_KEY, Changes


class LocalStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self._db = Rdict(str(path), options=options)

    def changelog_offset(self) -> int:
        """The last changelog offset this store reflects, or -1 when empty."""
        raw = self._db.get(CHANGELOG_OFFSET_KEY)
        return -1 if raw is None else int(raw)

    def write(self, changes: Changes, changelog_offset: int) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in changes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(CHANGELOG_OFFSET_KEY, str(changelog_offset).encode())
        self._db.write(batch)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self._db.items():
            if key != CHANGELOG_OFFSET_KEY:
                yield cast(bytes, key), cast(bytes, value)

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def destroy(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
