"""The usage API: record list (JSON pages and streamed CSV) and exact summaries."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from decimal import Decimal

import factory
import pytest
from django.test import AsyncClient

from governance.api import usage_views
from governance.models import UsageRecord
from tests.factories import CustomerFactory, TeamFactory
from tests.governance.test_api_common import assert_error

pytestmark = pytest.mark.django_db

RECORDS = "/api/usage/records"
SUMMARY = "/api/usage/summary"
T0 = dt.datetime(2025, 3, 10, 12, 0, tzinfo=dt.UTC)


class UsageRecordFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UsageRecord

    request_id = factory.Sequence(lambda n: f"req-{n}")
    event_id = factory.LazyAttribute(lambda record: record.request_id)
    created_at = factory.Sequence(lambda n: T0 + dt.timedelta(minutes=n))
    provider = "openai"
    requested_model = "gpt-4o"
    resolved_model = "gpt-4o"
    request_type = "chat_completion"
    status_code = 200
    prompt_tokens = 10
    completion_tokens = 5
    cost = Decimal("0.001")


def records_of(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["request_id"] for item in response.json()["usage_records"]]


def csv_rows(response) -> list[list[str]]:
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(text)))


# --- auth ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", [RECORDS, f"{RECORDS}?format=csv", f"{SUMMARY}?group_by=day"])
def test_anonymous_is_401(anonymous_api, path):
    body = assert_error(anonymous_api.get(path), 401)
    assert body["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("path", [RECORDS, f"{RECORDS}?format=csv", f"{SUMMARY}?group_by=day"])
def test_non_staff_is_403(non_staff_api, path):
    assert_error(non_staff_api.get(path), 403)


def test_staff_session_works(client, staff_user):
    client.force_login(staff_user)
    assert client.get(RECORDS).status_code == 200
    assert client.get(f"{SUMMARY}?group_by=model").status_code == 200


# --- the record list ----------------------------------------------------------------------------

def test_records_have_every_field_and_come_newest_first(api):
    key_id, team_id = uuid.uuid4(), uuid.uuid4()
    older = UsageRecordFactory(created_at=T0, cost=Decimal("0.1"))
    newer = UsageRecordFactory(
        created_at=T0 + dt.timedelta(seconds=1), virtual_key_id=key_id,
        virtual_key_name="key-a", team_id=team_id, is_stream=True, status_code=429,
        error_type="rate_limited", cached_tokens=3, reasoning_tokens=2,
        cost=Decimal("0.000000123"), latency_ms=12.5, fallback_index=1,
    )
    body = api.get(RECORDS).json()
    assert [item["request_id"] for item in body["usage_records"]] == [newer.request_id,
                                                                       older.request_id]
    item = body["usage_records"][0]
    assert set(item) == set(usage_views.RECORD_FIELDS)
    assert item["created_at"] == "2025-03-10T12:00:01Z"
    assert item["virtual_key_id"] == str(key_id) and item["team_id"] == str(team_id)
    assert item["customer_id"] is None
    assert item["cost"] == "0.000000123"
    assert body["usage_records"][1]["cost"] == "0.100000000"
    assert (item["is_stream"], item["status_code"], item["error_type"]) == (
        True, 429, "rate_limited")
    assert (item["cached_tokens"], item["reasoning_tokens"], item["latency_ms"]) == (3, 2, 12.5)


def test_records_filter_by_the_request_id_clients_saw(api):
    """A client may send the same x-request-id twice: both records carry it."""
    UsageRecordFactory(request_id="trace-42", event_id="e1")
    UsageRecordFactory(request_id="trace-42", event_id="e2")
    UsageRecordFactory(request_id="trace-43")
    assert records_of(api.get(f"{RECORDS}?request_id=trace-42")) == ["trace-42", "trace-42"]
    assert records_of(api.get(f"{RECORDS}?request_id=' OR 1=1 --")) == []
    assert records_of(api.get(f"{RECORDS}?request_id=trace-4")) == []  # exact, not a prefix
    body = assert_error(api.get(f"{RECORDS}?request_id={'x' * 129}"), 400)
    assert "request_id" in str(body)


def test_records_are_always_paginated(api):
    UsageRecord.objects.bulk_create(UsageRecordFactory.build() for _ in range(30))
    body = api.get(RECORDS).json()
    assert (body["count"], body["total_count"], body["limit"], body["offset"]) == (25, 30, 25, 0)
    page = api.get(f"{RECORDS}?limit=10&offset=25").json()
    assert (page["count"], page["total_count"], page["limit"], page["offset"]) == (5, 30, 10, 25)
    assert api.get(f"{RECORDS}?limit=1000").json()["limit"] == 100
    everything = [item["request_id"] for offset in (0, 10, 20)
                  for item in api.get(f"{RECORDS}?limit=10&offset={offset}").json()[
                      "usage_records"]]
    assert len(set(everything)) == 30  # stable order across pages


def test_records_with_equal_times_page_stably(api):
    UsageRecord.objects.bulk_create(UsageRecordFactory.build(created_at=T0) for _ in range(6))
    pages = [records_of(api.get(f"{RECORDS}?limit=2&offset={offset}")) for offset in (0, 2, 4)]
    assert len({request_id for page in pages for request_id in page}) == 6


KEY, TEAM, CUSTOMER = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(f"virtual_key_id={KEY}", {"keyed"}, id="virtual_key_id"),
        pytest.param(f"team_id={TEAM}", {"keyed"}, id="team_id"),
        pytest.param(f"customer_id={CUSTOMER}", {"customer"}, id="customer_id"),
        pytest.param("provider=anthropic", {"customer"}, id="provider"),
        pytest.param("model=claude-3", {"customer"}, id="model-is-resolved-model"),
        pytest.param("model=alias", set(), id="model-not-requested-model"),
        pytest.param("status=success", {"keyed", "early"}, id="status-success"),
        pytest.param("status=error", {"customer", "failed"}, id="status-error"),
        pytest.param("status=429", {"failed"}, id="status-code"),
        pytest.param("status=500", set(), id="status-code-none"),
        pytest.param("from=2025-03-10T12:00:00Z", {"keyed", "customer", "failed"},
                     id="from-inclusive"),
        pytest.param("to=2025-03-10T12:00:00Z", {"early"}, id="to-exclusive"),
        pytest.param("from=2025-03-10T13:00:00%2B01:00&to=2025-03-10T12:00:01", {"keyed"},
                     id="offsets-and-naive-utc"),
        pytest.param(f"team_id={TEAM}&status=error", set(), id="combined"),
    ],
)
def test_record_filters(api, query, expected):
    UsageRecordFactory(request_id="early", created_at=T0 - dt.timedelta(hours=1))
    UsageRecordFactory(request_id="keyed", created_at=T0, virtual_key_id=KEY, team_id=TEAM)
    UsageRecordFactory(request_id="customer", created_at=T0 + dt.timedelta(seconds=5),
                       customer_id=CUSTOMER, provider="anthropic", requested_model="alias",
                       resolved_model="claude-3", status_code=502)
    UsageRecordFactory(request_id="failed", created_at=T0 + dt.timedelta(seconds=9),
                       status_code=429)
    assert set(records_of(api.get(f"{RECORDS}?{query}"))) == expected
    summary = api.get(f"{SUMMARY}?group_by=provider&{query}").json()
    assert summary["totals"]["request_count"] == len(expected)


HUGE = "9" * 10_000
BAD_QUERIES = [
    pytest.param("from=yesterday", "from", id="from-invalid"),
    pytest.param("to=2025-13-01T00:00:00Z", "to", id="to-invalid"),
    pytest.param("from=2025-03-11T00:00:00Z&to=2025-03-10T00:00:00Z", "from",
                 id="from-after-to"),
    pytest.param("from=0001-01-01T00:00:00%2B05:00", "from", id="from-underflows"),
    pytest.param("to=9999-12-31T23:59:59-05:00", "to", id="to-overflows"),
    pytest.param(f"from={HUGE}", "from", id="from-huge"),
    pytest.param("virtual_key_id=not-a-uuid", "virtual_key_id", id="key-not-uuid"),
    pytest.param(f"team_id={'a' * 10_000}", "team_id", id="team-huge"),
    pytest.param("customer_id=%00", "customer_id", id="customer-nul"),
    pytest.param(f"provider={'p' * 10_000}", "provider", id="provider-huge"),
    pytest.param(f"model={'m' * 10_000}", "model", id="model-huge"),
    pytest.param("model=gpt%00", "model", id="model-nul"),
    pytest.param("status=ok", "status", id="status-word"),
    pytest.param("status=99", "status", id="status-below"),
    pytest.param("status=600", "status", id="status-above"),
    pytest.param("status=%D9%A4%D9%A2%D9%A9", "status", id="status-non-ascii-digits"),
    pytest.param(f"status={HUGE}", "status", id="status-huge"),
]


@pytest.mark.parametrize(("query", "field"), BAD_QUERIES)
@pytest.mark.parametrize("path", [RECORDS, f"{RECORDS}?format=csv", f"{SUMMARY}?group_by=day"])
def test_bad_filters_are_400_naming_the_parameter(api, path, query, field):
    separator = "&" if "?" in path else "?"
    body = assert_error(api.get(f"{path}{separator}{query}"), 400, field=field)
    assert body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=abc", "limit"), ("limit=-1", "limit"), ("offset=x", "offset"),
     ("offset=-5", "offset"), (f"offset={HUGE}", "offset"), (f"limit={HUGE}", "limit"),
     ("offset=99999999999999999999", "offset"), ("format=xml", "format"),
     ("format=api", "format"), (f"format={'c' * 10_000}", "format")],
)
def test_bad_list_parameters_are_400(api, query, field):
    assert_error(api.get(f"{RECORDS}?{query}"), 400, field=field)


def test_huge_limit_and_json_format_are_accepted(api):
    UsageRecordFactory()
    assert api.get(f"{RECORDS}?limit=99999999999999999999").json()["limit"] == 100
    assert api.get(f"{RECORDS}?format=json").json()["count"] == 1


# --- CSV ----------------------------------------------------------------------------------------

def test_csv_streams_every_matching_row(api):
    UsageRecord.objects.bulk_create(UsageRecordFactory.build() for _ in range(30))
    UsageRecordFactory(provider="anthropic")
    response = api.get(f"{RECORDS}?format=csv&provider=openai&limit=5")
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="usage-records.csv"'
    rows = csv_rows(response)
    assert rows[0] == list(usage_views.RECORD_FIELDS)
    assert len(rows) == 31  # header + every openai row, no pagination
    assert {row[rows[0].index("provider")] for row in rows[1:]} == {"openai"}


def test_csv_cells(api):
    record = UsageRecordFactory(created_at=T0, virtual_key_id=KEY,
                                virtual_key_name='key, "quoted"', is_stream=True,
                                cost=Decimal("1.5"))
    rows = csv_rows(api.get(f"{RECORDS}?format=csv"))
    row = dict(zip(rows[0], rows[1], strict=True))
    assert row["request_id"] == record.request_id
    assert row["virtual_key_name"] == 'key, "quoted"'
    assert row["virtual_key_id"] == str(KEY)
    assert row["team_id"] == ""
    assert (row["is_stream"], row["priced"]) == ("true", "true")
    assert row["cost"] == "1.500000000"
    assert row["created_at"] == "2025-03-10T12:00:00Z"


@pytest.mark.parametrize("payload", ["=1+1", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx",
                                     "=HYPERLINK(\"http://evil\")"])
def test_csv_escapes_formulas(api, payload):
    UsageRecordFactory(virtual_key_name=payload, requested_model=payload, error_type=payload)
    rows = csv_rows(api.get(f"{RECORDS}?format=csv"))
    row = dict(zip(rows[0], rows[1], strict=True))
    for column in ("virtual_key_name", "requested_model", "error_type"):
        assert row[column] == "'" + payload
    assert row["resolved_model"] == "gpt-4o"  # ordinary text is untouched


def test_csv_is_sent_in_chunks(api, monkeypatch):
    monkeypatch.setattr(usage_views, "CSV_CHUNK_SIZE", 2)
    UsageRecord.objects.bulk_create(UsageRecordFactory.build() for _ in range(5))
    response = api.get(f"{RECORDS}?format=csv")
    chunks = list(response.streaming_content)
    assert len(chunks) == 4  # header, 2 + 2 + 1 rows
    assert sum(chunk.count(b"\n") for chunk in chunks) == 6


def test_csv_of_nothing_is_the_header(api):
    assert csv_rows(api.get(f"{RECORDS}?format=csv")) == [list(usage_views.RECORD_FIELDS)]


@pytest.mark.django_db(transaction=True)
async def test_csv_streams_under_asgi(staff_user, close_async_connections):
    from asgiref.sync import sync_to_async

    def setup() -> None:
        UsageRecord.objects.bulk_create(UsageRecordFactory.build() for _ in range(5))

    await sync_to_async(setup)()
    client = AsyncClient()
    await client.aforce_login(staff_user)
    response = await client.get(f"{RECORDS}?format=csv")
    assert response.status_code == 200
    assert response.is_async  # no "must consume synchronous iterators" buffering
    text = b"".join([chunk async for chunk in response.streaming_content]).decode()
    assert len(list(csv.reader(io.StringIO(text)))) == 6


# --- summary ------------------------------------------------------------------------------------

@pytest.fixture
def summary_records():
    team = TeamFactory(name="team-a")
    customer = CustomerFactory(name="customer-a")
    key_a, key_b = uuid.uuid4(), uuid.uuid4()
    day1 = dt.datetime(2025, 3, 10, 23, 30, tzinfo=dt.UTC)
    day2 = dt.datetime(2025, 3, 11, 0, 30, tzinfo=dt.UTC)
    UsageRecordFactory(created_at=day1 - dt.timedelta(hours=1), virtual_key_id=key_a,
                       virtual_key_name="old-name", team_id=team.id, cost=Decimal("0.1"))
    UsageRecordFactory(created_at=day1, virtual_key_id=key_a, virtual_key_name="key-a",
                       team_id=team.id, cost=Decimal("0.2"), status_code=500,
                       cached_tokens=4, reasoning_tokens=1)
    UsageRecordFactory(created_at=day2, virtual_key_id=key_b, virtual_key_name="key-b",
                       customer_id=customer.id, provider="anthropic",
                       resolved_model="claude-3", cost=Decimal("1.0"), prompt_tokens=100,
                       completion_tokens=50)
    UsageRecordFactory(created_at=day2, provider="anthropic", resolved_model="claude-3",
                       cost=Decimal("0.05"), status_code=429)
    return {"team": team, "customer": customer, "key_a": key_a, "key_b": key_b}


TOTALS = {"request_count": 4, "error_count": 2, "prompt_tokens": 130, "completion_tokens": 65,
          "cached_tokens": 4, "reasoning_tokens": 1, "cost": "1.350000000"}


def _summary(api, query: str, totals: dict | None = None) -> dict:
    response = api.get(f"{SUMMARY}?{query}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["totals"] == (TOTALS if totals is None else totals)
    assert body["count"] == len(body["groups"])
    return body


def _groups(body) -> list[tuple]:
    return [(group["key"], group["name"], group["request_count"], group["error_count"],
             group["cost"]) for group in body["groups"]]


def test_summary_by_day_uses_utc_dates(api, summary_records):
    body = _summary(api, "group_by=day")
    assert body["group_by"] == "day"
    assert _groups(body) == [("2025-03-10", "2025-03-10", 2, 1, "0.300000000"),
                             ("2025-03-11", "2025-03-11", 2, 1, "1.050000000")]


def test_summary_by_virtual_key_names_keys_by_their_latest_record(api, summary_records):
    body = _summary(api, "group_by=virtual_key")
    assert _groups(body) == [
        (str(summary_records["key_b"]), "key-b", 1, 0, "1.000000000"),
        (str(summary_records["key_a"]), "key-a", 2, 1, "0.300000000"),
        (None, "", 1, 1, "0.050000000"),
    ]
    first = body["groups"][0]
    assert (first["prompt_tokens"], first["completion_tokens"], first["cached_tokens"]) == (
        100, 50, 0)


def test_summary_by_team_and_customer(api, summary_records):
    teams = _groups(_summary(api, "group_by=team"))
    assert teams == [(None, "", 2, 1, "1.050000000"),
                     (str(summary_records["team"].id), "team-a", 2, 1, "0.300000000")]
    customers = _groups(_summary(api, "group_by=customer"))
    assert customers == [(str(summary_records["customer"].id), "customer-a", 1, 0,
                          "1.000000000"),
                         (None, "", 3, 2, "0.350000000")]


def test_summary_by_provider_and_model(api, summary_records):
    assert _groups(_summary(api, "group_by=provider")) == [
        ("anthropic", "anthropic", 2, 1, "1.050000000"),
        ("openai", "openai", 2, 1, "0.300000000"),
    ]
    assert _groups(_summary(api, "group_by=model")) == [
        ("claude-3", "claude-3", 2, 1, "1.050000000"),
        ("gpt-4o", "gpt-4o", 2, 1, "0.300000000"),
    ]


def test_summary_applies_filters(api, summary_records):
    body = _summary(api, "group_by=model&from=2025-03-11T00:00:00Z&status=error",
                    totals={"request_count": 1, "error_count": 1, "prompt_tokens": 10,
                            "completion_tokens": 5, "cached_tokens": 0,
                            "reasoning_tokens": 0, "cost": "0.050000000"})
    assert _groups(body) == [("claude-3", "claude-3", 1, 1, "0.050000000")]


def test_summary_of_nothing(api):
    body = api.get(f"{SUMMARY}?group_by=team").json()
    assert body["groups"] == [] and body["count"] == 0
    assert body["totals"] == {**dict.fromkeys(TOTALS, 0), "cost": "0.000000000"}


def test_summary_cost_sums_exactly(api):
    UsageRecord.objects.bulk_create(
        UsageRecordFactory.build(cost=Decimal("0.000000001")) for _ in range(10))
    UsageRecordFactory(cost=Decimal("0.1"))
    UsageRecordFactory(cost=Decimal("0.2"))
    assert api.get(f"{SUMMARY}?group_by=day").json()["totals"]["cost"] == "0.300000010"


@pytest.mark.parametrize(
    "query",
    ["", "group_by=", "group_by=week", "group_by=DAY", f"group_by={'d' * 10_000}",
     "group_by=day%00", "groupby=day"],
)
def test_summary_needs_a_known_group_by(api, query):
    body = assert_error(api.get(f"{SUMMARY}?{query}"), 400, field="group_by")
    assert "group_by" in body["error"]["message"]


# --- schema ------------------------------------------------------------------------------------

def test_usage_endpoints_are_in_the_schema(api):
    document = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = {path.rstrip("/"): item for path, item in document["paths"].items()}
    records = paths["/api/usage/records"]["get"]
    assert records["operationId"] == "listUsageRecords"
    assert {"from", "to", "status", "format", "limit", "offset"} <= {
        parameter["name"] for parameter in records["parameters"]}
    assert "text/csv" in records["responses"]["200"]["content"]
    summary = paths["/api/usage/summary"]["get"]
    group_by = next(item for item in summary["parameters"] if item["name"] == "group_by")
    assert group_by["required"] is True
    assert set(group_by["schema"]["enum"]) == {"day", "virtual_key", "team", "customer",
                                               "provider", "model"}


@pytest.mark.parametrize("path", [RECORDS, f"{SUMMARY}?group_by=day"])
def test_hostile_query_strings_are_not_500(api, path):
    separator = "&" if "?" in path else "?"
    many = "&".join(f"p{number}=1" for number in range(6000))  # > DATA_UPLOAD_MAX_NUMBER_FIELDS
    assert api.get(f"{path}{separator}{many}").status_code == 400
    long_unknown = f"{path}{separator}unknown={'x' * 100_000}"
    assert api.get(long_unknown).status_code == 200  # unknown parameters are ignored
    repeated = f"{path}{separator}" + "&".join(["status=error"] * 50 + ["status=ok"])
    assert_error(api.get(repeated), 400, field="status")  # the last value counts
