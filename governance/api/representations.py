"""Response shapes of the governance API (the spec's section 5), built from prefetched rows.

Plain functions rather than output serializers: the shapes nest owners inside owners and
omit what is absent, which functions say directly and render fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db.models import Prefetch, QuerySet

from gateway.models import Provider, ProviderKey
from governance.models import (
    OWNER_FIELDS,
    Budget,
    Customer,
    ModelConfig,
    RateLimit,
    Team,
    VirtualKey,
    VirtualKeyProviderConfig,
)


def timestamp(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _owner_ids(limit: Budget | RateLimit) -> dict[str, Any]:
    for owner in OWNER_FIELDS:
        value = getattr(limit, f"{owner}_id")
        if value is not None:
            if owner == "provider":
                return {"provider": limit.provider.name}
            return {f"{owner}_id": value if isinstance(value, int) else str(value)}
    return {}


def budget(item: Budget) -> dict[str, Any]:
    return {
        "id": str(item.id),
        "max_limit": float(item.max_limit),
        "reset_duration": item.reset_duration,
        "last_reset": timestamp(item.last_reset),
        "current_usage": float(item.current_usage),
        "calendar_aligned": item.calendar_aligned,
        **_owner_ids(item),
        "usage_reset_at": timestamp(item.usage_reset_at),
        "config_hash": "",
        "created_at": timestamp(item.created_at),
        "updated_at": timestamp(item.updated_at),
    }


def rate_limit(item: RateLimit) -> dict[str, Any]:
    data: dict[str, Any] = {"id": str(item.id)}
    for window in ("token", "request"):
        maximum = getattr(item, f"{window}_max_limit")
        duration = getattr(item, f"{window}_reset_duration")
        if maximum is not None:
            data[f"{window}_max_limit"] = maximum
        if duration is not None:
            data[f"{window}_reset_duration"] = duration
        data[f"{window}_current_usage"] = getattr(item, f"{window}_current_usage")
        data[f"{window}_last_reset"] = timestamp(getattr(item, f"{window}_last_reset"))
    data.update(_owner_ids(item))
    data.update({
        "usage_reset_at": timestamp(item.usage_reset_at),
        "config_hash": "",
        "created_at": timestamp(item.created_at),
        "updated_at": timestamp(item.updated_at),
    })
    return data


def _first(items: Iterable[Any]) -> Any:
    for item in items:
        return item
    return None


def _limits(owner: Any, single_budget: bool) -> dict[str, Any]:
    budgets = list(owner.budgets.all())
    limit = _first(owner.ratelimits.all())
    data: dict[str, Any] = {}
    if single_budget:
        data["budget_id"] = str(budgets[0].id) if budgets else None
        data["budget"] = budget(budgets[0]) if budgets else None
    else:
        data["budgets"] = [budget(item) for item in budgets]
    data["rate_limit_id"] = str(limit.id) if limit else None
    data["rate_limit"] = rate_limit(limit) if limit else None
    return data


def _stamps(obj: Any) -> dict[str, Any]:
    return {"config_hash": "", "created_at": timestamp(obj.created_at),
            "updated_at": timestamp(obj.updated_at)}


def customer_brief(item: Customer | None) -> dict[str, Any] | None:
    if item is None:
        return None
    return {"id": str(item.id), "name": item.name}


def team_brief(item: Team | None) -> dict[str, Any] | None:
    if item is None:
        return None
    return {"id": str(item.id), "name": item.name,
            "customer_id": str(item.customer_id) if item.customer_id else None}


def key_brief(item: VirtualKey) -> dict[str, Any]:
    return {"id": str(item.id), "name": item.name, "is_active": item.is_active,
            "value_prefix": item.secret_prefix}


def provider_key(item: ProviderKey) -> dict[str, Any]:
    """A provider key's metadata; its value is write-only and never leaves the server."""
    return {
        "key_id": str(item.id),
        "id": str(item.id),
        "name": item.name,
        "provider": item.provider.name,
        "value_hint": item.value_hint,
        "weight": item.weight,
        "allowed_models": item.allowed_models,
        "enabled": item.is_enabled,
        "created_at": timestamp(item.created_at),
        "updated_at": timestamp(item.updated_at),
    }


def provider_config(item: VirtualKeyProviderConfig) -> dict[str, Any]:
    return {
        "id": item.id,
        "virtual_key_id": str(item.virtual_key_id),
        "provider": item.provider.name,
        "weight": item.weight,
        "allowed_models": item.allowed_models,
        "allow_all_keys": item.allow_all_keys,
        "keys": [provider_key(key) for key in item.keys.all()],
        **_limits(item, single_budget=False),
        "created_at": timestamp(item.created_at),
        "updated_at": timestamp(item.updated_at),
    }


def virtual_key(item: VirtualKey, *, secret: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": str(item.id),
        "name": item.name,
        "description": item.description,
    }
    if secret is not None:
        data["value"] = secret
    data.update({
        "value_prefix": item.secret_prefix,
        "is_active": item.is_active,
        "expires_at": timestamp(item.expires_at),
        "calendar_aligned": item.calendar_aligned,
        "max_concurrent_requests": item.max_concurrent_requests,
        "team_id": str(item.team_id) if item.team_id else None,
        "customer_id": str(item.customer_id) if item.customer_id else None,
        "team": team_brief(item.team),
        "customer": customer_brief(item.customer),
        **_limits(item, single_budget=False),
        "provider_configs": [provider_config(config) for config in item.provider_configs.all()],
        "mcp_configs": [],
        **_stamps(item),
    })
    return data


def team(item: Team) -> dict[str, Any]:
    return {
        "id": str(item.id),
        "name": item.name,
        "description": item.description,
        "customer_id": str(item.customer_id) if item.customer_id else None,
        "customer": customer_brief(item.customer),
        **_limits(item, single_budget=False),
        "virtual_keys": [key_brief(key) for key in item.virtual_keys.all()],
        **_stamps(item),
    }


def customer(item: Customer) -> dict[str, Any]:
    return {
        "id": str(item.id),
        "name": item.name,
        "description": item.description,
        **_limits(item, single_budget=True),
        "teams": [team_brief(child) for child in item.teams.all()],
        "virtual_keys": [key_brief(key) for key in item.virtual_keys.all()],
        **_stamps(item),
    }


def model_config(item: ModelConfig) -> dict[str, Any]:
    return {
        "id": str(item.id),
        "model_name": item.model_name,
        "provider": item.provider.name if item.provider_id else None,
        **_limits(item, single_budget=True),
        **_stamps(item),
    }


def provider_governance(item: Provider) -> dict[str, Any]:
    limits = _limits(item, single_budget=True)
    return {"provider": item.name, "budget": limits["budget"], "rate_limit": limits["rate_limit"]}


# --- prefetching -------------------------------------------------------------------------

def _limit_prefetch(prefix: str) -> list[Prefetch]:
    return [
        Prefetch(f"{prefix}budgets", queryset=Budget.objects.select_related("provider")
                 .order_by("created_at", "id")),
        Prefetch(f"{prefix}ratelimits", queryset=RateLimit.objects.select_related("provider")),
    ]


def virtual_keys_queryset() -> QuerySet[VirtualKey]:
    return VirtualKey.objects.select_related("team", "customer").prefetch_related(
        *_limit_prefetch(""),
        Prefetch("provider_configs", queryset=VirtualKeyProviderConfig.objects
                 .select_related("provider").order_by("id")),
        *_limit_prefetch("provider_configs__"),
        Prefetch("provider_configs__keys", queryset=ProviderKey.objects.select_related("provider")),
    )


def teams_queryset() -> QuerySet[Team]:
    return Team.objects.select_related("customer").prefetch_related(
        *_limit_prefetch(""), "virtual_keys"
    )


def customers_queryset() -> QuerySet[Customer]:
    return Customer.objects.prefetch_related(*_limit_prefetch(""), "teams", "virtual_keys")


def model_configs_queryset() -> QuerySet[ModelConfig]:
    return ModelConfig.objects.select_related("provider").prefetch_related(*_limit_prefetch(""))


def providers_queryset() -> QuerySet[Provider]:
    return Provider.objects.prefetch_related(*_limit_prefetch(""))


def many(function: Any) -> Any:
    def represent(items: Iterable[Any]) -> list[dict[str, Any]]:
        return [function(item) for item in items]
    return represent
