"""The settlement agent: ``te.executions`` -> the wallet service.

For each execution record it makes the wallet call the record implies:

- ``TRADE``: settle-trade, key ``trade_id``;
- ``ORDER_ENDED`` / ``REJECTED`` of a PLACE with ``release > 0``: release of
  exactly ``release``, key ``order_id``;
- ``AMENDED`` with ``reserve_delta < 0``: partial release of ``-reserve_delta``,
  key ``<order_id>:<seq>``; with ``reserve_delta > 0``: a top-up reserve, key
  ``<order_id>:amend:<seq>``.

Everything else needs no money movement. Every key is deterministic, so a
record delivered twice (a crash before the offset commit, a redrive) replays
the wallet's stored answer instead of moving money twice.

**Ordering.** A poll returns records in log order per partition, and one
order's records all live in one partition. A batch is cut into *phases*, each
one batch call of one kind (reserve, settle or release), executed one after
the other. A record may join an earlier phase than its predecessors only if
no earlier record of the same order sits in a later phase, so each order's
operations keep their log order (a trade settles before its order's final
release). Top-up reserves take funds from the available balance, which other
orders' settles and releases feed, so a reserve never moves ahead of any
record before it.

**Failures.** Errors of the call itself (wallet unreachable, 5xx, open
circuit) and per-item retriable errors are retried with capped, jittered
exponential backoff for up to ``retry_budget_s``; nothing is skipped
meanwhile (back-pressure). Business errors (the wallet refused the item:
``RESERVATION_EXCEEDED``, ``IDEMPOTENCY_CONFLICT``...) and exhausted retries
send the record to the dead-letter topic with ``dlq.*`` headers and count in
``te_settlement_dead_letters_total``; ``trade-engine settlement redrive``
applies them again later. Offsets are committed only after every record of
the batch was acknowledged by the wallet or durably dead-lettered.

**Why confluent-kafka, not Faust.** The agent's correctness rests on three
things Faust hides: ``read_committed`` isolation on the matcher's
transactional output, committing an offset only after the wallet answered for
every record before it, and a blocking back-pressure loop that never skips a
record. A plain consumer with manual commits states all three in a few lines
(and is several times faster per record, see docs/benchmarks.md).
"""
