"""Cost benchmark: median microseconds per ``Pricer.quote`` after warm-up.

The baseline of the same run is genai-prices' own ``calc_price`` for the same usage.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bench.routing_cost import median_us
from pricing.catalog import PriceCatalog
from pricing.cost import Pricer, ProviderPricing, Usage
from pricing.resolution import OverrideRecord

USAGE = Usage(input_tokens=1000, cached_read_tokens=200, output_tokens=100)


def _overrides(count: int) -> list[OverrideRecord]:
    return [
        OverrideRecord(id=f"o{index}", name=f"override {index}", scope_kind="virtual_key",
                       virtual_key_id=f"key-{index}", provider_id=None, provider_key_id=None,
                       match_type="wildcard", pattern="gpt-4o*",
                       request_types=frozenset({"chat_completion"}),
                       patch={"input_cost_per_token": 0.000002},
                       updated_at=datetime(2026, 1, 1, tzinfo=UTC))
        for index in range(count)
    ]


def cost_figures() -> list[tuple[str, float]]:
    pricer = Pricer(catalog=PriceCatalog.bundled(), overrides=_overrides(200),
                    providers=[ProviderPricing("openai", "openai"),
                               ProviderPricing("anthropic", "anthropic")])
    figures = [
        ("gpt-4o, catalog price", median_us(
            lambda: pricer.quote(USAGE, "openai", "gpt-4o", "chat_completion"), number=20_000)),
        ("gpt-4o, virtual-key override (200 overrides)", median_us(
            lambda: pricer.quote(USAGE, "openai", "gpt-4o", "chat_completion",
                                 virtual_key_id="key-7"), number=20_000)),
        ("claude-sonnet-4-5 (tiered)", median_us(
            lambda: pricer.quote(USAGE, "anthropic", "claude-sonnet-4-5", "chat_completion"),
            number=20_000)),
    ]
    try:
        from genai_prices import Usage as GenaiUsage
        from genai_prices import calc_price
    except ImportError:  # pragma: no cover - the package is a dependency
        return figures
    genai_usage = GenaiUsage(input_tokens=1000, cache_read_tokens=200, output_tokens=100)
    figures.append(("baseline: genai_prices.calc_price, gpt-4o", median_us(
        lambda: calc_price(genai_usage, model_ref="gpt-4o", provider_id="openai"),
        number=2_000)))
    return figures
