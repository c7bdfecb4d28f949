"""The governance runtime's usage view: the limits it reads are collected once per snapshot,
and the counters are read again on every refresh."""

from __future__ import annotations

from decimal import Decimal

import pytest

from governance import runtime as runtime_module
from governance.engine import capacity_plan
from governance.ledger import MemoryLedger, Metric
from governance.runtime import GovernanceRuntime
from governance.sink import MemorySink
from governance.snapshot import build_snapshot, iter_limits
from tests.factories import BudgetFactory, RateLimitFactory, TeamFactory, VirtualKeyFactory


@pytest.fixture
def snapshots(db):
    """Two snapshots: the second one has a team rate limit the first one lacks."""
    team = TeamFactory(name="research")
    budget = BudgetFactory(team=team, max_limit=Decimal("10"), reset_duration="1d")
    VirtualKeyFactory(name="prod", team=team, max_concurrent_requests=2)  # no window
    first = build_snapshot(1, built_at=1.0)
    rate = RateLimitFactory(team=team, request_max_limit=10, request_reset_duration="1m",
                            token_max_limit=None, token_reset_duration=None)
    second = build_snapshot(2, built_at=2.0)
    return {"first": first, "second": second, "budget": budget, "rate": rate}


async def test_usage_view_limits_are_collected_once_per_snapshot(snapshots, monkeypatch):
    collected = []

    def counting_iter_limits(snapshot):
        collected.append(snapshot)
        return iter_limits(snapshot)

    monkeypatch.setattr(runtime_module, "iter_limits", counting_iter_limits)
    ledger = MemoryLedger()
    runtime = GovernanceRuntime(ledger=ledger, sink=MemorySink(), embedded=False)
    view = runtime.governor.usage_view
    first, second = snapshots["first"], snapshots["second"]

    runtime.snapshot = first
    limits = runtime.usage_view_limits(first)
    # the concurrency slot has no window and is left out
    assert [limit.id for limit in limits] == [f"budget:{snapshots['budget'].id}"]
    budget_plan = capacity_plan(limits)
    await ledger.set_usage(limits[0], 4_000_000_000)  # $4 of $10
    await runtime.refresh_usage_view()
    assert view.capacity(budget_plan).budget_used == 40.0
    await ledger.set_usage(limits[0], 5_000_000_000)  # the counters are read on each refresh
    await runtime.refresh_usage_view()
    assert view.capacity(budget_plan).budget_used == 50.0
    assert runtime.usage_view_limits(first) is limits
    assert len(collected) == 1 and collected[0] is first

    runtime.snapshot = second  # a new snapshot: its limits are collected again, once
    await runtime.refresh_usage_view()
    await runtime.refresh_usage_view()
    assert len(collected) == 2 and collected[1] is second
    fresh = runtime.usage_view_limits(second)
    rate = next(limit for limit in fresh if limit.metric is Metric.REQUESTS)
    assert rate.id == f"rate:{snapshots['rate'].id}:requests"
    await ledger.set_usage(rate, 3)
    await runtime.refresh_usage_view()
    capacity = view.capacity(capacity_plan(fresh))
    assert (capacity.budget_used, capacity.request) == (50.0, 30.0)
    assert len(collected) == 2



class CountingSink:
    def __init__(self) -> None:
        self.retries = 0

    async def retry_pending(self) -> int:
        self.retries += 1
        return 0

    def pending(self) -> int:
        return 0


async def test_stop_ends_a_loop_that_swallowed_its_cancellation_then_flushes():
    # asyncio.wait_for on Python 3.11 (redis-py runs each command in it) can swallow a
    # cancellation that arrives as the command completes: the loop goes on.
    import asyncio

    swallowed = 0

    async def stubborn_loop() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1

    sink = CountingSink()
    runtime = GovernanceRuntime(ledger=MemoryLedger(), sink=sink, embedded=False)
    task = asyncio.ensure_future(stubborn_loop())
    runtime._tasks = [task]
    await asyncio.sleep(0)
    stopping = asyncio.ensure_future(runtime.stop())
    # (not wait_for: cancelling a stop that waits on the loop would cancel the loop again)
    done, _ = await asyncio.wait({stopping}, timeout=5)
    if not done:
        task.cancel()  # leave nothing running after a failure
        await asyncio.wait({stopping}, timeout=5)
    assert done, "stop() never ended"
    assert stopping.exception() is None
    assert task.cancelled() and swallowed == 1
    assert sink.retries == 1  # the final flush ran


async def test_the_usage_view_loop_writes_what_the_ledger_outage_log_held_back(monkeypatch,
                                                                             caplog):
    """Admits failed during an outage, then none: within a tick of the loop after the log's
    interval, the last refused admit is written with the count of those left out."""
    import asyncio

    from governance.lograte import RateLimitedLog

    moment = [0.0]
    monkeypatch.setattr(runtime_module, "USAGE_VIEW_INTERVAL_S", 0.01)
    runtime = GovernanceRuntime(ledger=MemoryLedger(), sink=MemorySink(), embedded=False)
    outage = runtime.governor.outage_log = RateLimitedLog(
        runtime.governor.outage_log.logger, clock=lambda: moment[0])
    caplog.set_level("ERROR", logger=outage.logger.name)
    for index in range(3):
        outage.error("admit-refused", "refusing %s", f"r{index}")
    moment[0] = 11.0
    loop = asyncio.ensure_future(runtime._usage_view_loop())
    try:
        for _ in range(200):
            if len(caplog.records) == 2:
                break
            await asyncio.sleep(0.01)
    finally:
        loop.cancel()
    assert [record.getMessage() for record in caplog.records] == [
        "refusing r0", "refusing r2 (the last of 2 like it in 11 s)"]


@pytest.mark.django_db(transaction=True)
async def test_a_start_while_redis_is_down_serves_the_database_and_catches_up_after(caplog):
    """The config version lives in Redis in production: a worker starting during an outage
    builds its snapshot from the database anyway (the ledger's fail mode decides about
    admits), and rebuilds it at the first version read once Redis answers."""
    import redis

    from governance.runtime import UNKNOWN_VERSION

    class FlakyRedis:
        down = True

        async def get(self, key):
            if self.down:
                raise redis.ConnectionError("Connection refused")
            return b"7"

    client = FlakyRedis()
    runtime = GovernanceRuntime(ledger=MemoryLedger(), sink=MemorySink(), embedded=False,
                                redis_client=client)
    await runtime.refresh(force=True)
    assert runtime.snapshot.version == UNKNOWN_VERSION
    assert "config version unreadable" in caplog.text
    with pytest.raises(redis.ConnectionError):  # later failures keep the snapshot there is
        await runtime.refresh()
    client.down = False
    assert await runtime.refresh() is True
    assert runtime.snapshot.version == 7


async def test_a_stop_with_redis_unreachable_says_how_many_usage_events_are_lost(caplog):
    import redis

    from governance.sink import RedisStreamSink, UsageEvent

    class Down:
        async def execute_many(self, commands):
            raise redis.ConnectionError("Connection refused")

        async def aclose(self):
            pass

    sink = RedisStreamSink(None, multiplexer=Down())
    runtime = GovernanceRuntime(ledger=MemoryLedger(), sink=sink, embedded=False)
    for index in range(3):
        await sink.emit(UsageEvent(request_id=f"r{index}", created_at=1.0, provider="p",
                                   requested_model="m", resolved_model="m",
                                   request_type="chat_completion", status_code=200))
    caplog.set_level("ERROR", logger="governance.runtime")
    await runtime.stop()
    assert "stopping with 3 usage event(s) that could not be sent to Redis; they are lost" \
        in caplog.text


@pytest.mark.django_db(transaction=True)
async def test_a_change_made_during_a_redis_outage_is_served_once_it_ends():
    """A change committed while Redis was unreachable did not move the version (its writer
    could not reach Redis either): the workers rebuild once their polls succeed again."""
    import asyncio

    import redis
    from asgiref.sync import sync_to_async

    from governance.models import VirtualKey

    class FlakyRedis:
        down = False

        async def get(self, key):
            if self.down:
                raise redis.ConnectionError("Connection refused")
            return b"7"  # never moves: the bump was lost with Redis

    key = await sync_to_async(VirtualKeyFactory)(name="revoked-in-the-outage")
    client = FlakyRedis()
    runtime = GovernanceRuntime(ledger=MemoryLedger(), sink=MemorySink(), embedded=False,
                                redis_client=client, poll_ms=20)
    await runtime.refresh(force=True)
    assert any(item.id == str(key.pk) and item.is_active
               for item in runtime.snapshot.keys_by_hash.values())
    loop = asyncio.get_running_loop().create_task(runtime._poll_loop())
    try:
        client.down = True
        await asyncio.sleep(0.1)
        await sync_to_async(VirtualKey.objects.filter(pk=key.pk).update)(is_active=False)
        client.down = False
        for _ in range(100):
            await asyncio.sleep(0.02)
            if not any(item.id == str(key.pk) and item.is_active
                       for item in runtime.snapshot.keys_by_hash.values()):
                break
    finally:
        loop.cancel()
    assert runtime.snapshot.version == 7
    assert not any(item.id == str(key.pk) and item.is_active
                   for item in runtime.snapshot.keys_by_hash.values())


def test_a_version_bump_that_failed_is_retried_until_redis_answers(monkeypatch, settings):
    import time

    import redis

    from gateway import config_version

    calls = []

    class FlakyRedis:
        def incr(self, key):
            calls.append(key)
            if len(calls) < 3:
                raise redis.ConnectionError("Connection refused")
            return 42

    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    monkeypatch.setattr(config_version, "_redis_client", FlakyRedis)
    monkeypatch.setattr(config_version, "RETRY_INTERVAL_S", 0.2)
    assert config_version.bump_now() == -1
    assert config_version.bump_now() == -1  # a second failure starts no second thread
    deadline = time.monotonic() + 5
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)
    assert len(calls) == 3  # retried until it answered, then no more


@pytest.mark.django_db(transaction=True)
async def test_an_embedded_change_is_served_at_once_not_at_the_next_poll():
    """A key created through the API or the admin works within milliseconds: the process's
    own version bump wakes its poll (a script that created a key and used it at once got a
    401 for up to the poll interval)."""
    import asyncio
    import time

    from asgiref.sync import sync_to_async

    from gateway import config_version

    runtime = GovernanceRuntime(ledger=MemoryLedger(), sink=MemorySink(), embedded=True,
                                poll_ms=60_000)
    await runtime.start()
    try:
        before = runtime.swaps
        key = await sync_to_async(VirtualKeyFactory)(name="fresh")
        started = time.monotonic()
        await sync_to_async(config_version.bump_now)()
        while runtime.swaps == before and time.monotonic() - started < 5:
            await asyncio.sleep(0.005)
        assert time.monotonic() - started < 2  # not the minute the poll waits
        assert any(item.id == str(key.pk) for item in runtime.snapshot.keys_by_hash.values())
    finally:
        await runtime.stop()
    assert runtime._wake is None  # the listener went with the runtime
