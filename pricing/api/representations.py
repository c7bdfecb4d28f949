"""Response shapes of the pricing-override API (the spec's section 5 PricingOverride)."""

from __future__ import annotations

import json
from typing import Any

from django.db.models import QuerySet

from governance.api.representations import many, timestamp
from pricing.models import PricingOverride

__all__ = ["many", "pricing_override", "pricing_overrides_queryset"]


def pricing_override(item: PricingOverride) -> dict[str, Any]:
    """``patch`` is the price object; ``pricing_patch`` the same as a JSON string, the
    upstream's field, kept for compatible clients."""
    patch = dict(item.patch or {})
    return {
        "id": str(item.id),
        "name": item.name,
        "scope_kind": item.scope_kind,
        "virtual_key_id": str(item.virtual_key_id) if item.virtual_key_id else None,
        "provider_id": item.provider.name if item.provider_id else None,
        "provider_key_id": str(item.provider_key_id) if item.provider_key_id else None,
        "match_type": item.match_type,
        "pattern": item.pattern,
        "request_types": list(item.request_types or []),
        "patch": patch,
        "pricing_patch": json.dumps(patch, sort_keys=True, separators=(",", ":")),
        "config_hash": "",
        "created_at": timestamp(item.created_at),
        "updated_at": timestamp(item.updated_at),
    }


def pricing_overrides_queryset() -> QuerySet[PricingOverride]:
    """Most recently changed first."""
    return PricingOverride.objects.select_related("provider").order_by("-updated_at", "id")
