"""Response shapes of the routing-rule API (the spec's section 5 RoutingRule)."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet

from governance.api.representations import many, timestamp
from routing.models import RoutingRule, RoutingTarget

__all__ = ["many", "routing_rule", "routing_rules_queryset", "routing_target"]


def routing_target(item: RoutingTarget) -> dict[str, Any]:
    """A target; null provider, model or key means "the request's own"."""
    return {
        "provider": item.provider.name if item.provider_id else None,
        "model": item.model or None,
        "key_id": str(item.key_id) if item.key_id else None,
        "weight": item.weight,
    }


def routing_rule(item: RoutingRule) -> dict[str, Any]:
    return {
        "id": str(item.id),
        "name": item.name,
        "description": item.description,
        "enabled": item.enabled,
        "chain_rule": item.chain_rule,
        "cel_expression": item.cel_expression,
        "targets": [routing_target(target) for target in item.targets.all()],
        "fallbacks": list(item.fallbacks or []),
        "query": item.query,
        "scope": item.scope,
        "scope_id": item.scope_id,
        "priority": item.priority,
        "config_hash": "",
        "created_at": timestamp(item.created_at),
        "updated_at": timestamp(item.updated_at),
    }


def routing_rules_queryset() -> QuerySet[RoutingRule]:
    """Rules in evaluation order (scope, priority, age) with their targets prefetched."""
    return RoutingRule.objects.prefetch_related(
        Prefetch("targets", queryset=RoutingTarget.objects.select_related("provider")
                 .order_by("position", "id")),
    ).order_by("scope", "priority", "created_at", "id")
