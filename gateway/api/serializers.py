"""Request serializers of the provider, model-alias and audit APIs."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from gateway.api.fields import (
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    StrictListField,
)
from gateway.models import (
    BalancingStrategy,
    ProviderKind,
    validate_http_url,
    validate_provider_name,
)
from governance.api.serializers import list_of, resolve_provider
from governance.validators import validate_whitelist

MAX_KEYS = 100
MAX_ROUTES = 50


class ProviderKeyInput(serializers.Serializer):
    id = serializers.UUIDField(required=False, allow_null=True)
    name = StrictCharField(max_length=100)
    value = StrictCharField(
        required=False, write_only=True, max_length=4096, trim_whitespace=True,
        help_text="The provider's API key. Write-only: never returned.",
    )
    weight = StrictFloatField(required=False, min_value=0, max_value=1_000_000)
    allowed_models = StrictListField(
        child=StrictCharField(max_length=255), required=False, max_length=1000,
        validators=[validate_whitelist],
    )
    enabled = StrictBooleanField(required=False)


class ProviderFields(serializers.Serializer):
    kind = serializers.ChoiceField(choices=ProviderKind.choices)
    base_url = StrictCharField(required=False, allow_blank=True, max_length=500,
                               validators=[validate_http_url])
    api_version = StrictCharField(required=False, allow_blank=True, max_length=50)
    price_provider = StrictCharField(required=False, allow_blank=True, max_length=50)
    enabled = StrictBooleanField(required=False)
    connect_timeout_ms = StrictIntegerField(required=False, min_value=1, max_value=600_000)
    first_byte_timeout_ms = StrictIntegerField(required=False, min_value=1, max_value=3_600_000)
    idle_timeout_ms = StrictIntegerField(required=False, min_value=1, max_value=3_600_000)
    total_timeout_ms = StrictIntegerField(required=False, min_value=1, max_value=86_400_000)
    max_retries = StrictIntegerField(required=False, min_value=0, max_value=10)
    backoff_initial_ms = StrictIntegerField(required=False, min_value=0, max_value=60_000)
    backoff_max_ms = StrictIntegerField(required=False, min_value=0, max_value=300_000)
    failure_threshold = StrictIntegerField(required=False, min_value=1, max_value=1000)
    open_seconds = StrictIntegerField(required=False, min_value=1, max_value=86_400)
    keys = list_of(ProviderKeyInput, required=False, max_length=MAX_KEYS)


class ProviderCreateInput(ProviderFields):
    name = StrictCharField(max_length=50, validators=[validate_provider_name])

    def validate_keys(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for index, key in enumerate(value):
            if not key.get("value"):
                raise serializers.ValidationError({index: {"value": ["is required for a new key"]}})
        return value


class ProviderUpdateInput(ProviderFields):
    name = StrictCharField(required=False, max_length=50, validators=[validate_provider_name])
    kind = serializers.ChoiceField(choices=ProviderKind.choices, required=False)


class KeyCreateInput(ProviderKeyInput):
    value = StrictCharField(write_only=True, max_length=4096)


class KeyUpdateInput(ProviderKeyInput):
    name = StrictCharField(required=False, max_length=100)


class AliasRouteInput(serializers.Serializer):
    provider = StrictCharField(max_length=50)
    model = StrictCharField(max_length=200)
    weight = StrictFloatField(required=False, min_value=0, max_value=1_000_000)
    priority = StrictIntegerField(required=False, min_value=-1_000_000, max_value=1_000_000)

    def validate_provider(self, value: str) -> Any:
        return resolve_provider(value)


class AliasInput(serializers.Serializer):
    name = StrictCharField(max_length=200)
    description = StrictCharField(required=False, allow_blank=True, max_length=10_000)
    strategy = serializers.ChoiceField(choices=BalancingStrategy.choices, required=False)
    enabled = StrictBooleanField(required=False)
    routes = list_of(AliasRouteInput, min_length=1, max_length=MAX_ROUTES)

    def validate_routes(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        seen: set[tuple[str, str]] = set()
        for index, route in enumerate(value):
            identity = (route["provider"].name, route["model"])
            if identity in seen:
                raise serializers.ValidationError(
                    {index: {"model": [f"duplicate route {identity[0]}/{identity[1]}"]}}
                )
            seen.add(identity)
        return value


class AliasUpdateInput(AliasInput):
    name = StrictCharField(required=False, max_length=200)
    routes = list_of(AliasRouteInput, required=False, min_length=1, max_length=MAX_ROUTES)
