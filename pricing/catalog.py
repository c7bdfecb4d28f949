"""The price catalog: immutable, Decimal-based model prices read from ``genai-prices``.

Request-time module: it must not import Django or DRF (an import-linter contract forbids it).

Where the prices come from
    The ``genai-prices`` package ships its data as a Python module (``genai_prices.data``), so the
    catalog works with no network. The package can also refresh prices in a background thread
    (``genai_prices.UpdatePrices``, which fetches JSON from GitHub and installs it with
    ``data_snapshot.set_custom_snapshot``); ``calc_price`` and ``get_snapshot`` then use the
    fetched data. We never start that updater and never go through ``get_snapshot``:
    ``PriceCatalog.bundled()`` reads ``genai_prices.data.providers`` directly, so prices only
    change when the package is upgraded. A control-plane refresh can still build
    ``PriceCatalog(providers)`` from other data.

How a model is found
    ``lookup(provider_id, model)`` resolves the provider id the way genai-prices does (exact id,
    then the provider's ``provider_match`` clause, e.g. ``together_ai`` -> ``together``), then
    asks that provider's ``find_model``: each model has a ``match`` clause listing its aliases
    (``gpt-4o-2024-08-06`` is an alias of ``gpt-4o``; ``claude-3-5-sonnet-latest`` matches the
    ``claude-3-5-sonnet`` prefix), compact dates are retried in dashed form
    (``-20251211`` -> ``-2025-12-11``), and a provider may fall back to others' models (Azure
    -> OpenAI, Anthropic, ...). The full model name is tried first (some catalog ids contain
    ``/``), then with leading ``provider/`` segments stripped one at a time.

Units
    Rates are dollars **per token** (``Decimal``; the catalog's per-million prices divided
    exactly by 10**6) and dollars per request. Tiers follow genai-prices: a tier applies to all
    tokens of its kind once the request's total input tokens exceed the tier's start.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from genai_prices.types import ModelInfo, Provider

__all__ = (
    "ConditionalRates",
    "ModelPrice",
    "PriceCatalog",
    "PriceCondition",
    "Rates",
    "Tier",
    "TieredRate",
    "catalog_provider_id",
    "model_name_candidates",
)

# Gateway provider kinds (gateway.models.ProviderKind) billed with a catalog provider of their own.
KIND_PRICE_PROVIDERS: Mapping[str, str] = {
    "openai": "openai",
    "azure": "azure",
    "anthropic": "anthropic",
}

# genai-prices price keys we use, and the factor that turns each into dollars per unit.
_PRICE_KEYS: Mapping[str, tuple[str, int]] = {
    "input_mtok": ("input", -6),
    "output_mtok": ("output", -6),
    "cache_read_mtok": ("cache_read", -6),
    "cache_write_mtok": ("cache_write", -6),
    "cache_write_1h_mtok": ("cache_write_1h", -6),
    "requests_kcount": ("request", -3),
}
_LOOKUP_MEMO_LIMIT = 16_384


@dataclass(frozen=True, slots=True)
class Tier:
    """``rate`` (dollars per token) applies once input tokens exceed ``above_input_tokens``."""

    above_input_tokens: int
    rate: Decimal


@dataclass(frozen=True, slots=True)
class TieredRate:
    """A per-token rate with optional input-size tiers, sorted by ``above_input_tokens``."""

    base: Decimal
    tiers: tuple[Tier, ...] = ()

    def rate_for(self, input_tokens: int) -> Decimal:
        """The rate for a request with ``input_tokens`` total input tokens (cliff pricing)."""
        for tier in reversed(self.tiers):
            if input_tokens > tier.above_input_tokens:
                return tier.rate
        return self.base

    def with_tier(self, above_input_tokens: int, rate: Decimal) -> TieredRate:
        """A copy with the tier starting at ``above_input_tokens`` set to ``rate``."""
        tiers = {tier.above_input_tokens: tier for tier in self.tiers}
        tiers[above_input_tokens] = Tier(above_input_tokens, rate)
        return TieredRate(self.base, tuple(sorted(tiers.values(), key=_tier_start)))

    @property
    def per_million(self) -> Decimal:
        """The base rate in dollars per million tokens, as catalogs usually display it."""
        return self.base.scaleb(6)


@dataclass(frozen=True, slots=True)
class Rates:
    """One set of prices. ``None`` means the source has no price for that component.

    Token rates are dollars per token; ``request`` is dollars per request. How missing cache
    rates are priced is the cost computation's business (they fall back to the input rate).
    """

    input: TieredRate | None = None
    output: TieredRate | None = None
    cache_read: TieredRate | None = None
    cache_write: TieredRate | None = None
    cache_write_1h: TieredRate | None = None
    request: Decimal | None = None

    @property
    def is_empty(self) -> bool:
        return all(
            value is None
            for value in (
                self.input, self.output, self.cache_read, self.cache_write,
                self.cache_write_1h, self.request,
            )
        )


@dataclass(frozen=True, slots=True)
class PriceCondition:
    """When a conditional price applies: from a UTC date on, and/or during a daily UTC window."""

    starts_on: date | None = None
    daily_start: time | None = None
    daily_end: time | None = None

    def active(self, at: datetime) -> bool:
        """Whether the condition holds at ``at`` (naive datetimes are taken as UTC)."""
        at_utc = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
        if self.starts_on is not None and at_utc.date() < self.starts_on:
            return False
        if self.daily_start is not None and self.daily_end is not None:
            now = at_utc.time()
            if self.daily_end < self.daily_start:
                return now >= self.daily_start or now < self.daily_end
            return self.daily_start <= now < self.daily_end
        return True


@dataclass(frozen=True, slots=True)
class ConditionalRates:
    condition: PriceCondition | None
    rates: Rates


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """A catalog model and its prices.

    ``provider_id`` is the catalog provider whose data holds the model (for Azure's fallback to
    OpenAI models it is ``openai``). ``rates`` is the unconditional price. ``conditional`` lists
    time-dependent prices in catalog order: the last active one wins, and when none is active
    ``rates`` applies (genai-prices' rule). Use ``rates_at`` rather than reading them yourself.
    """

    provider_id: str
    model_id: str
    name: str | None
    rates: Rates
    conditional: tuple[ConditionalRates, ...] = ()
    context_window: int | None = None
    deprecated: bool = False

    def rates_at(self, at: datetime) -> Rates:
        for entry in reversed(self.conditional):
            if entry.condition is None or entry.condition.active(at):
                return entry.rates
        return self.rates


def catalog_provider_id(kind: str, price_provider: str = "") -> str | None:
    """The catalog provider that bills a gateway provider, before checking the catalog.

    A configured ``price_provider`` wins; otherwise OpenAI, Azure and Anthropic use their own
    catalog provider and an OpenAI-compatible server (or an unknown kind) has none.

    >>> catalog_provider_id("openai_compatible", "groq")
    'groq'
    >>> catalog_provider_id("openai_compatible") is None
    True
    """
    configured = price_provider.strip().lower()
    if configured:
        return configured
    return KIND_PRICE_PROVIDERS.get(kind)


def model_name_candidates(model: str) -> tuple[str, ...]:
    """Names to try for ``model``: itself, then with leading ``x/`` segments stripped.

    >>> model_name_candidates("groq/meta-llama/llama-4")
    ('groq/meta-llama/llama-4', 'meta-llama/llama-4', 'llama-4')
    """
    name = model.strip()
    candidates = [name] if name else []
    while "/" in name:
        name = name.split("/", 1)[1]
        if name and name not in candidates:
            candidates.append(name)
    return tuple(candidates)


class PriceCatalog:
    """Read-only prices of the models in a list of genai-prices providers.

    Thread-safe: the providers are never modified, and the memo of lookups only ever gains
    entries equal to what any thread would compute.
    """

    def __init__(self, providers: Sequence[Provider]) -> None:
        self._providers = list(providers)
        self._by_id = {provider.id: provider for provider in self._providers}
        # Which provider's data holds each model object (fallback lookups return others').
        self._owners = {
            id(model): provider.id for provider in self._providers for model in provider.models
        }
        self._records: dict[int, ModelPrice] = {}
        self._memo: dict[tuple[str, str], ModelPrice | None] = {}

    @classmethod
    def bundled(cls) -> PriceCatalog:
        """The catalog of the data shipped with the installed genai-prices (no network)."""
        return _bundled_catalog()

    def resolve_provider_id(self, provider_id: str) -> str | None:
        """The catalog's id for ``provider_id`` (exact id, then ``provider_match``), or None."""
        provider = self._find_provider(provider_id)
        return None if provider is None else provider.id

    def provider_for(self, kind: str, price_provider: str = "") -> str | None:
        """The catalog provider id billing a gateway provider of ``kind``, or None."""
        wanted = catalog_provider_id(kind, price_provider)
        return None if wanted is None else self.resolve_provider_id(wanted)

    def providers(self) -> list[tuple[str, str]]:
        """``(id, name)`` of every catalog provider, sorted by id."""
        return sorted((provider.id, provider.name) for provider in self._providers)

    def lookup(self, provider_id: str, model: str) -> ModelPrice | None:
        """The price of ``model`` at catalog provider ``provider_id``, or None if unknown."""
        key = (provider_id, model)
        try:
            return self._memo[key]
        except KeyError:
            pass
        result = self._lookup(provider_id, model)
        if len(self._memo) >= _LOOKUP_MEMO_LIMIT:
            self._memo.clear()
        self._memo[key] = result
        return result

    def iter_models(
        self, provider: str | None = None, search: str | None = None
    ) -> Iterator[ModelPrice]:
        """Every model with its own entry, sorted by (provider id, model id).

        ``provider`` keeps one catalog provider (resolved like ``lookup``; models a provider
        only reaches through a fallback are listed under their owner). ``search`` keeps models
        whose id or name contains it, case-insensitively.
        """
        if provider is None:
            selected = sorted(self._providers, key=_provider_id)
        else:
            found = self._find_provider(provider)
            selected = [] if found is None else [found]
        needle = (search or "").strip().casefold()
        for catalog_provider in selected:
            for model in sorted(catalog_provider.models, key=_model_id):
                if needle and needle not in model.id.casefold() and (
                    not model.name or needle not in model.name.casefold()
                ):
                    continue
                yield self._record(model)

    def _find_provider(self, provider_id: str) -> Provider | None:
        normalized = provider_id.strip().lower()
        if not normalized:
            return None
        if provider := self._by_id.get(normalized):
            return provider
        for provider in self._providers:
            if provider.provider_match is not None and provider.provider_match.is_match(
                normalized
            ):
                return provider
        return None

    def _lookup(self, provider_id: str, model: str) -> ModelPrice | None:
        provider = self._find_provider(provider_id)
        if provider is None:
            return None
        for candidate in model_name_candidates(model):
            info = provider.find_model(candidate, all_providers=self._providers)
            if info is not None:
                return self._record(info)
        return None

    def _record(self, model: ModelInfo) -> ModelPrice:
        key = id(model)
        record = self._records.get(key)
        if record is None:
            record = self._records[key] = _model_price(self._owners.get(key, ""), model)
        return record


@cache
def _bundled_catalog() -> PriceCatalog:
    from genai_prices.data import providers

    return PriceCatalog(providers)


def _model_price(owner: str, model: ModelInfo) -> ModelPrice:
    from genai_prices.types import ModelPrice as GenaiModelPrice

    if isinstance(model.prices, GenaiModelPrice):
        rates = _rates(model.prices)
        conditional: tuple[ConditionalRates, ...] = ()
    else:
        conditional = tuple(
            ConditionalRates(_condition(entry.constraint), _rates(entry.prices))
            for entry in model.prices
        )
        rates = conditional[0].rates if conditional else Rates()
    return ModelPrice(
        provider_id=owner,
        model_id=model.id,
        name=model.name,
        rates=rates,
        conditional=conditional,
        context_window=model.context_window,
        deprecated=bool(model.deprecated),
    )


def _rates(prices: Any) -> Rates:
    from genai_prices.types import TieredPrices

    values: dict[str, Any] = {}
    for price_key, (slot, exponent) in _PRICE_KEYS.items():
        price = prices.__dict__.get(price_key)
        if price is None:
            continue
        if slot == "request":
            # Per-request prices are never tiered in the catalog; take the base if they were.
            base = price.base if isinstance(price, TieredPrices) else price
            values[slot] = base.scaleb(exponent)
        elif isinstance(price, TieredPrices):
            values[slot] = TieredRate(
                price.base.scaleb(exponent),
                tuple(
                    Tier(tier.start, tier.price.scaleb(exponent))
                    for tier in sorted(price.tiers, key=_genai_tier_start)
                ),
            )
        else:
            values[slot] = TieredRate(price.scaleb(exponent))
    return Rates(**values)


def _condition(constraint: Any) -> PriceCondition | None:
    from genai_prices.types import StartDateConstraint, TimeOfDateConstraint

    if constraint is None:
        return None
    if isinstance(constraint, StartDateConstraint):
        return PriceCondition(starts_on=constraint.start_date)
    if isinstance(constraint, TimeOfDateConstraint):
        return PriceCondition(
            daily_start=_utc_time(constraint.start_time), daily_end=_utc_time(constraint.end_time)
        )
    # An unknown constraint kind in newer data: never active, so the unconditional price holds.
    return PriceCondition(starts_on=date.max)


def _utc_time(value: time) -> time:
    if value.tzinfo is None:
        return value
    return datetime.combine(date(1970, 1, 1), value).astimezone(UTC).time()


def _tier_start(tier: Tier) -> int:
    return tier.above_input_tokens


def _genai_tier_start(tier: Any) -> int:
    return int(tier.start)


def _provider_id(provider: Provider) -> str:
    return provider.id


def _model_id(model: ModelInfo) -> str:
    return model.id

