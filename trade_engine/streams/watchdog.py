"""A deadline on librdkafka calls that do not keep their own timeout.

``send_offsets_to_transaction(..., 30)`` can block forever when the group
coordinator's broker dies: librdkafka never checks that request's timeout
(confluentinc/librdkafka#5456) and, once the dead broker has left the metadata,
nothing wakes the request up again (#5511; both open in 2.x). The full chaos run
found the matcher parked in that call for minutes after its coordinator's node
was killed, its partitions' commands unanswered.

A call in C cannot be interrupted from Python, so the watchdog ends the
process: a guarded call that outlives its own timeout by ``grace_s`` logs one
critical line naming the call and exits (``EXIT_STUCK``), as a kill -9 would.
That is safe for exactly what the guard is used on: a transactional worker's
open transaction is aborted by its successor's ``init_transactions`` (same
transactional id), which then restores from the changelog; the supervisor
restarts the worker. One thread checks the single deadline once a second, so
guarding a call costs two attribute writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

EXIT_STUCK = 75  # EX_TEMPFAIL: restart me


class StuckCallWatchdog:
    def __init__(
        self,
        grace_s: float = 15.0,
        *,
        check_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        exit: Callable[[int], object] = os._exit,
    ) -> None:
        self.grace_s = grace_s
        self._check_every_s = check_every_s
        self._clock = clock
        self._exit = exit
        # (what, started, deadline) of the call in progress; one at a time per worker.
        self._call: tuple[str, float, float] | None = None
        self._thread: threading.Thread | None = None
        self.fired = threading.Event()

    @contextmanager
    def guard(self, what: str, timeout_s: float) -> Iterator[None]:
        """Around a blocking call given ``timeout_s``: the process ends if it has not
        returned ``timeout_s + grace_s`` seconds later."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="stuck-call", daemon=True)
            self._thread.start()
        started = self._clock()
        self._call = (what, started, started + timeout_s + self.grace_s)
        try:
            yield
        finally:
            self._call = None

    def _watch(self) -> None:
        while not self.fired.is_set():
            time.sleep(self._check_every_s)
            call = self._call
            if call is None or self._clock() < call[2]:
                continue
            what, started, _ = call
            log.critical(
                "%s has not returned after %.0f s, past its own timeout (librdkafka "
                "#5456/#5511: a coordinator dead or out of reach); exiting for the supervisor to "
                "restart this worker",
                what,
                self._clock() - started,
            )
            # The line must reach the log before the exit; a closed stream must not stop it.
            for handler in logging.getLogger().handlers:
                with contextlib.suppress(Exception):
                    handler.flush()
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            self.fired.set()
            self._exit(EXIT_STUCK)
