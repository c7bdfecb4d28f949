"""Usage aggregation: exact summaries of :class:`UsageRecord`, daily rollups, retention.

    summarize_usage(records, "model")                      # groups and totals, exact
    add_to_rollups(events)                                 # the flush: records just written
    rollup_usage(now=timezone.now())                       # rebuild today and yesterday (UTC)
    purge_usage(now=timezone.now(), retention_days=90)     # rollups are kept

Days are UTC calendar days whatever the server's time zone. A day rebuilt after some of its
records were purged loses them: rebuild only days within the retention.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import BigIntegerField, Count, DecimalField, F, Max, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from governance.models import MONEY, Customer, Team, UsageDimension, UsageRecord, UsageRollup
from governance.sink import UsageEvent

UTC = dt.UTC
# The record field each dimension groups by.
DIMENSION_FIELDS = {
    UsageDimension.VIRTUAL_KEY: "virtual_key_id",
    UsageDimension.TEAM: "team_id",
    UsageDimension.CUSTOMER: "customer_id",
    UsageDimension.PROVIDER: "provider",
    UsageDimension.MODEL: "resolved_model",
}
GROUP_BY_CHOICES = ("day", *(str(dimension) for dimension in DIMENSION_FIELDS))
TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens")
METRIC_NAMES = ("request_count", "error_count", *TOKEN_FIELDS, "cost")
COST_PLACES = Decimal(1).scaleb(-MONEY["decimal_places"])
PURGE_BATCH_SIZE = 5000


def usage_metrics() -> dict[str, Any]:
    """Aggregates of a set of records; an error is any status outside 2xx."""
    success = Q(status_code__gte=200, status_code__lt=300)
    return {
        "request_count": Count("id"),
        "error_count": Count("id", filter=~success),
        **{name: Coalesce(Sum(name), 0, output_field=BigIntegerField())
           for name in TOKEN_FIELDS},
        "cost": Coalesce(Sum("cost"), Value(Decimal(0)), output_field=DecimalField(**MONEY)),
    }


def utc_day(moment: dt.datetime) -> dt.date:
    return moment.astimezone(UTC).date()


def utc_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=UTC)


def format_cost(value: Decimal | None) -> str:
    """``Decimal("0.1")`` → ``"0.100000000"``: always the stored number of places."""
    return f"{(value or Decimal(0)).quantize(COST_PLACES):f}"


def key_text(value: Any) -> str:
    """A group key as text: ``""`` for no owner, ISO dates, ids and names as they are."""
    if value is None:
        return ""
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _group_expression(group_by: str) -> Any:
    if group_by == "day":
        return TruncDate("created_at", tzinfo=UTC)
    return F(DIMENSION_FIELDS[UsageDimension(group_by)])


def group_names(group_by: str, records: QuerySet[UsageRecord], keys: list[Any]) -> dict[str, str]:
    """Display names by :func:`key_text` key. A virtual key is named as in its latest record;
    teams and customers (records carry only their ids) by their current row."""
    present = [key for key in keys if key is not None]
    if group_by == UsageDimension.VIRTUAL_KEY:
        latest: dict[str, tuple[dt.datetime, str]] = {}
        rows = (records.exclude(virtual_key_id=None).order_by()
                .values_list("virtual_key_id", "virtual_key_name")
                .annotate(last_seen=Max("created_at")))
        for key, name, last_seen in rows:
            text = key_text(key)
            if text not in latest or last_seen > latest[text][0]:
                latest[text] = (last_seen, name)
        return {text: name for text, (_, name) in latest.items()}
    model = {UsageDimension.TEAM: Team, UsageDimension.CUSTOMER: Customer}.get(group_by)
    if model is not None:
        return {key_text(pk): name
                for pk, name in model.objects.filter(pk__in=present).values_list("pk", "name")}
    return {key_text(key): key_text(key) for key in present}


def summarize_usage(records: QuerySet[UsageRecord], group_by: str,
                    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Exact per-group metrics of ``records`` and their totals.

    ``group_by`` is one of :data:`GROUP_BY_CHOICES`. Days come in chronological order, other
    groups by cost then request count, largest first. Each group is
    ``{"key", "name", **metrics}``; ``key`` is None for requests without that owner.
    """
    if group_by not in GROUP_BY_CHOICES:
        raise ValueError(f"group_by must be one of {', '.join(GROUP_BY_CHOICES)}: {group_by!r}")
    base = records.order_by()
    ordering = ("group_key",) if group_by == "day" else ("-cost", "-request_count", "group_key")
    rows = list(base.annotate(group_key=_group_expression(group_by)).values("group_key")
                .annotate(**usage_metrics()).order_by(*ordering))
    names = group_names(group_by, base, [row["group_key"] for row in rows])
    groups = []
    for row in rows:
        key = row.pop("group_key")
        groups.append({"key": None if key is None else key_text(key),
                       "name": names.get(key_text(key), ""), **row})
    totals = base.aggregate(**usage_metrics())
    return groups, totals


def rollup_usage(*, now: dt.datetime, days: int = 2) -> int:
    """Recompute the :class:`UsageRollup` rows of the last ``days`` UTC days, today included,
    from the records; returns the number of rows written. Idempotent: each row is replaced
    by an upsert, so running it twice writes the same values."""
    if timezone.is_naive(now):
        raise ValueError("now must be timezone-aware")
    if days < 1:
        raise ValueError(f"days must be at least 1: {days!r}")
    today = utc_day(now)
    first = today - dt.timedelta(days=days - 1)
    records = UsageRecord.objects.filter(
        created_at__gte=utc_midnight(first),
        created_at__lt=utc_midnight(today + dt.timedelta(days=1)),
    ).order_by()
    rollups: list[UsageRollup] = []
    for dimension, field in DIMENSION_FIELDS.items():
        rows = list(records.annotate(rollup_day=TruncDate("created_at", tzinfo=UTC),
                                     rollup_key=F(field))
                    .values("rollup_day", "rollup_key").annotate(**usage_metrics()))
        keys = {row["rollup_key"] for row in rows}
        names = _rollup_names(dimension, records, list(keys))
        for row in rows:
            dimension_id = key_text(row.pop("rollup_key"))
            rollups.append(UsageRollup(day=row.pop("rollup_day"), dimension=dimension,
                                       dimension_id=dimension_id,
                                       dimension_name=names.get(dimension_id, ""), **row))
    with transaction.atomic():
        UsageRollup.objects.bulk_create(
            rollups, batch_size=500, update_conflicts=True,
            unique_fields=["day", "dimension", "dimension_id"],
            update_fields=["dimension_name", *METRIC_NAMES, "updated_at"],
        )
    return len(rollups)


def _rollup_names(dimension: str, records: QuerySet[UsageRecord],
                  keys: list[Any]) -> dict[str, str]:
    names = group_names(dimension, records, keys)
    if dimension in (UsageDimension.TEAM, UsageDimension.CUSTOMER):
        names.update(_kept_names(dimension, [key_text(key) for key in keys if key is not None
                                             and key_text(key) not in names]))
    return names


def _kept_names(dimension: str, missing: list[str]) -> dict[str, str]:
    """A deleted team or customer keeps the name its rollups already had (the latest day's)."""
    if not missing:
        return {}
    known = (UsageRollup.objects.filter(dimension=dimension, dimension_id__in=missing)
             .exclude(dimension_name="").order_by("day")
             .values_list("dimension_id", "dimension_name"))
    return dict(known)  # later days win


# -- rollups kept by the writer of the records ------------------------------------------------

# The columns of :func:`add_to_rollups`'s upsert, in the order of its values.
ROLLUP_COLUMNS = ("day", "dimension", "dimension_id", "dimension_name", *METRIC_NAMES,
                  "updated_at")
ROLLUP_ROWS_PER_STATEMENT = 80  # 12 parameters a row: within SQLite's oldest limit of 999
_SUCCESS = range(200, 300)
# Per (day, dimension, dimension id): [requests, errors, prompt, completion, cached and
# reasoning tokens, cost in nanos].
Increments = dict[tuple[dt.date, str, str], list[int]]
_DIMENSIONS = tuple(str(dimension) for dimension in DIMENSION_FIELDS)  # key, team, customer, ...


def add_to_rollups(events: Iterable[UsageEvent], *, now: dt.datetime | None = None) -> int:
    """Add ``events`` to their days' rollups; returns the rollup rows touched.

    The caller has just inserted these events' records in the current transaction, each once
    (:func:`governance.tasks.write_records` passes only the rows its ``INSERT`` reported), so
    a redelivered event is never counted twice. The rows are upserted with
    ``ON CONFLICT ... DO UPDATE SET n = n + excluded.n``: writers in several processes each add
    their own share, in one order (day, dimension, id) so that two of them never deadlock.
    Names: a virtual key's as in its latest record of the batch, a team's or customer's
    current name (a deleted one keeps its earlier name); providers and models by themselves.
    """
    increments, key_names = _increments(events)
    if not increments:
        return 0
    names = _increment_names(increments, key_names)
    ops = connection.ops
    cost_field = UsageRollup._meta.get_field("cost")
    updated_at = ops.adapt_datetimefield_value(now or timezone.now())
    values: list[Any] = []
    for (day, dimension, dimension_id), totals in sorted(increments.items()):
        cost = Decimal(totals[6]).scaleb(-9)  # nanos: exact
        values.append((ops.adapt_datefield_value(day), dimension, dimension_id,
                       names[(day, dimension, dimension_id)], *totals[:6],
                       ops.adapt_decimalfield_value(cost, cost_field.max_digits,
                                                    cost_field.decimal_places), updated_at))
    with connection.cursor() as cursor:
        for start in range(0, len(values), ROLLUP_ROWS_PER_STATEMENT):
            chunk = values[start:start + ROLLUP_ROWS_PER_STATEMENT]
            cursor.execute(_rollup_upsert_sql(connection, len(chunk)),
                           [value for row in chunk for value in row])
    return len(values)


def _increments(events: Iterable[UsageEvent]) -> tuple[Increments, dict[tuple[dt.date, str], str]]:
    """Per (day, dimension, id): [requests, errors, prompt, completion, cached, reasoning
    tokens, cost in nanos]; and per (day, key id): the key's name in its latest event."""
    groups: dict[tuple[Any, ...], list[Any]] = {}
    days: dict[int, dt.date] = {}
    from_timestamp = dt.datetime.fromtimestamp
    name_max, provider_max, model_max = (UsageRecord._meta.get_field(name).max_length
                                         for name in ("virtual_key_name", "provider",
                                                      "resolved_model"))
    for event in events:  # one dictionary lookup per event; the fan-out is per group
        moment = event.created_at
        second = int(moment)
        # The record's created_at is this timestamp rounded to the microsecond: within
        # 0.5 µs of the next second, its day is computed rather than taken from the cache.
        near_next = moment - second >= 0.9999995
        day = None if near_next else days.get(second)
        if day is None:
            day = from_timestamp(moment, UTC).date()
            if not near_next:
                days[second] = day
        group = (day, event.virtual_key_id or "", event.virtual_key_name[:name_max],
                 event.team_id or "", event.customer_id or "", event.provider[:provider_max],
                 event.resolved_model[:model_max])  # cut as in the records
        totals = groups.get(group)
        if totals is None:
            totals = groups[group] = [0, 0, 0, 0, 0, 0, 0, moment]
        totals[0] += 1
        if event.status_code not in _SUCCESS:
            totals[1] += 1
        totals[2] += event.prompt_tokens
        totals[3] += event.completion_tokens
        totals[4] += event.cached_tokens
        totals[5] += event.reasoning_tokens
        totals[6] += event.cost_nanos
        if moment > totals[7]:
            totals[7] = moment
    increments: Increments = {}
    latest_names: dict[tuple[dt.date, str], tuple[float, str]] = {}
    for (day, key_id, key_name, team_id, customer_id, provider, model), totals in groups.items():
        key_id, team_id, customer_id = _id_text(key_id), _id_text(team_id), _id_text(customer_id)
        for dimension, dimension_id in zip(_DIMENSIONS, (key_id, team_id, customer_id,
                                                         provider, model), strict=True):
            target = increments.setdefault((day, dimension, dimension_id), [0] * 7)
            for index in range(7):
                target[index] += totals[index]
        if key_id:
            seen = latest_names.get((day, key_id))
            if seen is None or totals[7] >= seen[0]:
                latest_names[(day, key_id)] = (totals[7], key_name)
    return increments, {where: name for where, (_, name) in latest_names.items()}


@functools.lru_cache(maxsize=4096)
def _id_text(value: str) -> str:
    """An owner id as the records' UUID columns give it back (:func:`key_text`)."""
    return str(uuid.UUID(value)) if value else ""


def _increment_names(increments: Increments,
                     key_names: dict[tuple[dt.date, str], str]
                     ) -> dict[tuple[dt.date, str, str], str]:
    """The name of each rollup row to add to (see :func:`add_to_rollups`)."""
    owner_models = {str(UsageDimension.TEAM): Team, str(UsageDimension.CUSTOMER): Customer}
    owner_names: dict[str, dict[str, str]] = {}
    for dimension, model in owner_models.items():
        wanted = {dimension_id for _, row_dimension, dimension_id in increments
                  if row_dimension == dimension and dimension_id}
        if not wanted:
            continue
        current = {key_text(pk): name for pk, name
                   in model.objects.filter(pk__in=wanted).values_list("pk", "name")}
        current.update(_kept_names(dimension, sorted(wanted - current.keys())))
        owner_names[dimension] = current
    names: dict[tuple[dt.date, str, str], str] = {}
    for row in increments:
        day, dimension, dimension_id = row
        if not dimension_id:
            names[row] = ""
        elif dimension == UsageDimension.VIRTUAL_KEY:
            names[row] = key_names.get((day, dimension_id), "")
        elif dimension in owner_models:
            names[row] = owner_names.get(dimension, {}).get(dimension_id, "")
        else:
            names[row] = dimension_id
    return names


def _rollup_upsert_sql(connection: Any, rows: int) -> str:
    quote = connection.ops.quote_name
    table = quote(UsageRollup._meta.db_table)
    columns = ", ".join(quote(UsageRollup._meta.get_field(name).column)
                        for name in ROLLUP_COLUMNS)
    row = "(" + ", ".join(["%s"] * len(ROLLUP_COLUMNS)) + ")"
    adds = ", ".join(f"{quote(name)} = {table}.{quote(name)} + excluded.{quote(name)}"
                     for name in METRIC_NAMES)
    name = quote("dimension_name")
    return (f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * rows)} "
            f"ON CONFLICT ({quote('day')}, {quote('dimension')}, {quote('dimension_id')}) "
            f"DO UPDATE SET {adds}, {name} = CASE WHEN excluded.{name} = '' THEN {table}.{name} "
            f"ELSE excluded.{name} END, {quote('updated_at')} = excluded.{quote('updated_at')}")


def purge_usage(*, now: dt.datetime, retention_days: int,
                batch_size: int = PURGE_BATCH_SIZE) -> int:
    """Delete the records older than ``retention_days`` days before ``now``, ``batch_size``
    rows per statement so no transaction holds many locks; returns how many were deleted.
    ``retention_days`` 0 keeps everything. Rollups are not touched."""
    if timezone.is_naive(now):
        raise ValueError("now must be timezone-aware")
    if retention_days < 0:
        raise ValueError(f"retention_days must be 0 (keep forever) or more: {retention_days!r}")
    if retention_days == 0:
        return 0
    cutoff = now - dt.timedelta(days=retention_days)
    old = UsageRecord.objects.filter(created_at__lt=cutoff).order_by()
    deleted = 0
    while True:
        batch = list(old.values_list("id", flat=True)[:batch_size])
        if not batch:
            return deleted
        count, _ = UsageRecord.objects.filter(id__in=batch).delete()
        deleted += count
