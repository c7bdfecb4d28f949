"""``/api/pricing``: browse the price catalog and quote the cost of a usage."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from gateway.api.base import ManagementAPIView
from gateway.api.fields import StrictCharField, StrictIntegerField
from gateway.api.listing import clamp, parse_non_negative
from gateway.errors import BadRequest
from gateway.formats import plain_decimal
from gateway.models import Provider, ProviderKey
from governance.models import VirtualKey
from pricing.catalog import ModelPrice, PriceCatalog, TieredRate
from pricing.cost import CostBreakdown, ProviderPricing, Usage
from pricing.loading import load_pricer
from pricing.validators import BASE_REQUEST_TYPES

MAX_TOKENS = 10**12
TAGS = ["Pricing"]


def _per_million(rate: TieredRate | None) -> float | None:
    return float(rate.per_million) if rate is not None else None


def model_price(price: ModelPrice) -> dict[str, Any]:
    rates = price.rates
    return {
        "provider": price.provider_id,
        "model": price.model_id,
        "name": price.name,
        "input_per_million": _per_million(rates.input),
        "output_per_million": _per_million(rates.output),
        "cache_read_per_million": _per_million(rates.cache_read),
        "cache_write_per_million": _per_million(rates.cache_write),
        "per_request": float(rates.request) if rates.request is not None else None,
        "tiered": any(rate is not None and rate.tiers for rate in (rates.input, rates.output)),
        "time_dependent": bool(price.conditional),
        "context_window": price.context_window,
        "deprecated": price.deprecated,
    }


class CatalogModelsView(ManagementAPIView):
    @extend_schema(tags=TAGS, operation_id="listCatalogModels", parameters=[
        OpenApiParameter("provider", str, description="Catalog provider id, e.g. openai."),
        OpenApiParameter("search", str, description="Substring of the model id or name."),
        OpenApiParameter("limit", int), OpenApiParameter("offset", int),
    ])
    def get(self, request: Request) -> Response:
        catalog = PriceCatalog.bundled()
        provider = request.query_params.get("provider") or None
        if provider is not None and catalog.resolve_provider_id(provider) is None:
            known = ", ".join(pid for pid, _ in catalog.providers())
            raise BadRequest(f"unknown catalog provider {provider!r}; known: {known}",
                             fields={"provider": ["unknown catalog provider"]})
        search = (request.query_params.get("search") or "")[:200] or None
        limit, offset = clamp(parse_non_negative(request.query_params, "limit"),
                              parse_non_negative(request.query_params, "offset"))
        models = list(catalog.iter_models(provider=provider, search=search))
        page = models[offset:offset + limit]
        return Response({"models": [model_price(item) for item in page], "count": len(page),
                         "total_count": len(models), "limit": limit, "offset": offset})


class UsageInput(serializers.Serializer):
    input_tokens = StrictIntegerField(min_value=0, max_value=MAX_TOKENS,
                                      help_text="Prompt tokens, cached ones included.")
    cached_read_tokens = StrictIntegerField(required=False, min_value=0, max_value=MAX_TOKENS)
    cache_write_tokens = StrictIntegerField(required=False, min_value=0, max_value=MAX_TOKENS)
    output_tokens = StrictIntegerField(required=False, min_value=0, max_value=MAX_TOKENS,
                                       help_text="Completion tokens, reasoning included.")
    reasoning_tokens = StrictIntegerField(required=False, min_value=0, max_value=MAX_TOKENS)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        cached = data.get("cached_read_tokens", 0) + data.get("cache_write_tokens", 0)
        if cached > data["input_tokens"]:
            raise serializers.ValidationError(
                "cached_read_tokens + cache_write_tokens cannot exceed input_tokens "
                "(input_tokens counts cached tokens too)")
        if data.get("reasoning_tokens", 0) > data.get("output_tokens", 0):
            raise serializers.ValidationError(
                "reasoning_tokens cannot exceed output_tokens (output counts reasoning too)")
        return data


class QuoteInput(serializers.Serializer):
    provider = StrictCharField(max_length=50, help_text="A gateway provider name, or a "
                               "catalog provider id such as openai or anthropic.")
    model = StrictCharField(max_length=255)
    request_type = serializers.ChoiceField(choices=BASE_REQUEST_TYPES, required=False,
                                           default="chat_completion")
    usage = UsageInput()
    virtual_key_id = serializers.UUIDField(required=False, allow_null=True)
    provider_key_id = serializers.UUIDField(required=False, allow_null=True)

    def validate_virtual_key_id(self, value: Any) -> Any:
        if value is not None and not VirtualKey.objects.filter(pk=value).exists():
            raise serializers.ValidationError(f"virtual key {value} does not exist")
        return value

    def validate_provider_key_id(self, value: Any) -> Any:
        if value is not None and not ProviderKey.objects.filter(pk=value).exists():
            raise serializers.ValidationError(f"provider key {value} does not exist")
        return value


def breakdown(cost: CostBreakdown) -> dict[str, Any]:
    return {
        "total_usd": plain_decimal(cost.total),
        "total_nanos": cost.total_nanos,
        "components": {
            "input": plain_decimal(cost.input),
            "cached_read": plain_decimal(cost.cached_read),
            "cache_write": plain_decimal(cost.cache_write),
            "output": plain_decimal(cost.output),
            "request": plain_decimal(cost.request),
        },
        "priced": cost.priced,
        "source": str(cost.source),
        "override": ({"id": cost.override_id, "name": cost.override_name}
                     if cost.override_id else None),
        "catalog": ({"provider": cost.catalog_provider_id, "model": cost.catalog_model_id}
                    if cost.catalog_model_id else None),
    }


class QuoteView(ManagementAPIView):
    @extend_schema(tags=TAGS, operation_id="quoteCost", request=QuoteInput,
                   description="The cost of a usage, per component, and which catalog "
                   "price and pricing override priced it. Amounts are decimal strings.")
    def post(self, request: Request) -> Response:
        data = self.parse(QuoteInput)
        provider = data["provider"]
        extra: tuple[ProviderPricing, ...] = ()
        if not Provider.objects.filter(name=provider).exists():
            if PriceCatalog.bundled().resolve_provider_id(provider) is None:
                raise BadRequest(f"unknown provider {provider!r}: not a configured provider "
                                 "nor a catalog provider", fields={"provider": ["unknown"]})
            extra = (ProviderPricing(name=provider, kind="openai_compatible",
                                     price_provider=provider),)
        usage_data = data["usage"]
        usage = Usage(
            input_tokens=usage_data["input_tokens"],
            cached_read_tokens=usage_data.get("cached_read_tokens", 0),
            cache_write_tokens=usage_data.get("cache_write_tokens", 0),
            output_tokens=usage_data.get("output_tokens", 0),
            reasoning_tokens=usage_data.get("reasoning_tokens", 0),
        )
        cost = load_pricer(extra_providers=extra).quote(
            usage, provider, data["model"], data["request_type"],
            virtual_key_id=data.get("virtual_key_id"),
            provider_key_id=data.get("provider_key_id"),
        )
        return Response({"provider": provider, "model": data["model"],
                         "request_type": data["request_type"], **breakdown(cost)})
