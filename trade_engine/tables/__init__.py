"""Order books and their durable state.

``tables.matching`` is the pure, deterministic matching core: it must never
import Kafka, Faust, RocksDB or database modules (an import-linter contract
checks this). The durable state adapters live beside it.
"""
