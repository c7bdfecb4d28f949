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
    COST,
    DEFAULT_LEASE_SECONDS,
    EXPIRY_MARGIN_SECONDS,
    REQUESTS,
    TOKENS,
    Admitted,
    Denied,
    IdentityCache,
    Ledger,
    Limit,
    Reservation,
    Usage,
    dedupe_limits,
    denial,
)
from governance.ledger.windows import Window, window_slot

PURGE_INTERVAL_SECONDS = 1.0
PLANS_MAX = 10_000  # limits tuples whose plans are kept


# How much one request adds to a counter, by kind (:func:`governance.ledger.base.amount_for`
# as an index into ``(cost, tokens, 1)``); concurrency slots are leases, not counters.
_COST, _TOKENS, _ONE, _LEASE = 0, 1, 2, 3
_KINDS = {COST: _COST, TOKENS: _TOKENS, REQUESTS: _ONE, CONCURRENT: _LEASE}


@dataclass(slots=True)
class _Record:
    entries: list[tuple[str, int, int]]  # (counter key, kind, amount reserved)
    expires_at: float


@dataclass(slots=True)
class _Plan:
    """Per limit ``(limit, kind, maximum, counter key, counter expiry)``, valid for
    ``valid_from <= now < valid_until`` (the windows all limits share at that time);
    ``expires_at``: the latest counter expiry."""

    steps: tuple[tuple[Limit, int, int, str, float], ...]
    valid_from: float
    valid_until: float
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
        self._plans: IdentityCache[_Plan] = IdentityCache(PLANS_MAX)  # limits -> see _plan

    def _key(self, limit: Limit, now: float) -> tuple[str, float]:
        """Counter key and the time it may be dropped."""
        key, expires_at, _valid_from, _valid_until = self._slot(limit, now)
        return key, expires_at

    def _slot(self, limit: Limit, now: float) -> tuple[str, float, float, float]:
        """Counter key, the time it may be dropped, and the times between which the key
        holds. The key of a limit's current window is kept until the window ends (or a
        pending reset marker starts a new one); a lease key always holds."""
        window = limit.window
        if window is None:
            return (f"{self.key_prefix}:{limit.id}:lease", now + self.lease_seconds,
                    float("-inf"), float("inf"))
        cached = self._slots.get(limit.id)
        if cached is not None and cached[0] is window and cached[1] <= now < cached[2]:
            return cached[3], cached[4], cached[1], cached[2]
        slot, start, end = window_slot(window, now)
        marker = window.reset_marker
        until = marker if marker is not None and now < marker < end else end
        name = f"{self.key_prefix}:{limit.id}:{slot}"
        expires_at = end + EXPIRY_MARGIN_SECONDS
        if len(self._slots) > 100_000:
            self._slots.clear()
        self._slots[limit.id] = (window, start, until, name, expires_at)
        return name, expires_at, start, until

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

    def _lease_count(self, key: str, now: float) -> int:
        leases = self._leases.get(key)
        if not leases:
            return 0
        for request_id in [rid for rid, at in leases.items() if at <= now]:
            del leases[request_id]
        return len(leases)

    def _plan(self, limits: Sequence[Limit], now: float) -> _Plan:
        """The counter keys of ``limits`` at ``now``, each limit id once. A tuple's plan is
        kept while all its windows stay: the gateway passes the same tuple for every
        request of a key, provider and model. (A list may change between calls: its plan is
        built every time.)"""
        cacheable = type(limits) is tuple
        if cacheable:
            plan = self._plans.get(limits)
            if plan is not None and plan.valid_from <= now < plan.valid_until:
                return plan
        steps: list[tuple[Limit, int, int, str, float]] = []
        valid_from, valid_until = float("-inf"), float("inf")
        latest_expiry = float("-inf")
        for limit in dedupe_limits((limits,)):
            key, expires_at, start, until = self._slot(limit, now)
            valid_from, valid_until = max(valid_from, start), min(valid_until, until)
            if limit.window is not None:
                latest_expiry = max(latest_expiry, expires_at)
            steps.append((limit, _KINDS[limit.metric], limit.maximum, key, expires_at))
        plan = _Plan(tuple(steps), valid_from, valid_until, latest_expiry)
        return self._plans.put(limits, plan) if cacheable else plan

    async def admit(self, request_id: str, limits: Sequence[Limit],
                    reservation: Reservation) -> Admitted | Denied:
        with self._lock:
            now = self.clock()
            self._purge(now)
            if request_id in self._records:
                return Admitted()  # a repeated admit never reserves twice
            plan = self._plan(limits, now)
            counters, expiry = self._counters, self._expiry
            amounts = (reservation.cost_nanos, reservation.tokens, 1)
            lease_expires_at = now + self.lease_seconds
            entries: list[tuple[str, int, int]] = []
            used_after: dict[str, int] = {}
            violations: list[tuple[Limit, int]] = []
            # One pass that reserves as it checks: a denial (rare) takes back what it reserved.
            for limit, kind, maximum, key, expires_at in plan.steps:
                used = self._lease_count(key, now) if kind == _LEASE else counters.get(key, 0)
                if used >= maximum:  # governance.ledger.base.exceeds, inlined
                    violations.append((limit, used))
                    continue
                if violations:
                    continue  # denied already: only the violations are still of interest
                if kind == _LEASE:
                    self._leases.setdefault(key, {})[request_id] = lease_expires_at
                    used_after[limit.id] = used + 1
                    entries.append((key, kind, 1))
                    continue
                amount = amounts[kind]
                counters[key] = used_after[limit.id] = used + amount
                if expiry.get(key, 0.0) < expires_at:
                    expiry[key] = expires_at
                entries.append((key, kind, amount))
            if violations:
                self._take_back(request_id, entries)
                return denial(violations, now)
            self._records[request_id] = _Record(
                entries, plan.expires_at if plan.expires_at > lease_expires_at
                else lease_expires_at)
            return Admitted(used_after)

    def _take_back(self, request_id: str, entries: list[tuple[str, int, int]]) -> None:
        for key, kind, amount in entries:
            if kind == _LEASE:
                self._leases[key].pop(request_id, None)
            else:
                self._counters[key] -= amount

    async def _finish(self, request_id: str, actual: Usage | None) -> None:
        with self._lock:
            record = self._records.pop(request_id, None)
            if record is None:
                return
            counters = self._counters
            # requests stay counted on settle; release gives everything back
            amounts = (actual.cost_nanos, actual.tokens, 1) if actual is not None else (0, 0, 0)
            for key, kind, reserved in record.entries:
                if kind == _LEASE:
                    leases = self._leases.get(key)
                    if leases:
                        leases.pop(request_id, None)
                    continue
                counted = counters.get(key)
                if counted is None:
                    continue  # the window's counter already expired
                new = counted - reserved + amounts[kind]
                counters[key] = new if new > 0 else 0

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

    async def rebuild(self, amounts: Sequence[tuple[Limit, int]],
                      now: float | None = None) -> None:
        with self._lock:
            now = self.clock() if now is None else now
            held: dict[str, int] = {}
            for record in self._records.values():
                for key, kind, amount in record.entries:
                    if kind != _LEASE:
                        held[key] = held.get(key, 0) + amount
            for limit, amount in amounts:
                if limit.metric is CONCURRENT:
                    raise ValueError("concurrency slots are leases, not counters")
                key, expires_at = self._key(limit, now)
                self._counters[key] = max(int(amount), 0) + held.get(key, 0)
                self._expiry[key] = max(self._expiry.get(key, 0.0), expires_at)

    async def reset(self, limit: Limit) -> None:
        with self._lock:
            key, _expires_at = self._key(limit, self.clock())
            self._counters.pop(key, None)
            self._expiry.pop(key, None)
            self._leases.pop(key, None)
