"""CPU per Redis ledger call: redis-py's pooled client against the multiplexer.

    python -m bench.redis_calls [--redis redis://127.0.0.1:6379/15] [--calls 20000]

Runs the ledger's own admit and settle scripts (``governance/ledger/lua``) from 1 and from
32 concurrent callers, the way the data plane issues them (each request awaits its own
call), through both clients against the same Redis, and prints the process CPU time per
call and the ratio. Keys live under a random prefix and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
import redis.exceptions

from governance.durations import parse_duration
from governance.ledger import Limit, Metric, Reservation, Usage, Window
from governance.ledger.multiplex import RedisMultiplexer
from governance.ledger.redis import RedisLedger


async def _calls_per_cpu_us(call: Callable[[int], Awaitable[object]], callers: int,
                            calls: int) -> float:
    per_caller = max(calls // callers, 1)

    async def caller(number: int) -> None:
        for index in range(per_caller):
            await call(number * per_caller + index)

    await asyncio.gather(*(caller(number) for number in range(callers)))  # warm-up
    started = time.process_time()
    await asyncio.gather(*(caller(number) for number in range(callers)))
    return (time.process_time() - started) * 1e6 / (per_caller * callers)


async def _measure(url: str, calls: int) -> None:
    client = aioredis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    multiplexer = RedisMultiplexer(url)
    prefix = f"bench-{uuid.uuid4().hex}"
    limits = [Limit(f"rate:{index}", Metric.REQUESTS, 10**12, Window(parse_duration("1h")),
                    "bench")
              for index in range(3)]
    ledgers = {"redis-py": RedisLedger(client, key_prefix=prefix),
               "multiplexer": RedisLedger(client, key_prefix=prefix, multiplexer=multiplexer)}
    try:
        await client.ping()  # no Redis: skipped before any output
        print(f"{'client':<12} {'callers':>7} {'us CPU per call':>16}")
        for callers in (1, 32):
            results = {}
            for name, ledger in ledgers.items():
                async def admit_and_settle(number: int, ledger: RedisLedger = ledger,
                                           name: str = name) -> None:
                    request_id = f"{name}-{number}-{uuid.uuid4().hex}"
                    await ledger.admit(request_id, limits, Reservation())
                    await ledger.settle(request_id, Usage(tokens=10))

                results[name] = await _calls_per_cpu_us(admit_and_settle, callers, calls) / 2
                print(f"{name:<12} {callers:>7} {results[name]:>16.1f}")
            ratio = results["multiplexer"] / results["redis-py"]
            print(f"{'ratio':<12} {callers:>7} {ratio:>16.2f}")
    finally:
        keys = [key async for key in client.scan_iter(match=f"{{{prefix}}}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start:start + 1000])
        await multiplexer.aclose()
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        pass
    try:
        asyncio.run(_measure(args.redis, args.calls))
    except (OSError, redis.exceptions.ConnectionError) as exc:  # no Redis here
        print(f"Redis calls: skipped ({exc})")


if __name__ == "__main__":
    main()
