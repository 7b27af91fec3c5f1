"""The wallet service: a double-entry ledger in PostgreSQL behind an HTTP API.

``ledger`` owns the money rules (reserve, release, settle-trade, deposit,
withdraw; idempotent, row locks in one fixed order) one operation per
transaction, ``batch`` the same rules for a whole batch in one transaction,
``rules`` what both share, ``service`` the HTTP API, ``schema`` its SQL
(``sql/``), ``reconcile`` the ledger's invariants. The engine calls it through
``trade_engine.connectors.wallet`` (client, breaker, wire models, errors), and
could be pointed at another service speaking the same contract (``docs/wallet.md``).
"""
