"""Every registered admin renders for staff and refuses non-staff; audit events are read-only;
hostile input gets form errors, never a 500."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django import forms
from django.contrib import admin
from django.contrib.auth.models import Group
from django.db import models
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from gateway import audit
from gateway.audit import Actor
from gateway.models import (
    AdminToken,
    AuditEvent,
    ModelAlias,
    Provider,
    ProviderKey,
)
from gateway.secrets import digest, new_admin_token
from governance.models import (
    Budget,
    Customer,
    ModelConfig,
    RateLimit,
    Team,
    UsageRecord,
    UsageRollup,
    VirtualKey,
    VirtualKeyProviderConfig,
)
from pricing.models import PricingOverride
from routing.models import RoutingRule
from tests.factories import (
    BudgetFactory,
    CustomerFactory,
    ModelAliasRouteFactory,
    ModelConfigFactory,
    PricingOverrideFactory,
    ProviderConfigFactory,
    ProviderFactory,
    ProviderKeyFactory,
    RateLimitFactory,
    RoutingTargetFactory,
    TeamFactory,
    VirtualKeyFactory,
)

pytestmark = pytest.mark.django_db


# --- helpers shared by the admin tests of every app ------------------------------------------

def admin_url(model: type[models.Model], view: str, *args: object) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def _field_data(form: forms.BaseForm, data: dict[str, Any]) -> None:
    for name, field in form.fields.items():
        key = form.add_prefix(name)
        value = form[name].value()
        if isinstance(field, forms.BooleanField):
            if value:
                data[key] = "on"
        elif isinstance(field.widget, forms.MultiWidget):
            parts = field.widget.decompress(value)
            for index, (widget, part) in enumerate(zip(field.widget.widgets, parts, strict=True)):
                data[f"{key}_{index}"] = "" if part is None else str(widget.format_value(part))
        elif isinstance(value, (list, tuple)):
            data[key] = [str(item) for item in value]
        else:
            data[key] = "" if value is None else str(value)


def form_data(response: Any) -> dict[str, Any]:
    """The POST body of submitting this admin add/change page unchanged (no extra forms)."""
    data: dict[str, Any] = {}
    _field_data(response.context["adminform"].form, data)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        prefix = formset.prefix
        count = formset.initial_form_count()
        data.update({f"{prefix}-TOTAL_FORMS": str(count), f"{prefix}-INITIAL_FORMS": str(count),
                     f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"})
        for form in formset.initial_forms:
            _field_data(form, data)
    return data


def events(**filters: Any) -> list[tuple[str, str]]:
    """(action, object_type) of the audit events written through the admin, oldest first."""
    return [(event.action, event.object_type)
            for event in AuditEvent.objects.filter(source="admin", **filters)
            .order_by("created_at")]


def _with_limits(owner_field: str, owner: models.Model, *, budget: bool = True) -> None:
    if budget:
        BudgetFactory(**{owner_field: owner})
    RateLimitFactory(**{owner_field: owner})


def _provider(user) -> Provider:
    key = ProviderKeyFactory()
    _with_limits("provider", key.provider)
    return key.provider


def _virtual_key(user) -> VirtualKey:
    config = ProviderConfigFactory(allow_all_keys=False)
    config.keys.add(ProviderKeyFactory(provider=config.provider))
    _with_limits("virtual_key", config.virtual_key)
    return config.virtual_key


def _provider_config(user) -> VirtualKeyProviderConfig:
    config = ProviderConfigFactory()
    _with_limits("provider_config", config)
    return config


def _customer(user) -> Customer:
    team = TeamFactory()
    VirtualKeyFactory(team=team)
    _with_limits("customer", team.customer)
    return team.customer


def _team(user) -> Team:
    team = TeamFactory()
    VirtualKeyFactory(team=team)
    _with_limits("team", team)
    return team


def _model_config(user) -> ModelConfig:
    config = ModelConfigFactory(provider=ProviderFactory())
    _with_limits("model_config", config)
    return config


def _admin_token(user) -> AdminToken:
    token = new_admin_token()
    return AdminToken.objects.create(user=user, name="ci", token_hash=digest(token),
                                     prefix=token[:10])


def _audit_event(user) -> AuditEvent:
    customer = CustomerFactory()
    return audit.record_create(Actor(user, "api"), customer)


def _usage_record(user) -> UsageRecord:
    return UsageRecord.objects.create(
        event_id="req-1", request_id="req-1", created_at=timezone.now(),
        virtual_key_name="key-a",
        provider="openai", requested_model="gpt-4o", resolved_model="gpt-4o",
        request_type="chat_completion", status_code=200, prompt_tokens=10,
        completion_tokens=5, cost=Decimal("0.0001"), latency_ms=12.5,
    )


def _routing_rule(user) -> RoutingRule:
    team = TeamFactory()
    VirtualKeyFactory(team=team)
    target = RoutingTargetFactory(rule__scope="team", rule__team=team)
    return target.rule


BUILDERS: dict[type[models.Model], Callable[..., models.Model]] = {
    UsageRollup: lambda user: UsageRollup.objects.create(
        day=timezone.now().date(), dimension="provider", dimension_id="openai",
        dimension_name="openai"),
    Provider: _provider,
    ProviderKey: lambda user: ProviderKeyFactory(),
    ModelAlias: lambda user: ModelAliasRouteFactory().alias,
    AdminToken: _admin_token,
    AuditEvent: _audit_event,
    Customer: _customer,
    Team: _team,
    VirtualKey: _virtual_key,
    VirtualKeyProviderConfig: _provider_config,
    ModelConfig: _model_config,
    Budget: lambda user: BudgetFactory(virtual_key=VirtualKeyFactory()),
    RateLimit: lambda user: RateLimitFactory(team=TeamFactory()),
    UsageRecord: _usage_record,
    RoutingRule: _routing_rule,
    PricingOverride: lambda user: PricingOverrideFactory(),
    Group: lambda user: Group.objects.create(name="operators"),
}


def _registered() -> list:
    return [
        pytest.param(model, id=f"{model._meta.app_label}.{model._meta.model_name}")
        for model in admin.site._registry
    ]


def _build(model: type[models.Model], user) -> models.Model:
    if model is user.__class__:
        return user
    assert model in BUILDERS, f"add a builder for {model.__name__} to tests/test_admin.py"
    return BUILDERS[model](user)


@pytest.mark.parametrize("model", _registered())
def test_every_admin_renders_for_staff(model, admin_client_logged_in, staff_user):
    obj = _build(model, staff_user)
    model_admin = admin.site._registry[model]

    assert admin_client_logged_in.get(admin_url(model, "changelist")).status_code == 200
    response = admin_client_logged_in.get(admin_url(model, "changelist"), {"q": "a"})
    assert response.status_code == 200
    assert admin_client_logged_in.get(admin_url(model, "change", obj.pk)).status_code == 200
    request = response.wsgi_request
    if model_admin.has_add_permission(request):
        assert admin_client_logged_in.get(admin_url(model, "add")).status_code == 200
    else:
        assert admin_client_logged_in.get(admin_url(model, "add")).status_code == 403


@pytest.mark.parametrize("model", _registered())
def test_every_admin_redirects_non_staff_to_login(model, plain_user):
    client = Client()
    client.force_login(plain_user)
    response = client.get(admin_url(model, "changelist"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_index_has_the_site_header(admin_client_logged_in):
    response = admin_client_logged_in.get(reverse("admin:index"))
    assert response.status_code == 200
    assert "LLM Gateway admin" in response.text


def test_anonymous_is_sent_to_login():
    response = Client().get(admin_url(VirtualKey, "changelist"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


# --- the audit log ------------------------------------------------------------------------------

def test_audit_events_are_read_only(admin_client_logged_in, staff_user):
    event = _audit_event(staff_user)
    assert admin_client_logged_in.get(admin_url(AuditEvent, "add")).status_code == 403
    assert admin_client_logged_in.post(admin_url(AuditEvent, "add"), {}).status_code == 403
    change = admin_client_logged_in.post(admin_url(AuditEvent, "change", event.pk),
                                         {"actor_name": "mallory"})
    assert change.status_code == 403
    assert admin_client_logged_in.get(admin_url(AuditEvent, "delete", event.pk)).status_code == 403
    assert admin_client_logged_in.post(admin_url(AuditEvent, "delete", event.pk),
                                       {"post": "yes"}).status_code == 403
    bulk = admin_client_logged_in.post(admin_url(AuditEvent, "changelist"), {
        "action": "delete_selected", "_selected_action": [str(event.pk)], "post": "yes",
    })
    assert bulk.status_code == 200  # "No action selected": the action does not exist
    event.refresh_from_db()
    assert event.actor_name == "operator"


def test_audit_event_detail_shows_readable_changes(admin_client_logged_in, staff_user):
    customer = CustomerFactory(name="acme")
    before = audit.snapshot(customer)
    customer.name = "acme-corp"
    customer.save()
    event = audit.record_update(Actor(staff_user, "api"), customer, before)

    response = admin_client_logged_in.get(admin_url(AuditEvent, "change", event.pk))
    assert response.status_code == 200
    html = response.text
    assert "<th>name</th><td><code>acme</code></td><td>→</td><td><code>acme-corp</code></td>" \
        in html
    assert admin_url(Customer, "change", customer.pk) in html  # link to the live object


def test_staff_without_superuser_can_view_audit_events(client, django_user_model):
    user = django_user_model.objects.create_user("auditor", password="pw-auditor-1",
                                                 is_staff=True)
    event = _audit_event(user)
    client.force_login(user)
    assert client.get(admin_url(AuditEvent, "changelist")).status_code == 200
    assert client.get(admin_url(AuditEvent, "change", event.pk)).status_code == 200


# --- hostile input ------------------------------------------------------------------------------

def _customer_add(client: Client, name: str, **extra: str):
    data = {
        "name": name, "description": "",
        "budgets-TOTAL_FORMS": "0", "budgets-INITIAL_FORMS": "0",
        "budgets-MIN_NUM_FORMS": "0", "budgets-MAX_NUM_FORMS": "1",
        "ratelimits-TOTAL_FORMS": "0", "ratelimits-INITIAL_FORMS": "0",
        "ratelimits-MIN_NUM_FORMS": "0", "ratelimits-MAX_NUM_FORMS": "1",
        **extra,
    }
    return client.post(admin_url(Customer, "add"), data)


def test_overlong_name_is_a_form_error(admin_client_logged_in):
    response = _customer_add(admin_client_logged_in, "x" * 10_000)
    assert response.status_code == 200
    assert "Ensure this value has at most 255 characters" in response.text
    assert not Customer.objects.exists()


def test_script_in_a_name_is_rendered_escaped(admin_client_logged_in):
    hostile = "<script>alert(1)</script>"
    response = _customer_add(admin_client_logged_in, hostile)
    assert response.status_code == 302
    customer = Customer.objects.get(name=hostile)
    BudgetFactory(customer=customer)
    pages = [
        admin_client_logged_in.get(admin_url(Customer, "changelist")),
        admin_client_logged_in.get(admin_url(Customer, "change", customer.pk)),
        admin_client_logged_in.get(admin_url(Budget, "changelist")),
        admin_client_logged_in.get(admin_url(AuditEvent, "changelist")),
    ]
    for page in pages:
        assert page.status_code == 200
        assert hostile not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def _budget_row(max_limit: str, duration: str) -> dict[str, str]:
    return {"budgets-0-max_limit": max_limit, "budgets-0-reset_duration": duration,
            "budgets-TOTAL_FORMS": "1"}


@pytest.mark.parametrize(("max_limit", "duration", "message"), [
    pytest.param("-5", "1d", "must be greater than 0", id="negative-budget"),
    pytest.param("0", "1d", "must be greater than 0", id="zero-budget"),
    pytest.param("1e400", "1d", "no more than 22 digits", id="huge-exponent"),
    pytest.param("NaN", "1d", "Enter a number.", id="nan"),
    pytest.param("10", "1x", "invalid duration &#x27;1x&#x27;: use a positive number", id="1x"),
    pytest.param("10", "0d", "invalid duration", id="zero-window"),
    pytest.param("10", "d" * 40, "at most 32 characters", id="long-duration"),
])
def test_hostile_budget_is_a_form_error(admin_client_logged_in, max_limit, duration, message):
    response = _customer_add(admin_client_logged_in, "acme", **_budget_row(max_limit, duration))
    assert response.status_code == 200
    assert message in response.text
    assert not Customer.objects.exists()
    assert not Budget.objects.exists()


def test_the_duration_message_is_the_shared_one(admin_client_logged_in):
    from governance.durations import DURATION_HELP

    response = _customer_add(admin_client_logged_in, "acme", **_budget_row("10", "1x"))
    errors = response.context["inline_admin_formsets"][0].formset.errors
    assert errors[0]["reset_duration"] == [f"invalid duration '1x': {DURATION_HELP}"]


def test_garbage_choice_and_ids_are_form_errors(admin_client_logged_in):
    response = admin_client_logged_in.post(admin_url(RoutingRule, "add"), {
        "name": "r", "scope": "galaxy", "team": "not-a-uuid", "priority": "1e9",
        "cel_expression": "", "fallbacks": "{not json",
        "targets-TOTAL_FORMS": "0", "targets-INITIAL_FORMS": "0",
    })
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert {"scope", "team", "priority", "fallbacks"} <= set(errors)
    assert not RoutingRule.objects.exists()


def test_missing_management_form_is_not_a_500(admin_client_logged_in):
    response = admin_client_logged_in.post(admin_url(Customer, "add"), {"name": "acme"})
    assert response.status_code == 200
    assert not Customer.objects.exists()


@pytest.mark.parametrize("model", _registered())
def test_every_change_form_saves_unchanged(model, admin_client_logged_in, staff_user):
    obj = _build(model, staff_user)
    url = admin_url(model, "change", obj.pk)
    page = admin_client_logged_in.get(url)
    model_admin = admin.site._registry[model]
    if not model_admin.has_change_permission(page.wsgi_request, obj):
        assert admin_client_logged_in.post(url, form_data(page)).status_code == 403
        return
    before = AuditEvent.objects.count()
    response = admin_client_logged_in.post(url, form_data(page))
    assert response.status_code == 302, _form_errors(response)
    assert AuditEvent.objects.count() == before  # nothing changed, nothing audited


def _form_errors(response: Any) -> object:
    if response.context is None:
        return response.status_code
    inlines = response.context["inline_admin_formsets"]
    return (response.context["adminform"].form.errors,
            [inline.formset.errors for inline in inlines],
            [inline.formset.non_form_errors() for inline in inlines])


@pytest.mark.parametrize("total", ["1000000000", "-1", "abc"])
def test_tampered_management_form_is_not_a_500(admin_client_logged_in, total):
    response = admin_client_logged_in.post(admin_url(Team, "add"), {
        "name": "platform", "description": "", "customer": "",
        "budgets-TOTAL_FORMS": total, "budgets-INITIAL_FORMS": "0",
        "ratelimits-TOTAL_FORMS": "0", "ratelimits-INITIAL_FORMS": "0",
    })
    assert response.status_code in (200, 302)
    assert not Budget.objects.exists()


def test_autocomplete_serves_the_long_lists(admin_client_logged_in):
    key = ProviderKeyFactory(name="primary")
    TeamFactory(name="platform")
    for app_label, model_name, field_name, term, expected in [
        ("governance", "virtualkeyproviderconfig", "keys", "primary", str(key.pk)),
        ("governance", "virtualkey", "team", "plat", "platform"),
        ("routing", "routingrule", "virtual_key", "", ""),
        ("pricing", "pricingoverride", "provider", key.provider.name, key.provider.name),
    ]:
        response = admin_client_logged_in.get(reverse("admin:autocomplete"), {
            "app_label": app_label, "model_name": model_name, "field_name": field_name,
            "term": term,
        })
        assert response.status_code == 200, (model_name, field_name)
        assert expected in response.text


def test_virtual_keys_are_found_by_secret_prefix(admin_client_logged_in):
    key = VirtualKeyFactory(name="findme")
    VirtualKeyFactory(name="other")
    page = admin_client_logged_in.get(admin_url(VirtualKey, "changelist"),
                                      {"q": key.secret_prefix})
    assert "findme" in page.text
    assert ">other<" not in page.text


def test_staff_without_permissions_cannot_write(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", password="pw-viewer-1",
                                                 is_staff=True)
    key = VirtualKeyFactory()
    client.force_login(user)
    assert client.get(admin_url(VirtualKey, "changelist")).status_code == 403
    assert client.post(admin_url(VirtualKey, "rotate", key.pk)).status_code == 403
    assert client.get(admin_url(VirtualKey, "add")).status_code == 403
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize(("model", "field"), [
    (UsageRecord, "created_at"), (UsageRollup, "day"), (AuditEvent, "created_at")])
@pytest.mark.parametrize("query", [
    {"__year": "99999999999999999999999"}, {"__year": "0"}, {"__year": "2026", "__month": "13x"},
    {"__year": "2026", "__month": "11", "__day": "-1"}, {"__year": "\u0662\u0660\u0662\u0666"},
    {"__year": "9999"}, {"__year": "9999", "__month": "12", "__day": "31"},
    {"__year": "2026", "__month": "13"},
])
def test_a_date_drill_down_out_of_range_is_the_invalid_lookup_flag_not_a_500(
        admin_client_logged_in, model, field, query):
    params = {f"{field}{suffix}": value for suffix, value in query.items()}
    response = admin_client_logged_in.get(admin_url(model, "changelist"), params)
    assert response.status_code == 302
    assert response["location"].endswith("?e=1")
    # and a good one still works
    assert admin_client_logged_in.get(admin_url(model, "changelist"),
                                      {f"{field}__year": "2026"}).status_code == 200


@pytest.mark.parametrize(("value", "shown"), [
    (None, "-"), (0, "$0.00"), (Decimal("0.000000000"), "$0.00"),
    (Decimal("0.0006"), "$0.0006"), (Decimal("0.000000001"), "$0.000000001"),
    (Decimal("0.009999"), "$0.009999"), (Decimal("0.01"), "$0.01"),
    (Decimal("50.000000000"), "$50.00"), (Decimal("1234.5"), "$1,234.50"),
])
def test_money_shows_amounts_under_a_cent(value, shown):
    from gateway.admin_base import money

    assert money(value) == shown


def test_usage_records_show_cost_in_dollars_and_latency_in_ms(admin_client_logged_in,
                                                             staff_user):
    _usage_record(staff_user)
    page = admin_client_logged_in.get(admin_url(UsageRecord, "changelist")).text
    assert "$0.0001<" in page and "12.5 ms" in page


def test_an_objects_history_is_its_audit_trail(admin_client_logged_in):
    from gateway.models import AuditEvent
    from tests.factories import VirtualKeyFactory

    key = VirtualKeyFactory(name="traced")
    AuditEvent.objects.create(actor_name="ops", source="api", action="rotate_secret",
                              object_type="virtualkey", object_id=str(key.pk),
                              object_repr="traced", changes={})
    history = admin_client_logged_in.get(
        reverse("admin:governance_virtualkey_history", args=[key.pk]), follow=True)
    assert [event.action for event in history.context["cl"].result_list] == ["rotate_secret"]


def test_audit_events_name_a_limits_owner(admin_client_logged_in):
    from decimal import Decimal

    from gateway.audit import Actor, record
    from gateway.models import AuditEvent
    from tests.factories import BudgetFactory, TeamFactory

    budget = BudgetFactory(team=TeamFactory(name="research"), max_limit=Decimal(10),
                           reset_duration="1d")
    record(Actor(None, "api"), "update", budget)
    assert AuditEvent.objects.get().object_repr == f'team "research": {budget}'


def test_provider_fields_are_labelled_as_they_are_written(admin_client_logged_in):
    page = admin_client_logged_in.get(reverse("admin:gateway_provider_add")).text
    assert ">Base URL:<" in page and ">API version:<" in page
