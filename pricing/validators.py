"""Validators for pricing overrides, shared by the admin and the management API."""

from __future__ import annotations

import math

from django.core.exceptions import ValidationError

BASE_REQUEST_TYPES = (
    "text_completion",
    "chat_completion",
    "responses",
    "embedding",
    "rerank",
    "speech",
    "transcription",
    "image_generation",
    "image_edit",
    "image_variation",
    "video_generation",
)
STREAM_VARIANTS = {
    "text_completion_stream": "text_completion",
    "chat_completion_stream": "chat_completion",
    "responses_stream": "responses",
    "speech_stream": "speech",
    "transcription_stream": "transcription",
    "image_generation_stream": "image_generation",
    "image_edit_stream": "image_edit",
}

# Price fields an override may set, in dollars (per token, per request, per second...).
PATCH_FIELDS = frozenset(
    {
        "input_cost_per_token",
        "output_cost_per_token",
        "input_cost_per_token_priority",
        "output_cost_per_token_priority",
        "input_cost_per_token_flex",
        "output_cost_per_token_flex",
        "input_cost_per_token_batches",
        "output_cost_per_token_batches",
        "input_cost_per_token_above_128k_tokens",
        "output_cost_per_token_above_128k_tokens",
        "input_cost_per_token_above_200k_tokens",
        "output_cost_per_token_above_200k_tokens",
        "cache_read_input_token_cost",
        "cache_creation_input_token_cost",
        "cache_creation_input_token_cost_above_1hr",
        "cache_read_input_token_cost_above_200k_tokens",
        "cache_creation_input_token_cost_above_200k_tokens",
        "cache_read_input_image_token_cost",
        "input_cost_per_request",
        "input_cost_per_audio_token",
        "output_cost_per_audio_token",
        "input_cost_per_audio_per_second",
        "input_cost_per_second",
        "output_cost_per_second",
        "input_cost_per_video_per_second",
        "output_cost_per_video_per_second",
        "input_cost_per_character",
        "output_cost_per_character",
        "input_cost_per_image",
        "output_cost_per_image",
        "input_cost_per_image_token",
        "output_cost_per_image_token",
        "input_cost_per_pixel",
        "output_cost_per_pixel",
        "search_context_cost_per_query",
        "code_interpreter_cost_per_session",
    }
)
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
        if not math.isfinite(price) or price < 0:
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
