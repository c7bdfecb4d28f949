"""Plain text forms of values, shared by models, the admin and the API (no Django)."""

from __future__ import annotations

from decimal import Decimal


def plain_decimal(value: Decimal) -> str:
    """``value`` without trailing zeros and never in exponent form (50, 0.000000001)."""
    return format(value.normalize(), "f") if value else "0"
