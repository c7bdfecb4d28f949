"""Cost of a request from its token usage, with catalog prices and pricing overrides.

Request-time module: no Django, no DRF, no I/O. A ``Pricer`` is built from the governance
snapshot (the price catalog, the overrides as ``OverrideRecord``s and the gateway providers)
and is never mutated from outside; a new snapshot builds a new ``Pricer``, which is how the
resolution cache is invalidated.

Cost of a text request (all ``Decimal``, exact)::

    input       = (input_tokens - cached_read_tokens - cache_write_tokens) * input rate
    cached_read = cached_read_tokens * cache-read rate
    cache_write = (cache_write_tokens - cache_write_1h_tokens) * cache-write rate
                  + cache_write_1h_tokens * 1-hour cache-write rate
    output      = output_tokens * output rate            (reasoning is part of output_tokens)
    request     = per-request price, once per quote
    total       = the sum; total_nanos = total in nano-dollars rounded half up

A missing cache-read or cache-write rate falls back to the input rate, and a missing 1-hour
cache-write rate to the cache-write rate (genai-prices prices such tokens as plain input too).
Cached counts are clamped so they never exceed the input tokens. A tiered rate is chosen by
the request's total ``input_tokens``. A time-dependent catalog price (a dated price change,
off-peak hours) is chosen by ``at`` (default: the Pricer's clock).

A model with neither a catalog price nor an override costs 0, is ``priced=False`` and is
counted in ``Pricer.unpriced``; quoting never raises for it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Context, Decimal
from enum import StrEnum
from typing import Any, NamedTuple

from pricing.catalog import (
    ConditionalRates,
    ModelPrice,
    PriceCatalog,
    PriceCondition,
    Rates,
    TieredRate,
)
from pricing.resolution import OverrideIndex, OverrideRecord, apply_patch

__all__ = (
    "CostBreakdown",
    "EffectiveRates",
    "PriceSource",
    "Pricer",
    "ProviderPricing",
    "ResolvedPrice",
    "UnpricedCounter",
    "Usage",
    "compute_cost",
)

logger = logging.getLogger(__name__)

# Exact for any realistic token count times a 17-digit float price; independent of whatever
# decimal context the calling thread or task has set.
_CONTEXT = Context(prec=60, rounding=ROUND_HALF_UP)
ATTO_PER_NANO = 1_000_000_000  # atto-dollars (1e-18 $) in a nano-dollar
_ZERO = Decimal(0)
_ZERO_RATE = TieredRate(_ZERO)
DEFAULT_CACHE_ENTRIES = 65_536


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Token usage of one request, in the OpenAI convention.

    ``input_tokens`` is the **total** prompt, cached tokens included: ``cached_read_tokens``
    and ``cache_write_tokens`` are parts of it, and ``cache_write_1h_tokens`` is the part of
    ``cache_write_tokens`` written with a one-hour TTL. ``output_tokens`` includes reasoning;
    ``reasoning_tokens`` is informational. Anthropic reports input *excluding* cache reads and
    writes: build its usage with ``Usage.from_anthropic``.
    """

    input_tokens: int = 0
    cached_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @classmethod
    def from_openai(
        cls,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> Usage:
        """From OpenAI's ``usage``: ``prompt_tokens_details.cached_tokens`` is part of the prompt.

        >>> Usage.from_openai(prompt_tokens=1000, completion_tokens=100, cached_tokens=200)
        Usage(input_tokens=1000, cached_read_tokens=200, cache_write_tokens=0, output_tokens=100, \
reasoning_tokens=0, cache_write_1h_tokens=0)
        """
        return cls(
            input_tokens=prompt_tokens,
            cached_read_tokens=cached_tokens,
            output_tokens=completion_tokens,
            reasoning_tokens=reasoning_tokens,
        )

    @classmethod
    def from_anthropic(
        cls,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_input_tokens: int = 0,
        cache_creation_input_tokens: int = 0,
        cache_creation_1h_input_tokens: int = 0,
    ) -> Usage:
        """From Anthropic's ``usage``, whose ``input_tokens`` excludes cache reads and writes.

        ``cache_creation_1h_input_tokens`` is ``cache_creation.ephemeral_1h_input_tokens``.

        >>> Usage.from_anthropic(input_tokens=100, output_tokens=50,
        ...                      cache_read_input_tokens=800, cache_creation_input_tokens=100)
        Usage(input_tokens=1000, cached_read_tokens=800, cache_write_tokens=100, output_tokens=50, \
reasoning_tokens=0, cache_write_1h_tokens=0)
        """
        return cls(
            input_tokens=input_tokens + cache_read_input_tokens + cache_creation_input_tokens,
            cached_read_tokens=cache_read_input_tokens,
            cache_write_tokens=cache_creation_input_tokens,
            output_tokens=output_tokens,
            cache_write_1h_tokens=cache_creation_1h_input_tokens,
        )


class PriceSource(StrEnum):
    CATALOG = "catalog"
    OVERRIDE = "override"  # an override applied, on top of a catalog price or alone
    UNPRICED = "unpriced"


@dataclass(frozen=True, slots=True)
class EffectiveRates:
    """Rates with every fallback applied, ready for arithmetic (no ``None``)."""

    input: TieredRate
    output: TieredRate
    cache_read: TieredRate
    cache_write: TieredRate
    cache_write_1h: TieredRate
    request: Decimal
    tiered: bool
    # Derived once for the data plane: the input and output base rates as floats (for
    # reservation estimates), and the flat rates (input, cache read, cache write, cache
    # write 1h, output, request) in whole atto-dollars (1e-18 $) for exact integer costs;
    # None when tiered, or when one is negative or not whole.
    estimate_rates: tuple[float, float] = (0.0, 0.0)
    atto_rates: tuple[int, ...] | None = None
    estimate_request_nanos: int = 0  # the per-request fee, whole nano-dollars (cut)

    @classmethod
    def from_rates(cls, rates: Rates) -> EffectiveRates:
        input_rate = rates.input or _ZERO_RATE
        cache_write = rates.cache_write or input_rate
        slots = (
            input_rate,
            rates.output or _ZERO_RATE,
            rates.cache_read or input_rate,
            cache_write,
            rates.cache_write_1h or cache_write,
        )
        request = _ZERO if rates.request is None else rates.request
        tiered = any(slot.tiers for slot in slots)
        return cls(
            *slots,
            request=request,
            tiered=tiered,
            estimate_rates=(float(slots[0].base), float(slots[1].base)),
            estimate_request_nanos=int(request * 1_000_000_000),
            atto_rates=None if tiered else _whole_atto(
                (slots[0].base, slots[2].base, slots[3].base, slots[4].base, slots[1].base,
                 request)),
        )


def _whole_atto(rates: tuple[Decimal, ...]) -> tuple[int, ...] | None:
    """``rates`` in atto-dollars when every one is whole and not negative, else None."""
    values = []
    for rate in rates:
        scaled = Decimal(rate).scaleb(18, _CONTEXT)
        if scaled < 0 or scaled != scaled.to_integral_value(context=_CONTEXT):
            return None
        values.append(int(scaled))
    return tuple(values)


def _clamped(usage: Usage) -> tuple[int, int, int, int, int]:
    """(input, cached read, cache write, of which 1 h, output) tokens, each clamped: cached
    counts never exceed the input, nothing is negative."""
    input_tokens = usage.input_tokens if usage.input_tokens > 0 else 0
    cached_read = min(max(usage.cached_read_tokens, 0), input_tokens)
    cache_write = min(max(usage.cache_write_tokens, 0), input_tokens - cached_read)
    cache_write_1h = min(max(usage.cache_write_1h_tokens, 0), cache_write)
    output_tokens = usage.output_tokens if usage.output_tokens > 0 else 0
    return input_tokens, cached_read, cache_write, cache_write_1h, output_tokens


@dataclass(frozen=True, slots=True)
class ResolvedPrice:
    """Which prices bill a (provider, model, request type, scope): the cached resolution."""

    provider: str
    model: str
    source: PriceSource
    catalog_provider_id: str | None
    catalog_model_id: str | None
    override_id: str | None
    override_name: str | None
    rates: EffectiveRates | None  # None: unpriced
    conditional: tuple[tuple[PriceCondition | None, EffectiveRates], ...] = ()

    @property
    def priced(self) -> bool:
        return self.rates is not None

    def rates_at(self, at: datetime) -> EffectiveRates | None:
        for condition, rates in reversed(self.conditional):
            if condition is None or condition.active(at):
                return rates
        return self.rates


class CostBreakdown(NamedTuple):
    """The cost of one request, in dollars per component, and what priced it.

    Immutable. A NamedTuple rather than a frozen dataclass because it is built on every
    request: 0.4 µs instead of 2.2 µs. Compare fields, not tuples.
    """

    input: Decimal
    cached_read: Decimal
    cache_write: Decimal
    output: Decimal
    request: Decimal
    total: Decimal
    total_nanos: int
    priced: bool
    source: PriceSource
    override_id: str | None = None
    override_name: str | None = None
    catalog_provider_id: str | None = None
    catalog_model_id: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderPricing:
    """What the Pricer needs to know about a gateway provider (``gateway.models.Provider``)."""

    name: str
    kind: str
    price_provider: str = ""


class UnpricedCounter:
    """Thread-safe count of unpriced requests by (provider, model): the ``unpriced`` metric.

    Share one instance across Pricers so the count survives snapshot swaps.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def increment(self, provider: str, model: str) -> None:
        with self._lock:
            self._counts[(provider, model)] += 1

    def get(self, provider: str, model: str) -> int:
        with self._lock:
            return self._counts[(provider, model)]

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Pricer:
    """Quotes request costs from one configuration snapshot.

    ``quote`` resolves (catalog entry, override) once per (provider, model, request type,
    virtual key, provider key) and caches it; later quotes are plain arithmetic. Virtual-key
    and provider-key ids that no override names are left out of the cache key. The cache is
    bounded by ``max_cached`` entries (cleared when full, so hostile model names cannot grow
    it without limit).
    """

    def __init__(
        self,
        *,
        catalog: PriceCatalog,
        overrides: Iterable[OverrideRecord] = (),
        providers: Iterable[ProviderPricing] = (),
        unpriced: UnpricedCounter | None = None,
        clock: Callable[[], datetime] = _utc_now,
        max_cached: int = DEFAULT_CACHE_ENTRIES,
    ) -> None:
        self._catalog = catalog
        self._overrides = OverrideIndex(overrides)
        self._catalog_providers: dict[str, str | None] = {}
        for provider in providers:
            self._catalog_providers[provider.name] = _catalog_provider(catalog, provider)
        self.unpriced = unpriced if unpriced is not None else UnpricedCounter()
        self._clock = clock
        self._max_cached = max_cached
        self._cache: dict[tuple[Any, ...], ResolvedPrice] = {}
        self._virtual_key_ids = self._overrides.virtual_key_ids
        self._provider_key_ids = self._overrides.provider_key_ids

    def catalog_provider_id(self, provider: str) -> str | None:
        """The catalog provider billing gateway provider ``provider`` (by name), or None."""
        return self._catalog_providers.get(provider)

    def catalog_model_ids(self, provider: str) -> list[str]:
        """Model ids the catalog prices for gateway provider ``provider`` (by name), without
        its prefix families (an id ending in ``-``, ``:`` or ``.``, e.g. ``ft:gpt-3.5-turbo-``
        prices every fine-tune of that model: no model is called that)."""
        catalog_id = self._catalog_providers.get(provider)
        if catalog_id is None:
            return []
        return [model.model_id for model in self._catalog.iter_models(catalog_id)
                if not model.model_id.endswith(("-", ":", "."))]

    def resolve(
        self,
        provider: str,
        model: str,
        request_type: str,
        virtual_key_id: Any = None,
        provider_key_id: Any = None,
    ) -> ResolvedPrice:
        """The (cached) prices for a request; never raises."""
        if virtual_key_id is not None and str(virtual_key_id) not in self._virtual_key_ids:
            virtual_key_id = None
        if provider_key_id is not None and str(provider_key_id) not in self._provider_key_ids:
            provider_key_id = None
        key = (provider, model, request_type, virtual_key_id, provider_key_id)
        resolved = self._cache.get(key)
        if resolved is None:
            resolved = self._resolve(provider, model, request_type, virtual_key_id, provider_key_id)
            if len(self._cache) >= self._max_cached:
                self._cache.clear()
            self._cache[key] = resolved
        return resolved

    def estimate_nanos(self, provider: str, model: str, request_type: str,
                       virtual_key_id: Any, input_tokens: int, output_tokens: int) -> int:
        """An upper estimate in nano-dollars for reserving budget before a request: the
        prompt at the input rate and ``output_tokens`` at the output rate (for the tier the
        prompt falls in), plus the per-request fee. Float arithmetic: a reservation is an
        estimate, and the settled cost comes from :meth:`quote`."""
        resolved = self.resolve(provider, model, request_type, virtual_key_id)
        rates = resolved.rates
        if resolved.conditional:
            rates = resolved.rates_at(self._clock())
        if rates is None:
            return 0
        if rates.tiered:
            input_rate = float(rates.input.rate_for(input_tokens))
            output_rate = float(rates.output.rate_for(input_tokens))
        else:
            input_rate, output_rate = rates.estimate_rates
        dollars = input_rate * max(input_tokens, 0) + output_rate * max(output_tokens, 0)
        return int(dollars * 1e9) + rates.estimate_request_nanos + 1

    def cost_nanos(self, usage: Usage, provider: str, model: str, request_type: str,
                   virtual_key_id: Any = None, provider_key_id: Any = None) -> tuple[int, bool]:
        """``(quote(...).total_nanos, quote(...).priced)`` for the data plane, which needs
        nothing else. Exact integer arithmetic when every flat rate is a whole number of
        atto-dollars (1e-18 $) per token and none is negative, as real prices are: the same
        result as :meth:`quote`'s decimals, in a fraction of the time. Other rates take the
        quote's own decimal arithmetic."""
        resolved = self.resolve(provider, model, request_type, virtual_key_id, provider_key_id)
        rates = resolved.rates
        if resolved.conditional:
            rates = resolved.rates_at(self._clock())
        if rates is None:
            self.unpriced.increment(provider, model)
            return 0, False
        atto = rates.atto_rates
        if atto is None:
            return _breakdown(usage, rates, resolved).total_nanos, True
        input_tokens, cached_read, cache_write, cache_write_1h, output_tokens = _clamped(usage)
        input_rate, read_rate, write_rate, write_1h_rate, output_rate, request = atto
        total_atto = (input_rate * (input_tokens - cached_read - cache_write)
                      + read_rate * cached_read
                      + write_rate * (cache_write - cache_write_1h)
                      + write_1h_rate * cache_write_1h
                      + output_rate * output_tokens + request)
        return (total_atto + ATTO_PER_NANO // 2) // ATTO_PER_NANO, True  # half up, as quote

    def quote(
        self,
        usage: Usage,
        provider: str,
        model: str,
        request_type: str,
        virtual_key_id: Any = None,
        provider_key_id: Any = None,
        *,
        at: datetime | None = None,
    ) -> CostBreakdown:
        """The cost of ``usage`` for a request; unpriced requests cost 0 and are counted."""
        cache = self._cache
        if virtual_key_id is None and provider_key_id is None:
            resolved = cache.get((provider, model, request_type, None, None))
        else:
            resolved = None
        if resolved is None:
            resolved = self.resolve(
                provider, model, request_type, virtual_key_id, provider_key_id
            )
        rates = resolved.rates
        if resolved.conditional:
            rates = resolved.rates_at(at if at is not None else self._clock())
        if rates is None:
            self.unpriced.increment(provider, model)
            return _unpriced_breakdown(resolved)
        return _breakdown(usage, rates, resolved)

    def _resolve(
        self,
        provider: str,
        model: str,
        request_type: str,
        virtual_key_id: Any,
        provider_key_id: Any,
    ) -> ResolvedPrice:
        catalog_provider_id = self._catalog_providers.get(provider)
        entry: ModelPrice | None = None
        if catalog_provider_id is not None:
            try:
                entry = self._catalog.lookup(catalog_provider_id, model)
            except Exception:
                logger.exception(
                    "price catalog lookup failed for %s/%s; pricing without the catalog",
                    catalog_provider_id, model,
                )
        override = self._overrides.select(
            provider=provider,
            model=model,
            request_type=request_type,
            virtual_key_id=virtual_key_id,
            provider_key_id=provider_key_id,
        )
        base = entry.rates if entry is not None else None
        conditional = entry.conditional if entry is not None else ()
        if override is not None:
            base = apply_patch(base, override.patch)
            conditional = tuple(
                ConditionalRates(item.condition, apply_patch(item.rates, override.patch))
                for item in conditional
            )
        priced = base is not None and not base.is_empty
        if priced:
            source = PriceSource.OVERRIDE if override is not None else PriceSource.CATALOG
        else:
            source = PriceSource.UNPRICED
            logger.warning(
                "no price for model %r on provider %r (catalog provider %r): costs 0",
                model, provider, catalog_provider_id,
            )
        return ResolvedPrice(
            provider=provider,
            model=model,
            source=source,
            catalog_provider_id=entry.provider_id if entry is not None else catalog_provider_id,
            catalog_model_id=entry.model_id if entry is not None else None,
            override_id=override.id if override is not None else None,
            override_name=override.name if override is not None else None,
            rates=EffectiveRates.from_rates(base) if priced and base is not None else None,
            conditional=tuple(
                (item.condition, EffectiveRates.from_rates(item.rates)) for item in conditional
            )
            if priced
            else (),
        )


def compute_cost(usage: Usage, rates: Rates) -> CostBreakdown:
    """The cost of ``usage`` at ``rates`` alone (no catalog, no overrides, no metric)."""
    if rates.is_empty:
        return CostBreakdown(_ZERO, _ZERO, _ZERO, _ZERO, _ZERO, _ZERO, 0, False,
                             PriceSource.UNPRICED)
    resolved = ResolvedPrice(
        provider="", model="", source=PriceSource.CATALOG, catalog_provider_id=None,
        catalog_model_id=None, override_id=None, override_name=None, rates=None,
    )
    return _breakdown(usage, EffectiveRates.from_rates(rates), resolved)


def _catalog_provider(catalog: PriceCatalog, provider: ProviderPricing) -> str | None:
    try:
        return catalog.provider_for(provider.kind, provider.price_provider)
    except Exception:
        logger.exception("price catalog provider lookup failed for %r", provider.name)
        return None


def _breakdown(usage: Usage, rates: EffectiveRates, resolved: ResolvedPrice) -> CostBreakdown:
    input_tokens, cached_read, cache_write, cache_write_1h, output_tokens = _clamped(usage)

    if rates.tiered:
        input_rate = rates.input.rate_for(input_tokens)
        output_rate = rates.output.rate_for(input_tokens)
        read_rate = rates.cache_read.rate_for(input_tokens)
        write_rate = rates.cache_write.rate_for(input_tokens)
        write_1h_rate = rates.cache_write_1h.rate_for(input_tokens)
    else:
        input_rate = rates.input.base
        output_rate = rates.output.base
        read_rate = rates.cache_read.base
        write_rate = rates.cache_write.base
        write_1h_rate = rates.cache_write_1h.base

    multiply = _CONTEXT.multiply
    add = _CONTEXT.add
    input_cost = multiply(input_rate, input_tokens - cached_read - cache_write)
    read_cost = multiply(read_rate, cached_read)
    if cache_write_1h:
        write_cost = add(
            multiply(write_rate, cache_write - cache_write_1h),
            multiply(write_1h_rate, cache_write_1h),
        )
    else:
        write_cost = multiply(write_rate, cache_write)
    output_cost = multiply(output_rate, output_tokens)
    request_cost = rates.request
    total = add(add(add(add(input_cost, read_cost), write_cost), output_cost), request_cost)
    return CostBreakdown(
        input_cost,
        read_cost,
        write_cost,
        output_cost,
        request_cost,
        total,
        int(total.scaleb(9, _CONTEXT).to_integral_value(ROUND_HALF_UP, _CONTEXT)),
        True,
        resolved.source,
        resolved.override_id,
        resolved.override_name,
        resolved.catalog_provider_id,
        resolved.catalog_model_id,
    )


def _unpriced_breakdown(resolved: ResolvedPrice) -> CostBreakdown:
    return CostBreakdown(
        _ZERO, _ZERO, _ZERO, _ZERO, _ZERO, _ZERO, 0, False, PriceSource.UNPRICED,
        resolved.override_id, resolved.override_name, resolved.catalog_provider_id,
        resolved.catalog_model_id,
    )
