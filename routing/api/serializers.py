"""Request serializers of the routing-rule API: shapes, types and field-level validation.

Presence matters: a field absent from the body is absent from ``validated_data``, an
explicit ``null`` is ``None``. Targets are validated here in full (spec 3.8: weights,
provider and key references, duplicates, weight sum); the scope owner depends on the
rule being updated, so :mod:`routing.actions` resolves it.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from gateway.api.fields import (
    StrictBooleanField,
    StrictCharField,
    StrictDictField,
    StrictFloatField,
    StrictIntegerField,
    StrictListField,
)
from gateway.models import Provider, ProviderKey
from governance.models import VirtualKey
from pricing.validators import BASE_REQUEST_TYPES
from routing import evaluation
from routing import validators as rule_validators
from routing.cel import ENGINE_NAMES
from routing.engine import Capacity
from routing.models import RoutingScope

MAX_TARGETS = 50
WEIGHT_TOLERANCE = 0.001
# Float sums such as 0.5 + 0.499 land a hair outside 0.001 of 1; the tolerance is meant
# inclusively (0.999 passes), so compare with this much slack.
_FLOAT_SLACK = 1e-9
SCOPE_VALUES = ", ".join(RoutingScope.values)
NAME_REQUIRED = "name field is required"


def _quoted(value: str) -> str:
    """Go's ``%q`` for the strings we quote: JSON string syntax, non-ASCII kept."""
    return json.dumps(value, ensure_ascii=False)


def resolve_target_provider(value: str | None) -> Provider | None:
    """``""``/null → None (the request's provider); otherwise the provider with that name.

    Provider names are lower-case slugs, so ``OpenAI`` names ``openai`` (the upstream
    compares target providers case-insensitively).
    """
    name = (value or "").strip()
    if not name:
        return None
    provider = Provider.objects.filter(name__iexact=name).first()
    if provider is None:
        raise serializers.ValidationError(f"invalid provider name: {value}")
    return provider


def resolve_target_key(key_id: str, provider: Provider) -> ProviderKey:
    try:
        pk = uuid.UUID(key_id)
    except ValueError:
        raise serializers.ValidationError(f"key_id {key_id!r} is not a valid key id") from None
    key = ProviderKey.objects.select_related("provider").filter(pk=pk).first()
    if key is None:
        raise serializers.ValidationError(f"key {key_id} does not exist")
    if key.provider_id != provider.pk:
        raise serializers.ValidationError(
            f"key {key_id} belongs to provider {key.provider.name}, not {provider.name}"
        )
    return key


class RoutingTargetInput(serializers.Serializer):
    """``{provider?, model?, key_id?, weight}``; an empty provider or model keeps the
    request's. Weight 0 is allowed: such a target is picked only when all weights are 0."""

    provider = StrictCharField(required=False, allow_null=True, allow_blank=True,
                               max_length=255)
    model = StrictCharField(required=False, allow_null=True, allow_blank=True, max_length=255)
    key_id = StrictCharField(required=False, allow_null=True, allow_blank=True, max_length=100)
    weight = StrictFloatField(help_text="Share of the traffic, 0-1; a rule's weights sum to 1.")

    def validate_weight(self, value: float) -> float:
        if value < 0:
            raise serializers.ValidationError("each target weight must be positive")
        if value > 1:
            raise serializers.ValidationError("each target weight must be at most 1")
        return value

    def validate_provider(self, value: str | None) -> Provider | None:
        return resolve_target_provider(value)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        provider: Provider | None = data.get("provider")
        key_id = (data.get("key_id") or "").strip()
        key = None
        if key_id:
            if provider is None:
                raise serializers.ValidationError(
                    {"key_id": ["key_id requires provider to be set"]}
                )
            try:
                key = resolve_target_key(key_id, provider)
            except serializers.ValidationError as exc:
                raise serializers.ValidationError({"key_id": exc.detail}) from None
        return {
            "provider": provider,
            "model": (data.get("model") or "").strip(),
            "key": key,
            "weight": data["weight"],
        }


def _target_identity(target: dict[str, Any]) -> tuple[str, str, str]:
    provider = target["provider"].name if target["provider"] is not None else ""
    key_id = str(target["key"].pk) if target["key"] is not None else ""
    return provider.lower(), target["model"].lower(), key_id


def validate_target_list(targets: list[dict[str, Any]]) -> None:
    """Spec 3.8 across targets: no duplicate (provider, model, key), weights sum to 1."""
    seen: set[tuple[str, str, str]] = set()
    for target in targets:
        identity = _target_identity(target)
        if identity in seen:
            provider, model, key_id = identity
            raise serializers.ValidationError(
                f"duplicate target entry: provider={_quoted(provider)} model={_quoted(model)} "
                f"key_id={_quoted(key_id)}"
            )
        seen.add(identity)
    total = math.fsum(target["weight"] for target in targets)
    if abs(total - 1.0) > WEIGHT_TOLERANCE + _FLOAT_SLACK:
        raise serializers.ValidationError(f"target weights must sum to 1, got {total:.4f}")


def _targets(**kwargs: Any) -> serializers.ListSerializer:
    # Built by hand: ``many=True`` would pass ``allow_null`` to the child too, letting
    # ``[null]`` through as a target.
    return serializers.ListSerializer(child=RoutingTargetInput(), max_length=MAX_TARGETS,
                                      allow_empty=True, allow_null=True, **kwargs)


class _RoutingRuleFields(serializers.Serializer):
    description = StrictCharField(required=False, allow_null=True, allow_blank=True,
                                  max_length=10_000)
    enabled = StrictBooleanField(required=False, allow_null=True)
    chain_rule = StrictBooleanField(
        required=False, allow_null=True,
        help_text="After this rule matches, evaluate the rules again with the new target.",
    )
    cel_expression = StrictCharField(
        required=False, allow_null=True, allow_blank=True, trim_whitespace=False,
        validators=[rule_validators.validate_cel_expression],
        help_text='CEL condition, e.g. model == "gpt-4o" && budget_used > 80. Empty matches '
        "every request.",
    )
    fallbacks = StrictListField(
        child=StrictCharField(trim_whitespace=False, allow_blank=True, max_length=400),
        required=False, allow_null=True, validators=[rule_validators.validate_fallbacks],
        help_text='Tried in order when the target fails: ["provider/model", "provider"].',
    )
    query = serializers.JSONField(required=False, allow_null=True,
                                  help_text="Opaque query-builder state (a JSON object).")
    scope = StrictCharField(required=False, allow_null=True, allow_blank=True, max_length=50,
                            help_text=f"One of: {SCOPE_VALUES}. Default global.")
    scope_id = StrictCharField(
        required=False, allow_null=True, allow_blank=True, max_length=100,
        help_text="The team, customer or virtual key id; required unless scope is global.",
    )
    priority = StrictIntegerField(required=False, allow_null=True, min_value=-1_000_000,
                                  max_value=1_000_000,
                                  help_text="Lower runs first within its scope.")

    def validate_fallbacks(self, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        try:
            rule_validators.validate_fallback_providers(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None
        return value

    def validate_query(self, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise serializers.ValidationError("query must be a JSON object")
        # PostgreSQL's jsonb refuses NUL in strings; refuse it here rather than fail there.
        if "\\u0000" in json.dumps(value):
            raise serializers.ValidationError("Null characters are not allowed.")
        return value

    def validate_scope(self, value: str | None) -> str | None:
        """``""`` and null mean "not given" (create: global; update: unchanged)."""
        if not value:
            return None
        if value not in RoutingScope.values:
            raise serializers.ValidationError(
                f"invalid scope {_quoted(value)}: must be one of: {SCOPE_VALUES}"
            )
        return value

    def validate_scope_id(self, value: str | None) -> str | None:
        """``""`` → None, as an explicit "no owner"."""
        value = (value or "").strip()
        return value or None


class RoutingRuleCreateInput(_RoutingRuleFields):
    name = StrictCharField(
        max_length=255,
        error_messages={"required": NAME_REQUIRED, "null": NAME_REQUIRED,
                        "blank": NAME_REQUIRED},
    )
    targets = _targets(
        error_messages={"required": "at least one target is required"},
    )

    def validate_targets(self, value: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        if not value:
            raise serializers.ValidationError("at least one target is required")
        validate_target_list(value)
        return value


class RoutingRuleUpdateInput(_RoutingRuleFields):
    """Every field optional; ``name: ""`` is ignored (upstream parity), ``targets``
    replaces every target."""

    name = StrictCharField(required=False, allow_null=True, allow_blank=True, max_length=255)
    targets = _targets(required=False)

    def validate_name(self, value: str | None) -> str | None:
        return value or None

    def validate_targets(self, value: list[dict[str, Any]] | None,
                         ) -> list[dict[str, Any]] | None:
        if value is None:
            return None
        if not value:
            raise serializers.ValidationError("at least one routing target is required")
        validate_target_list(value)
        return value


# --- evaluate (dry run) --------------------------------------------------------------------

def _string_map(label: str) -> StrictDictField:
    return StrictDictField(
        child=StrictCharField(allow_blank=True, trim_whitespace=False,
                              max_length=evaluation.MAX_MAP_VALUE_LENGTH),
        required=False, allow_null=True, allow_empty=True,
        help_text=f"{label}: an object of string to string, at most "
        f"{evaluation.MAX_MAP_ENTRIES} entries. Names are matched case-insensitively.",
    )


class RoutingCapacityInput(serializers.Serializer):
    """Percentages (0-100, may exceed 100) of the tightest limits; absent means 0."""

    budget_used = StrictFloatField(required=False, default=0.0, min_value=0.0)
    tokens_used = StrictFloatField(required=False, default=0.0, min_value=0.0)
    request = StrictFloatField(required=False, default=0.0, min_value=0.0)


class RoutingEvaluateInput(serializers.Serializer):
    """A request to route, described; nothing is sent anywhere."""

    virtual_key_id = StrictCharField(required=False, allow_null=True, allow_blank=True,
                                     max_length=100,
                                     help_text="Id of an existing virtual key; none means "
                                     "only global rules apply.")
    provider = StrictCharField(required=False, allow_null=True, allow_blank=True,
                               max_length=255,
                               help_text="The request's provider; may be empty.")
    model = StrictCharField(max_length=512, help_text='The request\'s model. "provider/model" '
                            "is split when `provider` is empty and the prefix is a provider.")
    request_type = StrictCharField(required=False, allow_null=True, allow_blank=True,
                                   max_length=50,
                                   help_text="One of: " + ", ".join(BASE_REQUEST_TYPES)
                                   + f". Default {evaluation.DEFAULT_REQUEST_TYPE}.")
    headers = _string_map("Request headers")
    query_params = _string_map("Query parameters")
    capacity = RoutingCapacityInput(required=False, allow_null=True)
    engine = StrictCharField(required=False, allow_null=True, allow_blank=True, max_length=50,
                             help_text="CEL engine: " + " or ".join(ENGINE_NAMES)
                             + ". Default: the gateway's setting.")
    seed = StrictIntegerField(required=False, allow_null=True, min_value=-(2**63),
                              max_value=2**63 - 1,
                              help_text="Seeds the weighted target choice, for a "
                              "reproducible result.")

    def validate_virtual_key_id(self, value: str | None) -> VirtualKey | None:
        value = (value or "").strip()
        if not value:
            return None
        try:
            pk = uuid.UUID(value)
        except ValueError:
            raise serializers.ValidationError(
                f"virtual key {value!r} is not a valid id") from None
        key = VirtualKey.objects.select_related("team__customer", "customer").filter(
            pk=pk).first()
        if key is None:
            raise serializers.ValidationError(f"virtual key {value} does not exist")
        return key

    def validate_request_type(self, value: str | None) -> str:
        if not value:
            return evaluation.DEFAULT_REQUEST_TYPE
        if value not in BASE_REQUEST_TYPES:
            raise serializers.ValidationError(
                f"unsupported request_type {_quoted(value)}: use one of "
                f"{', '.join(BASE_REQUEST_TYPES)}"
            )
        return value

    def validate_engine(self, value: str | None) -> str | None:
        if not value:
            return None
        if value not in ENGINE_NAMES:
            raise serializers.ValidationError(
                f"unknown engine {_quoted(value)}: use one of {', '.join(ENGINE_NAMES)}"
            )
        return value

    def _string_map(self, value: dict[str, str] | None, label: str) -> dict[str, str]:
        try:
            return evaluation.check_string_map(value or {}, label)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_headers(self, value: dict[str, str] | None) -> dict[str, str]:
        return self._string_map(value, "headers")

    def validate_query_params(self, value: dict[str, str] | None) -> dict[str, str]:
        return self._string_map(value, "query_params")

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        provider, model = evaluation.split_provider_model(
            (data.get("provider") or "").strip(), data["model"].strip())
        capacity = data.get("capacity")
        return {
            "virtual_key": data.get("virtual_key_id"),
            "provider": provider,
            "model": model,
            "request_type": data.get("request_type") or evaluation.DEFAULT_REQUEST_TYPE,
            "headers": data.get("headers") or {},
            "query_params": data.get("query_params") or {},
            "capacity": Capacity(**capacity) if capacity is not None else None,
            "engine_name": data.get("engine"),
            "seed": data.get("seed"),
        }
