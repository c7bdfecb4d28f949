"""Shared admin machinery: audited saves and deletes, limit inlines, usage rendering.

Every write made through the admin goes through :func:`gateway.actions.save_object` /
:func:`gateway.actions.delete_object` (or a governance action) with the operator as actor, so
the audit log and the config version see admin writes exactly as they see API writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ERROR_FLAG
from django.contrib.admin.widgets import AutocompleteSelect, AutocompleteSelectMultiple
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from gateway import audit, config_version
from gateway.actions import delete_object, lock_rows, save_object
from gateway.audit import Actor
from gateway.formats import plain_decimal
from governance import limits
from governance.durations import same_window
from governance.models import (
    MULTI_BUDGET_OWNERS,
    OWNER_FIELDS,
    Budget,
    RateLimit,
    VirtualKey,
    VirtualKeyProviderConfig,
)

ADMIN_SOURCE = "admin"
BR = mark_safe("<br>")  # a constant separator for format_html_join


def get_actor(request: HttpRequest) -> Actor:
    return Actor(request.user, ADMIN_SOURCE)


def with_default_ordering(queryset: models.QuerySet[Any]) -> models.QuerySet[Any]:
    """Meta.ordering is dropped from GROUP BY queries (annotated counts); restore it, or
    the autocomplete views paginate an unordered list."""
    return queryset.order_by(*queryset.model._meta.ordering)


def admin_change_url(obj: models.Model | None) -> str | None:
    if obj is None or obj.pk is None:
        return None
    opts = obj._meta
    try:
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return None


def link_to(obj: models.Model | None, label: object = None) -> str:
    """An escaped link to ``obj``'s change page (plain text when it has none), or "-"."""
    if obj is None:
        return "-"
    url = admin_change_url(obj)
    text = obj if label is None else label
    return format_html('<a href="{}">{}</a>', url, text) if url else format_html("{}", text)


def render_secret_once(request: HttpRequest, model_admin: admin.ModelAdmin, obj: models.Model,
                       secret: str, *, title: str, explanation: str) -> HttpResponse:
    """Render the one page that ever shows ``secret``. It is not stored anywhere, so
    reloading or navigating back never shows it again."""
    opts = model_admin.model._meta
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "subtitle": str(obj),
        "opts": opts,
        "object": obj,
        "object_url": admin_change_url(obj),
        "changelist_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
        "secret": secret,
        "explanation": explanation,
    }
    response = TemplateResponse(request, "admin/gateway/secret_once.html", context)
    response["Cache-Control"] = "no-store, no-cache, must-revalidate, private, max-age=0"
    response["Pragma"] = "no-cache"
    return response


# --- forms ----------------------------------------------------------------------------------

class GatewayAdminForm(forms.ModelForm):
    """A ModelForm for the shared model validators.

    It keeps blank JSON fields at their model default (Django's form ``JSONField`` turns an
    empty input into ``None``, which a non-null model field would fail to store; an empty
    ``allowed_models`` means ``[]``, not NULL), and it shows the shared validators' own
    messages for JSON fields. Stored decimals are shown without the zeros their nine places
    add (``50``, not ``50.000000000``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            value = self.initial.get(name)
            if isinstance(field, forms.DecimalField) and isinstance(value, Decimal):
                self.initial[name] = plain_decimal(value)

    def _update_errors(self, errors: ValidationError) -> None:
        """The model's own checks run on what the form could clean: a field that failed its
        own validation is empty there, and a model check would add a second, wrong message
        to it ("is required" under "at most 500 characters"). Those are left out."""
        if hasattr(errors, "error_dict"):
            kept = {field: messages for field, messages in errors.error_dict.items()
                    if field not in self._errors or field not in self.fields}
            if not kept:
                return
            errors = ValidationError(kept)
        super()._update_errors(errors)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        for field in self._meta.model._meta.concrete_fields:
            if not isinstance(field, models.JSONField) or field.name not in cleaned:
                continue
            if cleaned[field.name] is None and not field.null:
                cleaned[field.name] = field.get_default()
            self._run_shared_validators(field, cleaned[field.name])
        return cleaned

    def _run_shared_validators(self, field: models.Field, value: Any) -> None:
        # Model.full_clean would swap a validator's message for the field's own message of the
        # same code, so the shared "invalid" messages of a JSON field would all read "Value
        # must be valid JSON."; run them here, where the message is kept (the field then
        # counts as failed and model validation skips it).
        if field.blank and value in field.empty_values:
            return
        for validator in field.validators:
            try:
                validator(value)
            except ValidationError as exc:
                self.add_error(field.name, ValidationError(exc.messages))
                return


# --- autocomplete widgets that survive invalid ids ------------------------------------------

class ModelNamesField(forms.CharField):
    """A list of model names typed as an operator would: ``gpt-4o, gpt-4o-mini`` (commas or
    new lines) or ``*``; a JSON array is taken too. Shown the same way. What an empty list
    means is the form's to say (``empty_means``), next to the field."""

    MAX_NAMES = 1000

    def __init__(self, *, empty_means: str, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", 100_000)
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 2, "cols": 30}))
        kwargs.setdefault("help_text", f"Model names separated by commas or new lines; "
                                       f"* for every model; empty for {empty_means}.")
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return ", ".join(str(name) for name in value)
        return value

    def to_python(self, value: Any) -> Any:
        if isinstance(value, list):
            return value
        text = (super().to_python(value) or "").strip()
        if text.startswith(("[", "{")):
            import json

            try:
                parsed = json.loads(text)
            except ValueError:
                raise ValidationError("is not valid JSON; or type the names separated by "
                                      "commas", code="invalid") from None
            return parsed  # as typed: the model's validator says what is wrong with it
        names = [part.strip() for part in text.replace("\n", ",").split(",")]
        names = list(dict.fromkeys(name for name in names if name))  # once each, in order
        if len(names) > self.MAX_NAMES:
            raise ValidationError(f"at most {self.MAX_NAMES} model names", code="invalid")
        return names

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return self.to_python(data) != list(initial or [])
        except ValidationError:
            return True


def model_names_text(names: Iterable[str] | None, *, empty: str) -> str:
    """A list of allowed models for a changelist column: ``every model`` for ``*``."""
    names = list(names or [])
    if not names:
        return empty
    if names == ["*"]:
        return "every model"
    return ", ".join(names)


def _valid_ids(widget: Any, value: Iterable[Any]) -> list[str]:
    remote = widget.field.remote_field
    target = remote.model._meta.get_field(getattr(remote, "field_name", None)
                                          or remote.model._meta.pk.name)
    kept = []
    for item in value:
        try:
            target.to_python(item)
        except ValidationError:
            continue
        kept.append(item)
    return kept


class SafeAutocompleteSelect(AutocompleteSelect):
    """Django's widget queries the submitted value as an id when it re-renders a form with
    errors, so a malformed id (``team=not-a-uuid``) becomes a 500; drop such values."""

    def optgroups(self, name: str, value: Any, attr: Any = None) -> Any:
        return super().optgroups(name, _valid_ids(self, value), attr)


class SafeAutocompleteSelectMultiple(AutocompleteSelectMultiple):
    def optgroups(self, name: str, value: Any, attr: Any = None) -> Any:
        return super().optgroups(name, _valid_ids(self, value), attr)


class SafeAutocompleteMixin:
    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if "widget" not in kwargs and db_field.name in self.get_autocomplete_fields(request):
            kwargs["widget"] = SafeAutocompleteSelect(
                db_field, self.admin_site, using=kwargs.get("using"))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if "widget" not in kwargs and db_field.name in self.get_autocomplete_fields(request):
            kwargs["widget"] = SafeAutocompleteSelectMultiple(
                db_field, self.admin_site, using=kwargs.get("using"))
        return super().formfield_for_manytomany(db_field, request, **kwargs)  # type: ignore[misc]


# --- audited admin --------------------------------------------------------------------------

def _refetch(obj: models.Model) -> models.Model:
    return type(obj)._default_manager.get(pk=obj.pk)


def _save_m2m_audited(actor: Actor, obj: models.Model, save_m2m: Callable[[], None]) -> None:
    """Save a form's many-to-many data and audit what it changed (an update event)."""
    if not obj._meta.many_to_many:
        save_m2m()
        return
    before = audit.snapshot(obj)
    save_m2m()
    audit.record_update(actor, obj, before)


class AuditedInlineMixin(SafeAutocompleteMixin):
    """For inlines of an :class:`AuditedModelAdmin`; ``prepare_object`` runs before each save.

    ``previous`` is the stored row of a changed object, None for a new one.
    """

    form = GatewayAdminForm

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        # Enforce max_num on submitted data too: extra forms would hit a unique constraint.
        kwargs.setdefault("validate_max", True)
        formset = super().get_formset(request, obj, **kwargs)  # type: ignore[misc]
        formset.admin_inline = self
        return formset

    def prepare_object(self, request: HttpRequest, obj: models.Model, parent: models.Model,
                       previous: models.Model | None) -> None:
        """Fill in what the form does not carry; the default does nothing."""


class AuditedModelAdmin(SafeAutocompleteMixin, admin.ModelAdmin):
    """A ModelAdmin whose saves and deletes, inline children included, are audited."""

    form = GatewayAdminForm

    def prepare_object(self, request: HttpRequest, obj: models.Model,
                       previous: models.Model | None) -> None:
        """Fill in what the form does not carry before ``obj`` is saved; a hook."""

    def history_view(self, request: HttpRequest, object_id: str,
                     extra_context: Any = None) -> HttpResponse:
        """HISTORY opens the object's audit events: every change made through the admin,
        the API and the actions (a secret's rotation included), each with what it changed.
        Django's own log saw only the admin's form saves."""
        from urllib.parse import urlencode

        return HttpResponseRedirect(reverse("admin:gateway_auditevent_changelist") + "?"
                                    + urlencode({"q": object_id}))

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        previous = _refetch(obj) if change else None
        before = audit.snapshot(previous) if previous is not None else None
        self.prepare_object(request, obj, previous)
        save_object(get_actor(request), obj, before)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        _save_m2m_audited(get_actor(request), form.instance, form.save_m2m)
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        actor = get_actor(request)
        inline = getattr(formset, "admin_inline", None)
        formset.save(commit=False)
        for obj in formset.deleted_objects:
            delete_object(actor, obj)
        for obj in formset.new_objects:
            if inline is not None:
                inline.prepare_object(request, obj, formset.instance, None)
            save_object(actor, obj, None)
        for obj, _changed_fields in formset.changed_objects:
            previous = _refetch(obj)
            if inline is not None:
                inline.prepare_object(request, obj, formset.instance, previous)
            save_object(actor, obj, audit.snapshot(previous))
        for inline_form in formset.saved_forms:
            _save_m2m_audited(actor, inline_form.instance, inline_form.save_m2m)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        delete_object(get_actor(request), obj)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        actor = get_actor(request)
        with transaction.atomic():
            for obj in queryset:
                delete_object(actor, obj)


class ReadOnlyModelAdmin(admin.ModelAdmin):
    """Viewable by staff; nobody adds, changes or deletes through the admin."""

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        """A date drill-down (``date_hierarchy``) to a year, month or day that is not a
        small number goes back to the list with Django's "invalid lookup" flag, as a bad
        filter does: Django itself failed with a 500 on a year too large for a date."""
        if self.date_hierarchy:  # (Django computes the next year, month or day: 9998 at most)
            for part, highest in (("year", 9998), ("month", 12), ("day", 31)):
                value = request.GET.get(f"{self.date_hierarchy}__{part}")
                if value is not None and not (value.isascii() and value.isdigit()
                                              and 1 <= int(value) <= highest):
                    return HttpResponseRedirect(f"{request.path}?{ERROR_FLAG}=1")
        return super().changelist_view(request, extra_context)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_staff)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_active and request.user.is_staff)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def flag_actions(field: str, *, on_label: str, off_label: str) -> list[Callable[..., None]]:
    """Two audited bulk actions that set the boolean ``field`` to True / False."""

    def build(value: bool, label: str) -> Callable[..., None]:
        def action(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: Any) -> None:
            actor = get_actor(request)
            count = 0
            with transaction.atomic():
                for obj in lock_rows(queryset):
                    if getattr(obj, field) == value:
                        continue
                    before = audit.snapshot(obj)
                    setattr(obj, field, value)
                    save_object(actor, obj, before)
                    count += 1
            model_admin.message_user(request, f"{label}: {count} changed.", messages.SUCCESS)

        action.__name__ = f"set_{field}_{str(value).lower()}"
        return admin.action(description=f"{label} selected %(verbose_name_plural)s",
                            permissions=["change"])(action)

    return [build(True, on_label), build(False, off_label)]


# --- usage rendering ------------------------------------------------------------------------

def usage_bar(percent: float | None) -> str:
    """A small bar and the percentage, green below 80 %, amber below 100 %, red from 100 %."""
    if percent is None:
        return "-"
    color = "#2e7d32" if percent < 80 else "#ef6c00" if percent < 100 else "#c62828"
    width = max(0.0, min(percent, 100.0))
    return format_html(
        '<span class="gw-usage" title="{}%" style="white-space:nowrap">'
        '<span style="display:inline-block;width:60px;height:8px;background:#e0e0e0;'
        'vertical-align:middle;border-radius:2px">'
        '<span style="display:block;width:{}%;height:8px;background:{};border-radius:2px">'
        '</span></span> <span style="color:{}">{}%</span></span>',
        f"{percent:.2f}", f"{width:.1f}", color, color, f"{percent:.1f}",
    )


NANO = Decimal("0.000000001")  # the smallest amount stored


def money(value: Any) -> str:
    """Dollars to the cent; an amount under a cent (but not 0) to its first significant
    digits, down to the nano-dollar ($0.0006, not $0.00)."""
    if value is None:
        return "-"
    if value and abs(value) < Decimal("0.01"):
        return "$" + plain_decimal(Decimal(value).quantize(NANO))
    return f"${value:,.2f}"


def budget_summary(budgets: Iterable[Budget]) -> str:
    """One line per budget: usage of limit per window, with the usage bar."""
    rows = [
        (money(budget.current_usage), money(budget.max_limit), budget.reset_duration,
         usage_bar(budget.usage_percent))
        for budget in budgets
    ]
    if not rows:
        return "-"
    return format_html_join(BR, "{} / {} per {} {}", rows)


def rate_limit_summary(rate_limits: Iterable[RateLimit]) -> str:
    rows = []
    for limit in rate_limits:
        if limit.token_max_limit is not None:
            rows.append((f"{limit.token_current_usage:,}", f"{limit.token_max_limit:,}",
                         "tokens", limit.token_reset_duration,
                         usage_bar(limit.token_usage_percent)))
        if limit.request_max_limit is not None:
            rows.append((f"{limit.request_current_usage:,}", f"{limit.request_max_limit:,}",
                         "requests", limit.request_reset_duration,
                         usage_bar(limit.request_usage_percent)))
    if not rows:
        return "-"
    return format_html_join(BR, "{} / {} {} per {} {}", rows)


# --- budget and rate limit inlines -------------------------------------------------------

def prepare_budget_window(budget: Budget, previous: Budget | None, *, aligned: bool) -> None:
    """Set a budget's window from its alignment: a new budget starts its window now (or at
    the current calendar boundary); switching alignment on snaps the window and zeroes the
    usage, as the API does; a new duration on an aligned budget moves to its boundary."""
    now = timezone.now()
    budget.calendar_aligned = aligned
    if previous is None:
        budget.last_reset = limits.budget_window_start(budget.reset_duration, aligned, now)
        return
    if aligned and not previous.calendar_aligned:
        budget.last_reset = limits.budget_window_start(budget.reset_duration, True, now)
        budget.current_usage = Decimal(0)
    elif aligned and previous.reset_duration != budget.reset_duration:
        budget.last_reset = limits.budget_window_start(budget.reset_duration, True, now)


def key_alignment(parent: models.Model) -> bool | None:
    """The calendar flag a virtual key imposes on its own and its provider configs' budgets."""
    if isinstance(parent, VirtualKey):
        return parent.calendar_aligned
    if isinstance(parent, VirtualKeyProviderConfig):
        return parent.virtual_key.calendar_aligned
    return None


def duplicate_window_message(duration: str, same: str) -> str:
    spelled = "" if same == duration else f" (the window of {same})"
    return f"duplicate reset_duration {duration}{spelled}: one budget per window duration"


class BudgetInlineFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        seen: list[str] = []
        for form in self.forms:
            if not hasattr(form, "cleaned_data") or self._should_delete_form(form):
                continue
            duration = form.cleaned_data.get("reset_duration")
            if not duration:
                continue
            same = same_window(duration, seen)
            if same is not None:
                form.add_error("reset_duration", duplicate_window_message(duration, same))
            seen.append(duration)


class BudgetInline(AuditedInlineMixin, admin.TabularInline):
    model = Budget
    formset = BudgetInlineFormSet
    extra = 0
    fields = ("max_limit", "reset_duration", "calendar_aligned", "current_usage",
              "usage", "last_reset")
    readonly_fields = ("current_usage", "usage", "last_reset")
    verbose_name_plural = "budgets"

    def __init__(self, parent_model: type[models.Model], admin_site: admin.AdminSite) -> None:
        super().__init__(parent_model, admin_site)
        self.fk_name = self._owner_field(parent_model)
        if self.fk_name in ("virtual_key", "provider_config"):
            # The key's calendar_aligned flag decides for these budgets.
            self.fields = tuple(name for name in self.fields if name != "calendar_aligned")
        if self.fk_name not in MULTI_BUDGET_OWNERS:
            self.max_num = 1

    @staticmethod
    def _owner_field(parent_model: type[models.Model]) -> str:
        for name in OWNER_FIELDS:
            if Budget._meta.get_field(name).related_model is parent_model:
                return name
        raise ValueError(f"{parent_model.__name__} does not own budgets")

    @admin.display(description="usage %")
    def usage(self, obj: Budget) -> str:
        return usage_bar(obj.usage_percent) if obj.pk else "-"

    def prepare_object(self, request: HttpRequest, obj: models.Model, parent: models.Model,
                       previous: models.Model | None) -> None:
        if not isinstance(obj, Budget):
            return
        aligned = key_alignment(parent)
        prepare_budget_window(obj, previous if isinstance(previous, Budget) else None,
                              aligned=obj.calendar_aligned if aligned is None else aligned)


class RateLimitForm(GatewayAdminForm):
    class Meta:
        model = RateLimit
        fields = ("token_max_limit", "token_reset_duration",
                  "request_max_limit", "request_reset_duration")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        for window in ("token", "request"):
            duration = cleaned.get(f"{window}_reset_duration")
            if duration == "":
                cleaned[f"{window}_reset_duration"] = duration = None
            if cleaned.get(f"{window}_max_limit") is not None and not duration \
                    and f"{window}_reset_duration" not in self.errors:
                self.add_error(f"{window}_reset_duration",
                               f"is required when {window}_max_limit is set")
        if (cleaned.get("token_max_limit") is None and cleaned.get("request_max_limit") is None
                and not self.errors):
            raise forms.ValidationError("set a token limit, a request limit or both")
        return cleaned


class RateLimitInline(AuditedInlineMixin, admin.StackedInline):
    model = RateLimit
    form = RateLimitForm
    extra = 0
    max_num = 1
    fields = (("token_max_limit", "token_reset_duration", "token_usage"),
              ("request_max_limit", "request_reset_duration", "request_usage"))
    readonly_fields = ("token_usage", "request_usage")
    verbose_name = "rate limit"
    verbose_name_plural = "rate limit"

    def __init__(self, parent_model: type[models.Model], admin_site: admin.AdminSite) -> None:
        super().__init__(parent_model, admin_site)
        self.fk_name = BudgetInline._owner_field(parent_model)

    @admin.display(description="token usage")
    def token_usage(self, obj: RateLimit) -> str:
        if not obj.pk or obj.token_max_limit is None:
            return "-"
        return format_html("{} {}", f"{obj.token_current_usage:,}",
                           usage_bar(obj.token_usage_percent))

    @admin.display(description="request usage")
    def request_usage(self, obj: RateLimit) -> str:
        if not obj.pk or obj.request_max_limit is None:
            return "-"
        return format_html("{} {}", f"{obj.request_current_usage:,}",
                           usage_bar(obj.request_usage_percent))

    def prepare_object(self, request: HttpRequest, obj: models.Model, parent: models.Model,
                       previous: models.Model | None) -> None:
        if previous is None:
            now = timezone.now()
            obj.token_last_reset = now  # type: ignore[attr-defined]
            obj.request_last_reset = now  # type: ignore[attr-defined]


CONFIRM_LIST_MAX = 100  # objects a confirmation page names; it counts the rest


def confirmation(request: HttpRequest, model_admin: admin.ModelAdmin, queryset: Any, *,
                 action: str, title: str, verb: str, explanation: str
                 ) -> TemplateResponse | None:
    """The page that asks before a bulk action changing live state runs; None once the
    operator confirmed it (the page posts the action again with ``confirmed=yes``)."""
    if request.POST.get("confirmed") == "yes":
        return None
    from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

    context = {
        **model_admin.admin_site.each_context(request),
        "title": title, "verb": verb, "explanation": explanation, "action": action,
        "opts": model_admin.model._meta, "count": queryset.count(),
        "objects": [audit.describe(obj) for obj in queryset[:CONFIRM_LIST_MAX]],
        "selected": request.POST.getlist(ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across") == "1",
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/gateway/confirm_action.html", context)


RESET_EXPLANATION = (
    "Resetting usage sets the current window's counters of every budget and rate limit of "
    "the selected objects to zero and starts their windows again now: requests the limits "
    "refused will be admitted again. Usage records are kept. This cannot be undone.")


def reset_usage_action(model_admin: admin.ModelAdmin, request: HttpRequest, queryset: Any,
                       reset: Callable[[Actor, Any], int]) -> TemplateResponse | None:
    """"Reset usage" on the selected objects once confirmed: ``reset(actor, obj)`` resets
    one and says how many limits it reset; one transaction, one config version bump."""
    ask = confirmation(request, model_admin, queryset, action="reset_usage",
                       title="Reset usage", verb="reset their usage",
                       explanation=RESET_EXPLANATION)
    if ask is not None:
        return ask
    actor = get_actor(request)
    count = 0
    with transaction.atomic():
        for obj in queryset:
            count += reset(actor, obj)
        config_version.bump_on_commit()
    model_admin.message_user(request, f"Usage reset on {count} limit(s).", messages.SUCCESS)
    return None


class LimitOwnerAdmin(AuditedModelAdmin):
    """An owner of budgets and a rate limit: both inlines, usage columns, "Reset usage"."""

    owner_kind: str = ""
    actions = ["reset_usage"]

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).prefetch_related("budgets", "ratelimits")

    @admin.display(description="budgets (usage of limit)")
    def budgets_column(self, obj: Any) -> str:
        return budget_summary(obj.budgets.all())

    @admin.display(description="rate limit (usage of limit)")
    def rate_limit_column(self, obj: Any) -> str:
        return rate_limit_summary(obj.ratelimits.all())

    @admin.action(description="Reset usage of the selected %(verbose_name_plural)s",
                  permissions=["change"])
    def reset_usage(self, request: HttpRequest, queryset: Any) -> TemplateResponse | None:
        return reset_usage_action(
            self, request, queryset,
            lambda actor, owner: limits.reset_owner_usage(actor, self.owner_kind, owner))
