"""Daily rollups kept by the usage flush (``write_records`` → ``add_to_rollups``): the same
rows a rebuild from the records gives, each event counted once, across writers."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from governance.models import UsageRecord, UsageRollup
from governance.sink import UsageEvent
from governance.tasks import write_records
from governance.usage import add_to_rollups, rollup_usage
from tests.factories import CustomerFactory, TeamFactory

FIELDS = ("day", "dimension", "dimension_id", "dimension_name", "request_count",
          "error_count", "prompt_tokens", "completion_tokens", "cached_tokens",
          "reasoning_tokens", "cost")
DAY = dt.date(2025, 3, 11)
MIDNIGHT = dt.datetime(2025, 3, 12, tzinfo=dt.UTC).timestamp()  # the end of DAY
KEYS = [str(uuid.uuid4()) for _ in range(2)]


def rollups() -> set[tuple]:
    return set(UsageRollup.objects.values_list(*FIELDS))


def event(request_id: str, **overrides) -> UsageEvent:
    values = {"request_id": request_id, "created_at": MIDNIGHT - 3600, "provider": "openai",
              "requested_model": "gpt-4o", "resolved_model": "gpt-4o",
              "request_type": "chat_completion", "status_code": 200, "prompt_tokens": 10,
              "completion_tokens": 5, "cost_nanos": 1_500_000}
    values.update(overrides)
    return UsageEvent(**values)


def row(dimension: str, dimension_id: str, name: str, *, day: dt.date = DAY, requests: int = 1,
        errors: int = 0, prompt: int = 10, completion: int = 5, cached: int = 0,
        reasoning: int = 0, cost: str = "0.0015") -> tuple:
    return (day, dimension, dimension_id, name, requests, errors, prompt, completion, cached,
            reasoning, Decimal(cost))


@pytest.mark.django_db
def test_a_flush_adds_its_records_to_every_dimension_of_their_day():
    team, customer = TeamFactory(name="research"), CustomerFactory(name="acme")
    key = KEYS[0]
    written = write_records([
        event("a", virtual_key_id=key, virtual_key_name="app", team_id=str(team.id),
              cached_tokens=4, reasoning_tokens=2),
        event("b", virtual_key_id=key, virtual_key_name="app", team_id=str(team.id),
              status_code=429, prompt_tokens=0, completion_tokens=0, cost_nanos=0),
        event("c", customer_id=str(customer.id), provider="anthropic",
              resolved_model="claude-3", created_at=MIDNIGHT + 1),  # the next UTC day
    ])
    assert written == 3
    both = {"requests": 2, "errors": 1, "cached": 4, "reasoning": 2}
    nxt = {"day": DAY + dt.timedelta(days=1)}
    assert rollups() == {
        row("virtual_key", key, "app", **both), row("team", str(team.id), "research", **both),
        row("customer", "", "", **both), row("provider", "openai", "openai", **both),
        row("model", "gpt-4o", "gpt-4o", **both),
        row("virtual_key", "", "", **nxt), row("team", "", "", **nxt),
        row("customer", str(customer.id), "acme", **nxt),
        row("provider", "anthropic", "anthropic", **nxt),
        row("model", "claude-3", "claude-3", **nxt),
    }


@pytest.mark.django_db
def test_redelivered_events_are_not_added_twice():
    first = [event(f"r{index}") for index in range(3)]
    assert write_records(first) == 3
    assert write_records(first) == 0  # all redelivered
    assert write_records([first[1], event("r3", prompt_tokens=7), first[1]]) == 1
    provider = UsageRollup.objects.get(dimension="provider")
    assert (provider.request_count, provider.prompt_tokens) == (4, 37)
    assert provider.cost == Decimal("0.006")


@pytest.mark.django_db
def test_later_flushes_add_to_the_rows_and_name_keys_by_their_latest_record():
    key = KEYS[0]
    write_records([event("a", virtual_key_id=key, virtual_key_name="old")])
    write_records([event("c", virtual_key_id=key, virtual_key_name="older",
                         created_at=MIDNIGHT - 7200),
                   event("b", virtual_key_id=key, virtual_key_name="new",
                         created_at=MIDNIGHT - 60)])
    row_ = UsageRollup.objects.get(dimension="virtual_key", dimension_id=key)
    assert (row_.dimension_name, row_.request_count) == ("new", 3)
    assert UsageRollup.objects.count() == 5


@pytest.mark.django_db
def test_teams_are_named_as_they_are_now_and_a_deleted_one_keeps_its_name():
    team = TeamFactory(name="before")
    team_id = str(team.id)
    write_records([event("a", team_id=team_id)])
    team.name = "after"
    team.save()
    write_records([event("b", team_id=team_id)])
    assert UsageRollup.objects.get(dimension="team", dimension_id=team_id).dimension_name == \
        "after"
    team.delete()
    write_records([event("c", team_id=team_id, created_at=MIDNIGHT + 60)])  # a new day's row
    assert set(UsageRollup.objects.filter(dimension="team", dimension_id=team_id)
               .values_list("day", "dimension_name", "request_count")) == {
        (DAY, "after", 2), (DAY + dt.timedelta(days=1), "after", 1)}
    ghost = str(uuid.uuid4())  # never existed: no name
    write_records([event("d", customer_id=ghost)])
    assert UsageRollup.objects.get(dimension="customer", dimension_id=ghost).dimension_name == ""


@pytest.mark.django_db
def test_the_day_is_the_records_own_when_the_timestamp_rounds_into_the_next_one():
    write_records([event("same-second", created_at=MIDNIGHT - 0.5),
                   event("edge", created_at=MIDNIGHT - 0.0000004)])  # rounds to 00:00:00
    stored = UsageRecord.objects.get(request_id="edge").created_at
    assert stored.date() == DAY + dt.timedelta(days=1)
    assert set(UsageRollup.objects.filter(dimension="provider")
               .values_list("day", "request_count")) == {(DAY, 1), (stored.date(), 1)}


@pytest.mark.django_db
def test_texts_are_cut_like_the_records_columns():
    write_records([event("long", provider="p" * 80, resolved_model="m" * 300,
                         virtual_key_id=KEYS[1], virtual_key_name="k" * 300)])
    record = UsageRecord.objects.get()
    assert set(UsageRollup.objects.values_list("dimension_id", flat=True)) == {
        record.provider, record.resolved_model, KEYS[1], ""}
    assert UsageRollup.objects.get(dimension="virtual_key").dimension_name == \
        record.virtual_key_name


@pytest.mark.django_db
def test_nothing_to_add_writes_nothing():
    assert add_to_rollups([]) == 0
    assert not UsageRollup.objects.exists()


@pytest.mark.django_db
def test_many_groups_span_several_statements(monkeypatch):
    monkeypatch.setattr("governance.usage.ROLLUP_ROWS_PER_STATEMENT", 3)
    events = [event(f"m{index}", resolved_model=f"model-{index}") for index in range(10)]
    assert write_records(events) == 10
    assert UsageRollup.objects.filter(dimension="model").count() == 10
    assert UsageRollup.objects.get(dimension="provider").request_count == 10


# -- the same rows a rebuild from the records gives ----------------------------------------------

events_strategy = st.lists(
    st.fixed_dictionaries({
        "request_id": st.sampled_from([f"id{index}" for index in range(30)]),
        # around the end of DAY: three UTC days, with instants next to midnight
        "created_at": st.one_of(
            st.floats(min_value=MIDNIGHT - 86_400, max_value=MIDNIGHT + 86_399),
            st.sampled_from([MIDNIGHT - 0.0000004, MIDNIGHT - 0.0000006, MIDNIGHT])),
        "virtual_key_id": st.sampled_from([None, *KEYS]),
        "provider": st.sampled_from(["openai", "anthropic"]),
        "resolved_model": st.sampled_from(["gpt-4o", "claude-3"]),
        "status_code": st.sampled_from([200, 201, 299, 300, 400, 429, 500, 503]),
        "prompt_tokens": st.integers(0, 10**6),
        "completion_tokens": st.integers(0, 10**6),
        "cached_tokens": st.integers(0, 1000),
        "reasoning_tokens": st.integers(0, 1000),
        "cost_nanos": st.integers(0, 10**10),
    }),
    max_size=40)


@pytest.mark.django_db
@hypothesis_settings(max_examples=40, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=events_strategy, cuts=st.lists(st.integers(0, 40), max_size=4))
def test_flushed_rollups_equal_a_rebuild_from_the_records(events, cuts):
    UsageRecord.objects.all().delete()
    UsageRollup.objects.all().delete()
    batches = [events[start:end] for start, end
               in zip([0, *sorted(cuts)], [*sorted(cuts), len(events)], strict=True)]
    for batch in batches:  # an id seen in an earlier batch is a redelivery
        write_records([event(**values, virtual_key_name=f"name-{values['virtual_key_id']}")
                       for values in batch])
    flushed = rollups()
    UsageRollup.objects.all().delete()
    rollup_usage(now=dt.datetime.fromtimestamp(MIDNIGHT + 86_399, dt.UTC), days=3)
    assert flushed == rollups()


# -- several writers ------------------------------------------------------------------------------

@pytest.mark.postgres  # several writers: Celery workers on PostgreSQL (embedded has one)
@pytest.mark.django_db(transaction=True)
def test_concurrent_flushes_each_add_their_share():
    errors: list[BaseException] = []

    def flush(prefix: str) -> None:
        try:
            for batch in range(5):
                write_records([event(f"{prefix}-{batch}-{index}") for index in range(20)])
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=flush, args=(f"w{number}",)) for number in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    provider = UsageRollup.objects.get(dimension="provider")
    assert provider.request_count == UsageRecord.objects.count() == 300
    assert provider.cost == Decimal("0.45")


# -- manage.py rebuild_usage_rollups --------------------------------------------------------------

@pytest.mark.django_db
def test_rebuild_command_recomputes_the_days_from_the_records(capsys, settings):
    settings.GATEWAY_USAGE_RETENTION_DAYS = 0
    now = dt.datetime.now(dt.UTC)
    write_records([event("x", created_at=now.timestamp())])
    UsageRollup.objects.update(request_count=99)  # drifted
    call_command("rebuild_usage_rollups")
    assert set(UsageRollup.objects.values_list("request_count", flat=True)) == {1}
    assert "Rebuilt 5 rollup rows over 2 day(s)." in capsys.readouterr().out


@pytest.mark.django_db
@pytest.mark.parametrize("days", [0, -1, 3661])
def test_rebuild_command_refuses_days_out_of_range(days):
    with pytest.raises(CommandError, match="--days must be between 1 and 3660"):
        call_command("rebuild_usage_rollups", f"--days={days}")


# -- the jobs that remain -------------------------------------------------------------------------

def test_every_scheduled_job_is_a_registered_task():
    from django.conf import settings as django_settings

    from gateway.celery import app

    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in django_settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled == {"governance.flush_usage", "governance.record_resets",
                         "governance.purge_usage"}
    assert scheduled <= set(app.tasks)


@pytest.mark.django_db
def test_the_retention_job_deletes_old_records_and_keeps_their_rollups(settings):
    from governance.tasks import purge_usage_task

    now = dt.datetime.now(dt.UTC)
    write_records([event("old", created_at=(now - dt.timedelta(days=10)).timestamp()),
                   event("new", created_at=(now - dt.timedelta(days=1)).timestamp())])
    settings.GATEWAY_USAGE_RETENTION_DAYS = 0
    assert purge_usage_task() == 0  # 0 keeps everything
    settings.GATEWAY_USAGE_RETENTION_DAYS = 7
    assert purge_usage_task() == 1
    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == ["new"]
    assert UsageRollup.objects.filter(dimension="provider").count() == 2  # both days kept
