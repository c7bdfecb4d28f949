"""Query filters of the governance list endpoints (django-filter)."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import Q, QuerySet

from governance.models import Customer, ModelConfig, Team, VirtualKey

SORTABLE_KEY_FIELDS = ("name", "created_at", "updated_at", "is_active")


class SearchFilterSet(django_filters.FilterSet):
    """``search``: case-insensitive substring of the names listed in ``search_fields``."""

    search = django_filters.CharFilter(method="filter_search", max_length=200)
    search_fields: tuple[str, ...] = ("name",)

    def filter_search(self, queryset: QuerySet[Any], name: str, value: str) -> QuerySet[Any]:
        condition = Q()
        for field in self.search_fields:
            condition |= Q(**{f"{field}__icontains": value})
        return queryset.filter(condition)


class VirtualKeyFilter(SearchFilterSet):
    customer_id = django_filters.UUIDFilter(field_name="customer_id")
    team_id = django_filters.UUIDFilter(field_name="team_id")
    is_active = django_filters.BooleanFilter()
    sort_by = django_filters.ChoiceFilter(
        choices=[(name, name) for name in SORTABLE_KEY_FIELDS], method="filter_sort"
    )
    order = django_filters.ChoiceFilter(choices=[("asc", "asc"), ("desc", "desc")],
                                        method="filter_noop")
    search_fields = ("name", "description", "secret_prefix")

    class Meta:
        model = VirtualKey
        fields: list[str] = []

    def filter_sort(self, queryset: QuerySet[Any], name: str, value: str) -> QuerySet[Any]:
        descending = self.form.cleaned_data.get("order", "desc") != "asc"
        return queryset.order_by(f"{'-' if descending else ''}{value}", "id")

    def filter_noop(self, queryset: QuerySet[Any], name: str, value: str) -> QuerySet[Any]:
        return queryset


class TeamFilter(SearchFilterSet):
    customer_id = django_filters.UUIDFilter(field_name="customer_id")

    class Meta:
        model = Team
        fields: list[str] = []


class CustomerFilter(SearchFilterSet):
    class Meta:
        model = Customer
        fields: list[str] = []


class ModelConfigFilter(SearchFilterSet):
    provider = django_filters.CharFilter(field_name="provider__name")
    search_fields = ("model_name",)

    class Meta:
        model = ModelConfig
        fields: list[str] = []
