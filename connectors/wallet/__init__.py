"""The wallet: a double-entry ledger in PostgreSQL behind an HTTP service, and its client.

``ledger`` owns the money rules (reserve, release, settle-trade, deposit,
withdraw; idempotent, row locks in one fixed order), ``service`` exposes them over
HTTP, ``client`` is what the engine's agents call, ``reconcile`` checks the
ledger's invariants. The engine can be pointed at another wallet service that
speaks the same contract (``docs/wallet.md``).
"""
