"""Request serializers of the governance API: shapes, types and field-level validation.

Presence matters: a field absent from the body is absent from ``validated_data``, an
explicit ``null`` is ``None``, so actions can tell "leave unchanged" from "clear".
"""

from __future__ import annotations

import uuid
from typing import Any

from rest_framework import serializers

from gateway.api.fields import (
    MoneyField,
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    StrictListField,
)
from gateway.models import Provider, ProviderKey
from governance.models import Customer, Team
from governance.validators import (
    MAX_COUNT,
    WILDCARD,
    validate_duration,
    validate_money_limit,
    validate_whitelist,
)

MAX_BUDGETS = 20
MAX_PROVIDER_CONFIGS = 100
MAX_WHITELIST = 1000

def _name_field(**kwargs: Any) -> StrictCharField:
    return StrictCharField(max_length=255, trim_whitespace=True, **kwargs)

def _uuid_or_none(value: str, label: str) -> uuid.UUID | None:
    if value is None or value.strip() == "":
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise serializers.ValidationError(f"{label} {value!r} is not a valid id") from None

def resolve_reference(model: type, value: str | None, label: str) -> Any:
    """``""``/null → None; otherwise the row with that id, or a 400 naming it."""
    pk = _uuid_or_none(value, label) if value is not None else None
    if pk is None:
        return None
    obj = model.objects.filter(pk=pk).first()
    if obj is None:
        raise serializers.ValidationError(f"{label} {value} does not exist")
    return obj

def resolve_provider(value: str) -> Provider:
    name = (value or "").strip()
    if not name:
        raise serializers.ValidationError("provider name is required")
    provider = Provider.objects.filter(name=name).first()
    if provider is None:
        raise serializers.ValidationError(f"invalid provider name: {value}")
    return provider

class BudgetInput(serializers.Serializer):
    max_limit = MoneyField(validators=[validate_money_limit], help_text="Dollars per window, > 0.")
    reset_duration = StrictCharField(
        max_length=32, validators=[validate_duration], help_text="e.g. 1h, 1d, 1w, 1M, monthly."
    )
    calendar_aligned = StrictBooleanField(required=False)

class BudgetPatchInput(serializers.Serializer):
    """A single budget: ``{}`` removes it; a partial object updates it."""

    max_limit = MoneyField(required=False, allow_null=True, validators=[validate_money_limit])
    reset_duration = StrictCharField(
        required=False, allow_null=True, max_length=32, validators=[validate_duration]
    )
    calendar_aligned = StrictBooleanField(required=False, allow_null=True)

class RateLimitInput(serializers.Serializer):
    token_max_limit = StrictIntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_COUNT
    )
    token_reset_duration = StrictCharField(
        required=False, allow_null=True, max_length=32, validators=[validate_duration]
    )
    request_max_limit = StrictIntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_COUNT
    )
    request_reset_duration = StrictCharField(
        required=False, allow_null=True, max_length=32, validators=[validate_duration]
    )

def list_of(child: type[serializers.Serializer], *, max_length: int,
            **kwargs: Any) -> serializers.ListSerializer:
    """A list of nested objects. Unlike ``Child(many=True, allow_null=True)``, a null list
    is allowed without allowing null items (``[null]`` is a 400, not a crash)."""
    return serializers.ListSerializer(child=child(), max_length=max_length, **kwargs)


def _budget_list(**kwargs: Any) -> serializers.ListSerializer:
    return list_of(BudgetInput, max_length=MAX_BUDGETS, **kwargs)

def _whitelist(**kwargs: Any) -> StrictListField:
    return StrictListField(
        child=StrictCharField(max_length=255, trim_whitespace=False, allow_blank=True),
        max_length=MAX_WHITELIST,
        validators=[validate_whitelist],
        **kwargs,
    )

class ProviderConfigInput(serializers.Serializer):
    """One provider a key may use. Omitted ``allowed_models`` / ``key_ids`` allow nothing."""

    id = StrictIntegerField(required=False, allow_null=True, min_value=1)
    provider = StrictCharField(max_length=50, trim_whitespace=False, allow_blank=True)
    weight = StrictFloatField(required=False, allow_null=True, min_value=0, max_value=1_000_000)
    allowed_models = _whitelist(required=False, allow_null=True)
    key_ids = _whitelist(required=False, allow_null=True)
    budgets = _budget_list(required=False, allow_null=True)
    rate_limit = RateLimitInput(required=False, allow_null=True)

    def validate_provider(self, value: str) -> Provider:
        return resolve_provider(value)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        provider: Provider = data["provider"]
        key_ids = data.get("key_ids") or []
        data["allow_all_keys"] = key_ids == [WILDCARD]
        keys: list[ProviderKey] = []
        if key_ids and not data["allow_all_keys"]:
            wanted: list[uuid.UUID] = []
            for raw in key_ids:
                try:
                    wanted.append(uuid.UUID(raw.strip()))
                except ValueError:
                    raise serializers.ValidationError(
                        {"key_ids": [f"invalid key_ids for provider {provider.name}: "
                                     f"{raw!r} is not a key id"]}
                    ) from None
            found = {key.pk: key for key in ProviderKey.objects.filter(pk__in=wanted)}
            for pk in wanted:
                key = found.get(pk)
                if key is None:
                    raise serializers.ValidationError(
                        {"key_ids": [f"key {pk} not found for provider {provider.name}"]}
                    )
                if key.provider_id != provider.pk:
                    raise serializers.ValidationError(
                        {"key_ids": [f"key {pk} belongs to provider {key.provider.name}, "
                                     f"not {provider.name}"]}
                    )
                keys.append(key)
        data["keys"] = keys
        data["allowed_models"] = data.get("allowed_models") or []
        return data

def _reject_mcp(value: Any) -> None:
    if value:
        raise serializers.ValidationError(
            "MCP tool access is not supported by this gateway; send no mcp_configs"
        )

class _VirtualKeyFields(serializers.Serializer):
    description = StrictCharField(required=False, allow_blank=True, max_length=10_000)
    team_id = StrictCharField(required=False, allow_null=True, allow_blank=True)
    customer_id = StrictCharField(required=False, allow_null=True, allow_blank=True)
    budgets = _budget_list(required=False, allow_null=True)
    rate_limit = RateLimitInput(required=False, allow_null=True)
    is_active = StrictBooleanField(required=False, allow_null=True)
    calendar_aligned = StrictBooleanField(required=False, allow_null=True)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    max_concurrent_requests = StrictIntegerField(
        required=False, allow_null=True, min_value=1, max_value=100_000
    )
    provider_configs = list_of(
        ProviderConfigInput, required=False, allow_null=True, max_length=MAX_PROVIDER_CONFIGS
    )
    mcp_configs = serializers.JSONField(required=False, allow_null=True, validators=[_reject_mcp])
    reset_usage = StrictBooleanField(required=False)

    def validate_team_id(self, value: str | None) -> Team | None:
        return resolve_reference(Team, value, "team")

    def validate_customer_id(self, value: str | None) -> Customer | None:
        return resolve_reference(Customer, value, "customer")

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if data.get("team_id") is not None and data.get("customer_id") is not None:
            raise serializers.ValidationError({"team_id": [  # (with customer_id)
                "VirtualKey cannot be attached to both Team and Customer"]})
        seen: dict[str, int] = {}
        for index, config in enumerate(data.get("provider_configs") or []):
            name = config["provider"].name
            if name in seen:
                raise serializers.ValidationError({"provider_configs": [
                    f"provider {name} is configured twice (entries {seen[name]} and {index})"
                ]})
            seen[name] = index
        return data

class VirtualKeyCreateInput(_VirtualKeyFields):
    name = _name_field()

class VirtualKeyUpdateInput(_VirtualKeyFields):
    name = _name_field(required=False)

class TeamInput(serializers.Serializer):
    name = _name_field()
    description = StrictCharField(required=False, allow_blank=True, max_length=10_000)
    customer_id = StrictCharField(required=False, allow_null=True, allow_blank=True)
    budgets = _budget_list(required=False, allow_null=True)
    rate_limit = RateLimitInput(required=False, allow_null=True)
    reset_usage = StrictBooleanField(required=False)

    def validate_customer_id(self, value: str | None) -> Customer | None:
        return resolve_reference(Customer, value, "customer")

class TeamUpdateInput(TeamInput):
    name = _name_field(required=False)

class CustomerInput(serializers.Serializer):
    name = _name_field()
    description = StrictCharField(required=False, allow_blank=True, max_length=10_000)
    budget = BudgetPatchInput(required=False, allow_null=True)
    rate_limit = RateLimitInput(required=False, allow_null=True)
    reset_usage = StrictBooleanField(required=False)

class CustomerUpdateInput(CustomerInput):
    name = _name_field(required=False)

class ModelConfigInput(serializers.Serializer):
    model_name = _name_field()
    provider = StrictCharField(required=False, allow_null=True, allow_blank=True, max_length=50)
    budget = BudgetPatchInput(required=False, allow_null=True)
    rate_limit = RateLimitInput(required=False, allow_null=True)
    reset_usage = StrictBooleanField(required=False)

    def validate_provider(self, value: str | None) -> Provider | None:
        if value is None or value.strip() == "":
            return None
        return resolve_provider(value)

class ModelConfigUpdateInput(ModelConfigInput):
    model_name = _name_field(required=False)

class ProviderGovernanceInput(serializers.Serializer):
    budget = BudgetPatchInput(required=False, allow_null=True)
    rate_limit = RateLimitInput(required=False, allow_null=True)
    reset_usage = StrictBooleanField(required=False)
