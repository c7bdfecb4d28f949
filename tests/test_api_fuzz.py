"""Arbitrary JSON bodies against every write endpoint: never a 500."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import (
    CustomerFactory,
    ModelConfigFactory,
    PricingOverrideFactory,
    ProviderFactory,
    RoutingTargetFactory,
    TeamFactory,
    VirtualKeyFactory,
)

pytestmark = pytest.mark.django_db

FIELD_NAMES = st.sampled_from([
    "name", "description", "team_id", "customer_id", "budgets", "budget", "rate_limit",
    "max_limit", "reset_duration", "calendar_aligned", "token_max_limit", "request_max_limit",
    "token_reset_duration", "request_reset_duration", "provider_configs", "provider",
    "allowed_models", "key_ids", "weight", "is_active", "model_name", "targets", "scope",
    "scope_id", "cel_expression", "fallbacks", "priority", "scope_kind", "match_type",
    "pattern", "request_types", "patch", "kind", "keys", "value", "routes", "model",
    "expires_at", "max_concurrent_requests", "query", "enabled", "chain_rule", "id",
])
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=40) | st.sampled_from(["1d", "1M", "openai", "*", "", "global",
                                                      "gpt-4o", "exact", "chat_completion"]))
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(FIELD_NAMES, children, max_size=5),
    max_leaves=20,
)
BODIES = st.dictionaries(FIELD_NAMES, JSON, max_size=8)
ENDPOINTS = [
    "/api/governance/customers", "/api/governance/teams", "/api/governance/virtual-keys",
    "/api/governance/model-configs", "/api/governance/routing-rules",
    "/api/governance/pricing-overrides", "/api/providers", "/api/aliases",
]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_random_bodies_never_crash(api, path):
    ProviderFactory(name="openai")
    CustomerFactory()
    TeamFactory()

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(body=BODIES)
    def check(body):
        response = api.post(path, body, format="json")
        assert response.status_code < 500, (body, response.content)
        assert response.status_code in (200, 201, 400, 409), (body, response.content)

    check()


UPDATE_TARGETS = {
    "virtual-key": lambda: f"/api/governance/virtual-keys/{VirtualKeyFactory().id}",
    "team": lambda: f"/api/governance/teams/{TeamFactory().id}",
    "customer": lambda: f"/api/governance/customers/{CustomerFactory().id}",
    "model-config": lambda: f"/api/governance/model-configs/{ModelConfigFactory().id}",
    "provider-governance": lambda: "/api/governance/providers/openai",
    "routing-rule": lambda: f"/api/governance/routing-rules/{RoutingTargetFactory().rule_id}",
    "pricing-override": lambda: (
        f"/api/governance/pricing-overrides/{PricingOverrideFactory().id}"),
    "provider": lambda: "/api/providers/openai",
}


@pytest.mark.parametrize("target", list(UPDATE_TARGETS))
def test_random_updates_never_crash(api, target):
    ProviderFactory(name="openai")
    path = UPDATE_TARGETS[target]()

    @settings(max_examples=60, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(body=BODIES)
    def check(body):
        response = api.put(path, body, format="json")
        assert response.status_code in (200, 400, 404, 409), (body, response.content)

    check()
