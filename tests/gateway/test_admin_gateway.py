"""Admin behaviour for providers and their write-only API keys, model aliases and admin API
tokens, with the audit trail of each write."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.sessions.models import Session

from gateway.models import AdminToken, AuditEvent, ModelAlias, Provider, ProviderKey
from gateway.secrets import digest
from tests.factories import ModelAliasRouteFactory, ProviderFactory, ProviderKeyFactory
from tests.test_admin import admin_url, events, form_data

pytestmark = pytest.mark.django_db

PLAIN = "sk-upstream-PLAIN-value-0042"


def management(prefix: str, total: int = 0, initial: int = 0) -> dict[str, str]:
    return {f"{prefix}-TOTAL_FORMS": str(total), f"{prefix}-INITIAL_FORMS": str(initial),
            f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"}


def provider_form(**fields: Any) -> dict[str, Any]:
    data = {
        "name": "openai-main", "kind": "openai", "base_url": "", "api_version": "",
        "price_provider": "", "is_enabled": "on", "connect_timeout_ms": "5000",
        "first_byte_timeout_ms": "60000", "idle_timeout_ms": "30000",
        "total_timeout_ms": "600000", "max_retries": "2", "backoff_initial_ms": "200",
        "backoff_max_ms": "5000", "failure_threshold": "5", "open_seconds": "30",
        **management("keys"), **management("budgets"), **management("ratelimits"),
    }
    data.update(fields)
    return data


def key_row(index: int, name: str, value: str) -> dict[str, str]:
    return {f"keys-{index}-name": name, f"keys-{index}-value": value,
            f"keys-{index}-weight": "1", f"keys-{index}-allowed_models": "[]",
            f"keys-{index}-is_enabled": "on"}


def test_provider_key_value_is_encrypted_and_never_rendered(admin_client_logged_in):
    response = admin_client_logged_in.post(admin_url(Provider, "add"), provider_form(
        **management("keys", total=1), **key_row(0, "primary", PLAIN)))
    assert response.status_code == 302
    provider = Provider.objects.get()
    key = provider.keys.get()
    assert key.encrypted_value != PLAIN
    assert PLAIN not in key.encrypted_value
    assert key.get_value() == PLAIN
    assert key.value_hint == "…0042"
    assert events() == [("create", "provider"), ("create", "providerkey")]

    pages = [
        admin_client_logged_in.get(admin_url(Provider, "changelist")),
        admin_client_logged_in.get(admin_url(Provider, "change", provider.pk)),
        admin_client_logged_in.get(admin_url(ProviderKey, "changelist")),
        admin_client_logged_in.get(admin_url(ProviderKey, "change", key.pk)),
        admin_client_logged_in.get(admin_url(AuditEvent, "changelist")),
        *(admin_client_logged_in.get(admin_url(AuditEvent, "change", event.pk))
          for event in AuditEvent.objects.all()),
        admin_client_logged_in.get(admin_url(Provider, "delete", provider.pk)),
    ]
    for page in pages:
        assert page.status_code == 200
        assert PLAIN not in page.text
        assert key.encrypted_value not in page.text
    assert "…0042" in pages[1].text
    assert PLAIN not in str(list(AuditEvent.objects.values()))
    assert all(PLAIN not in str(s.get_decoded()) for s in Session.objects.all())


def test_a_typed_key_value_lost_to_an_error_elsewhere_is_asked_for_again(
        admin_client_logged_in):
    # The value is never sent back to the browser, not even the one just typed; the field
    # says it must be entered again instead of sitting empty until the next save fails.
    failed = admin_client_logged_in.post(admin_url(Provider, "add"), provider_form(
        connect_timeout_ms="-1", **management("keys", total=1), **key_row(0, "primary", PLAIN)))
    assert failed.status_code == 200 and not Provider.objects.exists()
    assert PLAIN not in failed.text
    field = re.search(r'<input[^>]*name="keys-0-value"[^>]*>', failed.text).group(0)
    assert 'placeholder="Enter it again: not sent back"' in field and "value=" not in field
    saved = ProviderKeyFactory()  # an unbound form never asks: nothing was typed
    page = admin_client_logged_in.get(admin_url(Provider, "change", saved.provider.pk)).text
    field = re.search(r'<input[^>]*name="keys-0-value"[^>]*>', page).group(0)
    assert "placeholder" not in field and "value=" not in field


def test_provider_key_value_is_required_on_add_and_kept_when_empty(admin_client_logged_in):
    missing = admin_client_logged_in.post(admin_url(Provider, "add"), provider_form(
        **management("keys", total=1), **key_row(0, "primary", "")))
    assert missing.status_code == 200
    assert "is required for a new key" in missing.text
    assert not Provider.objects.exists()

    key = ProviderKeyFactory()
    key.set_value(PLAIN)
    key.save()
    url = admin_url(Provider, "change", key.provider.pk)
    data = form_data(admin_client_logged_in.get(url))
    assert data["keys-0-value"] == ""  # the widget never renders the stored value
    data["keys-0-weight"] = "3"
    assert admin_client_logged_in.post(url, data).status_code == 302
    key.refresh_from_db()
    assert key.get_value() == PLAIN and key.weight == 3

    data["keys-0-value"] = "sk-upstream-rotated-9999"
    response = admin_client_logged_in.post(url, data)
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.get_value() == "sk-upstream-rotated-9999"
    assert "sk-upstream-rotated-9999" not in str(list(AuditEvent.objects.values()))


def test_a_rejected_form_does_not_echo_the_key_value(admin_client_logged_in):
    response = admin_client_logged_in.post(admin_url(Provider, "add"), provider_form(
        name="Not A Slug!", **management("keys", total=1), **key_row(0, "primary", PLAIN)))
    assert response.status_code == 200
    assert "must be 1-50 characters" in response.text
    assert PLAIN not in response.text


def test_provider_validation_reaches_the_form(admin_client_logged_in):
    response = admin_client_logged_in.post(admin_url(Provider, "add"), provider_form(
        kind="azure", backoff_initial_ms="9000", backoff_max_ms="100"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["base_url"] == ["is required for Azure OpenAI providers"]
    assert errors["api_version"] == ["is required for Azure OpenAI providers"]
    assert errors["backoff_max_ms"] == ["must be at least backoff_initial_ms"]


def test_provider_enable_disable_actions_are_audited(admin_client_logged_in):
    provider = ProviderFactory()
    admin_client_logged_in.post(admin_url(Provider, "changelist"), {
        "action": "set_is_enabled_false", "_selected_action": [str(provider.pk)], "index": "0"})
    provider.refresh_from_db()
    assert provider.is_enabled is False
    assert AuditEvent.objects.get().changes == {"is_enabled": [True, False]}


def test_provider_with_dependants_is_protected_not_a_500(admin_client_logged_in):
    route = ModelAliasRouteFactory()
    response = admin_client_logged_in.post(admin_url(Provider, "delete", route.provider.pk),
                                           {"post": "yes"})
    assert response.status_code == 200
    assert "would require deleting the following protected related objects" in response.text
    assert Provider.objects.filter(pk=route.provider.pk).exists()
    assert not AuditEvent.objects.exists()


def test_model_alias_routes_are_audited(admin_client_logged_in):
    provider = ProviderFactory()
    response = admin_client_logged_in.post(admin_url(ModelAlias, "add"), {
        "name": "smart", "description": "", "strategy": "weighted", "is_enabled": "on",
        **management("routes", total=2),
        "routes-0-provider": str(provider.pk), "routes-0-model": "gpt-4o",
        "routes-0-weight": "1", "routes-0-priority": "0",
        "routes-1-provider": str(provider.pk), "routes-1-model": "gpt-4o-mini",
        "routes-1-weight": "2", "routes-1-priority": "1",
    })
    assert response.status_code == 302
    alias = ModelAlias.objects.get()
    assert alias.routes.count() == 2
    assert events() == [("create", "modelalias"), ("create", "modelaliasroute"),
                        ("create", "modelaliasroute")]
    listing = admin_client_logged_in.get(admin_url(ModelAlias, "changelist")).text
    assert f"{provider.name}/gpt-4o-mini ×2" in listing


def test_a_model_alias_needs_a_route(admin_client_logged_in):
    response = admin_client_logged_in.post(admin_url(ModelAlias, "add"), {
        "name": "nowhere", "description": "", "strategy": "weighted", "is_enabled": "on",
        **management("routes", total=0)})
    assert response.status_code == 200
    assert "Please submit at least 1 form" in response.text
    assert not ModelAlias.objects.exists()


def test_adding_an_admin_token_shows_it_once(admin_client_logged_in, staff_user):
    response = admin_client_logged_in.post(admin_url(AdminToken, "add"), {
        "user": str(staff_user.pk), "name": "ci", "expires_at_0": "", "expires_at_1": ""})
    assert response.status_code == 200
    (token,) = set(re.findall(r"gwa-[A-Za-z0-9_-]{43}", response.text))
    stored = AdminToken.objects.get()
    assert stored.token_hash == digest(token)
    assert stored.prefix == token[:10]
    assert token not in admin_client_logged_in.get(admin_url(AdminToken, "changelist")).text
    assert token not in admin_client_logged_in.get(admin_url(AdminToken, "change",
                                                             stored.pk)).text
    assert token not in str(list(AuditEvent.objects.values()))
    assert events() == [("create", "admintoken")]


def test_admin_tokens_cannot_be_edited_and_need_a_staff_user(admin_client_logged_in,
                                                              staff_user, plain_user):
    refused = admin_client_logged_in.post(admin_url(AdminToken, "add"), {
        "user": str(plain_user.pk), "name": "", "expires_at_0": "", "expires_at_1": ""})
    assert refused.status_code == 200
    assert "admin tokens are issued to staff users only" in refused.text
    assert not AdminToken.objects.exists()

    admin_client_logged_in.post(admin_url(AdminToken, "add"), {
        "user": str(staff_user.pk), "name": "ci", "expires_at_0": "", "expires_at_1": ""})
    token = AdminToken.objects.get()
    change = admin_client_logged_in.post(admin_url(AdminToken, "change", token.pk),
                                         {"user": str(staff_user.pk), "name": "renamed"})
    assert change.status_code == 403
    delete = admin_client_logged_in.post(admin_url(AdminToken, "delete", token.pk),
                                         {"post": "yes"})
    assert delete.status_code == 302
    assert not AdminToken.objects.exists()
    assert events() == [("create", "admintoken"), ("delete", "admintoken")]


def test_renaming_a_provider_in_the_admin_renames_it_in_fallbacks_and_they_protect_it(
        admin_client_logged_in):
    from tests.factories import RoutingRuleFactory

    provider = ProviderFactory(name="old-name")
    rule = RoutingRuleFactory(name="uses-it", fallbacks=["old-name/gpt-4o"])
    url = admin_url(Provider, "change", provider.pk)
    data = form_data(admin_client_logged_in.get(url))
    data["name"] = "new-name"
    assert admin_client_logged_in.post(url, data).status_code == 302
    rule.refresh_from_db()
    assert rule.fallbacks == ["new-name/gpt-4o"]

    page = admin_client_logged_in.post(admin_url(Provider, "delete", provider.pk),
                                       {"post": "yes"})
    assert page.status_code == 200  # refused: the confirmation page lists what protects it
    assert "Routing rule “uses-it” (its fallbacks name “new-name”)" in page.text
    assert Provider.objects.filter(pk=provider.pk).exists()


def test_an_overlong_base_url_gets_one_message(admin_client_logged_in):
    response = admin_client_logged_in.post(admin_url(Provider, "add"), provider_form(
        kind="openai_compatible", base_url="https://example.com/" + "a" * 600))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["base_url"]
    assert len(errors) == 1 and "at most 500 characters" in errors[0]
