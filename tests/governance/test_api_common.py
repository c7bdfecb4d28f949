"""Cross-cutting behaviour of the management API: auth, body parsing, errors, pagination."""

import uuid

import pytest

from gateway.models import AuditEvent
from tests.factories import (
    CustomerFactory,
    PricingOverrideFactory,
    RoutingTargetFactory,
    TeamFactory,
    VirtualKeyFactory,
)

pytestmark = pytest.mark.django_db

UNKNOWN = uuid.UUID(int=1)
ROUTES = [
    ("get", "/api/governance/virtual-keys"),
    ("post", "/api/governance/virtual-keys"),
    ("get", "/api/governance/teams"),
    ("post", "/api/governance/customers"),
    ("get", "/api/governance/budgets"),
    ("get", "/api/governance/rate-limits"),
    ("get", "/api/governance/model-configs"),
    ("get", "/api/governance/providers"),
    ("get", "/api/governance/routing-rules"),
    ("post", "/api/governance/routing-rules"),
    ("get", f"/api/governance/routing-rules/{UNKNOWN}"),
    ("put", f"/api/governance/routing-rules/{UNKNOWN}"),
    ("delete", f"/api/governance/routing-rules/{UNKNOWN}"),
    ("get", "/api/governance/pricing-overrides"),
    ("post", "/api/governance/pricing-overrides"),
    ("get", f"/api/governance/pricing-overrides/{UNKNOWN}"),
    ("put", f"/api/governance/pricing-overrides/{UNKNOWN}"),
    ("delete", f"/api/governance/pricing-overrides/{UNKNOWN}"),
    ("get", "/api/providers"),
    ("get", "/api/aliases"),
    ("get", "/api/audit-events"),
]


def assert_error(response, status, field=None, text=None):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["status_code"] == status
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["type"], str)
    if field is not None:
        assert field in body["error"]["fields"], body
    if text is not None:
        assert text in body["error"]["message"], body
    return body


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_no_credentials_is_401(anonymous_api, method, path):
    response = getattr(anonymous_api, method)(path, {}, format="json")
    body = assert_error(response, 401)
    assert body["error"]["type"] == "authentication_error"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not AuditEvent.objects.exists()  # nothing was written


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_non_staff_is_403(non_staff_api, method, path):
    body = assert_error(getattr(non_staff_api, method)(path, {}, format="json"), 403)
    assert body["error"]["type"] == "permission_error"
    assert not AuditEvent.objects.filter(source="api").exists()


@pytest.mark.parametrize(
    "header",
    ["Bearer gwa-not-a-real-token", "Bearer", "Bearer a b", "Bearer sk-something",
     "Bearer " + "x" * 500],
)
def test_bad_tokens_are_401(anonymous_api, header):
    anonymous_api.credentials(HTTP_AUTHORIZATION=header)
    assert_error(anonymous_api.get("/api/governance/teams"), 401)


def test_staff_session_works(client, staff_user):
    client.force_login(staff_user)
    assert client.get("/api/governance/teams").status_code == 200


WRITE_ENDPOINTS = {
    "customer-create": lambda: ("post", "/api/governance/customers"),
    "key-update": lambda: ("put", f"/api/governance/virtual-keys/{VirtualKeyFactory().id}"),
    "rule-create": lambda: ("post", "/api/governance/routing-rules"),
    "rule-update": lambda: (
        "put", f"/api/governance/routing-rules/{RoutingTargetFactory().rule_id}"),
    "override-create": lambda: ("post", "/api/governance/pricing-overrides"),
    "override-update": lambda: (
        "put", f"/api/governance/pricing-overrides/{PricingOverrideFactory().id}"),
}


@pytest.mark.parametrize(
    ("body", "text"),
    [
        pytest.param("{bad", "Invalid JSON", id="malformed"),
        pytest.param("", "the request body is empty", id="empty"),
        pytest.param("[1, 2]", "must be a JSON object", id="array"),
        pytest.param('"text"', "must be a JSON object", id="string"),
        pytest.param("1", "must be a JSON object", id="number"),
        pytest.param("null", "must be a JSON object", id="null"),
        pytest.param('{"name": NaN}', "Invalid JSON", id="nan"),
        pytest.param('{"name": Infinity}', "Invalid JSON", id="infinity"),
        pytest.param('{"name": "\\ud800"}', "Invalid JSON", id="lone-surrogate"),
    ],
)
@pytest.mark.parametrize("endpoint", list(WRITE_ENDPOINTS))
def test_malformed_bodies_are_400(api, endpoint, body, text):
    method, path = WRITE_ENDPOINTS[endpoint]()
    written = AuditEvent.objects.count()
    response = getattr(api, method)(path, data=body, content_type="application/json")
    error = assert_error(response, 400, text=text)
    assert error["error"]["type"] == "invalid_request_error"
    assert AuditEvent.objects.count() == written


def test_oversized_body_is_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api.post("/api/governance/customers", {"name": "x" * 2000}, format="json")
    assert_error(response, 413)


def test_non_json_content_type_is_415(api):
    response = api.post("/api/governance/customers", data="name=x",
                        content_type="application/x-www-form-urlencoded")
    assert_error(response, 415)


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=abc", "limit"), ("limit=-1", "limit"), ("offset=x", "offset"),
     ("offset=-5", "offset"), ("limit=1.5", "limit")],
)
@pytest.mark.parametrize("path", ["/api/governance/virtual-keys", "/api/governance/teams",
                                  "/api/governance/customers", "/api/governance/model-configs"])
def test_bad_pagination_is_400(api, path, query, field):
    assert_error(api.get(f"{path}?{query}"), 400, field=field)


def test_pagination_envelope_and_clamping(api):
    for _ in range(30):
        CustomerFactory()
    everything = api.get("/api/governance/customers").json()
    assert everything["count"] == everything["total_count"] == everything["limit"] == 30
    assert everything["offset"] == 0

    default_page = api.get("/api/governance/customers?offset=0").json()
    assert (default_page["count"], default_page["limit"], default_page["total_count"]) == (
        25, 25, 30)

    last = api.get("/api/governance/customers?limit=10&offset=25").json()
    assert (last["count"], last["offset"]) == (5, 25)

    clamped = api.get("/api/governance/customers?limit=1000").json()
    assert clamped["limit"] == 100 and clamped["count"] == 30

    zero = api.get("/api/governance/customers?limit=0").json()
    assert zero["limit"] == 25


def test_search_is_case_insensitive_substring(api):
    CustomerFactory(name="Acme Corp")
    CustomerFactory(name="Globex")
    body = api.get("/api/governance/customers?search=acme").json()
    assert [item["name"] for item in body["customers"]] == ["Acme Corp"]
    assert body["total_count"] == 1


def test_filters_validate_their_values(api):
    assert_error(api.get("/api/governance/teams?customer_id=not-a-uuid"), 400,
                 field="customer_id")
    assert_error(api.get("/api/governance/virtual-keys?sort_by=secret_hash"), 400,
                 field="sort_by")


def test_key_list_filters_and_sorting(api):
    team = TeamFactory()
    VirtualKeyFactory(name="b-key", team=team)
    VirtualKeyFactory(name="a-key", team=team)
    VirtualKeyFactory(name="other", team=TeamFactory())
    body = api.get(f"/api/governance/virtual-keys?team_id={team.id}&sort_by=name&order=asc")
    assert [item["name"] for item in body.json()["virtual_keys"]] == ["a-key", "b-key"]
    body = api.get(f"/api/governance/virtual-keys?team_id={team.id}&sort_by=name&order=desc")
    assert [item["name"] for item in body.json()["virtual_keys"]] == ["b-key", "a-key"]


@pytest.mark.parametrize("path", [
    "/api/governance/virtual-keys/{id}", "/api/governance/teams/{id}",
    "/api/governance/customers/{id}", "/api/governance/model-configs/{id}",
])
@pytest.mark.parametrize("ident", ["00000000-0000-0000-0000-000000000000", "nope", "1"])
def test_unknown_ids_are_404(api, path, ident):
    for method in ("get", "put", "delete"):
        response = getattr(api, method)(path.format(id=ident), {"name": "x"}, format="json")
        assert_error(response, 404, text="not found")


def test_openapi_schema_and_docs(api, client, staff_user):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    document = schema.json()
    for path in ("/api/governance/virtual-keys", "/api/governance/routing-rules",
                 "/api/governance/pricing-overrides", "/api/providers"):
        assert any(key.rstrip("/").startswith(path) for key in document["paths"]), path
    client.force_login(staff_user)
    assert client.get("/api/docs/").status_code == 200


def test_writes_are_audited_with_actor(api):
    response = api.post("/api/governance/customers", {"name": "audited"}, format="json")
    customer_id = response.json()["customer"]["id"]
    api.put(f"/api/governance/customers/{customer_id}", {"name": "renamed"}, format="json")
    api.delete(f"/api/governance/customers/{customer_id}")
    events = list(AuditEvent.objects.filter(object_id=customer_id).order_by("created_at"))
    assert [event.action for event in events] == ["create", "update", "delete"]
    assert {event.actor_name for event in events} == {"operator"}
    assert {event.source for event in events} == {"api"}
    assert events[1].changes["name"] == ["audited", "renamed"]


def test_openapi_schema_is_valid_without_warnings(tmp_path):
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file",
                 str(tmp_path / "schema.yaml"))
    assert "/api/governance/virtual-keys/{vk_id}/rotate" in (tmp_path / "schema.yaml").read_text()


def test_schema_and_docs_are_staff_only(anonymous_api, client):
    assert anonymous_api.get("/api/schema/").status_code == 401
    docs = client.get("/api/docs/")
    assert docs.status_code == 302
    assert docs["Location"].startswith("/admin/login/")


def test_the_schema_documents_errors_and_the_statuses_the_server_answers(api):
    document = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert document["components"]["schemas"]["Error"]["required"] == ["error", "status_code"]
    operations = {operation["operationId"]: (path, method, operation)
                  for path, methods in document["paths"].items()
                  for method, operation in methods.items()}
    for name, (path, method, operation) in operations.items():
        responses = operation["responses"]
        assert "400" in responses, name
        if name != "getVirtualKeyQuota":
            assert {"401", "403"} <= set(responses), name
        if "{" in path:
            assert "404" in responses, name
        if method == "delete":  # Bifrost's {"message": ...}, not 204
            assert "204" not in responses and "200" in responses, name
    assert {"401", "429"} <= set(operations["getVirtualKeyQuota"][2]["responses"])
    for name in ("createProvider", "createProviderKey", "createAlias", "createPricingOverride"):
        assert "201" in operations[name][2]["responses"], name
    # and the server answers what the schema says
    created = api.post("/api/providers", {"name": "doc", "kind": "openai"}, format="json")
    assert created.status_code == 201
    deleted = api.delete("/api/providers/doc")
    assert deleted.status_code == 200 and deleted.json()["message"]
