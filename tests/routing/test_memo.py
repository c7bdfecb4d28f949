"""Memoised rule outcomes are exactly the outcomes of evaluating the rule."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.cel import get_engine
from routing.engine import KeyIdentity, RoutingContext, RoutingEngine, RoutingTable
from routing.memo import reads


@pytest.mark.parametrize(("expression", "expected"), [
    ('model == "gpt-4o"', (("model", None),)),
    ('headers["x-tier"] == "gold"', (("headers", "x-tier"),)),
    ("headers['x-a'] == 'b' && params[\"p\"] == \"q\"", (("headers", "x-a"), ("params", "p"))),
    ('team_name == "model" || budget_used > 80.0', (("budget_used", None), ("team_name", None))),
    ('"x" in headers', None),
    ("headers.exists(k, k == 'a')", None),
    ("headers[model] == 'a'", None),
    ('headers["a\\"b"] == "x"', None),
    ("size(params) > 0", None),
    ('"model" == "model"', ()),
])
def test_reads(expression, expected):
    assert reads(expression) == expected


RULES = [
    'headers["x-tier"] == "gold"',
    'model == "gpt-4o" && request > 50.0',
    'team_name == "research" || headers["x-team"] == "r"',
    '"beta" in headers',
    'params["region"] == "eu" && budget_used >= 80.0',
]


def _table(engine, rules=RULES):
    return RoutingTable.build([
        {"id": f"r{index}", "name": f"rule {index}", "cel_expression": expression,
         "scope": "global", "priority": index,
         "targets": [{"provider": "p", "model": f"m{index}", "weight": 1.0}]}
        for index, expression in enumerate(rules)], engine=engine)


# With '"beta" in headers' the chain is not memoisable as a whole (only rule by rule);
# without it, the per-chain memo answers.
RULE_SETS = pytest.mark.parametrize("rules", [RULES, [rule for rule in RULES
                                                      if "in headers" not in rule]],
                                    ids=["rule-memo", "chain-memo"])


@RULE_SETS
@settings(max_examples=150, deadline=None)
@given(contexts=st.lists(st.fixed_dictionaries({
    "model": st.sampled_from(["gpt-4o", "gpt-4o-mini"]),
    "headers": st.dictionaries(st.sampled_from(["x-tier", "x-team", "beta"]),
                               st.sampled_from(["gold", "r", ""]), max_size=3),
    "params": st.dictionaries(st.just("region"), st.sampled_from(["eu", "us"]), max_size=1),
    "team": st.sampled_from(["research", "ops"]),
    "budget": st.sampled_from([0.0, 80.0, 95.5]),
    "request": st.sampled_from([10.0, 60.0]),
}), min_size=1, max_size=12))
def test_memoised_decisions_equal_fresh_evaluations(rules, contexts):
    from routing.engine import Capacity

    cel = get_engine()
    table = _table(cel, rules)
    memoised = RoutingEngine(table, engine=cel, rng=random.Random(0))
    for values in contexts:
        context = RoutingContext(
            provider="", model=values["model"], headers=values["headers"],
            query_params=values["params"],
            key=KeyIdentity("k", "key", team_id="t", team_name=values["team"]),
            capacity=lambda provider, model, v=values: Capacity(v["budget"], 0.0, v["request"]))
        fresh = RoutingEngine(table, engine=cel, rng=random.Random(0)).evaluate(context)
        assert memoised.evaluate(context).decision == fresh.decision
    chain_plans = list(memoised._plans.values())
    assert all(plan.readers is not None for plan in chain_plans) == (rules is not RULES)


def _single_rule_engine(expression):
    cel = get_engine()
    table = RoutingTable.build([
        {"id": "r", "name": "only", "cel_expression": expression, "scope": "global",
         "priority": 0, "targets": [{"provider": "p", "model": "routed", "weight": 1.0}]}],
        engine=cel)
    return RoutingEngine(table, engine=cel, rng=random.Random(0))


def test_capacity_is_computed_only_when_a_rule_may_read_it():
    from routing.engine import Capacity

    calls = []

    def capacity(provider, model):
        calls.append((provider, model))
        return Capacity(budget_used=90.0)

    engine = _single_rule_engine('headers["x-tier"] == "gold"')
    context = RoutingContext(provider="", model="m", headers={"x-tier": "gold"},
                             capacity=capacity)
    for _ in range(3):
        assert engine.evaluate(context).decision.model == "routed"
    assert calls == [("", "m")]  # once, to evaluate the rule; then the memo answers


def test_capacity_read_by_a_rule_is_current_on_every_request():
    from routing.engine import Capacity

    used = {"value": 90.0}
    engine = _single_rule_engine("budget_used > 80.0")
    context = RoutingContext(provider="", model="m",
                             capacity=lambda provider, model: Capacity(used["value"]))
    assert engine.evaluate(context).decision is not None
    used["value"] = 10.0
    assert engine.evaluate(context).decision is None
    used["value"] = 81.0
    assert engine.evaluate(context).decision is not None


def test_the_log_is_written_for_traces_only():
    engine = _single_rule_engine('model == "m"')
    context = RoutingContext(provider="", model="m", key=KeyIdentity("k", "key"))
    assert engine.evaluate(context).log == ()
    traced = engine.evaluate(context, trace=True)
    assert traced.log[0] == "Scope chain: [virtual_key(k) global]"
    assert any("matched" in line for line in traced.log)


def test_the_engine_reads_exactly_the_declared_variables():
    from routing.cel import DECLARED_VARIABLES
    from routing.engine import _VARIABLES

    assert set(_VARIABLES) == set(DECLARED_VARIABLES)


@pytest.mark.parametrize("expression", [
    'customer_name == "acme" && virtual_key_name == "key"',
    'virtual_key_id == "k" && team_id == "t" && customer_id == "c"',
    'request_type == "chat_completion" && params["region"] == "eu"',
    'provider == "" && tokens_used < 1.0 && request < 1.0',
])
def test_memoised_reads_of_each_variable_match_fresh_evaluation(expression):
    key = KeyIdentity("k", "key", team_id="t", team_name="research",
                      team_customer_id="c", team_customer_name="acme")
    context = RoutingContext(provider="", model="m", request_type="chat_completion",
                             key=key, query_params={"Region": "eu"})
    engine = _single_rule_engine(expression)
    traced = engine.evaluate(context, trace=True)  # fresh: evaluates the CEL program
    assert traced.decision is not None
    for _ in range(2):  # the memo answers the second time
        assert engine.evaluate(context).decision == traced.decision
