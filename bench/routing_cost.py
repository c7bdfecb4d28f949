"""Routing and cost benchmarks: median microseconds per operation, in one process.

    python -m bench.routing_cost

Routing: a scope chain (key → team → customer → global) holding 50 realistic rules (header,
model, team and capacity conditions), evaluated for a request that matches no rule and for
one that matches the last rule, with each CEL engine. The baseline of the same run is the
cost of preparing the CEL variables once (the fixed part of every evaluation).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

from routing.cel import ENGINE_NAMES, get_engine
from routing.engine import Capacity, KeyIdentity, RoutingContext, RoutingEngine, RoutingTable

KEY = KeyIdentity(id="key-1", name="prod-key", team_id="team-1", team_name="research",
                  team_customer_id="cust-1", team_customer_name="acme")
SCOPES = [("virtual_key", "key-1"), ("team", "team-1"), ("customer", "cust-1"), ("global", "")]
CONDITIONS = [
    'headers["x-tier"] == "tier-{i}"',
    'model == "model-{i}" && provider == "openai"',
    'team_name == "team-{i}" && budget_used > 80',
    'model.startsWith("family-{i}-") || headers["x-region"] == "region-{i}"',
    'request_type == "embedding" && tokens_used >= 9{i}.5',
]


def build_rules(count: int = 50) -> list[dict[str, object]]:
    rules = []
    for index in range(count - 1):
        scope, scope_id = SCOPES[index % len(SCOPES)]
        rules.append({
            "id": f"rule-{index:03d}", "name": f"rule {index}",
            "cel_expression": CONDITIONS[index % len(CONDITIONS)].format(i=index),
            "targets": [{"provider": "azure", "model": "gpt-4o", "weight": 0.7},
                        {"provider": "openai", "model": "gpt-4o", "weight": 0.3}],
            "scope": scope, "scope_id": scope_id, "priority": index,
        })
    rules.append({
        "id": "rule-late", "name": "late match", "scope": "global", "scope_id": "",
        "cel_expression": 'headers["x-tier"] == "late" && budget_used < 50.0',
        "targets": [{"provider": "anthropic", "model": "claude-sonnet-4-5", "weight": 1.0}],
        "priority": 10_000,
    })
    return rules


def median_us(function: Callable[[], object], *, repeat: int = 7, number: int = 300) -> float:
    for _ in range(50):
        function()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            function()
        samples.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(samples)


def _capacity(provider: str, model: str) -> Capacity:
    return Capacity(budget_used=12.5, tokens_used=3.0)


def engine_figures(name: str) -> list[tuple[str, float]]:
    engine = get_engine(name)
    table = RoutingTable.build(build_rules(), engine=engine)
    router = RoutingEngine(table, engine=engine, rng=random.Random(7))
    headers = {"x-tier": "none", "x-region": "nowhere", "user-agent": "bench"}
    no_match = RoutingContext(provider="openai", model="gpt-4o", request_type="chat_completion",
                              key=KEY, capacity=_capacity, headers=headers)
    late = RoutingContext(provider="openai", model="gpt-4o", request_type="chat_completion",
                          key=KEY, capacity=_capacity, headers={**headers, "x-tier": "late"})
    assert router.evaluate(no_match).decision is None
    assert router.evaluate(late).decision.rule_id == "rule-late"
    variables = {"headers": headers, "model": "gpt-4o", "provider": "openai"}
    number = 300 if name == "cel-expr-python" else 10
    return [
        (f"{name}: 50 rules, no match", median_us(lambda: router.evaluate(no_match),
                                                  number=number)),
        (f"{name}: 50 rules, late match", median_us(lambda: router.evaluate(late),
                                                    number=number)),
        (f"{name}: baseline (prepare variables once)", median_us(
            lambda: engine.prepare(variables), number=number)),
    ]


def routing_figures() -> list[tuple[str, float]]:
    return [figure for name in ENGINE_NAMES for figure in engine_figures(name)]


def _print(title: str, figures: list[tuple[str, float]]) -> None:
    """Each figure with its ratio to the nearest preceding-or-following baseline row."""
    print(title)
    baselines = [value for label, value in figures if "baseline" in label]
    for label, value in figures:
        baseline = next((value_b for label_b, value_b in figures
                         if "baseline" in label_b and label_b.split(":")[0] == label.split(":")[0]),
                        baselines[-1] if baselines else None)
        ratio = f"x{value / baseline:8.2f} of baseline" if baseline else ""
        print(f"  {label:<52} {value:10.2f}  {ratio}")


def main() -> None:
    _print("Routing (median µs per request)", routing_figures())
    from bench.cost import cost_figures

    _print("Cost (median µs per computation, after warm-up)", cost_figures())


if __name__ == "__main__":
    main()
