"""The price catalog over genai-prices' bundled data: provider mapping, model matching,
offline use, tiers, per-request and time-dependent prices, and the browse listing."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from genai_prices import data_snapshot

from gateway.models import ProviderKind
from pricing.catalog import (
    KIND_PRICE_PROVIDERS,
    PriceCatalog,
    PriceCondition,
    Tier,
    TieredRate,
    catalog_provider_id,
    model_name_candidates,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def catalog() -> PriceCatalog:
    return PriceCatalog.bundled()


def test_request_time_modules_import_neither_django_nor_drf():
    code = (
        "import sys\n"
        "import pricing.catalog, pricing.cost, pricing.resolution\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr


def test_bundled_catalog_ignores_auto_updated_prices_and_needs_no_network(monkeypatch):
    """A snapshot installed by genai-prices' updater must not change our prices."""
    import httpx2
    from genai_prices.data import providers

    def no_network(*args, **kwargs):
        raise AssertionError("the price catalog must not fetch anything")

    monkeypatch.setattr(httpx2, "get", no_network)
    empty = data_snapshot.DataSnapshot(providers=[], from_auto_update=True)
    monkeypatch.setattr(data_snapshot, "_custom_snapshot", empty)

    fresh = PriceCatalog(providers)
    price = fresh.lookup("openai", "gpt-4o")
    assert price is not None
    assert price.rates.input == TieredRate(Decimal("0.0000025"))
    assert PriceCatalog.bundled().lookup("openai", "gpt-4o") == price
    assert not any(thread.name == "genai_prices:update" for thread in threading.enumerate())


def test_known_prices_from_the_package_data(catalog):
    gpt_4o = catalog.lookup("openai", "gpt-4o")
    assert gpt_4o is not None
    assert (gpt_4o.provider_id, gpt_4o.model_id) == ("openai", "gpt-4o")
    assert gpt_4o.rates.input.base == Decimal("2.5") / 10**6
    assert gpt_4o.rates.input.per_million == Decimal("2.5")
    assert gpt_4o.rates.cache_read.base == Decimal("1.25") / 10**6
    assert gpt_4o.rates.output.base == Decimal("10") / 10**6
    assert gpt_4o.rates.cache_write is None
    assert gpt_4o.rates.request is None

    sonnet = catalog.lookup("anthropic", "claude-3-5-sonnet")
    assert sonnet is not None
    assert [
        rate.per_million
        for rate in (
            sonnet.rates.input, sonnet.rates.output, sonnet.rates.cache_read,
            sonnet.rates.cache_write, sonnet.rates.cache_write_1h,
        )
    ] == [Decimal(3), Decimal(15), Decimal("0.3"), Decimal("3.75"), Decimal(6)]


@pytest.mark.parametrize(
    ("provider", "model", "owner", "model_id"),
    [
        pytest.param("openai", "gpt-4o-2024-08-06", "openai", "gpt-4o", id="dated-openai-alias"),
        pytest.param("openai", "GPT-4o", "openai", "gpt-4o", id="case-insensitive"),
        pytest.param("openai", "gpt-4o-mini-2024-07-18", "openai", "gpt-4o-mini", id="mini"),
        pytest.param("anthropic", "claude-3-5-sonnet-latest", "anthropic", "claude-3-5-sonnet",
                     id="latest-alias"),
        pytest.param("anthropic", "claude-sonnet-4-20250514", "anthropic", "claude-sonnet-4-0",
                     id="dated-anthropic"),
        pytest.param("openai", "openai/gpt-4o", "openai", "gpt-4o", id="provider-prefix"),
        pytest.param("openai", "my-gateway/openai/gpt-4o", "openai", "gpt-4o", id="two-prefixes"),
        pytest.param("azure", "gpt-4o", "openai", "gpt-4o", id="azure-falls-back-to-openai"),
        pytest.param("azure", "phi-4", "azure", "phi-4", id="azure-own-model"),
        pytest.param("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo", "together",
                     "meta-llama/Llama-3.3-70B-Instruct-Turbo", id="slash-in-catalog-id"),
        pytest.param("groq", "llama-3.3-70b-versatile", "groq", "llama-3.3-70b-versatile",
                     id="groq"),
        pytest.param("together_ai", "meta-llama/Llama-3.3-70B-Instruct-Turbo", "together",
                     "meta-llama/Llama-3.3-70B-Instruct-Turbo", id="provider-match-alias"),
    ],
)
def test_lookup_uses_the_catalogs_matching(catalog, provider, model, owner, model_id):
    price = catalog.lookup(provider, model)
    assert price is not None
    assert (price.provider_id, price.model_id) == (owner, model_id)


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "no-such-model"),
        ("openai", ""),
        ("no-such-provider", "gpt-4o"),
        ("", "gpt-4o"),
        ("groq", "gpt-4o"),
    ],
)
def test_unknown_models_and_providers_have_no_price(catalog, provider, model):
    assert catalog.lookup(provider, model) is None


@pytest.mark.parametrize(
    ("kind", "price_provider", "expected"),
    [
        (ProviderKind.OPENAI, "", "openai"),
        (ProviderKind.AZURE, "", "azure"),
        (ProviderKind.ANTHROPIC, "", "anthropic"),
        (ProviderKind.OPENAI_COMPATIBLE, "groq", "groq"),
        (ProviderKind.OPENAI_COMPATIBLE, " Groq ", "groq"),
        (ProviderKind.OPENAI_COMPATIBLE, "together_ai", "together"),
        (ProviderKind.OPENAI_COMPATIBLE, "", None),
        (ProviderKind.OPENAI_COMPATIBLE, "no-such-provider", None),
        (ProviderKind.OPENAI, "together", "together"),
        ("unknown-kind", "", None),
    ],
)
def test_provider_for_maps_kind_and_configured_price_provider(
    catalog, kind, price_provider, expected
):
    assert catalog.provider_for(kind, price_provider) == expected


def test_every_provider_kind_is_mapped():
    mapped = set(KIND_PRICE_PROVIDERS) | {ProviderKind.OPENAI_COMPATIBLE.value}
    assert mapped == set(ProviderKind.values)
    assert catalog_provider_id("openai_compatible") is None
    assert catalog_provider_id("openai_compatible", "groq") == "groq"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", ("gpt-4o",)),
        ("openai/gpt-4o", ("openai/gpt-4o", "gpt-4o")),
        ("a/b/c", ("a/b/c", "b/c", "c")),
        (" gpt-4o ", ("gpt-4o",)),
        ("openai/", ("openai/",)),
        ("", ()),
    ],
)
def test_model_name_candidates(model, expected):
    assert model_name_candidates(model) == expected


def test_tiers_are_cliffs_on_total_input_tokens(catalog):
    price = catalog.lookup("anthropic", "claude-sonnet-4-5")
    assert price is not None
    assert price.rates.input == TieredRate(
        Decimal("0.000003"), (Tier(200_000, Decimal("0.000006")),)
    )
    assert price.rates.input.rate_for(200_000) == Decimal("0.000003")
    assert price.rates.input.rate_for(200_001) == Decimal("0.000006")


def test_tiered_rate_with_tier_replaces_or_adds():
    rate = TieredRate(Decimal(1), (Tier(200_000, Decimal(2)),))
    assert rate.with_tier(200_000, Decimal(3)).tiers == (Tier(200_000, Decimal(3)),)
    assert rate.with_tier(128_000, Decimal(4)).tiers == (
        Tier(128_000, Decimal(4)), Tier(200_000, Decimal(2)),
    )


def test_per_request_prices(catalog):
    price = catalog.lookup("perplexity", "sonar")
    assert price is not None
    assert price.rates.request == Decimal("0.012")  # $12 per 1,000 requests


def test_time_of_day_prices(catalog):
    price = catalog.lookup("deepseek", "deepseek-chat")
    assert price is not None
    peak = price.rates_at(datetime(2026, 11, 23, 12, 0, tzinfo=UTC))
    off_peak = price.rates_at(datetime(2026, 11, 23, 20, 0, tzinfo=UTC))
    naive_peak = price.rates_at(datetime(2026, 11, 23, 12, 0))
    assert peak.input.per_million == Decimal("0.27")
    assert off_peak.input.per_million == Decimal("0.135")
    assert naive_peak == peak


@pytest.mark.parametrize(
    ("condition", "at", "active"),
    [
        (PriceCondition(starts_on=date(2026, 12, 1)), datetime(2026, 11, 30, 23, 59, tzinfo=UTC),
         False),
        (PriceCondition(starts_on=date(2026, 12, 1)), datetime(2026, 12, 1, tzinfo=UTC), True),
        (PriceCondition(starts_on=date(2026, 12, 1)),
         datetime(2026, 11, 30, 20, tzinfo=timezone(timedelta(hours=-5))), True),
        (PriceCondition(daily_start=time(22), daily_end=time(6)),
         datetime(2026, 1, 1, 23, tzinfo=UTC), True),
        (PriceCondition(daily_start=time(22), daily_end=time(6)),
         datetime(2026, 1, 1, 5, 59, tzinfo=UTC), True),
        (PriceCondition(daily_start=time(22), daily_end=time(6)),
         datetime(2026, 1, 1, 6, tzinfo=UTC), False),
        (PriceCondition(daily_start=time(1), daily_end=time(4)),
         datetime(2026, 1, 1, 4, tzinfo=UTC), False),
        (PriceCondition(daily_start=time(1), daily_end=time(4)),
         datetime(2026, 1, 1, 1, tzinfo=UTC), True),
    ],
)
def test_price_conditions(condition, at, active):
    assert condition.active(at) is active


def test_iter_models_is_sorted_and_deterministic(catalog):
    first = [(price.provider_id, price.model_id) for price in catalog.iter_models()]
    second = [(price.provider_id, price.model_id) for price in catalog.iter_models()]
    assert first == second == sorted(first)
    assert len(first) == len(set(first)) > 1000


def test_iter_models_filters_by_provider_and_search(catalog):
    minis = [price.model_id for price in catalog.iter_models("openai", "4O-MINI")]
    assert "gpt-4o-mini" in minis
    assert all("4o-mini" in model_id for model_id in minis)
    assert minis == sorted(minis)

    azure = {price.model_id for price in catalog.iter_models("azure")}
    assert "phi-4" in azure
    assert "gpt-4o" not in azure  # reached through the OpenAI fallback, listed under openai
    assert {price.provider_id for price in catalog.iter_models("azure")} == {"azure"}

    by_name = list(catalog.iter_models("anthropic", "sonnet 3.5"))
    assert [price.model_id for price in by_name] == ["claude-3-5-sonnet"]

    assert list(catalog.iter_models("no-such-provider")) == []
    assert list(catalog.iter_models(search="no-such-model-anywhere")) == []


def test_providers_listing(catalog):
    providers = catalog.providers()
    assert providers == sorted(providers)
    assert ("openai", "OpenAI") in providers
    assert ("groq", "Groq") in providers
