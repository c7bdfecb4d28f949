"""Query filters of the pricing-override list (django-filter)."""

from __future__ import annotations

import django_filters

from governance.api.filters import SearchFilterSet
from pricing.models import PricingOverride, ScopeKind


class PricingOverrideFilter(SearchFilterSet):
    """Equality on the scope (``provider_id`` is the provider's name) and ``search`` on the
    name. An unknown ``scope_kind`` or a malformed id is a 400, not an empty list."""

    scope_kind = django_filters.ChoiceFilter(choices=ScopeKind.choices)
    virtual_key_id = django_filters.UUIDFilter(field_name="virtual_key_id")
    provider_id = django_filters.CharFilter(field_name="provider__name", max_length=50)
    provider_key_id = django_filters.UUIDFilter(field_name="provider_key_id")

    class Meta:
        model = PricingOverride
        fields: list[str] = []
