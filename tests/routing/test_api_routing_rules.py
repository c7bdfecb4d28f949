"""Routing-rule API over HTTP: shapes, listing, partial update, delete, auth and audit
(spec 4.7, section 5 RoutingRule). Validation tables are in test_api_routing_validation."""

from __future__ import annotations

import uuid
from typing import Any
from unittest.mock import ANY

import pytest

from gateway.models import AuditEvent, ProviderKind
from routing.models import RoutingRule, RoutingTarget
from tests.factories import (
    CustomerFactory,
    ProviderFactory,
    ProviderKeyFactory,
    RoutingRuleFactory,
    RoutingTargetFactory,
    TeamFactory,
    VirtualKeyFactory,
)

pytestmark = pytest.mark.django_db

URL = "/api/governance/routing-rules"


def detail(rule_id: Any) -> str:
    return f"{URL}/{rule_id}"


@pytest.fixture
def openai():
    return ProviderFactory(name="openai")


@pytest.fixture
def anthropic():
    return ProviderFactory(name="anthropic", kind=ProviderKind.ANTHROPIC)


def body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "premium",
        "targets": [{"provider": "openai", "model": "gpt-4o", "weight": 1}],
    }
    data.update(overrides)
    return data


def create(api, **overrides: Any) -> dict[str, Any]:
    response = api.post(URL, body(**overrides), format="json")
    assert response.status_code == 200, response.json()
    return response.json()["rule"]


# --- create ------------------------------------------------------------------------------

def test_create_returns_the_full_rule(api, openai, anthropic):
    key = ProviderKeyFactory(provider=openai)
    team = TeamFactory()
    response = api.post(URL, {
        "name": "premium to azure",
        "description": "premium tier",
        "enabled": False,
        "chain_rule": True,
        "cel_expression": 'headers["X-Tier"] == "premium" && budget_used > 80',
        "targets": [
            {"provider": "openai", "model": "gpt-4o", "key_id": str(key.id), "weight": 0.7},
            {"provider": "anthropic", "model": None, "weight": 0.2},
            {"weight": 0.1},
        ],
        "fallbacks": ["openai/gpt-4o-mini", "anthropic"],
        "query": {"combinator": "and", "rules": []},
        "scope": "team",
        "scope_id": str(team.id),
        "priority": 3,
    }, format="json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    payload = response.json()
    assert payload == {"message": "Routing rule created successfully", "rule": ANY}
    assert payload["rule"] == {
        "id": ANY,
        "name": "premium to azure",
        "description": "premium tier",
        "enabled": False,
        "chain_rule": True,
        "cel_expression": 'headers["X-Tier"] == "premium" && budget_used > 80',
        "targets": [
            {"provider": "openai", "model": "gpt-4o", "key_id": str(key.id), "weight": 0.7},
            {"provider": "anthropic", "model": None, "key_id": None, "weight": 0.2},
            {"provider": None, "model": None, "key_id": None, "weight": 0.1},
        ],
        "fallbacks": ["openai/gpt-4o-mini", "anthropic"],
        "query": {"combinator": "and", "rules": []},
        "scope": "team",
        "scope_id": str(team.id),
        "priority": 3,
        "config_hash": "",
        "created_at": ANY,
        "updated_at": ANY,
    }
    rule = RoutingRule.objects.get(pk=payload["rule"]["id"])
    assert rule.team == team
    assert [(t.position, t.provider, t.model, t.key, t.weight) for t in rule.targets.all()] == [
        (0, openai, "gpt-4o", key, 0.7), (1, anthropic, "", None, 0.2), (2, None, "", None, 0.1),
    ]


def test_create_defaults(api, openai):
    rule = create(api)
    assert rule == {
        "id": ANY, "name": "premium", "description": "", "enabled": True, "chain_rule": False,
        "cel_expression": "",
        "targets": [{"provider": "openai", "model": "gpt-4o", "key_id": None, "weight": 1.0}],
        "fallbacks": [], "query": None, "scope": "global", "scope_id": None, "priority": 0,
        "config_hash": "", "created_at": ANY, "updated_at": ANY,
    }
    assert rule["created_at"].endswith("Z")


def test_create_with_nulls_uses_defaults(api, openai):
    rule = create(api, description=None, enabled=None, chain_rule=None, cel_expression=None,
                  fallbacks=None, query=None, scope=None, scope_id=None, priority=None)
    assert (rule["description"], rule["enabled"], rule["chain_rule"], rule["cel_expression"],
            rule["fallbacks"], rule["query"], rule["scope"], rule["scope_id"],
            rule["priority"]) == ("", True, False, "", [], None, "global", None, 0)


def test_empty_ids_are_normalised_to_null(api, openai):
    rule = create(api, scope="", scope_id="",
                  targets=[{"provider": "", "model": "", "key_id": "", "weight": 1}])
    assert rule["targets"] == [{"provider": None, "model": None, "key_id": None, "weight": 1.0}]
    assert (rule["scope"], rule["scope_id"]) == ("global", None)


def test_global_scope_ignores_a_scope_id(api, openai):
    rule = create(api, scope="global", scope_id=str(TeamFactory().id))
    assert rule["scope_id"] is None
    assert RoutingRule.objects.get().team is None


@pytest.mark.parametrize("scope", ["team", "customer", "virtual_key"])
def test_create_in_each_scope(api, openai, scope):
    owner = {"team": TeamFactory, "customer": CustomerFactory,
             "virtual_key": VirtualKeyFactory}[scope]()
    rule = create(api, scope=scope, scope_id=str(owner.id))
    assert (rule["scope"], rule["scope_id"]) == (scope, str(owner.id))
    assert getattr(RoutingRule.objects.get(), scope) == owner


def test_provider_name_is_case_insensitive(api, openai):
    rule = create(api, targets=[{"provider": "OpenAI", "model": "GPT-4o", "weight": 1}])
    assert rule["targets"][0]["provider"] == "openai"
    assert rule["targets"][0]["model"] == "GPT-4o"


def test_weight_zero_is_allowed(api, openai, anthropic):
    rule = create(api, targets=[{"provider": "openai", "weight": 1},
                                {"provider": "anthropic", "weight": 0}])
    assert [target["weight"] for target in rule["targets"]] == [1.0, 0.0]


def test_from_memory_is_ignored(api, openai):
    rule = create(api)
    response = api.get(detail(rule["id"]), {"from_memory": "true"})
    assert response.json() == {"rule": rule}


# --- read --------------------------------------------------------------------------------

def test_get_one(api, openai):
    rule = create(api)
    response = api.get(detail(rule["id"]))
    assert response.status_code == 200
    assert response.json() == {"rule": rule}


@pytest.mark.parametrize("method", ["get", "put", "delete"])
@pytest.mark.parametrize("rule_id", [str(uuid.uuid4()), "not-a-uuid", "1", "validate"],
                         ids=["unknown", "malformed", "integer", "word"])
def test_unknown_or_malformed_id_is_404(api, method, rule_id):
    response = getattr(api, method)(detail(rule_id), {"name": "x"}, format="json")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"message": "Routing rule not found", "type": "not_found_error",
                  "fields": {}},
        "status_code": 404,
    }


def test_list_is_ordered_by_scope_priority_and_age(api):
    team = TeamFactory()
    late = RoutingRuleFactory(name="global-5", priority=5)
    first = RoutingRuleFactory(name="global-1a", priority=1)
    second = RoutingRuleFactory(name="global-1b", priority=1)
    scoped = RoutingRuleFactory(name="team-0", priority=0, scope="team", team=team)
    customer = RoutingRuleFactory(name="customer-9", priority=9, scope="customer",
                                  customer=CustomerFactory())
    negative = RoutingRuleFactory(name="global-neg", priority=-1)
    response = api.get(URL)
    assert response.status_code == 200
    names = [rule["name"] for rule in response.json()["rules"]]
    assert names == [rule.name for rule in (customer, negative, first, second, late, scoped)]


def test_list_envelope_without_pagination(api):
    RoutingRuleFactory.create_batch(3)
    payload = api.get(URL).json()
    assert {key: payload[key] for key in ("count", "total_count", "limit", "offset")} == {
        "count": 3, "total_count": 3, "limit": 3, "offset": 0}


def test_empty_list_is_an_empty_array(api):
    assert api.get(URL).json() == {"rules": [], "count": 0, "total_count": 0, "limit": 0,
                                   "offset": 0}


def test_list_pagination(api):
    for priority in range(5):
        RoutingRuleFactory(name=f"rule-{priority}", priority=priority)
    payload = api.get(URL, {"limit": 2, "offset": 1}).json()
    assert [rule["name"] for rule in payload["rules"]] == ["rule-1", "rule-2"]
    assert (payload["count"], payload["total_count"], payload["limit"], payload["offset"]) == (
        2, 5, 2, 1)


def test_list_search_is_case_insensitive_and_paginates(api):
    RoutingRuleFactory(name="Premium EU")
    RoutingRuleFactory(name="premium-us")
    RoutingRuleFactory(name="cheap")
    payload = api.get(URL, {"search": "PREMIUM"}).json()
    assert sorted(rule["name"] for rule in payload["rules"]) == ["Premium EU", "premium-us"]
    assert (payload["total_count"], payload["limit"]) == (2, 25)


def test_list_by_scope_and_scope_id_is_not_paginated(api):
    team, other = TeamFactory(), TeamFactory()
    mine = RoutingRuleFactory.create_batch(3, scope="team", team=team)
    RoutingRuleFactory(scope="team", team=other)
    RoutingRuleFactory()
    payload = api.get(URL, {"scope": "team", "scope_id": str(team.id), "limit": 1}).json()
    assert sorted(rule["id"] for rule in payload["rules"]) == sorted(str(r.id) for r in mine)
    assert (payload["count"], payload["total_count"], payload["limit"], payload["offset"]) == (
        3, 3, 3, 0)
    assert len(api.get(URL, {"scope": "team"}).json()["rules"]) == 4
    assert len(api.get(URL, {"scope": "global"}).json()["rules"]) == 1
    assert len(api.get(URL, {"scope_id": str(other.id)}).json()["rules"]) == 1


@pytest.mark.parametrize(("params", "field"), [
    pytest.param({"scope": "everyone"}, "scope", id="unknown-scope"),
    pytest.param({"scope_id": "not-a-uuid"}, "scope_id", id="malformed-scope-id"),
    pytest.param({"limit": "ten"}, "limit", id="limit-not-a-number"),
    pytest.param({"limit": "-1"}, "limit", id="negative-limit"),
    pytest.param({"offset": "1.5"}, "offset", id="offset-not-an-integer"),
    pytest.param({"offset": "-3"}, "offset", id="negative-offset"),
])
def test_list_rejects_bad_query_parameters(api, params, field):
    response = api.get(URL, params)
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


def test_list_limit_messages_follow_the_spec(api):
    assert api.get(URL, {"limit": "x"}).json()["error"]["message"] == (
        "Invalid limit parameter: must be a number")
    assert api.get(URL, {"offset": "-1"}).json()["error"]["message"] == (
        "Invalid offset parameter: must be non-negative")


# --- update ------------------------------------------------------------------------------

def test_update_is_partial(api, openai):
    rule = create(api, description="d", priority=2, fallbacks=["openai"], query={"a": 1},
                  cel_expression='model == "gpt-4o"')
    response = api.put(detail(rule["id"]), {"enabled": False}, format="json")
    assert response.status_code == 200
    payload = response.json()
    assert payload["message"] == "Routing rule updated successfully"
    assert payload["rule"] == {**rule, "enabled": False, "updated_at": ANY}


def test_update_sets_every_field(api, openai, anthropic):
    rule = create(api)
    customer = CustomerFactory()
    response = api.put(detail(rule["id"]), {
        "name": "renamed", "description": "new", "enabled": False, "chain_rule": True,
        "cel_expression": "budget_used > 80",
        "targets": [{"provider": "anthropic", "model": "claude", "weight": 1}],
        "fallbacks": ["openai/gpt-4o"], "query": {"q": True}, "scope": "customer",
        "scope_id": str(customer.id), "priority": -4,
    }, format="json")
    assert response.status_code == 200
    assert response.json()["rule"] == {
        **rule, "name": "renamed", "description": "new", "enabled": False, "chain_rule": True,
        "cel_expression": "budget_used > 80",
        "targets": [{"provider": "anthropic", "model": "claude", "key_id": None, "weight": 1.0}],
        "fallbacks": ["openai/gpt-4o"], "query": {"q": True}, "scope": "customer",
        "scope_id": str(customer.id), "priority": -4, "updated_at": ANY,
    }


@pytest.mark.parametrize("field", ["description", "enabled", "chain_rule", "cel_expression",
                                   "targets", "fallbacks", "query", "scope", "priority",
                                   "name"])
def test_update_null_keeps_the_value(api, openai, field):
    team = TeamFactory()
    rule = create(api, description="d", enabled=False, chain_rule=True, priority=7,
                  cel_expression="budget_used > 80", fallbacks=["openai"], query={"k": 1},
                  scope="team", scope_id=str(team.id))
    response = api.put(detail(rule["id"]), {field: None}, format="json")
    assert response.status_code == 200
    assert response.json()["rule"] == {**rule, "updated_at": ANY}


@pytest.mark.parametrize("name", ["", "   "], ids=["empty", "blank"])
def test_update_ignores_an_empty_name(api, openai, name):
    rule = create(api)
    response = api.put(detail(rule["id"]), {"name": name}, format="json")
    assert response.status_code == 200
    assert response.json()["rule"]["name"] == "premium"


def test_update_replaces_all_targets(api, openai, anthropic):
    rule = create(api, targets=[{"provider": "openai", "weight": 0.5},
                                {"provider": "anthropic", "weight": 0.5}])
    old_ids = set(RoutingTarget.objects.values_list("id", flat=True))
    response = api.put(detail(rule["id"]), {"targets": [
        {"provider": "anthropic", "model": "claude", "weight": 0.25},
        {"model": "gpt-4o-mini", "weight": 0.75},
    ]}, format="json")
    assert response.status_code == 200
    assert response.json()["rule"]["targets"] == [
        {"provider": "anthropic", "model": "claude", "key_id": None, "weight": 0.25},
        {"provider": None, "model": "gpt-4o-mini", "key_id": None, "weight": 0.75},
    ]
    assert not old_ids & set(RoutingTarget.objects.values_list("id", flat=True))
    assert RoutingTarget.objects.count() == 2


def test_update_fallbacks_empty_list_clears(api, openai):
    rule = create(api, fallbacks=["openai/gpt-4o-mini"])
    response = api.put(detail(rule["id"]), {"fallbacks": []}, format="json")
    assert response.json()["rule"]["fallbacks"] == []


def test_update_query_empty_object_is_stored(api, openai):
    rule = create(api, query={"a": 1})
    response = api.put(detail(rule["id"]), {"query": {}}, format="json")
    assert response.json()["rule"]["query"] == {}


def test_update_cel_expression_may_be_emptied(api, openai):
    rule = create(api, cel_expression="budget_used > 80")
    response = api.put(detail(rule["id"]), {"cel_expression": ""}, format="json")
    assert response.json()["rule"]["cel_expression"] == ""


def test_switching_to_global_clears_the_owner(api, openai):
    team = TeamFactory()
    rule = create(api, scope="team", scope_id=str(team.id))
    response = api.put(detail(rule["id"]), {"scope": "global"}, format="json")
    assert response.status_code == 200
    assert (response.json()["rule"]["scope"], response.json()["rule"]["scope_id"]) == (
        "global", None)
    assert RoutingRule.objects.get().team is None


def test_switching_scope_with_an_owner(api, openai):
    rule = create(api)
    key = VirtualKeyFactory()
    response = api.put(detail(rule["id"]), {"scope": "virtual_key", "scope_id": str(key.id)},
                       format="json")
    assert response.status_code == 200
    assert response.json()["rule"]["scope_id"] == str(key.id)
    assert RoutingRule.objects.get().virtual_key == key


@pytest.mark.parametrize("payload", [{}, {"scope": "team"}, {"scope": ""}, {"priority": 4}])
def test_update_without_scope_id_keeps_the_owner(api, openai, payload):
    team = TeamFactory()
    rule = create(api, scope="team", scope_id=str(team.id))
    response = api.put(detail(rule["id"]), payload, format="json")
    assert response.status_code == 200
    assert (response.json()["rule"]["scope"], response.json()["rule"]["scope_id"]) == (
        "team", str(team.id))


def test_moving_to_another_owner_of_the_same_scope(api, openai):
    first, second = TeamFactory(), TeamFactory()
    rule = create(api, scope="team", scope_id=str(first.id))
    response = api.put(detail(rule["id"]), {"scope_id": str(second.id)}, format="json")
    assert response.json()["rule"]["scope_id"] == str(second.id)


@pytest.mark.parametrize(("start", "payload"), [
    pytest.param("global", {"scope": "team"}, id="global-to-team-without-id"),
    pytest.param("team", {"scope": "customer"}, id="team-to-customer-keeps-no-stale-id"),
    pytest.param("team", {"scope_id": None}, id="null-scope-id"),
    pytest.param("team", {"scope_id": ""}, id="empty-scope-id"),
    pytest.param("team", {"scope": "team", "scope_id": "  "}, id="blank-scope-id"),
])
def test_update_requires_a_scope_id_for_non_global_scopes(api, openai, start, payload):
    team = TeamFactory()
    rule = create(api, scope=start, scope_id=str(team.id))
    response = api.put(detail(rule["id"]), payload, format="json")
    assert response.status_code == 400
    message = "scope_id field is required when scope is not global"
    assert response.json()["error"]["message"] == message
    assert response.json()["error"]["fields"] == {"scope_id": [message]}
    assert api.get(detail(rule["id"])).json()["rule"] == rule


def test_failed_update_changes_nothing(api, openai, anthropic):
    rule = create(api)
    response = api.put(detail(rule["id"]), {
        "name": "renamed", "priority": 9,
        "targets": [{"provider": "anthropic", "weight": 1}],
        "scope": "team", "scope_id": str(uuid.uuid4()),
    }, format="json")
    assert response.status_code == 400
    assert api.get(detail(rule["id"])).json()["rule"] == rule
    assert AuditEvent.objects.filter(action="update").count() == 0


# --- delete ------------------------------------------------------------------------------

def test_delete_removes_the_rule_and_its_targets(api, openai):
    rule = create(api)
    response = api.delete(detail(rule["id"]))
    assert response.status_code == 200
    assert response.json() == {"message": "Routing rule deleted successfully"}
    assert not RoutingRule.objects.exists()
    assert not RoutingTarget.objects.exists()
    assert api.delete(detail(rule["id"])).status_code == 404


def test_deleting_the_owner_deletes_its_rules(api, openai):
    team = TeamFactory()
    create(api, scope="team", scope_id=str(team.id))
    team.delete()
    assert api.get(URL).json()["rules"] == []


# --- audit and config version ------------------------------------------------------------

def test_writes_are_audited_with_their_targets(api, openai, anthropic):
    rule = create(api)
    api.put(detail(rule["id"]), {"targets": [{"provider": "anthropic", "weight": 1}]},
            format="json")
    api.delete(detail(rule["id"]))
    events = list(AuditEvent.objects.filter(object_id=rule["id"]).order_by("created_at"))
    assert [(e.action, e.actor_name, e.source, e.object_type) for e in events] == [
        ("create", "operator", "api", "routingrule"),
        ("update", "operator", "api", "routingrule"),
        ("delete", "operator", "api", "routingrule"),
    ]
    create_event, update_event, delete_event = events
    assert create_event.changes["name"] == [None, "premium"]
    assert create_event.changes["targets"][1] == [
        {"provider": "openai", "model": "gpt-4o", "key_id": None, "weight": 1.0}]
    assert set(update_event.changes) == {"targets"}
    assert update_event.changes["targets"][1] == [
        {"provider": "anthropic", "model": None, "key_id": None, "weight": 1.0}]
    assert delete_event.changes["targets"][0] == update_event.changes["targets"][1]


def test_an_update_that_changes_nothing_is_not_audited(api, openai):
    rule = create(api)
    api.put(detail(rule["id"]), {"name": "premium"}, format="json")
    assert AuditEvent.objects.filter(action="update").count() == 0


def test_writes_bump_the_config_version_on_commit(api, openai,
                                                   django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        rule = create(api)
    assert len(callbacks) == 1
    with django_capture_on_commit_callbacks() as callbacks:
        api.put(detail(rule["id"]), {"priority": 1}, format="json")
    assert len(callbacks) == 1
    with django_capture_on_commit_callbacks() as callbacks:
        api.delete(detail(rule["id"]))
    assert len(callbacks) == 1


def test_a_rejected_write_does_not_bump_the_config_version(
        api, openai, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = api.post(URL, body(cel_expression="model =="), format="json")
    assert response.status_code == 400
    assert callbacks == []


def test_target_key_is_shown_by_id(api, openai):
    key = ProviderKeyFactory(provider=openai)
    rule = RoutingRuleFactory()
    RoutingTargetFactory(rule=rule, provider=openai, key=key, model="", weight=1)
    assert api.get(detail(rule.id)).json()["rule"]["targets"] == [
        {"provider": "openai", "model": None, "key_id": str(key.id), "weight": 1.0}]
