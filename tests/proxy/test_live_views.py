"""Management views that read the live data plane: the quota endpoint and from_memory."""

from __future__ import annotations

import math
from decimal import Decimal

import httpx
import pytest

from bench.mock_upstream import DEFAULT_CONTENT
from tests.conftest import make_token
from tests.factories import BudgetFactory, RateLimitFactory

CHAT = {"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "hello " * 50}]}
# What the mock counts for CHAT: 300 prompt characters / 4, and its default reply.
TOKENS_PER_REQUEST = 75 + math.ceil(len(DEFAULT_CONTENT) / 4)


def infer(gateway, world):
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
    assert rate["token_current_usage"] == 3 * TOKENS_PER_REQUEST
    assert rate["token_remaining"] == 100_000 - 3 * TOKENS_PER_REQUEST
    assert world["secret"] not in response.text


@pytest.mark.parametrize(("headers", "message"), [
    ({}, "Missing virtual key"),
    ({"authorization": "Bearer sk-gw-unknown"}, "Virtual key not found"),
    ({"authorization": "Basic abc"}, "Missing virtual key"),
    ({"authorization": "Bearer sk-gw-" + "x" * 32}, "Virtual key not found"),
])
def test_quota_authentication(gateway, world, headers, message):
    response = httpx.get(f"{gateway.url}/api/governance/virtual-keys/quota", headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    assert error["message"].startswith(message)


def test_from_memory_lists_are_arrays_with_live_usage(limited, gateway, world, staff_user):
    headers = {"authorization": f"Bearer {make_token(staff_user)}"}
    spent = sum(Decimal(infer(gateway, world).headers["x-gateway-cost-usd"]) for _ in range(2))
    live = {path: httpx.get(f"{gateway.url}/api/governance/{path}?from_memory=true",
                            headers=headers).json()[path.replace("-", "_")]
            for path in ("virtual-keys", "rate-limits", "budgets", "teams", "customers",
                         "model-configs", "providers")}
    # live, before any flush: the two requests and their tokens and cost
    [key] = live["virtual-keys"]
    [rate] = live["rate-limits"]
    [budget] = live["budgets"]
    assert key["name"] == "app"
    assert key["rate_limit"] == rate and key["budgets"] == [budget]
    assert (rate["request_current_usage"], rate["token_current_usage"]) == \
        (2, 2 * TOKENS_PER_REQUEST)
    assert budget["current_usage"] == pytest.approx(float(spent), rel=1e-9)
    assert [team["name"] for team in live["teams"]] == ["research"]
    assert [customer["name"] for customer in live["customers"]] == ["acme"]
    assert live["model-configs"] == [] and live["providers"] == []  # none in this world
    database = httpx.get(f"{gateway.url}/api/governance/rate-limits", headers=headers).json()
    assert database["rate_limits"][0]["request_current_usage"] == 0


def test_from_memory_without_a_data_plane_is_503(api):
    response = api.get("/api/governance/virtual-keys?from_memory=true")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["type"] == "api_error"
    assert "this process serves no inference traffic" in error["message"]


def test_guessing_keys_on_the_quota_endpoint_is_throttled(gateway, world):
    # The endpoint takes no other credential than the key it reports on: a client that
    # tries more than 60 a minute (the "quota" rate) gets 429s, the right key included.
    from django.core.cache import cache

    url = f"{gateway.url}/api/governance/virtual-keys/quota"
    cache.clear()
    try:
        with httpx.Client() as client:
            statuses = [client.get(url, headers={"x-bf-vk": f"sk-gw-guess{index:026d}"}
                                   ).status_code for index in range(60)]
            assert statuses == [401] * 60
            throttled = client.get(url, headers={"x-api-key": world["secret"]})
        assert throttled.status_code == 429
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        assert throttled.json()["error"]["type"] == "rate_limit_error"
    finally:
        cache.clear()
