"""Pricing-override API validation over HTTP (spec 3.10 and fixes P1-P3): every failure is a
400 naming the field, checked before the database constraint could see it, and nothing is
written."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.models import AuditEvent, ProviderKind
from pricing.models import PricingOverride
from pricing.validators import BASE_REQUEST_TYPES, PATCH_FIELDS
from tests.factories import (
    PricingOverrideFactory,
    ProviderFactory,
    ProviderKeyFactory,
    VirtualKeyFactory,
)

pytestmark = pytest.mark.django_db

URL = "/api/governance/pricing-overrides"
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
ABSENT = object()


@pytest.fixture
def world() -> dict[str, str]:
    """String ids to substitute for ``{vk}``, ``{key}`` and ``{anthropic_key}``."""
    openai = ProviderFactory(name="openai")
    anthropic = ProviderFactory(name="anthropic", kind=ProviderKind.ANTHROPIC)
    return {
        "vk": str(VirtualKeyFactory().id),
        "key": str(ProviderKeyFactory(provider=openai).id),
        "anthropic_key": str(ProviderKeyFactory(provider=anthropic).id),
    }


def body(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "override",
        "scope_kind": "global",
        "match_type": "exact",
        "pattern": "gpt-4o",
        "request_types": ["chat_completion"],
        "patch": {"input_cost_per_token": 0.000001},
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not ABSENT}


def fill(data: Any, world: dict[str, str]) -> Any:
    if isinstance(data, str):
        return data.format(**world)
    if isinstance(data, dict):
        return {key: fill(value, world) for key, value in data.items()}
    return data


def assert_rejected(response: Any, field: str, message: str | None) -> dict[str, Any]:
    assert response.status_code == 400, response.json()
    payload = response.json()
    assert payload["status_code"] == 400
    error = payload["error"]
    assert error["type"] == "invalid_request_error"
    assert field in error["fields"], error
    if message is not None:
        assert error["fields"][field] == [message]
        assert message in error["message"]
    return error


# --- the scope-kind matrix ---------------------------------------------------------------

VK, PROVIDER, KEY = "virtual_key_id", "provider_id", "provider_key_id"
IDS = {VK: "{vk}", PROVIDER: "openai", KEY: "{key}"}
GLOBAL_FORBIDS = "global scope_kind must not include scope identifiers"
VKP_REQUIRES = "virtual_key_id and provider_id are required for virtual_key_provider scope_kind"
VKPK_REQUIRES = ("virtual_key_id, provider_id, and provider_key_id are required for "
                 "virtual_key_provider_key scope_kind")

MATRIX = [
    ("global", (), None, None),
    ("global", (VK,), VK, GLOBAL_FORBIDS),
    ("global", (PROVIDER,), PROVIDER, GLOBAL_FORBIDS),
    ("global", (KEY,), KEY, GLOBAL_FORBIDS),
    ("provider", (PROVIDER,), None, None),
    ("provider", (), PROVIDER, "provider_id is required for provider scope_kind"),
    ("provider", (PROVIDER, VK), VK, "provider scope_kind only supports provider_id"),
    ("provider", (PROVIDER, KEY), KEY, "provider scope_kind only supports provider_id"),
    ("provider_key", (KEY,), None, None),
    ("provider_key", (), KEY, "provider_key_id is required for provider_key scope_kind"),
    ("provider_key", (KEY, PROVIDER), PROVIDER,
     "provider_key scope_kind only supports provider_key_id"),
    ("provider_key", (KEY, VK), VK, "provider_key scope_kind only supports provider_key_id"),
    ("virtual_key", (VK,), None, None),
    ("virtual_key", (), VK, "virtual_key_id is required for virtual_key scope_kind"),
    ("virtual_key", (VK, PROVIDER), PROVIDER,
     "virtual_key scope_kind only supports virtual_key_id"),
    ("virtual_key", (VK, KEY), KEY, "virtual_key scope_kind only supports virtual_key_id"),
    ("virtual_key_provider", (VK, PROVIDER), None, None),
    ("virtual_key_provider", (VK,), PROVIDER, VKP_REQUIRES),
    ("virtual_key_provider", (PROVIDER,), VK, VKP_REQUIRES),
    ("virtual_key_provider", (), VK, VKP_REQUIRES),
    ("virtual_key_provider", (VK, PROVIDER, KEY), KEY,
     "virtual_key_provider scope_kind does not support provider_key_id"),
    ("virtual_key_provider_key", (VK, PROVIDER, KEY), None, None),
    ("virtual_key_provider_key", (VK, PROVIDER), KEY, VKPK_REQUIRES),
    ("virtual_key_provider_key", (VK, KEY), PROVIDER, VKPK_REQUIRES),
    ("virtual_key_provider_key", (PROVIDER, KEY), VK, VKPK_REQUIRES),
    ("virtual_key_provider_key", (), VK, VKPK_REQUIRES),
]


def _matrix_id(kind: str, ids: tuple[str, ...], field: str | None) -> str:
    sent = "+".join(name.removesuffix("_id") for name in ids) or "none"
    return f"{kind}[{sent}]-{'ok' if field is None else 'rejects-' + field}"


@pytest.mark.parametrize(("kind", "ids", "field", "message"), [
    pytest.param(*row, id=_matrix_id(*row[:3])) for row in MATRIX
])
def test_scope_kind_matrix(api, world, kind, ids, field, message):
    sent = {name: fill(IDS[name], world) for name in ids}
    response = api.post(URL, body(scope_kind=kind, **sent), format="json")
    if field is None:
        assert response.status_code == 201, response.json()
        override = response.json()["pricing_override"]
        assert override["scope_kind"] == kind
        for name in (VK, PROVIDER, KEY):
            assert override[name] == sent.get(name)
        row = PricingOverride.objects.get()
        assert (str(row.virtual_key_id) if row.virtual_key_id else None) == sent.get(VK)
        assert (row.provider.name if row.provider_id else None) == sent.get(PROVIDER)
        assert (str(row.provider_key_id) if row.provider_key_id else None) == sent.get(KEY)
    else:
        error = assert_rejected(response, field, message)
        assert error["message"] == message
        assert not PricingOverride.objects.exists()


@pytest.mark.parametrize(("kind", "message"), [
    pytest.param("everything", 'unsupported scope_kind "everything"', id="unknown"),
    pytest.param("Global", 'unsupported scope_kind "Global"', id="case-sensitive"),
    pytest.param("", 'unsupported scope_kind ""', id="empty"),
    pytest.param(None, 'unsupported scope_kind ""', id="null"),
    pytest.param(ABSENT, 'unsupported scope_kind ""', id="absent"),
])
def test_unsupported_scope_kind(api, world, kind, message):
    response = api.post(URL, body(scope_kind=kind), format="json")
    assert_rejected(response, "scope_kind", message)


# --- P1: ids are normalised before validation ----------------------------------------------

@pytest.mark.parametrize(("payload", "expected"), [
    pytest.param({"scope_kind": "global", VK: ""}, {}, id="global-with-empty-vk"),
    pytest.param({"scope_kind": "global", VK: " ", PROVIDER: "", KEY: "\t"}, {},
                 id="global-with-blank-ids"),
    pytest.param({"scope_kind": "global", VK: None, PROVIDER: None, KEY: None}, {},
                 id="global-with-null-ids"),
    pytest.param({"scope_kind": "virtual_key", VK: "  {vk}  "}, {VK: "{vk}"},
                 id="vk-trimmed"),
    pytest.param({"scope_kind": "provider", PROVIDER: " openai ", VK: ""},
                 {PROVIDER: "openai"}, id="provider-trimmed"),
])
def test_ids_are_normalised_before_validation(api, world, payload, expected):
    response = api.post(URL, body(**fill(payload, world)), format="json")
    assert response.status_code == 201, response.json()
    override = response.json()["pricing_override"]
    for name in (VK, PROVIDER, KEY):
        assert override[name] == fill(expected.get(name), world)


@pytest.mark.parametrize(("payload", "field", "message"), [
    pytest.param({"scope_kind": "virtual_key", VK: "  "}, VK,
                 "virtual_key_id is required for virtual_key scope_kind", id="blank-vk"),
    pytest.param({"scope_kind": "provider", PROVIDER: ""}, PROVIDER,
                 "provider_id is required for provider scope_kind", id="empty-provider"),
    pytest.param({"scope_kind": "provider_key", KEY: " "}, KEY,
                 "provider_key_id is required for provider_key scope_kind", id="blank-key"),
])
def test_blank_required_ids_are_missing(api, world, payload, field, message):
    response = api.post(URL, body(**payload), format="json")
    assert_rejected(response, field, message)
    assert not PricingOverride.objects.exists()


# --- P3: referenced rows exist and agree ---------------------------------------------------

@pytest.mark.parametrize(("payload", "field", "message"), [
    pytest.param({"scope_kind": "virtual_key", VK: UNKNOWN_ID}, VK,
                 f"virtual key {UNKNOWN_ID} does not exist", id="unknown-vk"),
    pytest.param({"scope_kind": "virtual_key", VK: "vk-1"}, VK,
                 "virtual_key_id 'vk-1' is not a valid virtual key id", id="malformed-vk"),
    pytest.param({"scope_kind": "provider", PROVIDER: "nope"}, PROVIDER,
                 "invalid provider name: nope", id="unknown-provider"),
    pytest.param({"scope_kind": "provider", PROVIDER: "OpenAI"}, PROVIDER,
                 "invalid provider name: OpenAI", id="provider-name-is-exact"),
    pytest.param({"scope_kind": "provider_key", KEY: UNKNOWN_ID}, KEY,
                 f"provider key {UNKNOWN_ID} does not exist", id="unknown-key"),
    pytest.param({"scope_kind": "provider_key", KEY: "42"}, KEY,
                 "provider_key_id '42' is not a valid provider key id", id="malformed-key"),
    pytest.param({"scope_kind": "virtual_key_provider_key", VK: "{vk}", PROVIDER: "openai",
                  KEY: "{anthropic_key}"}, KEY,
                 "provider key {anthropic_key} belongs to provider anthropic, not openai",
                 id="key-of-another-provider"),
])
def test_references_must_exist(api, world, payload, field, message):
    response = api.post(URL, body(**fill(payload, world)), format="json")
    assert_rejected(response, field, fill(message, world))
    assert not PricingOverride.objects.exists()


def test_a_provider_key_scope_takes_any_providers_key(api, world):
    response = api.post(URL, body(scope_kind="provider_key", provider_key_id=world[
        "anthropic_key"]), format="json")
    assert response.status_code == 201


# --- the other fields --------------------------------------------------------------------

FIELD_CASES = [
    # name
    pytest.param({"name": ABSENT}, "name", "name is required", id="name-absent"),
    pytest.param({"name": ""}, "name", "name is required", id="name-empty"),
    pytest.param({"name": "   "}, "name", "name is required", id="name-blank"),
    pytest.param({"name": None}, "name", "name is required", id="name-null"),
    pytest.param({"name": "n" * 10_000}, "name",
                 "Ensure this field has no more than 255 characters.", id="name-10000-chars"),
    pytest.param({"name": 7}, "name", "Not a valid string.", id="name-number"),
    pytest.param({"name": "a\x00b"}, "name", "Null characters are not allowed.",
                 id="name-nul"),
    pytest.param({"pattern": "gpt\x00"}, "pattern", "Null characters are not allowed.",
                 id="pattern-nul"),
    # match type and pattern
    pytest.param({"match_type": "regex"}, "match_type", 'unsupported match_type "regex"',
                 id="unknown-match-type"),
    pytest.param({"match_type": ABSENT}, "match_type", 'unsupported match_type ""',
                 id="match-type-absent"),
    pytest.param({"pattern": ""}, "pattern", "pattern is required", id="pattern-empty"),
    pytest.param({"pattern": "  "}, "pattern", "pattern is required", id="pattern-blank"),
    pytest.param({"pattern": ABSENT}, "pattern", "pattern is required", id="pattern-absent"),
    pytest.param({"pattern": "gpt-*"}, "pattern",
                 "exact match pattern must not contain wildcards", id="exact-with-star"),
    pytest.param({"match_type": "wildcard", "pattern": "gpt-4o"}, "pattern",
                 "wildcard pattern must end with *", id="wildcard-without-star"),
    pytest.param({"match_type": "wildcard", "pattern": "gpt-*-*"}, "pattern",
                 "wildcard pattern must contain exactly one trailing *", id="two-stars"),
    pytest.param({"match_type": "wildcard", "pattern": "*gpt"}, "pattern",
                 "wildcard pattern must end with *", id="leading-star"),
    pytest.param({"pattern": "m" * 256}, "pattern", "pattern must be at most 255 characters",
                 id="pattern-too-long"),
    # request types
    pytest.param({"request_types": []}, "request_types",
                 "request_types is required and must contain at least one value",
                 id="request-types-empty"),
    pytest.param({"request_types": ABSENT}, "request_types",
                 "request_types is required and must contain at least one value",
                 id="request-types-absent"),
    pytest.param({"request_types": None}, "request_types",
                 "request_types is required and must contain at least one value",
                 id="request-types-null"),
    pytest.param({"request_types": "chat_completion"}, "request_types",
                 "request_types is required and must contain at least one value",
                 id="request-types-string"),
    pytest.param({"request_types": ["chat_completion_stream"]}, "request_types",
                 'unsupported request_type "chat_completion_stream": use the base type (e.g. '
                 '"chat_completion" covers both streaming and non-streaming)',
                 id="stream-variant"),
    pytest.param({"request_types": ["chat"]}, "request_types", None, id="unknown-type"),
    pytest.param({"request_types": [1]}, "request_types", "request types must be strings",
                 id="type-number"),
    pytest.param({"request_types": ["embedding", "embedding"]}, "request_types",
                 'duplicate request_type "embedding"', id="duplicate-type"),
    # patch
    pytest.param({"patch": {"input_cost_per_token": -0.000001}}, "patch",
                 "input_cost_per_token must be non-negative", id="negative-price"),
    pytest.param({"patch": {"input_cost_per_tokens": 1}}, "patch", None, id="unknown-price"),
    pytest.param({"patch": {"input_cost_per_token": "0.1"}}, "patch",
                 "input_cost_per_token must be a number", id="price-string"),
    pytest.param({"patch": {"input_cost_per_token": True}}, "patch",
                 "input_cost_per_token must be a number", id="price-bool"),
    pytest.param({"patch": {"input_cost_per_token": None}}, "patch",
                 "input_cost_per_token must be a number", id="price-null"),
    pytest.param({"patch": {"input_cost_per_token": 10**7}}, "patch",
                 "input_cost_per_token must not exceed 1e+06", id="price-too-large"),
    pytest.param({"patch": [1, 2]}, "patch", "must be an object of price fields",
                 id="patch-list"),
    pytest.param({"patch": '{"input_cost_per_token": 1}'}, "patch",
                 "must be an object of price fields", id="patch-string"),
    # ids
    pytest.param({"scope_kind": "virtual_key", "virtual_key_id": 5}, "virtual_key_id",
                 "Not a valid string.", id="vk-number"),
    pytest.param({"scope_kind": "provider", "provider_id": ["openai"]}, "provider_id",
                 "Not a valid string.", id="provider-list"),
]


@pytest.mark.parametrize(("payload", "field", "message"), FIELD_CASES)
def test_create_rejects(api, world, payload, field, message):
    response = api.post(URL, body(**payload), format="json")
    assert_rejected(response, field, message)
    assert not PricingOverride.objects.exists()
    assert not AuditEvent.objects.exists()


def test_unknown_price_field_lists_the_known_ones(api, world):
    response = api.post(URL, body(patch={"input_cost_per_tokens": 1}), format="json")
    (message,) = response.json()["error"]["fields"]["patch"]
    assert message.startswith('unknown price field "input_cost_per_tokens"; known fields: ')


def test_unknown_request_type_lists_the_base_types(api, world):
    response = api.post(URL, body(request_types=["chat"]), format="json")
    (message,) = response.json()["error"]["fields"]["request_types"]
    assert message == f'unsupported request_type "chat": use one of {", ".join(BASE_REQUEST_TYPES)}'


@pytest.mark.parametrize(("payload", "stored"), [
    pytest.param({"match_type": "wildcard", "pattern": "*"}, {"pattern": "*"}, id="lone-star"),
    pytest.param({"pattern": "  gpt-4o  "}, {"pattern": "gpt-4o"}, id="pattern-trimmed"),
    pytest.param({"name": "  spaced  "}, {"name": "spaced"}, id="name-trimmed"),
    pytest.param({"patch": {"input_cost_per_token": 0}}, {"patch": {"input_cost_per_token": 0}},
                 id="zero-price"),
    pytest.param({"patch": dict.fromkeys(PATCH_FIELDS, 0.5)},
                 {"patch": dict.fromkeys(PATCH_FIELDS, 0.5)}, id="every-price-field"),
    pytest.param({"request_types": list(BASE_REQUEST_TYPES)},
                 {"request_types": list(BASE_REQUEST_TYPES)}, id="every-request-type"),
    pytest.param({"unknown": 1, "Name": "ignored"}, {"name": "override"}, id="unknown-keys"),
])
def test_create_accepts(api, world, payload, stored):
    response = api.post(URL, body(**payload), format="json")
    assert response.status_code == 201, response.json()
    override = response.json()["pricing_override"]
    for field, value in stored.items():
        assert override[field] == value


# --- update validation -------------------------------------------------------------------

UPDATE_CASES = [
    pytest.param({"name": ""}, "name", "name is required", id="name-empty"),
    pytest.param({"name": "  "}, "name", "name is required", id="name-blank"),
    pytest.param({"scope_kind": ""}, "scope_kind", 'unsupported scope_kind ""',
                 id="scope-kind-empty"),
    pytest.param({"scope_kind": "team"}, "scope_kind", 'unsupported scope_kind "team"',
                 id="scope-kind-unknown"),
    pytest.param({"scope_kind": "virtual_key"}, "virtual_key_id",
                 "virtual_key_id is required for virtual_key scope_kind",
                 id="scope-kind-without-its-id"),
    pytest.param({"virtual_key_id": "{vk}"}, "virtual_key_id",
                 "global scope_kind must not include scope identifiers", id="id-on-global"),
    pytest.param({"scope_kind": "virtual_key", "virtual_key_id": "   "}, "virtual_key_id",
                 "virtual_key_id is required for virtual_key scope_kind", id="blank-id-p1"),
    pytest.param({"scope_kind": "virtual_key", "virtual_key_id": UNKNOWN_ID}, "virtual_key_id",
                 f"virtual key {UNKNOWN_ID} does not exist", id="unknown-vk"),
    pytest.param({"match_type": ""}, "match_type", 'unsupported match_type ""',
                 id="match-type-empty"),
    pytest.param({"pattern": ""}, "pattern", "pattern is required", id="pattern-empty"),
    pytest.param({"request_types": []}, "request_types",
                 "request_types is required and must contain at least one value",
                 id="request-types-empty"),
    pytest.param({"request_types": ["speech_stream"]}, "request_types", None,
                 id="stream-variant"),
    pytest.param({"patch": {"output_cost_per_token": -1}}, "patch",
                 "output_cost_per_token must be non-negative", id="negative-price"),
    pytest.param({"patch": "cheap"}, "patch", "must be an object of price fields",
                 id="patch-string"),
]


@pytest.mark.parametrize(("payload", "field", "message"), UPDATE_CASES)
def test_update_rejects(api, world, payload, field, message):
    override = PricingOverrideFactory()
    before = api.get(f"{URL}/{override.id}").json()
    response = api.put(f"{URL}/{override.id}", fill(payload, world), format="json")
    assert_rejected(response, field, message)
    assert api.get(f"{URL}/{override.id}").json() == before
    assert not AuditEvent.objects.exists()


# --- bodies: JSON, types, hostile input ---------------------------------------------------

@pytest.mark.parametrize("text", [
    "<script>alert(1)</script>",
    "'; DELETE FROM pricing_pricingoverride; --",
    "名前 🚀",
])
def test_hostile_names_are_stored_verbatim(api, world, text):
    response = api.post(URL, body(name=text), format="json")
    assert response.status_code == 201
    assert response["Content-Type"] == "application/json"
    override_id = response.json()["pricing_override"]["id"]
    assert api.get(f"{URL}/{override_id}").json()["pricing_override"]["name"] == text
    assert api.get(URL, {"search": text}).json()["total_count"] == 1
    assert PricingOverride.objects.get().name == text


def test_hostile_filter_values_are_rejected_or_inert(api, world):
    PricingOverrideFactory()
    assert api.get(URL, {"provider_id": "' OR 1=1 --"}).json()["pricing_overrides"] == []
    assert api.get(URL, {"virtual_key_id": "' OR 1=1 --"}).status_code == 400
