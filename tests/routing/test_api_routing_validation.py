"""Routing-rule API validation over HTTP (spec 3.8, 3.9, 4.7 and the fixes of section 6):
every failure is a 400 naming the field, and nothing is written."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gateway.models import AuditEvent, ProviderKind
from routing import actions as routing_actions
from routing.models import RoutingRule, RoutingTarget
from tests.factories import (
    CustomerFactory,
    ProviderFactory,
    ProviderKeyFactory,
    RoutingRuleFactory,
    TeamFactory,
    VirtualKeyFactory,
)

pytestmark = pytest.mark.django_db

URL = "/api/governance/routing-rules"
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
SCOPE_ID_REQUIRED = "scope_id field is required when scope is not global"


@pytest.fixture
def world() -> dict[str, Any]:
    """Two providers with a key each, and one owner of each scope."""
    openai = ProviderFactory(name="openai")
    anthropic = ProviderFactory(name="anthropic", kind=ProviderKind.ANTHROPIC)
    return {
        "openai_key": str(ProviderKeyFactory(provider=openai).id),
        "other_openai_key": str(ProviderKeyFactory(provider=openai).id),
        "anthropic_key": str(ProviderKeyFactory(provider=anthropic).id),
        "team": str(TeamFactory().id),
        "customer": str(CustomerFactory().id),
        "virtual_key": str(VirtualKeyFactory(team=None).id),
    }


def target(weight: float = 1, **fields: Any) -> dict[str, Any]:
    return {"provider": "openai", "model": "gpt-4o", "weight": weight, **fields}


ABSENT = object()


def body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "premium", "targets": [target()]}
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not ABSENT}


Payload = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]


def build(payload: Payload, world: dict[str, Any]) -> dict[str, Any]:
    return payload(world) if callable(payload) else payload


def assert_rejected(response: Any, field: str, message: str | None) -> dict[str, Any]:
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert response.json()["status_code"] == 400
    assert error["type"] == "invalid_request_error"
    assert field in error["fields"], error
    if message is not None:
        assert error["fields"][field] == [message]
        assert message in error["message"]
    return error


# --- the create validation table ----------------------------------------------------------

CREATE_CASES = [
    # name
    pytest.param(body(name=ABSENT), "name", "name field is required", id="name-absent"),
    pytest.param(body(name=""), "name", "name field is required", id="name-empty"),
    pytest.param(body(name="   "), "name", "name field is required", id="name-blank"),
    pytest.param(body(name=None), "name", "name field is required", id="name-null"),
    pytest.param(body(name="x" * 10_000), "name",
                 "Ensure this field has no more than 255 characters.", id="name-10000-chars"),
    # targets
    pytest.param(body(targets=ABSENT), "targets", "at least one target is required",
                 id="targets-absent"),
    pytest.param(body(targets=[]), "targets", "at least one target is required",
                 id="targets-empty"),
    pytest.param(body(targets=None), "targets", "at least one target is required",
                 id="targets-null"),
    pytest.param(body(targets=[target(-0.5), target(1.5, model="b")]), "targets[0].weight",
                 "each target weight must be positive", id="negative-weight"),
    pytest.param(body(targets=[target(1.5)]), "targets[0].weight",
                 "each target weight must be at most 1", id="weight-above-one"),
    pytest.param(lambda w: body(targets=[{"model": "m", "key_id": w["openai_key"],
                                          "weight": 1}]),
                 "targets[0].key_id", "key_id requires provider to be set",
                 id="key-without-provider"),
    pytest.param(lambda w: body(targets=[{"provider": "", "key_id": w["openai_key"],
                                          "weight": 1}]),
                 "targets[0].key_id", "key_id requires provider to be set",
                 id="key-with-empty-provider"),
    pytest.param(body(targets=[target(0.5), target(0.5)]), "targets",
                 'duplicate target entry: provider="openai" model="gpt-4o" key_id=""',
                 id="duplicate-target"),
    pytest.param(body(targets=[target(0.5), target(0.4, model="b")]), "targets",
                 "target weights must sum to 1, got 0.9000", id="weights-sum-0.9"),
    pytest.param(body(targets=[target(1, provider="nope")]), "targets[0].provider",
                 "invalid provider name: nope", id="unknown-provider"),
    pytest.param(body(targets=[target(1, key_id=UNKNOWN_ID)]), "targets[0].key_id",
                 f"key {UNKNOWN_ID} does not exist", id="unknown-key"),
    pytest.param(body(targets=[target(1, key_id="key-1")]), "targets[0].key_id",
                 "key_id 'key-1' is not a valid key id", id="malformed-key"),
    pytest.param(lambda w: body(targets=[target(1, key_id=w["anthropic_key"])]),
                 "targets[0].key_id", None, id="key-of-another-provider"),
    pytest.param(body(targets=[target(1)] * 51), "targets",
                 "Ensure this field has no more than 50 elements.", id="too-many-targets"),
    pytest.param(body(targets=[None]), "targets[0]", "This field may not be null.",
                 id="null-target"),
    pytest.param(body(targets=["openai/gpt-4o"]), "targets[0]", None, id="string-target"),
    pytest.param(body(targets={"provider": "openai", "weight": 1}), "targets", None,
                 id="targets-object"),
    pytest.param(body(targets=[{"provider": "openai"}]), "targets[0].weight",
                 "This field is required.", id="weight-absent"),
    pytest.param(body(targets=[target("1")]), "targets[0].weight", "A number is required.",
                 id="weight-string"),
    pytest.param(body(targets=[target(True)]), "targets[0].weight", "A number is required.",
                 id="weight-bool"),
    pytest.param(body(targets=[target(1, model=5)]), "targets[0].model", "Not a valid string.",
                 id="model-number"),
    # scope
    pytest.param(body(scope="x"), "scope",
                 'invalid scope "x": must be one of: global, team, customer, virtual_key',
                 id="unknown-scope"),
    pytest.param(body(scope="Team"), "scope",
                 'invalid scope "Team": must be one of: global, team, customer, virtual_key',
                 id="scope-is-case-sensitive"),
    pytest.param(body(scope="team"), "scope_id", SCOPE_ID_REQUIRED, id="team-without-id"),
    pytest.param(body(scope="customer", scope_id=""), "scope_id", SCOPE_ID_REQUIRED,
                 id="customer-empty-id"),
    pytest.param(body(scope="virtual_key", scope_id=None), "scope_id", SCOPE_ID_REQUIRED,
                 id="virtual-key-null-id"),
    pytest.param(body(scope="team", scope_id=UNKNOWN_ID), "scope_id",
                 f"team {UNKNOWN_ID} does not exist", id="unknown-team"),
    pytest.param(lambda w: body(scope="customer", scope_id=w["team"]), "scope_id",
                 lambda w: f"customer {w['team']} does not exist", id="team-id-as-customer"),
    pytest.param(lambda w: body(scope="virtual_key", scope_id=w["customer"]), "scope_id",
                 lambda w: f"virtual key {w['customer']} does not exist",
                 id="customer-id-as-key"),
    pytest.param(body(scope="team", scope_id="research"), "scope_id",
                 "scope_id 'research' is not a valid team id", id="malformed-scope-id"),
    pytest.param(body(scope_id=5), "scope_id", "Not a valid string.", id="scope-id-number"),
    # fallbacks and query
    pytest.param(body(fallbacks=["not a fallback"]), "fallbacks",
                 "invalid fallback 'not a fallback': use provider/model or provider",
                 id="fallback-format"),
    pytest.param(body(fallbacks=["nope/gpt-4o"]), "fallbacks",
                 "invalid fallback 'nope/gpt-4o': unknown provider 'nope'",
                 id="fallback-unknown-provider"),
    pytest.param(body(fallbacks=[""]), "fallbacks", None, id="fallback-empty"),
    pytest.param(body(fallbacks="openai/gpt-4o"), "fallbacks", None, id="fallbacks-string"),
    pytest.param(body(fallbacks=[None]), "fallbacks[0]", "This field may not be null.",
                 id="fallback-null"),
    pytest.param(body(fallbacks=["openai"] * 21), "fallbacks", "at most 20 fallbacks",
                 id="too-many-fallbacks"),
    pytest.param(body(query=[1, 2]), "query", "query must be a JSON object", id="query-list"),
    pytest.param(body(query="a == b"), "query", "query must be a JSON object",
                 id="query-string"),
    # types and ranges
    pytest.param(body(priority="1"), "priority", "A whole number is required.",
                 id="priority-string"),
    pytest.param(body(priority=1.5), "priority", "A whole number is required.",
                 id="priority-float"),
    pytest.param(body(priority=True), "priority", "A whole number is required.",
                 id="priority-bool"),
    pytest.param(body(priority=10**7), "priority", None, id="priority-too-large"),
    pytest.param(body(priority=10**30), "priority", None, id="priority-huge"),
    pytest.param(body(enabled="yes"), "enabled", "Must be true or false.", id="enabled-yes"),
    pytest.param(body(enabled=1), "enabled", "Must be true or false.", id="enabled-one"),
    pytest.param(body(chain_rule="false"), "chain_rule", "Must be true or false.",
                 id="chain-rule-string"),
    pytest.param(body(name=5), "name", "Not a valid string.", id="name-number"),
    pytest.param(body(name=["premium"]), "name", "Not a valid string.", id="name-list"),
    pytest.param(body(description={"a": 1}), "description", "Not a valid string.",
                 id="description-object"),
    pytest.param(body(description="d" * 10_001), "description", None, id="description-long"),
    pytest.param(body(name="pre\x00mium"), "name", "Null characters are not allowed.",
                 id="name-nul"),
    pytest.param(body(cel_expression='model == "\x00"'), "cel_expression",
                 "Null characters are not allowed.", id="cel-nul"),
    pytest.param(body(query={"rule": "\x00"}), "query", "Null characters are not allowed.",
                 id="query-nul"),
    pytest.param(body(cel_expression=5), "cel_expression", "Not a valid string.",
                 id="cel-number"),
    pytest.param(body(cel_expression="true || " * 600 + "true"), "cel_expression",
                 "must be at most 4096 characters", id="cel-too-long"),
]


@pytest.mark.parametrize(("payload", "field", "message"), CREATE_CASES)
def test_create_rejects(api, world, payload, field, message):
    data = build(payload, world)
    if callable(message):
        message = message(world)
    response = api.post(URL, data, format="json")
    assert_rejected(response, field, message)
    assert not RoutingRule.objects.exists()
    assert not RoutingTarget.objects.exists()
    assert not AuditEvent.objects.exists()


def test_key_of_another_provider_names_both(api, world):
    response = api.post(URL, body(targets=[target(1, key_id=world["anthropic_key"])]),
                        format="json")
    error = assert_rejected(response, "targets[0].key_id", None)
    assert error["fields"]["targets[0].key_id"] == [
        f"key {world['anthropic_key']} belongs to provider anthropic, not openai"]


def test_every_error_is_reported_at_once(api, world):
    response = api.post(URL, {"name": "", "targets": [], "priority": "1", "scope": "x"},
                        format="json")
    error = assert_rejected(response, "name", "name field is required")
    assert set(error["fields"]) == {"name", "targets", "priority", "scope"}


# --- CEL ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("expression", "compiler_text"), [
    pytest.param("model ==", "Syntax error", id="syntax-error"),
    pytest.param("foo == 1", "undeclared reference to 'foo'", id="undeclared-variable"),
    pytest.param("model", "must return a boolean", id="non-boolean"),
    pytest.param('model == "a" &&', "Syntax error", id="dangling-operator"),
])
def test_invalid_cel_is_rejected_before_writing(api, world, expression, compiler_text):
    response = api.post(URL, body(cel_expression=expression), format="json")
    error = assert_rejected(response, "cel_expression", None)
    (message,) = error["fields"]["cel_expression"]
    assert message.startswith("CEL compile error")
    assert compiler_text in message
    assert compiler_text in error["message"]
    assert not RoutingRule.objects.exists()


def test_invalid_cel_on_update_leaves_the_rule_alone(api, world):
    rule = RoutingRuleFactory(cel_expression="budget_used > 80")
    response = api.put(f"{URL}/{rule.id}", {"cel_expression": "model =="}, format="json")
    assert_rejected(response, "cel_expression", None)
    rule.refresh_from_db()
    assert rule.cel_expression == "budget_used > 80"


@pytest.mark.parametrize("expression", [
    "budget_used > 80",
    "budget_used > 80.5 && tokens_used < 90",
    'headers["X-Tier"] == "premium"',
    '"x-team" in headers',
    'model.startsWith("gpt-") || provider == "openai"',
    "",
    "   ",
])
def test_valid_cel_is_accepted_verbatim(api, world, expression):
    response = api.post(URL, body(cel_expression=expression), format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["rule"]["cel_expression"] == expression


# --- weights and duplicates --------------------------------------------------------------

@pytest.mark.parametrize(("weights", "error"), [
    pytest.param([1.0], None, id="1.0"),
    pytest.param([0.5, 0.499], None, id="0.999-passes"),
    pytest.param([0.5, 0.501], None, id="1.001-passes"),
    pytest.param([0.333, 0.333, 0.333], None, id="thirds-0.999"),
    pytest.param([0.1] * 10, None, id="ten-tenths"),
    pytest.param([1.0, 0.0], None, id="zero-weight-allowed"),
    pytest.param([0.5, 0.498], "target weights must sum to 1, got 0.9980", id="0.998-fails"),
    pytest.param([0.5, 0.502], "target weights must sum to 1, got 1.0020", id="1.002-fails"),
    pytest.param([0.0], "target weights must sum to 1, got 0.0000", id="all-zero-fails"),
    pytest.param([0.7, 0.7], "target weights must sum to 1, got 1.4000", id="1.4-fails"),
])
def test_weight_sum_tolerance(api, world, weights, error):
    targets = [target(weight, model=f"model-{index}") for index, weight in enumerate(weights)]
    response = api.post(URL, body(targets=targets), format="json")
    if error is None:
        assert response.status_code == 200, response.json()
        assert [t["weight"] for t in response.json()["rule"]["targets"]] == weights
    else:
        assert_rejected(response, "targets", error)


@pytest.mark.parametrize(("targets", "message"), [
    pytest.param([{"provider": "openai", "model": "GPT-4o"},
                  {"provider": "openai", "model": "gpt-4o"}],
                 'provider="openai" model="gpt-4o" key_id=""', id="model-case"),
    pytest.param([{"provider": "OpenAI", "model": "x"}, {"provider": "openai", "model": "x"}],
                 'provider="openai" model="x" key_id=""', id="provider-case"),
    pytest.param([{"provider": "openai", "model": None}, {"provider": "openai", "model": ""}],
                 'provider="openai" model="" key_id=""', id="null-model-equals-empty"),
    pytest.param([{"provider": "openai"}, {"provider": "openai", "model": None}],
                 'provider="openai" model="" key_id=""', id="absent-model-equals-null"),
    pytest.param([{"provider": None, "model": "m"}, {"provider": "", "model": "m"}],
                 'provider="" model="m" key_id=""', id="null-provider-equals-empty"),
    pytest.param([{}, {"provider": "", "model": "", "key_id": ""}],
                 'provider="" model="" key_id=""', id="all-empty"),
    pytest.param([{"provider": "openai", "model": "m", "key_id": "{openai_key}"},
                  {"provider": "openai", "model": "M", "key_id": "{openai_key}"}],
                 'provider="openai" model="m" key_id="{openai_key}"', id="same-key"),
    pytest.param([{"provider": "openai", "model": "é"}, {"provider": "openai", "model": "É"}],
                 'provider="openai" model="é" key_id=""', id="unicode-model"),
])
def test_duplicate_targets_are_canonicalised(api, world, targets, message):
    entries = [{**entry, "weight": 0.5} for entry in targets]
    for entry in entries:
        if entry.get("key_id"):
            entry["key_id"] = entry["key_id"].format(**world)
    response = api.post(URL, body(targets=entries), format="json")
    assert_rejected(response, "targets",
                    "duplicate target entry: " + message.format(**world))


@pytest.mark.parametrize("targets", [
    pytest.param([{"provider": "openai", "model": "m", "key_id": "{openai_key}"},
                  {"provider": "openai", "model": "m", "key_id": "{other_openai_key}"}],
                 id="different-keys"),
    pytest.param([{"provider": "openai", "model": "m"},
                  {"provider": "openai", "model": "m", "key_id": "{openai_key}"}],
                 id="with-and-without-key"),
    pytest.param([{"provider": "openai", "model": "m"}, {"provider": "anthropic", "model": "m"}],
                 id="different-providers"),
    pytest.param([{"model": "m"}, {"provider": "openai", "model": "m"}],
                 id="incoming-and-named-provider"),
])
def test_distinct_targets_are_accepted(api, world, targets):
    entries = [{**entry, "weight": 0.5} for entry in targets]
    for entry in entries:
        if "key_id" in entry:
            entry["key_id"] = entry["key_id"].format(**world)
    response = api.post(URL, body(targets=entries), format="json")
    assert response.status_code == 200, response.json()


# --- update validation -------------------------------------------------------------------

UPDATE_CASES = [
    pytest.param({"targets": []}, "targets", "at least one routing target is required",
                 id="targets-empty"),
    pytest.param({"targets": [target(0.5)]}, "targets",
                 "target weights must sum to 1, got 0.5000", id="weights"),
    pytest.param({"targets": [target(-1)]}, "targets[0].weight",
                 "each target weight must be positive", id="negative-weight"),
    pytest.param({"targets": [{"key_id": UNKNOWN_ID, "weight": 1}]}, "targets[0].key_id",
                 "key_id requires provider to be set", id="key-without-provider"),
    pytest.param({"scope": "everyone"}, "scope",
                 'invalid scope "everyone": must be one of: global, team, customer, virtual_key',
                 id="scope"),
    pytest.param({"scope": "team", "scope_id": UNKNOWN_ID}, "scope_id",
                 f"team {UNKNOWN_ID} does not exist", id="unknown-owner"),
    pytest.param({"fallbacks": ["nope"]}, "fallbacks",
                 "invalid fallback 'nope': unknown provider 'nope'", id="fallbacks"),
    pytest.param({"priority": "1"}, "priority", "A whole number is required.", id="priority"),
    pytest.param({"enabled": "yes"}, "enabled", "Must be true or false.", id="enabled"),
    pytest.param({"query": 3}, "query", "query must be a JSON object", id="query"),
    pytest.param({"name": "n" * 256}, "name",
                 "Ensure this field has no more than 255 characters.", id="name-too-long"),
]


@pytest.mark.parametrize(("payload", "field", "message"), UPDATE_CASES)
def test_update_rejects(api, world, payload, field, message):
    created = api.post(URL, body(), format="json").json()["rule"]
    response = api.put(f"{URL}/{created['id']}", payload, format="json")
    assert_rejected(response, field, message)
    assert api.get(f"{URL}/{created['id']}").json()["rule"] == created


# --- duplicate names (409) ---------------------------------------------------------------

@pytest.mark.parametrize(("first", "second", "conflict"), [
    pytest.param({}, {}, True, id="global-twice"),
    pytest.param({"scope": "team", "scope_id": "{team}"},
                 {"scope": "team", "scope_id": "{team}"}, True, id="same-team"),
    pytest.param({"scope": "virtual_key", "scope_id": "{virtual_key}"},
                 {"scope": "virtual_key", "scope_id": "{virtual_key}"}, True, id="same-key"),
    pytest.param({}, {"scope": "team", "scope_id": "{team}"}, False, id="global-and-team"),
    pytest.param({"scope": "team", "scope_id": "{team}"},
                 {"scope": "customer", "scope_id": "{customer}"}, False, id="team-and-customer"),
    pytest.param({}, {"name": "Premium"}, False, id="names-are-case-sensitive"),
])
def test_names_are_unique_within_a_scope(api, world, first, second, conflict):
    def fill(overrides: dict[str, Any]) -> dict[str, Any]:
        return {key: value.format(**world) for key, value in overrides.items()}

    assert api.post(URL, body(**fill(first)), format="json").status_code == 200
    response = api.post(URL, body(**fill(second)), format="json")
    if conflict:
        assert response.status_code == 409
        error = response.json()["error"]
        assert error["type"] == "conflict_error"
        assert error["fields"] == {"name": ["already exists"]}
        assert RoutingRule.objects.count() == 1
    else:
        assert response.status_code == 200


def test_names_are_unique_between_teams_only_per_team(api, world):
    other_team = str(TeamFactory().id)
    for team in (world["team"], other_team):
        response = api.post(URL, body(scope="team", scope_id=team), format="json")
        assert response.status_code == 200


def test_rename_into_a_taken_name_is_409(api, world):
    api.post(URL, body(name="taken"), format="json")
    rule = api.post(URL, body(name="free"), format="json").json()["rule"]
    response = api.put(f"{URL}/{rule['id']}", {"name": "taken"}, format="json")
    assert response.status_code == 409
    assert RoutingRule.objects.get(pk=rule["id"]).name == "free"


def test_moving_into_a_scope_with_the_name_is_409(api, world):
    api.post(URL, body(scope="team", scope_id=world["team"]), format="json")
    rule = api.post(URL, body(), format="json").json()["rule"]
    response = api.put(f"{URL}/{rule['id']}", {"scope": "team", "scope_id": world["team"]},
                       format="json")
    assert response.status_code == 409
    assert RoutingRule.objects.get(pk=rule["id"]).scope == "global"


def test_keeping_its_own_name_is_not_a_conflict(api, world):
    rule = api.post(URL, body(), format="json").json()["rule"]
    response = api.put(f"{URL}/{rule['id']}", {"name": "premium", "priority": 2},
                       format="json")
    assert response.status_code == 200


# --- bodies: JSON, types, hostile input ---------------------------------------------------

def test_unknown_keys_are_ignored(api, world):
    response = api.post(URL, body(Name="other", color="blue"), format="json")
    assert response.status_code == 200
    assert response.json()["rule"]["name"] == "premium"


@pytest.mark.parametrize("text", [
    "<script>alert('x')</script>",
    "x'; DROP TABLE routing_routingrule; --",
    "\" OR 1=1 --",
    "名前 🚀",
    "{{ 7*7 }}",
])
def test_hostile_strings_are_stored_verbatim(api, world, text):
    response = api.post(URL, body(name=text, description=text), format="json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    rule = response.json()["rule"]
    assert (rule["name"], rule["description"]) == (text, text)
    fetched = api.get(f"{URL}/{rule['id']}")
    assert fetched["Content-Type"] == "application/json"
    assert fetched.json()["rule"]["name"] == text
    assert RoutingRule.objects.get().name == text
    assert api.get(URL, {"search": text}).json()["total_count"] == 1


def test_sql_in_search_is_just_text(api, world):
    RoutingRuleFactory(name="premium")
    payload = api.get(URL, {"search": "' OR 1=1 --"}).json()
    assert payload["rules"] == []
    assert RoutingRule.objects.count() == 1


def test_a_lost_uniqueness_race_is_409_not_500(api, world, monkeypatch):
    """Two writers pass the uniqueness check at once: the database constraint decides."""
    assert api.post(URL, body(), format="json").status_code == 200
    monkeypatch.setattr(routing_actions, "_check_unique_name", lambda rule: None)
    response = api.post(URL, body(), format="json")
    assert response.status_code == 409
    assert response.json()["error"]["fields"] == {"name": ["already exists"]}
    assert RoutingRule.objects.count() == 1
    assert RoutingTarget.objects.count() == 1
