"""Request cost: known catalog costs, override precedence and patching, unpriced models,
the resolution cache, and arithmetic properties."""

from __future__ import annotations

import itertools
import logging
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from genai_prices import Usage as GenaiUsage
from genai_prices.data import providers as genai_providers
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing.catalog import PriceCatalog, Rates, Tier, TieredRate
from pricing.cost import (
    Pricer,
    PriceSource,
    ProviderPricing,
    UnpricedCounter,
    Usage,
    compute_cost,
)
from pricing.models import ScopeKind
from pricing.resolution import (
    PATCH_FIELD_SLOTS,
    SCOPE_PRECEDENCE,
    OverrideRecord,
    apply_patch,
    base_request_type,
)
from pricing.validators import BASE_REQUEST_TYPES, PATCH_FIELDS, STREAM_VARIANTS

CATALOG = PriceCatalog.bundled()
PROVIDERS = (
    ProviderPricing("openai", "openai"),
    ProviderPricing("my-azure", "azure"),
    ProviderPricing("anthropic", "anthropic"),
    ProviderPricing("fast-llama", "openai_compatible", "groq"),
    ProviderPricing("pplx", "openai_compatible", "perplexity"),
    ProviderPricing("deepseek", "openai_compatible", "deepseek"),
    ProviderPricing("local", "openai_compatible"),
)
CHAT = "chat_completion"
T0 = datetime(2026, 11, 1, tzinfo=UTC)
LATER = T0 + timedelta(days=1)
M = Decimal(10) ** 6


def make_pricer(overrides: list[OverrideRecord] | tuple[OverrideRecord, ...] = (), **kwargs: Any):
    return Pricer(catalog=CATALOG, overrides=overrides, providers=PROVIDERS, **kwargs)


def override(
    id: str = "o-1",
    *,
    scope_kind: str = "global",
    virtual_key_id: str | None = None,
    provider_id: str | None = None,
    provider_key_id: str | None = None,
    match_type: str = "exact",
    pattern: str = "gpt-4o",
    request_types: tuple[str, ...] = (CHAT,),
    patch: dict[str, float] | None = None,
    updated_at: datetime = T0,
    name: str | None = None,
) -> OverrideRecord:
    return OverrideRecord(
        id=id,
        name=name or f"override {id}",
        scope_kind=scope_kind,
        virtual_key_id=virtual_key_id,
        provider_id=provider_id,
        provider_key_id=provider_key_id,
        match_type=match_type,
        pattern=pattern,
        request_types=frozenset(request_types),
        patch=patch if patch is not None else {"input_cost_per_token": 0.000001},
        updated_at=updated_at,
    )


GPT_4O_USAGE = Usage(input_tokens=1000, cached_read_tokens=200, output_tokens=100)


# --- known catalog costs ----------------------------------------------------------------


def test_gpt_4o_known_cost():
    cost = make_pricer().quote(GPT_4O_USAGE, "openai", "gpt-4o", CHAT)
    assert cost.total == Decimal("0.00325")
    assert cost.total_nanos == 3_250_000
    assert (cost.input, cost.cached_read, cost.cache_write, cost.output, cost.request) == (
        Decimal("0.002"), Decimal("0.00025"), 0, Decimal("0.001"), 0,
    )
    assert cost.priced is True
    assert cost.source is PriceSource.CATALOG
    assert (cost.catalog_provider_id, cost.catalog_model_id) == ("openai", "gpt-4o")
    assert cost.override_id is None


def test_gpt_4o_mini_known_cost():
    cost = make_pricer().quote(GPT_4O_USAGE, "openai", "gpt-4o-mini", CHAT)
    # 800 x $0.15/M + 200 x $0.075/M + 100 x $0.60/M
    assert cost.total == Decimal("0.000195")
    assert cost.total_nanos == 195_000


def test_anthropic_cache_reads_and_writes():
    usage = Usage.from_anthropic(
        input_tokens=100,
        output_tokens=50,
        cache_read_input_tokens=800,
        cache_creation_input_tokens=100,
        cache_creation_1h_input_tokens=40,
    )
    assert (usage.input_tokens, usage.cached_read_tokens, usage.cache_write_tokens) == (
        1000, 800, 100,
    )
    cost = make_pricer().quote(usage, "anthropic", "claude-3-5-sonnet-latest", CHAT)

    rates = CATALOG.lookup("anthropic", "claude-3-5-sonnet").rates
    assert cost.input == 100 * rates.input.base
    assert cost.cached_read == 800 * rates.cache_read.base
    assert cost.cache_write == 60 * rates.cache_write.base + 40 * rates.cache_write_1h.base
    assert cost.output == 50 * rates.output.base
    # Hard-coded from the package data: $3 in, $0.30 cache read, $3.75 cache write (5 min),
    # $6 cache write (1 h), $15 out, per million tokens.
    assert cost.input == Decimal("0.0003")
    assert cost.cached_read == Decimal("0.00024")
    assert cost.cache_write == Decimal("0.000225") + Decimal("0.00024")
    assert cost.output == Decimal("0.00075")
    assert cost.total == Decimal("0.001755")
    assert cost.total_nanos == 1_755_000


def test_openai_usage_normalisation():
    usage = Usage.from_openai(
        prompt_tokens=1000, completion_tokens=100, cached_tokens=200, reasoning_tokens=60
    )
    assert usage == Usage(
        input_tokens=1000, cached_read_tokens=200, output_tokens=100, reasoning_tokens=60
    )
    # Reasoning is already in output_tokens: it is not charged twice.
    assert make_pricer().quote(usage, "openai", "gpt-4o", CHAT).total == Decimal("0.00325")


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        pytest.param("openai", "gpt-4o-2024-08-06", id="dated-alias"),
        pytest.param("openai", "gpt-4o-2024-11-20", id="other-dated-alias"),
        pytest.param("openai", "openai/gpt-4o", id="provider-slash-model"),
        pytest.param("my-azure", "gpt-4o", id="azure"),
        pytest.param("my-azure", "my-azure/gpt-4o", id="azure-slash-model"),
    ],
)
def test_aliases_prefixes_and_azure_price_like_gpt_4o(provider, model):
    cost = make_pricer().quote(GPT_4O_USAGE, provider, model, CHAT)
    assert cost.total == Decimal("0.00325")
    assert cost.catalog_model_id == "gpt-4o"


def test_openai_compatible_with_price_provider():
    usage = Usage(input_tokens=1000, cached_read_tokens=200, output_tokens=100)
    cost = make_pricer().quote(usage, "fast-llama", "llama-3.3-70b-versatile", CHAT)
    # Groq lists no cache-read price: cached tokens are billed as input ($0.59/M, $0.79/M).
    assert cost.total == Decimal("0.000669")
    assert cost.cached_read == 200 * Decimal("0.59") / M
    assert cost.catalog_provider_id == "groq"


def test_per_request_price():
    cost = make_pricer().quote(Usage(input_tokens=1000, output_tokens=1000), "pplx", "sonar", CHAT)
    assert cost.request == Decimal("0.012")
    assert cost.total == Decimal("0.001") + Decimal("0.001") + Decimal("0.012")


def test_tiered_prices_apply_above_the_threshold():
    pricer = make_pricer()
    small = pricer.quote(Usage(input_tokens=200_000, output_tokens=1000), "anthropic",
                         "claude-sonnet-4-5", CHAT)
    large = pricer.quote(Usage(input_tokens=250_000, cached_read_tokens=50_000,
                               output_tokens=1000), "anthropic", "claude-sonnet-4-5", CHAT)
    assert small.input == 200_000 * Decimal(3) / M
    assert small.output == 1000 * Decimal(15) / M
    assert large.input == 200_000 * Decimal(6) / M
    assert large.cached_read == 50_000 * Decimal("0.6") / M
    assert large.output == 1000 * Decimal("22.5") / M


def test_time_dependent_catalog_prices_follow_the_request_time():
    usage = Usage(input_tokens=1_000_000)
    pricer = make_pricer(clock=lambda: datetime(2026, 11, 23, 12, tzinfo=UTC))
    assert pricer.quote(usage, "deepseek", "deepseek-chat", CHAT).total == Decimal("0.27")
    off_peak = datetime(2026, 11, 23, 20, tzinfo=UTC)
    assert pricer.quote(usage, "deepseek", "deepseek-chat", CHAT, at=off_peak).total == Decimal(
        "0.135"
    )


@pytest.mark.parametrize(
    ("provider", "model", "usage"),
    [
        ("openai", "gpt-4o", GPT_4O_USAGE),
        ("openai", "gpt-4o-mini", Usage(input_tokens=12_345, cached_read_tokens=345,
                                        output_tokens=678)),
        ("anthropic", "claude-3-5-sonnet", Usage(input_tokens=5000, cached_read_tokens=3000,
                                                 cache_write_tokens=1000, output_tokens=40)),
        ("anthropic", "claude-sonnet-4-5", Usage(input_tokens=300_000, cached_read_tokens=10_000,
                                                 cache_write_tokens=20_000, output_tokens=9)),
        ("groq", "llama-3.3-70b-versatile", Usage(input_tokens=777, output_tokens=333)),
        ("perplexity", "sonar", Usage(input_tokens=10, output_tokens=20)),
        ("deepseek", "deepseek-chat", Usage(input_tokens=4000, cached_read_tokens=1000,
                                            output_tokens=50)),
    ],
)
def test_costs_agree_with_genai_prices(provider, model, usage):
    at = datetime(2026, 11, 23, 12, tzinfo=UTC)
    catalog_provider = next(p for p in genai_providers if p.id == provider)
    info = catalog_provider.find_model(model, all_providers=genai_providers)
    expected = info.calc_price(
        GenaiUsage(
            input_tokens=usage.input_tokens,
            cache_read_tokens=usage.cached_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            output_tokens=usage.output_tokens,
        ),
        catalog_provider,
        genai_request_timestamp=at,
    )
    price = CATALOG.lookup(provider, model)
    assert compute_cost(usage, price.rates_at(at)).total == expected.total_price


# --- unpriced models -------------------------------------------------------------------


def test_openai_compatible_without_price_provider_is_unpriced_and_counted(caplog):
    counter = UnpricedCounter()
    pricer = make_pricer(unpriced=counter)
    with caplog.at_level(logging.WARNING, logger="pricing.cost"):
        first = pricer.quote(GPT_4O_USAGE, "local", "llama-3.3-70b-versatile", CHAT)
        second = pricer.quote(GPT_4O_USAGE, "local", "llama-3.3-70b-versatile", CHAT)
    assert first == second
    assert first.priced is False
    assert first.source is PriceSource.UNPRICED
    assert first.total == 0
    assert first.total_nanos == 0
    assert counter.get("local", "llama-3.3-70b-versatile") == 2
    assert counter.snapshot() == {("local", "llama-3.3-70b-versatile"): 2}
    assert counter.total == 2
    # Logged once, when resolved; later quotes hit the cache.
    assert len([r for r in caplog.records if "no price for model" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "no-such-model"),
        ("unconfigured-provider", "gpt-4o"),
        ("anthropic", "gpt-4o"),
    ],
)
def test_unknown_models_cost_zero(provider, model):
    pricer = make_pricer()
    cost = pricer.quote(GPT_4O_USAGE, provider, model, CHAT)
    assert (cost.priced, cost.total, cost.total_nanos) == (False, 0, 0)
    assert pricer.unpriced.get(provider, model) == 1


def test_a_failing_catalog_never_raises_on_the_request_path(caplog):
    class BrokenCatalog(PriceCatalog):
        def lookup(self, provider_id, model):
            raise RuntimeError("boom")

    pricer = Pricer(catalog=BrokenCatalog(genai_providers), providers=PROVIDERS)
    with caplog.at_level(logging.ERROR, logger="pricing.cost"):
        cost = pricer.quote(GPT_4O_USAGE, "openai", "gpt-4o", CHAT)
    assert cost.priced is False
    assert "price catalog lookup failed" in caplog.text


def test_out_of_range_usage_is_clamped_not_rejected():
    pricer = make_pricer()
    cost = pricer.quote(
        Usage(input_tokens=100, cached_read_tokens=500, cache_write_tokens=7, output_tokens=-5),
        "openai", "gpt-4o", CHAT,
    )
    assert cost.input == 0
    assert cost.cached_read == 100 * Decimal("1.25") / M
    assert cost.cache_write == 0
    assert cost.output == 0
    negative = pricer.quote(Usage(input_tokens=-10, cached_read_tokens=-1), "openai", "gpt-4o",
                            CHAT)
    assert negative.total == 0


# --- override precedence ---------------------------------------------------------------

VK, PK, PROVIDER = "vk-1", "pk-1", "openai"
SCOPE_IDS: dict[str, dict[str, str]] = {
    "virtual_key_provider_key": {
        "virtual_key_id": VK, "provider_id": PROVIDER, "provider_key_id": PK,
    },
    "virtual_key_provider": {"virtual_key_id": VK, "provider_id": PROVIDER},
    "virtual_key": {"virtual_key_id": VK},
    "provider_key": {"provider_key_id": PK},
    "provider": {"provider_id": PROVIDER},
    "global": {},
}


def scoped(scope_kind: str, id: str, **kwargs: Any) -> OverrideRecord:
    return override(id, scope_kind=scope_kind, **SCOPE_IDS[scope_kind], **kwargs)


def quote_winner(overrides, *, model="gpt-4o", request_type=CHAT, vk=VK, pk=PK) -> str | None:
    cost = make_pricer(overrides).quote(GPT_4O_USAGE, PROVIDER, model, request_type, vk, pk)
    return cost.override_id


# The spec's order (governance-api 2.12), most specific first; written out, not imported.
EXPECTED_PRECEDENCE = (
    "virtual_key_provider_key",
    "virtual_key_provider",
    "virtual_key",
    "provider_key",
    "provider",
    "global",
)


def test_scope_kinds_match_the_model():
    assert SCOPE_PRECEDENCE == EXPECTED_PRECEDENCE
    assert set(EXPECTED_PRECEDENCE) == set(ScopeKind.values) == set(SCOPE_IDS)


@pytest.mark.parametrize(
    ("specific", "general"),
    list(itertools.combinations(EXPECTED_PRECEDENCE, 2)),
    ids=lambda scope: scope,
)
@pytest.mark.parametrize("general_is_exact", [True, False], ids=["general-exact", "general-wild"])
def test_more_specific_scope_wins(specific, general, general_is_exact):
    """Scope beats everything within it: the general override is newer and may be exact."""
    specific_rule = scoped(specific, "z-specific", match_type="wildcard", pattern="*",
                           request_types=BASE_REQUEST_TYPES)
    general_rule = scoped(
        general, "a-general", updated_at=T0 + timedelta(days=1),
        match_type="exact" if general_is_exact else "wildcard",
        pattern="gpt-4o" if general_is_exact else "gpt-4o*",
    )
    assert quote_winner([specific_rule, general_rule]) == "z-specific"
    assert quote_winner([general_rule, specific_rule]) == "z-specific"


@pytest.mark.parametrize(
    ("scope_kind", "vk", "pk", "applies"),
    [
        ("virtual_key_provider_key", VK, PK, True),
        ("virtual_key_provider_key", VK, "pk-2", False),
        ("virtual_key_provider_key", "vk-2", PK, False),
        ("virtual_key_provider_key", None, PK, False),
        ("virtual_key_provider", VK, None, True),
        ("virtual_key_provider", "vk-2", PK, False),
        ("virtual_key", VK, None, True),
        ("virtual_key", None, PK, False),
        ("provider_key", None, PK, True),
        ("provider_key", VK, "pk-2", False),
        ("provider_key", VK, None, False),
        ("provider", None, None, True),
        ("global", None, None, True),
    ],
)
def test_scope_ids_must_match_the_request(scope_kind, vk, pk, applies):
    rule = scoped(scope_kind, "scoped")
    assert quote_winner([rule], vk=vk, pk=pk) == ("scoped" if applies else None)


def test_provider_scope_names_the_provider():
    rule = override(scope_kind="provider", provider_id="my-azure")
    assert quote_winner([rule]) is None
    cost = make_pricer([rule]).quote(GPT_4O_USAGE, "my-azure", "gpt-4o", CHAT)
    assert cost.override_id == "o-1"


def test_uuid_ids_and_their_strings_are_the_same_scope():
    import uuid

    vk = uuid.uuid4()
    rule = override(scope_kind="virtual_key", virtual_key_id=vk)
    assert quote_winner([rule], vk=str(vk)) == "o-1"
    assert quote_winner([rule], vk=vk) == "o-1"


@pytest.mark.parametrize(
    ("winner", "loser", "model"),
    [
        pytest.param(
            {"id": "b", "match_type": "exact", "pattern": "gpt-4o"},
            {"id": "a", "match_type": "wildcard", "pattern": "gpt-4o*", "updated_at": LATER},
            "gpt-4o", id="exact-beats-newer-wildcard",
        ),
        pytest.param(
            {"id": "b", "pattern": "gpt-4o", "request_types": BASE_REQUEST_TYPES},
            {"id": "a", "match_type": "wildcard", "pattern": "gpt-4o*"},
            "gpt-4o", id="exact-beats-narrower-wildcard",
        ),
        pytest.param(
            {"id": "b", "match_type": "wildcard", "pattern": "gpt-4o-*"},
            {"id": "a", "match_type": "wildcard", "pattern": "gpt-*", "updated_at": LATER},
            "gpt-4o-mini", id="longer-prefix-beats-newer-shorter",
        ),
        pytest.param(
            {"id": "b", "match_type": "wildcard", "pattern": "gpt-*"},
            {"id": "a", "match_type": "wildcard", "pattern": "*"},
            "gpt-4o", id="prefix-beats-star",
        ),
        pytest.param(
            {"id": "b", "request_types": (CHAT,)},
            {"id": "a", "request_types": (CHAT, "responses"), "updated_at": LATER},
            "gpt-4o", id="fewer-request-types-beats-newer",
        ),
        pytest.param(
            {"id": "b", "request_types": (CHAT, "responses")},
            {"id": "a", "request_types": BASE_REQUEST_TYPES},
            "gpt-4o", id="two-types-beat-all-types",
        ),
        pytest.param(
            {"id": "b", "updated_at": T0 + timedelta(seconds=1)},
            {"id": "a"},
            "gpt-4o", id="newer-wins-a-tie",
        ),
        pytest.param(
            {"id": "a"},
            {"id": "b"},
            "gpt-4o", id="lowest-id-wins-a-full-tie",
        ),
        pytest.param(
            {"id": "b", "match_type": "exact", "pattern": "openai/gpt-4o"},
            {"id": "a", "match_type": "wildcard", "pattern": "openai/*"},
            "openai/gpt-4o", id="full-model-name",
        ),
    ],
)
@pytest.mark.parametrize("scope_kind", ["global", "virtual_key_provider_key"])
def test_within_a_scope(winner, loser, model, scope_kind):
    rules = [scoped(scope_kind, **winner), scoped(scope_kind, **loser)]
    assert quote_winner(rules, model=model) == winner["id"]
    assert quote_winner(rules[::-1], model=model) == winner["id"]


@pytest.mark.parametrize(
    ("rule", "model", "request_type", "applies"),
    [
        ({"pattern": "gpt-4o"}, "gpt-4o", CHAT, True),
        ({"pattern": "gpt-4o"}, "openai/gpt-4o", CHAT, True),
        ({"pattern": "gpt-4o"}, "gpt-4o-mini", CHAT, False),
        ({"pattern": "gpt-4o"}, "GPT-4o", CHAT, False),
        ({"pattern": "gpt-4o"}, "gpt-4o", "chat_completion_stream", True),
        ({"pattern": "gpt-4o"}, "gpt-4o", "responses", False),
        ({"pattern": "gpt-4o"}, "gpt-4o", "embedding", False),
        ({"request_types": ("responses",)}, "gpt-4o", "responses_stream", True),
        ({"match_type": "wildcard", "pattern": "gpt-4o*"}, "gpt-4o-mini", CHAT, True),
        ({"match_type": "wildcard", "pattern": "gpt-4o*"}, "gpt-4", CHAT, False),
        ({"match_type": "wildcard", "pattern": "*"}, "anything-at-all", CHAT, True),
    ],
)
def test_override_matching(rule, model, request_type, applies):
    assert quote_winner([override(**rule)], model=model, request_type=request_type) == (
        "o-1" if applies else None
    )


def test_stream_variants_map_to_their_base_type():
    for variant, base in STREAM_VARIANTS.items():
        assert base_request_type(variant) == base
    for base in BASE_REQUEST_TYPES:
        assert base_request_type(base) == base


# --- patches ---------------------------------------------------------------------------


def test_patch_fields_are_allowed_override_fields():
    assert set(PATCH_FIELD_SLOTS) <= PATCH_FIELDS


def quote_with_patch(patch: dict[str, float], usage: Usage = GPT_4O_USAGE, model="gpt-4o"):
    rule = override(patch=patch, pattern=model)
    return make_pricer([rule]).quote(usage, "openai", model, CHAT)


def test_patch_replaces_only_named_fields_and_zero_is_a_price():
    cost = quote_with_patch({"output_cost_per_token": 0})
    assert cost.output == 0
    assert (cost.input, cost.cached_read) == (Decimal("0.002"), Decimal("0.00025"))
    assert cost.total == Decimal("0.00225")
    assert cost.priced is True
    assert cost.source is PriceSource.OVERRIDE
    assert (cost.override_id, cost.override_name) == ("o-1", "override o-1")
    assert cost.catalog_model_id == "gpt-4o"


def test_patching_the_cache_read_price_only():
    cost = quote_with_patch({"cache_read_input_token_cost": 0.000001})
    assert cost.cached_read == Decimal("0.0002")
    assert (cost.input, cost.output) == (Decimal("0.002"), Decimal("0.001"))


def test_patched_input_price_is_the_cache_fallback_when_the_catalog_has_none():
    rule = override(pattern="llama-3.3-70b-versatile", patch={"input_cost_per_token": 0.000002})
    usage = Usage(input_tokens=1000, cached_read_tokens=400, cache_write_tokens=100)
    cost = Pricer(catalog=CATALOG, overrides=[rule], providers=PROVIDERS).quote(
        usage, "fast-llama", "llama-3.3-70b-versatile", CHAT
    )
    assert (cost.input, cost.cached_read, cost.cache_write) == (
        Decimal("0.001"), Decimal("0.0008"), Decimal("0.0002"),
    )


def test_patch_values_are_converted_through_their_repr():
    cost = quote_with_patch({"input_cost_per_token": 0.1e-6},
                            usage=Usage(input_tokens=3))
    assert cost.input == Decimal("3E-7")  # not 3 x the float's binary expansion


def test_tier_patch_fields():
    patch = {
        "input_cost_per_token_above_200k_tokens": 0.000004,
        "output_cost_per_token_above_128k_tokens": 0.00002,
    }
    below = quote_with_patch(patch, usage=Usage(input_tokens=100_000, output_tokens=10))
    middle = quote_with_patch(patch, usage=Usage(input_tokens=150_000, output_tokens=10))
    above = quote_with_patch(patch, usage=Usage(input_tokens=250_000, output_tokens=10))
    assert (below.input, below.output) == (Decimal("0.25"), Decimal("0.0001"))
    assert (middle.input, middle.output) == (Decimal("0.375"), Decimal("0.0002"))
    assert (above.input, above.output) == (Decimal("1"), Decimal("0.0002"))


def test_request_price_patch():
    cost = quote_with_patch({"input_cost_per_request": 0.01})
    assert cost.request == Decimal("0.01")
    assert cost.total == Decimal("0.01325")


def test_fields_outside_token_pricing_do_not_change_the_cost():
    cost = quote_with_patch({"output_cost_per_image": 1.0, "input_cost_per_token_priority": 1.0})
    assert cost.total == Decimal("0.00325")
    assert cost.source is PriceSource.OVERRIDE


def test_override_prices_a_model_the_catalog_does_not_know():
    rule = override(
        scope_kind="provider", provider_id="local", pattern="my-llama",
        patch={"input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002},
    )
    cost = make_pricer([rule]).quote(
        Usage(input_tokens=1000, cached_read_tokens=500, output_tokens=100),
        "local", "my-llama", "chat_completion_stream",
    )
    assert cost.priced is True
    assert cost.source is PriceSource.OVERRIDE
    assert cost.catalog_model_id is None
    assert cost.total == Decimal("0.0012")  # cached tokens fall back to the input price


def test_an_override_without_token_prices_leaves_an_unknown_model_unpriced():
    rule = override(pattern="my-llama", patch={"output_cost_per_image": 0.5})
    pricer = make_pricer([rule])
    cost = pricer.quote(GPT_4O_USAGE, "local", "my-llama", CHAT)
    assert (cost.priced, cost.total, cost.override_id) == (False, 0, "o-1")
    assert pricer.unpriced.get("local", "my-llama") == 1


def test_apply_patch_without_a_catalog_price():
    rates = apply_patch(None, {"input_cost_per_token_above_200k_tokens": 0.000004})
    assert rates.input == TieredRate(Decimal(0), (Tier(200_000, Decimal("0.000004")),))
    both = apply_patch(None, {"input_cost_per_token_above_200k_tokens": 0.000004,
                              "input_cost_per_token": 0.000002})
    assert both.input == TieredRate(Decimal("0.000002"), (Tier(200_000, Decimal("0.000004")),))
    assert apply_patch(None, {}).is_empty


def test_patches_apply_to_time_dependent_prices_too():
    rule = override(pattern="deepseek-chat", patch={"output_cost_per_token": 0.000001})
    pricer = make_pricer([rule])
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    peak = pricer.quote(usage, "deepseek", "deepseek-chat", CHAT,
                        at=datetime(2026, 11, 23, 12, tzinfo=UTC))
    off_peak = pricer.quote(usage, "deepseek", "deepseek-chat", CHAT,
                            at=datetime(2026, 11, 23, 20, tzinfo=UTC))
    assert (peak.input, peak.output) == (Decimal("0.27"), Decimal(1))
    assert (off_peak.input, off_peak.output) == (Decimal("0.135"), Decimal(1))


def test_override_records_are_immutable():
    rule = override(patch={"input_cost_per_token": 0.1})
    with pytest.raises(TypeError):
        rule.patch["input_cost_per_token"] = 0.2  # type: ignore[index]


# --- resolution cache ------------------------------------------------------------------


class CountingCatalog(PriceCatalog):
    def __init__(self) -> None:
        super().__init__(genai_providers)
        self.lookups = 0

    def lookup(self, provider_id, model):
        self.lookups += 1
        return super().lookup(provider_id, model)


def test_resolution_is_cached_per_request_key():
    catalog = CountingCatalog()
    pricer = Pricer(catalog=catalog, providers=PROVIDERS)
    for _ in range(50):
        pricer.quote(GPT_4O_USAGE, "openai", "gpt-4o", CHAT)
        pricer.quote(GPT_4O_USAGE, "openai", "gpt-4o", CHAT, "vk-unused", "pk-unused")
    assert catalog.lookups == 1  # ids no override names share the unscoped entry
    assert pricer.resolve("openai", "gpt-4o", CHAT) is pricer.resolve("openai", "gpt-4o", CHAT)
    pricer.quote(GPT_4O_USAGE, "openai", "gpt-4o", "responses")
    assert catalog.lookups == 2


def test_scoped_resolutions_are_cached_separately():
    rule = override(scope_kind="virtual_key", virtual_key_id="vk-1")
    pricer = make_pricer([rule])
    assert pricer.quote(GPT_4O_USAGE, "openai", "gpt-4o", CHAT, "vk-1").override_id == "o-1"
    assert pricer.quote(GPT_4O_USAGE, "openai", "gpt-4o", CHAT, "vk-2").override_id is None
    assert pricer.quote(GPT_4O_USAGE, "openai", "gpt-4o", CHAT).override_id is None


def test_a_new_snapshot_builds_a_new_pricer():
    before = make_pricer()
    after = make_pricer([override(patch={"input_cost_per_token": 0})])
    assert before.quote(GPT_4O_USAGE, "openai", "gpt-4o", CHAT).total == Decimal("0.00325")
    assert after.quote(GPT_4O_USAGE, "openai", "gpt-4o", CHAT).total == Decimal("0.00125")


def test_the_cache_is_bounded():
    catalog = CountingCatalog()
    pricer = Pricer(catalog=catalog, providers=PROVIDERS, max_cached=2)
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4o"):
        pricer.quote(GPT_4O_USAGE, "openai", model, CHAT)
    assert catalog.lookups == 4


def test_catalog_provider_of_a_gateway_provider():
    pricer = make_pricer()
    assert pricer.catalog_provider_id("fast-llama") == "groq"
    assert pricer.catalog_provider_id("local") is None
    assert pricer.catalog_provider_id("unconfigured") is None


# --- arithmetic properties -------------------------------------------------------------


def round_half_up_nanos(total: Decimal) -> int:
    return int((total * 10**9).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def test_total_nanos_round_half_up():
    half = Rates(input=TieredRate(Decimal("0.0000000005")))
    below_half = Rates(input=TieredRate(Decimal("0.0000000004999")))
    assert compute_cost(Usage(input_tokens=1), half).total_nanos == 1
    assert compute_cost(Usage(input_tokens=3), half).total_nanos == 2  # 1.5 -> 2
    assert compute_cost(Usage(input_tokens=1), below_half).total_nanos == 0
    assert compute_cost(Usage(input_tokens=1), Rates()).priced is False


@st.composite
def usages(draw: st.DrawFn, limit: int = 5_000_000) -> Usage:
    input_tokens = draw(st.integers(0, limit))
    cached_read = draw(st.integers(0, input_tokens))
    cache_write = draw(st.integers(0, input_tokens - cached_read))
    return Usage(
        input_tokens=input_tokens,
        cached_read_tokens=cached_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=draw(st.integers(0, cache_write)),
        output_tokens=draw(st.integers(0, limit)),
    )


def add(first: Usage, second: Usage) -> Usage:
    return Usage(
        input_tokens=first.input_tokens + second.input_tokens,
        cached_read_tokens=first.cached_read_tokens + second.cached_read_tokens,
        cache_write_tokens=first.cache_write_tokens + second.cache_write_tokens,
        cache_write_1h_tokens=first.cache_write_1h_tokens + second.cache_write_1h_tokens,
        output_tokens=first.output_tokens + second.output_tokens,
    )


PROPERTY_PRICER = make_pricer(
    [override(pattern="my-model", patch={"input_cost_per_token": 1.23e-7,
                                         "output_cost_per_token": 4.56789e-7,
                                         "cache_read_input_token_cost": 3.3e-8})]
)
FLAT_MODELS = st.sampled_from([
    ("openai", "gpt-4o"), ("anthropic", "claude-3-5-sonnet"), ("local", "my-model"),
    ("fast-llama", "llama-3.3-70b-versatile"),
])


@settings(max_examples=200, deadline=None)
@given(target=FLAT_MODELS, first=usages(), second=usages(), factor=st.integers(0, 50))
def test_cost_is_additive_and_linear(target, first, second, factor):
    provider, model = target

    def quote(usage: Usage):
        return PROPERTY_PRICER.quote(usage, provider, model, CHAT)

    cost_first, cost_second, cost_sum = quote(first), quote(second), quote(add(first, second))
    assert cost_sum.total == cost_first.total + cost_second.total
    scaled = Usage(
        input_tokens=first.input_tokens * factor,
        cached_read_tokens=first.cached_read_tokens * factor,
        cache_write_tokens=first.cache_write_tokens * factor,
        cache_write_1h_tokens=first.cache_write_1h_tokens * factor,
        output_tokens=first.output_tokens * factor,
    )
    assert quote(scaled).total == cost_first.total * factor


@settings(max_examples=200, deadline=None)
@given(
    target=FLAT_MODELS | st.just(("anthropic", "claude-sonnet-4-5")) | st.just(("pplx", "sonar")),
    usage=usages(limit=400_000),
    extra_input=st.integers(0, 100_000),
    extra_output=st.integers(0, 100_000),
)
def test_cost_components_sum_and_grow_with_tokens(target, usage, extra_input, extra_output):
    provider, model = target
    cost = PROPERTY_PRICER.quote(usage, provider, model, CHAT)
    assert cost.total == (
        cost.input + cost.cached_read + cost.cache_write + cost.output + cost.request
    )
    assert cost.total_nanos == round_half_up_nanos(cost.total)
    assert min(cost.input, cost.cached_read, cost.cache_write, cost.output, cost.request) >= 0
    more = Usage(
        input_tokens=usage.input_tokens + extra_input,
        cached_read_tokens=usage.cached_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        output_tokens=usage.output_tokens + extra_output,
    )
    assert PROPERTY_PRICER.quote(more, provider, model, CHAT).total >= cost.total


@pytest.mark.parametrize(("model", "input_tokens", "output_tokens"), [
    ("gpt-4o", 1000, 500), ("gpt-4o-mini", 1, 4096), ("claude-sonnet-4-5", 250_000, 1000),
    ("claude-sonnet-4-5", 10, 10),
])
def test_estimate_is_the_quote_within_a_nano_dollar(model, input_tokens, output_tokens):
    provider = "anthropic" if model.startswith("claude") else "openai"
    pricer = Pricer(catalog=PriceCatalog.bundled(), overrides=[],
                    providers=[ProviderPricing("openai", "openai"),
                               ProviderPricing("anthropic", "anthropic")])
    exact = pricer.quote(Usage(input_tokens=input_tokens, output_tokens=output_tokens),
                         provider, model, "chat_completion").total_nanos
    estimate = pricer.estimate_nanos(provider, model, "chat_completion", None, input_tokens,
                                     output_tokens)
    assert exact > 0
    assert abs(estimate - exact) <= 2 + exact * 1e-9


def test_estimate_includes_the_per_request_fee():
    pricer = make_pricer()
    usage = Usage(input_tokens=1000, output_tokens=1000)
    exact = pricer.quote(usage, "pplx", "sonar", CHAT).total_nanos
    assert exact == 14_000_000  # $0.001 + $0.001 + the $0.012 fee
    assert abs(pricer.estimate_nanos("pplx", "sonar", CHAT, None, 1000, 1000) - exact) <= 2


def test_estimate_of_an_unpriced_model_is_zero_and_not_counted():
    pricer = Pricer(catalog=PriceCatalog.bundled(), overrides=[],
                    providers=[ProviderPricing("openai", "openai")])
    assert pricer.estimate_nanos("openai", "no-such-model", "chat_completion", None, 10, 10) == 0
    assert pricer.unpriced.total == 0


ODD_RATE_PRICER = make_pricer(
    [override(pattern="odd-model", patch={"input_cost_per_token": 1.234567890123456789e-19,
                                          "output_cost_per_token": 3e-7})]
)


@settings(max_examples=300, deadline=None)
@given(
    target=FLAT_MODELS | st.sampled_from([
        ("anthropic", "claude-sonnet-4-5"), ("pplx", "sonar"), ("openai", "gpt-4o-mini"),
        ("openai", "no-such-model"), ("local", "odd-model")]),
    usage=usages(limit=400_000),
)
def test_cost_nanos_is_the_quote_total_exactly(target, usage):
    provider, model = target
    pricer = ODD_RATE_PRICER if model == "odd-model" else PROPERTY_PRICER
    quote = pricer.quote(usage, provider, model, CHAT)
    assert pricer.cost_nanos(usage, provider, model, CHAT) == (quote.total_nanos, quote.priced)


def test_cost_nanos_counts_unpriced_models_like_quote():
    pricer = make_pricer()
    assert pricer.cost_nanos(Usage(input_tokens=5), "local", "nothing-known", CHAT) == (0, False)
    assert pricer.unpriced.get("local", "nothing-known") == 1
