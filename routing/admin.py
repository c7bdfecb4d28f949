"""Admin for routing rules and their weighted targets."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from gateway.admin_base import (
    BR,
    AuditedInlineMixin,
    AuditedModelAdmin,
    GatewayAdminForm,
    flag_actions,
    link_to,
)
from governance.admin import keys_listing
from governance.models import VirtualKey
from routing.models import SCOPE_FIELDS, RoutingRule, RoutingScope, RoutingTarget

WEIGHT_TOLERANCE = 0.001
OWNER_FIELDS = ("team", "customer", "virtual_key")


class RoutingRuleForm(GatewayAdminForm):
    class Meta:
        model = RoutingRule
        fields = ("name", "description", "enabled", "chain_rule", "priority", "scope", "team",
                  "customer", "virtual_key", "cel_expression", "fallbacks")
        widgets = {
            "cel_expression": forms.Textarea(attrs={
                "rows": 4, "cols": 90, "spellcheck": "false", "class": "gw-monospace",
                "style": "font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace",
            }),
            "fallbacks": forms.Textarea(attrs={"rows": 2, "cols": 60}),
        }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        scope = cleaned.get("scope")
        if not scope:
            return cleaned
        label = RoutingScope(scope).label.lower()
        wanted = SCOPE_FIELDS.get(scope)
        for field in OWNER_FIELDS:
            value = cleaned.get(field)
            if field == wanted and value is None and field not in self.errors:
                self.add_error(field, f"is required for a {label}-scoped rule")
            elif field != wanted and value is not None:
                self.add_error(field, f"must be empty for a {label}-scoped rule "
                                      f"(set the scope to {field.replace('_', ' ')} to use it)")
        name = cleaned.get("name")
        if name and not self.errors:
            owner = {wanted: cleaned[wanted]} if wanted else {}
            clash = RoutingRule.objects.filter(name=name, scope=scope, **owner)
            if self.instance.pk is not None:
                clash = clash.exclude(pk=self.instance.pk)
            if clash.exists():
                where = f"this {label}" if wanted else "the global scope"
                self.add_error("name", f'a rule named "{name}" already exists in {where}')
        return cleaned


class RoutingTargetFormSet(forms.BaseInlineFormSet):
    """The rules the API applies to targets (spec governance-api 3.8), on the whole set."""

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        live = [form for form in self.forms
                if getattr(form, "cleaned_data", None) and not self._should_delete_form(form)]
        if not live:
            raise ValidationError("at least one target is required")
        seen: set[tuple[str, str, str]] = set()
        total = 0.0
        for form in live:
            data = form.cleaned_data
            provider, key, weight = data.get("provider"), data.get("key"), data.get("weight")
            model = data.get("model") or ""
            if weight is not None and weight < 0:
                form.add_error("weight", "each target weight must be positive")
            if key is not None and provider is None:
                form.add_error("key", "key requires provider to be set")
            elif key is not None and key.provider_id != provider.pk:
                form.add_error("key", f"key {key} does not belong to provider {provider.name}")
            identity = (provider.name.lower() if provider else "", model.lower(),
                        str(key.pk) if key else "")
            if identity in seen:
                form.add_error(None, 'duplicate target entry: provider="{}" model="{}" '
                                     'key_id="{}"'.format(*identity))
            seen.add(identity)
            total += weight or 0.0
        if abs(total - 1.0) > WEIGHT_TOLERANCE:
            raise ValidationError(f"target weights must sum to 1, got {total:.4f}")
        for position, form in enumerate(live):
            form.instance.position = position


class RoutingTargetInline(AuditedInlineMixin, admin.TabularInline):
    model = RoutingTarget
    formset = RoutingTargetFormSet
    fields = ("provider", "model", "key", "weight")
    autocomplete_fields = ("provider", "key")
    extra = 0
    min_num = 1
    verbose_name_plural = "targets (weights sum to 1; empty provider or model keeps the request's)"


@admin.register(RoutingRule)
class RoutingRuleAdmin(AuditedModelAdmin):
    form = RoutingRuleForm
    list_display = ("name", "scope", "scope_owner_link", "priority", "enabled", "chain_rule",
                    "targets_summary", "updated_at")
    list_filter = ("scope", "enabled", "chain_rule")
    list_select_related = ("team", "customer", "virtual_key")
    search_fields = ("name", "cel_expression", "description")
    autocomplete_fields = ("team", "customer", "virtual_key")
    readonly_fields = ("applies_to", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "description", "enabled", "chain_rule", "priority")}),
        ("Scope", {"fields": ("scope", "team", "customer", "virtual_key", "applies_to"),
                   "description": "Set the owner that matches the scope; a global rule has "
                                  "none."}),
        ("Condition", {"fields": ("cel_expression",)}),
        ("Fallbacks", {"fields": ("fallbacks",)}),
        ("History", {"fields": ("created_at", "updated_at")}),
    )
    inlines = [RoutingTargetInline]
    actions = flag_actions("enabled", on_label="Enable", off_label="Disable")

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).prefetch_related("targets__provider")

    @admin.display(description="scope owner")
    def scope_owner_link(self, obj: RoutingRule) -> str:
        owner = obj.scope_owner
        return link_to(owner) if owner is not None else "-"

    @admin.display(description="targets")
    def targets_summary(self, obj: RoutingRule) -> str:
        targets = obj.targets.all()
        if not targets:
            return "-"
        return format_html_join(
            BR, "{}/{} × {}",
            ((target.provider.name if target.provider_id else "(incoming)",
              target.model or "(incoming)", f"{target.weight:g}") for target in targets),
        )

    @admin.display(description="applies to")
    def applies_to(self, obj: RoutingRule) -> str:
        if obj.pk is None:
            return "(shown once the rule is saved)"
        if obj.scope == RoutingScope.GLOBAL:
            return "all virtual keys"
        if obj.scope == RoutingScope.VIRTUAL_KEY:
            return format_html("virtual key {}", link_to(obj.virtual_key))
        if obj.scope == RoutingScope.TEAM and obj.team_id:
            return format_html("team {} and its virtual keys: {}", link_to(obj.team),
                               keys_listing(obj.team.virtual_keys.all()))
        if obj.scope == RoutingScope.CUSTOMER and obj.customer_id:
            customer = obj.customer
            keys = VirtualKey.objects.filter(customer=customer) | VirtualKey.objects.filter(
                team__customer=customer)
            teams = format_html_join(", ", "{}", ((link_to(t),) for t in customer.teams.all()))
            return format_html("customer {}, its teams ({}) and their virtual keys: {}",
                               link_to(customer), teams or "none", keys_listing(keys.distinct()))
        return "-"
