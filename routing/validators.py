"""Validators for routing rules, shared by the admin and the management API."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

from gateway.conf import gateway_settings
from routing.cel import CelCompileError, check_expression

MAX_EXPRESSION_LENGTH = 4096
MAX_FALLBACKS = 20
FALLBACK_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,49}(/[^\s/][^\s]{0,254})?")


def validate_cel_expression(value: str) -> None:
    if not isinstance(value, str):
        raise ValidationError("must be a string", code="invalid_value")
    if len(value) > MAX_EXPRESSION_LENGTH:
        raise ValidationError(
            f"must be at most {MAX_EXPRESSION_LENGTH} characters", code="max_length"
        )
    try:
        check_expression(value, gateway_settings.CEL_ENGINE)
    except CelCompileError as exc:
        raise ValidationError(str(exc), code="invalid_cel") from None


def validate_fallbacks(value: object) -> None:
    if not isinstance(value, list):
        raise ValidationError("must be a list of provider/model strings", code="invalid_value")
    if len(value) > MAX_FALLBACKS:
        raise ValidationError(f"at most {MAX_FALLBACKS} fallbacks", code="max_length")
    for entry in value:
        if not isinstance(entry, str) or not FALLBACK_PATTERN.fullmatch(entry):
            raise ValidationError(
                f"invalid fallback {entry!r}: use provider/model or provider", code="invalid_value"
            )
