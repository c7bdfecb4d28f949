"""Virtual keys through the governance API: create, read, update, rotate, delete."""

import hashlib

import pytest

from governance.models import Budget, RateLimit, VirtualKey, VirtualKeyProviderConfig
from tests.factories import (
    BudgetFactory,
    CustomerFactory,
    ProviderFactory,
    ProviderKeyFactory,
    TeamFactory,
)
from tests.governance.test_api_common import assert_error

pytestmark = pytest.mark.django_db
URL = "/api/governance/virtual-keys"


@pytest.fixture
def openai():
    return ProviderFactory(name="openai")


def create(api, **body):
    body.setdefault("name", "prod-key")
    return api.post(URL, body, format="json")


def test_create_returns_secret_once_and_stores_only_its_hash(api, openai):
    response = create(api, description="d", provider_configs=[
        {"provider": "openai", "allowed_models": ["*"], "key_ids": ["*"]}])
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Virtual key created successfully"
    key = body["virtual_key"]
    secret = key["value"]
    assert secret.startswith("sk-gw-") and len(secret) == 6 + 32
    stored = VirtualKey.objects.get(pk=key["id"])
    assert stored.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert stored.secret_prefix == secret[:10] == key["value_prefix"]
    # no column anywhere holds the secret
    for field in stored._meta.concrete_fields:
        assert secret not in str(getattr(stored, field.attname))
    again = api.get(f"{URL}/{key['id']}").json()["virtual_key"]
    assert "value" not in again
    listed = api.get(URL).json()["virtual_keys"]
    assert all("value" not in item for item in listed)
    assert key["provider_configs"][0]["allow_all_keys"] is True
    assert key["mcp_configs"] == []


def test_create_with_team_budgets_rate_limit_and_provider_config(api, openai):
    provider_key = ProviderKeyFactory(provider=openai)
    team = TeamFactory()
    response = create(
        api,
        team_id=str(team.id),
        budgets=[{"max_limit": 10, "reset_duration": "1d"},
                 {"max_limit": 100.5, "reset_duration": "1M"}],
        rate_limit={"token_max_limit": 1000, "token_reset_duration": "1h",
                    "request_max_limit": 60, "request_reset_duration": "1m"},
        provider_configs=[{"provider": "openai", "weight": 0.5, "allowed_models": ["gpt-4o"],
                           "key_ids": [str(provider_key.id)],
                           "budgets": [{"max_limit": 1, "reset_duration": "1h"}],
                           "rate_limit": {"request_max_limit": 5,
                                          "request_reset_duration": "1m"}}],
        max_concurrent_requests=4,
    )
    assert response.status_code == 200, response.json()
    key = response.json()["virtual_key"]
    assert key["team_id"] == str(team.id) and key["team"]["name"] == team.name
    assert [(b["max_limit"], b["reset_duration"]) for b in key["budgets"]] == [
        (10.0, "1d"), (100.5, "1M")]
    assert key["rate_limit"]["token_max_limit"] == 1000
    assert key["rate_limit"]["request_reset_duration"] == "1m"
    assert key["max_concurrent_requests"] == 4
    config = key["provider_configs"][0]
    assert config["provider"] == "openai" and config["weight"] == 0.5
    assert config["allowed_models"] == ["gpt-4o"] and config["allow_all_keys"] is False
    assert [k["key_id"] for k in config["keys"]] == [str(provider_key.id)]
    assert "value" not in config["keys"][0] and "encrypted_value" not in config["keys"][0]
    assert config["budgets"][0]["provider_config_id"] == config["id"]
    assert config["rate_limit"]["request_max_limit"] == 5


def test_calendar_aligned_key_snaps_budget_windows(api, openai):
    key = create(api, calendar_aligned=True,
                 budgets=[{"max_limit": 5, "reset_duration": "1d"}]).json()["virtual_key"]
    budget = key["budgets"][0]
    assert budget["calendar_aligned"] is True
    assert budget["last_reset"].endswith("T00:00:00Z")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": 5}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"budgets": [{"max_limit": 0, "reset_duration": "1d"}]}, "budgets[0].max_limit"),
        ({"budgets": [{"max_limit": -1, "reset_duration": "1d"}]}, "budgets[0].max_limit"),
        ({"budgets": [{"max_limit": "10", "reset_duration": "1d"}]}, "budgets[0].max_limit"),
        ({"budgets": [{"max_limit": 10, "reset_duration": "1x"}]},
         "budgets[0].reset_duration"),
        ({"budgets": [{"max_limit": 10, "reset_duration": "0s"}]},
         "budgets[0].reset_duration"),
        ({"budgets": [{"max_limit": 10, "reset_duration": "-1h"}]},
         "budgets[0].reset_duration"),
        ({"budgets": [{"max_limit": 10}]}, "budgets[0].reset_duration"),
        ({"budgets": [{"max_limit": 1, "reset_duration": "1d"},
                      {"max_limit": 2, "reset_duration": "1d"}]},
         "budgets[1].reset_duration"),
        ({"budgets": {"max_limit": 1}}, "budgets"),
        ({"budgets": [None]}, "budgets[0]"),
        ({"budgets": [1]}, "budgets[0]"),
        ({"provider_configs": [None]}, "provider_configs[0]"),
        ({"rate_limit": {"token_max_limit": 0, "token_reset_duration": "1h"}},
         "rate_limit.token_max_limit"),
        ({"rate_limit": {"token_max_limit": -5, "token_reset_duration": "1h"}},
         "rate_limit.token_max_limit"),
        ({"rate_limit": {"token_max_limit": 1.5, "token_reset_duration": "1h"}},
         "rate_limit.token_max_limit"),
        ({"rate_limit": {"token_max_limit": 100}}, "rate_limit.token_reset_duration"),
        ({"rate_limit": {"request_reset_duration": "banana"}},
         "rate_limit.request_reset_duration"),
        ({"team_id": "not-a-uuid"}, "team_id"),
        ({"team_id": "00000000-0000-0000-0000-000000000000"}, "team_id"),
        ({"is_active": "yes"}, "is_active"),
        ({"max_concurrent_requests": 0}, "max_concurrent_requests"),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"mcp_configs": [{"mcp_client_name": "x"}]}, "mcp_configs"),
        ({"provider_configs": [{"provider": ""}]}, "provider_configs[0].provider"),
        ({"provider_configs": [{"provider": "nope"}]}, "provider_configs[0].provider"),
        ({"provider_configs": [{"provider": "openai", "allowed_models": ["*", "gpt-4o"]}]},
         "provider_configs[0].allowed_models"),
        ({"provider_configs": [{"provider": "openai", "allowed_models": ["a", "A"]}]},
         "provider_configs[0].allowed_models"),
        ({"provider_configs": [{"provider": "openai", "key_ids": ["not-a-uuid"]}]},
         "provider_configs[0].key_ids"),
        ({"provider_configs": [{"provider": "openai",
                                "key_ids": ["00000000-0000-0000-0000-000000000000"]}]},
         "provider_configs[0].key_ids"),
        ({"provider_configs": [{"provider": "openai"}, {"provider": "openai"}]},
         "provider_configs"),
        ({"provider_configs": [{"provider": "openai", "weight": -1}]},
         "provider_configs[0].weight"),
        ({"provider_configs": [{"provider": "openai",
                                "budgets": [{"max_limit": 0, "reset_duration": "1h"}]}]},
         "provider_configs[0].budgets[0].max_limit"),
    ],
)
def test_invalid_create_is_400_naming_the_field(api, openai, body, field):
    body = {"name": "k", **body}
    response = api.post(URL, body, format="json")
    assert_error(response, 400, field=field)
    assert not VirtualKey.objects.exists()
    assert not Budget.objects.exists() and not RateLimit.objects.exists()


def test_team_and_customer_together_is_400(api):
    response = create(api, team_id=str(TeamFactory().id), customer_id=str(CustomerFactory().id))
    assert_error(response, 400, field="team_id",
                 text="VirtualKey cannot be attached to both Team and Customer")


def test_key_of_another_provider_is_400(api, openai):
    foreign = ProviderKeyFactory(provider=ProviderFactory(name="anthropic"))
    response = create(api, provider_configs=[{"provider": "openai", "key_ids": [str(foreign.id)]}])
    body = assert_error(response, 400, field="provider_configs[0].key_ids")
    assert "belongs to provider anthropic" in body["error"]["message"]


def test_duplicate_name_is_409(api):
    assert create(api, name="dup").status_code == 200
    assert_error(create(api, name="dup"), 409)
    other = create(api, name="other").json()["virtual_key"]
    assert_error(api.put(f"{URL}/{other['id']}", {"name": "dup"}, format="json"), 409)


def test_hostile_strings_are_stored_verbatim(api):
    name = "<script>alert(1)</script>'; DROP TABLE governance_virtualkey; --"
    key = create(api, name=name).json()["virtual_key"]
    assert api.get(f"{URL}/{key['id']}").json()["virtual_key"]["name"] == name


def test_budget_reconciliation_keeps_usage_of_matched_durations(api):
    key = create(api, budgets=[{"max_limit": 10, "reset_duration": "1d"},
                               {"max_limit": 50, "reset_duration": "1w"}]).json()["virtual_key"]
    daily = Budget.objects.get(virtual_key_id=key["id"], reset_duration="1d")
    Budget.objects.filter(pk=daily.pk).update(current_usage=7)
    response = api.put(f"{URL}/{key['id']}", {"budgets": [
        {"max_limit": 20, "reset_duration": "1d"}, {"max_limit": 300, "reset_duration": "1M"}]},
        format="json")
    assert response.status_code == 200
    budgets = {b["reset_duration"]: b for b in response.json()["virtual_key"]["budgets"]}
    assert set(budgets) == {"1d", "1M"}
    assert budgets["1d"]["id"] == str(daily.id)
    assert budgets["1d"]["current_usage"] == 7.0 and budgets["1d"]["max_limit"] == 20.0
    assert budgets["1M"]["current_usage"] == 0.0
    # [] deletes every budget; absent leaves them alone
    api.put(f"{URL}/{key['id']}", {"description": "x"}, format="json")
    assert Budget.objects.filter(virtual_key_id=key["id"]).count() == 2
    api.put(f"{URL}/{key['id']}", {"budgets": []}, format="json")
    assert Budget.objects.filter(virtual_key_id=key["id"]).count() == 0


def test_lowering_a_budget_below_usage_keeps_the_usage(api):
    key = create(api, budgets=[{"max_limit": 10, "reset_duration": "1d"}]).json()["virtual_key"]
    Budget.objects.filter(virtual_key_id=key["id"]).update(current_usage=8)
    api.put(f"{URL}/{key['id']}", {"budgets": [{"max_limit": 5, "reset_duration": "1d"}]},
            format="json")
    assert Budget.objects.get(virtual_key_id=key["id"]).current_usage == 8


def test_rate_limit_merge_remove_and_validation(api):
    key = create(api, rate_limit={"token_max_limit": 100, "token_reset_duration": "1h"}
                 ).json()["virtual_key"]
    url = f"{URL}/{key['id']}"
    merged = api.put(url, {"rate_limit": {"request_max_limit": 5,
                                          "request_reset_duration": "1m"}}, format="json")
    limit = merged.json()["virtual_key"]["rate_limit"]
    assert (limit["token_max_limit"], limit["request_max_limit"]) == (100, 5)
    # the merged result is validated (Bifrost accepts -5 here)
    assert_error(api.put(url, {"rate_limit": {"token_max_limit": -5}}, format="json"), 400)
    removed = api.put(url, {"rate_limit": {}}, format="json").json()["virtual_key"]
    assert removed["rate_limit"] is None and removed["rate_limit_id"] is None
    assert not RateLimit.objects.filter(virtual_key_id=key["id"]).exists()


def test_association_changes_only_when_present(api):
    team, customer = TeamFactory(), CustomerFactory()
    key = create(api, team_id=str(team.id)).json()["virtual_key"]
    url = f"{URL}/{key['id']}"
    kept = api.put(url, {"is_active": False}, format="json").json()["virtual_key"]
    assert kept["team_id"] == str(team.id) and kept["is_active"] is False
    moved = api.put(url, {"customer_id": str(customer.id)}, format="json").json()["virtual_key"]
    assert moved["customer_id"] == str(customer.id) and moved["team_id"] is None
    detached = api.put(url, {"customer_id": None}, format="json").json()["virtual_key"]
    assert detached["customer_id"] is None and detached["team_id"] is None
    empty = api.put(url, {"team_id": ""}, format="json").json()["virtual_key"]
    assert empty["team_id"] is None


def test_empty_name_on_update_is_400(api):
    key = create(api).json()["virtual_key"]
    assert_error(api.put(f"{URL}/{key['id']}", {"name": ""}, format="json"), 400, field="name")


def test_provider_config_reconciliation(api, openai):
    anthropic = ProviderFactory(name="anthropic")
    key = create(api, provider_configs=[
        {"provider": "openai", "allowed_models": ["*"], "key_ids": ["*"],
         "budgets": [{"max_limit": 1, "reset_duration": "1h"}]},
        {"provider": "anthropic", "allowed_models": ["claude-3-5-haiku"]},
    ]).json()["virtual_key"]
    openai_config = next(c for c in key["provider_configs"] if c["provider"] == "openai")
    url = f"{URL}/{key['id']}"
    response = api.put(url, {"provider_configs": [
        {"id": openai_config["id"], "provider": "openai", "allowed_models": ["gpt-4o"]}]},
        format="json")
    configs = response.json()["virtual_key"]["provider_configs"]
    assert [c["provider"] for c in configs] == ["openai"]
    # replace semantics for weight, models and keys (documented parity); budgets kept
    assert configs[0]["allowed_models"] == ["gpt-4o"] and configs[0]["allow_all_keys"] is False
    assert len(configs[0]["budgets"]) == 1
    assert not VirtualKeyProviderConfig.objects.filter(provider=anthropic).exists()
    assert_error(api.put(url, {"provider_configs": [{"id": 999999, "provider": "openai"}]},
                         format="json"), 400, text="does not belong to this virtual key")


def test_switching_to_calendar_alignment_snaps_existing_budgets(api):
    key = create(api, budgets=[{"max_limit": 5, "reset_duration": "1d"}]).json()["virtual_key"]
    Budget.objects.filter(virtual_key_id=key["id"]).update(current_usage=3)
    updated = api.put(f"{URL}/{key['id']}", {"calendar_aligned": True},
                      format="json").json()["virtual_key"]
    budget = updated["budgets"][0]
    assert budget["calendar_aligned"] is True and budget["current_usage"] == 0.0
    assert budget["last_reset"].endswith("T00:00:00Z")


def test_reset_usage_flag_zeroes_every_limit_of_the_owner(api):
    key = create(api, budgets=[{"max_limit": 5, "reset_duration": "1d"}],
                 rate_limit={"request_max_limit": 5, "request_reset_duration": "1m"}
                 ).json()["virtual_key"]
    Budget.objects.filter(virtual_key_id=key["id"]).update(current_usage=3)
    RateLimit.objects.filter(virtual_key_id=key["id"]).update(request_current_usage=4)
    updated = api.put(f"{URL}/{key['id']}", {"reset_usage": True},
                      format="json").json()["virtual_key"]
    assert updated["budgets"][0]["current_usage"] == 0.0
    assert updated["budgets"][0]["usage_reset_at"] is not None
    assert updated["rate_limit"]["request_current_usage"] == 0


def test_rotate_replaces_the_secret(api):
    key = create(api).json()["virtual_key"]
    old_hash = VirtualKey.objects.get(pk=key["id"]).secret_hash
    response = api.post(f"{URL}/{key['id']}/rotate")
    assert response.status_code == 200
    secret = response.json()["virtual_key"]["value"]
    assert secret != key["value"] and secret.startswith("sk-gw-")
    stored = VirtualKey.objects.get(pk=key["id"])
    assert stored.secret_hash == hashlib.sha256(secret.encode()).hexdigest() != old_hash
    assert_error(api.post(f"{URL}/00000000-0000-0000-0000-000000000000/rotate"), 404)


def test_delete_cascades_owned_rows(api, openai):
    key = create(api, budgets=[{"max_limit": 5, "reset_duration": "1d"}],
                 rate_limit={"request_max_limit": 5, "request_reset_duration": "1m"},
                 provider_configs=[{"provider": "openai", "allowed_models": ["*"],
                                    "budgets": [{"max_limit": 1, "reset_duration": "1h"}]}],
                 ).json()["virtual_key"]
    response = api.delete(f"{URL}/{key['id']}")
    assert response.json() == {"message": "Virtual key deleted successfully"}
    assert not Budget.objects.exists() and not RateLimit.objects.exists()
    assert not VirtualKeyProviderConfig.objects.exists()
    assert_error(api.get(f"{URL}/{key['id']}"), 404)


def test_list_shows_budgets_of_keys(api):
    key = create(api).json()["virtual_key"]
    BudgetFactory(virtual_key_id=key["id"], reset_duration="1w", max_limit=3)
    listed = api.get(URL).json()
    assert listed["count"] == 1
    assert listed["virtual_keys"][0]["budgets"][0]["reset_duration"] == "1w"


@pytest.mark.parametrize(("first", "second"), [("1d", "1d"), ("1d", "daily"), ("24h", "1d"),
                                               ("1w", "7d"), ("1h", "60m")])
def test_two_budgets_of_one_window_in_any_spelling_are_400(api, first, second):
    response = create(api, budgets=[{"max_limit": 10, "reset_duration": first},
                                    {"max_limit": 20, "reset_duration": second}])
    assert_error(response, 400, field="budgets[1].reset_duration", text="duplicate reset_duration")
    assert not VirtualKey.objects.exists()
