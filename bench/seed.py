"""Seed a gateway database with the governance of benchmark (c).

    GATEWAY_STATE_DIR=/tmp/x python -m bench.seed --mock-url http://127.0.0.1:9000

prints the JSON that :func:`seed_gateway` returns. From a configured Django process (after
``migrate``), call ``seed_gateway(mock_url)`` directly.

What it creates, through the same write actions as the admin and the API (audited, config
version bumped): providers ``mock`` (OpenAI, base URL ``<mock>/v1``) and ``mock-anthropic``
(Anthropic), each with one key ``mock-ok``; a budget on provider ``mock``; a customer, a team
in it and a virtual key in the team with two budgets (1d, 1M) and a rate limit (all far from
reach) and both providers allowed; 20 global routing rules whose CEL conditions do not match
the benchmark's requests; one pricing override on ``mock/gpt-4o-mini``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

MODEL = "gpt-4o-mini"
ROUTING_CONDITIONS = (
    'headers["x-tenant"] == "t{i}"',
    'model == "gpt-4o-t{i}" && provider == "mock"',
    'team_name == "other-team-{i}"',
    'headers["x-tier"] == "tier-{i}" && budget_used > 80.0',
    'request_type == "embedding" && tokens_used > 1{i}.5',
)
RULE_COUNT = 20


def seed_gateway(mock_url: str) -> dict[str, str]:
    """Create the benchmark's governance; returns the virtual key's secret (``virtual_key``)
    and the model to ask for (``model``)."""
    from django.db import transaction

    from gateway.audit import Actor
    from gateway.provider_actions import create_provider
    from governance.actions import (
        create_customer,
        create_team,
        create_virtual_key,
        update_provider_governance,
    )
    from pricing.actions import create_pricing_override
    from routing.actions import create_routing_rule
    from routing.validators import validate_cel_expression

    actor = Actor(None, "command")
    base = mock_url.rstrip("/")
    with transaction.atomic():
        mock = create_provider(actor, {
            "name": "mock", "kind": "openai", "base_url": f"{base}/v1",
            "keys": [{"name": "mock-ok", "value": "mock-ok", "weight": 1.0,
                      "allowed_models": ["*"]}],
        })
        anthropic = create_provider(actor, {
            "name": "mock-anthropic", "kind": "anthropic", "base_url": base,
            "keys": [{"name": "mock-ok", "value": "mock-ok", "weight": 1.0,
                      "allowed_models": ["*"]}],
        })
        update_provider_governance(actor, mock, {
            "budget": {"max_limit": 1_000_000, "reset_duration": "1d"},
        })
        customer = create_customer(actor, {"name": "bench-customer"})
        team = create_team(actor, {"name": "bench-team", "customer_id": customer})
        _, plain = create_virtual_key(actor, {
            "name": "bench-key",
            "team_id": team,
            "budgets": [{"max_limit": 1_000_000, "reset_duration": "1d"},
                        {"max_limit": 10_000_000, "reset_duration": "1M"}],
            "rate_limit": {"token_max_limit": 10**12, "token_reset_duration": "1m",
                           "request_max_limit": 10**12, "request_reset_duration": "1m"},
            "provider_configs": [
                {"provider": provider, "weight": 1.0, "allowed_models": ["*"],
                 "allow_all_keys": True, "keys": []}
                for provider in (mock, anthropic)
            ],
        })
        for index in range(RULE_COUNT):
            expression = ROUTING_CONDITIONS[index % len(ROUTING_CONDITIONS)].format(i=index)
            validate_cel_expression(expression)
            create_routing_rule(actor, {
                "name": f"bench-rule-{index:02d}",
                "cel_expression": expression,
                "priority": index,
                "targets": [{"provider": mock, "model": MODEL, "key": None, "weight": 1.0}],
            })
        create_pricing_override(actor, {
            "name": "bench-override", "scope_kind": "provider", "provider_id": "mock",
            "match_type": "exact", "pattern": MODEL, "request_types": ["chat_completion"],
            "patch": {"input_cost_per_token": 0.00000015, "output_cost_per_token": 0.0000006},
        })
    return {"virtual_key": plain, "model": f"mock/{MODEL}"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Seed the gateway for the benchmark.")
    parser.add_argument("--mock-url", required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")
    import django

    django.setup()
    result = seed_gateway(args.mock_url)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
