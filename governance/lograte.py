"""Log lines that repeat on every request, at most one per kind and interval.

    outage = RateLimitedLog(logger, interval_s=10.0)
    outage.error("admit-refused", "ledger unavailable, refusing %s (fail closed): %s",
                 request_id, exc)

During a Redis outage every request fails the same way; a line per request (thousands a
second) buries everything else in the log and costs the event loop more than the requests
themselves. The first line of a kind is written at once; the next ones within
``interval_s`` are counted, and the first after it says how many were left out
("... (and 3,412 more like it in the last 10 s)"). When the lines stop (the outage ended),
:meth:`flush`, called about once a second by the governance runtime, writes the last line
left out with the count, so the log always tells how many there were. No Django import:
the data plane uses it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, *, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        # kind: [time of its last line written, lines left out since, the latest of those
        # (level, message, args)]
        self._kinds: dict[str, list[Any]] = {}

    def log(self, level: int, kind: str, message: str, *args: Any) -> bool:
        """Log ``message % args`` unless a line of ``kind`` was written within the interval;
        True when written."""
        now = self.clock()
        state = self._kinds.get(kind)
        if state is not None and now - state[0] < self.interval_s:
            state[1] += 1
            state[2] = (level, message, args)
            return False
        left_out = int(state[1]) if state is not None else 0
        if left_out:
            message += " (and %d more like it in the last %.0f s)"
            args = (*args, left_out, now - state[0])  # type: ignore[index]
        self._kinds[kind] = [now, 0, None]
        self.logger.log(level, message, *args)
        return True

    def flush(self) -> int:
        """For each kind whose interval has passed with lines left out and none written
        since: write the latest of them, with the count. Returns the lines written."""
        now = self.clock()
        written = 0
        for state in self._kinds.values():
            if state[1] and now - state[0] >= self.interval_s:
                level, message, args = state[2]
                self.logger.log(level, message + " (the last of %d like it in %.0f s)",
                                *args, state[1], now - state[0])
                state[0], state[1], state[2] = now, 0, None
                written += 1
        return written

    def error(self, kind: str, message: str, *args: Any) -> bool:
        return self.log(logging.ERROR, kind, message, *args)

    def warning(self, kind: str, message: str, *args: Any) -> bool:
        return self.log(logging.WARNING, kind, message, *args)


__all__ = ["RateLimitedLog"]
