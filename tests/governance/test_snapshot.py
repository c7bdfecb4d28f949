"""The governance snapshot: one immutable read of every governed table."""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal

import pytest
from django.utils import timezone

from gateway.secrets import digest
from governance.ledger import Metric
from governance.snapshot import build_snapshot, iter_limits, to_nanos
from tests.factories import (
    BudgetFactory,
    CustomerFactory,
    ModelConfigFactory,
    PricingOverrideFactory,
    ProviderConfigFactory,
    ProviderFactory,
    ProviderKeyFactory,
    RateLimitFactory,
    RoutingTargetFactory,
    TeamFactory,
    VirtualKeyFactory,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def world():
    customer = CustomerFactory(name="acme")
    BudgetFactory(customer=customer, max_limit=Decimal("500"), reset_duration="1M")
    team = TeamFactory(name="research", customer=customer)
    BudgetFactory(team=team, max_limit=Decimal("50.25"), reset_duration="1d",
                  calendar_aligned=True)
    RateLimitFactory(team=team, token_max_limit=1000, token_reset_duration="1h",
                     request_max_limit=None, request_reset_duration=None)
    openai = ProviderFactory(name="openai")
    provider_key = ProviderKeyFactory(provider=openai, name="primary",
                                      plain_value="sk-live-abcdefghijklmnop")
    RateLimitFactory(provider=openai, request_max_limit=1000, request_reset_duration="1m")
    secret = "sk-gw-" + "A" * 32
    key = VirtualKeyFactory(name="prod", team=team, secret_hash=digest(secret),
                            max_concurrent_requests=3)
    BudgetFactory(virtual_key=key, max_limit=Decimal("10"), reset_duration="1d")
    config = ProviderConfigFactory(virtual_key=key, provider=openai,
                                   allowed_models=["gpt-4o"], allow_all_keys=False)
    config.keys.set([provider_key])
    BudgetFactory(provider_config=config, max_limit=Decimal("1"), reset_duration="1h")
    BudgetFactory(model_config=ModelConfigFactory(model_name="gpt-4o", provider=openai))
    RoutingTargetFactory(provider=openai)
    PricingOverrideFactory()
    return {"secret": secret, "key": key, "team": team, "customer": customer,
            "provider_key": provider_key}


def test_snapshot_resolves_the_hierarchy(world):
    snapshot = build_snapshot(7, built_at=1.0)
    assert snapshot.version == 7
    record = snapshot.keys_by_hash[digest(world["secret"])]
    assert record.name == "prod"
    assert record.identity.team_name == "research"
    assert record.identity.team_customer_name == "acme"
    by_metric = {limit.metric: limit for limit in record.limits}
    assert by_metric[Metric.COST].maximum == 10 * 10**9
    assert by_metric[Metric.CONCURRENT].maximum == 3
    assert by_metric[Metric.COST].owner_label == 'virtual key "prod" budget 1d'
    team_budget = next(limit for limit in record.team_limits if limit.metric is Metric.COST)
    assert team_budget.maximum == 50_250_000_000
    assert team_budget.window.calendar_aligned is True
    assert team_budget.owner_label == 'team "research" budget 1d'
    assert [limit.metric for limit in record.team_limits] == [Metric.COST, Metric.TOKENS]
    assert [limit.owner_label for limit in record.customer_limits] == [
        'customer "acme" budget 1M']
    config = record.provider_configs["openai"]
    assert config.allows_model("GPT-4o")
    assert not config.allows_model("gpt-4o-mini")
    assert config.key_ids == {str(world["provider_key"].id)}
    assert [limit.owner_label for limit in config.limits] == [
        'virtual key "prod" provider "openai" budget 1h']


def test_snapshot_holds_providers_models_rules_and_prices(world):
    snapshot = build_snapshot(1, built_at=1.0)
    openai = snapshot.providers["openai"]
    assert [key.value for key in openai.keys] == ["sk-live-abcdefghijklmnop"]
    assert [limit.metric for limit in openai.limits] == [Metric.REQUESTS]
    assert [limit.owner_label for limit in snapshot.model_limits[("gpt-4o", "openai")]] == [
        'model "gpt-4o" on "openai" budget 1d']
    assert snapshot.routing.rule_count == 1
    assert snapshot.pricer.catalog_provider_id("openai") == "openai"


def test_snapshot_is_immutable(world):
    snapshot = build_snapshot(1, built_at=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.version = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        snapshot.keys_by_hash["x"] = None  # type: ignore[index]


def test_limits_keep_their_window_anchor_and_reset_marker(world):
    budget = world["key"].budgets.get()
    marker = timezone.now()
    type(budget).objects.filter(pk=budget.pk).update(usage_reset_at=marker)
    record = build_snapshot(1, built_at=1.0).keys_by_hash[digest(world["secret"])]
    limit = next(limit for limit in record.limits if limit.metric is Metric.COST)
    assert limit.window.anchor == math.floor(budget.last_reset.timestamp())  # whole seconds
    assert limit.window.reset_marker == marker.timestamp()


def test_iter_limits_lists_each_limit_once(world):
    VirtualKeyFactory(name="second", team=world["team"])  # shares the team and customer limits
    ids = [limit.id for limit in iter_limits(build_snapshot(1, built_at=1.0))]
    assert len(ids) == len(set(ids))
    # key budget + concurrency, provider config budget, team budget + tokens, customer budget,
    # provider requests, model budget
    assert len(ids) == 8


def test_query_count_does_not_grow_with_keys(world, django_assert_max_num_queries):
    with django_assert_max_num_queries(40) as few:
        build_snapshot(1, built_at=1.0)
    for index in range(15):
        key = VirtualKeyFactory(name=f"bulk-{index}", team=world["team"])
        BudgetFactory(virtual_key=key)
        ProviderConfigFactory(virtual_key=key, provider=world["provider_key"].provider)
    with django_assert_max_num_queries(len(few.captured_queries)):
        build_snapshot(2, built_at=1.0)


@pytest.mark.parametrize(("dollars", "nanos"), [
    (Decimal("0.000000001"), 1), (Decimal("50.02"), 50_020_000_000),
    (Decimal("0.0000000005"), 1), (Decimal("0.0000000004"), 0),
])
def test_to_nanos_rounds_half_up(dollars, nanos):
    assert to_nanos(dollars) == nanos
