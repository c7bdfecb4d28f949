"""Usage events → records (idempotent), counters → limit rows, resets, and rebuilding
counters from records."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
import redis
import time_machine
from hypothesis import example, given, settings
from hypothesis import strategies as st

from governance.ledger import MemoryLedger, Reservation
from governance.ledger import Usage as LedgerUsage
from governance.models import Budget, UsageRecord
from governance.sink import MemorySink, RedisStreamReader, RedisStreamSink, UsageEvent
from governance.snapshot import budget_limit, rate_limits
from governance.tasks import (
    copy_counters,
    drain_into_records,
    flush_pass,
    limit_rows,
    rebuild_counters,
    record_resets,
    write_records,
)
from tests.factories import BudgetFactory, RateLimitFactory, TeamFactory, VirtualKeyFactory


def event(request_id: str, **overrides) -> UsageEvent:
    values = {"request_id": request_id, "created_at": datetime.now(UTC).timestamp(),
              "provider": "openai", "requested_model": "gpt-4o", "resolved_model": "gpt-4o",
              "request_type": "chat_completion", "status_code": 200, "prompt_tokens": 10,
              "completion_tokens": 5, "cost_nanos": 1_500_000}
    values.update(overrides)
    return UsageEvent(**values)


def test_event_json_round_trip_ignores_unknown_fields():
    original = event("r1", virtual_key_id=str(uuid.uuid4()), is_stream=True)
    assert UsageEvent.from_json(original.to_json()) == original
    assert UsageEvent.from_json(original.to_json()[:-1] + b',"future":1}') == original


@pytest.mark.django_db
def test_every_event_field_reaches_its_record_column():
    key_id, team_id, customer_id, provider_key_id, rule_id = (str(uuid.uuid4())
                                                              for _ in range(5))
    created = datetime(2026, 2, 28, 23, 59, 58, 123456, tzinfo=UTC)
    written = event("r-all", created_at=created.timestamp(), provider="anthropic",
                    requested_model="alias", resolved_model="claude-x",
                    request_type="chat_completion_stream", status_code=207,
                    virtual_key_id=key_id, virtual_key_name="k" * 300, team_id=team_id,
                    customer_id=customer_id, provider_key_id=provider_key_id, is_stream=True,
                    error_type="upstream_error", prompt_tokens=11, completion_tokens=22,
                    cached_tokens=3, cache_write_tokens=4, reasoning_tokens=5,
                    cost_nanos=123_456_789_012, priced=False, latency_ms=12.5,
                    overhead_ms=0.25, routing_rule_id=rule_id, routing_rule_name="rule",
                    fallback_index=2)
    plain = event("r-none", virtual_key_id="", team_id=None)

    assert write_records([written, plain, written]) == 2

    record = UsageRecord.objects.get(request_id="r-all")
    assert (record.created_at, record.provider, record.requested_model,
            record.resolved_model, record.request_type, record.status_code) == (
        created, "anthropic", "alias", "claude-x", "chat_completion_stream", 207)
    assert (str(record.virtual_key_id), str(record.team_id), str(record.customer_id),
            str(record.provider_key_id), str(record.routing_rule_id)) == (
        key_id, team_id, customer_id, provider_key_id, rule_id)
    assert record.virtual_key_name == "k" * 255  # cut to the column's length
    assert (record.is_stream, record.error_type, record.priced, record.fallback_index,
            record.routing_rule_name) == (True, "upstream_error", False, 2, "rule")
    assert (record.prompt_tokens, record.completion_tokens, record.cached_tokens,
            record.cache_write_tokens, record.reasoning_tokens) == (11, 22, 3, 4, 5)
    assert record.cost == Decimal("123.456789012")
    assert (record.latency_ms, record.overhead_ms) == (12.5, 0.25)
    empty = UsageRecord.objects.get(request_id="r-none")
    assert (empty.virtual_key_id, empty.team_id, empty.routing_rule_id) == (None, None, None)
    # The same records are found by the filters the usage API uses.
    assert UsageRecord.objects.filter(virtual_key_id=key_id, team_id=team_id,
                                      created_at__gte=created).count() == 1


@settings(max_examples=300, deadline=None)
@given(created_at=st.floats(min_value=0, max_value=253_402_300_799, allow_nan=False),
       cost_nanos=st.integers(min_value=0, max_value=10**18))
@example(created_at=1_764_633_599.9999996, cost_nanos=0)  # rounds up to the next day
@example(created_at=1_764_633_600.0, cost_nanos=1)  # no microseconds; a lone nano-dollar
def test_sqlite_records_store_what_djangos_own_adapters_would(created_at, cost_nanos):
    # The SQLite writer skips Django's adapters (they hold the GIL the data plane needs):
    # it must store the same datetime text, and a decimal text that the column's numeric
    # affinity turns into the same value as the text of the Decimal Django would bind.
    import sqlite3

    from django.db.utils import ConnectionHandler

    from governance.tasks import _conversions, _sqlite_conversions

    django_sqlite = ConnectionHandler({"default": {"ENGINE": "django.db.backends.sqlite3",
                                                   "NAME": ":memory:"}})["default"]
    ours = _sqlite_conversions(django_sqlite)
    djangos = _conversions(django_sqlite)
    assert ours[0](created_at) == djangos[0](created_at)
    assert Decimal(ours[1](cost_nanos)) == Decimal(cost_nanos).scaleb(-9)  # exact digits
    with sqlite3.connect(":memory:") as database:
        database.execute("CREATE TABLE t (ours decimal, djangos decimal)")
        database.execute("INSERT INTO t VALUES (?, ?)", (ours[1](cost_nanos),
                                                         str(djangos[1](cost_nanos))))
        stored_ours, stored_djangos = database.execute(
            "SELECT ours, djangos FROM t").fetchone()
    assert (stored_ours, type(stored_ours)) == (stored_djangos, type(stored_djangos))
    django_sqlite.close()


@pytest.mark.django_db
def test_flush_twice_and_redelivery_never_double_count():
    sink = MemorySink()
    for index in range(3):
        sink.put(event(f"r{index}"))
    assert drain_into_records(sink) == 3
    assert drain_into_records(sink) == 0
    sink.put(event("r1"))  # redelivered
    sink.put(event("r3"))
    assert drain_into_records(sink) == 1
    assert UsageRecord.objects.count() == 4
    record = UsageRecord.objects.get(request_id="r0")
    assert record.cost == Decimal("0.0015") and record.prompt_tokens == 10


@pytest.mark.django_db
def test_a_client_request_id_used_twice_keeps_both_records_and_redelivery_neither():
    first = event("trace-42", event_id="gw-1", prompt_tokens=1)
    second = event("trace-42", event_id="gw-2", prompt_tokens=2)
    assert write_records([first, second]) == 2
    assert write_records([first, second]) == 0  # redelivered: keyed by event id
    assert sorted(UsageRecord.objects.filter(request_id="trace-42")
                  .values_list("event_id", "prompt_tokens")) == [("gw-1", 1), ("gw-2", 2)]
    own = event("gw-3")  # the gateway's own request id is unique: it is the event id too
    assert write_records([own, own]) == 1
    assert UsageRecord.objects.get(request_id="gw-3").event_id == "gw-3"


@pytest.mark.django_db
@pytest.mark.parametrize("rows_max", [1, 7, 250])
def test_batches_wider_than_one_statement_count_every_new_row_once(monkeypatch, rows_max):
    monkeypatch.setattr("governance.tasks.INSERT_ROWS_MAX", rows_max)
    monkeypatch.setattr("governance.tasks._INSERT_PLANS", {})
    assert write_records([event(f"old{index}") for index in range(5)]) == 5
    # 20 events: 5 already recorded, one listed twice, spread over several statements.
    batch = [event(f"old{index}") for index in range(5)]
    batch += [event(f"new{index}", prompt_tokens=index) for index in range(15)]
    batch.insert(9, event("new3", prompt_tokens=3))
    assert write_records(batch) == 15
    assert UsageRecord.objects.count() == 20
    assert sorted(UsageRecord.objects.filter(request_id__startswith="new")
                  .values_list("prompt_tokens", flat=True)) == list(range(15))
    assert write_records(batch) == 0


@pytest.mark.django_db
def test_one_statement_stays_within_the_databases_parameter_limit(monkeypatch):
    from django.db import connection

    from governance.tasks import RECORD_COLUMNS, _insert_plan, _parameters_max

    monkeypatch.setattr("governance.tasks._INSERT_PLANS", {})
    limit = _parameters_max(connection)
    assert limit >= len(RECORD_COLUMNS)
    plan = _insert_plan(connection)
    assert 1 <= plan.rows_per_statement * len(RECORD_COLUMNS) <= limit
    monkeypatch.setattr("governance.tasks._INSERT_PLANS", {})
    monkeypatch.setattr("governance.tasks._parameters_max", lambda _: len(RECORD_COLUMNS) * 3)
    assert _insert_plan(connection).rows_per_statement == 3
    assert write_records([event(f"r{index}") for index in range(10)]) == 10


def test_an_event_queued_before_event_ids_existed_is_keyed_by_its_request_id():
    legacy = orjson.loads(event("r-old").to_json())
    del legacy["event_id"]
    assert UsageEvent.from_json(orjson.dumps(legacy)).key == "r-old"


@pytest.mark.django_db
def test_a_failed_flush_puts_the_batch_back(monkeypatch):
    sink = MemorySink()
    sink.put(event("a"))
    sink.put(event("b"))

    def broken(events):
        raise RuntimeError("database is down")

    monkeypatch.setattr("governance.tasks.write_records", broken)
    with pytest.raises(RuntimeError):
        drain_into_records(sink)
    assert sink.pending() == 2
    monkeypatch.undo()
    assert drain_into_records(sink) == 2


@pytest.mark.django_db
def test_copy_counters_writes_only_changed_rows():
    key = VirtualKeyFactory()
    budget = BudgetFactory(virtual_key=key, max_limit=Decimal("10"), reset_duration="1d")
    rate = RateLimitFactory(virtual_key=key, token_max_limit=1000, token_reset_duration="1h",
                            request_max_limit=10, request_reset_duration="1m")
    rows = limit_rows()
    used = {f"budget:{budget.id}": 2_500_000_000, f"rate:{rate.id}:tokens": 321,
            f"rate:{rate.id}:requests": 4}
    assert copy_counters(rows, used) == 2
    assert Budget.objects.get().current_usage == Decimal("2.5")
    rate.refresh_from_db()
    assert (rate.token_current_usage, rate.request_current_usage) == (321, 4)
    assert copy_counters(limit_rows(), used) == 0


@pytest.mark.django_db
def test_record_resets_moves_last_reset_along_the_lattice():
    start = datetime(2026, 3, 1, 10, 0, 0, 400_000, tzinfo=UTC)
    budget = BudgetFactory(team=TeamFactory(), reset_duration="1h", last_reset=start,
                           current_usage=Decimal("3"))
    before = budget_limit(budget, "")
    with time_machine.travel(start + timedelta(hours=2, minutes=30), tick=False):
        assert record_resets() == 1
        budget.refresh_from_db()
        assert budget.last_reset == datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
        assert budget.current_usage == 0
        after = budget_limit(budget, "")
        now = datetime.now(UTC).timestamp()
        from governance.ledger import window_key

        # the same window key before and after: the ledger counter is not lost
        assert window_key(before.window, now) == window_key(after.window, now)
        assert record_resets() == 0


@pytest.mark.django_db
def test_record_resets_calendar_budget_to_month_start():
    budget = BudgetFactory(team=TeamFactory(), reset_duration="1M", calendar_aligned=True,
                           last_reset=datetime(2026, 1, 1, tzinfo=UTC))
    with time_machine.travel(datetime(2026, 3, 15, 8, tzinfo=UTC), tick=False):
        record_resets()
    budget.refresh_from_db()
    assert budget.last_reset == datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)
async def test_rebuild_counters_sets_counters_from_records_idempotently(close_async_connections):
    from asgiref.sync import sync_to_async

    def setup():
        team = TeamFactory()
        key = VirtualKeyFactory(team=team)
        budget = BudgetFactory(team=team, max_limit=Decimal("100"), reset_duration="1d",
                               last_reset=datetime.now(UTC) - timedelta(hours=1))
        rate = RateLimitFactory(virtual_key=key, token_max_limit=10_000,
                                token_reset_duration="1d", request_max_limit=100,
                                request_reset_duration="1d",
                                token_last_reset=datetime.now(UTC) - timedelta(hours=1),
                                request_last_reset=datetime.now(UTC) - timedelta(hours=1))
        now = datetime.now(UTC).timestamp()
        write_records([
            event("a", team_id=str(team.id), virtual_key_id=str(key.id), created_at=now - 60),
            event("b", team_id=str(team.id), virtual_key_id=str(key.id), created_at=now - 30,
                  cost_nanos=2_000_000_000, prompt_tokens=100, completion_tokens=50),
            # before the window: not counted
            event("old", team_id=str(team.id), virtual_key_id=str(key.id),
                  created_at=now - 7200),
        ])
        return budget_limit(budget, ""), rate_limits(rate, "")

    budget, (tokens, requests) = await sync_to_async(setup)()
    ledger = MemoryLedger()
    assert await ledger.admit("running", [budget], Reservation(cost_nanos=77))
    for _ in range(2):
        assert await rebuild_counters(ledger) == 3
        assert await ledger.usage_many([budget, tokens, requests]) == {  # + what runs holds
            budget.id: 2_001_500_077, tokens.id: 165, requests.id: 2}
    await ledger.settle("running", LedgerUsage(cost_nanos=0))
    assert await ledger.usage(budget) == 2_001_500_000


@pytest.mark.django_db(transaction=True)
async def test_flush_pass_writes_records_and_copies_counters(close_async_connections):
    from asgiref.sync import sync_to_async

    key = await sync_to_async(VirtualKeyFactory)()
    budget = await sync_to_async(BudgetFactory)(virtual_key=key, max_limit=Decimal("1"),
                                                reset_duration="1d")
    ledger = MemoryLedger()
    limit = budget_limit(budget, "")
    assert await ledger.admit("x", [limit], Reservation(cost_nanos=10))
    await ledger.settle("x", LedgerUsage(cost_nanos=250_000_000))
    sink = MemorySink()
    await sink.emit(event("x", virtual_key_id=str(key.id)))
    assert await flush_pass(sink, ledger) == 1
    refreshed = await Budget.objects.aget(pk=budget.pk)
    assert refreshed.current_usage == Decimal("0.25")
    assert await UsageRecord.objects.acount() == 1


@pytest.mark.redis
@pytest.mark.django_db
async def test_redis_stream_sink_delivers_once_and_survives_a_crashed_consumer():
    import redis.asyncio as aioredis

    stream = f"test:usage:{uuid.uuid4().hex}"
    producer_client = aioredis.Redis()
    sync_client = redis.Redis()
    try:
        sink = RedisStreamSink(producer_client, stream=stream)
        for index in range(5):
            await sink.emit(event(f"s{index}"))
        crashed = RedisStreamReader(sync_client, stream=stream, consumer="crashed")
        batch = crashed.drain(3)
        assert len(batch.events) == 3  # read, never acked: the consumer "crashed"
        survivor = RedisStreamReader(sync_client, stream=stream, consumer="survivor")
        first = survivor.drain(100)
        assert {e.request_id for e in first.events} == {"s3", "s4"}
        survivor.ack(first)
        import governance.sink as sink_module

        original = sink_module.CLAIM_IDLE_MS
        sink_module.CLAIM_IDLE_MS = 0  # claim the crashed consumer's entries at once
        try:
            second = survivor.drain(100)
        finally:
            sink_module.CLAIM_IDLE_MS = original
        assert {e.request_id for e in second.events} == {"s0", "s1", "s2"}
        survivor.ack(second)
        assert survivor.drain(100).events == ()
        assert sync_client.xlen(stream) == 0
    finally:
        sync_client.delete(stream)
        sync_client.close()
        await producer_client.aclose()


async def streamed_ids(client, stream: str) -> list[str]:
    """The request ids of the events in ``stream``, in stream order."""
    return [orjson.loads(fields[b"event"])["request_id"]
            for _, fields in await client.xrange(stream)]


@pytest.mark.redis
async def test_redis_stream_sink_sends_concurrent_events_once_each_in_few_round_trips():
    import redis.asyncio as aioredis

    stream = f"test:usage:{uuid.uuid4().hex}"
    client = aioredis.Redis()
    sink = RedisStreamSink(client, stream=stream)
    round_trips = 0
    pipeline = client.pipeline

    def counted_pipeline(*args, **kwargs):
        nonlocal round_trips
        round_trips += 1
        return pipeline(*args, **kwargs)

    client.pipeline = counted_pipeline
    try:
        await asyncio.gather(*(sink.emit(event(f"c{index}")) for index in range(300)))
        assert sink.pending() == 0
        assert await streamed_ids(client, stream) == \
            [f"c{index}" for index in range(300)]  # each once, in order
        assert round_trips <= 10  # batched while a round trip was on its way
    finally:
        await client.delete(stream)
        await client.aclose()


@pytest.mark.redis
async def test_redis_stream_sink_keeps_a_failed_batch_in_order_for_the_next_try():
    import redis.asyncio as aioredis

    stream = f"test:usage:{uuid.uuid4().hex}"
    client = aioredis.Redis()
    sink = RedisStreamSink(client, stream=stream, batch_max=4)
    pipeline = client.pipeline
    failures = iter([False, True])  # the second round trip fails

    def flaky_pipeline(*args, **kwargs):
        pipe = pipeline(*args, **kwargs)
        if next(failures, False):
            async def refused():
                raise redis.ConnectionError("Redis went away")
            pipe.execute = refused
        return pipe

    client.pipeline = flaky_pipeline
    try:
        await asyncio.gather(*(sink.emit(event(f"f{index}")) for index in range(10)))
        # The first round trip took the first event alone (the others came while it was on
        # its way); the second, of the next 4, failed: they wait, with the rest, in order.
        assert sink.pending() == 9
        assert await streamed_ids(client, stream) == ["f0"]
        assert await sink.retry_pending() == 0
        assert await streamed_ids(client, stream) == [f"f{index}" for index in range(10)]
    finally:
        await client.delete(stream)
        await client.aclose()


async def test_redis_stream_sink_buffers_when_redis_is_down():
    import redis.asyncio as aioredis

    client = aioredis.Redis(port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    try:
        sink = RedisStreamSink(client, stream="never")
        await sink.emit(event("kept"))
        assert sink.pending() == 1
    finally:
        await client.aclose()


# -- the sink on a multiplexed connection (production's default for redis:// URLs) ----------


@pytest.fixture
async def multiplexed():
    """``open(batch_max)``: a sink on a multiplexed connection to a stream of its own, and
    a plain client to read the stream; all closed (and the stream deleted) afterwards."""
    import redis.asyncio as aioredis

    from governance.ledger.multiplex import RedisMultiplexer

    stream = f"test:usage:{uuid.uuid4().hex}"
    client = aioredis.Redis()
    multiplexer = RedisMultiplexer("redis://127.0.0.1:6379/0")

    def open_sink(batch_max: int = 500) -> tuple[RedisStreamSink, object, str]:
        return (RedisStreamSink(client, stream=stream, batch_max=batch_max,
                                multiplexer=multiplexer), client, stream)

    yield open_sink
    await client.delete(stream)
    await client.aclose()
    await multiplexer.aclose()


@pytest.mark.redis
async def test_multiplexed_sink_sends_concurrent_events_once_each_in_few_writes(multiplexed):
    sink, client, stream = multiplexed()
    batches: list[int] = []
    execute_many = sink.multiplexer.execute_many

    async def counted(commands):
        batches.append(len(commands))
        return await execute_many(commands)

    sink.multiplexer.execute_many = counted
    await asyncio.gather(*(sink.emit(event(f"m{index}")) for index in range(300)))
    assert sink.pending() == 0
    assert await streamed_ids(client, stream) == [f"m{index}" for index in range(300)]
    assert sum(batches) == 300 and len(batches) <= 10


@pytest.mark.redis
async def test_multiplexed_sink_keeps_a_batch_that_failed_for_the_next_try(multiplexed):
    sink, client, stream = multiplexed(batch_max=4)
    await client.set(stream, "not a stream")  # every XADD of a batch gets an error reply
    await asyncio.gather(*(sink.emit(event(f"k{index}")) for index in range(6)))
    assert sink.pending() == 6
    await client.delete(stream)
    assert await sink.retry_pending() == 0
    assert await streamed_ids(client, stream) == [f"k{index}" for index in range(6)]


async def test_multiplexed_sink_buffers_when_redis_is_down(caplog):
    import redis.asyncio as aioredis

    from governance.ledger.multiplex import RedisMultiplexer

    client = aioredis.Redis(port=1, socket_connect_timeout=0.2, socket_timeout=0.2)
    multiplexer = RedisMultiplexer("redis://127.0.0.1:1/0", timeout_s=0.2,
                                   connect_timeout_s=0.2)
    try:
        sink = RedisStreamSink(client, stream="never", multiplexer=multiplexer)
        caplog.set_level("WARNING", logger="governance.sink")
        await sink.emit(event("kept"))
        await sink.emit(event("kept-too"))
        assert sink.pending() == 2
        assert [record.getMessage()[:44] for record in caplog.records] == [
            "usage sink unavailable, 1 event(s) buffered:"]  # once per 10 s, not per event
    finally:
        await client.aclose()
        await multiplexer.aclose()


async def test_sink_outage_lines_held_back_are_written_once_the_outage_ends(caplog):
    """Events fail to send for a while, then Redis is back: the next retry after the log's
    interval writes the last failure line it held back, with the count."""
    from governance.lograte import RateLimitedLog

    moment = [0.0]

    class Flaky:
        down = True

        async def execute_many(self, commands):
            if self.down:
                raise redis.ConnectionError("Redis went away")
            return [b"1-0"] * len(commands)

    sink = RedisStreamSink(None, stream="flaky", multiplexer=Flaky())
    sink._outage_log = RateLimitedLog(sink._outage_log.logger, clock=lambda: moment[0])
    caplog.set_level("WARNING", logger="governance.sink")
    for index in range(4):
        moment[0] = index
        await sink.emit(event(f"e{index}"))
    assert sink.pending() == 4
    sink.multiplexer.down = False
    moment[0] = 12.0
    assert await sink.retry_pending() == 0
    assert [record.getMessage() for record in caplog.records] == [
        "usage sink unavailable, 1 event(s) buffered: Redis went away",
        "usage sink unavailable, 4 event(s) buffered: Redis went away "
        "(the last of 3 like it in 12 s)"]
