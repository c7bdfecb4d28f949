"""POST /api/pricing/quote and GET /api/pricing/models."""

import pytest

from tests.factories import PricingOverrideFactory, ProviderFactory, VirtualKeyFactory
from tests.governance.test_api_common import assert_error

pytestmark = pytest.mark.django_db
GPT4O_USAGE = {"input_tokens": 1000, "cached_read_tokens": 200, "output_tokens": 100}


def quote(api, **body):
    body.setdefault("provider", "openai")
    body.setdefault("model", "gpt-4o")
    body.setdefault("usage", GPT4O_USAGE)
    return api.post("/api/pricing/quote", body, format="json")


def test_gpt4o_known_cost_without_configured_provider(api):
    response = quote(api)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["total_usd"] == "0.00325"
    assert body["total_nanos"] == 3_250_000
    assert body["components"] == {"input": "0.002", "cached_read": "0.00025",
                                  "cache_write": "0", "output": "0.001", "request": "0"}
    assert body["priced"] is True
    assert body["source"] == "catalog"
    assert body["override"] is None
    assert body["catalog"]["model"] == "gpt-4o"


def test_override_precedence_through_the_api(api):
    provider = ProviderFactory(name="openai")
    key = VirtualKeyFactory()
    PricingOverrideFactory(name="global", scope_kind="global", pattern="gpt-4o",
                           patch={"input_cost_per_token": 0.000001})
    PricingOverrideFactory(name="provider", scope_kind="provider", provider=provider,
                           match_type="wildcard", pattern="gpt-4o*",
                           patch={"input_cost_per_token": 0.000003})
    PricingOverrideFactory(name="key", scope_kind="virtual_key", virtual_key=key,
                           match_type="wildcard", pattern="gpt-*",
                           patch={"output_cost_per_token": 0})
    body = quote(api).json()
    assert body["override"]["name"] == "provider"
    assert body["components"]["input"] == "0.0024"  # 800 × $3/M
    keyed = quote(api, virtual_key_id=str(key.id)).json()
    assert keyed["override"]["name"] == "key"
    assert keyed["components"]["output"] == "0"  # 0 is a real price
    assert keyed["components"]["input"] == "0.002"  # only the named field was replaced


def test_override_prices_an_unknown_model_and_unknown_is_unpriced(api):
    ProviderFactory(name="local", kind="openai_compatible", base_url="http://127.0.0.1:9")
    unpriced = quote(api, provider="local", model="my-finetune").json()
    assert unpriced["priced"] is False
    assert unpriced["total_usd"] == "0"
    PricingOverrideFactory(name="finetune", scope_kind="global", pattern="my-finetune",
                           patch={"input_cost_per_token": 0.000001,
                                  "output_cost_per_token": 0.000002})
    priced = quote(api, provider="local", model="my-finetune").json()
    assert priced["priced"] is True
    assert priced["total_usd"] == "0.0012"  # 1000 × $1/M + 100 × $2/M


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "nobody"}, "provider"),
        ({"model": ""}, "model"),
        ({"usage": {"output_tokens": 1}}, "usage.input_tokens"),
        ({"usage": {"input_tokens": -1}}, "usage.input_tokens"),
        ({"usage": {"input_tokens": 1.5}}, "usage.input_tokens"),
        ({"usage": {"input_tokens": "10"}}, "usage.input_tokens"),
        ({"usage": {"input_tokens": 10**13}}, "usage.input_tokens"),
        ({"usage": {"input_tokens": 10, "cached_read_tokens": 11}}, "usage"),
        ({"usage": {"input_tokens": 10, "output_tokens": 1, "reasoning_tokens": 2}}, "usage"),
        ({"request_type": "chat_completion_stream"}, "request_type"),
        ({"virtual_key_id": "00000000-0000-0000-0000-000000000000"}, "virtual_key_id"),
        ({"provider_key_id": "nope"}, "provider_key_id"),
    ],
)
def test_bad_quotes_are_400(api, body, field):
    assert_error(quote(api, **body), 400, field=field)


def test_quote_requires_staff(anonymous_api, non_staff_api):
    assert_error(quote(anonymous_api), 401)
    assert_error(quote(non_staff_api), 403)


def test_catalog_browse(api):
    body = api.get("/api/pricing/models?provider=openai&search=gpt-4o-mini").json()
    assert body["total_count"] >= 1
    names = [item["model"] for item in body["models"]]
    assert "gpt-4o-mini" in names
    mini = next(item for item in body["models"] if item["model"] == "gpt-4o-mini")
    assert mini["input_per_million"] == 0.15
    assert mini["output_per_million"] == 0.6
    page = api.get("/api/pricing/models?limit=5&offset=5").json()
    assert page["count"] == 5
    assert page["offset"] == 5
    assert page["total_count"] > 100
    assert_error(api.get("/api/pricing/models?provider=nonexistent"), 400, field="provider")
    assert_error(api.get("/api/pricing/models?limit=x"), 400, field="limit")


def test_admin_catalog_page_and_effective_price(admin_client_logged_in, client, plain_user):
    page = admin_client_logged_in.get("/admin/pricing/pricingoverride/catalog/?provider=openai"
                                      "&q=gpt-4o-mini")
    assert page.status_code == 200
    assert "gpt-4o-mini" in page.content.decode()
    hostile = admin_client_logged_in.get("/admin/pricing/pricingoverride/catalog/"
                                         "?provider=<script>&q=<script>alert(1)</script>&page=x")
    assert hostile.status_code == 200
    assert "<script>alert(1)</script>" not in hostile.content.decode()
    PricingOverrideFactory(name="cheap", pattern="gpt-4o",
                           patch={"input_cost_per_token": 0.000001})
    listing = admin_client_logged_in.get("/admin/pricing/pricingoverride/").content.decode()
    assert "in $1, out $10, cache read $1.25" in listing  # gpt-4o with the patched input
    assert "Price catalog" in listing
    client.force_login(plain_user)
    assert client.get("/admin/pricing/pricingoverride/catalog/").status_code == 302
