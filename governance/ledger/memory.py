"""Process-local ledger: the embedded default. Same semantics as the Redis backend.

The critical sections contain no ``await``, so they are atomic against other coroutines by
construction; a ``threading.Lock`` (held for microseconds) also covers threads (an in-process
timer, ``sync_to_async``) and, unlike ``asyncio.Lock``, is not tied to one event loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from governance.ledger.base import (
    CONCURRENT,
    DEFAULT_LEASE_SECONDS,
    EXPIRY_MARGIN_SECONDS,
    Admitted,
    Denied,
    Ledger,
    Limit,
    Metric,
    Reservation,
    Usage,
    amount_for,
    denial,
    exceeds,
)
from governance.ledger.windows import Window, window_slot

PURGE_INTERVAL_SECONDS = 1.0


@dataclass(slots=True)
class _Record:
    entries: list[tuple[str, Metric, int]]  # (counter key, metric, amount reserved)
    expires_at: float


class MemoryLedger(Ledger):
    def __init__(self, *, clock: Callable[[], float] = time.time, key_prefix: str = "",
                 lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        super().__init__(clock=clock, lease_seconds=lease_seconds)
        self.key_prefix = key_prefix
        self._counters: dict[str, int] = {}
        self._expiry: dict[str, float] = {}
        self._leases: dict[str, dict[str, float]] = {}
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()
        self._next_purge = float("-inf")
        # limit id -> (window, valid from, valid until, counter key, counter expiry)
        self._slots: dict[str, tuple[Window, float, float, str, float]] = {}

    def _key(self, limit: Limit, now: float) -> tuple[str, float]:
        """Counter key and the time it may be dropped. The key of a limit's current window
        is kept until the window ends (or a pending reset marker starts a new one)."""
        window = limit.window
        if window is None:
            return f"{self.key_prefix}:{limit.id}:lease", now + self.lease_seconds
        cached = self._slots.get(limit.id)
        if cached is not None and cached[0] is window and cached[1] <= now < cached[2]:
            return cached[3], cached[4]
        slot, start, end = window_slot(window, now)
        marker = window.reset_marker
        until = marker if marker is not None and now < marker < end else end
        name = f"{self.key_prefix}:{limit.id}:{slot}"
        expires_at = end + EXPIRY_MARGIN_SECONDS
        if len(self._slots) > 100_000:
            self._slots.clear()
        self._slots[limit.id] = (window, start, until, name, expires_at)
        return name, expires_at

    def _purge(self, now: float) -> None:
        """Drop expired counters, records and leases, at most once per clock second."""
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_INTERVAL_SECONDS
        for key in [key for key, at in self._expiry.items() if at <= now]:
            del self._expiry[key]
            self._counters.pop(key, None)
        for request_id in [rid for rid, rec in self._records.items() if rec.expires_at <= now]:
            del self._records[request_id]
        for key, leases in list(self._leases.items()):
            for request_id in [rid for rid, at in leases.items() if at <= now]:
                del leases[request_id]
            if not leases:
                del self._leases[key]

    def _used(self, metric: Metric, key: str, now: float) -> int:
        if metric is CONCURRENT:
            leases = self._leases.get(key, {})
            for request_id in [rid for rid, at in leases.items() if at <= now]:
                del leases[request_id]
            return len(leases)
        return self._counters.get(key, 0)

    async def admit(self, request_id: str, limits: Sequence[Limit],
                    reservation: Reservation) -> Admitted | Denied:
        with self._lock:
            now = self.clock()
            self._purge(now)
            if request_id in self._records:
                return Admitted()  # a repeated admit never reserves twice
            counters = self._counters
            planned: list[tuple[Limit, str, float, int]] = []
            violations: list[tuple[Limit, int]] = []
            for limit in limits:
                key, expires_at = self._key(limit, now)
                used = self._used(limit.metric, key, now)
                if exceeds(limit.metric, used, limit.maximum):
                    violations.append((limit, used))
                planned.append((limit, key, expires_at, used))
            if violations:
                return denial(violations, now)
            entries: list[tuple[str, Metric, int]] = []
            used_after = {}
            record_expires_at = now + self.lease_seconds
            expiry = self._expiry
            for limit, key, expires_at, used in planned:
                metric = limit.metric
                if metric is CONCURRENT:
                    self._leases.setdefault(key, {})[request_id] = expires_at
                    used_after[limit.id] = used + 1
                    entries.append((key, metric, 1))
                    continue
                amount = amount_for(metric, reservation)
                counters[key] = used_after[limit.id] = counters.get(key, 0) + amount
                if expiry.get(key, 0.0) < expires_at:
                    expiry[key] = expires_at
                entries.append((key, metric, amount))
                if expires_at > record_expires_at:
                    record_expires_at = expires_at
            self._records[request_id] = _Record(entries, record_expires_at)
            return Admitted(used_after)

    async def _finish(self, request_id: str, actual: Usage | None) -> None:
        with self._lock:
            record = self._records.pop(request_id, None)
            if record is None:
                return
            counters = self._counters
            for key, metric, reserved in record.entries:
                if metric is CONCURRENT:
                    self._leases.get(key, {}).pop(request_id, None)
                    continue
                counted = counters.get(key)
                if counted is None:
                    continue  # the window's counter already expired
                # requests stay counted on settle; release gives everything back
                new = 0 if actual is None else amount_for(metric, actual)
                counters[key] = max(counted - reserved + new, 0)

    async def settle(self, request_id: str, actual: Usage) -> None:
        await self._finish(request_id, actual)

    async def release(self, request_id: str) -> None:
        await self._finish(request_id, None)

    async def usage(self, limit: Limit, now: float | None = None) -> int:
        with self._lock:
            now = self.clock() if now is None else now
            key, _expires_at = self._key(limit, now)
            if limit.metric is CONCURRENT:
                return sum(1 for at in self._leases.get(key, {}).values() if at > now)
            if self._expiry.get(key, now + 1) <= now:
                return 0
            return self._counters.get(key, 0)

    async def set_usage(self, limit: Limit, amount: int, now: float | None = None) -> None:
        if limit.metric is CONCURRENT:
            raise ValueError("concurrency slots are leases, not counters")
        with self._lock:
            now = self.clock() if now is None else now
            key, expires_at = self._key(limit, now)
            self._counters[key] = max(int(amount), 0)
            self._expiry[key] = max(self._expiry.get(key, 0.0), expires_at)

    async def reset(self, limit: Limit) -> None:
        with self._lock:
            key, _expires_at = self._key(limit, self.clock())
            self._counters.pop(key, None)
            self._expiry.pop(key, None)
            self._leases.pop(key, None)
