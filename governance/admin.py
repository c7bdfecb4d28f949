"""Admin for customers, teams, virtual keys, their limits, model configs, usage records and
their daily rollups."""

from __future__ import annotations

import datetime
import time
import uuid
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Count, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from gateway.admin_base import (
    AuditedInlineMixin,
    AuditedModelAdmin,
    BudgetInline,
    GatewayAdminForm,
    LimitOwnerAdmin,
    ModelNamesField,
    RateLimitForm,
    RateLimitInline,
    ReadOnlyModelAdmin,
    admin_change_url,
    duplicate_window_message,
    get_actor,
    key_alignment,
    link_to,
    model_names_text,
    money,
    prepare_budget_window,
    render_secret_once,
    reset_usage_action,
    usage_bar,
    with_default_ordering,
)
from gateway.formats import plain_decimal
from gateway.secrets import digest, display_prefix, new_virtual_key_secret
from governance import actions, limits
from governance.durations import same_window
from governance.engine import window_reset_at
from governance.ledger import Metric
from governance.models import (
    MULTI_BUDGET_OWNERS,
    OWNER_FIELDS,
    Budget,
    Customer,
    ModelConfig,
    RateLimit,
    Team,
    UsageRecord,
    UsageRollup,
    VirtualKey,
    VirtualKeyProviderConfig,
)
from governance.snapshot import budget_limit, rate_limits

SECRET_EXPLANATION = (
    "This is the only time the secret is shown: the gateway stores only its SHA-256 digest. "
    "If it is lost, rotate the key to get a new one."
)
LISTED_KEYS = 50  # virtual keys listed on a team or customer page before "and N more"


def keys_listing(keys: models.QuerySet[VirtualKey]) -> str:
    total = keys.count()
    if not total:
        return "no virtual keys"
    shown = format_html_join(", ", "{}", ((link_to(key),) for key in keys[:LISTED_KEYS]))
    if total > LISTED_KEYS:
        return format_html("{} and {} more", shown, total - LISTED_KEYS)
    return shown


# --- customers and teams --------------------------------------------------------------------

class DetachesOnDeleteMixin:
    """The delete confirmation lists what stays but is detached (teams and virtual keys of
    a deleted customer, keys of a deleted team): they keep working without the deleted
    owner's budgets, rate limits and routing rules, which Django's page would not say."""

    detached: tuple[tuple[str, str], ...] = ()  # (related name, label)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        deleted, counts, perms_needed, protected = super().get_deleted_objects(  # type: ignore[misc]
            objs, request)
        for owner in objs:
            for related, label in self.detached:
                deleted.extend(
                    f"{label} “{item}” stays, detached: the budgets, rate limits and "
                    f"routing rules of “{owner}” no longer apply to it"
                    for item in getattr(owner, related).order_by("name"))
        return deleted, counts, perms_needed, protected


@admin.register(Customer)
class CustomerAdmin(DetachesOnDeleteMixin, LimitOwnerAdmin):
    detached = (("teams", "Team"), ("virtual_keys", "Virtual key"))
    owner_kind = "customer"
    list_display = ("name", "team_count", "key_count", "budgets_column", "rate_limit_column",
                    "created_at")
    search_fields = ("name", "description")
    fields = ("name", "description", "teams_and_keys", "created_at", "updated_at")
    readonly_fields = ("teams_and_keys", "created_at", "updated_at")
    inlines = [BudgetInline, RateLimitInline]

    def get_queryset(self, request: HttpRequest) -> Any:
        return with_default_ordering(super().get_queryset(request).annotate(
            _teams=Count("teams", distinct=True), _keys=Count("virtual_keys", distinct=True)
        ))

    @admin.display(description="teams", ordering="_teams")
    def team_count(self, obj: Customer) -> int:
        return obj._teams  # type: ignore[attr-defined]

    @admin.display(description="virtual keys", ordering="_keys")
    def key_count(self, obj: Customer) -> int:
        return obj._keys  # type: ignore[attr-defined]

    @admin.display(description="teams and virtual keys")
    def teams_and_keys(self, obj: Customer) -> str:
        if obj.pk is None:
            return "-"
        teams = format_html_join(", ", "{}", ((link_to(team),) for team in obj.teams.all()))
        return format_html("Teams: {}<br>Virtual keys: {}", teams or "none",
                           keys_listing(obj.virtual_keys.all()))


@admin.register(Team)
class TeamAdmin(DetachesOnDeleteMixin, LimitOwnerAdmin):
    detached = (("virtual_keys", "Virtual key"),)
    owner_kind = "team"
    list_display = ("name", "customer", "key_count", "budgets_column", "rate_limit_column",
                    "created_at")
    list_filter = (("customer", admin.RelatedOnlyFieldListFilter),)
    list_select_related = ("customer",)
    search_fields = ("name", "description", "customer__name")
    autocomplete_fields = ("customer",)
    fields = ("name", "description", "customer", "virtual_keys_listing", "created_at",
              "updated_at")
    readonly_fields = ("virtual_keys_listing", "created_at", "updated_at")
    inlines = [BudgetInline, RateLimitInline]

    def get_queryset(self, request: HttpRequest) -> Any:
        return with_default_ordering(
            super().get_queryset(request).annotate(_keys=Count("virtual_keys")))

    @admin.display(description="virtual keys", ordering="_keys")
    def key_count(self, obj: Team) -> int:
        return obj._keys  # type: ignore[attr-defined]

    @admin.display(description="virtual keys")
    def virtual_keys_listing(self, obj: Team) -> str:
        return keys_listing(obj.virtual_keys.all()) if obj.pk else "-"


# --- virtual keys -----------------------------------------------------------------------------

class VirtualKeyForm(GatewayAdminForm):
    # One bound for the form as for the model (a positive integer field would say "at least
    # 0" for -1, and the model "at least 1" for 0).
    max_concurrent_requests = forms.IntegerField(
        required=False, min_value=1, max_value=100_000,
        help_text=VirtualKey._meta.get_field("max_concurrent_requests").help_text)

    class Meta:
        model = VirtualKey
        fields = ("name", "description", "team", "customer", "is_active", "expires_at",
                  "calendar_aligned", "max_concurrent_requests")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("team") is not None and cleaned.get("customer") is not None:
            message = "A virtual key belongs to a team or a customer, not both."
            self.add_error("team", message)
            self.add_error("customer", message)
        return cleaned


class ProviderConfigForm(GatewayAdminForm):
    allowed_models = ModelNamesField(empty_means="no model (the key may use none of this "
                                                 "provider's models)", label="Allowed models")

    class Meta:
        model = VirtualKeyProviderConfig
        fields = ("virtual_key", "provider", "weight", "allowed_models", "allow_all_keys", "keys")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance._state.adding and "allowed_models" not in self.initial:
            # A new config allows every model unless narrowed: an empty list allows none
            # (the API's rule, Bifrost's), and saved unnoticed it refused every request.
            self.initial["allowed_models"] = ["*"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        provider = cleaned.get("provider")
        keys = cleaned.get("keys")
        if provider is not None and keys:
            foreign = [str(key) for key in keys if key.provider_id != provider.pk]
            if foreign:
                self.add_error("keys", f"not keys of provider {provider.name}: "
                                       f"{', '.join(foreign)}")
            elif cleaned.get("allow_all_keys"):
                self.add_error("keys", "leave empty when all keys of the provider are allowed")
        return cleaned


class ProviderConfigInline(AuditedInlineMixin, admin.TabularInline):
    model = VirtualKeyProviderConfig
    form = ProviderConfigForm
    fields = ("provider", "weight", "allowed_models", "allow_all_keys", "keys")
    autocomplete_fields = ("provider", "keys")
    extra = 0
    show_change_link = True
    verbose_name_plural = "provider configs (open one to set its budgets and rate limit)"


MIN_SECRET_SEARCH = 20  # shorter search terms are names and prefixes, not secrets


class KeyStateFilter(admin.SimpleListFilter):
    """Active (and not expired), expired, or inactive: what a request with the key gets."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("expired", "Expired"), ("inactive", "Inactive")]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now),
                                   is_active=True)
        if self.value() == "expired":
            return queryset.filter(is_active=True, expires_at__lte=now)
        if self.value() == "inactive":
            return queryset.filter(is_active=False)
        return queryset


@admin.register(VirtualKey)
class VirtualKeyAdmin(LimitOwnerAdmin):
    owner_kind = "virtual_key"
    form = VirtualKeyForm
    list_display = ("name", "secret_display", "team", "customer", "state_column", "expires_at",
                    "budgets_column", "created_at")
    list_filter = (KeyStateFilter, ("team", admin.RelatedOnlyFieldListFilter),
                   ("customer", admin.RelatedOnlyFieldListFilter), "calendar_aligned")
    list_select_related = ("team", "customer")
    search_fields = ("name", "description", "secret_prefix")
    autocomplete_fields = ("team", "customer")
    readonly_fields = ("secret_display", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "description", "secret_display", "is_active", "expires_at")}),
        ("Owner", {"fields": ("team", "customer"),
                   "description": "A key belongs to a team, a customer, or neither."}),
        ("Limits", {"fields": ("calendar_aligned", "max_concurrent_requests")}),
        ("History", {"fields": ("created_at", "updated_at")}),
    )
    inlines = [ProviderConfigInline, BudgetInline, RateLimitInline]
    actions = ["activate", "deactivate", "rotate_secret", "reset_usage"]

    def get_search_results(self, request: HttpRequest, queryset: Any,
                           search_term: str) -> tuple[Any, bool]:
        """A whole secret pasted into the search finds its key by the secret's hash (only
        the hash is stored): the way to trace a leaked key."""
        found, duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if len(term) >= MIN_SECRET_SEARCH and " " not in term:
            found = found | queryset.filter(secret_hash=digest(term))
        return found, duplicates

    @admin.display(description="state", ordering="is_active")
    def state_column(self, obj: VirtualKey) -> str:
        state = "active"
        if not obj.is_active:
            state = "inactive"
        elif obj.expires_at is not None and obj.expires_at <= timezone.now():
            state = "expired"
        if state == "active":
            return state
        return format_html('<span style="color:var(--error-fg)">{}</span>', state)

    @admin.display(description="secret", ordering="secret_prefix")
    def secret_display(self, obj: VirtualKey) -> str:
        return f"{obj.secret_prefix}…" if obj.secret_prefix else "(generated when saved)"

    # -- the secret is generated on add and shown once -------------------------------------

    def prepare_object(self, request: HttpRequest, obj: Any, previous: Any) -> None:
        if previous is None:
            secret = new_virtual_key_secret()
            obj.secret_hash = digest(secret)
            obj.secret_prefix = display_prefix(secret)
            # Held on this request only, for response_add; never stored.
            request._gateway_new_secret = secret  # type: ignore[attr-defined]

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        if change and "calendar_aligned" in form.changed_data:
            key = form.instance
            limits.realign_budgets(
                get_actor(request),
                Budget.objects.filter(Q(virtual_key=key) | Q(provider_config__virtual_key=key)),
                key.calendar_aligned,
            )

    def response_add(self, request: HttpRequest, obj: Any, post_url_continue: Any = None,
                     ) -> HttpResponse:
        secret = getattr(request, "_gateway_new_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        return render_secret_once(request, self, obj, secret,
                                  title="Virtual key created: copy its secret now",
                                  explanation=SECRET_EXPLANATION)

    # -- rotation: an object-tools button (own URL) and a changelist action ------------------

    def get_urls(self) -> list[Any]:
        opts = self.model._meta
        return [
            path("<path:object_id>/rotate/", self.admin_site.admin_view(self.rotate_view),
                 name=f"{opts.app_label}_{opts.model_name}_rotate"),
            *super().get_urls(),
        ]

    def _rotate_confirmation(self, request: HttpRequest, key: VirtualKey,
                             action_name: str = "") -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": "Rotate the secret?",
            "subtitle": str(key),
            "opts": self.model._meta,
            "object": key,
            "object_url": admin_change_url(key),
            "action_name": action_name,
        }
        return TemplateResponse(
            request, "admin/governance/virtualkey/rotate_confirmation.html", context
        )

    def _rotate(self, request: HttpRequest, key: VirtualKey) -> HttpResponse:
        key, secret = actions.rotate_virtual_key(get_actor(request), key)
        return render_secret_once(request, self, key, secret,
                                  title="Secret rotated: copy the new secret now",
                                  explanation="The previous secret no longer works. "
                                              + SECRET_EXPLANATION)

    def rotate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        key = self.get_object(request, unquote(object_id))
        if key is None:
            return self._get_obj_does_not_exist_redirect(request, self.model._meta, object_id)
        if not self.has_change_permission(request, key):
            raise PermissionDenied
        if request.method == "POST":
            return self._rotate(request, key)
        return self._rotate_confirmation(request, key)

    @admin.action(description="Rotate the secret of the selected key", permissions=["change"])
    def rotate_secret(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one virtual key to rotate its secret.",
                              messages.ERROR)
            return None
        key = queryset.get()
        if request.POST.get("post") == "yes":
            return self._rotate(request, key)
        return self._rotate_confirmation(request, key, action_name="rotate_secret")

    @admin.action(description="Activate the selected virtual keys", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: Any) -> None:
        count = actions.set_virtual_keys_active(get_actor(request), queryset, True)
        self.message_user(request, f"{count} virtual key(s) activated.", messages.SUCCESS)

    @admin.action(description="Deactivate the selected virtual keys", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: Any) -> None:
        count = actions.set_virtual_keys_active(get_actor(request), queryset, False)
        self.message_user(request, f"{count} virtual key(s) deactivated.", messages.SUCCESS)


@admin.register(VirtualKeyProviderConfig)
class ProviderConfigAdmin(LimitOwnerAdmin):
    owner_kind = "provider_config"
    form = ProviderConfigForm
    list_display = ("__str__", "virtual_key", "provider", "weight", "models_column",
                    "allow_all_keys", "budgets_column", "rate_limit_column")
    list_filter = (("provider", admin.RelatedOnlyFieldListFilter), "allow_all_keys")
    list_select_related = ("virtual_key", "provider")
    search_fields = ("virtual_key__name", "provider__name")
    autocomplete_fields = ("virtual_key", "provider", "keys")
    inlines = [BudgetInline, RateLimitInline]

    @admin.display(description="allowed models")
    def models_column(self, obj: VirtualKeyProviderConfig) -> str:
        return model_names_text(obj.allowed_models, empty="none")


# --- model configs ----------------------------------------------------------------------------

@admin.register(ModelConfig)
class ModelConfigAdmin(LimitOwnerAdmin):
    owner_kind = "model_config"
    list_display = ("model_name", "provider_display", "budgets_column", "rate_limit_column",
                    "updated_at")
    list_filter = (("provider", admin.RelatedOnlyFieldListFilter),)
    list_select_related = ("provider",)
    search_fields = ("model_name", "provider__name")
    autocomplete_fields = ("provider",)
    inlines = [BudgetInline, RateLimitInline]

    @admin.display(description="provider", ordering="provider__name")
    def provider_display(self, obj: ModelConfig) -> str:
        return obj.provider.name if obj.provider_id else "any provider"

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "provider":
            field.help_text = "Leave empty for this model on any provider."
        return field


# --- budgets and rate limits on their own -----------------------------------------------------

class OwnerKindFilter(admin.SimpleListFilter):
    title = "owner type"
    parameter_name = "owner"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name.replace("_", " ")) for name in OWNER_FIELDS]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        value = self.value()
        if value in OWNER_FIELDS:
            return queryset.filter(**{f"{value}__isnull": False})
        return queryset


OWNER_SELECT = ("customer", "team", "virtual_key", "provider_config__virtual_key",
                "provider_config__provider", "model_config__provider", "provider")
OWNER_SEARCH = ("customer__name", "team__name", "virtual_key__name", "provider__name",
                "provider_config__virtual_key__name", "model_config__model_name")


class LimitAdmin(AuditedModelAdmin):
    """Budgets and rate limits listed across owners; created and removed on their owners."""

    list_select_related = OWNER_SELECT
    search_fields = OWNER_SEARCH
    actions = ["reset_usage"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="owner")
    def owner_link(self, obj: Budget | RateLimit) -> str:
        return link_to(obj.owner, obj.owner_label())

    @admin.action(description="Reset usage of the selected %(verbose_name_plural)s",
                  permissions=["change"])
    def reset_usage(self, request: HttpRequest, queryset: Any) -> TemplateResponse | None:
        def reset_one(actor: Any, limit: Budget | RateLimit) -> int:
            limits.reset_usage(actor, limit)
            return 1

        return reset_usage_action(self, request, queryset, reset_one)


class BudgetForm(GatewayAdminForm):
    class Meta:
        model = Budget
        fields = ("max_limit", "reset_duration", "calendar_aligned")

    def clean_reset_duration(self) -> str:
        # The owner is not a form field, so Django skips the per-owner unique constraint.
        duration = self.cleaned_data["reset_duration"]
        kind = self.instance.owner_kind
        if kind in MULTI_BUDGET_OWNERS:
            others = (Budget.objects.filter(**{f"{kind}_id": getattr(self.instance, f"{kind}_id")})
                      .exclude(pk=self.instance.pk).values_list("reset_duration", flat=True))
            same = same_window(duration, others)
            if same is not None:
                raise forms.ValidationError(duplicate_window_message(duration, same))
        return duration


@admin.register(Budget)
class BudgetAdmin(LimitAdmin):
    form = BudgetForm
    list_display = ("owner_link", "limit", "window", "usage", "usage_percent_bar", "last_reset",
                    "next_reset", "usage_reset_at")
    list_filter = (OwnerKindFilter, "reset_duration", "calendar_aligned")
    fields = ("owner_link", "max_limit", "reset_duration", "calendar_aligned", "current_usage",
              "usage_percent_bar", "last_reset", "next_reset", "usage_reset_at", "created_at",
              "updated_at")
    readonly_fields = ("owner_link", "current_usage", "usage_percent_bar", "last_reset",
                       "next_reset", "usage_reset_at", "created_at", "updated_at")

    @admin.display(description="next reset")
    def next_reset(self, obj: Budget) -> str:
        return reset_time(budget_limit(obj, ""))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = super().get_readonly_fields(request, obj)
        if obj is not None and obj.owner_kind in ("virtual_key", "provider_config"):
            return (*fields, "calendar_aligned")  # follows the key's flag
        return fields

    @admin.display(description="limit", ordering="max_limit")
    def limit(self, obj: Budget) -> str:
        return money(obj.max_limit)

    @admin.display(description="window", ordering="reset_duration")
    def window(self, obj: Budget) -> str:
        return f"{obj.reset_duration} (calendar)" if obj.calendar_aligned else obj.reset_duration

    @admin.display(description="usage", ordering="current_usage")
    def usage(self, obj: Budget) -> str:
        return money(obj.current_usage)

    @admin.display(description="usage %")
    def usage_percent_bar(self, obj: Budget) -> str:
        return usage_bar(obj.usage_percent)

    def prepare_object(self, request: HttpRequest, obj: Any, previous: Any) -> None:
        owner = obj.owner
        aligned = key_alignment(owner) if owner is not None else None
        prepare_budget_window(obj, previous,
                              aligned=obj.calendar_aligned if aligned is None else aligned)


@admin.register(RateLimit)
class RateLimitAdmin(LimitAdmin):
    form = RateLimitForm
    list_display = ("owner_link", "token_limit", "token_usage", "request_limit",
                    "request_usage", "next_reset")
    list_filter = (OwnerKindFilter, "token_reset_duration", "request_reset_duration")
    fields = ("owner_link", "token_max_limit", "token_reset_duration", "token_usage",
              "token_last_reset", "request_max_limit", "request_reset_duration",
              "request_usage", "request_last_reset", "usage_reset_at", "created_at",
              "updated_at")
    readonly_fields = ("owner_link", "token_usage", "token_last_reset", "request_usage",
                       "request_last_reset", "usage_reset_at", "created_at", "updated_at")

    @admin.display(description="next reset (tokens / requests)")
    def next_reset(self, obj: RateLimit) -> str:
        by_metric = {limit.metric: limit for limit in rate_limits(obj, "")}
        return " / ".join(reset_time(by_metric[metric]) if metric in by_metric else "-"
                          for metric in (Metric.TOKENS, Metric.REQUESTS))

    @admin.display(description="token limit", ordering="token_max_limit")
    def token_limit(self, obj: RateLimit) -> str:
        if obj.token_max_limit is None:
            return "-"
        return f"{obj.token_max_limit:,} per {obj.token_reset_duration}"

    @admin.display(description="request limit", ordering="request_max_limit")
    def request_limit(self, obj: RateLimit) -> str:
        if obj.request_max_limit is None:
            return "-"
        return f"{obj.request_max_limit:,} per {obj.request_reset_duration}"

    @admin.display(description="token usage")
    def token_usage(self, obj: RateLimit) -> str:
        return format_html("{} {}", f"{obj.token_current_usage:,}",
                           usage_bar(obj.token_usage_percent))

    @admin.display(description="request usage")
    def request_usage(self, obj: RateLimit) -> str:
        return format_html("{} {}", f"{obj.request_current_usage:,}",
                           usage_bar(obj.request_usage_percent))


# --- usage records ----------------------------------------------------------------------------

def reset_time(limit: Any) -> str:
    """When ``limit``'s current window ends, in the admin's time zone."""
    from django.utils.formats import date_format

    end = window_reset_at(limit, time.time())
    if end is None:
        return "-"
    moment = timezone.localtime(datetime.datetime.fromtimestamp(end, datetime.UTC))
    return date_format(moment, "DATETIME_FORMAT")


class OwnerFilter(admin.SimpleListFilter):
    """Records of one virtual key, team or customer, named from their current rows (a usage
    record keeps only the owner's id)."""

    field = ""
    owner_model: Any = None
    LOOKUPS_MAX = 500

    @classmethod
    def of(cls, title: str, field: str, owner_model: Any) -> type[OwnerFilter]:
        return type(f"{owner_model.__name__}RecordFilter", (cls,), {
            "title": title, "parameter_name": field, "field": field,
            "owner_model": owner_model})

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(pk), name) for pk, name in
                self.owner_model.objects.order_by("name")
                .values_list("pk", "name")[:self.LOOKUPS_MAX]]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        value = self.value()
        if not value:
            return queryset
        try:
            owner_id = uuid.UUID(value)
        except ValueError:
            return queryset.none()
        return queryset.filter(**{self.field: owner_id})


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyModelAdmin):
    list_display = ("created_at", "virtual_key_name", "provider", "resolved_model",
                    "status_code", "tokens", "cost_display", "latency", "request_id")
    list_filter = (OwnerFilter.of("virtual key", "virtual_key_id", VirtualKey),
                   OwnerFilter.of("team", "team_id", Team),
                   OwnerFilter.of("customer", "customer_id", Customer),
                   "provider", "status_code", "is_stream", "request_type")
    date_hierarchy = "created_at"
    search_fields = ("request_id", "virtual_key_name", "resolved_model", "requested_model")
    show_full_result_count = False
    change_list_template = "admin/governance/usagerecord/change_list.html"
    # Totals are summed over the records a filter, a search or a date drill-down selects,
    # at most this many (an unfiltered sum would read every record on each page view).
    TOTALS_MAX_RECORDS = 1_000_000

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None and self._narrowed(request):
            selected = changelist.queryset.order_by()
            if not selected[self.TOTALS_MAX_RECORDS:self.TOTALS_MAX_RECORDS + 1].exists():
                totals = selected.aggregate(
                    requests=Count("id"), cost=Sum("cost"), prompt=Sum("prompt_tokens"),
                    completion=Sum("completion_tokens"),
                    errors=Count("id", filter=~Q(status_code__range=(200, 299))))
                response.context_data["usage_totals"] = {
                    **totals, "cost": "$" + plain_decimal(totals["cost"] or Decimal(0))}
        return response

    @staticmethod
    def _narrowed(request: HttpRequest) -> bool:
        return any(name not in ("o", "p", "_changelist_filters") for name in request.GET)

    @admin.display(description="tokens (prompt + completion)")
    def tokens(self, obj: UsageRecord) -> str:
        return f"{obj.prompt_tokens:,} + {obj.completion_tokens:,}"

    @admin.display(description="cost", ordering="cost")
    def cost_display(self, obj: UsageRecord) -> str:
        return "$" + plain_decimal(obj.cost)

    @admin.display(description="latency", ordering="latency_ms")
    def latency(self, obj: UsageRecord) -> str:
        return f"{obj.latency_ms:,.1f} ms"


@admin.register(UsageRollup)
class UsageRollupAdmin(ReadOnlyModelAdmin):
    list_display = ("day", "dimension", "name", "request_count", "error_count", "tokens",
                    "cost_display", "updated_at")
    list_filter = ("dimension", "day")
    date_hierarchy = "day"
    search_fields = ("dimension_id", "dimension_name")
    show_full_result_count = False

    @admin.display(description="name", ordering="dimension_name")
    def name(self, obj: UsageRollup) -> str:
        return obj.dimension_name or obj.dimension_id or "(none)"

    @admin.display(description="tokens (prompt + completion)")
    def tokens(self, obj: UsageRollup) -> str:
        return f"{obj.prompt_tokens:,} + {obj.completion_tokens:,}"

    @admin.display(description="cost", ordering="cost")
    def cost_display(self, obj: UsageRollup) -> str:
        return "$" + plain_decimal(obj.cost)
