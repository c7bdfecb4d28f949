"""Pricing overrides: replace catalog prices for a model pattern within a scope."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q

from gateway.models import Provider, ProviderKey, TimestampedModel
from governance.models import VirtualKey
from pricing.validators import validate_patch, validate_request_types
from pricing.vocabulary import SCOPE_FIELDS


class ScopeKind(models.TextChoices):
    GLOBAL = "global", "Global"
    PROVIDER = "provider", "Provider"
    PROVIDER_KEY = "provider_key", "Provider key"
    VIRTUAL_KEY = "virtual_key", "Virtual key"
    VIRTUAL_KEY_PROVIDER = "virtual_key_provider", "Virtual key + provider"
    VIRTUAL_KEY_PROVIDER_KEY = "virtual_key_provider_key", "Virtual key + provider key"


class MatchType(models.TextChoices):
    EXACT = "exact", "Exact model name"
    WILDCARD = "wildcard", "Prefix ending in *"


# Which scope ids each scope kind requires; the others must be empty.
SCOPE_REQUIREMENTS: dict[str, frozenset[str]] = {
    ScopeKind(kind): frozenset(fields) for kind, fields in SCOPE_FIELDS.items()
}


def _scope_condition() -> Q:
    condition = Q()
    for kind, required in SCOPE_REQUIREMENTS.items():
        term = Q(scope_kind=kind)
        for field in ("virtual_key", "provider", "provider_key"):
            term &= Q(**{f"{field}__isnull": field not in required})
        condition |= term
    return condition


class PricingOverride(TimestampedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=255)
    scope_kind = models.CharField(max_length=30, choices=ScopeKind.choices)
    virtual_key = models.ForeignKey(
        VirtualKey, null=True, blank=True, on_delete=models.CASCADE,
        related_name="pricing_overrides",
    )
    provider = models.ForeignKey(
        Provider, null=True, blank=True, on_delete=models.CASCADE,
        related_name="pricing_overrides",
    )
    provider_key = models.ForeignKey(
        ProviderKey, null=True, blank=True, on_delete=models.CASCADE,
        related_name="pricing_overrides",
    )
    match_type = models.CharField(max_length=20, choices=MatchType.choices)
    pattern = models.CharField(max_length=255)
    request_types = models.JSONField(default=list, validators=[validate_request_types])
    patch = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_patch],
        help_text='Prices in dollars that replace the catalog\'s, e.g. '
        '{"input_cost_per_token": 0.0000025}.',
    )

    class Meta:
        ordering = ["-updated_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=_scope_condition(), name="pricing_override_scope_ids_match_kind"
            ),
        ]

    def __str__(self) -> str:
        return self.name
