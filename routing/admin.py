"""Admin for routing rules and their weighted targets."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.helpers import AdminForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Case, IntegerField, Value, When
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from gateway.admin_base import (
    BR,
    AuditedInlineMixin,
    AuditedModelAdmin,
    GatewayAdminForm,
    admin_change_url,
    flag_actions,
    link_to,
)
from gateway.models import ProviderKey
from governance.admin import keys_listing
from governance.models import VirtualKey
from routing.engine import Outcome
from routing.evaluation import SCOPE_LABELS, evaluate_request
from routing.forms import FIELDSETS, TryRoutingForm
from routing.models import SCOPE_FIELDS, RoutingRule, RoutingScope, RoutingTarget
from routing.validators import validate_fallback_providers, validate_fallbacks

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

    def clean_fallbacks(self) -> Any:
        value = self.cleaned_data.get("fallbacks")
        if value:  # (the model field's validators run later, after this method)
            validate_fallbacks(value)
            validate_fallback_providers(value)
        return value

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
                    "condition", "targets_summary", "updated_at")
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

    CONDITION_SHOWN_CHARS = 80
    # In evaluation order by default: the most specific scope first (key, team, customer,
    # global), then priority, then creation.
    ordering = (Case(*(When(scope=scope, then=Value(rank)) for rank, scope in enumerate(
        (RoutingScope.VIRTUAL_KEY, RoutingScope.TEAM, RoutingScope.CUSTOMER,
         RoutingScope.GLOBAL))), output_field=IntegerField()).asc(),
        "priority", "created_at", "id")

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).prefetch_related("targets__provider")

    @admin.display(description="condition", ordering="cel_expression")
    def condition(self, obj: RoutingRule) -> str:
        text = " ".join(obj.cel_expression.split()) or "(always)"
        if len(text) > self.CONDITION_SHOWN_CHARS:
            text = text[:self.CONDITION_SHOWN_CHARS - 1] + "…"
        return format_html("<code>{}</code>", text)

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

    # --- "Try routing" ----------------------------------------------------------------------

    def get_urls(self) -> list[Any]:
        return [
            path("try/", self.admin_site.admin_view(self.try_routing_view),
                 name=f"{self.opts.app_label}_{self.opts.model_name}_try"),
            *super().get_urls(),
        ]

    def try_routing_view(self, request: HttpRequest) -> HttpResponse:
        """Dry-run the rules for a described request; the same as ``POST
        /api/governance/routing-rules/evaluate``. GET shows the form (fields may be
        prefilled from the query string), POST evaluates it."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = TryRoutingForm(request.POST, admin_site=self.admin_site)
        else:
            initial = {name: value for name, value in request.GET.items()
                       if name in TryRoutingForm.base_fields}
            form = TryRoutingForm(initial=initial, admin_site=self.admin_site)
        result = None
        if form.is_bound and form.is_valid():
            arguments = form.evaluation_arguments()
            result = evaluate_request(**arguments)
            result = _presentable(result, arguments["virtual_key"])
        context = {
            **self.admin_site.each_context(request),
            "title": "Try routing",
            "opts": self.opts,
            "adminform": AdminForm(form, list(FIELDSETS), {}, model_admin=self),
            "form": form,
            "media": self.media + form.media,
            "errors": form.errors if form.is_bound else None,
            "result": result,
        }
        return TemplateResponse(request, "admin/routing/routingrule/try_routing.html", context)


def _rule_url(rule_id: str) -> str | None:
    return reverse("admin:routing_routingrule_change", args=[rule_id]) if rule_id else None


def _presentable(result: dict[str, Any], key: VirtualKey | None) -> dict[str, Any]:
    """Add what the page shows beyond the API's result: admin links and row styles."""
    owners: dict[tuple[str, str], Any] = {}
    if key is not None:
        owners[("virtual_key", str(key.pk))] = key
        if key.team is not None:
            owners[("team", str(key.team.pk))] = key.team
            if key.team.customer is not None:
                owners[("customer", str(key.team.customer.pk))] = key.team.customer
        if key.customer is not None:
            owners.setdefault(("customer", str(key.customer.pk)), key.customer)
    for scope in result["scope_chain"]:
        scope["label"] = SCOPE_LABELS.get(scope["scope"], scope["scope"])
        owner = owners.get((scope["scope"], scope["scope_id"]))
        scope["url"] = admin_change_url(owner) if owner is not None else None
    decision = result["decision"]
    if decision is not None:
        decision["rule_url"] = _rule_url(decision["rule_id"])
        provider_key = (ProviderKey.objects.select_related("provider")
                        .filter(pk=decision["key_id"]).first() if decision["key_id"] else None)
        decision["key_label"] = str(provider_key) if provider_key else decision["key_id"]
        decision["key_url"] = admin_change_url(provider_key)
    for entry in result["trace"]:
        entry["rule_url"] = _rule_url(entry["rule_id"])
        entry["scope_label"] = SCOPE_LABELS.get(entry["scope"], entry["scope"])
        owner = owners.get((entry["scope"], entry["scope_id"]))
        entry["scope_name"] = str(owner) if owner is not None else ""
        entry["scope_url"] = admin_change_url(owner) if owner is not None else None
        entry["css"] = {
            Outcome.MATCHED.value: "gw-matched",
            Outcome.COMPILE_ERROR.value: "gw-error",
            Outcome.EVAL_ERROR.value: "gw-error",
            Outcome.NO_TARGETS.value: "gw-warning",
        }.get(entry["outcome"], "")
    return result
