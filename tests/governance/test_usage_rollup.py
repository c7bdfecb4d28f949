"""Daily usage rollups and the retention purge (governance/usage.py), and their admin."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from django.urls import reverse

from governance.models import UsageRecord, UsageRollup
from governance.usage import purge_usage, rollup_usage
from tests.factories import CustomerFactory, TeamFactory
from tests.governance.test_usage_api import UsageRecordFactory

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2025, 3, 11, 9, 0, tzinfo=dt.UTC)
TODAY, YESTERDAY = dt.date(2025, 3, 11), dt.date(2025, 3, 10)
FIELDS = ("day", "dimension", "dimension_id", "dimension_name", "request_count",
          "error_count", "prompt_tokens", "completion_tokens", "cached_tokens",
          "reasoning_tokens", "cost")


def rollups() -> set[tuple]:
    return set(UsageRollup.objects.values_list(*FIELDS))


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=dt.UTC)


@pytest.fixture
def owners():
    team = TeamFactory(name="team-a")
    return {"team": team, "customer": CustomerFactory(name="customer-a"), "key": uuid.uuid4()}


def test_rollup_aggregates_each_dimension_per_utc_day(owners):
    team, customer, key = owners["team"], owners["customer"], owners["key"]
    UsageRecordFactory(created_at=at(YESTERDAY, 23, 59), virtual_key_id=key,
                       virtual_key_name="old-name", team_id=team.id, cost=Decimal("0.1"),
                       cached_tokens=2, reasoning_tokens=1)
    UsageRecordFactory(created_at=at(TODAY, 0, 1), virtual_key_id=key,
                       virtual_key_name="key-a", team_id=team.id, cost=Decimal("0.2"),
                       status_code=500)
    UsageRecordFactory(created_at=at(TODAY, 8), customer_id=customer.id,
                       provider="anthropic", resolved_model="claude-3", cost=Decimal("1"),
                       prompt_tokens=100, completion_tokens=50)
    UsageRecordFactory(created_at=at(YESTERDAY - dt.timedelta(days=1), 12))  # outside

    assert rollup_usage(now=NOW) == 15
    y_one = (1, 0, 10, 5, 2, 1, Decimal("0.1"))
    t_key = (1, 1, 10, 5, 0, 0, Decimal("0.2"))
    t_customer = (1, 0, 100, 50, 0, 0, Decimal("1"))
    assert rollups() == {
        (YESTERDAY, "virtual_key", str(key), "key-a", *y_one),  # its latest name
        (YESTERDAY, "team", str(team.id), "team-a", *y_one),
        (YESTERDAY, "customer", "", "", *y_one),
        (YESTERDAY, "provider", "openai", "openai", *y_one),
        (YESTERDAY, "model", "gpt-4o", "gpt-4o", *y_one),
        (TODAY, "virtual_key", str(key), "key-a", *t_key),
        (TODAY, "virtual_key", "", "", *t_customer),
        (TODAY, "team", str(team.id), "team-a", *t_key),
        (TODAY, "team", "", "", *t_customer),
        (TODAY, "customer", str(customer.id), "customer-a", *t_customer),
        (TODAY, "customer", "", "", *t_key),
        (TODAY, "provider", "openai", "openai", *t_key),
        (TODAY, "provider", "anthropic", "anthropic", *t_customer),
        (TODAY, "model", "gpt-4o", "gpt-4o", *t_key),
        (TODAY, "model", "claude-3", "claude-3", *t_customer),
    }


def test_rollup_is_idempotent(owners):
    for hour in range(5):
        UsageRecordFactory(created_at=at(TODAY, hour), team_id=owners["team"].id)
    first = rollup_usage(now=NOW)
    before = rollups()
    ids = set(UsageRollup.objects.values_list("id", flat=True))
    assert rollup_usage(now=NOW) == first
    assert rollups() == before
    assert set(UsageRollup.objects.values_list("id", flat=True)) == ids


def test_rollup_picks_up_new_records_and_renames():
    key = uuid.uuid4()
    UsageRecordFactory(created_at=at(TODAY, 1), virtual_key_id=key, virtual_key_name="before")
    rollup_usage(now=NOW)
    UsageRecordFactory(created_at=at(TODAY, 2), virtual_key_id=key, virtual_key_name="after",
                       cost=Decimal("0.5"))
    rollup_usage(now=NOW)
    row = UsageRollup.objects.get(day=TODAY, dimension="virtual_key", dimension_id=str(key))
    assert (row.dimension_name, row.request_count, row.cost) == ("after", 2, Decimal("0.501"))
    assert UsageRollup.objects.filter(dimension="virtual_key").count() == 1


def test_rollup_window_and_older_rows_are_left_alone():
    UsageRecordFactory(created_at=at(TODAY, 1))
    UsageRecordFactory(created_at=at(YESTERDAY, 1))
    rollup_usage(now=NOW, days=2)
    UsageRecord.objects.filter(created_at__lt=at(TODAY, 0)).delete()  # purged meanwhile
    assert rollup_usage(now=NOW, days=1) == 5
    assert UsageRollup.objects.filter(day=YESTERDAY).count() == 5  # kept as they were
    assert UsageRollup.objects.get(day=YESTERDAY, dimension="provider").request_count == 1


def test_rollup_keeps_the_name_of_a_deleted_team(owners):
    team = owners["team"]
    UsageRecordFactory(created_at=at(YESTERDAY, 1), team_id=team.id)
    rollup_usage(now=NOW)
    team_id = team.id
    team.delete()
    UsageRecordFactory(created_at=at(TODAY, 1), team_id=team_id)
    rollup_usage(now=NOW)
    names = set(UsageRollup.objects.filter(dimension="team", dimension_id=str(team_id))
                .values_list("day", "dimension_name"))
    assert names == {(YESTERDAY, "team-a"), (TODAY, "team-a")}


def test_rollup_uses_utc_days_whatever_the_offset_of_now():
    UsageRecordFactory(created_at=at(TODAY, 0, 30))
    tokyo = NOW.astimezone(dt.timezone(dt.timedelta(hours=9)))  # 18:00 on the same UTC day
    rollup_usage(now=tokyo, days=1)
    assert set(UsageRollup.objects.values_list("day", flat=True)) == {TODAY}
    late = at(TODAY, 23).astimezone(dt.timezone(dt.timedelta(hours=-5)))
    assert rollup_usage(now=late, days=1) == 5


def test_rollup_of_nothing_writes_nothing():
    assert rollup_usage(now=NOW) == 0
    assert not UsageRollup.objects.exists()


@pytest.mark.parametrize(
    "kwargs",
    [pytest.param({"now": NOW.replace(tzinfo=None)}, id="naive"),
     pytest.param({"now": NOW, "days": 0}, id="zero-days")],
)
def test_rollup_refuses_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=r"now|days"):
        rollup_usage(**kwargs)


# --- retention ---------------------------------------------------------------------------------

def test_purge_deletes_old_records_in_batches_and_keeps_rollups():
    old = [UsageRecordFactory.build(created_at=NOW - dt.timedelta(days=31, minutes=n))
           for n in range(7)]
    UsageRecord.objects.bulk_create(old)
    kept = UsageRecordFactory(created_at=NOW - dt.timedelta(days=29))
    rollup_usage(now=NOW - dt.timedelta(days=31), days=2)
    rolled = rollups()

    assert purge_usage(now=NOW, retention_days=30, batch_size=3) == 7
    assert list(UsageRecord.objects.values_list("id", flat=True)) == [kept.id]
    assert rollups() == rolled
    assert purge_usage(now=NOW, retention_days=30) == 0


def test_purge_boundary_is_exact():
    UsageRecordFactory(request_id="on-the-cutoff", created_at=NOW - dt.timedelta(days=7))
    UsageRecordFactory(request_id="just-before",
                       created_at=NOW - dt.timedelta(days=7, microseconds=1))
    assert purge_usage(now=NOW, retention_days=7) == 1
    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == ["on-the-cutoff"]


def test_purge_with_zero_retention_keeps_everything():
    UsageRecordFactory(created_at=NOW - dt.timedelta(days=3650))
    assert purge_usage(now=NOW, retention_days=0) == 0
    assert UsageRecord.objects.count() == 1


@pytest.mark.parametrize(
    "kwargs",
    [pytest.param({"now": NOW.replace(tzinfo=None), "retention_days": 1}, id="naive"),
     pytest.param({"now": NOW, "retention_days": -1}, id="negative")],
)
def test_purge_refuses_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=r"now|retention_days"):
        purge_usage(**kwargs)


# --- admin -------------------------------------------------------------------------------------

def test_rollup_admin_lists_and_is_read_only(admin_client_logged_in):
    UsageRecordFactory(created_at=at(TODAY, 1), virtual_key_id=uuid.uuid4(),
                       virtual_key_name="key-shown", cost=Decimal("1.25"))
    rollup_usage(now=NOW)
    row = UsageRollup.objects.get(dimension="virtual_key")
    changelist = reverse("admin:governance_usagerollup_changelist")
    response = admin_client_logged_in.get(changelist)
    assert response.status_code == 200
    assert "key-shown" in response.text and "$1.25<" in response.text
    assert admin_client_logged_in.get(changelist, {"dimension": "team", "q": "a"}
                                      ).status_code == 200
    change = reverse("admin:governance_usagerollup_change", args=[row.pk])
    assert admin_client_logged_in.get(change).status_code == 200
    assert admin_client_logged_in.post(change, {"request_count": 0}).status_code == 403
    assert admin_client_logged_in.get(
        reverse("admin:governance_usagerollup_add")).status_code == 403
    assert admin_client_logged_in.post(
        reverse("admin:governance_usagerollup_delete", args=[row.pk]), {"post": "yes"}
    ).status_code == 403
    row.refresh_from_db()
    assert row.request_count == 1
