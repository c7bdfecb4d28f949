"""Dry-running the routing rules: ``POST /api/governance/routing-rules/evaluate`` and the
admin's "Try routing" page (both on :func:`routing.evaluation.evaluate_request`)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.models import ProviderKind
from routing.cel import ENGINE_NAMES
from routing.models import RoutingRule
from tests.factories import (
    ProviderFactory,
    ProviderKeyFactory,
    RoutingRuleFactory,
    RoutingTargetFactory,
    VirtualKeyFactory,
)

pytestmark = pytest.mark.django_db

URL = "/api/governance/routing-rules/evaluate"
TRY_URL = "/admin/routing/routingrule/try/"


@pytest.fixture
def openai():
    return ProviderFactory(name="openai")


@pytest.fixture
def anthropic():
    return ProviderFactory(name="anthropic", kind=ProviderKind.ANTHROPIC)


def make_rule(expression: str, *, provider: Any = None, model: str = "", weight: float = 1.0,
              **fields: Any) -> RoutingRule:
    """A rule with one target; ``provider=None`` keeps the request's provider."""
    rule = RoutingRuleFactory(cel_expression=expression, **fields)
    RoutingTargetFactory(rule=rule, provider=provider, model=model, weight=weight)
    return rule


def evaluate(api, **body: Any) -> dict[str, Any]:
    body.setdefault("model", "gpt-4o")
    response = api.post(URL, body, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def outcomes(result: dict[str, Any]) -> list[tuple[int, str, str]]:
    return [(entry["step"], entry["rule_name"], entry["outcome"]) for entry in result["trace"]]


# --- the API: decisions and traces --------------------------------------------------------

def test_a_key_scoped_rule_beats_a_global_one_whatever_the_priorities(api, openai, anthropic):
    key = VirtualKeyFactory()
    make_rule("true", name="everyone", provider=openai, model="gpt-4o-mini", priority=-100)
    pinned = make_rule('model == "gpt-4o"', name="for-this-key", provider=anthropic,
                       model="claude-sonnet", scope="virtual_key", virtual_key=key,
                       priority=100)

    result = evaluate(api, virtual_key_id=str(key.pk), provider="openai")

    assert result["matched"] is True
    assert result["decision"] == {
        "provider": "anthropic", "model": "claude-sonnet", "key_id": None, "fallbacks": [],
        "rule_id": str(pinned.pk), "rule_name": "for-this-key",
    }
    assert result["trace"] == [{
        "step": 0, "scope": "virtual_key", "scope_id": str(key.pk),
        "rule_id": str(pinned.pk), "rule_name": "for-this-key",
        "expression": 'model == "gpt-4o"', "outcome": "matched",
        "detail": "selected target (weight=1.00): provider=anthropic, model=claude-sonnet",
    }]
    assert result["steps"] == 1
    assert [scope["scope"] for scope in result["scope_chain"]] == [
        "virtual_key", "team", "customer", "global"]
    assert result["scope_chain"][0] == {"scope": "virtual_key", "scope_id": str(key.pk),
                                        "name": key.name}
    assert result["log"][-1].startswith("Rule 'for-this-key' [model == \"gpt-4o\"] → matched")


def test_without_a_key_only_global_rules_apply(api, openai, anthropic):
    key = VirtualKeyFactory()
    make_rule("true", name="key-rule", provider=anthropic, scope="virtual_key",
              virtual_key=key)
    make_rule('model == "gpt-4o"', name="global-rule", provider=openai, model="gpt-4o-mini")

    result = evaluate(api)

    assert result["decision"]["rule_name"] == "global-rule"
    assert result["scope_chain"] == [{"scope": "global", "scope_id": "", "name": ""}]
    assert outcomes(result) == [(0, "global-rule", "matched")]


def test_a_key_rule_that_does_not_match_falls_through_to_the_global_one(api, openai):
    key = VirtualKeyFactory()
    make_rule('model == "other"', name="key-rule", provider=openai, scope="virtual_key",
              virtual_key=key)
    make_rule('model == "gpt-4o"', name="global-rule", provider=openai, model="gpt-4o-mini")

    result = evaluate(api, virtual_key_id=str(key.pk))

    assert outcomes(result) == [(0, "key-rule", "no match"), (0, "global-rule", "matched")]
    assert result["trace"][0]["scope"] == "virtual_key"
    assert result["trace"][1]["scope"] == "global"
    assert result["decision"]["model"] == "gpt-4o-mini"


def test_a_chain_rule_re_evaluates_with_the_new_target(api, openai, anthropic):
    first = make_rule('model == "gpt-4o"', name="downgrade", provider=openai,
                      model="gpt-4o-mini", chain_rule=True, priority=0)
    second = make_rule('model == "gpt-4o-mini"', name="move", provider=anthropic,
                       model="claude-haiku", priority=1, fallbacks=["openai/gpt-4o-mini"])

    result = evaluate(api, provider="openai")

    assert result["steps"] == 2
    assert outcomes(result) == [
        (0, "downgrade", "matched"),
        (1, "downgrade", "no match"),
        (1, "move", "matched"),
    ]
    assert result["trace"][0]["detail"].endswith("[chain_rule=true, continuing]")
    assert result["decision"] == {
        "provider": "anthropic", "model": "claude-haiku", "key_id": None,
        "fallbacks": ["openai/gpt-4o-mini"], "rule_id": str(second.pk), "rule_name": "move",
    }
    assert result["trace"][0]["rule_id"] == str(first.pk)
    assert "Chain step 1: re-evaluating with provider=openai, model=gpt-4o-mini" in result["log"]


def test_a_missing_header_is_no_match_and_default_routing_applies(api, openai):
    make_rule('headers["X-Tier"] == "premium"', name="premium", provider=openai)

    result = evaluate(api, provider="openai", model="gpt-4o")

    assert result["matched"] is False
    assert result["decision"] is None
    assert "default routing" in result["message"]
    assert "provider=openai, model=gpt-4o" in result["message"]
    assert outcomes(result) == [(0, "premium", "no match (missing header or param)")]
    assert result["log"] == ["Scope chain: [global]",
                             "No routing rule matched, using default routing"]


def test_header_names_are_case_insensitive(api, openai):
    make_rule('headers["X-Tier"] == "premium"', name="premium", provider=openai)

    result = evaluate(api, headers={"X-TIER": "premium"})

    assert result["decision"]["rule_name"] == "premium"


def test_query_params_are_matched(api, openai):
    make_rule('params["region"] == "eu"', name="eu", provider=openai, model="gpt-4o-eu")

    assert evaluate(api, query_params={"Region": "eu"})["decision"]["model"] == "gpt-4o-eu"
    assert evaluate(api, query_params={"region": "us"})["decision"] is None


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_a_rule_that_does_not_compile_is_skipped_and_routing_continues(api, openai, engine):
    broken = RoutingRuleFactory(name="broken", cel_expression="model ==", priority=0)
    RoutingTargetFactory(rule=broken, provider=openai)
    make_rule("true", name="fallback-rule", provider=openai, model="gpt-4o-mini", priority=1)

    result = evaluate(api, engine=engine)

    assert result["engine"] == engine
    assert outcomes(result) == [(0, "broken", "skipped: compile error"),
                                (0, "fallback-rule", "matched")]
    assert "compile error" in result["trace"][0]["detail"].lower()
    assert result["decision"]["rule_name"] == "fallback-rule"
    assert any(line.startswith("Rule 'broken' skipped: compile error") for line in result["log"])


def test_disabled_rules_are_not_evaluated(api, openai):
    make_rule("true", name="off", provider=openai, enabled=False)

    result = evaluate(api)

    assert result["trace"] == []
    assert result["decision"] is None


@pytest.mark.parametrize(("capacity", "matched"), [
    ({"budget_used": 85}, True),
    ({"budget_used": 80}, False),
    ({"tokens_used": 99.5, "request": 100}, False),
    (None, False),
])
def test_capacity_percentages_feed_the_rule(api, openai, capacity, matched):
    make_rule("budget_used > 80", name="over-budget", provider=openai, model="gpt-4o-mini")

    body: dict[str, Any] = {} if capacity is None else {"capacity": capacity}
    result = evaluate(api, **body)

    assert result["matched"] is matched
    assert result["trace"][0]["outcome"] == ("matched" if matched else "no match")


def test_capacity_defaults_to_zero_per_figure(api, openai):
    make_rule("request == 0.0 && tokens_used == 0.0 && budget_used > 50.0", name="r",
              provider=openai)

    result = evaluate(api, capacity={"budget_used": 60.5})

    assert result["matched"] is True
    assert result["request"]["capacity"] == {"budget_used": 60.5, "tokens_used": 0.0,
                                             "request": 0.0}


def test_provider_slash_model_is_split_on_a_known_provider(api, openai):
    make_rule('provider == "openai" && model == "gpt-4o"', name="split", provider=openai,
              model="gpt-4o-mini")

    result = evaluate(api, model="openai/gpt-4o")

    assert result["request"]["provider"] == "openai"
    assert result["request"]["model"] == "gpt-4o"
    assert result["decision"]["rule_name"] == "split"


@pytest.mark.parametrize(("provider", "model", "expected"), [
    ("", "meta-llama/Llama-3-8b", ("", "meta-llama/Llama-3-8b")),  # not a provider
    ("anthropic", "openai/gpt-4o", ("anthropic", "openai/gpt-4o")),  # provider given
    ("", "openai/org/model", ("openai", "org/model")),  # first "/" only
])
def test_provider_slash_model_is_left_alone_otherwise(api, openai, anthropic, provider, model,
                                                      expected):
    result = evaluate(api, provider=provider, model=model)

    assert (result["request"]["provider"], result["request"]["model"]) == expected


def test_a_seed_makes_the_weighted_choice_reproducible(api, openai, anthropic):
    rule = RoutingRuleFactory(name="split-traffic", cel_expression="true")
    RoutingTargetFactory(rule=rule, provider=openai, model="gpt-4o", weight=0.5)
    RoutingTargetFactory(rule=rule, provider=anthropic, model="claude", weight=0.5)

    picks = {seed: evaluate(api, seed=seed)["decision"]["provider"] for seed in range(20)}

    assert set(picks.values()) == {"openai", "anthropic"}
    for seed, provider in picks.items():
        assert evaluate(api, seed=seed)["decision"]["provider"] == provider


def test_a_pinned_provider_key_is_in_the_decision(api, openai):
    provider_key = ProviderKeyFactory(provider=openai)
    rule = RoutingRuleFactory(name="pinned", cel_expression="true")
    RoutingTargetFactory(rule=rule, provider=openai, model="gpt-4o", key=provider_key)

    result = evaluate(api)

    assert result["decision"]["key_id"] == str(provider_key.pk)


def test_team_and_request_type_variables(api, openai):
    key = VirtualKeyFactory()
    make_rule(f'team_name == "{key.team.name}" && request_type == "embedding"',
              name="team-embeddings", provider=openai, scope="team", team=key.team)

    assert evaluate(api, virtual_key_id=str(key.pk))["decision"] is None  # chat_completion
    result = evaluate(api, virtual_key_id=str(key.pk), request_type="embedding")

    assert result["decision"]["rule_name"] == "team-embeddings"
    assert result["trace"][0]["scope"] == "team"
    assert result["trace"][0]["scope_id"] == str(key.team.pk)


def test_evaluate_is_not_taken_for_a_rule_id(api):
    assert api.get(URL).status_code == 405


def test_nothing_is_written(api, openai):
    make_rule("true", name="r", provider=openai)
    before = RoutingRule.objects.get().updated_at

    evaluate(api)

    assert RoutingRule.objects.get().updated_at == before


# --- the API: bad input ---------------------------------------------------------------------

BAD_INPUT = [
    pytest.param({"virtual_key_id": str(uuid.uuid4())}, "virtual_key_id", id="unknown-key"),
    pytest.param({"virtual_key_id": "not-a-uuid"}, "virtual_key_id", id="malformed-key"),
    pytest.param({"virtual_key_id": 5}, "virtual_key_id", id="key-not-a-string"),
    pytest.param({"headers": ["x-tier", "premium"]}, "headers", id="headers-array"),
    pytest.param({"headers": "x-tier: premium"}, "headers", id="headers-string"),
    pytest.param({"headers": {"x-tier": 1}}, "headers.x-tier", id="header-value-number"),
    pytest.param({"headers": {"x-tier": None}}, "headers.x-tier", id="header-value-null"),
    pytest.param({"headers": {"x-tier": ["a"]}}, "headers.x-tier", id="header-value-list"),
    pytest.param({"headers": {f"h-{i}": "v" for i in range(101)}}, "headers",
                 id="101-headers"),
    pytest.param({"headers": {"x" * 257: "v"}}, "headers", id="header-name-too-long"),
    pytest.param({"headers": {"x": "v" * 8193}}, "headers.x", id="header-value-too-long"),
    pytest.param({"query_params": {"region": 1}}, "query_params.region", id="param-number"),
    pytest.param({"query_params": [1]}, "query_params", id="params-array"),
    pytest.param({"capacity": {"budget_used": -1}}, "capacity.budget_used",
                 id="negative-capacity"),
    pytest.param({"capacity": {"tokens_used": "50"}}, "capacity.tokens_used",
                 id="capacity-string"),
    pytest.param({"capacity": {"request": True}}, "capacity.request", id="capacity-bool"),
    pytest.param({"capacity": [85]}, "capacity", id="capacity-array"),
    pytest.param({"engine": "cel-go"}, "engine", id="unknown-engine"),
    pytest.param({"engine": 1}, "engine", id="engine-number"),
    pytest.param({"request_type": "chat"}, "request_type", id="unknown-request-type"),
    pytest.param({"request_type": "chat_completion_stream"}, "request_type",
                 id="stream-request-type"),
    pytest.param({"model": None}, "model", id="null-model"),
    pytest.param({"model": ""}, "model", id="empty-model"),
    pytest.param({"model": 4}, "model", id="model-number"),
    pytest.param({"model": "m" * 513}, "model", id="model-too-long"),
    pytest.param({"provider": ["openai"]}, "provider", id="provider-array"),
    pytest.param({"seed": "1"}, "seed", id="seed-string"),
    pytest.param({"seed": 1.5}, "seed", id="seed-float"),
    pytest.param({"seed": 2**64}, "seed", id="seed-too-big"),
]


@pytest.mark.parametrize(("body", "field"), BAD_INPUT)
def test_bad_input_is_a_400_naming_the_field(api, body, field):
    payload = {"model": "gpt-4o", **body}

    response = api.post(URL, payload, format="json")

    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert field in error["fields"], error
    assert field.split(".")[0] in error["message"]


def test_a_missing_model_is_a_400(api):
    response = api.post(URL, {"provider": "openai"}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"model": ["This field is required."]}


def test_an_unknown_key_names_the_id(api):
    missing = uuid.uuid4()

    response = api.post(URL, {"model": "m", "virtual_key_id": str(missing)}, format="json")

    assert response.json()["error"]["fields"]["virtual_key_id"] == [
        f"virtual key {missing} does not exist"]


@pytest.mark.parametrize("body", [b"", b"[]", b"{not json"])
def test_a_body_that_is_not_a_json_object_is_a_400(api, body):
    response = api.post(URL, body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("Invalid JSON")


def test_empty_optional_fields_mean_their_defaults(api):
    result = evaluate(api, virtual_key_id="", provider=None, request_type=None, engine="",
                      headers=None, query_params={}, capacity=None, seed=None)

    assert result["request"]["request_type"] == "chat_completion"
    assert result["request"]["virtual_key_id"] is None
    assert result["engine"] in ENGINE_NAMES


FIELD_NAMES = st.sampled_from([
    "virtual_key_id", "provider", "model", "request_type", "headers", "query_params",
    "capacity", "budget_used", "tokens_used", "request", "engine", "seed", "x-tier",
])
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
           | st.sampled_from(["openai/gpt-4o", "gpt-4o", "", "chat_completion", "cel-python",
                              "premium", "openai"]))
JSON = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(FIELD_NAMES | st.text(max_size=10), children, max_size=5),
                    max_leaves=20)


def test_random_bodies_never_crash(api, openai):
    make_rule('headers["x-tier"] == "premium" || budget_used > 50', name="a", provider=openai)
    make_rule('params["region"].startsWith("eu")', name="b", provider=openai, priority=1)

    @settings(max_examples=80, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(body=st.dictionaries(FIELD_NAMES, JSON, max_size=8))
    def check(body):
        response = api.post(URL, body, format="json")
        assert response.status_code in (200, 400), (body, response.content)

    check()


def test_anonymous_is_401_and_non_staff_is_403(anonymous_api, non_staff_api):
    assert anonymous_api.post(URL, {"model": "m"}, format="json").status_code == 401
    assert non_staff_api.post(URL, {"model": "m"}, format="json").status_code == 403


# --- the admin page -------------------------------------------------------------------------

def trace_rows(html: str) -> list[str]:
    return re.findall(r'<tr class="gw-trace-row[^"]*">', html)


def test_the_page_renders_the_form_for_staff(admin_client_logged_in, openai):
    response = admin_client_logged_in.get(TRY_URL)

    assert response.status_code == 200
    html = response.content.decode()
    assert "<h1>Try routing</h1>" in html
    for name in ("virtual_key", "provider", "model", "request_type", "headers",
                 "query_params", "budget_used", "tokens_used", "request", "engine", "seed"):
        assert f'name="{name}"' in html, name
    assert '<option value="openai">openai</option>' in html
    assert 'class="breadcrumbs"' in html
    assert "csrfmiddlewaretoken" in html
    assert response.context["result"] is None


def test_the_url_is_named(admin_client_logged_in):
    assert reverse("admin:routing_routingrule_try") == TRY_URL


def test_fields_can_be_prefilled_from_the_query_string(admin_client_logged_in):
    key = VirtualKeyFactory()

    response = admin_client_logged_in.get(TRY_URL, {"model": "prefilled-model",
                                                    "virtual_key": str(key.pk)})

    html = response.content.decode()
    assert 'value="prefilled-model"' in html
    assert f'<option value="{key.pk}" selected>{key.name}</option>' in html
    assert response.context["result"] is None


@pytest.mark.parametrize("value", ["not-a-uuid", str(uuid.uuid4())])
def test_a_bad_prefilled_key_is_ignored(admin_client_logged_in, value):
    response = admin_client_logged_in.get(TRY_URL, {"virtual_key": value})

    assert response.status_code == 200


def test_non_staff_are_sent_to_the_login_page(plain_user):
    client = Client()
    client.force_login(plain_user)

    response = client.get(TRY_URL)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert Client().get(TRY_URL).status_code == 302


def form(**fields: str) -> dict[str, str]:
    data = {"virtual_key": "", "provider": "", "model": "gpt-4o",
            "request_type": "chat_completion", "headers": "", "query_params": "",
            "budget_used": "0", "tokens_used": "0", "request": "0", "engine": "", "seed": ""}
    data.update(fields)
    return data


def test_posting_shows_the_decision_and_a_trace_row_per_rule(admin_client_logged_in, openai,
                                                             anthropic):
    key = VirtualKeyFactory()
    skipped = make_rule('headers["x-tier"] == "free"', name="free-tier", provider=openai,
                        scope="virtual_key", virtual_key=key)
    winner = make_rule('headers["X-Tier"] == "premium" && budget_used > 50', name="premium-tier",
                       provider=anthropic, model="claude-opus", scope="team", team=key.team,
                       fallbacks=["openai/gpt-4o"])
    make_rule("true", name="never-reached", provider=openai)

    response = admin_client_logged_in.post(TRY_URL, form(
        virtual_key=str(key.pk), provider="openai", headers='{"x-tier": "premium"}',
        budget_used="60"))

    assert response.status_code == 200
    html = response.content.decode()
    result = response.context["result"]
    assert result["decision"]["rule_name"] == "premium-tier"
    assert len(trace_rows(html)) == 2
    assert len(re.findall(r'<tr class="gw-trace-row gw-matched">', html)) == 1
    assert "never-reached" not in html
    winner_url = reverse("admin:routing_routingrule_change", args=[winner.pk])
    assert f'<a href="{winner_url}">premium-tier</a>' in html
    assert reverse("admin:routing_routingrule_change", args=[skipped.pk]) in html
    assert "claude-opus" in html
    assert "openai/gpt-4o" in html
    assert "headers[&quot;x-tier&quot;] == &quot;free&quot;" in html  # expression, escaped
    assert "no match" in html
    assert "Engine log" in html


def test_the_page_says_when_no_rule_matched(admin_client_logged_in, openai):
    make_rule('model == "other"', name="other", provider=openai)

    response = admin_client_logged_in.post(TRY_URL, form(model="openai/gpt-4o"))

    html = response.content.decode()
    assert "No routing rule matched." in html
    assert "provider openai" in html
    assert len(trace_rows(html)) == 1


def test_a_compile_error_is_shown_in_the_trace(admin_client_logged_in, openai):
    broken = RoutingRuleFactory(name="broken", cel_expression="model ==")
    RoutingTargetFactory(rule=broken, provider=openai)

    response = admin_client_logged_in.post(TRY_URL, form(engine="cel-python"))

    html = response.content.decode()
    assert response.status_code == 200
    assert "skipped: compile error" in html
    assert '<tr class="gw-trace-row gw-error">' in html


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"headers": "{not json"}, "headers", "Invalid JSON"),
    ({"headers": '["x-tier"]'}, "headers", "must be a JSON object"),
    ({"headers": '{"x-tier": 1}'}, "headers", "must be a string"),
    ({"query_params": "{'region': 'eu'}"}, "query_params", "Invalid JSON"),
    ({"budget_used": "-5"}, "budget_used", "greater than or equal to 0"),
    ({"budget_used": "inf"}, "budget_used", "Enter a number"),
    ({"model": ""}, "model", "This field is required"),
    ({"virtual_key": "not-a-uuid"}, "virtual_key", "is not a valid UUID"),
    ({"virtual_key": str(uuid.uuid4())}, "virtual_key", "Select a valid choice"),
    ({"engine": "cel-go"}, "engine", "Select a valid choice"),
    ({"request_type": "chat"}, "request_type", "Select a valid choice"),
    ({"provider": "nope"}, "provider", "Select a valid choice"),
])
def test_invalid_input_is_shown_next_to_the_field(admin_client_logged_in, fields, field,
                                                  message):
    response = admin_client_logged_in.post(TRY_URL, form(**fields))

    assert response.status_code == 200
    form_errors = response.context["adminform"].form.errors
    assert list(form_errors) == [field]
    assert message in form_errors[field][0]
    html = response.content.decode()
    assert 'class="errornote"' in html
    assert re.search(rf'class="form-row errors field-{field}"|fieldBox field-{field} errors',
                     html)
    assert response.context["result"] is None


def test_too_many_headers_are_refused(admin_client_logged_in):
    headers = "{" + ", ".join(f'"h{i}": "v"' for i in range(101)) + "}"

    response = admin_client_logged_in.post(TRY_URL, form(headers=headers))

    assert "at most 100" in response.context["adminform"].form.errors["headers"][0]


def test_the_changelist_links_to_the_page(admin_client_logged_in):
    response = admin_client_logged_in.get(reverse("admin:routing_routingrule_changelist"))

    html = response.content.decode()
    assert f'<a href="{TRY_URL}">Try routing</a>' in html


def test_the_key_field_autocompletes(admin_client_logged_in):
    key = VirtualKeyFactory(name="autocomplete-me")

    response = admin_client_logged_in.get("/admin/autocomplete/", {
        "app_label": "routing", "model_name": "routingrule", "field_name": "virtual_key",
        "term": "autocomplete"})

    assert response.status_code == 200
    assert response.json()["results"] == [{"id": str(key.pk), "text": "autocomplete-me"}]


def test_staff_without_permission_on_routing_rules_get_a_403(django_user_model):
    user = django_user_model.objects.create_user("helpdesk", password="pw-helpdesk-1",
                                                 is_staff=True)
    client = Client()
    client.force_login(user)

    assert client.get(TRY_URL).status_code == 403
