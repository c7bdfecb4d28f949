"""Admin for pricing overrides."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html_join

from gateway.admin_base import AuditedModelAdmin, GatewayAdminForm, link_to
from gateway.formats import plain_decimal
from pricing.api.catalog import model_price
from pricing.catalog import PriceCatalog, catalog_provider_id
from pricing.models import SCOPE_REQUIREMENTS, PricingOverride, ScopeKind
from pricing.resolution import apply_patch
from pricing.validators import BASE_REQUEST_TYPES, validate_pattern

SCOPE_IDS = ("virtual_key", "provider", "provider_key")
PATCH_SUMMARY_FIELDS = 3


def plain_number(value: float | int) -> str:
    """A price as typed: ``0.0000001``, never ``1e-07``."""
    if isinstance(value, int):
        return str(value)
    return plain_decimal(Decimal(repr(value)))


class PricePatchField(forms.JSONField):
    """The patch as JSON, its prices in plain decimals (json.dumps writes 1e-07)."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, dict) and value and all(
                type(price) in (int, float) and math.isfinite(price) for price in value.values()):
            return "{" + ", ".join(f"{json.dumps(name, ensure_ascii=False)}: "
                                   f"{plain_number(price)}" for name, price in value.items()) + "}"
        return super().prepare_value(value)


class PricingOverrideForm(GatewayAdminForm):
    request_types = forms.TypedMultipleChoiceField(
        choices=[(name, name) for name in BASE_REQUEST_TYPES],
        widget=forms.CheckboxSelectMultiple,
        help_text="Each type covers its streaming and non-streaming requests.",
    )

    class Meta:
        model = PricingOverride
        fields = ("name", "scope_kind", "virtual_key", "provider", "provider_key", "match_type",
                  "pattern", "request_types", "patch")
        widgets = {"patch": forms.Textarea(attrs={"rows": 4, "cols": 60})}
        field_classes = {"patch": PricePatchField}

    def clean_name(self) -> str:
        return (self.cleaned_data.get("name") or "").strip()

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        kind = cleaned.get("scope_kind")
        if kind in SCOPE_REQUIREMENTS:
            required = SCOPE_REQUIREMENTS[kind]
            for field in SCOPE_IDS:
                present = cleaned.get(field) is not None
                if field in required and not present and field not in self.errors:
                    self.add_error(field, f"{field}_id is required for {kind} scope_kind")
                elif field not in required and present:
                    self.add_error(field, self._forbidden_message(kind, field, required))
        provider, key = cleaned.get("provider"), cleaned.get("provider_key")
        if provider is not None and key is not None and key.provider_id != provider.pk \
                and "provider_key" not in self.errors:
            self.add_error("provider_key", f"key {key} does not belong to provider "
                                           f"{provider.name}")
        pattern = (cleaned.get("pattern") or "").strip()
        if "pattern" in cleaned:
            cleaned["pattern"] = pattern
            error = validate_pattern(cleaned.get("match_type") or "", pattern)
            if error and "match_type" not in self.errors:
                self.add_error("pattern", error)
        return cleaned

    @staticmethod
    def _forbidden_message(kind: str, field: str, required: frozenset[str]) -> str:
        if kind == ScopeKind.GLOBAL:
            return "global scope_kind must not include scope identifiers"
        if len(required) == 1:
            return f"{kind} scope_kind only supports {next(iter(required))}_id"
        return f"{kind} scope_kind does not support {field}_id"


@admin.register(PricingOverride)
class PricingOverrideAdmin(AuditedModelAdmin):
    form = PricingOverrideForm
    list_display = ("name", "scope", "pattern_display", "request_types_display",
                    "patch_summary", "effective_price", "updated_at")
    change_list_template = "admin/pricing/pricingoverride/change_list.html"
    list_filter = ("scope_kind", "match_type")
    list_select_related = ("virtual_key", "provider", "provider_key__provider")
    search_fields = ("name", "pattern")
    autocomplete_fields = ("virtual_key", "provider", "provider_key")
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name",)}),
        ("Scope", {"fields": ("scope_kind", "virtual_key", "provider", "provider_key"),
                   "description": "Set exactly the identifiers the scope kind names."}),
        ("Match", {"fields": ("match_type", "pattern", "request_types")}),
        ("Prices", {"fields": ("patch",)}),
        ("History", {"fields": ("created_at", "updated_at")}),
    )

    @admin.display(description="scope", ordering="scope_kind")
    def scope(self, obj: PricingOverride) -> str:
        parts = [link_to(getattr(obj, field)) for field in SCOPE_IDS
                 if getattr(obj, f"{field}_id") is not None]
        if not parts:
            return obj.get_scope_kind_display()
        return format_html_join(
            " ", "{}", [(obj.get_scope_kind_display() + ":",), *((part,) for part in parts)]
        )

    @admin.display(description="pattern", ordering="pattern")
    def pattern_display(self, obj: PricingOverride) -> str:
        return f"{obj.pattern} ({obj.match_type})"

    @admin.display(description="request types")
    def request_types_display(self, obj: PricingOverride) -> str:
        return ", ".join(obj.request_types or []) or "-"

    @admin.display(description="prices")
    def patch_summary(self, obj: PricingOverride) -> str:
        items = sorted((obj.patch or {}).items())
        if not items:
            return "-"
        shown = ", ".join(f"{name}={plain_number(price)}" if type(price) in (int, float)
                          else f"{name}={price}" for name, price in items[:PATCH_SUMMARY_FIELDS])
        more = len(items) - PATCH_SUMMARY_FIELDS
        return f"{shown}, +{more} more" if more > 0 else shown

    @admin.display(description="effective price (per 1M tokens)")
    def effective_price(self, obj: PricingOverride) -> str:
        """Catalog price of the pattern's model with the patch applied (exact patterns), or
        the patched rates alone (wildcards, unknown models)."""
        base = None
        if obj.match_type == "exact":
            catalog = PriceCatalog.bundled()
            provider_ids = ([catalog_provider_id(obj.provider.kind, obj.provider.price_provider)]
                            if obj.provider_id else [pid for pid, _ in catalog.providers()])
            for provider_id in provider_ids:
                price = catalog.lookup(provider_id, obj.pattern) if provider_id else None
                if price is not None:
                    base = price.rates
                    break
        rates = apply_patch(base, obj.patch or {})
        parts = [f"{label} ${rate.per_million.normalize():f}"
                 for label, rate in (("in", rates.input), ("out", rates.output),
                                     ("cache read", rates.cache_read)) if rate is not None]
        if rates.request is not None:
            parts.append(f"request ${rates.request.normalize():f}")
        suffix = "" if base is not None else " (catalog for the rest)"
        return (", ".join(parts) + suffix) if parts else "-"

    def get_urls(self) -> list[Any]:
        extra = [path("catalog/", self.admin_site.admin_view(self.catalog_view),
                      name="pricing_catalog")]
        return extra + super().get_urls()

    def catalog_view(self, request: HttpRequest) -> HttpResponse:
        """Read-only browser of the bundled price catalog."""
        catalog = PriceCatalog.bundled()
        provider = request.GET.get("provider") or None
        if provider is not None and catalog.resolve_provider_id(provider) is None:
            provider = None
        search = (request.GET.get("q") or "")[:200]
        models = list(catalog.iter_models(provider=provider, search=search or None))
        page = Paginator(models, 100).get_page(request.GET.get("page"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Price catalog",
            "opts": self.model._meta,
            "page": page,
            "rows": [model_price(item) for item in page.object_list],
            "providers": catalog.providers(),
            "provider": provider or "",
            "search": search,
            "total": len(models),
        }
        return TemplateResponse(request, "admin/pricing/catalog.html", context)
