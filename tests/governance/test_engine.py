"""The governance evaluator: identity before limits, every applicable limit in one admit,
denials mapped to the right error with a message naming owner, window and usage."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from gateway import errors
from gateway.secrets import digest
from governance.engine import (
    Governor,
    UsageView,
    capacity_plan,
    denial_error,
    describe,
    format_dollars,
    presented_key,
)
from governance.ledger import Denied, LedgerUnavailable, Limit, MemoryLedger, Metric, Reservation
from governance.ledger import Usage as LedgerUsage
from governance.snapshot import build_snapshot
from tests.factories import (
    BudgetFactory,
    CustomerFactory,
    ModelConfigFactory,
    ProviderConfigFactory,
    ProviderFactory,
    RateLimitFactory,
    TeamFactory,
    VirtualKeyFactory,
)

SECRET = "sk-gw-" + "B" * 32


@pytest.mark.parametrize(("headers", "expected"), [
    ({"authorization": f"Bearer {SECRET}"}, SECRET),
    ({"authorization": f"bearer   {SECRET}  "}, SECRET),
    ({"authorization": f"Basic {SECRET}"}, None),
    ({"x-api-key": SECRET}, SECRET),
    ({"api-key": SECRET}, SECRET),
    ({"x-goog-api-key": SECRET}, SECRET),
    ({"x-bf-vk": SECRET, "authorization": "Bearer other"}, SECRET),
    ({"authorization": "Bearer "}, None),
    ({}, None),
])
def test_presented_key(headers, expected):
    assert presented_key(headers) == expected


@pytest.mark.parametrize(("nanos", "text"), [
    (50_020_000_000, "$50.02"),
    (50_000_000_000, "$50.00"),
    (0, "$0.00"),
    (325_000, "$0.000325"),
    (10_000_000, "$0.01"),
])
def test_format_dollars(nanos, text):
    assert format_dollars(nanos) == text


def _limit(metric, maximum, label, window=True):
    from governance.durations import parse_duration
    from governance.ledger import Window

    return Limit(f"{metric.value}:{label}", metric, maximum,
                 Window(parse_duration("1d")) if window else None, label)


@pytest.mark.parametrize(("violated", "error", "message"), [
    ([(Metric.COST, 50_000_000_000, 50_020_000_000, 'team "research" budget 1d')],
     errors.BudgetExceeded, 'team "research" budget 1d: $50.02 of $50.00'),
    ([(Metric.REQUESTS, 10, 10, 'virtual key "k" request limit 1m')],
     errors.RequestLimited, 'virtual key "k" request limit 1m: 10 of 10 requests'),
    ([(Metric.TOKENS, 1000, 1200, 'virtual key "k" token limit 1h')],
     errors.TokenLimited, 'virtual key "k" token limit 1h: 1200 of 1000 tokens'),
    ([(Metric.TOKENS, 1000, 1000, "a"), (Metric.REQUESTS, 5, 5, "b")],
     errors.RateLimited, "a: 1000 of 1000 tokens; b: 5 of 5 requests"),
    ([(Metric.CONCURRENT, 2, 2, 'virtual key "k" concurrency')],
     errors.ConcurrencyLimited, 'virtual key "k" concurrency: 2 of 2 requests in flight'),
    # a rate limit is reported before a budget, as Bifrost checks rate limits first
    ([(Metric.COST, 1, 1, "c"), (Metric.REQUESTS, 1, 1, "r")], errors.RequestLimited,
     "c: $0.000000001 of $0.000000001; r: 1 of 1 requests"),
])
def test_denial_errors(violated, error, message):
    violations = tuple((_limit(metric, maximum, label, metric is not Metric.CONCURRENT), used)
                       for metric, maximum, used, label in violated)
    first, used = violations[0]
    denied = Denied(first, used, first.maximum, 42.0, "", violations)
    result = denial_error(denied)
    assert type(result) is error
    assert result.detail == message
    assert result.retry_after_seconds == 42.0


def test_describe_uses_the_owner_label():
    limit = _limit(Metric.COST, 1_000_000_000, 'customer "acme" budget 1M')
    assert describe(limit, 1_500_000_000) == 'customer "acme" budget 1M: $1.50 of $1.00'


@pytest.fixture
def world(db):
    customer = CustomerFactory(name="acme")
    team = TeamFactory(name="research", customer=customer)
    openai = ProviderFactory(name="openai")
    anthropic = ProviderFactory(name="anthropic", kind="anthropic")
    key = VirtualKeyFactory(name="prod", team=team, secret_hash=digest(SECRET),
                            max_concurrent_requests=2)
    ProviderConfigFactory(virtual_key=key, provider=openai, allowed_models=["gpt-4o"],
                          allow_all_keys=True)
    return {"customer": customer, "team": team, "openai": openai, "anthropic": anthropic,
            "key": key}


def snapshot():
    return build_snapshot(1, built_at=0.0)


@pytest.mark.parametrize(("secret", "error"), [
    (None, errors.VirtualKeyRequired),
    ("", errors.VirtualKeyRequired),
    ("sk-gw-unknown", errors.VirtualKeyNotFound),
])
def test_authentication_errors(world, secret, error):
    with pytest.raises(error):
        Governor(MemoryLedger()).authenticate(snapshot(), secret)


def test_key_optional_mode_lets_anonymous_requests_through(world):
    assert Governor(MemoryLedger(), require_virtual_key=False).authenticate(snapshot(), None) \
        is None


def test_inactive_and_expired_keys_are_blocked(world):
    key = world["key"]
    key.is_active = False
    key.save()
    with pytest.raises(errors.VirtualKeyBlocked, match="inactive"):
        Governor(MemoryLedger()).authenticate(snapshot(), SECRET)
    key.is_active = True
    key.expires_at = timezone.now() - timedelta(seconds=1)
    key.save()
    with pytest.raises(errors.VirtualKeyBlocked, match="expired"):
        Governor(MemoryLedger()).authenticate(snapshot(), SECRET)


def test_a_key_seen_before_is_checked_against_each_new_snapshot(world):
    governor = Governor(MemoryLedger())
    assert governor.authenticate(snapshot(), SECRET).name == "prod"
    assert governor.authenticate(snapshot(), SECRET).name == "prod"  # a second time too
    key = world["key"]
    key.is_active = False
    key.save()
    with pytest.raises(errors.VirtualKeyBlocked, match="inactive"):
        governor.authenticate(snapshot(), SECRET)
    key.delete()
    with pytest.raises(errors.VirtualKeyNotFound):
        governor.authenticate(snapshot(), SECRET)
    assert SECRET not in governor._digests[1]  # a deleted key's secret is not kept in memory
    with pytest.raises(errors.VirtualKeyNotFound):
        governor.authenticate(snapshot(), "sk-gw-unknown")


def test_remembered_secrets_are_only_known_ones_and_bounded(world, monkeypatch):
    """White-box: the digest cache holds no secret that named no key, and never more
    than DIGESTS_MAX of them (unknown secrets must not be able to fill memory)."""
    monkeypatch.setattr("governance.engine.DIGESTS_MAX", 3)
    for index in range(4):
        VirtualKeyFactory(secret_hash=digest(f"sk-gw-{index:032d}"))
    governor = Governor(MemoryLedger())
    current = snapshot()
    for index in range(50):
        with pytest.raises(errors.VirtualKeyNotFound):
            governor.authenticate(current, f"sk-gw-unknown-{index}")
    assert governor._digests[1] == {}
    for index in range(4):
        assert governor.authenticate(current, f"sk-gw-{index:032d}") is not None
        assert len(governor._digests[1]) <= 3
    assert governor.authenticate(current, SECRET).name == "prod"
    assert governor._digests[1][SECRET] == digest(SECRET)


def test_provider_and_model_access(world):
    governor = Governor(MemoryLedger())
    key = governor.authenticate(snapshot(), SECRET)
    assert governor.authorize(key, "openai", "gpt-4o").provider == "openai"
    with pytest.raises(errors.ProviderBlocked, match="'anthropic' is not allowed"):
        governor.authorize(key, "anthropic", "claude-sonnet-4-5")
    with pytest.raises(errors.ModelBlocked, match="'gpt-4o-mini' is not allowed"):
        governor.authorize(key, "openai", "gpt-4o-mini")
    assert governor.authorize(None, "anthropic", "anything") is None


@pytest.mark.django_db(transaction=True)
async def test_revoked_key_on_an_exhausted_team_gets_403_not_402(world,
                                                                 close_async_connections):
    from asgiref.sync import sync_to_async

    await sync_to_async(BudgetFactory)(team=world["team"], max_limit=Decimal("0.000000001"),
                                       reset_duration="1d")
    governor = Governor(MemoryLedger())
    snap = await sync_to_async(snapshot)()
    key = governor.authenticate(snap, SECRET)
    await _spend(governor, snap, key, "spent", 5)
    with pytest.raises(errors.BudgetExceeded):  # the team budget is used up ...
        await governor.admit("next", governor.limits_for(snap, key, "openai", "gpt-4o"),
                             Reservation(cost_nanos=1))
    world["key"].is_active = False
    await sync_to_async(world["key"].save)()
    with pytest.raises(errors.VirtualKeyBlocked):  # ... and the revoked key is refused first
        governor.authenticate(await sync_to_async(snapshot)(), SECRET)


def test_limits_cover_the_hierarchy_once(world):
    openai = world["openai"]
    provider_budget = BudgetFactory(provider=openai, reset_duration="1d")
    specific = ModelConfigFactory(model_name="gpt-4o", provider=openai)
    generic = ModelConfigFactory(model_name="gpt-4o", provider=None)
    other_provider = ModelConfigFactory(model_name="gpt-4o", provider=world["anthropic"])
    for config in (specific, generic, other_provider):
        RateLimitFactory(model_config=config, request_max_limit=5, request_reset_duration="1m",
                         token_max_limit=None, token_reset_duration=None)
    key_budget = BudgetFactory(virtual_key=world["key"], reset_duration="1d")
    team_budget = BudgetFactory(team=world["team"], reset_duration="1d")
    customer_budget = BudgetFactory(customer=world["customer"], reset_duration="1M")
    config = world["key"].provider_configs.get()
    config_budget = BudgetFactory(provider_config=config, reset_duration="1h")
    snap = snapshot()
    governor = Governor(MemoryLedger())
    key = governor.authenticate(snap, SECRET)
    ids = [limit.id for limit in governor.limits_for(snap, key, "openai", "gpt-4o")]
    assert len(ids) == len(set(ids))
    expected_budgets = {f"budget:{b.id}" for b in (provider_budget, key_budget, team_budget,
                                                   customer_budget, config_budget)}
    assert expected_budgets <= set(ids)
    assert f"concurrency:{world['key'].id}" in ids
    rate_ids = {i for i in ids if i.startswith("rate:")}
    assert rate_ids == {f"rate:{c.ratelimits.get().id}:requests" for c in (specific, generic)}
    # without a key only provider and model limits apply
    anonymous = governor.limits_for(snap, None, "openai", "gpt-4o")
    assert {limit.id for limit in anonymous} == {f"budget:{provider_budget.id}", *rate_ids}



def test_limits_are_reused_within_a_snapshot_and_recollected_for_a_new_one(world):
    first = snapshot()
    governor = Governor(MemoryLedger())
    key = governor.authenticate(first, SECRET)
    limits = governor.limits_for(first, key, "openai", "gpt-4o")
    assert governor.limits_for(first, key, "openai", "gpt-4o") is limits
    assert governor.limits_for(first, key, "openai", "gpt-4o-mini") is not limits

    added = BudgetFactory(virtual_key=world["key"], reset_duration="1d")
    second = snapshot()
    fresh = governor.limits_for(second, governor.authenticate(second, SECRET), "openai",
                                "gpt-4o")
    assert f"budget:{added.id}" in {limit.id for limit in fresh}
    assert f"budget:{added.id}" not in {limit.id for limit in limits}

async def test_admit_denies_the_team_budget_with_a_named_message():
    from governance.durations import parse_duration
    from governance.ledger import Window

    budget = Limit("budget:t", Metric.COST, 50_000_000_000, Window(parse_duration("1d")),
                   'team "research" budget 1d')
    governor = Governor(MemoryLedger())
    admission = await governor.admit("a", [budget], Reservation(cost_nanos=1))
    await governor.settle(admission, LedgerUsage(cost_nanos=50_020_000_000))
    with pytest.raises(errors.BudgetExceeded) as caught:
        await governor.admit("b", [budget], Reservation(cost_nanos=1))
    assert caught.value.detail == 'team "research" budget 1d: $50.02 of $50.00'
    assert caught.value.status_code == 402
    assert 0 < caught.value.retry_after_seconds <= 86400


async def test_fifty_concurrent_admits_against_ten_requests():
    from governance.durations import parse_duration
    from governance.ledger import Window

    limit = Limit("rate:x:requests", Metric.REQUESTS, 10, Window(parse_duration("1h")), "k")
    governor = Governor(MemoryLedger())

    async def one(index):
        try:
            await governor.admit(f"r{index}", [limit], Reservation())
        except errors.RequestLimited:
            return False
        return True

    results = await asyncio.gather(*(one(index) for index in range(50)))
    assert sum(results) == 10


class _DownLedger(MemoryLedger):
    async def admit(self, request_id, limits, reservation):
        raise LedgerUnavailable("redis: connection refused")

    async def settle(self, request_id, actual):
        raise LedgerUnavailable("redis: connection refused")


async def test_ledger_down_fails_closed_by_default_and_open_when_asked():
    from governance.durations import parse_duration
    from governance.ledger import Window

    limit = Limit("rate:x:requests", Metric.REQUESTS, 10, Window(parse_duration("1h")), "k")
    with pytest.raises(errors.GovernanceUnavailable) as caught:
        await Governor(_DownLedger()).admit("a", [limit], Reservation())
    assert caught.value.status_code == 503
    admission = await Governor(_DownLedger(), fail_open=True).admit("a", [limit], Reservation())
    assert admission.bypassed
    assert await Governor(_DownLedger()).settle(
        admission.__class__("x", (limit,), {}), LedgerUsage()) is False


class _FlakyLedger(MemoryLedger):
    """Refuses settles and releases while ``down``."""

    down = False

    async def settle(self, request_id, actual):
        if self.down:
            raise LedgerUnavailable("redis: connection refused")
        await super().settle(request_id, actual)

    async def release(self, request_id):
        if self.down:
            raise LedgerUnavailable("redis: connection refused")
        await super().release(request_id)


async def test_settles_and_releases_an_outage_refused_go_through_once_it_ends():
    # A concurrency slot (and a reservation) whose release or settle the ledger could not
    # take stayed taken until its lease ended: a key with 3 slots was refused for minutes.
    from governance.durations import parse_duration
    from governance.ledger import Window

    slots = Limit("key:k:concurrency", Metric.CONCURRENT, 3, None, "k")
    tokens = Limit("rate:k:tokens", Metric.TOKENS, 1000, Window(parse_duration("1h")), "k")
    ledger = _FlakyLedger()
    governor = Governor(ledger)
    admissions = [await governor.admit(f"r{index}", [slots, tokens], Reservation(tokens=100))
                  for index in range(3)]
    ledger.down = True
    assert await governor.settle(admissions[0], LedgerUsage(tokens=40)) is False
    await governor.release(admissions[1])
    assert await governor.settle(admissions[2], LedgerUsage(tokens=10)) is False
    assert governor.unfinished() == 3
    assert await governor.retry_unfinished() == 0  # still down: kept, in order
    ledger.down = False
    with pytest.raises(errors.ConcurrencyLimited):  # the three slots are still taken
        await governor.admit("blocked", [slots, tokens], Reservation())
    assert await governor.retry_unfinished() == 3
    assert governor.unfinished() == 0
    assert await ledger.usage(slots) == 0
    assert await ledger.usage(tokens) == 50  # the settled usage, not the reservations
    assert await governor.retry_unfinished() == 0  # nothing twice


async def test_an_outage_logs_one_line_per_kind_and_interval_with_a_count(caplog):
    from governance.durations import parse_duration
    from governance.engine import Admission
    from governance.ledger import Window
    from governance.lograte import RateLimitedLog

    limit = Limit("rate:x:requests", Metric.REQUESTS, 10, Window(parse_duration("1h")), "k")
    now = [100.0]
    governor = Governor(_DownLedger())
    governor.outage_log = RateLimitedLog(governor.outage_log.logger, clock=lambda: now[0])
    caplog.set_level("ERROR", logger="governance.engine")
    for index in range(500):  # a burst of requests during the outage
        with pytest.raises(errors.GovernanceUnavailable):
            await governor.admit(f"r{index}", [limit], Reservation())
        if index == 200:
            await governor.settle(Admission("s", (limit,), {}), LedgerUsage())
    assert [record.getMessage() for record in caplog.records] == [
        "ledger unavailable, refusing r0 (fail closed): redis: connection refused",
        "could not settle s (retried once the ledger answers): redis: connection refused"]
    now[0] += 12.5
    with pytest.raises(errors.GovernanceUnavailable):
        await governor.admit("later", [limit], Reservation())
    assert caplog.records[-1].getMessage() == (
        "ledger unavailable, refusing later (fail closed): redis: connection refused "
        "(and 499 more like it in the last 12 s)")


@pytest.mark.parametrize(("gaps", "written"), [
    ([0, 1, 2, 9.9], [True, False, False, False]),
    ([0, 10, 20], [True, True, True]),
    ([0, 5, 10.5, 11], [True, False, True, False]),
])
def test_rate_limited_log_writes_the_first_line_of_each_interval(caplog, gaps, written):
    import logging

    from governance.lograte import RateLimitedLog

    moment = [0.0]
    log = RateLimitedLog(logging.getLogger("test.lograte"), interval_s=10,
                         clock=lambda: moment[0])
    caplog.set_level("WARNING", logger="test.lograte")
    results = []
    for gap in gaps:
        moment[0] = gap
        results.append(log.warning("kind", "event at %s", gap))
    assert results == written
    assert log.warning("other kind", "a new kind is written at once")
    assert len(caplog.records) == written.count(True) + 1


def test_rate_limited_log_flush_writes_the_last_line_held_back_with_its_count(caplog):
    """When the failures stop, the lines left out since the last one written are not lost:
    ``flush`` writes the latest of them with the count, once its interval has passed."""
    import logging

    from governance.lograte import RateLimitedLog

    moment = [0.0]
    log = RateLimitedLog(logging.getLogger("test.lograte"), interval_s=10,
                         clock=lambda: moment[0])
    caplog.set_level("WARNING", logger="test.lograte")
    assert log.flush() == 0  # nothing logged yet
    for index in range(5):
        moment[0] = index
        log.error("down", "refusing %s", f"r{index}")
    log.warning("quiet", "a kind with nothing left out")
    moment[0] = 9.5
    assert log.flush() == 0  # still within the interval: a new failure would say it
    moment[0] = 10.0
    assert log.flush() == 1
    assert [(record.levelname, record.getMessage()) for record in caplog.records] == [
        ("ERROR", "refusing r0"), ("WARNING", "a kind with nothing left out"),
        ("ERROR", "refusing r4 (the last of 4 like it in 10 s)")]
    moment[0] = 30.0
    assert log.flush() == 0  # told once
    assert log.error("down", "refusing %s", "r5")  # and a new failure is written at once
    assert caplog.records[-1].getMessage() == "refusing r5"


async def test_rate_limit_headers_report_the_tightest_limit():
    from governance.durations import parse_duration
    from governance.ledger import Window

    roomy = Limit("rate:a:requests", Metric.REQUESTS, 100, Window(parse_duration("1h")), "a")
    tight = Limit("rate:b:requests", Metric.REQUESTS, 3, Window(parse_duration("1m")), "b")
    tokens = Limit("rate:b:tokens", Metric.TOKENS, 1000, Window(parse_duration("1m")), "b")
    governor = Governor(MemoryLedger())
    admission = await governor.admit("a", [roomy, tight, tokens], Reservation(tokens=100))
    headers = dict(governor.rate_limit_headers(admission))
    assert headers[b"x-ratelimit-limit-requests"] == b"3"
    assert headers[b"x-ratelimit-remaining-requests"] == b"2"
    assert headers[b"x-ratelimit-limit-tokens"] == b"1000"
    assert headers[b"x-ratelimit-remaining-tokens"] == b"900"
    for name in (b"x-ratelimit-reset-requests", b"x-ratelimit-reset-tokens"):
        assert headers[name].endswith(b"s")
        assert 1 <= int(headers[name][:-1]) <= 60  # the end of the 1-minute window


def test_usage_view_capacity_percentages():
    from governance.durations import parse_duration
    from governance.ledger import Window

    budget = Limit("budget:x", Metric.COST, 1000, Window(parse_duration("1d")), "x")
    tokens = Limit("rate:x:tokens", Metric.TOKENS, 200, Window(parse_duration("1d")), "x")
    view = UsageView()
    view.observe({budget.id: 850, tokens.id: 50})
    plan = capacity_plan((budget, tokens))
    capacity = view.capacity(plan)
    assert (capacity.budget_used, capacity.tokens_used, capacity.request) == (85.0, 25.0, 0.0)
    view.observe({tokens.id: 150})  # the same plan again: the new usage counts
    capacity = view.capacity(plan)
    assert (capacity.budget_used, capacity.tokens_used, capacity.request) == (85.0, 75.0, 0.0)


def test_reservation_estimates_prompt_and_max_tokens(world):
    snap = snapshot()
    governor = Governor(MemoryLedger(), default_max_tokens=1000)
    explicit = governor.reservation(snap.pricer, provider="openai", model="gpt-4o",
                                    request_type="chat_completion", prompt_tokens=100,
                                    max_output_tokens=50)
    default = governor.reservation(snap.pricer, provider="openai", model="gpt-4o",
                                   request_type="chat_completion", prompt_tokens=100,
                                   max_output_tokens=None)
    assert explicit.tokens == 150 and default.tokens == 1100
    assert 0 < explicit.cost_nanos < default.cost_nanos


async def _spend(governor, snap, key, request_id, cost_nanos):
    limits = governor.limits_for(snap, key, "openai", "gpt-4o")
    admission = await governor.admit(request_id, limits, Reservation(cost_nanos=1))
    await governor.settle(admission, LedgerUsage(cost_nanos=cost_nanos))


@pytest.mark.django_db(transaction=True)
async def test_lowering_a_budget_below_usage_keeps_the_usage_p28(world, close_async_connections):
    from asgiref.sync import sync_to_async

    budget = await sync_to_async(BudgetFactory)(virtual_key=world["key"],
                                                max_limit=Decimal("10"), reset_duration="1d")
    governor = Governor(MemoryLedger())
    snap = await sync_to_async(snapshot)()
    key = governor.authenticate(snap, SECRET)
    await _spend(governor, snap, key, "a", 5_000_000_000)
    budget.max_limit = Decimal("3")
    await sync_to_async(budget.save)()
    snap = await sync_to_async(snapshot)()
    key = governor.authenticate(snap, SECRET)
    with pytest.raises(errors.BudgetExceeded, match=r"\$5.00 of \$3.00"):
        await _spend(governor, snap, key, "b", 1)
    budget.max_limit = Decimal("20")  # raising it again: the $5 still counts
    await sync_to_async(budget.save)()
    snap = await sync_to_async(snapshot)()
    key = governor.authenticate(snap, SECRET)
    await _spend(governor, snap, key, "c", 1_000_000_000)
    limit = next(limit for limit in governor.limits_for(snap, key, "openai", "gpt-4o")
                 if limit.id == f"budget:{budget.id}")
    assert await governor.ledger.usage(limit) == 6_000_000_000


@pytest.mark.django_db(transaction=True)
async def test_switching_an_existing_budget_to_calendar_windows(world, close_async_connections):
    """Turning on calendar alignment moves the window to the calendar period: the counter
    of the new window starts empty, the old one is kept until it expires (no history is
    edited), and from then on the window rolls at UTC midnight."""
    from asgiref.sync import sync_to_async

    budget = await sync_to_async(BudgetFactory)(virtual_key=world["key"],
                                                max_limit=Decimal("10"), reset_duration="1d")
    governor = Governor(MemoryLedger())
    snap = await sync_to_async(snapshot)()
    key = governor.authenticate(snap, SECRET)
    await _spend(governor, snap, key, "a", 4_000_000_000)
    rolling = next(limit for limit in governor.limits_for(snap, key, "openai", "gpt-4o")
                   if limit.id == f"budget:{budget.id}")
    budget.calendar_aligned = True
    await sync_to_async(budget.save)()
    snap = await sync_to_async(snapshot)()
    key = governor.authenticate(snap, SECRET)
    limit = next(limit for limit in governor.limits_for(snap, key, "openai", "gpt-4o")
                 if limit.id == f"budget:{budget.id}")
    assert limit.window.calendar_aligned
    from governance.ledger import window_bounds

    start, end = window_bounds(limit.window, governor.ledger.clock())
    assert start % 86400 == 0 and end - start == 86400
    assert await governor.ledger.usage(limit) == 0  # the calendar window starts empty
    assert await governor.ledger.usage(rolling) == 4_000_000_000  # the old one is kept


def test_a_key_without_provider_configs_may_use_nothing_p35(world):
    world["key"].provider_configs.all().delete()
    governor = Governor(MemoryLedger())
    key = governor.authenticate(snapshot(), SECRET)
    with pytest.raises(errors.ProviderBlocked):
        governor.authorize(key, "openai", "gpt-4o")
