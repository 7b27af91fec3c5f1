"""Trade engine of a white-label crypto exchange.

Orders flow through Kafka topics keyed by symbol; Faust agents validate them,
reserve funds, match them against in-memory order books made durable in
RocksDB-backed tables, and stream executions and trades to sinks.

Subpackages map to pipeline stages: ``streams`` (topics, schemas, codecs),
``agents`` (risk, matcher, settlement, market data), ``tables`` (order books and
their durable state; ``tables.matching`` is the pure matching core),
``sinks`` (Postgres, wallet settlement, RabbitMQ), ``connectors`` (gateway, SDK,
CLI, wallet client), ``migrations`` and ``ops``.
"""

__version__ = "0.1.0"
