"""Admin behaviour for routing rules: CEL errors next to the field, scope/owner agreement,
target validation, what a rule applies to, and the audit trail."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from gateway.models import AuditEvent
from routing.models import RoutingRule
from routing.validators import validate_cel_expression
from tests.factories import (
    CustomerFactory,
    ProviderFactory,
    ProviderKeyFactory,
    RoutingRuleFactory,
    RoutingTargetFactory,
    TeamFactory,
    VirtualKeyFactory,
)
from tests.test_admin import admin_url, events, form_data

pytestmark = pytest.mark.django_db


def target(index: int, provider: Any = None, model: str = "", weight: str = "1",
           key: Any = None) -> dict[str, str]:
    return {f"targets-{index}-provider": str(provider.pk) if provider else "",
            f"targets-{index}-model": model, f"targets-{index}-weight": weight,
            f"targets-{index}-key": str(key.pk) if key else ""}


def rule_form(*targets: dict[str, str], **fields: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "premium", "description": "", "enabled": "on", "priority": "0",
        "scope": "global", "team": "", "customer": "", "virtual_key": "",
        "cel_expression": 'headers["x-tier"] == "premium"', "fallbacks": "[]",
        "targets-TOTAL_FORMS": str(len(targets)), "targets-INITIAL_FORMS": "0",
        "targets-MIN_NUM_FORMS": "1", "targets-MAX_NUM_FORMS": "1000",
    }
    for row in targets:
        data.update(row)
    data.update(fields)
    return data


def post_rule(client, *targets: dict[str, str], **fields: str):
    return client.post(admin_url(RoutingRule, "add"), rule_form(*targets, **fields))


def compiler_message(expression: str) -> str:
    with pytest.raises(ValidationError) as caught:
        validate_cel_expression(expression)
    return caught.value.messages[0]


def test_invalid_cel_is_refused_with_the_compiler_message_next_to_the_field(
        admin_client_logged_in):
    provider = ProviderFactory()
    response = post_rule(admin_client_logged_in, target(0, provider, "gpt-4o"),
                         cel_expression="model ==")

    assert response.status_code == 200
    message = compiler_message("model ==")
    assert message.startswith("CEL compile error")
    assert response.context["adminform"].form.errors["cel_expression"] == [message]
    html = response.text
    row = html[html.index("form-row errors field-cel_expression"):]
    row = row[:row.index("</textarea>")]
    assert 'id="id_cel_expression_error"' in row
    assert "Syntax error: mismatched input" in row
    assert not RoutingRule.objects.exists()
    assert not AuditEvent.objects.exists()


def test_a_type_error_in_cel_is_refused_too(admin_client_logged_in):
    response = post_rule(admin_client_logged_in, target(0, ProviderFactory()),
                         cel_expression='model + 1 == "x"')
    assert response.status_code == 200
    assert "cel_expression" in response.context["adminform"].form.errors
    assert not RoutingRule.objects.exists()


def test_a_valid_rule_with_targets_is_created_and_audited(admin_client_logged_in):
    openai, azure = ProviderFactory(), ProviderFactory()
    key = ProviderKeyFactory(provider=azure)
    response = post_rule(admin_client_logged_in, target(0, openai, "gpt-4o", "0.7"),
                         target(1, azure, "gpt-4o", "0.3", key=key),
                         fallbacks=f'["{openai.name}/gpt-4o-mini"]')
    assert response.status_code == 302
    rule = RoutingRule.objects.get()
    assert rule.fallbacks == [f"{openai.name}/gpt-4o-mini"]
    assert [(t.provider, t.weight, t.position) for t in rule.targets.all()] == [
        (openai, 0.7, 0), (azure, 0.3, 1)]
    assert events() == [("create", "routingrule"), ("create", "routingtarget"),
                        ("create", "routingtarget")]

    url = admin_url(RoutingRule, "change", rule.pk)
    data = form_data(admin_client_logged_in.get(url))
    data["targets-1-DELETE"] = "on"
    data["targets-0-weight"] = "1"
    assert admin_client_logged_in.post(url, data).status_code == 302
    assert events()[3:] == [("delete", "routingtarget"), ("update", "routingtarget")]


@pytest.mark.parametrize(("fallbacks", "message"), [
    pytest.param('["not valid!"]', "invalid fallback &#x27;not valid!&#x27;: use provider/model",
                 id="bad-entry"),
    pytest.param('"openai"', "must be a list of provider/model strings", id="not-a-list"),
    pytest.param("[oops", "Enter a valid JSON.", id="not-json"),
    pytest.param('["nope/gpt"]', "invalid fallback &#x27;nope/gpt&#x27;: unknown provider "
                 "&#x27;nope&#x27;", id="unknown-provider"),  # as the API says it
    pytest.param('["a' + "x" * 10_000 + '"]', "invalid fallback &#x27;a" + "x" * 78 + "...",
                 id="long-entry-cut-in-the-message"),
])
def test_invalid_fallbacks_show_the_shared_message(admin_client_logged_in, fallbacks, message):
    response = post_rule(admin_client_logged_in, target(0, ProviderFactory()),
                         fallbacks=fallbacks)
    assert response.status_code == 200
    assert message in response.text
    assert not RoutingRule.objects.exists()


def test_empty_fallbacks_are_an_empty_list(admin_client_logged_in):
    response = post_rule(admin_client_logged_in, target(0, ProviderFactory()), fallbacks="")
    assert response.status_code == 302
    assert RoutingRule.objects.get().fallbacks == []


@pytest.mark.parametrize(("rows", "message"), [
    pytest.param(lambda p, q, k: [target(0, p, "a", "0.6"), target(1, q, "b", "0.3")],
                 "target weights must sum to 1, got 0.9000", id="sum-0.9"),
    pytest.param(lambda p, q, k: [], "at least one target is required", id="no-target"),
    pytest.param(lambda p, q, k: [target(0, None, "", "1", key=k)],
                 "key requires provider to be set", id="key-without-provider"),
    pytest.param(lambda p, q, k: [target(0, q, "", "1", key=k)],
                 "does not belong to provider", id="foreign-key"),
    pytest.param(lambda p, q, k: [target(0, p, "GPT-4o", "0.5"), target(1, p, "gpt-4o", "0.5")],
                 "duplicate target entry: provider=", id="duplicate-case-insensitive"),
    pytest.param(lambda p, q, k: [target(0, p, "a", "1.5"), target(1, q, "b", "-0.5")],
                 "Ensure this value is", id="out-of-range"),
])
def test_invalid_targets_are_refused(admin_client_logged_in, rows, message):
    provider, other = ProviderFactory(), ProviderFactory()
    key = ProviderKeyFactory(provider=provider)
    response = post_rule(admin_client_logged_in, *rows(provider, other, key))
    assert response.status_code == 200
    assert message in response.text
    assert not RoutingRule.objects.exists()


@pytest.mark.parametrize(("fields", "field", "message"), [
    pytest.param({"scope": "team"}, "team", "is required for a team-scoped rule", id="no-team"),
    pytest.param({"scope": "global", "team": "TEAM"}, "team",
                 "must be empty for a global-scoped rule", id="global-with-team"),
    pytest.param({"scope": "customer", "customer": "CUSTOMER", "team": "TEAM"}, "team",
                 "must be empty for a customer-scoped rule", id="two-owners"),
    pytest.param({"scope": "virtual_key", "customer": "CUSTOMER"}, "virtual_key",
                 "is required for a virtual key-scoped rule", id="wrong-owner"),
])
def test_scope_and_owner_must_agree(admin_client_logged_in, fields, field, message):
    team, customer = TeamFactory(), CustomerFactory()
    ids = {"TEAM": str(team.pk), "CUSTOMER": str(customer.pk)}
    response = post_rule(admin_client_logged_in, target(0, ProviderFactory()),
                         **{name: ids.get(value, value) for name, value in fields.items()})
    assert response.status_code == 200
    assert message in response.context["adminform"].form.errors[field][0]
    assert not RoutingRule.objects.exists()


def test_rule_names_are_unique_within_their_scope(admin_client_logged_in):
    RoutingRuleFactory(name="premium")
    team = TeamFactory()
    RoutingRuleFactory(name="premium", scope="team", team=team)
    provider = ProviderFactory()
    clash = post_rule(admin_client_logged_in, target(0, provider))
    assert clash.status_code == 200
    assert clash.context["adminform"].form.errors["name"] == [
        'a rule named "premium" already exists in the global scope']
    team_clash = post_rule(admin_client_logged_in, target(0, provider), scope="team",
                           team=str(team.pk))
    assert "already exists in this team" in team_clash.context["adminform"].form.errors["name"][0]
    other_team = post_rule(admin_client_logged_in, target(0, provider), scope="team",
                           team=str(TeamFactory().pk))
    assert other_team.status_code == 302


def test_change_page_lists_what_the_rule_applies_to(admin_client_logged_in):
    team = TeamFactory(name="platform")
    keys = [VirtualKeyFactory(team=team, name="svc-a"), VirtualKeyFactory(team=team,
                                                                          name="svc-b")]
    VirtualKeyFactory(name="elsewhere")
    rule = RoutingTargetFactory(rule__scope="team", rule__team=team).rule
    html = admin_client_logged_in.get(admin_url(RoutingRule, "change", rule.pk)).text
    assert "team <a" in html and "platform" in html
    for key in keys:
        assert key.name in html
    assert "elsewhere" not in html

    global_rule = RoutingTargetFactory().rule
    page = admin_client_logged_in.get(admin_url(RoutingRule, "change", global_rule.pk))
    assert "all virtual keys" in page.text

    customer = CustomerFactory()
    VirtualKeyFactory(team=None, customer=customer, name="direct-key")
    VirtualKeyFactory(team=TeamFactory(customer=customer), name="team-key")
    customer_rule = RoutingTargetFactory(rule__scope="customer", rule__customer=customer).rule
    page = admin_client_logged_in.get(admin_url(RoutingRule, "change", customer_rule.pk))
    assert "direct-key" in page.text and "team-key" in page.text


def test_changelist_columns_and_enable_actions(admin_client_logged_in):
    rule = RoutingTargetFactory(model="gpt-4o-mini", weight=1.0).rule
    page = admin_client_logged_in.get(admin_url(RoutingRule, "changelist"),
                                      {"q": "gpt-4o"}).text
    assert rule.name in page and "/gpt-4o-mini × 1" in page
    admin_client_logged_in.post(admin_url(RoutingRule, "changelist"), {
        "action": "set_enabled_false", "_selected_action": [str(rule.pk)], "index": "0"})
    rule.refresh_from_db()
    assert rule.enabled is False
    assert events() == [("update", "routingrule")]


def test_the_rule_list_runs_in_evaluation_order_and_shows_each_condition(
        admin_client_logged_in):
    team = TeamFactory()
    RoutingRuleFactory(name="global-first-by-priority", priority=0,
                       cel_expression='model == "gpt-4o"')
    RoutingRuleFactory(name="team-rule", scope="team", team=team, priority=50,
                       cel_expression='headers["x-tier"] == "premium" && ' + "true && " * 30
                       + "true")
    page = admin_client_logged_in.get(admin_url(RoutingRule, "changelist"))
    names = [rule.name for rule in page.context["cl"].result_list]
    assert names == ["team-rule", "global-first-by-priority"]  # the team's rules run first
    assert "<code>model == &quot;gpt-4o&quot;</code>" in page.text
    assert "headers[&quot;x-tier&quot;] == &quot;premium&quot; &amp;&amp; true" in page.text
    assert "…</code>" in page.text  # a long condition is cut
    assert RoutingRule.objects.count() == 2
