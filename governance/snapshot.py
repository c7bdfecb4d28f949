"""The governance snapshot: one immutable view of all configuration (DESIGN.md section 4).

:func:`build_snapshot` is the only place that reads the ORM for the data plane. Everything
it returns is frozen: virtual keys indexed by the SHA-256 of their secret with their team,
customer, provider configs and limits resolved; providers with their decrypted keys; model
configs and provider limits; the compiled routing table; the pricer. Counters never live
here: limits are :class:`~governance.ledger.Limit` descriptions the ledger counts against.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType

from django.db.models import Prefetch

from gateway.conf import gateway_settings
from gateway.models import ModelAlias, ModelAliasRoute, Provider, ProviderKey
from governance.durations import parse_duration
from governance.ledger import NANOS_PER_DOLLAR, Limit, Metric, Window
from governance.ledger.base import dedupe_limits
from governance.models import (
    Budget,
    ModelConfig,
    RateLimit,
    VirtualKey,
    VirtualKeyProviderConfig,
)
from pricing.cost import Pricer
from pricing.loading import load_pricer
from routing.cel import get_engine
from routing.engine import KeyIdentity, RoutingTable
from routing.loading import key_identity, rule_records

ALL = ("*",)


def to_nanos(dollars: Decimal) -> int:
    return int((dollars * NANOS_PER_DOLLAR).to_integral_value(rounding=ROUND_HALF_UP))


def _timestamp(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def window_anchor(last_reset: datetime) -> float:
    """A rolling window's lattice anchor: whole seconds, so that ``record_resets`` moving
    ``last_reset`` along the lattice yields exactly the same window keys."""
    return float(math.floor(last_reset.timestamp()))


def budget_limit(budget: Budget, owner_label: str) -> Limit:
    return Limit(
        id=f"budget:{budget.id}",
        metric=Metric.COST,
        maximum=to_nanos(budget.max_limit),
        window=Window(parse_duration(budget.reset_duration), budget.calendar_aligned,
                      window_anchor(budget.last_reset), _timestamp(budget.usage_reset_at)),
        owner_label=f"{owner_label} budget {budget.reset_duration}",
    )


def rate_limits(limit: RateLimit, owner_label: str) -> tuple[Limit, ...]:
    limits = []
    for metric, window_name in ((Metric.TOKENS, "token"), (Metric.REQUESTS, "request")):
        maximum = getattr(limit, f"{window_name}_max_limit")
        if maximum is None:
            continue
        duration = getattr(limit, f"{window_name}_reset_duration")
        last_reset = getattr(limit, f"{window_name}_last_reset")
        limits.append(Limit(
            id=f"rate:{limit.id}:{metric.value}",
            metric=metric,
            maximum=maximum,
            window=Window(parse_duration(duration), False, window_anchor(last_reset),
                          _timestamp(limit.usage_reset_at)),
            owner_label=f"{owner_label} {window_name} limit {duration}",
        ))
    return tuple(limits)


def owner_limits(owner: object, owner_label: str) -> tuple[Limit, ...]:
    """Every limit of an owner whose ``budgets`` and ``ratelimits`` are prefetched."""
    limits: list[Limit] = [budget_limit(budget, owner_label)
                           for budget in owner.budgets.all()]  # type: ignore[attr-defined]
    for limit in owner.ratelimits.all():  # type: ignore[attr-defined]
        limits.extend(rate_limits(limit, owner_label))
    return tuple(limits)


@dataclass(frozen=True, slots=True)
class ProviderKeyRecord:
    id: str
    name: str
    value: str
    weight: float
    allowed_models: tuple[str, ...]
    enabled: bool


@dataclass(frozen=True, slots=True)
class ProviderRecord:
    id: str
    name: str
    kind: str
    base_url: str
    api_version: str
    enabled: bool
    connect_timeout_ms: int
    first_byte_timeout_ms: int
    idle_timeout_ms: int
    total_timeout_ms: int
    max_retries: int
    backoff_initial_ms: int
    backoff_max_ms: int
    failure_threshold: int
    open_seconds: int
    keys: tuple[ProviderKeyRecord, ...]
    limits: tuple[Limit, ...]


@dataclass(frozen=True, slots=True)
class ProviderConfigRecord:
    provider: str
    weight: float | None
    allowed_models: tuple[str, ...]
    allow_all_keys: bool
    key_ids: frozenset[str]
    limits: tuple[Limit, ...]

    @property
    def allows_every_model(self) -> bool:
        return self.allowed_models == ALL

    def allows_model(self, model: str) -> bool:
        if self.allowed_models == ALL:
            return True
        folded = model.lower()
        return any(allowed.lower() == folded for allowed in self.allowed_models)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    name: str
    is_active: bool
    expires_at: float | None
    identity: KeyIdentity
    max_concurrent_requests: int | None
    provider_configs: Mapping[str, ProviderConfigRecord]
    limits: tuple[Limit, ...]
    team_limits: tuple[Limit, ...]
    customer_limits: tuple[Limit, ...]


@dataclass(frozen=True, slots=True)
class AliasRoute:
    provider: str
    model: str
    weight: float
    priority: int


@dataclass(frozen=True, slots=True)
class AliasRecord:
    name: str
    strategy: str
    routes: tuple[AliasRoute, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    built_at: float
    keys_by_hash: Mapping[str, KeyRecord]
    providers: Mapping[str, ProviderRecord]
    model_limits: Mapping[tuple[str, str | None], tuple[Limit, ...]]
    routing: RoutingTable
    pricer: Pricer
    aliases: Mapping[str, AliasRecord] = field(default_factory=lambda: MappingProxyType({}))


def _limit_prefetches(prefix: str = "") -> list[Prefetch]:
    return [Prefetch(f"{prefix}budgets", queryset=Budget.objects.order_by("created_at", "id")),
            Prefetch(f"{prefix}ratelimits", queryset=RateLimit.objects.all())]


def _provider_record(provider: Provider) -> ProviderRecord:
    return ProviderRecord(
        id=str(provider.id), name=provider.name, kind=provider.kind,
        base_url=provider.effective_base_url, api_version=provider.api_version,
        enabled=provider.is_enabled,
        connect_timeout_ms=provider.connect_timeout_ms,
        first_byte_timeout_ms=provider.first_byte_timeout_ms,
        idle_timeout_ms=provider.idle_timeout_ms, total_timeout_ms=provider.total_timeout_ms,
        max_retries=provider.max_retries, backoff_initial_ms=provider.backoff_initial_ms,
        backoff_max_ms=provider.backoff_max_ms, failure_threshold=provider.failure_threshold,
        open_seconds=provider.open_seconds,
        keys=tuple(
            ProviderKeyRecord(id=str(key.id), name=key.name, value=key.get_value(),
                              weight=key.weight, allowed_models=tuple(key.allowed_models),
                              enabled=key.is_enabled)
            for key in provider.keys.all()
        ),
        limits=owner_limits(provider, f'provider "{provider.name}"'),
    )


def _key_record(key: VirtualKey, team_limits: Mapping[str, tuple[Limit, ...]],
                customer_limits: Mapping[str, tuple[Limit, ...]]) -> KeyRecord:
    identity = key_identity(key)
    configs = {}
    for config in key.provider_configs.all():
        configs[config.provider.name] = ProviderConfigRecord(
            provider=config.provider.name,
            weight=config.weight,
            allowed_models=tuple(config.allowed_models),
            allow_all_keys=config.allow_all_keys,
            key_ids=frozenset(str(provider_key.id) for provider_key in config.keys.all()),
            limits=owner_limits(config,
                                f'virtual key "{key.name}" provider "{config.provider.name}"'),
        )
    customer_id, _ = identity.effective_customer
    limits = owner_limits(key, f'virtual key "{key.name}"')
    if key.max_concurrent_requests:
        limits += (Limit(id=f"concurrency:{key.id}", metric=Metric.CONCURRENT,
                         maximum=key.max_concurrent_requests,
                         owner_label=f'virtual key "{key.name}" concurrency'),)
    return KeyRecord(
        id=str(key.id), name=key.name, is_active=key.is_active,
        expires_at=_timestamp(key.expires_at), identity=identity,
        max_concurrent_requests=key.max_concurrent_requests,
        provider_configs=MappingProxyType(configs),
        limits=limits,
        team_limits=team_limits.get(identity.team_id, ()),
        customer_limits=customer_limits.get(customer_id, ()),
    )


def build_snapshot(version: int, *, built_at: float) -> Snapshot:
    """Read every governed table once and return the immutable snapshot."""
    keys = VirtualKey.objects.select_related("team__customer", "customer").prefetch_related(
        *_limit_prefetches(),
        Prefetch("provider_configs", queryset=VirtualKeyProviderConfig.objects
                 .select_related("provider").prefetch_related("keys", *_limit_prefetches())),
        Prefetch("team__budgets", queryset=Budget.objects.order_by("created_at", "id")),
        "team__ratelimits",
        Prefetch("team__customer__budgets", queryset=Budget.objects.all()),
        "team__customer__ratelimits",
        Prefetch("customer__budgets", queryset=Budget.objects.all()),
        "customer__ratelimits",
    )
    key_list = list(keys)
    team_limits: dict[str, tuple[Limit, ...]] = {}
    customer_limits: dict[str, tuple[Limit, ...]] = {}
    for key in key_list:
        for customer in (key.customer, key.team.customer if key.team else None):
            if customer is not None and str(customer.id) not in customer_limits:
                customer_limits[str(customer.id)] = owner_limits(
                    customer, f'customer "{customer.name}"')
        if key.team is not None and str(key.team.id) not in team_limits:
            team_limits[str(key.team.id)] = owner_limits(key.team, f'team "{key.team.name}"')
    providers = Provider.objects.prefetch_related(
        Prefetch("keys", queryset=ProviderKey.objects.order_by("name")), *_limit_prefetches())
    model_configs = ModelConfig.objects.select_related("provider").prefetch_related(
        *_limit_prefetches())
    engine = get_engine(gateway_settings.CEL_ENGINE)
    return Snapshot(
        version=version,
        built_at=built_at,
        keys_by_hash=MappingProxyType({
            key.secret_hash: _key_record(key, team_limits, customer_limits)
            for key in key_list
        }),
        providers=MappingProxyType({provider.name: _provider_record(provider)
                                    for provider in providers}),
        model_limits=MappingProxyType({
            (config.model_name, config.provider.name if config.provider_id else None):
                owner_limits(config, f'model "{config.model_name}"'
                             + (f' on "{config.provider.name}"' if config.provider_id else ""))
            for config in model_configs
        }),
        routing=RoutingTable.build(rule_records(), engine=engine),
        pricer=load_pricer(),
        aliases=MappingProxyType({
            alias.name: AliasRecord(
                name=alias.name, strategy=alias.strategy,
                routes=tuple(AliasRoute(route.provider.name, route.model, route.weight,
                                        route.priority) for route in alias.routes.all()))
            for alias in ModelAlias.objects.filter(is_enabled=True).prefetch_related(
                Prefetch("routes", queryset=ModelAliasRoute.objects.select_related("provider")
                         .order_by("priority", "id")))
        }),
    )


def iter_limits(snapshot: Snapshot) -> tuple[Limit, ...]:
    """Every limit in the snapshot once (for the runtime's usage view)."""
    groups: list[Iterable[Limit]] = [provider.limits for provider in
                                     snapshot.providers.values()]
    groups.extend(snapshot.model_limits.values())
    for key in snapshot.keys_by_hash.values():
        groups.extend([key.limits, key.team_limits, key.customer_limits,
                       *(config.limits for config in key.provider_configs.values())])
    return dedupe_limits(groups)
