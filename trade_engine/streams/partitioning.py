"""Which partition a symbol's records belong to, and the check every stage makes.

Every topic on the order path is keyed by symbol and equally partitioned, so a
symbol's whole history is one ordered partition. That holds only if every
record sits on the partition its key maps to: a record produced to another
partition (a producer with librdkafka's default partitioner, or an explicit
partition) would be matched against a second, empty book of its symbol, with
its own ``seq`` from 1. Every stage reading a symbol-keyed topic therefore
checks the record's partition against its key and dead-letters a misrouted
record as ``WRONG_PARTITION``.

The mapping is Kafka's default (Java client, Faust, librdkafka's
``murmur2_random``): ``(murmur2(key) & 0x7fffffff) % partitions``.
"""

from __future__ import annotations

from functools import lru_cache

from trade_engine.streams.codes import DeadLetterCode

WRONG_PARTITION = DeadLetterCode.WRONG_PARTITION

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 of ``data`` (as an unsigned int)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    end = length - length % 4
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    extra = length % 4
    if extra == 3:
        h ^= data[end + 2] << 16
    if extra >= 2:
        h ^= data[end + 1] << 8
    if extra >= 1:
        h ^= data[end]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


@lru_cache(maxsize=4096)
def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` among ``partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def wrong_partition(key: bytes | None, partition: int, partitions: int) -> tuple[str, str] | None:
    """``(WRONG_PARTITION, reason)`` when a keyed record is not on its key's partition."""
    if key is None:
        return None  # keyless records are refused by the key/symbol check
    expected = partition_for(key, partitions)
    if expected == partition:
        return None
    return (
        WRONG_PARTITION,
        f"key {key[:100]!r} belongs on partition {expected} of {partitions}, not {partition}",
    )
