"""Database constraints hold even when the application layer is bypassed."""

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from gateway import config_version
from governance.models import Budget, ModelConfig, RateLimit
from pricing.models import PricingOverride
from routing.models import RoutingRule
from tests.factories import (
    BudgetFactory,
    CustomerFactory,
    ModelConfigFactory,
    ProviderFactory,
    RateLimitFactory,
    TeamFactory,
    VirtualKeyFactory,
)

pytestmark = pytest.mark.django_db(transaction=True)


def violates(create):
    with pytest.raises(IntegrityError), transaction.atomic():
        create()


def test_budget_belongs_to_exactly_one_owner():
    customer, team = CustomerFactory(), TeamFactory()
    violates(lambda: Budget.objects.create(max_limit=1, reset_duration="1d",
                                           last_reset=timezone.now()))
    violates(lambda: Budget.objects.create(max_limit=1, reset_duration="1d",
                                           last_reset=timezone.now(), customer=customer,
                                           team=team))


def test_single_budget_owners_have_at_most_one():
    customer = CustomerFactory()
    BudgetFactory(customer=customer)
    violates(lambda: BudgetFactory(customer=customer, reset_duration="1w"))


def test_multi_budget_owners_have_one_per_duration():
    team = TeamFactory()
    BudgetFactory(team=team, reset_duration="1d")
    BudgetFactory(team=team, reset_duration="1M")
    violates(lambda: BudgetFactory(team=team, reset_duration="1d"))


def test_rate_limit_one_per_owner_and_window_needs_duration():
    key = VirtualKeyFactory()
    RateLimitFactory(virtual_key=key)
    violates(lambda: RateLimitFactory(virtual_key=key))
    violates(lambda: RateLimit.objects.create(
        team=TeamFactory(), token_max_limit=5, token_last_reset=timezone.now(),
        request_last_reset=timezone.now()))


def test_virtual_key_not_in_team_and_customer():
    violates(lambda: VirtualKeyFactory(team=TeamFactory(), customer=CustomerFactory()))


def test_model_config_unique_including_null_provider():
    provider = ProviderFactory()
    ModelConfigFactory(model_name="gpt-4o", provider=provider)
    ModelConfigFactory(model_name="gpt-4o", provider=None)
    violates(lambda: ModelConfig.objects.create(model_name="gpt-4o", provider=provider))
    violates(lambda: ModelConfig.objects.create(model_name="gpt-4o", provider=None))


def test_routing_rule_scope_must_match_owner():
    team = TeamFactory()
    violates(lambda: RoutingRule.objects.create(name="r", scope="team"))
    violates(lambda: RoutingRule.objects.create(name="r", scope="global", team=team))
    RoutingRule.objects.create(name="r", scope="global")
    violates(lambda: RoutingRule.objects.create(name="r", scope="global"))
    RoutingRule.objects.create(name="r", scope="team", team=team)


def test_pricing_override_scope_ids_match_kind():
    provider = ProviderFactory()
    violates(lambda: PricingOverride.objects.create(
        name="o", scope_kind="provider", match_type="exact", pattern="m",
        request_types=["chat_completion"]))
    violates(lambda: PricingOverride.objects.create(
        name="o", scope_kind="global", provider=provider, match_type="exact", pattern="m",
        request_types=["chat_completion"]))


def test_committed_writes_bump_the_config_version(api):
    before = config_version.current_version()
    api.post("/api/governance/customers", {"name": "bump"}, format="json")
    assert config_version.current_version() > before
    middle = config_version.current_version()
    api.post("/api/governance/customers", {"name": ""}, format="json")  # rejected
    assert config_version.current_version() == middle
