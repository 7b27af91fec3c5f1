"""Calling a wallet service: the HTTP client, its circuit breaker, the wire models and
the typed errors of the contract (``docs/wallet.md``). The service itself is
``trade_engine.wallet``; nothing here touches its database.
"""
