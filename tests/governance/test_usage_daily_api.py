"""GET /api/usage/daily: the daily rollups, as the usage flush keeps them."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from governance.sink import UsageEvent
from governance.tasks import write_records
from tests.factories import TeamFactory
from tests.governance.test_api_common import assert_error

pytestmark = pytest.mark.django_db

DAILY = "/api/usage/daily"
DAY = dt.date(2025, 3, 11)


def at(day: dt.date, hour: int = 12) -> float:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC).timestamp()


def event(request_id: str, **overrides) -> UsageEvent:
    values = {"request_id": request_id, "created_at": at(DAY), "provider": "openai",
              "requested_model": "gpt-4o", "resolved_model": "gpt-4o",
              "request_type": "chat_completion", "status_code": 200, "prompt_tokens": 10,
              "completion_tokens": 5, "cost_nanos": 1_500_000}
    values.update(overrides)
    return UsageEvent(**values)


@pytest.fixture
def traffic():
    """Three days of traffic: a team's key on two providers, and requests without owners."""
    team = TeamFactory(name="research")
    key = str(uuid.uuid4())
    owned = {"virtual_key_id": key, "virtual_key_name": "app", "team_id": str(team.id)}
    write_records([
        event("a", **owned),
        event("b", **owned, provider="anthropic", resolved_model="claude-3", cost_nanos=9_000),
        event("c", **owned, status_code=500, prompt_tokens=0, completion_tokens=0,
              cost_nanos=0),
        event("d", created_at=at(DAY - dt.timedelta(days=1))),
        event("e", **owned, created_at=at(DAY + dt.timedelta(days=1)), cost_nanos=2_000),
    ])
    return {"team": team, "key": key}


def rows(response) -> list[tuple]:
    assert response.status_code == 200, response.content
    return [(item["day"], item["id"], item["name"], item["request_count"], item["cost"])
            for item in response.json()["daily_usage"]]


@pytest.mark.parametrize(("client_fixture", "status"), [("anonymous_api", 401),
                                                    ("non_staff_api", 403)])
def test_only_staff_may_read(request, client_fixture, status):
    assert_error(request.getfixturevalue(client_fixture).get(f"{DAILY}?dimension=team"), status)


def test_one_dimension_newest_day_first_then_by_cost(api, traffic):
    team = str(traffic["team"].id)
    assert rows(api.get(f"{DAILY}?dimension=team")) == [
        ("2025-03-12", team, "research", 1, "0.000002000"),
        ("2025-03-11", team, "research", 3, "0.001509000"),
        ("2025-03-10", None, "", 1, "0.001500000"),
    ]
    item = api.get(f"{DAILY}?dimension=provider&from=2025-03-11&to=2025-03-11").json()
    assert [entry["id"] for entry in item["daily_usage"]] == ["openai", "anthropic"]
    openai = item["daily_usage"][0]
    assert {key: openai[key] for key in ("dimension", "request_count", "error_count",
                                         "prompt_tokens", "completion_tokens",
                                         "cached_tokens", "reasoning_tokens")} == {
        "dimension": "provider", "request_count": 2, "error_count": 1, "prompt_tokens": 10,
        "completion_tokens": 5, "cached_tokens": 0, "reasoning_tokens": 0}
    assert openai["updated_at"].endswith("Z")


def test_one_owner_and_a_range_of_days(api, traffic):
    key = traffic["key"]
    assert rows(api.get(f"{DAILY}?dimension=virtual_key&dimension_id={key}")) == [
        ("2025-03-12", key, "app", 1, "0.000002000"),
        ("2025-03-11", key, "app", 3, "0.001509000")]
    assert rows(api.get(f"{DAILY}?dimension=virtual_key&dimension_id={key}&to=2025-03-11")) \
        == [("2025-03-11", key, "app", 3, "0.001509000")]
    assert rows(api.get(f"{DAILY}?dimension=model&from=2025-03-13")) == []
    assert rows(api.get(f"{DAILY}?dimension=model&dimension_id=' OR 1=1 --")) == []


def test_pages(api, traffic):
    body = api.get(f"{DAILY}?dimension=model&limit=2&offset=1").json()
    assert (body["count"], body["total_count"], body["limit"], body["offset"]) == (2, 4, 2, 1)
    assert [item["day"] for item in body["daily_usage"]] == ["2025-03-11", "2025-03-11"]
    assert api.get(f"{DAILY}?dimension=model&limit=500").json()["limit"] == 100  # at most


@pytest.mark.parametrize(("query", "field"), [
    ("", "dimension"),
    ("dimension=", "dimension"),
    ("dimension=day", "dimension"),
    ("dimension=TEAM", "dimension"),
    ("dimension=team&from=yesterday", "from"),
    ("dimension=team&to=2025-02-30", "to"),
    ("dimension=team&from=99999-01-01", "from"),
    ("dimension=team&from=2025-03-12&to=2025-03-11", "from"),
    (f"dimension=team&dimension_id={'x' * 256}", "dimension_id"),
    ("dimension=team&limit=-1", "limit"),
    ("dimension=team&offset=abc", "offset"),
    (f"dimension=team&offset={2**60}", "offset"),
])
def test_bad_queries_are_400_naming_the_parameter(api, query, field):
    assert_error(api.get(f"{DAILY}?{query}"), 400, field=field)
