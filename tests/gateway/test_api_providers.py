"""Providers with nested keys, model aliases and the audit log through the API."""

import pytest

from gateway.models import AuditEvent, ProviderKey
from tests.factories import ProviderConfigFactory, ProviderFactory, ProviderKeyFactory
from tests.governance.test_api_common import assert_error

pytestmark = pytest.mark.django_db
PLAIN = "sk-proj-abcdefghijklmnopqrstuvwxyz0123"


def test_provider_with_keys_never_returns_key_values(api):
    response = api.post("/api/providers", {
        "name": "openai", "kind": "openai",
        "keys": [{"name": "primary", "value": PLAIN, "weight": 2},
                 {"name": "backup", "value": PLAIN + "x", "allowed_models": ["gpt-4o"]}],
    }, format="json")
    assert response.status_code == 201, response.json()
    provider = response.json()["provider"]
    assert [key["name"] for key in provider["keys"]] == ["backup", "primary"]
    assert PLAIN not in response.content.decode()
    stored = ProviderKey.objects.get(name="primary")
    assert stored.encrypted_value != PLAIN and PLAIN not in stored.encrypted_value
    assert stored.get_value() == PLAIN and stored.value_hint == "…0123"
    listed = api.get("/api/providers").content.decode()
    assert PLAIN not in listed and "encrypted_value" not in listed
    events = AuditEvent.objects.filter(object_type="providerkey")
    assert events.count() == 2
    assert all(PLAIN not in str(event.changes) for event in events)
    assert all(event.changes["encrypted_value"][1].startswith("[redacted] ")
               for event in events)


def test_provider_update_reconciles_keys(api):
    provider = ProviderFactory(name="openai")
    keep = ProviderKeyFactory(provider=provider, name="keep")
    ProviderKeyFactory(provider=provider, name="drop")
    response = api.put("/api/providers/openai", {"max_retries": 4, "keys": [
        {"id": str(keep.id), "name": "keep", "weight": 3},
        {"name": "new", "value": PLAIN}]}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()["provider"]
    assert body["max_retries"] == 4
    assert sorted(key["name"] for key in body["keys"]) == ["keep", "new"]
    keep.refresh_from_db()
    assert keep.weight == 3 and keep.get_value() == "sk-upstream-secret-value-1234"
    assert_error(api.put("/api/providers/openai", {"keys": [{"name": "nokey"}]},
                         format="json"), 400, field="keys[0].value")


def test_single_key_endpoints(api):
    provider = ProviderFactory(name="anthropic", kind="anthropic")
    created = api.post("/api/providers/anthropic/keys", {"name": "k", "value": PLAIN},
                       format="json")
    assert created.status_code == 201
    key_id = created.json()["key"]["key_id"]
    url = f"/api/providers/anthropic/keys/{key_id}"
    rotated = api.put(url, {"value": PLAIN + "-new"}, format="json")
    assert rotated.status_code == 200
    assert ProviderKey.objects.get(pk=key_id).get_value() == PLAIN + "-new"
    assert_error(api.post("/api/providers/anthropic/keys", {"name": "k", "value": "v" * 20},
                          format="json"), 409)
    assert_error(api.post("/api/providers/anthropic/keys", {"name": "k2"}, format="json"),
                 400, field="value")
    assert api.delete(url).status_code == 200
    assert not provider.keys.exists()
    assert_error(api.get(url), 404)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "openai"}, "name"),
        ({"name": "Open AI", "kind": "openai"}, "name"),
        ({"name": "x" * 60, "kind": "openai"}, "name"),
        ({"name": "p", "kind": "cohere"}, "kind"),
        ({"name": "p", "kind": "azure"}, "base_url"),
        ({"name": "p", "kind": "azure", "base_url": "https://x.openai.azure.com"},
         "api_version"),
        ({"name": "p", "kind": "openai_compatible", "base_url": "ftp://x"}, "base_url"),
        ({"name": "p", "kind": "openai", "max_retries": 99}, "max_retries"),
        ({"name": "p", "kind": "openai", "connect_timeout_ms": "5"}, "connect_timeout_ms"),
        ({"name": "p", "kind": "openai", "backoff_initial_ms": 500, "backoff_max_ms": 100},
         "backoff_max_ms"),
        ({"name": "p", "kind": "openai", "keys": [{"name": "k"}]}, "keys[0].value"),
        ({"name": "p", "kind": "openai", "keys": [{"name": "k", "value": "v",
                                                   "allowed_models": ["*", "a"]}]},
         "keys[0].allowed_models"),
    ],
)
def test_invalid_provider_is_400(api, body, field):
    assert_error(api.post("/api/providers", body, format="json"), 400, field=field)


def test_duplicate_provider_is_409_and_delete_in_use_is_409(api):
    provider = ProviderFactory(name="openai")
    assert_error(api.post("/api/providers", {"name": "openai", "kind": "openai"},
                          format="json"), 409)
    ProviderConfigFactory(provider=provider)
    body = assert_error(api.delete("/api/providers/openai"), 409)
    assert "virtual key provider configs" in body["error"]["message"]
    assert_error(api.get("/api/providers/ghost"), 404)


def test_alias_crud(api):
    ProviderFactory(name="openai")
    ProviderFactory(name="anthropic", kind="anthropic")
    created = api.post("/api/aliases", {"name": "smart", "strategy": "priority", "routes": [
        {"provider": "openai", "model": "gpt-4o", "priority": 0},
        {"provider": "anthropic", "model": "claude-sonnet-4-5", "priority": 1}]},
        format="json")
    assert created.status_code == 201, created.json()
    alias = created.json()["alias"]
    assert [route["provider"] for route in alias["routes"]] == ["openai", "anthropic"]
    url = f"/api/aliases/{alias['id']}"
    updated = api.put(url, {"routes": [{"provider": "openai", "model": "gpt-4o-mini"}]},
                      format="json").json()["alias"]
    assert [route["model"] for route in updated["routes"]] == ["gpt-4o-mini"]
    assert updated["strategy"] == "priority"
    assert_error(api.post("/api/aliases", {"name": "smart", "routes": [
        {"provider": "openai", "model": "x"}]}, format="json"), 409)
    assert_error(api.post("/api/aliases", {"name": "a2", "routes": []}, format="json"), 400,
                 field="routes")
    assert_error(api.post("/api/aliases", {"name": "a3", "routes": [
        {"provider": "ghost", "model": "x"}]}, format="json"), 400, field="routes[0].provider")
    assert_error(api.post("/api/aliases", {"name": "a4", "strategy": "random", "routes": [
        {"provider": "openai", "model": "x"}]}, format="json"), 400, field="strategy")
    assert api.delete(url).status_code == 200
    assert_error(api.get(url), 404)


def test_audit_events_api_filters(api):
    api.post("/api/governance/customers", {"name": "c1"}, format="json")
    api.post("/api/governance/teams", {"name": "t1"}, format="json")
    everything = api.get("/api/audit-events").json()
    assert everything["total_count"] >= 2 and everything["limit"] == 25
    teams = api.get("/api/audit-events?object_type=team").json()["audit_events"]
    assert [event["object_repr"] for event in teams] == ["t1"]
    assert teams[0]["actor"] == "operator" and teams[0]["action"] == "create"
    mine = api.get("/api/audit-events?actor=operator&action=create").json()
    assert mine["total_count"] == everything["total_count"]
    assert api.get("/api/audit-events?since=2999-01-01T00:00:00Z").json()["total_count"] == 0
    assert_error(api.get("/api/audit-events?since=yesterday"), 400, field="since")
    assert_error(api.get("/api/audit-events?action=explode"), 400, field="action")
    event_id = teams[0]["id"]
    assert api.get(f"/api/audit-events/{event_id}").json()["audit_event"]["id"] == event_id
    assert api.post("/api/audit-events", {}, format="json").status_code == 405


def test_unknown_api_route_is_json_404(api):
    body = assert_error(api.get("/api/nothing-here"), 404)
    assert "No route" in body["error"]["message"]


def test_keys_pinned_by_routing_targets_cannot_be_deleted(api):
    from tests.factories import RoutingTargetFactory

    provider = ProviderFactory(name="openai")
    key = ProviderKeyFactory(provider=provider)
    RoutingTargetFactory(provider=provider, key=key)
    body = assert_error(api.delete(f"/api/providers/openai/keys/{key.id}"), 409)
    assert "pinned by 1 routing targets" in body["error"]["message"]
    assert_error(api.put("/api/providers/openai", {"keys": []}, format="json"), 409)
    assert ProviderKey.objects.filter(pk=key.pk).exists()


def test_routing_rule_fallbacks_follow_a_rename_and_protect_against_a_delete(api):
    from routing.models import RoutingRule
    from tests.factories import RoutingRuleFactory

    ProviderFactory(name="tmp2")
    ProviderFactory(name="tmp")  # a prefix of the other name: never touched
    rule = RoutingRuleFactory(name="fb", fallbacks=["tmp2", "tmp2/gpt-4o", "tmp/gpt-4o"])
    other = RoutingRuleFactory(name="other", fallbacks=["tmp"])
    assert api.put("/api/providers/tmp2", {"name": "tmp3"}, format="json").status_code == 200
    rule.refresh_from_db()
    assert rule.fallbacks == ["tmp3", "tmp3/gpt-4o", "tmp/gpt-4o"]
    assert RoutingRule.objects.get(pk=other.pk).fallbacks == ["tmp"]
    event = AuditEvent.objects.filter(object_type="routingrule").get()
    assert event.changes["fallbacks"][1] == ["tmp3", "tmp3/gpt-4o", "tmp/gpt-4o"]
    assert "targets" not in event.changes  # only what changed

    body = assert_error(api.delete("/api/providers/tmp3"), 409)
    assert "1 routing rule fallbacks" in body["error"]["message"]
    body = assert_error(api.delete("/api/providers/tmp"), 409)  # both rules name it
    assert "2 routing rule fallbacks" in body["error"]["message"]
