"""Ledger value types and the backend interface (pure: no Django here).

Semantics shared by every backend (checked by ``tests/governance/test_ledger_contract.py``):

- ``admit`` checks every limit and reserves on all of them atomically, all or nothing.
  REQUESTS and CONCURRENT take one unit and deny when ``used + 1 > maximum``. COST and
  TOKENS deny when ``used >= maximum`` (usage exactly at the limit is denied); otherwise the
  estimate is reserved in full, so one request may overshoot by the error of its own estimate.
- ``settle`` replaces the reservation by the actual usage in the *same* windows the admit used
  (even if the window rolled since), frees the concurrency slot, keeps the request counted.
  Idempotent: a second settle, or a settle/release for an unknown id, is a no-op.
- ``release`` undoes an admitted request that failed before any usage: the reserved cost and
  tokens, the request count and the concurrency slot are all given back.
- Concurrency slots are leases that expire after ``lease_seconds``, so a crashed worker's slot
  comes back on its own.
- Backend errors (Redis down, timeouts) surface as :class:`LedgerUnavailable`; the caller
  decides whether to fail open or closed.
"""

from __future__ import annotations

import enum
import functools
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Generic, TypeVar

from governance.ledger.windows import Window, window_slot

V = TypeVar("V")

DEFAULT_LEASE_SECONDS = 600.0
CONCURRENCY_RETRY_AFTER_SECONDS = 1.0
# Counters outlive their window by this much, so a late settle still finds its counter.
EXPIRY_MARGIN_SECONDS = 3600.0
# Money is integer nano-dollars in the ledger; Decimal dollars in the database.
NANOS_PER_DOLLAR = Decimal(1_000_000_000)


class Metric(enum.Enum):
    COST = "cost"
    TOKENS = "tokens"
    REQUESTS = "requests"
    CONCURRENT = "concurrent"


# Module-level names for the hot paths: on Python 3.11 ``Metric.COST`` is an attribute
# lookup through the enum's metaclass, about 100 ns each, several per limit per request.
COST, TOKENS, REQUESTS, CONCURRENT = Metric.COST, Metric.TOKENS, Metric.REQUESTS, Metric.CONCURRENT


@dataclass(frozen=True)
class Limit:
    """One limit on one metric. ``maximum`` is nano-dollars, tokens, requests or slots."""

    id: str
    metric: Metric
    maximum: int
    window: Window | None = None
    owner_label: str = ""

    def __post_init__(self) -> None:
        if (self.window is None) != (self.metric is Metric.CONCURRENT):
            raise ValueError(f"limit {self.id!r}: only CONCURRENT limits have no window")


@dataclass(frozen=True)
class Reservation:
    cost_nanos: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class Usage:
    cost_nanos: int = 0
    tokens: int = 0


class Outcome(enum.Enum):
    ADMITTED = "admitted"
    DENIED = "denied"


@dataclass(frozen=True)
class Admitted:
    """``used`` maps each limit id to its counted amount after this admit."""

    used: dict[str, int] = field(default_factory=dict)
    outcome: ClassVar[Outcome] = Outcome.ADMITTED

    def __bool__(self) -> bool:
        return True


@dataclass(frozen=True)
class Denied:
    """The first violated limit, plus every violated limit with its usage in ``violations``
    (so a caller can tell "tokens and requests both exceeded" from one of them)."""

    limit: Limit
    used: int
    maximum: int
    retry_after_seconds: float
    reason: str
    violations: tuple[tuple[Limit, int], ...] = ()
    outcome: ClassVar[Outcome] = Outcome.DENIED

    def __bool__(self) -> bool:
        return False


class LedgerUnavailable(Exception):
    """The backend could not be reached or answered with an error; ``__cause__`` has it."""


class IdentityCache(Generic[V]):
    """Values worked out from an object, found again by that very object (not an equal
    one): a snapshot hands the same limits tuple to every request of a key, provider and
    model. Each entry holds its object, so the object's id cannot be reused while the entry
    stays; at most ``max_entries`` are kept (all are dropped when full)."""

    __slots__ = ("_entries", "_max_entries")

    def __init__(self, max_entries: int) -> None:
        self._entries: dict[int, tuple[object, V]] = {}
        self._max_entries = max_entries

    def get(self, owner: object) -> V | None:
        entry = self._entries.get(id(owner))
        return entry[1] if entry is not None and entry[0] is owner else None

    def put(self, owner: object, value: V) -> V:
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[id(owner)] = (owner, value)
        return value

    def clear(self) -> None:
        self._entries.clear()


def dedupe_limits(groups: Iterable[Iterable[Limit]]) -> tuple[Limit, ...]:
    """The limits of ``groups`` in order, each id once (its first occurrence)."""
    seen: set[str] = set()
    limits = []
    for group in groups:
        for limit in group:
            if limit.id not in seen:
                seen.add(limit.id)
                limits.append(limit)
    return tuple(limits)


def amount_for(metric: Metric, reservation: Reservation | Usage) -> int:
    """What one request adds to a counter of ``metric``."""
    if metric is COST:
        return reservation.cost_nanos
    if metric is TOKENS:
        return reservation.tokens
    return 1


def exceeds(metric: Metric, used: int, maximum: int) -> bool:
    """Whether one more request is refused. A request or slot adds 1 (``used + 1 >
    maximum``); cost and tokens admit while under the maximum (``used >= maximum`` refuses).
    On integers both read ``used >= maximum``, which the memory ledger inlines."""
    return used >= maximum


def retry_after_seconds(limit: Limit, now: float) -> float:
    """Seconds until ``limit`` can admit again at the earliest (its window's end)."""
    if limit.window is None:
        return CONCURRENCY_RETRY_AFTER_SECONDS
    return max(window_slot(limit.window, now)[2] - now, 0.0)


def denial(violations: Sequence[tuple[Limit, int]], now: float) -> Denied:
    """A :class:`Denied` for the violated ``(limit, used)`` pairs, first one leading."""
    limit, used = violations[0]
    label = limit.owner_label or limit.id
    return Denied(
        limit=limit,
        used=used,
        maximum=limit.maximum,
        retry_after_seconds=max(retry_after_seconds(lim, now) for lim, _ in violations),
        reason=f"{label}: {limit.metric.value} {used} of {limit.maximum}",
        violations=tuple(violations),
    )


_WRAPPED = ("admit", "settle", "release", "usage", "usage_many", "set_usage", "rebuild",
            "reset")


def _wrap_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def wrapper(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except LedgerUnavailable:
            raise
        except self.base_exceptions as exc:
            raise LedgerUnavailable(f"{type(self).__name__}: {exc}") from exc

    return wrapper


class Ledger(ABC):
    """Counters for limits. Subclasses implement the five async methods below."""

    def __init__(self, *, clock: Callable[[], float] = time.time,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self.clock = clock
        self.lease_seconds = lease_seconds

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.base_exceptions is Ledger.base_exceptions:
            return  # no backend errors to translate (the memory ledger): no wrapper per call
        for name in _WRAPPED:
            if name in cls.__dict__:
                setattr(cls, name, _wrap_errors(cls.__dict__[name]))

    @property
    def base_exceptions(self) -> tuple[type[BaseException], ...]:
        """Backend errors that become :class:`LedgerUnavailable`."""
        return ()

    @abstractmethod
    async def admit(self, request_id: str, limits: Sequence[Limit],
                    reservation: Reservation) -> Admitted | Denied:
        """Check all ``limits`` and reserve on all of them atomically, or on none. A limit
        listed twice counts once (:func:`dedupe_limits`)."""

    @abstractmethod
    async def settle(self, request_id: str, actual: Usage) -> None:
        """Replace the reservation by ``actual``; free the slot. Idempotent."""

    @abstractmethod
    async def release(self, request_id: str) -> None:
        """Give back everything ``admit`` took (cost, tokens, request, slot). Idempotent."""

    @abstractmethod
    async def usage(self, limit: Limit, now: float | None = None) -> int:
        """Counted amount in the window containing ``now``, reservations in flight included."""

    async def usage_many(self, limits: Sequence[Limit],
                         now: float | None = None) -> dict[str, int]:
        """:meth:`usage` of several limits at once (backends batch it)."""
        return {limit.id: await self.usage(limit, now) for limit in limits}

    @abstractmethod
    async def set_usage(self, limit: Limit, amount: int, now: float | None = None) -> None:
        """Overwrite the counter of the window containing ``now`` (``SET``, not ``INCRBY``):
        how ``rebuild_counters`` restores derived counters from usage records."""

    async def rebuild(self, amounts: Sequence[tuple[Limit, int]],
                      now: float | None = None) -> None:
        """Set each limit's counter of the window containing ``now`` to its amount (counted
        from usage records) plus what requests in flight reserved on it: they settle
        against their reservation, so without it they would take back what the rebuilt
        counter never held. Backends that keep in-flight requests override this; the
        default is :meth:`set_usage` alone."""
        for limit, amount in amounts:
            await self.set_usage(limit, amount, now)

    @abstractmethod
    async def reset(self, limit: Limit) -> None:
        """Clear the current window's counter (tests and tooling; operators use a marker)."""

    async def aclose(self) -> None:  # noqa: B027 - a hook: in-process ledgers hold nothing
        """Close the backend's connections (none for an in-process ledger)."""
