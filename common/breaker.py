"""A small circuit breaker on an AWS client: a dead backend gives prompt 503s, not a pile-up.

After ``threshold`` consecutive transient failures (throttling, 5xx, timeouts, connection errors,
each counted after botocore's own retries) the circuit opens: calls fail at once with
``503 backend_unavailable`` and ``Retry-After``, and ``/ready`` reports it. After ``reset_seconds``
one trial call is let through (half-open); its success closes the circuit, its failure opens it
again. It hooks into botocore's ``before-call``/``after-call`` events, so every call of the client
is covered without wrapping each one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from common.aws import RETRYABLE_CODES, is_transient
from common.errors import CircuitOpen
from common.logging import get_logger

log = get_logger("common.breaker")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
# Cleanup calls are made even with the circuit open: skipping an abort would orphan an upload.
ALWAYS_ATTEMPTED = frozenset({"AbortMultipartUpload"})


class CircuitBreaker:
    """Consecutive-failure breaker with a single trial call when half-open."""

    def __init__(
        self,
        name: str,
        threshold: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_started: float | None = None

    @property
    def state(self) -> str:
        """closed, open or half_open (open, but due a trial call)."""
        if self._opened_at is None:
            return CLOSED
        if self._clock() - self._opened_at >= self.reset_seconds:
            return HALF_OPEN
        return OPEN

    def retry_after(self) -> int:
        """Whole seconds until a trial call will be let through."""
        if self._opened_at is None:
            return 0
        left = self.reset_seconds - (self._clock() - self._opened_at)
        return max(1, math.ceil(left))

    def before_call(self) -> None:
        """Raise CircuitOpen if the call must not be made now."""
        if self.threshold <= 0:
            return
        state = self.state
        if state == CLOSED:
            return
        now = self._clock()
        # One trial at a time; a trial that never reported back (cancelled) expires.
        trial_busy = (
            self._trial_started is not None and now - self._trial_started < self.reset_seconds
        )
        if state == HALF_OPEN and not trial_busy:
            self._trial_started = now
            return
        raise CircuitOpen(
            f"{self.name} is failing; not calling it for a few seconds (circuit open)",
            retry_after=self.retry_after(),
        )

    def record(self, ok: bool) -> None:
        """Outcome of a call that was made."""
        if ok:
            if self._opened_at is not None:
                log.info("circuit_closed", backend=self.name)
            self._failures = 0
            self._opened_at = None
            self._trial_started = None
            return
        self._failures += 1
        if self._trial_started is not None or (
            self._opened_at is None and self.threshold > 0 and self._failures >= self.threshold
        ):
            log.warning("circuit_opened", backend=self.name, failures=self._failures)
            self._opened_at = self._clock()
            self._trial_started = None

    def attach(self, client: Any) -> None:
        """Guard every call of an aiobotocore client."""
        events = client.meta.events

        def before(model: Any, **_: Any) -> None:
            if model.name not in ALWAYS_ATTEMPTED:
                self.before_call()

        def after(http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
            status = int(getattr(http_response, "status_code", 0))
            code = parsed.get("Error", {}).get("Code")
            self.record(not (status >= 500 or code in RETRYABLE_CODES))

        def after_error(exception: BaseException, **_: Any) -> None:
            self.record(not is_transient(exception))

        events.register("before-call", before, unique_id=f"breaker-before-{id(self)}")
        events.register("after-call", after, unique_id=f"breaker-after-{id(self)}")
        events.register("after-call-error", after_error, unique_id=f"breaker-error-{id(self)}")
