"""Pricing-override API over HTTP: shapes, listing and filters, merge update, delete, auth
and audit (spec 4.8, section 5 PricingOverride). Validation tables are in
test_api_pricing_validation."""

from __future__ import annotations

import json
import uuid
from typing import Any
from unittest.mock import ANY

import pytest

from gateway.models import AuditEvent, ProviderKind
from pricing.models import PricingOverride
from tests.factories import (
    PricingOverrideFactory,
    ProviderFactory,
    ProviderKeyFactory,
    VirtualKeyFactory,
)

pytestmark = pytest.mark.django_db

URL = "/api/governance/pricing-overrides"


def detail(override_id: Any) -> str:
    return f"{URL}/{override_id}"


@pytest.fixture
def world() -> dict[str, Any]:
    openai = ProviderFactory(name="openai")
    anthropic = ProviderFactory(name="anthropic", kind=ProviderKind.ANTHROPIC)
    return {
        "openai": openai,
        "anthropic": anthropic,
        "key": ProviderKeyFactory(provider=openai),
        "anthropic_key": ProviderKeyFactory(provider=anthropic),
        "vk": VirtualKeyFactory(),
        "other_vk": VirtualKeyFactory(),
    }


def body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "cheaper gpt-4o",
        "scope_kind": "global",
        "match_type": "exact",
        "pattern": "gpt-4o",
        "request_types": ["chat_completion"],
        "patch": {"input_cost_per_token": 0.0000025},
    }
    data.update(overrides)
    return data


def create(api, **overrides: Any) -> dict[str, Any]:
    response = api.post(URL, body(**overrides), format="json")
    assert response.status_code == 201, response.json()
    return response.json()["pricing_override"]


# --- create ------------------------------------------------------------------------------

def test_create_returns_201_and_the_full_override(api, world):
    vk, key = world["vk"], world["key"]
    response = api.post(URL, {
        "name": "  team discount  ",
        "scope_kind": "virtual_key_provider_key",
        "virtual_key_id": str(vk.id),
        "provider_id": "openai",
        "provider_key_id": str(key.id),
        "match_type": "wildcard",
        "pattern": " gpt-4o* ",
        "request_types": ["chat_completion", "responses"],
        "patch": {"input_cost_per_token": 0.000002, "output_cost_per_token": 0.000008},
    }, format="json")
    assert response.status_code == 201
    assert response["Content-Type"] == "application/json"
    payload = response.json()
    assert payload == {"message": "Pricing override created successfully",
                       "pricing_override": ANY}
    patch = {"input_cost_per_token": 0.000002, "output_cost_per_token": 0.000008}
    assert payload["pricing_override"] == {
        "id": ANY,
        "name": "team discount",
        "scope_kind": "virtual_key_provider_key",
        "virtual_key_id": str(vk.id),
        "provider_id": "openai",
        "provider_key_id": str(key.id),
        "match_type": "wildcard",
        "pattern": "gpt-4o*",
        "request_types": ["chat_completion", "responses"],
        "patch": patch,
        "pricing_patch": ANY,
        "config_hash": "",
        "created_at": ANY,
        "updated_at": ANY,
    }
    assert json.loads(payload["pricing_override"]["pricing_patch"]) == patch
    row = PricingOverride.objects.get(pk=payload["pricing_override"]["id"])
    assert (row.virtual_key, row.provider, row.provider_key, row.patch) == (
        vk, world["openai"], key, patch)


def test_create_without_patch_stores_an_empty_one(api, world):
    override = create(api, patch=None)
    assert (override["patch"], override["pricing_patch"]) == ({}, "{}")
    data = body()
    del data["patch"]
    response = api.post(URL, data, format="json")
    assert response.json()["pricing_override"]["patch"] == {}


def test_pricing_patch_is_compact_sorted_json(api, world):
    override = create(api, patch={"output_cost_per_token": 2, "input_cost_per_token": 1})
    assert override["pricing_patch"] == '{"input_cost_per_token":1,"output_cost_per_token":2}'


def test_names_need_not_be_unique(api, world):
    create(api)
    create(api)
    assert PricingOverride.objects.count() == 2


# --- read --------------------------------------------------------------------------------

def test_get_one(api, world):
    override = create(api)
    response = api.get(detail(override["id"]))
    assert response.status_code == 200
    assert response.json() == {"pricing_override": override}


@pytest.mark.parametrize("method", ["get", "put", "delete"])
@pytest.mark.parametrize("override_id", [str(uuid.uuid4()), "not-a-uuid", "42"],
                         ids=["unknown", "malformed", "integer"])
def test_unknown_or_malformed_id_is_404(api, method, override_id):
    response = getattr(api, method)(detail(override_id), {"name": "x"}, format="json")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"message": "Pricing override not found", "type": "not_found_error",
                  "fields": {}},
        "status_code": 404,
    }


def test_empty_list(api):
    assert api.get(URL).json() == {"pricing_overrides": [], "count": 0, "total_count": 0,
                                   "limit": 0, "offset": 0}


def test_list_without_pagination_returns_everything(api, world):
    PricingOverrideFactory.create_batch(30)
    payload = api.get(URL).json()
    assert (len(payload["pricing_overrides"]), payload["count"], payload["total_count"],
            payload["limit"], payload["offset"]) == (30, 30, 30, 30, 0)


def test_list_pagination(api, world):
    PricingOverrideFactory.create_batch(5)
    payload = api.get(URL, {"limit": 2, "offset": 4}).json()
    assert (len(payload["pricing_overrides"]), payload["count"], payload["total_count"],
            payload["limit"], payload["offset"]) == (1, 1, 5, 2, 4)
    assert api.get(URL, {"limit": 1000}).json()["limit"] == 100
    assert api.get(URL, {"limit": 0}).json()["limit"] == 25


def test_list_search(api, world):
    PricingOverrideFactory(name="GPT discount")
    PricingOverrideFactory(name="claude markup")
    payload = api.get(URL, {"search": "gpt"}).json()
    assert [item["name"] for item in payload["pricing_overrides"]] == ["GPT discount"]
    assert payload["limit"] == 25


@pytest.fixture
def scoped(world) -> dict[str, PricingOverride]:
    openai, key, vk = world["openai"], world["key"], world["vk"]
    return {
        "global": PricingOverrideFactory(name="global"),
        "provider": PricingOverrideFactory(name="provider", scope_kind="provider",
                                           provider=openai),
        "anthropic": PricingOverrideFactory(name="anthropic", scope_kind="provider",
                                            provider=world["anthropic"]),
        "provider_key": PricingOverrideFactory(name="provider_key", scope_kind="provider_key",
                                               provider_key=key),
        "virtual_key": PricingOverrideFactory(name="virtual_key", scope_kind="virtual_key",
                                              virtual_key=vk),
        "virtual_key_provider": PricingOverrideFactory(
            name="virtual_key_provider", scope_kind="virtual_key_provider", virtual_key=vk,
            provider=openai),
        "virtual_key_provider_key": PricingOverrideFactory(
            name="virtual_key_provider_key", scope_kind="virtual_key_provider_key",
            virtual_key=vk, provider=openai, provider_key=key),
    }


@pytest.mark.parametrize(("params", "expected"), [
    pytest.param({"scope_kind": "provider"}, {"provider", "anthropic"}, id="scope-kind"),
    pytest.param({"scope_kind": "global"}, {"global"}, id="global"),
    pytest.param({"provider_id": "openai"},
                 {"provider", "virtual_key_provider", "virtual_key_provider_key"},
                 id="provider-name"),
    pytest.param({"provider_id": " anthropic "}, {"anthropic"}, id="provider-name-trimmed"),
    pytest.param({"provider_id": "nope"}, set(), id="unknown-provider"),
    pytest.param({"virtual_key_id": "{vk}"},
                 {"virtual_key", "virtual_key_provider", "virtual_key_provider_key"},
                 id="virtual-key"),
    pytest.param({"virtual_key_id": "{other_vk}"}, set(), id="other-virtual-key"),
    pytest.param({"provider_key_id": "{key}"}, {"provider_key", "virtual_key_provider_key"},
                 id="provider-key"),
    pytest.param({"scope_kind": "virtual_key_provider", "virtual_key_id": "{vk}",
                  "provider_id": "openai"}, {"virtual_key_provider"}, id="combined"),
    pytest.param({"scope_kind": "", "provider_id": ""}, None, id="empty-means-no-filter"),
    pytest.param({"provider_id": "openai", "limit": "1"}, None, id="filters-and-pagination"),
])
def test_list_filters(api, world, scoped, params, expected):
    ids = {"vk": world["vk"].id, "other_vk": world["other_vk"].id, "key": world["key"].id}
    query = {name: value.format(**ids) for name, value in params.items()}
    payload = api.get(URL, query).json()
    names = {item["name"] for item in payload["pricing_overrides"]}
    if params.get("limit"):
        assert payload["total_count"] == 3
        assert len(names) == 1
    elif expected is None:
        assert names == set(scoped)
    else:
        assert names == expected


@pytest.mark.parametrize(("params", "field"), [
    pytest.param({"scope_kind": "everything"}, "scope_kind", id="unknown-scope-kind"),
    pytest.param({"scope_kind": "GLOBAL"}, "scope_kind", id="scope-kind-case"),
    pytest.param({"virtual_key_id": "vk-1"}, "virtual_key_id", id="malformed-virtual-key"),
    pytest.param({"provider_key_id": "1"}, "provider_key_id", id="malformed-provider-key"),
    pytest.param({"limit": "many"}, "limit", id="limit"),
    pytest.param({"offset": "-1"}, "offset", id="offset"),
])
def test_list_rejects_bad_query_parameters(api, params, field):
    response = api.get(URL, params)
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]


# --- merge update ------------------------------------------------------------------------

def update(api, override_id: str, payload: dict[str, Any]):
    return api.put(detail(override_id), payload, format="json")


def test_update_with_an_empty_body_changes_nothing(api, world):
    override = create(api)
    response = update(api, override["id"], {})
    assert response.status_code == 200
    assert response.json() == {"message": "Pricing override updated successfully",
                               "pricing_override": {**override, "updated_at": ANY}}
    assert not AuditEvent.objects.filter(action="update").exists()


@pytest.mark.parametrize("field", ["name", "scope_kind", "match_type", "pattern",
                                   "request_types", "patch"])
def test_update_null_keeps_the_value(api, world, field):
    override = create(api, scope_kind="provider", provider_id="openai")
    response = update(api, override["id"], {field: None})
    assert response.status_code == 200
    assert response.json()["pricing_override"] == {**override, "updated_at": ANY}


def test_update_sets_plain_fields(api, world):
    override = create(api)
    response = update(api, override["id"], {
        "name": " renamed ", "match_type": "wildcard", "pattern": "claude-*",
        "request_types": ["embedding"],
    })
    assert response.status_code == 200
    assert response.json()["pricing_override"] == {
        **override, "name": "renamed", "match_type": "wildcard", "pattern": "claude-*",
        "request_types": ["embedding"], "updated_at": ANY,
    }


def test_patch_is_replaced_in_full(api, world):
    override = create(api, patch={"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6})
    response = update(api, override["id"], {"patch": {"output_cost_per_token": 3e-6}})
    assert response.json()["pricing_override"]["patch"] == {"output_cost_per_token": 3e-6}


def test_empty_patch_clears_it(api, world):
    override = create(api)
    response = update(api, override["id"], {"patch": {}})
    result = response.json()["pricing_override"]
    assert (result["patch"], result["pricing_patch"]) == ({}, "{}")


def test_scope_kind_resets_ids_not_sent(api, world):
    vk = world["vk"]
    override = create(api, scope_kind="virtual_key", virtual_key_id=str(vk.id))
    response = update(api, override["id"], {"scope_kind": "provider", "provider_id": "openai"})
    assert response.status_code == 200
    result = response.json()["pricing_override"]
    assert (result["scope_kind"], result["virtual_key_id"], result["provider_id"],
            result["provider_key_id"]) == ("provider", None, "openai", None)
    row = PricingOverride.objects.get()
    assert (row.virtual_key, row.provider) == (None, world["openai"])


def test_scope_kind_resets_ids_even_when_unchanged(api, world):
    override = create(api, scope_kind="virtual_key_provider", virtual_key_id=str(world["vk"].id),
                      provider_id="openai")
    response = update(api, override["id"], {"scope_kind": "virtual_key_provider",
                                            "provider_id": "anthropic"})
    message = "virtual_key_id and provider_id are required for virtual_key_provider scope_kind"
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"virtual_key_id": [message]}
    assert api.get(detail(override["id"])).json()["pricing_override"] == override


def test_scope_kind_to_global_clears_every_id(api, world):
    override = create(api, scope_kind="virtual_key_provider_key",
                      virtual_key_id=str(world["vk"].id), provider_id="openai",
                      provider_key_id=str(world["key"].id))
    result = update(api, override["id"], {"scope_kind": "global"}).json()["pricing_override"]
    assert (result["virtual_key_id"], result["provider_id"], result["provider_key_id"]) == (
        None, None, None)


def test_ids_without_scope_kind_are_kept_or_replaced(api, world):
    override = create(api, scope_kind="virtual_key_provider", virtual_key_id=str(world["vk"].id),
                      provider_id="openai")
    response = update(api, override["id"], {"virtual_key_id": str(world["other_vk"].id)})
    result = response.json()["pricing_override"]
    assert (result["virtual_key_id"], result["provider_id"]) == (
        str(world["other_vk"].id), "openai")


@pytest.mark.parametrize("cleared", [None, "", "   "], ids=["null", "empty", "blank"])
def test_a_null_or_empty_id_clears_it(api, world, cleared):
    override = create(api, scope_kind="virtual_key_provider", virtual_key_id=str(world["vk"].id),
                      provider_id="openai")
    response = update(api, override["id"], {"provider_id": cleared})
    message = "virtual_key_id and provider_id are required for virtual_key_provider scope_kind"
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"provider_id": [message]}
    response = update(api, override["id"], {"scope_kind": "virtual_key",
                                            "virtual_key_id": str(world["vk"].id),
                                            "provider_id": cleared})
    assert response.status_code == 200
    assert response.json()["pricing_override"]["provider_id"] is None


def test_pattern_is_checked_against_the_stored_match_type(api, world):
    override = create(api, match_type="exact", pattern="gpt-4o")
    response = update(api, override["id"], {"pattern": "gpt-*"})
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "pattern": ["exact match pattern must not contain wildcards"]}
    response = update(api, override["id"], {"match_type": "wildcard"})
    assert response.json()["error"]["fields"] == {"pattern": ["wildcard pattern must end with *"]}
    response = update(api, override["id"], {"match_type": "wildcard", "pattern": "gpt-*"})
    assert response.status_code == 200


# --- delete ------------------------------------------------------------------------------

def test_delete(api, world):
    override = create(api)
    response = api.delete(detail(override["id"]))
    assert response.status_code == 200
    assert response.json() == {"message": "Pricing override deleted successfully"}
    assert not PricingOverride.objects.exists()
    assert api.delete(detail(override["id"])).status_code == 404


def test_deleting_the_virtual_key_deletes_its_overrides(api, world):
    create(api, scope_kind="virtual_key", virtual_key_id=str(world["vk"].id))
    world["vk"].delete()
    assert api.get(URL).json()["pricing_overrides"] == []


# --- audit and config version ------------------------------------------------------------

def test_writes_are_audited(api, world):
    override = create(api)
    update(api, override["id"], {"name": "renamed", "patch": {}})
    api.delete(detail(override["id"]))
    events = list(AuditEvent.objects.filter(object_id=override["id"]).order_by("created_at"))
    assert [(e.action, e.actor_name, e.source, e.object_type) for e in events] == [
        ("create", "operator", "api", "pricingoverride"),
        ("update", "operator", "api", "pricingoverride"),
        ("delete", "operator", "api", "pricingoverride"),
    ]
    created, updated, deleted = events
    assert created.changes["name"] == [None, "cheaper gpt-4o"]
    assert updated.changes == {
        "name": ["cheaper gpt-4o", "renamed"],
        "patch": [{"input_cost_per_token": 0.0000025}, {}],
    }
    assert deleted.changes["name"] == ["renamed", None]


def test_writes_bump_the_config_version_on_commit(api, world,
                                                   django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        override = create(api)
    assert len(callbacks) == 1
    with django_capture_on_commit_callbacks() as callbacks:
        update(api, override["id"], {"name": "x"})
    assert len(callbacks) == 1
    with django_capture_on_commit_callbacks() as callbacks:
        api.delete(detail(override["id"]))
    assert len(callbacks) == 1
    with django_capture_on_commit_callbacks() as callbacks:
        api.post(URL, body(name=""), format="json")
    assert callbacks == []
