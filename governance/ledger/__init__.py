"""The usage ledger: counters for budgets and rate limits (DESIGN.md section 5).

    >>> ledger = ledger_from_url("memory://")
    >>> type(ledger).__name__
    'MemoryLedger'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from governance.ledger.base import (
    NANOS_PER_DOLLAR,
    Admitted,
    Denied,
    Ledger,
    LedgerUnavailable,
    Limit,
    Metric,
    Outcome,
    Reservation,
    Usage,
)
from governance.ledger.memory import MemoryLedger
from governance.ledger.windows import Window, window_bounds, window_key

# Redis clients time out quickly: a slow ledger must never hang a request.
REDIS_TIMEOUT_SECONDS = 0.5


def _memory(url: str, **kwargs: Any) -> Ledger:
    return MemoryLedger(**kwargs)


def _redis(url: str, **kwargs: Any) -> Ledger:
    import redis.asyncio as aioredis  # lazily: the embedded mode runs without Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    from governance.ledger.multiplex import multiplexer_for
    from governance.ledger.redis import RedisLedger

    # One quick retry rides out a dropped connection; more would only delay the 503.
    client = aioredis.from_url(url, socket_timeout=REDIS_TIMEOUT_SECONDS,
                               socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                               retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1))
    # Admits and settles through one implicitly pipelined connection.
    multiplexer = multiplexer_for(url, timeout_s=REDIS_TIMEOUT_SECONDS,
                                  connect_timeout_s=REDIS_TIMEOUT_SECONDS)
    return RedisLedger(client, multiplexer=multiplexer, **kwargs)


LEDGER_SCHEMES: dict[str, Callable[..., Ledger]] = {
    "memory": _memory,
    "redis": _redis,
    "rediss": _redis,
    "unix": _redis,
}


def ledger_from_url(url: str, *, key_prefix: str = "ledger", **kwargs: Any) -> Ledger:
    """Build a ledger from ``memory://`` or ``redis://host:port/db``; ``ValueError`` otherwise."""
    scheme, separator, _rest = url.partition("://")
    factory = LEDGER_SCHEMES.get(scheme) if separator else None
    if factory is None:
        known = ", ".join(f"{name}://" for name in LEDGER_SCHEMES)
        raise ValueError(f"unknown ledger URL {url!r}: use one of {known}")
    return factory(url, key_prefix=key_prefix, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "RedisLedger":
        from governance.ledger.redis import RedisLedger

        return RedisLedger
    raise AttributeError(name)


__all__ = [
    "LEDGER_SCHEMES",
    "NANOS_PER_DOLLAR",
    "Admitted",
    "Denied",
    "Ledger",
    "LedgerUnavailable",
    "Limit",
    "MemoryLedger",
    "Metric",
    "Outcome",
    "RedisLedger",
    "Reservation",
    "Usage",
    "Window",
    "ledger_from_url",
    "window_bounds",
    "window_key",
]
