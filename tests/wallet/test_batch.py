"""Pure parts of the set-based batch path (no database)."""

from __future__ import annotations

import uuid

from trade_engine.wallet.batch import new_reservation_id


def test_reservation_ids_are_random_v4_uuids() -> None:
    ids = {new_reservation_id() for _ in range(2000)}
    assert len(ids) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == text
