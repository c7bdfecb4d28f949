"""Plain text forms of values, shared by models, the admin and the API (no Django)."""

from __future__ import annotations

from decimal import Decimal


def plain_decimal(value: Decimal) -> str:
    """``value`` without trailing zeros and never in exponent form (50, 0.000000001)."""
    return format(value.normalize(), "f") if value else "0"


def dollars_text(nanos: int) -> str:
    """Nano-dollars as a decimal number of dollars, exactly, without trailing zeros
    (``x-gateway-cost-usd``). Integer arithmetic: a float division rounds large amounts,
    and formatting a float to nine places costs more than these two steps."""
    if nanos < 0:
        return "-" + dollars_text(-nanos)
    whole, fraction = divmod(nanos, 1_000_000_000)
    if not fraction:
        return str(whole)
    return f"{whole}.{fraction:09d}".rstrip("0")
