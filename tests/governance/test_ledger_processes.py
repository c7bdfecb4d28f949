"""Two OS processes sharing one Redis ledger enforce one request limit exactly."""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid

import pytest

from governance.durations import parse_duration
from governance.ledger import Limit, Metric, Reservation, Window

pytestmark = pytest.mark.redis


def _limit() -> Limit:
    return Limit("rate:shared:requests", Metric.REQUESTS, 10, Window(parse_duration("1h")), "k")


def _admit_many(prefix: str, worker: int, count: int, start: multiprocessing.Event,
                results: multiprocessing.Queue) -> None:
    async def run() -> int:
        from redis.asyncio import Redis

        from governance.ledger.redis import RedisLedger

        client = Redis()
        ledger = RedisLedger(client, key_prefix=prefix)
        start.wait(10)
        try:
            outcomes = await asyncio.gather(*(
                ledger.admit(f"{worker}-{index}", [_limit()], Reservation())
                for index in range(count)))
        finally:
            await client.aclose()
        return sum(1 for outcome in outcomes if outcome)

    results.put(asyncio.run(run()))


def test_two_processes_share_one_request_limit():
    context = multiprocessing.get_context("spawn")
    prefix = f"proc-{uuid.uuid4().hex}"
    start = context.Event()
    results = context.Queue()
    workers = [context.Process(target=_admit_many, args=(prefix, worker, 25, start, results))
               for worker in range(2)]
    for process in workers:
        process.start()
    start.set()
    admitted = [results.get(timeout=30) for _ in workers]
    for process in workers:
        process.join(10)
    assert sum(admitted) == 10
    import redis

    client = redis.Redis()
    try:
        keys = list(client.scan_iter(match=f"{{{prefix}}}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
