"""``GET /api/governance/virtual-keys/quota``: a virtual key asks about its own limits
(spec governance-api 4.1.6, with the recommended additions).

Authenticated by the virtual key itself (the same headers as inference), never by an admin
token. Usage is live (read from the ledger), remaining amounts and reset times are computed
per window, and each budget lists spend per model in its current window. The key's secret
is never echoed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db.models import Count, Sum
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle

from gateway.api.base import ManagementAPIView
from gateway.errors import AuthenticationRequired, VirtualKeyNotFound
from gateway.secrets import digest
from governance.engine import presented_key, window_reset_at
from governance.ledger import NANOS_PER_DOLLAR, LedgerUnavailable, Limit
from governance.ledger.windows import window_bounds
from governance.models import Budget, RateLimit, UsageRecord, VirtualKey
from governance.snapshot import budget_limit, rate_limits
from governance.usage import format_cost


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def live_usage(limits: list[Limit]) -> tuple[dict[str, int], str]:
    """Current counters of ``limits`` from the ledger and where they came from."""
    if not limits:
        return {}, "live"
    from governance.runtime import current_runtime

    runtime = current_runtime()
    if runtime is not None:
        try:
            return async_to_sync(runtime.ledger.usage_many)(limits), "live"
        except LedgerUnavailable:  # Redis down: the database copy is at most a flush behind
            return {}, "database"
    if settings.REDIS_URL:
        from governance.ledger import ledger_from_url

        async def read() -> dict[str, int]:
            ledger = ledger_from_url(settings.REDIS_URL, key_prefix=settings.LEDGER_KEY_PREFIX)
            try:
                return await ledger.usage_many(limits)
            finally:
                await ledger.aclose()

        try:
            return async_to_sync(read)(), "live"
        except Exception:  # Redis down: the database copy is at most a flush behind
            return {}, "database"
    return {}, "database"


def _spend_by_model(key: VirtualKey, since: float) -> list[dict[str, Any]]:
    rows = (UsageRecord.objects
            .filter(virtual_key_id=key.id, created_at__gte=datetime.fromtimestamp(since, UTC))
            .values("provider", "resolved_model")
            .annotate(cost=Sum("cost"), requests=Count("id"))
            .order_by("-cost", "resolved_model"))
    return [{"provider": row["provider"], "model": row["resolved_model"],
             "cost": format_cost(row["cost"] or Decimal(0)), "requests": row["requests"]}
            for row in rows]


def quota(key: VirtualKey, now: float) -> dict[str, Any]:
    budgets = list(Budget.objects.filter(virtual_key=key).order_by("created_at", "id"))
    rate_limit = RateLimit.objects.filter(virtual_key=key).first()
    budget_limits = [budget_limit(budget, "") for budget in budgets]
    rate = list(rate_limits(rate_limit, "")) if rate_limit is not None else []
    used, source = live_usage([*budget_limits, *rate])
    budget_items = []
    for budget, limit in zip(budgets, budget_limits, strict=True):
        assert limit.window is not None
        start, end = window_bounds(limit.window, now)
        current = (Decimal(used[limit.id]) / NANOS_PER_DOLLAR if limit.id in used
                   else budget.current_usage)
        budget_items.append({
            "id": str(budget.id),
            "max_limit": str(budget.max_limit),
            "reset_duration": budget.reset_duration,
            "calendar_aligned": budget.calendar_aligned,
            "current_usage": format_cost(current),
            "remaining": format_cost(max(budget.max_limit - current, Decimal(0))),
            "window_start": _iso(start),
            "next_reset_at": _iso(end),
            "spend_by_model": _spend_by_model(key, start),
        })
    rate_item = None
    if rate_limit is not None:
        rate_item = {"id": str(rate_limit.id)}
        by_metric = {limit.metric.value: limit for limit in rate}
        for prefix, metric in (("token", "tokens"), ("request", "requests")):
            limit = by_metric.get(metric)
            maximum = getattr(rate_limit, f"{prefix}_max_limit")
            current = used.get(limit.id) if limit is not None else None
            if current is None:
                current = getattr(rate_limit, f"{prefix}_current_usage")
            rate_item.update({
                f"{prefix}_max_limit": maximum,
                f"{prefix}_reset_duration": getattr(rate_limit, f"{prefix}_reset_duration"),
                f"{prefix}_current_usage": current,
                f"{prefix}_remaining": max(maximum - current, 0) if maximum is not None else None,
                f"{prefix}_next_reset_at": _iso(window_reset_at(limit, now)) if limit else None,
            })
    return {
        "virtual_key_name": key.name,
        "is_active": key.is_active,
        "expires_at": key.expires_at.isoformat().replace("+00:00", "Z") if key.expires_at
        else None,
        "usage_source": source,
        "budgets": budget_items,
        "rate_limit": rate_item,
    }


class VirtualKeyQuotaView(ManagementAPIView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    # Unauthenticated by design (the key is the credential): guessing keys is throttled per
    # client address, REST_FRAMEWORK's "quota" rate (60 a minute), counted per process.
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "quota"

    @extend_schema(
        tags=["Governance"], operation_id="getVirtualKeyQuota", auth=[],
        description="The calling virtual key's own budgets and rate limit with live usage, "
        "remaining amounts, reset times and spend per model. Authenticate with the virtual "
        "key (Authorization: Bearer sk-gw-..., x-api-key, api-key, x-goog-api-key or x-bf-vk).",
        responses={200: OpenApiResponse(description="Quota of the calling key"),
                   401: OpenApiResponse(description="Missing or unknown virtual key"),
                   429: OpenApiResponse(description="More than 60 calls a minute")})
    def get(self, request: Request) -> Response:
        headers = {name.lower(): value for name, value in request.headers.items()}
        secret = presented_key(headers)
        if not secret:
            raise AuthenticationRequired(
                "Missing virtual key. Provide it via Authorization Bearer, x-api-key, api-key, "
                "x-goog-api-key or x-bf-vk header.")
        key = VirtualKey.objects.filter(secret_hash=digest(secret)).first()
        if key is None:
            raise VirtualKeyNotFound()
        return Response(quota(key, datetime.now(UTC).timestamp()))
