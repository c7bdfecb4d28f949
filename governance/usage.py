"""Usage aggregation: exact summaries of :class:`UsageRecord`, daily rollups, retention.

    summarize_usage(records, "model")                      # groups and totals, exact
    rollup_usage(now=timezone.now())                       # today and yesterday (UTC)
    purge_usage(now=timezone.now(), retention_days=90)     # rollups are kept

Days are UTC calendar days whatever the server's time zone. Keep ``retention_days`` longer
than the rollup window: a day recomputed after some of its records were purged loses them.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import BigIntegerField, Count, DecimalField, F, Max, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from governance.models import MONEY, Customer, Team, UsageDimension, UsageRecord, UsageRollup

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
        # A deleted team or customer keeps the name its rollups already had.
        missing = [key_text(key) for key in keys if key is not None
                   and key_text(key) not in names]
        if missing:
            known = (UsageRollup.objects.filter(dimension=dimension, dimension_id__in=missing)
                     .exclude(dimension_name="").order_by("day")
                     .values_list("dimension_id", "dimension_name"))
            names.update(dict(known))  # later days win
    return names


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
