"""Model resolution (pure): which provider/model pairs a request may go to, in order.

1. a matching routing rule (its target, then its fallbacks);
2. else ``provider/model`` when the prefix names a provider;
3. else the key's provider configs that list the bare model: one chosen by weight, the
   others as fallbacks by descending weight (Bifrost's transport load balancing);
4. else a model alias with its strategy (``weighted``, ``priority``, ``least_busy``,
   ``lowest_latency`` from a moving average), through the routes the key may use;
5. else the key's provider configs that allow every model (``["*"]``), as in 3, narrowed
   to the providers the price catalog knows the model for when there are some;
6. else 404 ``model_not_found``.

The request's own ``fallbacks`` (``provider/model`` strings) come after the resolved ones.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ModelNotFound
from routing.engine import Capacity, RoutingContext, RoutingEngine


@dataclass(frozen=True, slots=True)
class Candidate:
    provider: str
    model: str
    key_id: str = ""  # a provider key pinned by a routing target


@dataclass(frozen=True, slots=True)
class Resolution:
    candidates: tuple[Candidate, ...]
    rule_id: str = ""
    rule_name: str = ""


@dataclass
class RouteStats:
    """Per (provider, model): requests in flight and a latency moving average (ms)."""

    in_flight: dict[tuple[str, str], int] = field(default_factory=dict)
    latency_ms: dict[tuple[str, str], float] = field(default_factory=dict)
    alpha: float = 0.2

    def started(self, provider: str, model: str) -> None:
        key = (provider, model)
        self.in_flight[key] = self.in_flight.get(key, 0) + 1

    def finished(self, provider: str, model: str, latency_ms: float | None) -> None:
        key = (provider, model)
        self.in_flight[key] = max(self.in_flight.get(key, 1) - 1, 0)
        if latency_ms is not None:
            previous = self.latency_ms.get(key)
            self.latency_ms[key] = latency_ms if previous is None else (
                previous + self.alpha * (latency_ms - previous))


def split_model(model: str, providers: Mapping[str, object]) -> tuple[str, str]:
    """``("openai", "gpt-4o")`` for ``openai/gpt-4o`` when ``openai`` is a provider;
    otherwise ``("", model)`` (model names may contain slashes)."""
    prefix, slash, rest = model.partition("/")
    if slash and rest and prefix in providers:
        return prefix, rest
    return "", model


def weighted_order(items: Sequence[tuple[object, float]], rng: random.Random) -> list[object]:
    """One item drawn by weight first, then the rest by descending weight."""
    if len(items) <= 1:
        return [items[0][0]] if items else []
    weights = [max(weight, 0.0) for _item, weight in items]
    total = sum(weights)
    if total <= 0:
        first = rng.randrange(len(items))
    else:
        point = rng.random() * total
        first = len(items) - 1
        for index, weight in enumerate(weights):
            point -= weight
            if point < 0:
                first = index
                break
    rest = sorted((pair for index, pair in enumerate(items) if index != first),
                  key=lambda pair: -pair[1])
    return [items[first][0], *(item for item, _weight in rest)]


def _alias_order(alias: object, stats: RouteStats, rng: random.Random) -> list[Candidate]:
    routes = list(alias.routes)  # type: ignore[attr-defined]
    strategy = alias.strategy  # type: ignore[attr-defined]
    if strategy == "priority":
        ordered = sorted(routes, key=lambda route: route.priority)
    elif strategy == "least_busy":
        ordered = sorted(routes, key=lambda route: (
            stats.in_flight.get((route.provider, route.model), 0), route.priority))
    elif strategy == "lowest_latency":
        ordered = sorted(routes, key=lambda route: (
            stats.latency_ms.get((route.provider, route.model), 0.0), route.priority))
    else:
        ordered = weighted_order([(route, route.weight) for route in routes], rng)  # type: ignore[misc]
    return [Candidate(route.provider, route.model) for route in ordered]


def _bare_model_candidates(snapshot: object, key: object | None, model: str,
                           request_type: str, stats: RouteStats,
                           rng: random.Random) -> list[Candidate]:
    """A model named without its provider, in this order:

    1. the key's provider configs that list the model by name (weighted);
    2. a model alias of that name (its strategy), through the routes the key may use;
    3. the key's provider configs that allow every model (weighted), narrowed to those
       whose provider the price catalog knows the model for when some are (a key allowed
       everything on an OpenAI and an Anthropic provider sends ``gpt-4o`` to the first).

    An alias comes before "every model": otherwise no key allowed everything could use one,
    and its name would go to a provider as if it were a model.
    """
    providers = snapshot.providers  # type: ignore[attr-defined]
    configs = [config for config in key.provider_configs.values()  # type: ignore[attr-defined]
               if config.provider in providers and config.allows_model(model)
               ] if key is not None else []
    named = [config for config in configs if not config.allows_every_model]
    if named:
        return _weighted_configs(named, model, rng)
    alias = snapshot.aliases.get(model)  # type: ignore[attr-defined]
    if alias is not None and alias.routes:
        routes = _alias_order(alias, stats, rng)
        if key is None:
            return routes
        usable = [route for route in routes if _key_allows(key, route)]
        return usable or routes  # none usable: the first answers why (403)
    if len(configs) > 1:
        pricer = snapshot.pricer  # type: ignore[attr-defined]
        known = [config for config in configs
                 if pricer.resolve(config.provider, model, request_type).rates is not None]
        configs = known or configs
    return _weighted_configs(configs, model, rng)


def _weighted_configs(configs: Sequence[Any], model: str,
                      rng: random.Random) -> list[Candidate]:
    weighted = [(config.provider, config.weight if config.weight is not None else 1.0)
                for config in configs]
    return [Candidate(str(name), model) for name in weighted_order(weighted, rng)]


def _key_allows(key: object, candidate: Candidate) -> bool:
    config = key.provider_configs.get(candidate.provider)  # type: ignore[attr-defined]
    return config is not None and config.allows_model(candidate.model)


def parse_fallback(text: str, providers: Mapping[str, object]) -> Candidate | None:
    provider, model = split_model(text, providers)
    return Candidate(provider, model) if provider else None


def resolve(snapshot: object, engine: RoutingEngine, *, key: object | None, requested: str,
            request_type: str, headers: Mapping[str, str], query: Mapping[str, str],
            capacity: Callable[[str, str], Capacity], stats: RouteStats,
            rng: random.Random, request_fallbacks: Sequence[str] = ()) -> Resolution:
    """The candidates for a request, in order. ``headers`` has lower-case names (as ASGI
    gives them)."""
    providers = snapshot.providers  # type: ignore[attr-defined]
    provider, model = split_model(requested, providers)
    rule_id = rule_name = ""
    pinned = ""
    fallback_names: list[str] = []
    if engine.table.rule_count:
        result = engine.evaluate(RoutingContext(
            provider=provider, model=model, request_type=request_type,
            key=key.identity if key is not None else None,  # type: ignore[attr-defined]
            headers=headers, query_params=query, capacity=capacity, headers_lowercase=True))
        decision = result.decision
        if decision is not None:
            provider = decision.provider or provider
            model = decision.model or model
            if not provider:  # a rule may name a provider/model pair as its model
                provider, model = split_model(model, providers)
            pinned = decision.key_id
            fallback_names = list(decision.fallbacks)
            rule_id, rule_name = decision.rule_id, decision.rule_name
    candidates: list[Candidate] = []
    if provider:
        candidates.append(Candidate(provider, model, pinned))
    else:
        candidates = _bare_model_candidates(snapshot, key, model, request_type, stats, rng)
    if not candidates:
        raise ModelNotFound(
            f"Model '{requested}' not found: use 'provider/model', a model the virtual key's "
            f"provider configs allow, or a model alias")
    for text in (*fallback_names, *request_fallbacks):
        candidate = parse_fallback(text, providers)
        if candidate is not None and candidate not in candidates:
            candidates.append(candidate)
    return Resolution(tuple(candidates), rule_id, rule_name)
