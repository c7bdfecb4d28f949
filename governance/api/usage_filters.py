"""Query filters of the usage API: owners, provider, model, status and a time range.

``from`` and ``to`` are Python keywords, so they are declared through the class namespace.
Every value is bounded, so a hostile query string is a 400 naming the parameter.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import django_filters
from django import forms
from django.db.models import Q, QuerySet
from django_filters.fields import IsoDateTimeField

from governance.models import UsageDimension, UsageRecord, UsageRollup
from governance.usage import GROUP_BY_CHOICES

STATUS_HELP = "success (2xx), error (anything else) or an exact code such as 429"
EXPORT_FORMATS = ("json", "csv")


class UTCDateTimeField(IsoDateTimeField):
    """An ISO 8601 time (no offset means UTC), converted to UTC; out-of-range is invalid."""

    def to_python(self, value: Any) -> dt.datetime | None:
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(dt.UTC)
        except OverflowError:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from None


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UTCDateTimeField


class StatusField(forms.CharField):
    default_error_messages = {"invalid": f"Must be {STATUS_HELP}."}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=16, **kwargs)

    def clean(self, value: Any) -> str | int | None:
        text = super().clean(value)
        if text in ("", None):
            return None
        if text in ("success", "error"):
            return text
        if not (text.isascii() and text.isdigit() and 100 <= int(text) <= 599):
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        return int(text)


class StatusFilter(django_filters.Filter):
    field_class = StatusField

    def filter(self, queryset: QuerySet[Any], value: str | int | None) -> QuerySet[Any]:
        if value is None:
            return queryset
        success = Q(status_code__gte=200, status_code__lt=300)
        if value == "success":
            return queryset.filter(success)
        if value == "error":
            return queryset.exclude(success)
        return queryset.filter(status_code=value)


class UsageFilterForm(forms.Form):
    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, end = cleaned.get("from"), cleaned.get("to")
        if start is not None and end is not None and start > end:
            self.add_error("from", "must not be after to")
        return cleaned


class UsageRecordFilter(django_filters.FilterSet):
    request_id = django_filters.CharFilter(max_length=128)  # x-request-id, exact
    virtual_key_id = django_filters.UUIDFilter()
    team_id = django_filters.UUIDFilter()
    customer_id = django_filters.UUIDFilter()
    provider = django_filters.CharFilter(max_length=50)
    model = django_filters.CharFilter(field_name="resolved_model", max_length=255)
    status = StatusFilter()
    locals().update({
        "from": UTCDateTimeFilter(field_name="created_at", lookup_expr="gte"),
        "to": UTCDateTimeFilter(field_name="created_at", lookup_expr="lt"),
    })

    class Meta:
        model = UsageRecord
        form = UsageFilterForm
        fields: list[str] = []


def _keep(queryset: QuerySet[Any], name: str, value: Any) -> QuerySet[Any]:
    return queryset


class UsageRecordListFilter(UsageRecordFilter):
    """The record list also validates its ``format`` (the view renders it)."""

    format = django_filters.ChoiceFilter(choices=[(name, name) for name in EXPORT_FORMATS],
                                         method=_keep)

    class Meta(UsageRecordFilter.Meta):
        pass


class UsageSummaryFilter(UsageRecordFilter):
    """The summary requires ``group_by`` (validated here, applied by the view)."""

    group_by = django_filters.ChoiceFilter(
        choices=[(name, name) for name in GROUP_BY_CHOICES], required=True, method=_keep)

    class Meta(UsageRecordFilter.Meta):
        pass


class DailyUsageFilter(django_filters.FilterSet):
    """The daily rollups of one dimension, optionally of one owner, provider or model, over
    a range of UTC days (both ends included)."""

    dimension = django_filters.ChoiceFilter(
        choices=[(str(name), str(name)) for name in UsageDimension], required=True)
    dimension_id = django_filters.CharFilter(max_length=255)
    locals().update({
        "from": django_filters.DateFilter(field_name="day", lookup_expr="gte"),
        "to": django_filters.DateFilter(field_name="day", lookup_expr="lte"),
    })

    class Meta:
        model = UsageRollup
        form = UsageFilterForm
        fields: list[str] = []
