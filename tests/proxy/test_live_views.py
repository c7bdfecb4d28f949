"""Management views that read the live data plane: the quota endpoint and from_memory."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest

from tests.conftest import make_token
from tests.factories import BudgetFactory, RateLimitFactory

CHAT = {"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "hello " * 50}]}


def infer(gateway, world, count=1):
    for _ in range(count):
        response = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT,
                              headers={"authorization": f"Bearer {world['secret']}"})
        assert response.status_code == 200
    return response


@pytest.fixture
def limited(world):
    budget = BudgetFactory(virtual_key=world["key"], max_limit=Decimal("5"), reset_duration="1d")
    rate = RateLimitFactory(virtual_key=world["key"], token_max_limit=100_000,
                            token_reset_duration="1h", request_max_limit=100,
                            request_reset_duration="1m")
    return budget, rate


def test_quota_reports_live_usage_remaining_and_spend_by_model(limited, gateway, world):
    costs = [Decimal(infer(gateway, world).headers["x-gateway-cost-usd"]) for _ in range(3)]
    gateway.flush()
    response = httpx.get(f"{gateway.url}/api/governance/virtual-keys/quota",
                         headers={"x-api-key": world["secret"]})
    assert response.status_code == 200
    body = response.json()
    assert body["virtual_key_name"] == "app" and body["is_active"] is True
    assert body["usage_source"] == "live"
    [budget] = body["budgets"]
    assert Decimal(budget["current_usage"]) == sum(costs)
    assert budget["remaining"] == f"{Decimal('5') - sum(costs):.9f}"  # never 1E+1
    assert budget["next_reset_at"].endswith("Z")
    assert budget["spend_by_model"] == [{"provider": "mock", "model": "gpt-4o-mini",
                                         "cost": f"{sum(costs):.9f}",
                                         "requests": 3}]
    rate = body["rate_limit"]
    assert rate["request_current_usage"] == 3 and rate["request_remaining"] == 97
    assert 0 < rate["token_current_usage"] < 100_000
    assert world["secret"] not in response.text


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401), ({"authorization": "Bearer sk-gw-unknown"}, 401),
    ({"authorization": "Basic abc"}, 401),
])
def test_quota_authentication(gateway, world, headers, status):
    response = httpx.get(f"{gateway.url}/api/governance/virtual-keys/quota", headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["message"]


def test_from_memory_lists_are_arrays_with_live_usage(limited, gateway, world, staff_user):
    token = make_token(staff_user)
    infer(gateway, world, 2)
    headers = {"authorization": f"Bearer {token}"}
    keys = httpx.get(f"{gateway.url}/api/governance/virtual-keys?from_memory=true",
                     headers=headers).json()
    assert isinstance(keys["virtual_keys"], list) and keys["count"] == 1
    rates = httpx.get(f"{gateway.url}/api/governance/rate-limits?from_memory=true",
                      headers=headers).json()
    [rate] = rates["rate_limits"]
    assert rate["request_current_usage"] == 2  # live, before any flush
    database = httpx.get(f"{gateway.url}/api/governance/rate-limits", headers=headers).json()
    assert database["rate_limits"][0]["request_current_usage"] == 0
    for path in ("teams", "customers", "budgets", "model-configs", "providers"):
        body = httpx.get(f"{gateway.url}/api/governance/{path}?from_memory=true",
                         headers=headers).json()
        key = path.replace("-", "_")
        assert isinstance(body[key], list), path


def test_from_memory_without_a_data_plane_is_503(api):
    response = api.get("/api/governance/virtual-keys?from_memory=true")
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "api_error"
