"""Build the routing engine's inputs from the database (control plane only).

The data plane gets the same objects from the governance snapshot; "Try routing" and the
evaluate endpoint build them here, on demand.
"""

from __future__ import annotations

import random
from typing import Any

from gateway.conf import gateway_settings
from governance.models import VirtualKey
from routing.cel import get_engine
from routing.engine import KeyIdentity, RoutingEngine, RoutingTable
from routing.models import RoutingRule


def rule_records() -> list[dict[str, Any]]:
    rules = RoutingRule.objects.filter(enabled=True).prefetch_related(
        "targets__provider", "targets__key")
    return [
        {
            "id": str(rule.id),
            "name": rule.name,
            "cel_expression": rule.cel_expression,
            "targets": [
                {"provider": target.provider.name if target.provider_id else None,
                 "model": target.model or None,
                 "key_id": str(target.key_id) if target.key_id else None,
                 "weight": target.weight}
                for target in rule.targets.all()
            ],
            "fallbacks": list(rule.fallbacks or []),
            "chain_rule": rule.chain_rule,
            "scope": rule.scope,
            "scope_id": rule.scope_id or "",
            "priority": rule.priority,
            "created_at": rule.created_at,
            "enabled": rule.enabled,
        }
        for rule in rules
    ]


def key_identity(key: VirtualKey) -> KeyIdentity:
    team = key.team
    team_customer = team.customer if team is not None else None
    return KeyIdentity(
        id=str(key.id),
        name=key.name,
        team_id=str(team.id) if team else "",
        team_name=team.name if team else "",
        team_customer_id=str(team_customer.id) if team_customer else "",
        team_customer_name=team_customer.name if team_customer else "",
        customer_id=str(key.customer_id) if key.customer_id else "",
        customer_name=key.customer.name if key.customer_id else "",
    )


def load_engine(*, engine_name: str | None = None, seed: int | None = None) -> RoutingEngine:
    engine = get_engine(engine_name or gateway_settings.CEL_ENGINE)
    table = RoutingTable.build(rule_records(), engine=engine)
    return RoutingEngine(table, engine=engine,
                         max_depth=lambda: gateway_settings.ROUTING_MAX_DEPTH,
                         rng=random.Random(seed) if seed is not None else None)
