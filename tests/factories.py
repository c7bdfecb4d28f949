"""factory_boy factories: customer → team → key, providers and their keys, limits."""

from __future__ import annotations

import factory
from django.utils import timezone

from gateway import crypto
from gateway.models import ModelAlias, ModelAliasRoute, Provider, ProviderKey, ProviderKind
from gateway.secrets import digest, display_prefix, new_virtual_key_secret
from governance.models import (
    Budget,
    Customer,
    ModelConfig,
    RateLimit,
    Team,
    VirtualKey,
    VirtualKeyProviderConfig,
)
from pricing.models import PricingOverride
from routing.models import RoutingRule, RoutingTarget


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    name = factory.Sequence(lambda n: f"customer-{n}")


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team

    name = factory.Sequence(lambda n: f"team-{n}")
    customer = factory.SubFactory(CustomerFactory)


class VirtualKeyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = VirtualKey

    class Params:
        secret = factory.LazyFunction(new_virtual_key_secret)

    name = factory.Sequence(lambda n: f"key-{n}")
    team = factory.SubFactory(TeamFactory)
    secret_hash = factory.LazyAttribute(lambda o: digest(o.secret))
    secret_prefix = factory.LazyAttribute(lambda o: display_prefix(o.secret))


class ProviderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Provider
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"provider-{n}")
    kind = ProviderKind.OPENAI


class ProviderKeyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProviderKey

    class Params:
        plain_value = "sk-upstream-secret-value-1234"

    provider = factory.SubFactory(ProviderFactory)
    name = factory.Sequence(lambda n: f"key-{n}")
    encrypted_value = factory.LazyAttribute(lambda o: crypto.encrypt(o.plain_value))
    value_hint = factory.LazyAttribute(lambda o: "…" + o.plain_value[-4:])


class ProviderConfigFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = VirtualKeyProviderConfig

    virtual_key = factory.SubFactory(VirtualKeyFactory)
    provider = factory.SubFactory(ProviderFactory)
    allowed_models = factory.LazyFunction(lambda: ["*"])
    allow_all_keys = True


class ModelConfigFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelConfig

    model_name = factory.Sequence(lambda n: f"model-{n}")


class BudgetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Budget

    max_limit = 100
    reset_duration = "1d"
    last_reset = factory.LazyFunction(timezone.now)


class RateLimitFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RateLimit

    request_max_limit = 60
    request_reset_duration = "1m"
    token_last_reset = factory.LazyFunction(timezone.now)
    request_last_reset = factory.LazyFunction(timezone.now)


class RoutingRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RoutingRule

    name = factory.Sequence(lambda n: f"rule-{n}")
    cel_expression = 'model == "gpt-4o"'


class RoutingTargetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RoutingTarget

    rule = factory.SubFactory(RoutingRuleFactory)
    provider = factory.SubFactory(ProviderFactory)
    model = "gpt-4o-mini"
    weight = 1.0


class PricingOverrideFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PricingOverride

    name = factory.Sequence(lambda n: f"override-{n}")
    scope_kind = "global"
    match_type = "exact"
    pattern = "gpt-4o"
    request_types = factory.LazyFunction(lambda: ["chat_completion"])
    patch = factory.LazyFunction(lambda: {"input_cost_per_token": 0.000002})


class ModelAliasFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelAlias

    name = factory.Sequence(lambda n: f"alias-{n}")


class ModelAliasRouteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelAliasRoute

    alias = factory.SubFactory(ModelAliasFactory)
    provider = factory.SubFactory(ProviderFactory)
    model = "gpt-4o"
