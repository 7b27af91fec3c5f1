"""The matcher stage: ``te.commands.accepted`` -> ``te.executions`` and ``te.trades``.

``step`` is the pure function of one input record and the partition's books
(shared with the offline replay); ``worker`` drives it in Kafka transactions
with the changelog and the input offsets; ``standby`` keeps warm copies of other
workers' partitions; ``replay`` re-matches the log offline and compares.
"""
