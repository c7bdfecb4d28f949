"""Writes of pricing overrides, shared by the admin and the management API.

The serializers check types and single fields and normalise the scope ids; these actions
merge an update over the stored row, then validate the result as a whole (the scope-kind
matrix of spec 3.10, the pattern under its match type, and that the referenced virtual key,
provider and provider key exist and agree), so the database check constraint never sees
bad input. Each write is one transaction, audited, and bumps the config version on commit.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction

from gateway import audit, config_version
from gateway.audit import Actor
from gateway.errors import BadRequest
from gateway.models import Provider, ProviderKey
from governance.models import VirtualKey
from pricing.models import SCOPE_REQUIREMENTS, PricingOverride, ScopeKind
from pricing.validators import validate_pattern

# Scope reference → request/response field.
ID_FIELDS = {"virtual_key": "virtual_key_id", "provider": "provider_id",
             "provider_key": "provider_key_id"}
# Per scope kind: the message when a required id is missing, and when a forbidden one is set.
SCOPE_MESSAGES: dict[str, tuple[str, str]] = {
    ScopeKind.GLOBAL: ("", "global scope_kind must not include scope identifiers"),
    ScopeKind.PROVIDER: ("provider_id is required for provider scope_kind",
                         "provider scope_kind only supports provider_id"),
    ScopeKind.PROVIDER_KEY: ("provider_key_id is required for provider_key scope_kind",
                             "provider_key scope_kind only supports provider_key_id"),
    ScopeKind.VIRTUAL_KEY: ("virtual_key_id is required for virtual_key scope_kind",
                            "virtual_key scope_kind only supports virtual_key_id"),
    ScopeKind.VIRTUAL_KEY_PROVIDER: (
        "virtual_key_id and provider_id are required for virtual_key_provider scope_kind",
        "virtual_key_provider scope_kind does not support provider_key_id",
    ),
    ScopeKind.VIRTUAL_KEY_PROVIDER_KEY: (
        "virtual_key_id, provider_id, and provider_key_id are required for "
        "virtual_key_provider_key scope_kind",
        "",
    ),
}
MERGED_FIELDS = ("name", "match_type", "pattern", "request_types", "patch")
STORED_FIELDS = ("scope_kind", *MERGED_FIELDS)


def _bad(field: str, message: str) -> BadRequest:
    return BadRequest(message, fields={field: [message]})


def _check_scope_ids(values: dict[str, Any]) -> None:
    kind = values["scope_kind"]
    required = SCOPE_REQUIREMENTS[kind]
    present = {ref for ref, field in ID_FIELDS.items() if values[field] is not None}
    missing_message, forbidden_message = SCOPE_MESSAGES[kind]
    missing = [ID_FIELDS[ref] for ref in ID_FIELDS if ref in required - present]
    if missing:
        raise BadRequest(missing_message, fields={field: [missing_message] for field in missing})
    extra = [ID_FIELDS[ref] for ref in ID_FIELDS if ref in present - required]
    if extra:
        raise BadRequest(forbidden_message,
                         fields={field: [forbidden_message] for field in extra})


def _check_pattern(values: dict[str, Any]) -> None:
    error = validate_pattern(values["match_type"], values["pattern"])
    if error is not None:
        raise _bad("match_type" if error.startswith("unsupported match_type") else "pattern",
                   error)


def _row(model: type[Any], field: str, value: str, label: str) -> Any:
    try:
        pk = uuid.UUID(value)
    except ValueError:
        raise _bad(field, f"{field} {value!r} is not a valid {label} id") from None
    row = model.objects.filter(pk=pk).first()
    if row is None:
        raise _bad(field, f"{label} {value} does not exist")
    return row


def _resolve_references(values: dict[str, Any]) -> dict[str, Any]:
    """The rows the scope ids name (P3), checking that a key belongs to the provider."""
    refs: dict[str, Any] = dict.fromkeys(ID_FIELDS)
    if values["virtual_key_id"] is not None:
        refs["virtual_key"] = _row(VirtualKey, "virtual_key_id", values["virtual_key_id"],
                                   "virtual key")
    if values["provider_id"] is not None:
        refs["provider"] = Provider.objects.filter(name=values["provider_id"]).first()
        if refs["provider"] is None:
            raise _bad("provider_id", f"invalid provider name: {values['provider_id']}")
    if values["provider_key_id"] is not None:
        key = _row(ProviderKey, "provider_key_id", values["provider_key_id"], "provider key")
        provider = refs["provider"]
        if provider is not None and key.provider_id != provider.pk:
            raise _bad("provider_key_id",
                       f"provider key {key.pk} belongs to provider {key.provider.name}, "
                       f"not {provider.name}")
        refs["provider_key"] = key
    return refs


def _validate(values: dict[str, Any]) -> dict[str, Any]:
    _check_scope_ids(values)
    _check_pattern(values)
    return _resolve_references(values)


def _apply(override: PricingOverride, values: dict[str, Any], refs: dict[str, Any]) -> None:
    for field in STORED_FIELDS:
        setattr(override, field, values[field])
    for ref, row in refs.items():
        setattr(override, ref, row)


def _stored_values(override: PricingOverride) -> dict[str, Any]:
    return {
        "name": override.name,
        "scope_kind": override.scope_kind,
        "virtual_key_id": str(override.virtual_key_id) if override.virtual_key_id else None,
        "provider_id": override.provider.name if override.provider_id else None,
        "provider_key_id": str(override.provider_key_id) if override.provider_key_id else None,
        "match_type": override.match_type,
        "pattern": override.pattern,
        "request_types": override.request_types,
        "patch": override.patch,
    }


def create_pricing_override(actor: Actor, data: dict[str, Any]) -> PricingOverride:
    """``data`` is validated ``PricingOverrideCreateInput`` output; no patch means ``{}``."""
    values = {
        "name": data["name"],
        "scope_kind": data["scope_kind"],
        **{field: data.get(field) for field in ID_FIELDS.values()},
        "match_type": data["match_type"],
        "pattern": data["pattern"],
        "request_types": data["request_types"],
        "patch": data.get("patch") or {},
    }
    with transaction.atomic():
        refs = _validate(values)
        override = PricingOverride()
        _apply(override, values, refs)
        override.save()
        audit.record_create(actor, override)
        config_version.bump_on_commit()
    return override


def update_pricing_override(actor: Actor, override: PricingOverride,
                            data: dict[str, Any]) -> PricingOverride:
    """Merge ``data`` (validated ``PricingOverrideUpdateInput`` output) over the stored row.

    Absent or null fields are kept, except the scope ids, where an explicit null (or ``""``)
    clears. A ``scope_kind`` clears all three ids first, so only the ids sent in the same
    request survive. ``patch`` replaces the stored patch in full; ``{}`` clears it.
    """
    with transaction.atomic():
        override = PricingOverride.objects.select_for_update().get(pk=override.pk)
        before = audit.snapshot(override)
        values = _stored_values(override)
        for field in MERGED_FIELDS:
            if data.get(field) is not None:
                values[field] = data[field]
        if data.get("scope_kind") is not None:
            values["scope_kind"] = data["scope_kind"]
            values.update(dict.fromkeys(ID_FIELDS.values()))
        for field in ID_FIELDS.values():
            if field in data:
                values[field] = data[field]
        refs = _validate(values)
        _apply(override, values, refs)
        override.save()
        audit.record_update(actor, override, before)
        config_version.bump_on_commit()
    return override
