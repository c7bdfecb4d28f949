"""One contract suite for every ledger backend (memory and Redis), under a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from governance.durations import parse_duration
from governance.ledger import (
    Admitted,
    Denied,
    Ledger,
    LedgerUnavailable,
    Limit,
    MemoryLedger,
    Metric,
    Outcome,
    Reservation,
    Usage,
    Window,
    ledger_from_url,
)
from governance.ledger.multiplex import RedisMultiplexer
from governance.ledger.redis import RedisLedger

START = datetime(2024, 1, 10, 12, 0, tzinfo=UTC).timestamp()
LEASE_SECONDS = 60.0
BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    # admits and settles through the multiplexed connection, the rest through the pool
    pytest.param("redis-multiplexed", id="redis-multiplexed", marks=pytest.mark.redis),
]


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def rolling(text: str, anchor: float = START, reset_marker: float | None = None) -> Window:
    return Window(parse_duration(text), calendar_aligned=False, anchor=anchor,
                  reset_marker=reset_marker)


def calendar(text: str) -> Window:
    return Window(parse_duration(text), calendar_aligned=True, anchor=START)


def requests_limit(maximum: int, window: Window | None = None, name: str = "r") -> Limit:
    return Limit(f"rate:{name}:requests", Metric.REQUESTS, maximum, window or rolling("1m"),
                 f'key "{name}" rate 1m')


def cost_limit(maximum: int, window: Window | None = None, name: str = "b") -> Limit:
    return Limit(f"budget:{name}", Metric.COST, maximum, window or rolling("1d"),
                 f'team "{name}" budget 1d')


def tokens_limit(maximum: int, name: str = "t") -> Limit:
    return Limit(f"rate:{name}:tokens", Metric.TOKENS, maximum, rolling("1h"), name)


def concurrent_limit(maximum: int, name: str = "c") -> Limit:
    return Limit(f"concurrent:{name}", Metric.CONCURRENT, maximum, None, name)


class _Backend:
    """Builds ledgers for one backend inside the running loop, and cleans up after."""

    def __init__(self, kind: str, clock: FakeClock) -> None:
        self.kind = kind
        self.clock = clock
        self.prefix = uuid4().hex
        self.clients: list[Redis] = []
        self.multiplexers: list[RedisMultiplexer] = []

    def build(self) -> Ledger:
        if self.kind == "memory":
            return MemoryLedger(clock=self.clock, key_prefix=self.prefix,
                                lease_seconds=LEASE_SECONDS)
        client = Redis(host="127.0.0.1", port=6379, db=0)
        self.clients.append(client)
        multiplexer = None
        if self.kind == "redis-multiplexed":
            multiplexer = RedisMultiplexer("redis://127.0.0.1:6379/0")
            self.multiplexers.append(multiplexer)
        return RedisLedger(client, key_prefix=self.prefix, clock=self.clock,
                           lease_seconds=LEASE_SECONDS, multiplexer=multiplexer)

    async def close(self) -> None:
        if not self.clients:
            return
        keys = [key async for key in self.clients[0].scan_iter(match=f"{{{self.prefix}}}:*")]
        if keys:
            await self.clients[0].delete(*keys)
        for client in self.clients:
            await client.aclose()
        for multiplexer in self.multiplexers:
            await multiplexer.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[_Backend]:
    built = _Backend(request.param, clock)
    yield built
    await built.close()


@pytest.fixture
def ledger(backend: _Backend) -> Ledger:
    return backend.build()


async def test_request_limit_admits_exactly_n_then_denies(ledger: Ledger,
                                                          clock: FakeClock) -> None:
    limit = requests_limit(3)
    clock.advance(15)
    for index in range(3):
        result = await ledger.admit(f"req-{index}", [limit], Reservation())
        assert isinstance(result, Admitted)
        assert result.used == {limit.id: index + 1}
    denied = await ledger.admit("req-3", [limit], Reservation())
    assert isinstance(denied, Denied)
    assert denied.outcome is Outcome.DENIED and not denied
    assert (denied.limit, denied.used, denied.maximum) == (limit, 3, 3)
    assert denied.retry_after_seconds == pytest.approx(45.0)
    assert 'key "r" rate 1m' in denied.reason
    assert await ledger.usage(limit) == 3


async def test_usage_exactly_at_budget_is_denied(ledger: Ledger) -> None:
    budget = cost_limit(1000)
    assert await ledger.admit("a", [budget], Reservation(cost_nanos=400))
    await ledger.settle("a", Usage(cost_nanos=1000))
    denied = await ledger.admit("b", [budget], Reservation(cost_nanos=1))
    assert isinstance(denied, Denied)
    assert (denied.used, denied.maximum) == (1000, 1000)


async def test_below_budget_admits_and_overshoots_by_its_own_estimate(ledger: Ledger) -> None:
    budget = cost_limit(1000)
    tokens = tokens_limit(50)
    assert await ledger.admit("a", [budget, tokens], Reservation(cost_nanos=999, tokens=49))
    assert await ledger.admit("b", [budget, tokens], Reservation(cost_nanos=500, tokens=10))
    assert await ledger.usage(budget) == 1499
    assert await ledger.usage(tokens) == 59
    assert not await ledger.admit("c", [budget], Reservation(cost_nanos=1))
    assert not await ledger.admit("d", [tokens], Reservation(tokens=1))


async def test_all_or_nothing(ledger: Ledger) -> None:
    budget, tokens, rate = cost_limit(10_000), tokens_limit(500), requests_limit(1)
    slots = concurrent_limit(5)
    assert await ledger.admit("first", [rate], Reservation())
    denied = await ledger.admit("second", [budget, tokens, slots, rate],
                                Reservation(cost_nanos=300, tokens=20))
    assert isinstance(denied, Denied) and denied.limit == rate
    assert [await ledger.usage(limit) for limit in (budget, tokens, slots, rate)] == [0, 0, 0, 1]
    await ledger.settle("second", Usage(cost_nanos=5, tokens=5))  # never admitted: no-op
    assert await ledger.usage(budget) == 0


async def test_denial_lists_every_violated_limit(ledger: Ledger) -> None:
    tokens, rate, roomy = tokens_limit(10), requests_limit(1), requests_limit(100, name="roomy")
    assert await ledger.admit("a", [tokens, rate], Reservation(tokens=10))
    denied = await ledger.admit("b", [roomy, tokens, rate], Reservation(tokens=1))
    assert isinstance(denied, Denied) and denied.limit == tokens
    assert denied.violations == ((tokens, 10), (rate, 1))
    assert await ledger.usage(roomy) == 0


async def test_set_usage_overwrites_the_current_window(ledger: Ledger, clock: FakeClock) -> None:
    budget, rate = cost_limit(1_000), requests_limit(10)
    assert await ledger.admit("a", [budget, rate], Reservation(cost_nanos=100))
    await ledger.set_usage(budget, 999)
    await ledger.set_usage(budget, 999)  # idempotent: SET, not INCRBY
    await ledger.set_usage(rate, 4)
    assert await ledger.usage_many([budget, rate]) == {budget.id: 999, rate.id: 4}
    assert await ledger.admit("b", [budget], Reservation(cost_nanos=5))
    assert not await ledger.admit("c", [budget], Reservation(cost_nanos=5))
    clock.advance(60)
    assert await ledger.usage(rate) == 0
    with pytest.raises(ValueError, match="leases"):
        await ledger.set_usage(concurrent_limit(1), 1)


async def test_rebuild_keeps_what_requests_in_flight_reserved(ledger: Ledger) -> None:
    # A rebuild while requests run: they settle against their reservations afterwards, so
    # the rebuilt counters must hold those reservations, or their settles take back what
    # was never there (a budget rebuilt during traffic ended at 0).
    budget, rate, tokens = cost_limit(1_000_000), requests_limit(100), tokens_limit(10_000)
    limits = [budget, rate, tokens, concurrent_limit(5)]
    assert await ledger.admit("done", limits, Reservation(cost_nanos=500, tokens=50))
    await ledger.settle("done", Usage(cost_nanos=300, tokens=30))
    for name in ("a", "b"):  # in flight during the rebuild
        assert await ledger.admit(name, limits, Reservation(cost_nanos=1_000, tokens=100))
    # the records know the settled request only
    await ledger.rebuild([(budget, 300), (rate, 1), (tokens, 30)])
    await ledger.rebuild([(budget, 300), (rate, 1), (tokens, 30)])  # twice: the same
    assert await ledger.usage_many([budget, rate, tokens]) == {
        budget.id: 2_300, rate.id: 3, tokens.id: 230}
    await ledger.settle("a", Usage(cost_nanos=700, tokens=70))
    await ledger.release("b")
    assert await ledger.usage_many([budget, rate, tokens]) == {
        budget.id: 1_000, rate.id: 2, tokens.id: 100}  # exactly what was used
    with pytest.raises(ValueError, match="leases"):
        await ledger.rebuild([(concurrent_limit(1), 1)])


async def test_usage_many_counts_live_leases(ledger: Ledger) -> None:
    slots, rate = concurrent_limit(3), requests_limit(10)
    assert await ledger.admit("a", [slots, rate], Reservation())
    assert await ledger.admit("b", [slots, rate], Reservation())
    await ledger.settle("a", Usage())
    assert await ledger.usage_many([slots, rate]) == {slots.id: 1, rate.id: 2}


async def test_settle_replaces_reservation_and_keeps_request_counted(ledger: Ledger) -> None:
    budget, tokens, rate, slots = cost_limit(10_000), tokens_limit(500), requests_limit(5), \
        concurrent_limit(1)
    limits = [budget, tokens, rate, slots]
    assert await ledger.admit("r1", limits, Reservation(cost_nanos=3000, tokens=200))
    assert [await ledger.usage(limit) for limit in limits] == [3000, 200, 1, 1]
    await ledger.settle("r1", Usage(cost_nanos=1234, tokens=77))
    assert [await ledger.usage(limit) for limit in limits] == [1234, 77, 1, 0]
    await ledger.settle("r1", Usage(cost_nanos=999_999, tokens=999))
    await ledger.release("r1")
    await ledger.settle("unknown", Usage(cost_nanos=1))
    await ledger.release("unknown")
    assert [await ledger.usage(limit) for limit in limits] == [1234, 77, 1, 0]


async def test_settle_adjusts_the_window_admit_used(ledger: Ledger, clock: FakeClock) -> None:
    budget = cost_limit(10_000, rolling("1m"))
    assert await ledger.admit("r1", [budget], Reservation(cost_nanos=500))
    clock.advance(61)
    await ledger.settle("r1", Usage(cost_nanos=700))
    assert await ledger.usage(budget) == 0
    assert await ledger.usage(budget, now=START + 1) == 700


async def test_release_gives_everything_back(ledger: Ledger) -> None:
    budget, rate, slots = cost_limit(10_000), requests_limit(1), concurrent_limit(1)
    assert await ledger.admit("r1", [budget, rate, slots], Reservation(cost_nanos=800))
    assert not await ledger.admit("r2", [rate], Reservation())
    await ledger.release("r1")
    assert [await ledger.usage(limit) for limit in (budget, rate, slots)] == [0, 0, 0]
    assert await ledger.admit("r2", [budget, rate, slots], Reservation(cost_nanos=800))


async def test_concurrency_slots_are_exact_and_leased(ledger: Ledger, clock: FakeClock) -> None:
    slots = concurrent_limit(2)
    results = await asyncio.gather(
        *(ledger.admit(f"c{index}", [slots], Reservation()) for index in range(5)))
    winners = [f"c{index}" for index, result in enumerate(results) if result]
    assert len(winners) == 2
    denied = next(result for result in results if not result)
    assert isinstance(denied, Denied) and denied.retry_after_seconds == 1.0
    await ledger.settle(winners[0], Usage())
    assert await ledger.usage(slots) == 1
    assert await ledger.admit("c5", [slots], Reservation())
    assert not await ledger.admit("c6", [slots], Reservation())
    clock.advance(LEASE_SECONDS + 1)  # both holders "crashed": their leases run out
    assert await ledger.usage(slots) == 0
    assert await ledger.admit("c7", [slots], Reservation())


async def test_rolling_window_rolls_over_on_the_lattice(ledger: Ledger, clock: FakeClock) -> None:
    anchor = START - 7.5
    rate = requests_limit(1, rolling("1m", anchor=anchor))
    limits = (rate,)  # the same object every time: a backend may key its work on it
    clock.advance(52.4)  # 59.9 s into the first window
    assert await ledger.admit("a", limits, Reservation())
    denied = await ledger.admit("b", limits, Reservation())
    assert isinstance(denied, Denied)
    assert denied.retry_after_seconds == pytest.approx(0.1)
    clock.advance(0.1)
    assert await ledger.admit("b", limits, Reservation())
    clock.now = anchor + 60 * 100_000 + 59.9  # 100,000 windows later: same lattice
    assert await ledger.admit("c", limits, Reservation())
    denied = await ledger.admit("d", limits, Reservation())
    assert isinstance(denied, Denied)
    assert denied.retry_after_seconds == pytest.approx(0.1, abs=1e-6)


@pytest.mark.parametrize(
    ("duration", "before", "after"),
    [
        pytest.param("1d", (2024, 3, 5, 23, 59, 59), (2024, 3, 6, 0, 0, 0), id="daily"),
        pytest.param("1M", (2024, 1, 31, 23, 59, 59), (2024, 2, 1, 0, 0, 0), id="month-end"),
        pytest.param("1M", (2024, 2, 29, 23, 59, 59), (2024, 3, 1, 0, 0, 0), id="leap-feb"),
        pytest.param("1Q", (2024, 3, 31, 23, 0, 0), (2024, 4, 1, 0, 0, 0), id="quarter"),
    ],
)
async def test_calendar_rollover(ledger: Ledger, clock: FakeClock, duration: str,
                                 before: tuple[int, ...], after: tuple[int, ...]) -> None:
    budget = cost_limit(100, calendar(duration))
    clock.now = datetime(*before, tzinfo=UTC).timestamp()
    assert await ledger.admit("a", [budget], Reservation(cost_nanos=100))
    denied = await ledger.admit("b", [budget], Reservation(cost_nanos=1))
    assert isinstance(denied, Denied)
    expected_retry = datetime(*after, tzinfo=UTC).timestamp() - clock.now
    assert denied.retry_after_seconds == pytest.approx(expected_retry)
    clock.now = datetime(*after, tzinfo=UTC).timestamp()
    assert await ledger.usage(budget) == 0
    assert await ledger.admit("b", [budget], Reservation(cost_nanos=1))


async def test_reset_marker_starts_counting_anew(ledger: Ledger, clock: FakeClock) -> None:
    budget = cost_limit(100, rolling("1d"))
    assert await ledger.admit("a", [budget], Reservation(cost_nanos=100))
    clock.advance(3600)
    reset_budget = cost_limit(100, rolling("1d", reset_marker=clock.now))
    assert await ledger.usage(reset_budget) == 0
    assert await ledger.admit("b", [reset_budget], Reservation(cost_nanos=40))
    assert await ledger.usage(reset_budget) == 40
    assert await ledger.usage(budget) == 100  # history untouched


async def test_reset_clears_the_current_window(ledger: Ledger) -> None:
    rate = requests_limit(1)
    assert await ledger.admit("a", [rate], Reservation())
    await ledger.reset(rate)
    assert await ledger.usage(rate) == 0
    assert await ledger.admit("b", [rate], Reservation())


async def test_repeated_admit_does_not_reserve_twice(ledger: Ledger) -> None:
    rate = requests_limit(5)
    assert await ledger.admit("a", [rate], Reservation())
    assert await ledger.admit("a", [rate], Reservation())
    assert await ledger.usage(rate) == 1


@pytest.mark.parametrize("make", [lambda: requests_limit(1), lambda: concurrent_limit(1)],
                         ids=["requests", "concurrency"])
async def test_a_limit_listed_twice_counts_once(ledger: Ledger,
                                                make: Callable[[], Limit]) -> None:
    limit = make()
    admitted = await ledger.admit("a", (limit, limit), Reservation())
    assert admitted
    assert admitted.used == {limit.id: 1}
    assert await ledger.usage(limit) == 1
    assert isinstance(await ledger.admit("b", [limit, limit], Reservation()), Denied)


async def test_a_reset_marker_ahead_takes_effect_when_reached(ledger: Ledger,
                                                              clock: FakeClock) -> None:
    limits = (requests_limit(1, rolling("1h", reset_marker=START + 600)),)
    clock.advance(60)
    assert await ledger.admit("a", limits, Reservation())
    assert isinstance(await ledger.admit("b", limits, Reservation()), Denied)
    clock.now = START + 600  # the marker is reached: counting starts anew, same window
    assert await ledger.admit("c", limits, Reservation())


async def test_a_clock_stepped_back_counts_in_the_earlier_window(ledger: Ledger,
                                                                 clock: FakeClock) -> None:
    limits = (requests_limit(2, rolling("1m")),)
    clock.now = START + 30
    assert await ledger.admit("a", limits, Reservation())
    assert await ledger.admit("b", limits, Reservation())
    clock.now = START + 61  # the next window
    assert await ledger.admit("c", limits, Reservation())
    clock.now = START + 59  # stepped back (NTP): the first window, which is full
    assert isinstance(await ledger.admit("d", limits, Reservation()), Denied)


async def test_a_settle_after_the_lease_still_replaces_the_reservation(
        ledger: Ledger, clock: FakeClock) -> None:
    budget = cost_limit(1000, rolling("1d"))
    limits = (budget,)
    assert await ledger.admit("a", limits, Reservation(cost_nanos=500))
    clock.advance(LEASE_SECONDS * 2)  # past the lease, inside the budget's window
    await ledger.admit("tick", (), Reservation())  # the memory ledger purges on admit
    await ledger.settle("a", Usage(cost_nanos=1))
    assert await ledger.usage(budget) == 1


async def test_fifty_concurrent_admits_for_ten_requests(ledger: Ledger) -> None:
    rate = requests_limit(10)
    results = await asyncio.gather(
        *(ledger.admit(f"r{index}", [rate], Reservation()) for index in range(50)))
    assert sum(1 for result in results if result) == 10
    assert await ledger.usage(rate) == 10


@pytest.mark.redis
async def test_two_redis_ledgers_share_counters(clock: FakeClock) -> None:
    backend = _Backend("redis", clock)
    try:
        first, second = backend.build(), backend.build()
        rate = requests_limit(10)
        results = await asyncio.gather(
            *((first if index % 2 else second).admit(f"r{index}", [rate], Reservation())
              for index in range(20)))
        assert sum(1 for result in results if result) == 10
        winner = next(f"r{index}" for index, result in enumerate(results) if result)
        await second.release(winner)  # settle or release from another process works
        assert await first.usage(rate) == 9
    finally:
        await backend.close()


@pytest.mark.redis
async def test_redis_keys_expire_after_their_window(clock: FakeClock) -> None:
    backend = _Backend("redis", clock)
    try:
        ledger = backend.build()
        assert isinstance(ledger, RedisLedger)
        rate = requests_limit(5, rolling("1m"))
        clock.advance(20)
        assert await ledger.admit("a", [rate, concurrent_limit(1)], Reservation())
        client = backend.clients[0]
        keys = sorted([key async for key in client.scan_iter(match=f"{{{backend.prefix}}}:*")])
        ttls = {key.decode().rsplit(":", 1)[-1]: await client.pttl(key) for key in keys}
        window_start = f"{START:.0f}"
        assert ttls[window_start] == pytest.approx((40 + 3600) * 1000, abs=2000)
        assert ttls["lease"] == pytest.approx(LEASE_SECONDS * 1000, abs=2000)
        assert ttls["a"] == pytest.approx((40 + 3600) * 1000, abs=2000)  # the request record
    finally:
        await backend.close()


async def test_redis_down_raises_ledger_unavailable(clock: FakeClock) -> None:
    client = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2,
                   retry_on_error=[], retry=None)
    ledger = RedisLedger(client, key_prefix=uuid4().hex, clock=clock)
    try:
        with pytest.raises(LedgerUnavailable) as info:
            await ledger.admit("a", [requests_limit(1)], Reservation())
        assert info.value.__cause__ is not None
        with pytest.raises(LedgerUnavailable):
            await ledger.settle("a", Usage())
    finally:
        await client.aclose()


class _BrokenLedger(MemoryLedger):
    """Every method fails the way a broken backend would."""

    @property
    def base_exceptions(self) -> tuple[type[BaseException], ...]:
        return (ConnectionError,)

    async def admit(self, request_id: str, limits: Sequence[Limit],
                    reservation: Reservation) -> Admitted | Denied:
        raise ConnectionError("backend down")

    async def usage(self, limit: Limit, now: float | None = None) -> int:
        raise ValueError("a bug, not an outage")


async def test_backend_errors_become_ledger_unavailable_and_bugs_do_not() -> None:
    ledger = _BrokenLedger()
    with pytest.raises(LedgerUnavailable) as info:
        await ledger.admit("a", [requests_limit(1)], Reservation())
    assert isinstance(info.value.__cause__, ConnectionError)
    with pytest.raises(ValueError, match="a bug"):
        await ledger.usage(requests_limit(1))
    await ledger.settle("a", Usage())  # inherited methods stay wrapped and working


async def test_ledger_from_url() -> None:
    assert isinstance(ledger_from_url("memory://", key_prefix="x"), MemoryLedger)
    ledger = ledger_from_url("redis://127.0.0.1:6379/0", key_prefix="x")
    assert isinstance(ledger, RedisLedger)
    assert isinstance(ledger.multiplexer, RedisMultiplexer)
    await ledger.aclose()
    tls = ledger_from_url("rediss://127.0.0.1:6380/0", key_prefix="x")  # never connected
    assert isinstance(tls, RedisLedger) and tls.multiplexer is None
    await tls.aclose()
    with pytest.raises(ValueError, match="memcached://nowhere"):
        ledger_from_url("memcached://nowhere")


# -- property test against an independent model -------------------------------------------

MODEL_WINDOW_SECONDS = 10
MODEL_MAX_REQUESTS = 3
MODEL_MAX_COST = 100


@dataclass
class _ModelEvent:
    time: float
    cost: int
    state: str = "in-flight"  # or "settled", "released"


def _model_window(time: float) -> int:
    return int((time - START) // MODEL_WINDOW_SECONDS)


def _model_usage(events: dict[str, _ModelEvent], now: float) -> tuple[int, int]:
    """(requests, cost) counted in the window containing ``now``, by summing events."""
    current = [event for event in events.values()
               if event.state != "released" and _model_window(event.time) == _model_window(now)]
    return len(current), sum(event.cost for event in current)


# Amounts that often land exactly on the limit, where ">=" versus ">" matters.
amounts = st.sampled_from([0, 1, 25, 50, 99, 100])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("admit"), amounts),
        st.tuples(st.just("settle"), st.integers(0, 20), amounts),
        st.tuples(st.just("release"), st.integers(0, 20)),
        st.tuples(st.just("advance"), st.integers(1, 7)),
    ),
    max_size=25,
)


async def _run_against_model(kind: str, steps: list[tuple[int | str, ...]]) -> None:
    clock = FakeClock()
    backend = _Backend(kind, clock)
    ledger = backend.build()
    window = rolling(f"{MODEL_WINDOW_SECONDS}s")
    rate = requests_limit(MODEL_MAX_REQUESTS, window)
    budget = cost_limit(MODEL_MAX_COST, window)
    limits = (rate, budget)  # one object for every admit, as the gateway passes its limits
    events: dict[str, _ModelEvent] = {}
    try:
        for number, step in enumerate(steps):
            if step[0] == "advance":
                clock.advance(int(step[1]))
            elif step[0] == "admit":
                requests, cost = _model_usage(events, clock.now)
                expected = requests + 1 <= MODEL_MAX_REQUESTS and cost < MODEL_MAX_COST
                result = await ledger.admit(f"q{number}", limits,
                                            Reservation(cost_nanos=int(step[1])))
                assert bool(result) == expected
                if expected:
                    events[f"q{number}"] = _ModelEvent(clock.now, int(step[1]))
            else:
                names = sorted(events)
                if not names:
                    continue
                name = names[int(step[1]) % len(names)]
                event = events[name]
                if step[0] == "settle":
                    await ledger.settle(name, Usage(cost_nanos=int(step[2])))
                    if event.state == "in-flight":
                        event.cost, event.state = int(step[2]), "settled"
                else:
                    await ledger.release(name)
                    if event.state == "in-flight":
                        event.state = "released"
            requests, cost = _model_usage(events, clock.now)
            assert await ledger.usage(rate) == requests
            assert await ledger.usage(budget) == cost
    finally:
        await backend.close()


@pytest.mark.parametrize("kind", BACKENDS)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=operations)
def test_backend_matches_model(kind: str, steps: list[tuple[int | str, ...]]) -> None:
    asyncio.run(_run_against_model(kind, steps))


def test_identity_cache_finds_the_same_object_only() -> None:
    from governance.ledger.base import IdentityCache

    cache: IdentityCache[str] = IdentityCache(max_entries=2)
    first, equal = (requests_limit(1),), (requests_limit(1),)
    assert first == equal and first is not equal
    assert cache.put(first, "plan") == "plan"
    assert cache.get(first) == "plan"
    assert cache.get(equal) is None  # equal is not enough
    cache.put(equal, "other")
    assert cache.get(equal) == "other" and cache.get(first) == "plan"
    third = ("third",)
    cache.put(third, "new")  # two entries already: the cache starts over
    assert (cache.get(first), cache.get(equal), cache.get(third)) == (None, None, "new")
