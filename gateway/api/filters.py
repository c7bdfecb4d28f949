"""Query filters of the provider, alias and audit-log lists."""

from __future__ import annotations

import django_filters

from gateway.models import AuditAction, AuditEvent, ModelAlias, Provider, ProviderKind
from governance.api.filters import SearchFilterSet


class ProviderFilter(SearchFilterSet):
    kind = django_filters.ChoiceFilter(choices=ProviderKind.choices)
    enabled = django_filters.BooleanFilter(field_name="is_enabled")

    class Meta:
        model = Provider
        fields: list[str] = []


class AliasFilter(SearchFilterSet):
    class Meta:
        model = ModelAlias
        fields: list[str] = []


class AuditEventFilter(django_filters.FilterSet):
    actor = django_filters.CharFilter(field_name="actor_name")
    object_type = django_filters.CharFilter()
    object_id = django_filters.CharFilter()
    action = django_filters.ChoiceFilter(choices=AuditAction.choices)
    source = django_filters.ChoiceFilter(
        choices=[("admin", "admin"), ("api", "api"), ("command", "command"),
                 ("system", "system")]
    )
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields: list[str] = []
