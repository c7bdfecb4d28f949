"""Redis ledger: every worker and host shares counters.

One Lua script per admit (``lua/admit.lua``) and one per settle or release
(``lua/finish.lua``); both are registered once per client. Keys:

- ``{prefix}:<limit id>:<window key>``: a counter (cost, tokens or requests), expiring an hour
  after its window ends;
- ``{prefix}:<limit id>:lease``: a sorted set of request ids scored by lease expiry;
- ``{prefix}:request:<request id>``: the in-flight record (JSON: keys touched and amounts
  reserved), so another process can settle, and settle adjusts the windows admit used.

Every key carries the ``{prefix}`` hash tag: one admit touches limits of several owners, and
Redis Cluster runs a script only when all its keys share a slot. The price is that one
prefix lives on one shard. TTLs are relative (``PEXPIRE``) and ``now`` comes from the
injected clock, so tests that move the clock never race Redis expiry.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.commands.core import AsyncScript

from governance.ledger.base import (
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
    dedupe_limits,
    denial,
)
from governance.ledger.multiplex import RedisMultiplexer
from governance.ledger.windows import window_slot


def _script_source(name: str) -> str:
    return resources.files("governance.ledger").joinpath("lua", name).read_text("utf-8")


class RedisLedger(Ledger):
    """``client`` serves every call; with a ``multiplexer``, admits and settles (the two
    calls of every request) go through it instead (:mod:`governance.ledger.multiplex`)."""

    def __init__(self, client: aioredis.Redis, *, key_prefix: str,
                 clock: Callable[[], float] = time.time,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS,
                 multiplexer: RedisMultiplexer | None = None) -> None:
        super().__init__(clock=clock, lease_seconds=lease_seconds)
        self.client = client
        self.multiplexer = multiplexer
        self.key_prefix = key_prefix
        self._admit_script = client.register_script(_script_source("admit.lua"))
        self._finish_script = client.register_script(_script_source("finish.lua"))

    async def _run(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        if self.multiplexer is not None:
            return await self.multiplexer.evalsha(script.sha, script.script, keys, args)
        return await script(keys=keys, args=args, client=self.client)

    async def aclose(self) -> None:
        """Close the connections (the client's pool and the multiplexer's)."""
        if self.multiplexer is not None:
            await self.multiplexer.aclose()
        await self.client.aclose()

    @property
    def base_exceptions(self) -> tuple[type[BaseException], ...]:
        return (redis.exceptions.RedisError, OSError, asyncio.TimeoutError)

    def _key(self, limit: Limit, now: float) -> tuple[str, float]:
        """Key and its time to live in seconds."""
        if limit.window is None:
            return f"{{{self.key_prefix}}}:{limit.id}:lease", self.lease_seconds
        slot, _start, end = window_slot(limit.window, now)
        return f"{{{self.key_prefix}}}:{limit.id}:{slot}", end - now + EXPIRY_MARGIN_SECONDS

    def _record_key(self, request_id: str) -> str:
        return f"{{{self.key_prefix}}}:request:{request_id}"

    async def admit(self, request_id: str, limits: Sequence[Limit],
                    reservation: Reservation) -> Admitted | Denied:
        now = self.clock()
        limits = dedupe_limits((limits,))
        keys = [self._record_key(request_id)]
        args: list[Any] = [repr(now), request_id, 0]
        record_ttl = self.lease_seconds
        for limit in limits:
            key, ttl = self._key(limit, now)
            ttl_ms = max(int(ttl * 1000), 1)
            keys.append(key)
            args += [limit.metric.value, limit.maximum, amount_for(limit.metric, reservation),
                     ttl_ms]
            record_ttl = max(record_ttl, ttl)
        args[2] = max(int(record_ttl * 1000), 1)
        result = await self._run(self._admit_script, keys, args)
        if result[0] == 0:
            pairs = result[1:]
            return denial([(limits[int(pairs[i]) - 1], int(pairs[i + 1]))
                           for i in range(0, len(pairs), 2)], now)
        if result[0] == 2:
            return Admitted()
        return Admitted({limit.id: int(used) for limit, used in zip(limits, result[1:],
                                                                         strict=True)})

    async def _finish(self, request_id: str, mode: str, actual: Usage) -> None:
        await self._run(self._finish_script, [self._record_key(request_id)],
                        [mode, request_id, actual.cost_nanos, actual.tokens])

    async def settle(self, request_id: str, actual: Usage) -> None:
        await self._finish(request_id, "settle", actual)

    async def release(self, request_id: str) -> None:
        await self._finish(request_id, "release", Usage())

    async def usage(self, limit: Limit, now: float | None = None) -> int:
        now = self.clock() if now is None else now
        key, _ttl = self._key(limit, now)
        if limit.metric is Metric.CONCURRENT:
            return int(await self.client.zcount(key, f"({now!r}", "+inf"))
        value = await self.client.get(key)
        return int(value) if value is not None else 0

    async def usage_many(self, limits: Sequence[Limit],
                         now: float | None = None) -> dict[str, int]:
        now = self.clock() if now is None else now
        async with self.client.pipeline(transaction=False) as pipe:
            for limit in limits:
                key, _ttl = self._key(limit, now)
                if limit.metric is Metric.CONCURRENT:
                    pipe.zcount(key, f"({now!r}", "+inf")
                else:
                    pipe.get(key)
            values = await pipe.execute()
        return {limit.id: int(value or 0) for limit, value in zip(limits, values, strict=True)}

    async def set_usage(self, limit: Limit, amount: int, now: float | None = None) -> None:
        if limit.metric is Metric.CONCURRENT:
            raise ValueError("concurrency slots are leases, not counters")
        now = self.clock() if now is None else now
        key, ttl = self._key(limit, now)
        await self.client.set(key, max(int(amount), 0), px=max(int(ttl * 1000), 1))

    async def rebuild(self, amounts: Sequence[tuple[Limit, int]],
                      now: float | None = None) -> None:
        now = self.clock() if now is None else now
        if any(limit.metric is Metric.CONCURRENT for limit, _amount in amounts):
            raise ValueError("concurrency slots are leases, not counters")
        held: dict[str, int] = {}
        records = [key async for key in self.client.scan_iter(
            match=f"{{{self.key_prefix}}}:request:*", count=1000)]
        for start in range(0, len(records), REBUILD_BATCH):
            for raw in await self.client.mget(records[start:start + REBUILD_BATCH]):
                if raw is None:  # settled since the scan
                    continue
                for key, metric, reserved in json.loads(raw):
                    if metric != Metric.CONCURRENT.value:
                        held[key] = held.get(key, 0) + int(reserved)
        # (a request that settles between the scan and the SET keeps its reservation
        # counted: an overcount of one request at most per request, never an undercount)
        async with self.client.pipeline(transaction=False) as pipe:
            for limit, amount in amounts:
                key, ttl = self._key(limit, now)
                pipe.set(key, max(int(amount), 0) + held.get(key, 0),
                         px=max(int(ttl * 1000), 1))
            await pipe.execute()

    async def reset(self, limit: Limit) -> None:
        key, _ttl = self._key(limit, self.clock())
        await self.client.delete(key)


REBUILD_BATCH = 500  # in-flight records read per MGET by rebuild

__all__ = ["RedisLedger"]
