"""Admin behaviour for virtual keys (secret shown once, rotation, activation), owners and
their limits (budgets, rate limits, usage resets), with the audit trail of each write."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.sessions.models import Session
from django.utils import timezone

from gateway.models import AuditEvent
from gateway.secrets import digest
from governance.models import (
    Budget,
    Customer,
    ModelConfig,
    RateLimit,
    Team,
    VirtualKey,
    VirtualKeyProviderConfig,
)
from tests.factories import (
    BudgetFactory,
    CustomerFactory,
    ModelConfigFactory,
    ProviderConfigFactory,
    ProviderFactory,
    ProviderKeyFactory,
    RateLimitFactory,
    TeamFactory,
    VirtualKeyFactory,
)
from tests.test_admin import admin_url, events, form_data

pytestmark = pytest.mark.django_db

SECRET = re.compile(r"sk-gw-[A-Za-z0-9_-]{32}")
LIMIT_PREFIXES = ("budgets", "ratelimits")


def management(prefix: str, total: int = 0, initial: int = 0) -> dict[str, str]:
    return {f"{prefix}-TOTAL_FORMS": str(total), f"{prefix}-INITIAL_FORMS": str(initial),
            f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"}


def key_form(**fields: Any) -> dict[str, Any]:
    data = {"name": "ci-key", "description": "", "team": "", "customer": "", "is_active": "on",
            "expires_at_0": "", "expires_at_1": "", "max_concurrent_requests": ""}
    for prefix in ("provider_configs", *LIMIT_PREFIXES):
        data.update(management(prefix))
    data.update(fields)
    return data


def secrets_in(html: str) -> list[str]:
    return SECRET.findall(html)


# --- virtual keys: the secret is shown exactly once ---------------------------------------------

def test_adding_a_key_shows_its_secret_once(admin_client_logged_in):
    team = TeamFactory()
    response = admin_client_logged_in.post(admin_url(VirtualKey, "add"),
                                           key_form(team=str(team.pk)))

    assert response.status_code == 200
    assert "Copy this secret now" in response.text
    assert response["Cache-Control"].startswith("no-store")
    (secret,) = set(secrets_in(response.text))
    key = VirtualKey.objects.get(name="ci-key")
    assert digest(secret) == key.secret_hash
    assert key.secret_prefix == secret[:10]
    assert key.team == team

    # Never again: not on the key's page, the list, nor in any stored row or session.
    for url in (admin_url(VirtualKey, "change", key.pk), admin_url(VirtualKey, "changelist"),
                admin_url(AuditEvent, "changelist")):
        page = admin_client_logged_in.get(url)
        assert page.status_code == 200
        assert secret not in page.text
        assert f"{key.secret_prefix}…" in page.text or url.endswith("auditevent/")
    assert secret not in str(list(VirtualKey.objects.values()))
    assert secret not in str(list(AuditEvent.objects.values()))
    assert all(secret not in str(session.get_decoded()) for session in Session.objects.all())
    assert events() == [("create", "virtualkey")]
    before, after = AuditEvent.objects.get().changes["secret_hash"]
    assert before is None
    assert after.startswith("[redacted] ")


def test_adding_a_key_with_its_provider_config_budget_and_rate_limit(admin_client_logged_in):
    key_value = ProviderKeyFactory()
    provider = key_value.provider
    data = key_form(
        calendar_aligned="on",
        **management("provider_configs", total=1),
        **{"provider_configs-0-provider": str(provider.pk), "provider_configs-0-weight": "1",
           "provider_configs-0-allowed_models": '["gpt-4o"]',
           "provider_configs-0-keys": [str(key_value.pk)]},
        **management("budgets", total=1),
        **{"budgets-0-max_limit": "25.50", "budgets-0-reset_duration": "1M"},
        **management("ratelimits", total=1),
        **{"ratelimits-0-request_max_limit": "60", "ratelimits-0-request_reset_duration": "1m",
           "ratelimits-0-token_max_limit": "", "ratelimits-0-token_reset_duration": ""},
    )
    response = admin_client_logged_in.post(admin_url(VirtualKey, "add"), data)

    assert response.status_code == 200, response.context and response.context["errors"]
    key = VirtualKey.objects.get(name="ci-key")
    config = key.provider_configs.get()
    assert list(config.keys.all()) == [key_value]
    assert config.allowed_models == ["gpt-4o"]
    budget = key.budgets.get()
    now = timezone.now()
    assert budget.calendar_aligned is True  # follows the key
    assert budget.last_reset == datetime(now.year, now.month, 1, tzinfo=UTC)
    limit = key.ratelimits.get()
    assert limit.request_max_limit == 60
    assert limit.token_last_reset is not None and limit.request_last_reset is not None
    assert events() == [("create", "virtualkey"), ("create", "virtualkeyproviderconfig"),
                        ("update", "virtualkeyproviderconfig"), ("create", "budget"),
                        ("create", "ratelimit")]
    keys_change = AuditEvent.objects.get(action="update").changes
    assert keys_change == {"keys": [[], [str(key_value.pk)]]}


def test_team_and_customer_on_one_key_is_a_form_error(admin_client_logged_in):
    team, customer = TeamFactory(), CustomerFactory()
    response = admin_client_logged_in.post(
        admin_url(VirtualKey, "add"), key_form(team=str(team.pk), customer=str(customer.pk))
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    message = "A virtual key belongs to a team or a customer, not both."
    assert errors["team"] == [message]
    assert errors["customer"] == [message]
    assert not VirtualKey.objects.exists()
    assert not secrets_in(response.text)


def test_changing_a_key_to_both_owners_is_a_form_error(admin_client_logged_in):
    key = VirtualKeyFactory()
    url = admin_url(VirtualKey, "change", key.pk)
    data = form_data(admin_client_logged_in.get(url))
    data["customer"] = str(CustomerFactory().pk)
    response = admin_client_logged_in.post(url, data)
    assert response.status_code == 200
    assert "not both" in response.text
    key.refresh_from_db()
    assert key.customer is None


def test_provider_config_keys_must_belong_to_its_provider(admin_client_logged_in):
    other_key = ProviderKeyFactory()
    provider = ProviderFactory()
    data = key_form(**management("provider_configs", total=1), **{
        "provider_configs-0-provider": str(provider.pk),
        "provider_configs-0-allowed_models": '["*"]',
        "provider_configs-0-keys": [str(other_key.pk)],
    })
    response = admin_client_logged_in.post(admin_url(VirtualKey, "add"), data)
    assert response.status_code == 200
    assert f"not keys of provider {provider.name}" in response.text
    assert not VirtualKey.objects.exists()


# --- rotation -----------------------------------------------------------------------------------

def test_rotate_button_confirms_then_shows_the_new_secret_once(admin_client_logged_in):
    key = VirtualKeyFactory()
    old_hash = key.secret_hash
    change_url = admin_url(VirtualKey, "change", key.pk)
    rotate_url = admin_url(VirtualKey, "rotate", key.pk)
    assert rotate_url in admin_client_logged_in.get(change_url).text

    confirmation = admin_client_logged_in.get(rotate_url)
    assert confirmation.status_code == 200
    assert "Yes, rotate the secret" in confirmation.text
    key.refresh_from_db()
    assert key.secret_hash == old_hash  # GET changes nothing

    response = admin_client_logged_in.post(rotate_url)
    assert response.status_code == 200
    (secret,) = set(secrets_in(response.text))
    key.refresh_from_db()
    assert key.secret_hash == digest(secret) != old_hash
    assert secret not in admin_client_logged_in.get(change_url).text
    event = AuditEvent.objects.get()
    assert (event.action, event.source, event.actor_name) == ("rotate", "admin", "operator")
    assert secret not in str(event.changes)


def test_rotate_needs_csrf(staff_user):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    key = VirtualKeyFactory()
    response = client.post(admin_url(VirtualKey, "rotate", key.pk))
    assert response.status_code == 403
    assert AuditEvent.objects.count() == 0


def test_rotate_of_an_unknown_key_redirects(admin_client_logged_in):
    response = admin_client_logged_in.post(
        admin_url(VirtualKey, "rotate", "00000000-0000-0000-0000-000000000000"))
    assert response.status_code == 302
    assert AuditEvent.objects.count() == 0


def test_rotate_action_confirms_then_rotates_one_key(admin_client_logged_in):
    key = VirtualKeyFactory()
    old_hash = key.secret_hash
    changelist = admin_url(VirtualKey, "changelist")
    selection = {"action": "rotate_secret", "_selected_action": [str(key.pk)]}

    confirmation = admin_client_logged_in.post(changelist, {**selection, "index": "0"})
    assert confirmation.status_code == 200
    assert "Yes, rotate the secret" in confirmation.text
    key.refresh_from_db()
    assert key.secret_hash == old_hash

    response = admin_client_logged_in.post(changelist, {**selection, "post": "yes"})
    assert response.status_code == 200
    (secret,) = set(secrets_in(response.text))
    key.refresh_from_db()
    assert key.secret_hash == digest(secret) != old_hash
    assert secret not in admin_client_logged_in.get(changelist).text


def test_rotate_action_refuses_several_keys(admin_client_logged_in):
    keys = [VirtualKeyFactory(), VirtualKeyFactory()]
    hashes = {key.pk: key.secret_hash for key in keys}
    response = admin_client_logged_in.post(admin_url(VirtualKey, "changelist"), {
        "action": "rotate_secret", "_selected_action": [str(key.pk) for key in keys],
        "post": "yes",
    }, follow=True)
    assert "Select exactly one virtual key" in response.text
    assert {key.pk: key.secret_hash for key in VirtualKey.objects.all()} == hashes


# --- activation ---------------------------------------------------------------------------------

def test_deactivate_and_activate_actions(admin_client_logged_in):
    keys = [VirtualKeyFactory(), VirtualKeyFactory(), VirtualKeyFactory(is_active=False)]
    changelist = admin_url(VirtualKey, "changelist")
    selected = [str(key.pk) for key in keys]

    response = admin_client_logged_in.post(
        changelist, {"action": "deactivate", "_selected_action": selected, "index": "0"},
        follow=True)
    assert "2 virtual key(s) deactivated." in response.text
    assert not VirtualKey.objects.filter(is_active=True).exists()

    admin_client_logged_in.post(changelist, {"action": "activate",
                                             "_selected_action": selected[:1], "index": "0"})
    assert list(VirtualKey.objects.filter(is_active=True)) == [keys[0]]
    assert events() == [("update", "virtualkey")] * 3
    assert AuditEvent.objects.filter(object_id=str(keys[0].pk)).first().changes == {
        "is_active": [False, True]}


def test_switching_a_key_to_calendar_alignment_realigns_its_budgets(admin_client_logged_in):
    key = VirtualKeyFactory()
    config = ProviderConfigFactory(virtual_key=key)
    own = BudgetFactory(virtual_key=key, reset_duration="1d", current_usage=Decimal(7))
    nested = BudgetFactory(provider_config=config, reset_duration="1w")
    url = admin_url(VirtualKey, "change", key.pk)
    data = form_data(admin_client_logged_in.get(url))
    data["calendar_aligned"] = "on"

    response = admin_client_logged_in.post(url, data)

    assert response.status_code == 302
    own.refresh_from_db()
    nested.refresh_from_db()
    now = timezone.now()
    midnight = datetime(now.year, now.month, now.day, tzinfo=UTC)
    assert own.calendar_aligned and own.last_reset == midnight
    assert own.current_usage == 0
    assert nested.calendar_aligned
    assert nested.last_reset == midnight - timedelta(days=midnight.weekday())


# --- owners, budgets and rate limits --------------------------------------------------------------

def customer_form(**fields: Any) -> dict[str, Any]:
    data = {"name": "acme", "description": ""}
    for prefix in LIMIT_PREFIXES:
        data.update(management(prefix))
    data.update(fields)
    return data


def test_customer_with_inline_budget_is_audited_on_create_update_delete(admin_client_logged_in):
    add = admin_client_logged_in.post(admin_url(Customer, "add"), customer_form(**{
        **management("budgets", total=1),
        "budgets-0-max_limit": "100", "budgets-0-reset_duration": "1d",
    }))
    assert add.status_code == 302
    customer = Customer.objects.get()
    budget = customer.budgets.get()
    assert budget.last_reset is not None and budget.max_limit == 100
    assert events() == [("create", "customer"), ("create", "budget")]

    url = admin_url(Customer, "change", customer.pk)
    data = form_data(admin_client_logged_in.get(url))
    data.update({"name": "acme-corp", "budgets-0-max_limit": "150"})
    assert admin_client_logged_in.post(url, data).status_code == 302
    assert events()[2:] == [("update", "customer"), ("update", "budget")]
    changes = AuditEvent.objects.filter(object_type="budget", action="update").get().changes
    assert list(changes) == ["max_limit"]
    assert [Decimal(value) for value in changes["max_limit"]] == [100, 150]

    data = form_data(admin_client_logged_in.get(url))
    data["budgets-0-DELETE"] = "on"
    assert admin_client_logged_in.post(url, data).status_code == 302
    assert not Budget.objects.exists()
    assert events()[4:] == [("delete", "budget")]

    delete = admin_client_logged_in.post(admin_url(Customer, "delete", customer.pk),
                                         {"post": "yes"})
    assert delete.status_code == 302
    assert not Customer.objects.exists()
    assert events()[5:] == [("delete", "customer")]
    assert {(event.actor_name, event.source) for event in AuditEvent.objects.all()} == {
        ("operator", "admin")}


def test_bulk_delete_audits_each_object(admin_client_logged_in):
    teams = [TeamFactory(), TeamFactory()]
    response = admin_client_logged_in.post(admin_url(Team, "changelist"), {
        "action": "delete_selected", "_selected_action": [str(team.pk) for team in teams],
        "post": "yes",
    })
    assert response.status_code == 302
    assert not Team.objects.exists()
    assert sorted(AuditEvent.objects.values_list("object_id", flat=True)) == sorted(
        str(team.pk) for team in teams)
    assert events() == [("delete", "team")] * 2


def test_team_budget_with_calendar_alignment_starts_at_the_boundary(admin_client_logged_in):
    response = admin_client_logged_in.post(admin_url(Team, "add"), customer_form(
        name="platform", customer="", **management("budgets", total=2), **{
            "budgets-0-max_limit": "10", "budgets-0-reset_duration": "1d",
            "budgets-0-calendar_aligned": "on",
            "budgets-1-max_limit": "200", "budgets-1-reset_duration": "1M",
        }))
    assert response.status_code == 302
    budgets = {budget.reset_duration: budget for budget in Team.objects.get().budgets.all()}
    aligned, rolling = budgets["1d"], budgets["1M"]
    now = timezone.now()
    assert aligned.last_reset == datetime(now.year, now.month, now.day, tzinfo=UTC)
    assert not rolling.calendar_aligned
    assert now - rolling.last_reset < timedelta(minutes=1)


@pytest.mark.parametrize("second", ["1d", "daily", "24h", "1440m"])
def test_two_team_budgets_with_one_window_are_refused(admin_client_logged_in, second):
    response = admin_client_logged_in.post(admin_url(Team, "add"), customer_form(
        name="platform", customer="", **management("budgets", total=2), **{
            "budgets-0-max_limit": "10", "budgets-0-reset_duration": "1d",
            "budgets-1-max_limit": "20", "budgets-1-reset_duration": second,
        }))
    assert response.status_code == 200
    assert f"duplicate reset_duration {second}" in response.text
    assert not Team.objects.exists()


def test_a_calendar_month_and_thirty_days_are_two_windows(admin_client_logged_in):
    admin_client_logged_in.post(admin_url(Team, "add"), customer_form(
        name="platform", customer="", **management("budgets", total=2), **{
            "budgets-0-max_limit": "10", "budgets-0-reset_duration": "1M",
            "budgets-1-max_limit": "20", "budgets-1-reset_duration": "30d",
        }))
    assert sorted(Team.objects.get().budgets.values_list("reset_duration", flat=True)) == \
        ["1M", "30d"]


def test_customer_takes_at_most_one_budget(admin_client_logged_in):
    response = admin_client_logged_in.post(admin_url(Customer, "add"), customer_form(**{
        **management("budgets", total=2),
        "budgets-0-max_limit": "10", "budgets-0-reset_duration": "1d",
        "budgets-1-max_limit": "20", "budgets-1-reset_duration": "1w",
    }))
    assert response.status_code == 200
    assert "Please submit at most 1 form." in response.text
    assert not Customer.objects.exists()


@pytest.mark.parametrize(("fields", "message"), [
    pytest.param({"ratelimits-0-token_max_limit": "1000"},
                 "is required when token_max_limit is set", id="limit-without-window"),
    pytest.param({"ratelimits-0-token_reset_duration": "1m"},
                 "set a token limit, a request limit or both", id="window-without-limit"),
    pytest.param({"ratelimits-0-request_max_limit": "-1",
                  "ratelimits-0-request_reset_duration": "1m"},
                 "Ensure this value is greater than or equal to 1.", id="negative"),
    pytest.param({"ratelimits-0-request_max_limit": "5",
                  "ratelimits-0-request_reset_duration": "1x"},
                 "invalid duration", id="bad-window"),
])
def test_invalid_rate_limit_is_a_form_error(admin_client_logged_in, fields, message):
    data = customer_form(**management("ratelimits", total=1),
                         **{"ratelimits-0-token_max_limit": "",
                            "ratelimits-0-token_reset_duration": "",
                            "ratelimits-0-request_max_limit": "",
                            "ratelimits-0-request_reset_duration": "", **fields})
    response = admin_client_logged_in.post(admin_url(Customer, "add"), data)
    assert response.status_code == 200
    assert message in response.text
    assert not RateLimit.objects.exists()


def test_model_config_needs_no_provider_and_is_unique(admin_client_logged_in):
    form = {"model_name": "gpt-4o", "provider": "", **management("budgets"),
            **management("ratelimits")}
    assert admin_client_logged_in.post(admin_url(ModelConfig, "add"), form).status_code == 302
    assert "any provider" in admin_client_logged_in.get(admin_url(ModelConfig,
                                                                  "changelist")).text
    again = admin_client_logged_in.post(admin_url(ModelConfig, "add"), form)
    assert again.status_code == 200
    assert "A model config for this model on all providers exists." in again.text
    assert ModelConfig.objects.count() == 1


# --- usage columns and resets ---------------------------------------------------------------------

def test_changelists_show_usage_against_the_limit(admin_client_logged_in):
    key = VirtualKeyFactory(name="busy")
    BudgetFactory(virtual_key=key, max_limit=200, current_usage=Decimal(50))
    RateLimitFactory(virtual_key=key, request_max_limit=10, request_current_usage=9)

    keys = admin_client_logged_in.get(admin_url(VirtualKey, "changelist")).text
    assert "$50.00 / $200.00 per 1d" in keys
    assert "25.0%" in keys
    budgets = admin_client_logged_in.get(admin_url(Budget, "changelist"),
                                         {"owner": "virtual_key"}).text
    assert 'virtual key &quot;busy&quot;' in budgets and "25.0%" in budgets
    limits_page = admin_client_logged_in.get(admin_url(RateLimit, "changelist")).text
    assert "10 per 1m" in limits_page and "90.0%" in limits_page
    assert admin_url(VirtualKey, "change", key.pk) in limits_page  # the owner is a link


def test_owner_type_filter(admin_client_logged_in):
    BudgetFactory(team=TeamFactory(name="t-one"))
    BudgetFactory(customer=CustomerFactory(name="c-one"))
    page = admin_client_logged_in.get(admin_url(Budget, "changelist"), {"owner": "team"})
    assert "team &quot;t-one&quot;" in page.text
    assert "c-one" not in page.text


def reset_action(client, model, objects) -> Any:
    """Choose "Reset usage", see what it will do, confirm."""
    data = {"action": "reset_usage", "_selected_action": [str(obj.pk) for obj in objects],
            "index": "0"}
    asked = client.post(admin_url(model, "changelist"), data)
    assert asked.status_code == 200 and "This cannot be undone" in asked.text
    assert 'name="confirmed" value="yes"' in asked.text
    assert not AuditEvent.objects.filter(action="reset_usage").exists()  # nothing yet
    return client.post(admin_url(model, "changelist"), {**data, "confirmed": "yes"})


def test_reset_usage_asks_first_and_a_cancel_changes_nothing(admin_client_logged_in):
    budget = BudgetFactory(team=TeamFactory(name="research"), current_usage=Decimal(42))
    asked = admin_client_logged_in.post(admin_url(Budget, "changelist"), {
        "action": "reset_usage", "_selected_action": [str(budget.pk)], "index": "0"})
    assert asked.status_code == 200
    assert "research" in asked.text and "Yes, reset their usage" in asked.text
    budget.refresh_from_db()
    assert budget.current_usage == 42 and budget.usage_reset_at is None


def test_reset_usage_action_on_budgets(admin_client_logged_in):
    budget = BudgetFactory(team=TeamFactory(), current_usage=Decimal(42))
    response = reset_action(admin_client_logged_in, Budget, [budget])
    assert response.status_code == 302
    budget.refresh_from_db()
    assert budget.current_usage == 0
    assert budget.usage_reset_at is not None
    event = AuditEvent.objects.get()
    assert (event.action, event.actor_name, event.source, event.object_id) == (
        "reset_usage", "operator", "admin", str(budget.pk))


@pytest.mark.parametrize(("model", "factory", "owner_field"), [
    pytest.param(Customer, CustomerFactory, "customer", id="customer"),
    pytest.param(Team, TeamFactory, "team", id="team"),
    pytest.param(VirtualKey, VirtualKeyFactory, "virtual_key", id="virtual-key"),
    pytest.param(VirtualKeyProviderConfig, ProviderConfigFactory, "provider_config",
                 id="provider-config"),
    pytest.param(ModelConfig, ModelConfigFactory, "model_config", id="model-config"),
    pytest.param(ProviderFactory._meta.model, ProviderFactory, "provider", id="provider"),
])
def test_reset_usage_action_on_owners(admin_client_logged_in, model, factory, owner_field):
    owner = factory()
    budget = BudgetFactory(**{owner_field: owner}, current_usage=Decimal(9))
    limit = RateLimitFactory(**{owner_field: owner}, request_current_usage=5,
                             token_current_usage=0)

    response = reset_action(admin_client_logged_in, model, [owner])

    assert response.status_code == 302
    budget.refresh_from_db()
    limit.refresh_from_db()
    assert budget.current_usage == 0
    assert limit.request_current_usage == 0
    assert sorted(events()) == [("reset_usage", "budget"), ("reset_usage", "ratelimit")]


def test_budget_admin_edits_are_audited_and_cannot_add(admin_client_logged_in):
    budget = BudgetFactory(team=TeamFactory())
    assert admin_client_logged_in.get(admin_url(Budget, "add")).status_code == 403
    url = admin_url(Budget, "change", budget.pk)
    data = form_data(admin_client_logged_in.get(url))
    data["max_limit"] = "-3"
    assert "must be greater than 0" in admin_client_logged_in.post(url, data).text
    data["max_limit"] = "300"
    assert admin_client_logged_in.post(url, data).status_code == 302
    changes = AuditEvent.objects.get().changes
    assert list(changes) == ["max_limit"]
    assert [Decimal(value) for value in changes["max_limit"]] == [100, 300]


@pytest.mark.parametrize(("allowed_models", "message"), [
    pytest.param("[1]", "every entry must be a non-empty string", id="not-strings"),
    pytest.param('["*", "gpt-4o"]', "wildcard &#x27;*&#x27; cannot be used with other values",
                 id="wildcard-mixed"),
    pytest.param('["gpt-4o", "GPT-4o"]', "duplicate value", id="duplicate"),
    pytest.param('{"a": 1}', "must be a list of strings", id="not-a-list"),
])
def test_allowed_models_show_the_shared_whitelist_message(admin_client_logged_in,
                                                           allowed_models, message):
    data = key_form(**management("provider_configs", total=1), **{
        "provider_configs-0-provider": str(ProviderFactory().pk),
        "provider_configs-0-allowed_models": allowed_models,
    })
    response = admin_client_logged_in.post(admin_url(VirtualKey, "add"), data)
    assert response.status_code == 200
    assert message in response.text
    assert not VirtualKey.objects.exists()


def test_budget_admin_refuses_a_second_budget_for_one_window(admin_client_logged_in):
    team = TeamFactory()
    BudgetFactory(team=team, reset_duration="1d")
    weekly = BudgetFactory(team=team, reset_duration="1w")
    url = admin_url(Budget, "change", weekly.pk)
    data = form_data(admin_client_logged_in.get(url))
    data["reset_duration"] = "1d"
    response = admin_client_logged_in.post(url, data)
    assert response.status_code == 200
    assert "duplicate reset_duration 1d" in response.text
    weekly.refresh_from_db()
    assert weekly.reset_duration == "1w"


def test_deleting_a_team_or_customer_says_which_teams_and_keys_stay_detached(
        admin_client_logged_in):
    customer = CustomerFactory(name="acme")
    team = TeamFactory(name="research", customer=customer)
    key = VirtualKeyFactory(name="<b>prod</b>", team=team)
    direct = VirtualKeyFactory(name="billing", customer=customer, team=None)
    page = admin_client_logged_in.get(admin_url(Team, "delete", team.pk)).text
    assert ("Virtual key “&lt;b&gt;prod&lt;/b&gt;” stays, detached: the budgets, rate limits "
            "and routing rules of “research” no longer apply to it") in page
    page = admin_client_logged_in.get(admin_url(Customer, "delete", customer.pk)).text
    assert "Team “research” stays, detached" in page
    assert "Virtual key “billing” stays, detached" in page
    bulk = admin_client_logged_in.post(admin_url(Team, "changelist"), {
        "action": "delete_selected", "_selected_action": [str(team.pk)]}).text
    assert "Virtual key “&lt;b&gt;prod&lt;/b&gt;” stays, detached" in bulk

    assert admin_client_logged_in.post(admin_url(Team, "delete", team.pk),
                                       {"post": "yes"}).status_code == 302
    key.refresh_from_db()
    direct.refresh_from_db()
    assert key.team is None and direct.customer == customer  # kept, detached from the team


def test_budget_amounts_show_without_the_zeros_of_their_nine_places(admin_client_logged_in):
    team = TeamFactory(name="research")
    BudgetFactory(team=team, max_limit=Decimal("50"), reset_duration="1d")
    page = admin_client_logged_in.get(admin_url(Team, "change", team.pk)).text
    assert 'value="50"' in page and "50.000000000" not in page
    delete = admin_client_logged_in.get(admin_url(Team, "delete", team.pk)).text
    assert "$50 per 1d" in delete


@pytest.mark.parametrize("value", ["-1", "0"])
def test_a_key_concurrency_below_one_says_at_least_one(admin_client_logged_in, value):
    key = VirtualKeyFactory(name="k")
    url = admin_url(VirtualKey, "change", key.pk)
    data = form_data(admin_client_logged_in.get(url))
    data["max_concurrent_requests"] = value
    response = admin_client_logged_in.post(url, data)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["max_concurrent_requests"] == [
        "Ensure this value is greater than or equal to 1."]


@pytest.mark.parametrize(("typed", "saved"), [
    ("gpt-4o, gpt-4o-mini", ["gpt-4o", "gpt-4o-mini"]),
    ("gpt-4o\r\n gpt-4o-mini ,", ["gpt-4o", "gpt-4o-mini"]),  # new lines, spaces, a trailing comma
    ("gpt-4o, gpt-4o", ["gpt-4o"]),
    ("*", ["*"]),
    ('["gpt-4o"]', ["gpt-4o"]),  # JSON still works
    ("", []),
])
def test_allowed_models_are_typed_as_names(admin_client_logged_in, typed, saved):
    from governance.models import VirtualKeyProviderConfig

    data = key_form(**management("provider_configs", total=1), **{
        "provider_configs-0-provider": str(ProviderFactory().pk),
        "provider_configs-0-allowed_models": typed,
    })
    response = admin_client_logged_in.post(admin_url(VirtualKey, "add"), data)
    assert response.status_code == 200
    assert VirtualKeyProviderConfig.objects.get().allowed_models == saved


def test_a_new_provider_config_allows_every_model_until_narrowed(admin_client_logged_in):
    # An empty list allows no model (the API's rule): the admin's blank row said [] and a
    # key saved from it refused every request.
    from governance.models import VirtualKeyProviderConfig

    page = admin_client_logged_in.get(admin_url(VirtualKey, "add")).text
    assert 'name="provider_configs-__prefix__-allowed_models"' in page
    empty_row = page.split('name="provider_configs-__prefix__-allowed_models"', 1)[1]
    assert empty_row.split("</textarea>", 1)[0].endswith(">\n*")
    assert "empty for no model" in page
    config = ProviderConfigFactory(allowed_models=[])
    listing = admin_client_logged_in.get(admin_url(VirtualKeyProviderConfig, "changelist")).text
    assert f">{config.provider}<" in listing and ">none<" in listing


def test_the_key_list_says_which_keys_are_expired(admin_client_logged_in):
    from datetime import timedelta

    from django.utils import timezone

    VirtualKeyFactory(name="lapsed", expires_at=timezone.now() - timedelta(days=1))
    VirtualKeyFactory(name="current", expires_at=timezone.now() + timedelta(days=1))
    VirtualKeyFactory(name="switched-off", is_active=False)
    url = admin_url(VirtualKey, "changelist")
    page = admin_client_logged_in.get(url).text
    assert ">expired<" in page and ">inactive<" in page
    for state, names in (("expired", {"lapsed"}), ("active", {"current"}),
                         ("inactive", {"switched-off"})):
        listed = admin_client_logged_in.get(url, {"state": state}).context["cl"].result_list
        assert {key.name for key in listed} == names


def test_usage_records_filter_by_owner_and_total_what_is_selected(admin_client_logged_in):
    from governance.sink import UsageEvent
    from governance.tasks import write_records

    team = TeamFactory(name="research")
    key = VirtualKeyFactory(name="alice", team=team)
    other = VirtualKeyFactory(name="bob")

    def event(request_id, owner, cost_nanos, status=200):
        return UsageEvent(request_id=request_id, created_at=timezone.now().timestamp(),
                          provider="openai", requested_model="gpt-4o", resolved_model="gpt-4o",
                          request_type="chat_completion", status_code=status,
                          virtual_key_id=str(owner.pk), virtual_key_name=owner.name,
                          team_id=str(owner.team_id) if owner.team_id else None,
                          prompt_tokens=10, completion_tokens=5, cost_nanos=cost_nanos)

    write_records([event("a1", key, 1_500), event("a2", key, 2_500, status=429),
                   event("b1", other, 7_000_000)])
    from governance.models import UsageRecord

    url = admin_url(UsageRecord, "changelist")
    everything = admin_client_logged_in.get(url)
    assert "Selected:" not in everything.text  # no totals over the whole table
    for params in ({"virtual_key_id": str(key.pk)}, {"team_id": str(team.pk)}):
        page = admin_client_logged_in.get(url, params)
        assert {record.request_id for record in page.context["cl"].result_list} == {"a1", "a2"}
        assert "Selected: 2 requests" in page.text and "(1 not 2xx)" in page.text
        assert "20 + 10 tokens" in page.text and "$0.000004" in page.text
    assert "bob" in everything.text and "research" in everything.text  # the filter choices
    hostile = admin_client_logged_in.get(url, {"virtual_key_id": "<script>"})
    assert hostile.status_code == 200 and not hostile.context["cl"].result_list


def test_budget_and_rate_limit_lists_say_when_each_window_resets(admin_client_logged_in):
    from datetime import timedelta

    from django.utils.formats import date_format

    team = TeamFactory(name="research")
    BudgetFactory(team=team, reset_duration="1d", calendar_aligned=True)
    RateLimitFactory(team=team, token_max_limit=None, token_reset_duration=None,
                     request_max_limit=10, request_reset_duration="1d",
                     request_last_reset=timezone.now())
    midnight = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0,
                                                      microsecond=0) + timedelta(days=1)
    expected = date_format(timezone.localtime(midnight), "DATETIME_FORMAT")
    budgets = admin_client_logged_in.get(admin_url(Budget, "changelist")).text
    assert "Next reset" in budgets and expected in budgets, expected
    limits_page = admin_client_logged_in.get(admin_url(RateLimit, "changelist")).text
    assert "- / " in limits_page  # no token limit; the request window's end follows


def test_a_whole_secret_pasted_in_the_search_finds_its_key(admin_client_logged_in):
    from gateway.secrets import new_virtual_key_secret

    secret = new_virtual_key_secret()
    VirtualKeyFactory(name="leaked", secret=secret)
    VirtualKeyFactory(name="other")
    url = admin_url(VirtualKey, "changelist")
    found = admin_client_logged_in.get(url, {"q": f" {secret} "}).context["cl"].result_list
    assert [key.name for key in found] == ["leaked"]
    wrong = admin_client_logged_in.get(url, {"q": secret[:-1] + "x"}).context["cl"].result_list
    assert list(wrong) == []
