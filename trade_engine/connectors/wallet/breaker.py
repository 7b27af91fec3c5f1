"""A small asyncio-friendly circuit breaker with an injectable clock.

CLOSED counts consecutive failures; at ``failure_threshold`` it opens. OPEN
rejects every call (``CircuitOpenError``) until ``reset_timeout_s`` has passed,
then HALF_OPEN lets ``half_open_max_calls`` trial calls through: one success
closes it, one failure opens it again for another cool-down. Only failures that
say the service is unwell count (the client reports connection errors,
timeouts, 5xx and 429); a business error is an answer, so it counts as success.
The state is exported as the gauge ``te_wallet_client_circuit_state``.

Why not a library: aiobreaker's last release is from 2021, pybreaker's async
support is Tornado-based, and neither takes an injectable clock; this is 80 lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

from trade_engine.connectors.wallet.exceptions import CircuitOpenError
from trade_engine.connectors.wallet.metrics import BREAKER_STATE


class BreakerState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        name: str = "wallet",
        *,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        half_open_max_calls: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or half_open_max_calls < 1 or reset_timeout_s < 0:
            raise ValueError("failure_threshold and half_open_max_calls must be >= 1")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.half_open_max_calls = half_open_max_calls
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trials = 0
        self._gauge = BREAKER_STATE.labels(name)
        self._gauge.set(BreakerState.CLOSED)

    @property
    def state(self) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.reset_timeout_s
        ):
            self._set(BreakerState.HALF_OPEN)
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def before_call(self) -> None:
        """Admit a call or raise ``CircuitOpenError``; every admitted call must end in
        exactly one of ``record_success``, ``record_failure`` or ``record_abandoned``."""
        state = self.state
        if state is BreakerState.OPEN:
            retry_in = self.reset_timeout_s - (self._clock() - self._opened_at)
            raise CircuitOpenError(
                f"circuit {self.name!r} is open after {self._failures} consecutive failures",
                {"retry_in_s": round(max(retry_in, 0.0), 3)},
                retry_after_s=max(retry_in, 0.0),
            )
        if state is BreakerState.HALF_OPEN:
            if self._trials >= self.half_open_max_calls:
                raise CircuitOpenError(
                    f"circuit {self.name!r} is half-open and its trial calls are in flight",
                    {"retry_in_s": 0.0},
                )
            self._trials += 1

    def record_success(self) -> None:
        self._end_trial()
        self._failures = 0
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        was_trial = self._end_trial()
        self._failures += 1
        if was_trial or (
            self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold
        ):
            self._opened_at = self._clock()
            self._set(BreakerState.OPEN)

    def record_abandoned(self) -> None:
        """The call ended without a verdict (cancelled): free its trial slot."""
        self._end_trial()

    def _end_trial(self) -> bool:
        if self._state is BreakerState.HALF_OPEN and self._trials > 0:
            self._trials -= 1
            return True
        return False

    def _set(self, state: BreakerState) -> None:
        self._state = state
        self._trials = 0
        self._gauge.set(state)
