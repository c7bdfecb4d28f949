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
                f"invalid fallback {_shown(entry)}: use provider/model or provider",
                code="invalid_value")


def fallback_provider(entry: str) -> str:
    """The provider a fallback names: ``openai`` for ``openai/gpt-4o`` or ``openai``."""
    return entry.split("/", 1)[0]


def validate_fallback_providers(value: list[str]) -> None:
    """Every fallback names a provider that exists (the shape checked already)."""
    from gateway.models import Provider

    names = {fallback_provider(entry) for entry in value}
    known = set(Provider.objects.filter(name__in=names).values_list("name", flat=True))
    for entry in value:
        name = fallback_provider(entry)
        if name not in known:
            raise ValidationError(
                f"invalid fallback {_shown(entry)}: unknown provider {_shown(name)}",
                code="invalid_value")


def _shown(value: object, limit: int = 80) -> str:
    """``value`` as an error message quotes it: a very long one is cut."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
