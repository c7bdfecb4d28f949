"""The routing engine, table-driven, on both CEL engines (spec C1)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.cel import ENGINE_NAMES, get_engine
from routing.engine import (
    Capacity,
    KeyIdentity,
    Outcome,
    RoutingContext,
    RoutingEngine,
    RoutingTable,
    Target,
    select_weighted_target,
)

KEY = KeyIdentity(id="k1", name="prod", team_id="t1", team_name="research",
                  team_customer_id="c1", team_customer_name="acme")
T0 = datetime(2026, 1, 1)


def rule(rule_id, expression="true", *, targets=None, scope="global", scope_id="",
         priority=0, chain=False, fallbacks=(), enabled=True, created=0):
    return {
        "id": rule_id, "name": f"rule-{rule_id}", "cel_expression": expression,
        "targets": targets if targets is not None else [{"provider": "p", "model": rule_id,
                                                         "weight": 1.0}],
        "scope": scope, "scope_id": scope_id, "priority": priority, "chain_rule": chain,
        "fallbacks": list(fallbacks), "enabled": enabled,
        "created_at": T0 + timedelta(seconds=created),
    }


def route(rules, *, engine_name="cel-expr-python", key=KEY, provider="openai",
          model="gpt-4o", headers=None, params=None, capacity=None, max_depth=10, seed=1,
          request_type="chat_completion"):
    engine = get_engine(engine_name)
    router = RoutingEngine(RoutingTable.build(rules, engine=engine), engine=engine,
                           max_depth=max_depth, rng=random.Random(seed))
    context = RoutingContext(
        provider=provider, model=model, request_type=request_type, key=key,
        headers=headers or {}, query_params=params or {},
        capacity=(lambda p, m: capacity(p, m)) if capacity else (lambda p, m: Capacity()))
    return router.evaluate(context, trace=True)


@pytest.fixture(params=ENGINE_NAMES)
def engine_name(request):
    return request.param


CASES = [
    # (id, rules, request overrides, expected model or None)
    ("no rules", [], {}, None),
    ("empty expression matches", [rule("a", "")], {}, "a"),
    ("false does not match", [rule("a", "false")], {}, None),
    ("header match, case-insensitive name",
     [rule("a", 'headers["X-Tier"] == "premium"')], {"headers": {"x-tier": "premium"}}, "a"),
    ("header value is case-sensitive",
     [rule("a", 'headers["x-tier"] == "premium"')], {"headers": {"X-Tier": "Premium"}}, None),
    ("missing header is no match",
     [rule("a", 'headers["x-tier"] == "premium"'), rule("b", priority=1)], {}, "b"),
    ("missing key absorbed by ||",
     [rule("a", 'headers["missing"] == "a" || true')], {}, "a"),
    ("param match", [rule("a", 'params["region"] == "eu"')], {"params": {"Region": "eu"}}, "a"),
    ("budget_used > 80 with int literal",
     [rule("a", "budget_used > 80")], {"capacity": lambda p, m: Capacity(budget_used=80.5)}, "a"),
    ("budget_used > 80 below", [rule("a", "budget_used > 80")],
     {"capacity": lambda p, m: Capacity(budget_used=79.0)}, None),
    ("tokens and request percentages",
     [rule("a", "tokens_used >= 90.0 && request < 10.0")],
     {"capacity": lambda p, m: Capacity(tokens_used=95.0, request=5.0)}, "a"),
    ("priority orders within a scope",
     [rule("late", priority=5), rule("early", priority=1)], {}, "early"),
    ("priority ties broken by creation time",
     [rule("second", created=2), rule("first", created=1)], {}, "first"),
    ("creation ties broken by id", [rule("b"), rule("a")], {}, "a"),
    ("key scope beats better-priority global",
     [rule("global", priority=-100), rule("key", scope="virtual_key", scope_id="k1",
                                          priority=100)], {}, "key"),
    ("team beats customer beats global",
     [rule("customer", scope="customer", scope_id="c1"), rule("team", scope="team",
                                                             scope_id="t1"),
      rule("global")], {}, "team"),
    ("customer of the team", [rule("customer", scope="customer", scope_id="c1"),
                              rule("global")], {}, "customer"),
    ("other team's rule ignored", [rule("other", scope="team", scope_id="t2")], {}, None),
    ("disabled rule ignored", [rule("a", enabled=False), rule("b", priority=1)], {}, "b"),
    ("compile error skipped", [rule("bad", "model =="), rule("good", priority=1)], {}, "good"),
    ("non-boolean skipped", [rule("bad", "model"), rule("good", priority=1)], {}, "good"),
    ("no valid targets skipped",
     [rule("a", targets=[{"provider": "p", "model": "x", "weight": -1}]),
      rule("b", priority=1)], {}, "b"),
    ("empty targets skipped", [rule("a", targets=[]), rule("b", priority=1)], {}, "b"),
    ("team variables", [rule("a", 'team_name == "research" && customer_name == "acme"')],
     {}, "a"),
    ("no key: only global", [rule("key", scope="virtual_key", scope_id="k1"), rule("g")],
     {"key": None}, "g"),
    ("request type", [rule("a", 'request_type == "embedding"')],
     {"request_type": "embedding"}, "a"),
    ("startsWith and in", [rule("a", 'model.startsWith("gpt-") && provider in ["openai"]')],
     {}, "a"),
]


@pytest.mark.parametrize(("rules", "request_args", "expected"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_routing_table(engine_name, rules, request_args, expected):
    result = route(rules, engine_name=engine_name, **request_args)
    if expected is None:
        assert result.decision is None
    else:
        assert result.decision is not None
        assert result.decision.model == expected


def test_direct_customer_key_uses_customer_scope(engine_name):
    key = KeyIdentity(id="k2", name="direct", customer_id="c9", customer_name="solo")
    result = route([rule("c", 'customer_name == "solo"', scope="customer", scope_id="c9")],
                   engine_name=engine_name, key=key)
    assert result.decision.model == "c"


def test_team_without_customer_skips_direct_customer_scope(engine_name):
    # spec A5 DECIDE: the chain is [key, team, global], but customer_* come from the key
    key = KeyIdentity(id="k3", name="mixed", team_id="t1", team_name="research",
                      customer_id="c9", customer_name="solo")
    rules = [rule("customer-scope", scope="customer", scope_id="c9"),
             rule("global", 'customer_id == "c9"')]
    assert route(rules, engine_name=engine_name, key=key).decision.model == "global"


def test_target_without_provider_or_model_keeps_incoming(engine_name):
    result = route([rule("a", targets=[{"weight": 1.0}])], engine_name=engine_name)
    assert (result.decision.provider, result.decision.model) == ("openai", "gpt-4o")
    result = route([rule("a", targets=[{"model": "gpt-4o-mini", "key_id": "key-9",
                                        "weight": 1.0}])], engine_name=engine_name)
    decision = result.decision
    assert (decision.provider, decision.model, decision.key_id) == (
        "openai", "gpt-4o-mini", "key-9")


def test_fallbacks_belong_to_the_rule():
    result = route([rule("a", fallbacks=["azure/gpt-4o", "anthropic"])])
    assert result.decision.fallbacks == ("azure/gpt-4o", "anthropic")
    assert result.decision.rule_name == "rule-a"


# --- chains ------------------------------------------------------------------------------

def chain_rule(rule_id, source_model, target_model, *, chain=True, priority=0, key_id=None,
               fallbacks=()):
    target = {"provider": "openai", "model": target_model, "weight": 1.0}
    if key_id:
        target["key_id"] = key_id
    return rule(rule_id, f'model == "{source_model}"', targets=[target], chain=chain,
                priority=priority, fallbacks=fallbacks)


def test_chain_follows_until_terminal_rule(engine_name):
    rules = [chain_rule("ab", "a", "b", key_id="pinned", fallbacks=["x/y"]),
             chain_rule("bc", "b", "c", chain=False)]
    result = route(rules, engine_name=engine_name, model="a")
    assert result.decision.model == "c"
    assert result.decision.rule_id == "bc"
    # last match wins for every field: the terminal rule had no key pin and no fallbacks
    assert result.decision.key_id == ""
    assert result.decision.fallbacks == ()
    assert result.steps == 2


def test_chain_stops_when_nothing_matches(engine_name):
    result = route([chain_rule("ab", "a", "b")], engine_name=engine_name, model="a")
    assert result.decision.model == "b"
    assert result.steps == 2


def test_chain_stops_on_cycle(engine_name):
    rules = [chain_rule("ab", "a", "b"), chain_rule("ba", "b", "a")]
    result = route(rules, engine_name=engine_name, model="a")
    assert result.decision.model == "a"
    assert result.decision.rule_id == "ba"
    assert any("cycle" in line for line in result.log)


def test_self_loop_stops_at_once(engine_name):
    result = route([chain_rule("aa", "a", "a")], engine_name=engine_name, model="a")
    assert result.decision.rule_id == "aa"
    assert result.steps == 1


@pytest.mark.parametrize(("max_depth", "expected_model"), [(1, "m1"), (2, "m2"), (3, "m3")])
def test_chain_stops_at_max_depth(engine_name, max_depth, expected_model):
    rules = [chain_rule(f"r{i}", f"m{i}", f"m{i + 1}") for i in range(10)]
    result = route(rules, engine_name=engine_name, model="m0", max_depth=max_depth)
    assert result.decision.model == expected_model
    assert any("max depth" in line for line in result.log)


def test_chain_sees_capacity_of_the_new_target():
    seen = []

    def capacity(provider, model):
        seen.append(model)
        return Capacity(budget_used=95.0 if model == "b" else 0.0)

    rules = [chain_rule("ab", "a", "b"),
             rule("overflow", 'model == "b" && budget_used > 90.0',
                  targets=[{"model": "c", "weight": 1.0}])]
    result = route(rules, model="a", capacity=capacity)
    assert result.decision.model == "c"
    assert seen == ["a", "b"]


def test_max_depth_is_read_live():
    depth = {"value": 1}
    engine = get_engine("cel-expr-python")
    rules = [chain_rule(f"r{i}", f"m{i}", f"m{i + 1}") for i in range(5)]
    router = RoutingEngine(RoutingTable.build(rules, engine=engine), engine=engine,
                           max_depth=lambda: depth["value"])
    context = RoutingContext(provider="openai", model="m0")
    assert router.evaluate(context).decision.model == "m1"
    depth["value"] = 3
    assert router.evaluate(context).decision.model == "m3"


def test_trace_explains_each_rule():
    rules = [rule("bad", "model =="), rule("miss", 'headers["x"] == "y"', priority=1),
             rule("no", "false", priority=2), rule("yes", priority=3)]
    result = route(rules)
    outcomes = [(entry.rule_id, entry.outcome) for entry in result.trace]
    assert outcomes == [("bad", Outcome.COMPILE_ERROR), ("miss", Outcome.MISSING_KEY),
                        ("no", Outcome.NO_MATCH), ("yes", Outcome.MATCHED)]
    assert "CEL compile error" in result.trace[0].detail
    assert "selected target" in result.trace[-1].detail


def test_evaluation_error_skips_only_that_rule():
    rules = [rule("div", "1 / (size(headers) - size(headers)) == 1", priority=0),
             rule("ok", priority=1)]
    result = route(rules, headers={"a": "b"})
    assert result.decision.rule_id == "ok"


# --- weights -----------------------------------------------------------------------------

def test_zero_weight_never_picked_when_others_positive():
    targets = (Target("p", "zero", None, 0.0), Target("p", "one", None, 1.0))
    rng = random.Random(3)
    assert {select_weighted_target(targets, rng).model for _ in range(500)} == {"one"}


def test_all_zero_weights_pick_uniformly():
    targets = tuple(Target("p", f"m{i}", None, 0.0) for i in range(3))
    rng = random.Random(5)
    counts = Counter(select_weighted_target(targets, rng).model for _ in range(3000))
    assert set(counts) == {"m0", "m1", "m2"}
    assert min(counts.values()) > 850


def test_negative_weights_are_ignored():
    targets = (Target("p", "neg", None, -1.0), Target("p", "pos", None, 0.2))
    assert select_weighted_target(targets, random.Random(1)).model == "pos"
    assert select_weighted_target((Target("p", "neg", None, -1.0),), random.Random(1)) is None


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=20), min_size=2, max_size=5),
       st.integers(min_value=0, max_value=10_000))
def test_empirical_frequencies_match_weights(weights, seed):
    targets = tuple(Target("p", f"m{i}", None, float(w)) for i, w in enumerate(weights))
    rng = random.Random(seed)
    draws = 6000
    counts = Counter(select_weighted_target(targets, rng).model for _ in range(draws))
    total = sum(weights)
    for index, weight in enumerate(weights):
        expected = draws * weight / total
        # five standard deviations of a binomial: fails by chance far less than 1 in 10^5
        tolerance = 5 * (draws * (weight / total) * (1 - weight / total)) ** 0.5
        assert abs(counts[f"m{index}"] - expected) <= tolerance + 1
