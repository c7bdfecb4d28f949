"""List endpoints: the compatible ``limit``/``offset`` pagination and its envelope.

A list is paginated when any of its trigger parameters is present (``limit``, ``offset``,
``search`` and per-endpoint filters); otherwise every row is returned with
``count = total_count = limit`` and ``offset = 0``, as the API we are compatible with does.
``limit`` and ``offset`` must be non-negative integers; ``limit`` 0 means the default (25),
and anything above the maximum (100) is clamped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.db.models import QuerySet

from gateway.conf import gateway_settings
from gateway.errors import BadRequest

DEFAULT_TRIGGERS = ("limit", "offset", "search")


MAX_OFFSET = 2**53


def parse_non_negative(params: Any, name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"Invalid {name} parameter: must be a number",
                         fields={name: ["must be a number"]}) from None
    if value < 0:
        raise BadRequest(f"Invalid {name} parameter: must be non-negative",
                         fields={name: ["must be non-negative"]})
    return value


def clamp(limit: int | None, offset: int | None) -> tuple[int, int]:
    maximum = gateway_settings.PAGE_SIZE_MAX
    effective = limit if limit and limit > 0 else gateway_settings.PAGE_SIZE_DEFAULT
    return min(effective, maximum), max(offset or 0, 0)


def list_response(
    queryset: QuerySet[Any],
    params: Any,
    items_key: str,
    represent: Callable[[Iterable[Any]], list[dict[str, Any]]],
    *,
    triggers: tuple[str, ...] = DEFAULT_TRIGGERS,
    export: bool = False,
) -> dict[str, Any]:
    limit = parse_non_negative(params, "limit")
    offset = parse_non_negative(params, "offset")
    if offset is not None and offset > MAX_OFFSET:  # a database integer would overflow: 500
        raise BadRequest(f"Invalid offset parameter: must be at most {MAX_OFFSET}",
                         fields={"offset": [f"must be at most {MAX_OFFSET}"]})
    paginated = any(params.get(name) not in (None, "") for name in triggers)
    if not paginated:
        items = represent(queryset)
        count = len(items)
        return {items_key: items, "count": count, "total_count": count, "limit": count,
                "offset": 0}
    effective_limit, effective_offset = clamp(limit, offset)
    total = queryset.count()
    page = queryset if export else queryset[effective_offset:effective_offset + effective_limit]
    items = represent(page)
    return {
        items_key: items,
        "count": len(items),
        "total_count": total,
        "limit": effective_limit,
        "offset": 0 if export else effective_offset,
    }
