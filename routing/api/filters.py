"""Query filters of the routing-rule list (django-filter)."""

from __future__ import annotations

import uuid
from typing import Any

import django_filters
from django.db.models import Q, QuerySet

from governance.api.filters import SearchFilterSet
from routing.models import SCOPE_FIELDS, RoutingRule, RoutingScope


class RoutingRuleFilter(SearchFilterSet):
    """``scope`` (one of the four), ``scope_id`` (the owner's id, whatever its scope) and
    ``search`` (case-insensitive name substring)."""

    scope = django_filters.ChoiceFilter(choices=RoutingScope.choices)
    scope_id = django_filters.UUIDFilter(method="filter_scope_id")

    class Meta:
        model = RoutingRule
        fields: list[str] = []

    def filter_scope_id(self, queryset: QuerySet[Any], name: str,
                        value: uuid.UUID) -> QuerySet[Any]:
        condition = Q()
        for field in SCOPE_FIELDS.values():
            condition |= Q(**{f"{field}_id": value})
        return queryset.filter(condition)
