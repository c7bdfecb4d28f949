"""Teams, customers, model configs and provider governance through the API."""

import pytest

from governance.models import Budget, ModelConfig, RateLimit, Team, VirtualKey
from tests.factories import CustomerFactory, ProviderFactory, TeamFactory, VirtualKeyFactory
from tests.governance.test_api_common import assert_error

pytestmark = pytest.mark.django_db


# --- teams -------------------------------------------------------------------------------

def test_team_lifecycle(api):
    customer = CustomerFactory()
    created = api.post("/api/governance/teams", {
        "name": "research", "customer_id": str(customer.id),
        "budgets": [{"max_limit": 50, "reset_duration": "1d", "calendar_aligned": True},
                    {"max_limit": 500, "reset_duration": "1M"}],
        "rate_limit": {"request_max_limit": 10, "request_reset_duration": "1m"},
    }, format="json")
    assert created.status_code == 200, created.json()
    team = created.json()["team"]
    assert created.json()["message"] == "Team created successfully"
    assert team["customer"]["id"] == str(customer.id)
    aligned = next(b for b in team["budgets"] if b["reset_duration"] == "1d")
    assert aligned["calendar_aligned"] is True and aligned["last_reset"].endswith("T00:00:00Z")
    assert team["rate_limit"]["request_max_limit"] == 10

    url = f"/api/governance/teams/{team['id']}"
    assert api.get(url).json()["team"]["name"] == "research"
    # absent customer_id keeps it; "" detaches
    kept = api.put(url, {"name": "research-2"}, format="json").json()["team"]
    assert kept["customer_id"] == str(customer.id) and kept["name"] == "research-2"
    detached = api.put(url, {"customer_id": ""}, format="json").json()["team"]
    assert detached["customer_id"] is None
    # replace semantics: both max limits null removes the rate limit
    removed = api.put(url, {"rate_limit": {"token_reset_duration": "1h"}},
                      format="json").json()["team"]
    assert removed["rate_limit"] is None
    key = VirtualKeyFactory(team_id=team["id"])
    assert api.delete(url).json() == {"message": "Team deleted successfully"}
    key.refresh_from_db()
    assert key.team_id is None
    assert not Budget.objects.filter(team_id=team["id"]).exists()


def test_team_per_budget_calendar_switch_zeroes_usage(api):
    team = api.post("/api/governance/teams", {
        "name": "t", "budgets": [{"max_limit": 5, "reset_duration": "1w"}]}, format="json"
    ).json()["team"]
    Budget.objects.filter(team_id=team["id"]).update(current_usage=4)
    updated = api.put(f"/api/governance/teams/{team['id']}", {"budgets": [
        {"max_limit": 5, "reset_duration": "1w", "calendar_aligned": True}]}, format="json")
    budget = updated.json()["team"]["budgets"][0]
    assert budget["current_usage"] == 0.0 and budget["calendar_aligned"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"name": "t", "customer_id": "00000000-0000-0000-0000-000000000000"}, "customer_id"),
        ({"name": "t", "budgets": [{"max_limit": 0, "reset_duration": "1d"}]},
         "budgets[0].max_limit"),
        # below one nano-dollar: it would be stored as 0, a budget nothing can pass
        ({"name": "t", "budgets": [{"max_limit": 1e-12, "reset_duration": "1d"}]},
         "budgets[0].max_limit"),
        ({"name": "t", "rate_limit": {"request_max_limit": 10}},
         "rate_limit.request_reset_duration"),
        ({"name": "t", "rate_limit": {"request_max_limit": 0,
                                      "request_reset_duration": "1m"}},
         "rate_limit.request_max_limit"),
    ],
)
def test_invalid_team_is_400(api, body, field):
    assert_error(api.post("/api/governance/teams", body, format="json"), 400, field=field)
    assert not Team.objects.exists()


def test_team_update_validation_is_400_not_500(api):
    team = TeamFactory()
    url = f"/api/governance/teams/{team.id}"
    assert_error(api.put(url, {"rate_limit": {"token_max_limit": 5}}, format="json"), 400,
                 field="rate_limit.token_reset_duration")
    assert_error(api.put(url, {"budgets": [{"max_limit": 0, "reset_duration": "1d"}]},
                         format="json"), 400)
    assert_error(api.put(url, {"name": ""}, format="json"), 400, field="name")


def test_duplicate_team_name_is_409(api):
    TeamFactory(name="dup")
    assert_error(api.post("/api/governance/teams", {"name": "dup"}, format="json"), 409)


def test_team_list_filters_by_customer(api):
    customer = CustomerFactory()
    TeamFactory(name="mine", customer=customer)
    TeamFactory(name="theirs")
    body = api.get(f"/api/governance/teams?customer_id={customer.id}").json()
    assert [team["name"] for team in body["teams"]] == ["mine"]


# --- customers ---------------------------------------------------------------------------

def test_customer_single_budget_semantics(api):
    customer = api.post("/api/governance/customers", {
        "name": "acme", "budget": {"max_limit": 100, "reset_duration": "1M"}}, format="json"
    ).json()["customer"]
    assert customer["budget"]["max_limit"] == 100.0 and customer["budget_id"]
    url = f"/api/governance/customers/{customer['id']}"
    Budget.objects.filter(customer_id=customer["id"]).update(current_usage=30)
    partial = api.put(url, {"budget": {"max_limit": 200}}, format="json").json()["customer"]
    assert partial["budget"]["max_limit"] == 200.0
    assert partial["budget"]["reset_duration"] == "1M"
    assert partial["budget"]["current_usage"] == 30.0  # usage survives an edit
    removed = api.put(url, {"budget": {}}, format="json").json()["customer"]
    assert removed["budget"] is None and removed["budget_id"] is None
    body = assert_error(api.put(url, {"budget": {"max_limit": 5}}, format="json"), 400)
    assert "both max_limit and reset_duration are required" in body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "c", "budget": {"max_limit": 0, "reset_duration": "1d"}}, "budget.max_limit"),
        ({"name": "c", "budget": {"max_limit": 5e-10, "reset_duration": "1d"}},
         "budget.max_limit"),
        ({"name": "c", "budget": {"max_limit": 5, "reset_duration": "soon"}},
         "budget.reset_duration"),
        ({"name": "c", "budget": {"max_limit": 5}}, "budget.reset_duration"),
        ({"name": "c", "rate_limit": {"token_max_limit": -1, "token_reset_duration": "1h"}},
         "rate_limit.token_max_limit"),
        ({"name": ["c"]}, "name"),
    ],
)
def test_invalid_customer_is_400(api, body, field):
    assert_error(api.post("/api/governance/customers", body, format="json"), 400, field=field)


def test_customer_update_validation_is_400_with_message(api):
    customer = CustomerFactory()
    response = api.put(f"/api/governance/customers/{customer.id}",
                       {"rate_limit": {"request_max_limit": 3}}, format="json")
    body = assert_error(response, 400, field="rate_limit.request_reset_duration")
    assert "request_max_limit" in body["error"]["message"]


def test_customer_delete_detaches_teams_and_keys(api):
    customer = CustomerFactory()
    team = TeamFactory(customer=customer)
    key = VirtualKeyFactory(team=None, customer=customer)
    api.delete(f"/api/governance/customers/{customer.id}")
    team.refresh_from_db()
    key.refresh_from_db()
    assert team.customer_id is None and key.customer_id is None


def test_customer_shape_lists_teams_and_keys(api):
    customer = CustomerFactory()
    TeamFactory(customer=customer, name="t1")
    VirtualKeyFactory(team=None, customer=customer, name="k1")
    body = api.get(f"/api/governance/customers/{customer.id}").json()["customer"]
    assert [team["name"] for team in body["teams"]] == ["t1"]
    assert [key["name"] for key in body["virtual_keys"]] == ["k1"]
    assert "value" not in body["virtual_keys"][0]


# --- model configs -----------------------------------------------------------------------

def test_model_config_lifecycle_and_uniqueness(api):
    ProviderFactory(name="openai")
    url = "/api/governance/model-configs"
    created = api.post(url, {"model_name": "gpt-4o", "provider": "openai",
                             "budget": {"max_limit": 10, "reset_duration": "1d"},
                             "rate_limit": {"token_max_limit": 10000,
                                            "token_reset_duration": "1h"}}, format="json")
    assert created.status_code == 200
    config = created.json()["model_config"]
    assert config["provider"] == "openai" and config["budget"]["max_limit"] == 10.0
    body = assert_error(api.post(url, {"model_name": "gpt-4o", "provider": "openai"},
                                 format="json"), 409)
    assert body["error"]["message"] == (
        "Model config for model 'gpt-4o' with provider 'openai' already exists")
    global_config = api.post(url, {"model_name": "gpt-4o"}, format="json").json()["model_config"]
    assert global_config["provider"] is None
    assert_error(api.post(url, {"model_name": "gpt-4o", "provider": None}, format="json"), 409,
                 text="(global) already exists")
    # moving the provider config to global collides with the existing global row
    assert_error(api.put(f"{url}/{config['id']}", {"provider": None}, format="json"), 409)
    api.delete(f"{url}/{global_config['id']}")
    moved = api.put(f"{url}/{config['id']}", {"provider": None}, format="json")
    assert moved.json()["model_config"]["provider"] is None
    assert_error(api.put(f"{url}/{config['id']}", {"model_name": ""}, format="json"), 400,
                 field="model_name")
    assert_error(api.put(f"{url}/{config['id']}", {"rate_limit": {"token_max_limit": 0}},
                         format="json"), 400)
    api.delete(f"{url}/{config['id']}")
    assert not ModelConfig.objects.exists() and not Budget.objects.exists()
    assert not RateLimit.objects.exists()


def test_model_config_unknown_provider_is_400(api):
    assert_error(api.post("/api/governance/model-configs",
                          {"model_name": "m", "provider": "ghost"}, format="json"), 400,
                 field="provider", text="invalid provider name: ghost")


# --- provider governance -----------------------------------------------------------------

def test_provider_governance(api):
    ProviderFactory(name="openai")
    ProviderFactory(name="anthropic")
    assert api.get("/api/governance/providers").json() == {"providers": [], "count": 0}
    url = "/api/governance/providers/openai"
    updated = api.put(url, {"budget": {"max_limit": 1000, "reset_duration": "1M"},
                            "rate_limit": {"request_max_limit": 100,
                                           "request_reset_duration": "1m"}}, format="json")
    assert updated.status_code == 200
    provider = updated.json()["provider"]
    assert provider["provider"] == "openai" and provider["budget"]["max_limit"] == 1000.0
    listed = api.get("/api/governance/providers").json()
    assert [item["provider"] for item in listed["providers"]] == ["openai"]
    assert_error(api.put(url, {"budget": {"max_limit": 0}}, format="json"), 400)
    assert_error(api.put("/api/governance/providers/ghost", {}, format="json"), 404,
                 text="Provider not found")
    assert api.delete(url).status_code == 200
    assert api.delete(url).status_code == 200  # idempotent
    assert api.get("/api/governance/providers").json()["count"] == 0


def test_budget_and_rate_limit_lists(api):
    key = VirtualKeyFactory()
    api.put(f"/api/governance/virtual-keys/{key.id}", {
        "budgets": [{"max_limit": 1, "reset_duration": "1d"}],
        "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1m"}}, format="json")
    budgets = api.get("/api/governance/budgets").json()
    assert budgets["count"] == 1 and budgets["budgets"][0]["virtual_key_id"] == str(key.id)
    limits = api.get("/api/governance/rate-limits").json()
    assert limits["count"] == 1 and limits["rate_limits"][0]["request_max_limit"] == 1


def test_inactive_key_is_still_readable(api):
    key = VirtualKeyFactory(is_active=False)
    body = api.get(f"/api/governance/virtual-keys/{key.id}").json()["virtual_key"]
    assert body["is_active"] is False
    assert VirtualKey.objects.count() == 1
