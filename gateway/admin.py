"""Admin for providers and their keys, model aliases, admin API tokens and the audit log."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.apps import apps
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html, format_html_join

from gateway.admin_base import (
    AuditedInlineMixin,
    AuditedModelAdmin,
    BudgetInline,
    GatewayAdminForm,
    LimitOwnerAdmin,
    ModelNamesField,
    RateLimitInline,
    ReadOnlyModelAdmin,
    flag_actions,
    get_actor,
    link_to,
    model_names_text,
    render_secret_once,
    with_default_ordering,
)
from gateway.models import (
    AdminToken,
    AuditEvent,
    ModelAlias,
    ModelAliasRoute,
    Provider,
    ProviderKey,
)
from gateway.secrets import digest, new_admin_token

admin.site.site_header = "LLM Gateway admin"
admin.site.site_title = "LLM Gateway admin"
admin.site.index_title = "Governance"

AUDITED_APPS = ("gateway", "governance", "routing", "pricing")
ADMIN_TOKEN_PREFIX_LENGTH = 10


# --- providers and their keys -----------------------------------------------------------------

class WriteOnlyInput(forms.PasswordInput):
    """A password field that never sends a value back to the browser, and says so: when a
    form comes back with an error, a value typed in it is gone, and the empty field asks for
    it again (before, it sat empty and the next save failed with "is required")."""

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs, render_value=False)

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        if value:
            attrs = {**(attrs or {}), "placeholder": "Enter it again: not sent back"}
        return super().get_context(name, value, attrs)


class ProviderKeyForm(GatewayAdminForm):
    """The key value is write-only: never rendered, required on add, empty keeps it."""

    value = forms.CharField(
        label="API key value",
        required=False,
        max_length=4096,
        widget=WriteOnlyInput(attrs={"autocomplete": "new-password"}),
        help_text="Write-only and stored encrypted. Leave empty to keep the current value.",
    )

    allowed_models = ModelNamesField(empty_means="every model", label="Allowed models")

    class Meta:
        model = ProviderKey
        fields = ("provider", "name", "value", "weight", "allowed_models", "is_enabled")

    def clean_value(self) -> str:
        value = self.cleaned_data.get("value") or ""
        if not value and self.instance._state.adding:
            raise ValidationError("is required for a new key", code="required")
        return value

    def save(self, commit: bool = True) -> Any:
        if self.cleaned_data.get("value"):
            self.instance.set_value(self.cleaned_data["value"])
        return super().save(commit)


class ProviderKeyInline(AuditedInlineMixin, admin.TabularInline):
    model = ProviderKey
    form = ProviderKeyForm
    fields = ("name", "value", "value_hint", "weight", "allowed_models", "is_enabled")
    readonly_fields = ("value_hint",)
    extra = 0
    verbose_name_plural = "API keys"


@admin.register(Provider)
class ProviderAdmin(LimitOwnerAdmin):
    owner_kind = "provider"
    list_display = ("name", "kind", "endpoint", "is_enabled", "key_count", "budgets_column",
                    "rate_limit_column", "updated_at")
    list_filter = ("kind", "is_enabled")
    search_fields = ("name", "base_url", "price_provider")
    fieldsets = (
        (None, {"fields": ("name", "kind", "base_url", "api_version", "price_provider",
                           "is_enabled")}),
        ("Timeouts", {"fields": ("connect_timeout_ms", "first_byte_timeout_ms",
                                 "idle_timeout_ms", "total_timeout_ms")}),
        ("Retries", {"fields": ("max_retries", "backoff_initial_ms", "backoff_max_ms")}),
        ("Circuit breaker", {"fields": ("failure_threshold", "open_seconds")}),
    )
    inlines = [ProviderKeyInline, BudgetInline, RateLimitInline]
    actions = ["reset_usage", *flag_actions("is_enabled", on_label="Enable",
                                            off_label="Disable")]

    def get_queryset(self, request: HttpRequest) -> Any:
        return with_default_ordering(super().get_queryset(request).annotate(_keys=Count("keys")))

    def save_model(self, request: HttpRequest, obj: Provider, form: Any, change: bool) -> None:
        """A rename carries the routing rules' fallbacks along (they name it by name)."""
        from routing.actions import rename_fallback_provider

        old_name = form.initial.get("name") if change else None
        super().save_model(request, obj, form, change)  # (in the change view's transaction)
        if old_name and old_name != obj.name:
            rename_fallback_provider(get_actor(request), old_name, obj.name)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        """Rules whose fallbacks name a provider protect it, as its routing targets do."""
        from routing.actions import rules_falling_back_to

        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        for provider in objs:
            protected.extend(f"Routing rule “{rule.name}” (its fallbacks name "
                             f"“{provider.name}”)" for rule in rules_falling_back_to(provider.name))
        return deleted, counts, perms_needed, protected

    @admin.display(description="endpoint")
    def endpoint(self, obj: Provider) -> str:
        return obj.effective_base_url or "-"

    @admin.display(description="API keys", ordering="_keys")
    def key_count(self, obj: Provider) -> int:
        return obj._keys  # type: ignore[attr-defined]


@admin.register(ProviderKey)
class ProviderKeyAdmin(AuditedModelAdmin):
    form = ProviderKeyForm
    list_display = ("__str__", "provider", "name", "value_hint", "weight", "models_column",
                    "is_enabled", "updated_at")
    list_filter = (("provider", admin.RelatedOnlyFieldListFilter), "is_enabled")
    list_select_related = ("provider",)
    search_fields = ("name", "provider__name")
    autocomplete_fields = ("provider",)
    fields = ("provider", "name", "value", "value_hint", "weight", "allowed_models",
              "is_enabled", "created_at", "updated_at")
    readonly_fields = ("value_hint", "created_at", "updated_at")
    actions = flag_actions("is_enabled", on_label="Enable", off_label="Disable")

    @admin.display(description="allowed models")
    def models_column(self, obj: ProviderKey) -> str:
        return model_names_text(obj.allowed_models, empty="every model")


# --- model aliases ----------------------------------------------------------------------------

class ModelAliasRouteInline(AuditedInlineMixin, admin.TabularInline):
    model = ModelAliasRoute
    fields = ("provider", "model", "weight", "priority")
    autocomplete_fields = ("provider",)
    extra = 0
    min_num = 1  # an alias routes somewhere, as the API requires

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        return super().get_formset(request, obj, validate_min=True, **kwargs)


@admin.register(ModelAlias)
class ModelAliasAdmin(AuditedModelAdmin):
    list_display = ("name", "strategy", "is_enabled", "routes_summary", "updated_at")
    list_filter = ("strategy", "is_enabled")
    search_fields = ("name", "description", "routes__model")
    inlines = [ModelAliasRouteInline]
    actions = flag_actions("is_enabled", on_label="Enable", off_label="Disable")

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).prefetch_related("routes__provider")

    @admin.display(description="routes")
    def routes_summary(self, obj: ModelAlias) -> str:
        routes = obj.routes.all()
        if not routes:
            return "-"
        return format_html_join(", ", "{}/{} ×{}",
                                ((r.provider.name, r.model, f"{r.weight:g}") for r in routes))


# --- admin API tokens -------------------------------------------------------------------------

class AdminTokenForm(GatewayAdminForm):
    class Meta:
        model = AdminToken
        fields = ("user", "name", "expires_at")

    def clean_user(self) -> Any:
        user = self.cleaned_data["user"]
        if not user.is_staff:
            raise ValidationError("admin tokens are issued to staff users only", code="invalid")
        return user


@admin.register(AdminToken)
class AdminTokenAdmin(AuditedModelAdmin):
    """Tokens are generated on add and shown once; they cannot be edited, only deleted."""

    form = AdminTokenForm
    list_display = ("user", "name", "prefix_display", "created_at", "last_used_at", "expires_at")
    list_select_related = ("user",)
    list_filter = ("user",)
    search_fields = ("name", "prefix", "user__username")
    autocomplete_fields = ("user",)
    readonly_fields = ("prefix_display", "created_at", "last_used_at")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ("user", "name", "expires_at")
        return ("user", "name", "prefix_display", "created_at", "last_used_at", "expires_at")

    @admin.display(description="token", ordering="prefix")
    def prefix_display(self, obj: AdminToken) -> str:
        return f"{obj.prefix}…" if obj.prefix else "-"

    def prepare_object(self, request: HttpRequest, obj: Any, previous: Any) -> None:
        if previous is None:
            token = new_admin_token()
            obj.token_hash = digest(token)
            obj.prefix = token[:ADMIN_TOKEN_PREFIX_LENGTH]
            request._gateway_new_secret = token  # type: ignore[attr-defined]

    def response_add(self, request: HttpRequest, obj: Any, post_url_continue: Any = None,
                     ) -> HttpResponse:
        token = getattr(request, "_gateway_new_secret", None)
        if token is None:
            return super().response_add(request, obj, post_url_continue)
        return render_secret_once(
            request, self, obj, token, title="Admin API token created: copy it now",
            explanation="Send it as 'Authorization: Bearer <token>'. This is the only time it "
                        "is shown: only its SHA-256 digest is stored.",
        )


# --- the audit log ------------------------------------------------------------------------------

def _audited_object(event: AuditEvent) -> Any:
    for label in AUDITED_APPS:
        try:
            model = apps.get_model(label, event.object_type)
        except LookupError:
            continue
        try:
            return model._default_manager.filter(pk=event.object_id).first()
        except (ValueError, ValidationError):
            return None
    return None


def _shown(value: Any) -> str:
    if value is None:
        return "∅"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyModelAdmin):
    list_display = ("created_at", "actor_name", "source", "action", "object_type",
                    "object_repr")
    list_filter = ("action", "object_type", "source")
    date_hierarchy = "created_at"
    search_fields = ("actor_name", "object_repr", "object_id")
    fields = ("created_at", "actor_name", "actor", "source", "action", "object_type",
              "object_id", "object_link", "object_repr", "changes_table")
    readonly_fields = ("object_link", "changes_table")
    list_select_related = ("actor",)

    @admin.display(description="object")
    def object_link(self, obj: AuditEvent) -> str:
        current = _audited_object(obj)
        return link_to(current) if current is not None else "(no longer exists)"

    @admin.display(description="changes")
    def changes_table(self, obj: AuditEvent) -> str:
        changes = obj.changes if isinstance(obj.changes, dict) else {}
        if not changes:
            return "-"
        rows = []
        for field, pair in sorted(changes.items()):
            before, after = pair if isinstance(pair, list) and len(pair) == 2 else (None, pair)
            rows.append((field, _shown(before), _shown(after)))
        body = format_html_join(
            "", "<tr><th>{}</th><td><code>{}</code></td><td>→</td><td><code>{}</code></td></tr>",
            rows,
        )
        return format_html('<table class="gw-changes"><thead><tr><th>field</th><th>before</th>'
                           "<th></th><th>after</th></tr></thead><tbody>{}</tbody></table>", body)
