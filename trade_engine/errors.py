"""The root of the engine's exception hierarchy.

Every error the engine raises on purpose derives from ``TradeEngineError``.
``retriable`` tells callers whether trying again may succeed; ``code`` is the
stable machine-readable code surfaced to users and operators.
"""

from __future__ import annotations


class TradeEngineError(Exception):
    code = "INTERNAL_ERROR"
    retriable = False


class ConfigError(TradeEngineError):
    """The configuration is invalid or a configured service cannot be used.

    The message names the setting (for example ``kafka.bootstrap_servers``) so
    an operator can fix it without reading a stack trace.
    """

    code = "CONFIG_INVALID"

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem
