"""Circuit breakers, one per provider key (pure; the clock is injected).

closed → (``failure_threshold`` consecutive failures) → open → (after ``open_seconds``) →
half-open: exactly one probe goes through; its success closes the circuit, its failure opens
it again for another ``open_seconds``. Only failures that say the key or provider is unwell
count: connection errors, timeouts and 5xx. A 4xx is the caller's problem, and a 429 is
handled by retries and backoff.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class Breaker:
    failure_threshold: int
    open_seconds: float
    failures: int = 0
    opened_at: float | None = None
    probe_in_flight: bool = False

    def state(self, now: float) -> State:
        if self.opened_at is None:
            return State.CLOSED
        if now - self.opened_at < self.open_seconds:
            return State.OPEN
        return State.HALF_OPEN

    def seconds_until_probe(self, now: float) -> float:
        """How long until an open circuit lets its probe through (0 when it is not open)."""
        if self.opened_at is None:
            return 0.0
        return max(self.open_seconds - (now - self.opened_at), 0.0)

    def allow(self, now: float) -> bool:
        """May a request use this key now? Claims the probe slot when half-open."""
        state = self.state(now)
        if state is State.CLOSED:
            return True
        if state is State.OPEN or self.probe_in_flight:
            return False
        self.probe_in_flight = True
        return True

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probe_in_flight = False

    def failure(self, now: float) -> None:
        self.probe_in_flight = False
        if self.opened_at is not None:  # a failed probe opens the circuit again
            self.opened_at = now
            return
        self.failures += 1
        if self.failure_threshold > 0 and self.failures >= self.failure_threshold:
            self.opened_at = now

    def cancel_probe(self) -> None:
        """The probe ended without a verdict (client went away, 4xx): let another try."""
        self.probe_in_flight = False


class Breakers:
    """Breakers by provider key id, created on first use with the provider's settings."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._by_key: dict[str, Breaker] = {}

    def get(self, key_id: str, failure_threshold: int, open_seconds: float) -> Breaker:
        breaker = self._by_key.get(key_id)
        if breaker is None:
            breaker = self._by_key[key_id] = Breaker(failure_threshold, open_seconds)
        else:  # settings may change with a new snapshot
            breaker.failure_threshold = failure_threshold
            breaker.open_seconds = open_seconds
        return breaker
