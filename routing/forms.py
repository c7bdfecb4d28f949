"""The admin's "Try routing" form: the admin twin of ``POST .../routing-rules/evaluate``."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib.admin.sites import AdminSite

from gateway.admin_base import SafeAutocompleteSelect
from gateway.models import Provider
from governance.models import VirtualKey
from pricing.validators import BASE_REQUEST_TYPES
from routing import evaluation
from routing.cel import ENGINE_NAMES
from routing.engine import Capacity
from routing.models import RoutingRule

JSON_ATTRS = {"rows": 4, "cols": 60, "spellcheck": "false", "class": "vLargeTextField",
              "style": "font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace"}

FIELDSETS = (
    ("Request", {"fields": ("virtual_key", ("provider", "model"), "request_type")}),
    ("Headers and query parameters", {"fields": ("headers", "query_params")}),
    ("Capacity", {
        "fields": (("budget_used", "tokens_used", "request"),),
        "description": "Percent used (0-100, may exceed 100) of the tightest budget, token "
                       "limit and request limit. Applied as given at every chain step.",
    }),
    ("Evaluation", {"fields": ("engine", "seed")}),
)


def _percent(label: str) -> forms.FloatField:
    return forms.FloatField(label=label, required=False, min_value=0.0, initial=0,
                            widget=forms.NumberInput(attrs={"step": "any", "style":
                                                            "width: 6em"}))


class TryRoutingForm(forms.Form):
    virtual_key = forms.ModelChoiceField(
        queryset=VirtualKey.objects.select_related("team__customer", "customer"),
        required=False, empty_label="(none)",
        help_text="Rules scoped to the key, its team and its customer are tried before the "
                  "global ones. Without a key only global rules apply.",
    )
    provider = forms.ChoiceField(required=False, help_text="The request's provider.")
    model = forms.CharField(max_length=512, help_text='The request\'s model; "provider/model" '
                            "is split when no provider is chosen.")
    request_type = forms.ChoiceField(choices=[(name, name) for name in BASE_REQUEST_TYPES],
                                     initial=evaluation.DEFAULT_REQUEST_TYPE)
    headers = forms.CharField(
        required=False, widget=forms.Textarea(attrs=JSON_ATTRS),
        help_text='A JSON object of strings, e.g. {"x-tier": "premium"}. Names are '
                  "case-insensitive.",
    )
    query_params = forms.CharField(
        label="Query parameters", required=False, widget=forms.Textarea(attrs=JSON_ATTRS),
        help_text='A JSON object of strings, e.g. {"region": "eu"}.',
    )
    budget_used = _percent("Budget used %")
    tokens_used = _percent("Tokens used %")
    request = _percent("Requests used %")
    engine = forms.ChoiceField(
        label="CEL engine", required=False,
        choices=[("", "(gateway setting)"), *((name, name) for name in ENGINE_NAMES)],
    )
    seed = forms.IntegerField(
        required=False, min_value=-(2**63), max_value=2**63 - 1,
        help_text="Optional: makes the weighted choice between targets reproducible.",
    )

    def __init__(self, *args: Any, admin_site: AdminSite | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["provider"].choices = [
            ("", "(none)"),
            *((name, name) for name in Provider.objects.order_by("name")
              .values_list("name", flat=True)),
        ]
        if admin_site is not None:
            # The rule admin lists virtual_key in autocomplete_fields, so its autocomplete
            # endpoint serves this field too.
            field = self.fields["virtual_key"]
            field.widget = SafeAutocompleteSelect(RoutingRule._meta.get_field("virtual_key"),
                                                  admin_site)
            field.widget.choices = field.choices

    def _json_map(self, name: str) -> dict[str, str]:
        raw = (self.cleaned_data.get(name) or "").strip()
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Invalid JSON: {exc}") from None
        try:
            return evaluation.check_string_map(value, name)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_headers(self) -> dict[str, str]:
        return self._json_map("headers")

    def clean_query_params(self) -> dict[str, str]:
        return self._json_map("query_params")

    def evaluation_arguments(self) -> dict[str, Any]:
        """The keyword arguments of :func:`routing.evaluation.evaluate_request`."""
        data = self.cleaned_data
        provider, model = evaluation.split_provider_model(data.get("provider") or "",
                                                          data["model"].strip())
        return {
            "virtual_key": data.get("virtual_key"),
            "provider": provider,
            "model": model,
            "request_type": data.get("request_type") or evaluation.DEFAULT_REQUEST_TYPE,
            "headers": data.get("headers") or {},
            "query_params": data.get("query_params") or {},
            "capacity": Capacity(budget_used=data.get("budget_used") or 0.0,
                                 tokens_used=data.get("tokens_used") or 0.0,
                                 request=data.get("request") or 0.0),
            "engine_name": data.get("engine") or None,
            "seed": data.get("seed"),
        }
