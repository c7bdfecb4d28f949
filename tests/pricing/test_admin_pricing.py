"""Admin behaviour for pricing overrides: scope identifiers, patterns, request types, prices."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.models import AuditEvent
from pricing.models import PricingOverride
from tests.factories import PricingOverrideFactory, ProviderFactory, ProviderKeyFactory
from tests.factories import VirtualKeyFactory as KeyFactory
from tests.test_admin import admin_url, events

pytestmark = pytest.mark.django_db


def override_form(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "cheap-4o", "scope_kind": "global", "virtual_key": "", "provider": "",
        "provider_key": "", "match_type": "exact", "pattern": "gpt-4o",
        "request_types": ["chat_completion"], "patch": '{"input_cost_per_token": 0.000001}',
    }
    data.update(fields)
    return data


def post(client, **fields: Any):
    return client.post(admin_url(PricingOverride, "add"), override_form(**fields))


def test_a_valid_override_is_created_and_audited(admin_client_logged_in):
    provider = ProviderFactory()
    response = post(admin_client_logged_in, scope_kind="provider", provider=str(provider.pk),
                    match_type="wildcard", pattern=" gpt-4o* ",
                    request_types=["chat_completion", "embedding"])
    assert response.status_code == 302
    override = PricingOverride.objects.get()
    assert override.pattern == "gpt-4o*"
    assert override.request_types == ["chat_completion", "embedding"]
    assert events() == [("create", "pricingoverride")]
    listing = admin_client_logged_in.get(admin_url(PricingOverride, "changelist")).text
    assert "gpt-4o* (wildcard)" in listing
    assert "input_cost_per_token=0.000001" in listing
    assert "chat_completion, embedding" in listing


@pytest.mark.parametrize(("fields", "field", "message"), [
    pytest.param({"scope_kind": "provider"}, "provider",
                 "provider_id is required for provider scope_kind", id="provider-missing"),
    pytest.param({"scope_kind": "virtual_key_provider", "provider": "P"}, "virtual_key",
                 "virtual_key_id is required for virtual_key_provider scope_kind",
                 id="vk-missing"),
    pytest.param({"scope_kind": "global", "provider": "P"}, "provider",
                 "global scope_kind must not include scope identifiers", id="global-with-id"),
    pytest.param({"scope_kind": "virtual_key", "virtual_key": "VK", "provider": "P"},
                 "provider", "virtual_key scope_kind only supports virtual_key_id",
                 id="extra-provider"),
    pytest.param({"scope_kind": "virtual_key_provider", "virtual_key": "VK", "provider": "P",
                  "provider_key": "K"}, "provider_key",
                 "virtual_key_provider scope_kind does not support provider_key_id",
                 id="extra-key"),
    pytest.param({"scope_kind": "virtual_key_provider_key", "virtual_key": "VK",
                  "provider": "Q", "provider_key": "K"}, "provider_key",
                 "does not belong to provider", id="foreign-key"),
    pytest.param({"match_type": "exact", "pattern": "gpt-*"}, "pattern",
                 "exact match pattern must not contain wildcards", id="exact-wildcard"),
    pytest.param({"match_type": "wildcard", "pattern": "gpt"}, "pattern",
                 "wildcard pattern must end with *", id="wildcard-end"),
    pytest.param({"match_type": "wildcard", "pattern": "g*t*"}, "pattern",
                 "wildcard pattern must contain exactly one trailing *", id="two-stars"),
    pytest.param({"request_types": ["chat_completion_stream"]}, "request_types",
                 "Select a valid choice.", id="stream-variant"),
    pytest.param({"request_types": []}, "request_types", "This field is required.",
                 id="no-request-type"),
    pytest.param({"patch": '{"input_cost_per_token": -1}'}, "patch",
                 "input_cost_per_token must be non-negative", id="negative-price"),
    pytest.param({"patch": '{"free_lunch": 1}'}, "patch", 'unknown price field "free_lunch"',
                 id="unknown-price"),
    *[pytest.param({"patch": f'{{"input_cost_per_token": {value}}}'}, "patch",
                   "input_cost_per_token must be a finite number", id=f"price-{value}")
      for value in ("NaN", "Infinity", "1e400")],
    pytest.param({"patch": "[1, 2]"}, "patch", "must be an object of price fields",
                 id="patch-not-object"),
])
def test_invalid_overrides_are_form_errors(admin_client_logged_in, fields, field, message):
    key = ProviderKeyFactory()
    ids = {"P": str(key.provider.pk), "Q": str(ProviderFactory().pk), "K": str(key.pk),
           "VK": str(KeyFactory().pk)}
    response = post(admin_client_logged_in,
                    **{name: ids.get(value, value) if isinstance(value, str) else value
                       for name, value in fields.items()})
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert any(message in error for error in errors[field]), errors
    assert not PricingOverride.objects.exists()
    assert not AuditEvent.objects.exists()


def test_override_update_and_delete_are_audited(admin_client_logged_in):
    override = PricingOverrideFactory()
    url = admin_url(PricingOverride, "change", override.pk)
    response = admin_client_logged_in.post(url, override_form(name=override.name,
                                                              pattern="gpt-4.1"))
    assert response.status_code == 302
    assert AuditEvent.objects.get().changes["pattern"] == ["gpt-4o", "gpt-4.1"]
    admin_client_logged_in.post(admin_url(PricingOverride, "delete", override.pk),
                                {"post": "yes"})
    assert events() == [("update", "pricingoverride"), ("delete", "pricingoverride")]


def test_small_prices_show_as_typed_not_in_exponent_form(admin_client_logged_in):
    # json.dumps writes 1e-07: on the change form, after a form error and in the list
    override = PricingOverrideFactory(patch={"input_cost_per_token": 1e-07,
                                             "output_cost_per_token": 2.5e-06})
    change = admin_client_logged_in.get(admin_url(PricingOverride, "change", override.pk)).text
    assert "0.0000001" in change and "0.0000025" in change and "e-0" not in change
    bad = post(admin_client_logged_in, pattern="gpt*",
               patch='{"input_cost_per_token": 1e-07, "output_cost_per_token": -1}')
    assert bad.status_code == 200
    assert "0.0000001" in bad.text and "1e-07" not in bad.text
    listing = admin_client_logged_in.get(admin_url(PricingOverride, "changelist")).text
    assert "input_cost_per_token=0.0000001" in listing
    assert PricingOverride.objects.get().patch["input_cost_per_token"] == 1e-07  # unchanged
