"""Validators for pricing overrides, shared by the admin and the management API."""

from __future__ import annotations

import math

from django.core.exceptions import ValidationError

from pricing.vocabulary import BASE_REQUEST_TYPES, PATCH_FIELDS, STREAM_VARIANTS

__all__ = [
    "BASE_REQUEST_TYPES",
    "PATCH_FIELDS",
    "STREAM_VARIANTS",
    "validate_patch",
    "validate_pattern",
    "validate_request_types",
]

MAX_PRICE = 1_000_000.0
MAX_PATTERN_LENGTH = 255


def validate_request_types(value: object) -> None:
    if not isinstance(value, list) or not value:
        raise ValidationError(
            "request_types is required and must contain at least one value", code="required"
        )
    seen: set[str] = set()
    for entry in value:
        if not isinstance(entry, str):
            raise ValidationError("request types must be strings", code="invalid_value")
        if entry in STREAM_VARIANTS:
            raise ValidationError(
                f'unsupported request_type "{entry}": use the base type (e.g. '
                f'"{STREAM_VARIANTS[entry]}" covers both streaming and non-streaming)',
                code="stream_variant",
            )
        if entry not in BASE_REQUEST_TYPES:
            raise ValidationError(
                f'unsupported request_type "{entry}": use one of {", ".join(BASE_REQUEST_TYPES)}',
                code="invalid_value",
            )
        if entry in seen:
            raise ValidationError(f'duplicate request_type "{entry}"', code="duplicate")
        seen.add(entry)


def validate_patch(value: object) -> None:
    if not isinstance(value, dict):
        raise ValidationError("must be an object of price fields", code="invalid_value")
    for key, price in value.items():
        if key not in PATCH_FIELDS:
            raise ValidationError(
                f'unknown price field "{key}"; known fields: {", ".join(sorted(PATCH_FIELDS))}',
                code="unknown_field",
            )
        if isinstance(price, bool) or not isinstance(price, (int, float)):
            raise ValidationError(f"{key} must be a number", code="invalid_value")
        if not math.isfinite(price):
            raise ValidationError(f"{key} must be a finite number", code="invalid_value")
        if price < 0:
            raise ValidationError(f"{key} must be non-negative", code="min_value")
        if price > MAX_PRICE:
            raise ValidationError(f"{key} must not exceed {MAX_PRICE:g}", code="max_value")


def validate_pattern(match_type: str, pattern: str) -> str | None:
    """Return the error for ``pattern`` under ``match_type``, or None when it is valid."""
    if not pattern:
        return "pattern is required"
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"pattern must be at most {MAX_PATTERN_LENGTH} characters"
    if match_type == "exact":
        if "*" in pattern:
            return "exact match pattern must not contain wildcards"
    elif match_type == "wildcard":
        if not pattern.endswith("*"):
            return "wildcard pattern must end with *"
        if pattern.count("*") > 1:
            return "wildcard pattern must contain exactly one trailing *"
    else:
        return f'unsupported match_type "{match_type}"'
    return None
