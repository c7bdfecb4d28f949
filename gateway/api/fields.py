"""Serializer fields that accept only the JSON type they name.

DRF's own fields coerce (``"5"`` becomes 5, ``1`` becomes ``"1"``, ``"yes"`` becomes True);
a management API that silently reinterprets input hides client bugs, so these refuse it.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    default_error_messages = {"invalid": "A whole number is required."}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    default_error_messages = {"invalid": "A number is required."}

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        if not math.isfinite(data):
            self.fail("invalid")
        return super().to_internal_value(data)


class MoneyField(StrictFloatField):
    """Dollars as a JSON number; kept as Decimal (from its shortest repr) to avoid drift."""

    def to_internal_value(self, data: Any) -> Decimal:  # type: ignore[override]
        value = super().to_internal_value(data)
        return Decimal(repr(value)) if isinstance(data, float) else Decimal(data)

    def to_representation(self, value: Any) -> float:
        return float(value)


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictListField(serializers.ListField):
    default_error_messages = {"not_a_list": "Expected a list of items."}


class StrictDictField(serializers.DictField):
    pass
