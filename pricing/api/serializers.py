"""Request serializers of the pricing-override API: shapes, types and field-level checks.

Presence matters: a field absent from the body is absent from ``validated_data``, an
explicit ``null`` is ``None``. Scope ids are normalised here (trimmed, ``""`` → None) before
anything validates them (spec P1). Checks that need the merged row (the scope-kind matrix,
the pattern under its match type, the referenced rows) live in :mod:`pricing.actions`.
"""

from __future__ import annotations

import json

from rest_framework import serializers

from gateway.api.fields import StrictCharField
from pricing.models import MatchType, ScopeKind
from pricing.validators import validate_patch, validate_request_types

NAME_REQUIRED = "name is required"
REQUEST_TYPES_REQUIRED = "request_types is required and must contain at least one value"


def _quoted(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def unsupported_scope_kind(value: str) -> str:
    return f"unsupported scope_kind {_quoted(value)}"


def unsupported_match_type(value: str) -> str:
    return f"unsupported match_type {_quoted(value)}"


def _scope_id_field(help_text: str) -> StrictCharField:
    return StrictCharField(required=False, allow_null=True, allow_blank=True, max_length=100,
                           trim_whitespace=False, help_text=help_text)


def normalize_id(value: str | None) -> str | None:
    """Trim; empty means none (spec P1: before validation, not after)."""
    value = (value or "").strip()
    return value or None


class _PricingOverrideFields(serializers.Serializer):
    virtual_key_id = _scope_id_field("Virtual key id (virtual_key* scope kinds).")
    provider_id = _scope_id_field("Provider name, e.g. openai (*provider* scope kinds).")
    provider_key_id = _scope_id_field("Provider key id (*provider_key scope kinds).")

    def validate_virtual_key_id(self, value: str | None) -> str | None:
        return normalize_id(value)

    def validate_provider_id(self, value: str | None) -> str | None:
        return normalize_id(value)

    def validate_provider_key_id(self, value: str | None) -> str | None:
        return normalize_id(value)

    def validate_scope_kind(self, value: str | None) -> str | None:
        if value is None:
            return None
        if value not in ScopeKind.values:
            raise serializers.ValidationError(unsupported_scope_kind(value))
        return value

    def validate_match_type(self, value: str | None) -> str | None:
        if value is None:
            return None
        if value not in MatchType.values:
            raise serializers.ValidationError(unsupported_match_type(value))
        return value


class PricingOverrideCreateInput(_PricingOverrideFields):
    name = StrictCharField(
        max_length=255,
        error_messages={"required": NAME_REQUIRED, "null": NAME_REQUIRED, "blank": NAME_REQUIRED},
    )
    scope_kind = StrictCharField(
        allow_blank=True, max_length=50,
        error_messages={"required": unsupported_scope_kind(""),
                        "null": unsupported_scope_kind("")},
        help_text=f"One of: {', '.join(ScopeKind.values)}.",
    )
    match_type = StrictCharField(
        allow_blank=True, max_length=20,
        error_messages={"required": unsupported_match_type(""),
                        "null": unsupported_match_type("")},
        help_text="exact or wildcard (a prefix ending in one *).",
    )
    pattern = StrictCharField(
        allow_blank=True, max_length=1000,
        error_messages={"required": "pattern is required", "null": "pattern is required"},
        help_text="A model name, or a prefix ending in * for wildcard.",
    )
    request_types = serializers.JSONField(
        validators=[validate_request_types],
        error_messages={"required": REQUEST_TYPES_REQUIRED, "null": REQUEST_TYPES_REQUIRED},
        help_text='Base request types, e.g. ["chat_completion"]; each covers its stream.',
    )
    patch = serializers.JSONField(
        required=False, allow_null=True, validators=[validate_patch],
        help_text='Prices in dollars replacing the catalog\'s, e.g. {"input_cost_per_token": '
        "0.0000025}.",
    )


class PricingOverrideUpdateInput(_PricingOverrideFields):
    """Merge update: absent or null fields keep their value, except the scope ids, where
    null clears; a ``scope_kind`` resets every id not sent; ``patch`` replaces in full."""

    name = StrictCharField(required=False, allow_null=True, max_length=255,
                           error_messages={"blank": NAME_REQUIRED})
    scope_kind = StrictCharField(required=False, allow_null=True, allow_blank=True,
                                 max_length=50)
    match_type = StrictCharField(required=False, allow_null=True, allow_blank=True,
                                 max_length=20)
    pattern = StrictCharField(required=False, allow_null=True, allow_blank=True,
                              max_length=1000)
    request_types = serializers.JSONField(required=False, allow_null=True,
                                          validators=[validate_request_types])
    patch = serializers.JSONField(required=False, allow_null=True, validators=[validate_patch])
