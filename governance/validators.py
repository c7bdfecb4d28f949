"""Validators shared by the admin forms, the models and the management API serializers."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError

from governance.durations import InvalidDuration, parse_duration

MAX_MONEY = Decimal("1000000000000")  # one trillion dollars
MIN_MONEY = Decimal("0.000000001")  # one nano-dollar, the smallest amount stored
MAX_COUNT = 2**62
MAX_NAME_LENGTH = 255
WILDCARD = "*"


def validate_duration(value: object) -> None:
    try:
        parse_duration(value)
    except InvalidDuration as exc:
        raise ValidationError(str(exc), code="invalid_duration") from None


def validate_money_limit(value: object) -> None:
    """A budget's maximum: a finite number of dollars, greater than 0."""
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ValidationError("must be a number of dollars", code="invalid_value") from None
    if not amount.is_finite():
        raise ValidationError("must be a finite number of dollars", code="invalid_value")
    if amount <= 0:
        raise ValidationError("must be greater than 0", code="min_value")
    if amount < MIN_MONEY:  # stored with 9 decimal places: smaller would be stored as 0
        raise ValidationError("must be at least 0.000000001 (one nano-dollar)",
                              code="min_value")
    if amount > MAX_MONEY:
        raise ValidationError(f"must not exceed {MAX_MONEY}", code="max_value")


def validate_count_limit(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("must be a whole number", code="invalid_value")
    if value <= 0:
        raise ValidationError("must be greater than 0", code="min_value")
    if value > MAX_COUNT:
        raise ValidationError(f"must not exceed {MAX_COUNT}", code="max_value")


def validate_whitelist(values: object) -> None:
    """``["*"]`` allows everything, ``[]`` nothing, anything else exactly those values.

    Values are compared case-insensitively, so duplicates are too.
    """
    if not isinstance(values, list):
        raise ValidationError("must be a list of strings", code="invalid_value")
    seen: set[str] = set()
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise ValidationError("every entry must be a non-empty string", code="invalid_value")
        if len(value) > MAX_NAME_LENGTH:
            raise ValidationError(
                f"entries must be at most {MAX_NAME_LENGTH} characters", code="max_length"
            )
        folded = value.strip().lower()
        if folded in seen:
            raise ValidationError(f"duplicate value '{value}' in whitelist", code="duplicate")
        seen.add(folded)
    if WILDCARD in seen and len(values) > 1:
        raise ValidationError(
            "wildcard '*' cannot be used with other values in the whitelist", code="wildcard"
        )


def whitelist_allows(values: list[str], candidate: str) -> bool:
    if values == [WILDCARD]:
        return True
    folded = candidate.lower()
    return any(value.lower() == folded for value in values)
