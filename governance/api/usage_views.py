"""Usage API: the request records (JSON pages or a streamed CSV), exact summaries, and the
daily rollups.

Records and summaries read :class:`UsageRecord` directly, so they are exact; dashboards that
can live with daily granularity read the rollups (``/api/usage/daily``), which stay cheap
however many records there are and outlive the records' retention.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Iterable, Iterator
from types import SimpleNamespace
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response

from gateway.api.base import ManagementAPIView
from gateway.api.listing import list_response, parse_non_negative
from gateway.errors import BadRequest
from governance.api.representations import timestamp
from governance.api.usage_filters import (
    STATUS_HELP,
    DailyUsageFilter,
    UsageRecordListFilter,
    UsageSummaryFilter,
)
from governance.models import USAGE_RECORD_COLUMNS, UsageDimension, UsageRecord, UsageRollup
from governance.usage import GROUP_BY_CHOICES, METRIC_NAMES, format_cost, summarize_usage

TAGS = ["Usage"]
FILTER_PARAMETERS = [
    OpenApiParameter("request_id", str,
                     description="The x-request-id the client got back, exact."),
    OpenApiParameter("virtual_key_id", OpenApiTypes.UUID),
    OpenApiParameter("team_id", OpenApiTypes.UUID),
    OpenApiParameter("customer_id", OpenApiTypes.UUID),
    OpenApiParameter("provider", str),
    OpenApiParameter("model", str, description="Resolved model name."),
    OpenApiParameter("status", str, description=STATUS_HELP.capitalize() + "."),
    OpenApiParameter("from", OpenApiTypes.DATETIME,
                     description="ISO 8601 time, inclusive (no offset: UTC)."),
    OpenApiParameter("to", OpenApiTypes.DATETIME,
                     description="ISO 8601 time, exclusive (no offset: UTC)."),
]
RECORD_FIELDS = ("id", *USAGE_RECORD_COLUMNS)
# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CSV_CHUNK_SIZE = 2000  # rows fetched per query and per chunk sent
CSV_FILENAME = "usage-records.csv"
# Larger offsets overflow the database's 64-bit OFFSET (a 500); 2**53 is also the largest
# integer every JSON client reads exactly.
MAX_OFFSET = 2**53


def usage_record(item: UsageRecord) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name in RECORD_FIELDS:
        value = getattr(item, name)
        if name == "created_at":
            value = timestamp(value)
        elif name == "cost":
            value = format_cost(value)
        elif name.endswith("_id") and name not in ("request_id", "event_id") \
                and value is not None:
            value = str(value)
        data[name] = value
    return data


def usage_records(items: Iterable[UsageRecord]) -> list[dict[str, Any]]:
    return [usage_record(item) for item in items]


def records_queryset() -> QuerySet[UsageRecord]:
    return UsageRecord.objects.order_by("-created_at", "-id")


# --- CSV ---------------------------------------------------------------------------------

class _Echo:
    """A file-like object whose ``write`` returns the line: ``csv.writer`` without a buffer."""

    def write(self, value: str) -> str:
        return value


def csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_chunks(queryset: QuerySet[UsageRecord]) -> Iterator[str]:
    """The header line, then one chunk of lines per :data:`CSV_CHUNK_SIZE` records."""
    writer = csv.writer(_Echo())
    yield writer.writerow(RECORD_FIELDS)
    lines: list[str] = []
    for item in queryset.iterator(chunk_size=CSV_CHUNK_SIZE):
        row = usage_record(item)
        lines.append(writer.writerow([csv_cell(row[name]) for name in RECORD_FIELDS]))
        if len(lines) == CSV_CHUNK_SIZE:
            yield "".join(lines)
            lines = []
    if lines:
        yield "".join(lines)


async def _in_request_thread(chunks: Iterator[str]) -> AsyncIterator[str]:
    # Under ASGI a synchronous iterator would be read whole into memory before sending;
    # each step runs in the request's thread instead, where its database cursor lives.
    step = sync_to_async(next, thread_sensitive=True)
    while (chunk := await step(chunks, None)) is not None:
        yield chunk


def csv_response(request: Request, queryset: QuerySet[UsageRecord]) -> StreamingHttpResponse:
    chunks = csv_chunks(queryset)
    content = _in_request_thread(chunks) if isinstance(request._request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{CSV_FILENAME}"'
    response["Cache-Control"] = "no-store"
    return response


class FormatParameterNegotiation(DefaultContentNegotiation):
    """``?format=`` belongs to the view here (json or csv), not to DRF's renderer choice."""

    settings = SimpleNamespace(URL_FORMAT_OVERRIDE=None)


# --- views -------------------------------------------------------------------------------

class UsageRecordListView(ManagementAPIView):
    content_negotiation_class = FormatParameterNegotiation

    @extend_schema(
        tags=TAGS, operation_id="listUsageRecords",
        description="One row per request that reached an upstream, newest first; always "
        "paginated. `format=csv` streams every matching row as CSV instead (no pagination).",
        parameters=[
            OpenApiParameter("limit", int, description="Page size (default 25, max 100)."),
            OpenApiParameter("offset", int, description="Rows to skip."),
            *FILTER_PARAMETERS,
            OpenApiParameter("format", str, enum=["json", "csv"],
                             description="csv: a `usage-records.csv` attachment."),
        ],
        responses={
            (200, "application/json"): OpenApiResponse(OpenApiTypes.OBJECT),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR),
        },
    )
    def get(self, request: Request) -> Response | StreamingHttpResponse:
        queryset = self.filter(UsageRecordListFilter, request, records_queryset())
        if request.query_params.get("format") == "csv":
            return csv_response(request, queryset)
        offset = parse_non_negative(request.query_params, "offset")
        if offset is not None and offset > MAX_OFFSET:
            raise BadRequest(f"Invalid offset parameter: must be at most {MAX_OFFSET}",
                             fields={"offset": [f"must be at most {MAX_OFFSET}"]})
        # Records grow without bound: always paginated, like the audit log.
        params = request.query_params.copy()
        params.setdefault("limit", "0")
        return Response(list_response(queryset, params, "usage_records", usage_records))


class UsageSummaryView(ManagementAPIView):
    @extend_schema(
        tags=TAGS, operation_id="summarizeUsage",
        description="Exact totals of the matching records per day (UTC), virtual key, team, "
        "customer, provider or resolved model, and over all of them (`totals`). Costs are "
        "decimal strings.",
        parameters=[
            OpenApiParameter("group_by", str, required=True, enum=list(GROUP_BY_CHOICES)),
            *FILTER_PARAMETERS,
        ],
    )
    def get(self, request: Request) -> Response:
        queryset = self.filter(UsageSummaryFilter, request, UsageRecord.objects.all())
        group_by = request.query_params["group_by"]
        groups, totals = summarize_usage(queryset, group_by)
        for row in (*groups, totals):
            row["cost"] = format_cost(row["cost"])
        return Response({"group_by": group_by, "groups": groups, "count": len(groups),
                         "totals": totals})


def daily_usage(items: Iterable[UsageRollup]) -> list[dict[str, Any]]:
    return [{"day": item.day.isoformat(), "dimension": item.dimension,
             "id": item.dimension_id or None, "name": item.dimension_name,
             **{name: getattr(item, name) for name in METRIC_NAMES if name != "cost"},
             "cost": format_cost(item.cost), "updated_at": timestamp(item.updated_at)}
            for item in items]


class DailyUsageView(ManagementAPIView):
    @extend_schema(
        tags=TAGS, operation_id="listDailyUsage",
        description="The daily (UTC) rollups of one dimension, newest day first, then by cost: "
        "kept up to date by every usage flush and kept when records are purged. `id` is null "
        "for requests without that owner. Always paginated.",
        parameters=[
            OpenApiParameter("dimension", str, required=True,
                             enum=[str(name) for name in UsageDimension]),
            OpenApiParameter("dimension_id", str, description="A key, team or customer id, a "
                             "provider or a model name, exact."),
            OpenApiParameter("from", OpenApiTypes.DATE, description="First UTC day, included."),
            OpenApiParameter("to", OpenApiTypes.DATE, description="Last UTC day, included."),
            OpenApiParameter("limit", int, description="Page size (default 25, max 100)."),
            OpenApiParameter("offset", int, description="Rows to skip."),
        ],
    )
    def get(self, request: Request) -> Response:
        queryset = self.filter(DailyUsageFilter, request, UsageRollup.objects.order_by(
            "-day", "-cost", "-request_count", "dimension_id"))
        params = request.query_params.copy()
        params.setdefault("limit", "0")
        return Response(list_response(queryset, params, "daily_usage", daily_usage))
