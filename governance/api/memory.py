"""``from_memory=true`` on governance list endpoints (spec governance-api 1.7).

Bifrost reads its in-memory governance store there. Our in-memory state is the worker's
snapshot plus the live ledger counters, so ``from_memory=true`` answers with what this
worker enforces right now: every object in its snapshot, as an array (never null, never an
object keyed by id), with ``current_usage`` fields read live from the ledger instead of the
database copy (which lags by a flush). Pagination and filters other than ``customer_id`` on
teams are ignored, as in Bifrost; teams and customers are listed whole (the snapshot
resolves them through keys). Without a running data plane in this process: 503.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from rest_framework.request import Request

from gateway.errors import GovernanceUnavailable
from governance.api.quota import live_usage
from governance.ledger import NANOS_PER_DOLLAR, Metric
from governance.models import Budget
from governance.tasks import limit_rows


def requested(request: Request) -> bool:
    return request.query_params.get("from_memory") == "true"


def _snapshot() -> Any:
    from governance.runtime import current_runtime

    runtime = current_runtime()
    if runtime is None or runtime.snapshot is None:
        raise GovernanceUnavailable(
            "Governance data is not available: this process serves no inference traffic")
    return runtime.snapshot


def enforced_ids(kind: str) -> set[str]:
    """Ids (names for providers) of the objects of ``kind`` in this worker's snapshot."""
    snapshot = _snapshot()
    keys = snapshot.keys_by_hash.values()
    if kind == "virtual_keys":
        return {key.id for key in keys}
    if kind == "providers":
        return set(snapshot.providers)
    return set()


def live_counters() -> dict[str, Any]:
    """Live usage per budget id (Decimal dollars) and per rate limit id (token, request)."""
    rows = limit_rows()
    used, _source = live_usage([item.limit for item in rows])
    values: dict[str, Any] = {}
    for item in rows:
        row, value = item.row, used.get(item.limit.id)
        if isinstance(row, Budget):
            if value is not None:
                values[str(row.id)] = Decimal(value) / NANOS_PER_DOLLAR
            continue
        tokens, requests = values.get(str(row.id), (None, None))
        if item.limit.metric is Metric.TOKENS:
            tokens = value
        else:
            requests = value
        values[str(row.id)] = (tokens, requests)
    return values


def overlay(item: Any, counters: dict[str, Any]) -> Any:
    """Replace usage fields of every budget and rate limit inside ``item`` (in place)."""
    if isinstance(item, list):
        for value in item:
            overlay(value, counters)
    elif isinstance(item, dict):
        live = counters.get(str(item.get("id")))
        if live is not None:
            if "max_limit" in item and "current_usage" in item and isinstance(live, Decimal):
                item["current_usage"] = float(live)
            elif isinstance(live, tuple):
                tokens, requests = live
                if tokens is not None and "token_current_usage" in item:
                    item["token_current_usage"] = tokens
                if requests is not None and "request_current_usage" in item:
                    item["request_current_usage"] = requests
        for value in item.values():
            if isinstance(value, dict | list):
                overlay(value, counters)
    return item


def memory_list(key: str, kind: str, objects: Iterable[Any],
                represent: Callable[[Any], dict[str, Any]],
                identity: Callable[[Any], str] = lambda obj: str(obj.pk)) -> dict[str, Any]:
    ids = enforced_ids(kind) if kind else None
    items = [represent(obj) for obj in objects if ids is None or identity(obj) in ids]
    overlay(items, live_counters())
    count = len(items)
    if key in ("budgets", "rate_limits", "providers"):
        return {key: items, "count": count}
    return {key: items, "count": count, "total_count": count, "limit": count, "offset": 0}
