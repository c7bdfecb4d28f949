"""Pricing-override selection and patching, on immutable records (no Django, no DRF).

Which override applies to a request
    Scopes are tried from the most specific: ``virtual_key_provider_key`` >
    ``virtual_key_provider`` > ``virtual_key`` > ``provider_key`` > ``provider`` > ``global``.
    The first scope holding a matching override decides; within it the winner is the first by:

    1. an exact pattern before a wildcard;
    2. a longer wildcard prefix before a shorter one (``gpt-4o-*`` before ``gpt-*`` before ``*``);
    3. **fewer listed request types first.** Every override lists at least one request type, so
       "a rule naming the request type beats a generic one" is read as: the override whose
       list is narrower is more specific. ``["chat_completion"]`` beats
       ``["chat_completion", "responses"]``, which beats one listing all eleven types;
    4. the most recently updated;
    5. the lowest id (compared as strings).

    An override matches when its scope ids equal the request's (provider by *name*), its
    pattern matches the model, and it lists the request's base type: ``chat_completion``
    also covers ``chat_completion_stream`` (a ``_stream`` suffix is dropped before matching).
    Patterns are compared case-sensitively with the model as given and with leading
    ``provider/`` segments stripped, so ``gpt-4o`` matches a request for ``openai/gpt-4o``.

What an override changes
    Its patch replaces exactly the price fields it names; everything else keeps the catalog
    value, and 0 is a real price. Patch values are dollars per token (or per request) as
    floats and are converted with ``Decimal(repr(value))``. ``PATCH_FIELD_SLOTS`` lists the
    fields used for token pricing; the other allowed fields (priority, flex and batch rates,
    audio, image, video, character and tool prices) are kept on the record but do not affect
    a token-priced request yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from pricing.catalog import Rates, TieredRate, model_name_candidates
from pricing.vocabulary import SCOPE_FIELDS

__all__ = (
    "PATCH_FIELD_SLOTS",
    "SCOPE_PRECEDENCE",
    "OverrideIndex",
    "OverrideRecord",
    "apply_patch",
    "base_request_type",
)

SCOPE_PRECEDENCE: tuple[str, ...] = tuple(SCOPE_FIELDS)  # most specific first
_SCOPE_FIELDS = SCOPE_FIELDS
EXACT = "exact"
WILDCARD = "wildcard"
_STREAM_SUFFIX = "_stream"

# Patch field -> (Rates slot, tier start in input tokens or None for the base rate).
PATCH_FIELD_SLOTS: Mapping[str, tuple[str, int | None]] = {
    "input_cost_per_token": ("input", None),
    "output_cost_per_token": ("output", None),
    "cache_read_input_token_cost": ("cache_read", None),
    "cache_creation_input_token_cost": ("cache_write", None),
    "cache_creation_input_token_cost_above_1hr": ("cache_write_1h", None),
    "input_cost_per_token_above_128k_tokens": ("input", 128_000),
    "output_cost_per_token_above_128k_tokens": ("output", 128_000),
    "input_cost_per_token_above_200k_tokens": ("input", 200_000),
    "output_cost_per_token_above_200k_tokens": ("output", 200_000),
    "cache_read_input_token_cost_above_200k_tokens": ("cache_read", 200_000),
    "cache_creation_input_token_cost_above_200k_tokens": ("cache_write", 200_000),
    "input_cost_per_request": ("request", None),
}


def base_request_type(request_type: str) -> str:
    """``chat_completion_stream`` -> ``chat_completion``; base types are returned unchanged."""
    if request_type.endswith(_STREAM_SUFFIX):
        return request_type[: -len(_STREAM_SUFFIX)]
    return request_type


@dataclass(frozen=True, slots=True)
class OverrideRecord:
    """A pricing override as the snapshot holds it (built from ``PricingOverride`` rows).

    ``provider_id`` is the provider's *name*. Ids are compared as strings, so UUIDs and their
    string forms are interchangeable. ``patch`` maps price fields to dollars (floats).
    """

    id: str
    name: str
    scope_kind: str
    virtual_key_id: str | None
    provider_id: str | None
    provider_key_id: str | None
    match_type: str
    pattern: str
    request_types: frozenset[str]
    patch: Mapping[str, float]
    updated_at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", str(self.id))
        for name in ("virtual_key_id", "provider_id", "provider_key_id"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else str(value))
        object.__setattr__(self, "request_types", frozenset(self.request_types))
        object.__setattr__(self, "patch", MappingProxyType(dict(self.patch)))

    @property
    def wildcard_prefix(self) -> str | None:
        """The prefix a wildcard pattern matches, or None for an exact pattern."""
        if self.match_type == WILDCARD:
            return self.pattern.removesuffix("*")
        return None

    def matches_model(self, names: Iterable[str]) -> bool:
        prefix = self.wildcard_prefix
        if prefix is None:
            return any(name == self.pattern for name in names)
        return any(name.startswith(prefix) for name in names)

    def specificity(self) -> tuple[int, int, int]:
        """Sort key within a scope (smaller is more specific), before updated_at and id."""
        prefix = self.wildcard_prefix
        if prefix is None:
            return (0, 0, len(self.request_types))
        return (1, -len(prefix), len(self.request_types))


class OverrideIndex:
    """Overrides grouped by scope and sorted by specificity, for ``select``."""

    def __init__(self, overrides: Iterable[OverrideRecord]) -> None:
        buckets: dict[str, list[OverrideRecord]] = {kind: [] for kind in SCOPE_PRECEDENCE}
        for override in overrides:
            if override.scope_kind in buckets:
                buckets[override.scope_kind].append(override)
        self._buckets: tuple[tuple[str, tuple[OverrideRecord, ...]], ...] = tuple(
            (kind, _ordered(buckets[kind])) for kind in SCOPE_PRECEDENCE if buckets[kind]
        )
        self.virtual_key_ids = frozenset(
            override.virtual_key_id
            for _, bucket in self._buckets
            for override in bucket
            if override.virtual_key_id is not None
        )
        self.provider_key_ids = frozenset(
            override.provider_key_id
            for _, bucket in self._buckets
            for override in bucket
            if override.provider_key_id is not None
        )

    def __bool__(self) -> bool:
        return bool(self._buckets)

    def select(
        self,
        *,
        provider: str,
        model: str,
        request_type: str,
        virtual_key_id: Any = None,
        provider_key_id: Any = None,
    ) -> OverrideRecord | None:
        """The override that prices this request, or None (see the module docstring)."""
        request = {
            "provider": provider,
            "virtual_key": None if virtual_key_id is None else str(virtual_key_id),
            "provider_key": None if provider_key_id is None else str(provider_key_id),
        }
        base_type = base_request_type(request_type)
        names = model_name_candidates(model)
        for kind, bucket in self._buckets:
            fields = _SCOPE_FIELDS[kind]
            if any(request[field] is None for field in fields):
                continue
            for override in bucket:
                if (
                    all(_scope_value(override, field) == request[field] for field in fields)
                    and base_type in override.request_types
                    and override.matches_model(names)
                ):
                    return override
        return None


def apply_patch(rates: Rates | None, patch: Mapping[str, float]) -> Rates:
    """``rates`` with the token-pricing fields named in ``patch`` replaced.

    Only named fields change, 0 included. A tier field sets (or adds) the tier at its start;
    when the slot had no price, its base is 0 until the patch names the base rate too.
    """
    values: dict[str, Any] = {
        "input": None, "output": None, "cache_read": None, "cache_write": None,
        "cache_write_1h": None, "request": None,
    }
    if rates is not None:
        values.update(
            input=rates.input, output=rates.output, cache_read=rates.cache_read,
            cache_write=rates.cache_write, cache_write_1h=rates.cache_write_1h,
            request=rates.request,
        )
    # Base rates first, so a tier named in the same patch lands on the patched base.
    ordered = sorted(
        (field for field in patch if field in PATCH_FIELD_SLOTS),
        key=lambda field: (PATCH_FIELD_SLOTS[field][1] is not None, field),
    )
    for field in ordered:
        slot, tier_start = PATCH_FIELD_SLOTS[field]
        price = _price(patch[field])
        if slot == "request":
            values[slot] = price
            continue
        current: TieredRate | None = values[slot]
        if tier_start is None:
            values[slot] = TieredRate(price, current.tiers if current is not None else ())
        else:
            base = current if current is not None else TieredRate(Decimal(0))
            values[slot] = base.with_tier(tier_start, price)
    return Rates(**values)


def _price(value: float) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    return Decimal(repr(float(value)))


def _scope_value(override: OverrideRecord, field: str) -> str | None:
    if field == "provider":
        return override.provider_id
    if field == "virtual_key":
        return override.virtual_key_id
    return override.provider_key_id


def _ordered(bucket: list[OverrideRecord]) -> tuple[OverrideRecord, ...]:
    # Stable sorts from the least significant key: id ascending, then updated_at descending
    # (reverse=True keeps ties in order), then specificity ascending.
    ordered = sorted(bucket, key=lambda override: override.id)
    ordered.sort(key=lambda override: override.updated_at, reverse=True)
    ordered.sort(key=OverrideRecord.specificity)
    return tuple(ordered)
