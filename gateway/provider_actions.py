"""Writes of providers, their keys and model aliases (admin and API)."""

from __future__ import annotations

from typing import Any

from django.db import models, transaction

from gateway import audit, config_version
from gateway.actions import ensure_unique
from gateway.audit import Actor
from gateway.errors import BadRequest, Conflict
from gateway.models import ModelAlias, ModelAliasRoute, Provider, ProviderKey

PROVIDER_FIELDS = (
    "kind", "base_url", "api_version", "price_provider", "connect_timeout_ms",
    "first_byte_timeout_ms", "idle_timeout_ms", "total_timeout_ms", "max_retries",
    "backoff_initial_ms", "backoff_max_ms", "failure_threshold", "open_seconds",
)
KEY_FIELDS = ("name", "weight", "allowed_models")


def _check_provider(provider: Provider) -> None:
    from django.core.exceptions import ValidationError

    try:
        provider.clean()
    except ValidationError as exc:
        fields = {name: [str(message) for message in messages]
                  for name, messages in exc.message_dict.items()}
        message = "; ".join(f"{name} {' '.join(msgs)}" for name, msgs in fields.items())
        raise BadRequest(message, fields=fields) from None


def _apply(obj: models.Model, data: dict[str, Any], fields: tuple[str, ...]) -> None:
    for field in fields:
        if field in data:
            setattr(obj, field, data[field])
    if "enabled" in data:
        obj.is_enabled = data["enabled"]  # type: ignore[attr-defined]


def create_provider(actor: Actor, data: dict[str, Any]) -> Provider:
    with transaction.atomic():
        ensure_unique(Provider.objects.filter(name=data["name"]),
                      f'A provider named "{data["name"]}" already exists')
        provider = Provider(name=data["name"])
        _apply(provider, data, PROVIDER_FIELDS)
        _check_provider(provider)
        provider.save()
        audit.record_create(actor, provider)
        for entry in data.get("keys") or []:
            create_key(actor, provider, entry, bump=False)
        config_version.bump_on_commit()
    return provider


def update_provider(actor: Actor, provider: Provider, data: dict[str, Any]) -> Provider:
    with transaction.atomic():
        provider = Provider.objects.select_for_update().get(pk=provider.pk)
        before = audit.snapshot(provider)
        old_name = provider.name
        if "name" in data and data["name"] != provider.name:
            ensure_unique(Provider.objects.filter(name=data["name"]),
                          f'A provider named "{data["name"]}" already exists', exclude=provider.pk)
            provider.name = data["name"]
        _apply(provider, data, PROVIDER_FIELDS)
        _check_provider(provider)
        provider.save()
        audit.record_update(actor, provider, before)
        if provider.name != old_name:  # fallbacks name it by name: they follow
            from routing.actions import rename_fallback_provider

            rename_fallback_provider(actor, old_name, provider.name)
        if data.get("keys") is not None:
            _reconcile_keys(actor, provider, data["keys"])
        config_version.bump_on_commit()
    return provider


def delete_provider(actor: Actor, provider: Provider) -> None:
    users = _provider_users(provider)
    if users:
        raise Conflict(f'Provider "{provider.name}" is still used by {", ".join(users)}; '
                       "remove those references first")
    with transaction.atomic():
        audit.record_delete(actor, provider)
        provider.delete()
        config_version.bump_on_commit()


def _provider_users(provider: Provider) -> list[str]:
    from routing.actions import rules_falling_back_to

    checks = (
        ("virtual key provider configs", provider.virtual_key_configs.count()),
        ("model configs", provider.model_configs.count()),
        ("model alias routes", provider.alias_routes.count()),
        ("routing targets", provider.routing_targets.count()),
        ("routing rule fallbacks", len(rules_falling_back_to(provider.name))),
    )
    return [f"{count} {label}" for label, count in checks if count]


def _unique_key_name(provider: Provider, name: str, exclude: Any = None) -> None:
    ensure_unique(ProviderKey.objects.filter(provider=provider, name=name),
                  f'Provider "{provider.name}" already has a key named "{name}"',
                  exclude=exclude)


def create_key(actor: Actor, provider: Provider, data: dict[str, Any], *,
               bump: bool = True) -> ProviderKey:
    with transaction.atomic():
        _unique_key_name(provider, data["name"])
        key = ProviderKey(provider=provider)
        _apply(key, data, KEY_FIELDS)
        key.set_value(data["value"])
        key.save()
        audit.record_create(actor, key)
        if bump:
            config_version.bump_on_commit()
    return key


def update_key(actor: Actor, key: ProviderKey, data: dict[str, Any], *,
               bump: bool = True) -> ProviderKey:
    with transaction.atomic():
        before = audit.snapshot(key)
        if "name" in data:
            _unique_key_name(key.provider, data["name"], exclude=key.pk)
        _apply(key, data, KEY_FIELDS)
        if data.get("value"):
            key.set_value(data["value"])
        key.save()
        audit.record_update(actor, key, before)
        if bump:
            config_version.bump_on_commit()
    return key


def _reconcile_keys(actor: Actor, provider: Provider, entries: list[dict[str, Any]]) -> None:
    """Entries with an ``id`` update that key (value optional: absent keeps it); entries
    without one create a key (value required); keys not listed are deleted."""
    existing = {key.pk: key for key in provider.keys.all()}
    listed = {entry["id"] for entry in entries if entry.get("id")}
    for key_id in listed - set(existing):
        raise BadRequest(f"key {key_id} does not belong to provider {provider.name}",
                         fields={"keys": [f"unknown key id {key_id}"]})
    for key in existing.values():
        if key.pk not in listed:
            if key.routing_targets.exists():
                raise Conflict(f'Key "{key.name}" is pinned by routing targets; '
                               "change those rules before removing it")
            audit.record_delete(actor, key)
            key.delete()
    for index, entry in enumerate(entries):
        if entry.get("id"):
            update_key(actor, existing[entry["id"]], entry, bump=False)
        elif not entry.get("value"):
            raise BadRequest(f"keys[{index}].value is required for a new key",
                             fields={f"keys[{index}].value": ["is required for a new key"]})
        else:
            create_key(actor, provider, entry, bump=False)


def delete_key(actor: Actor, key: ProviderKey) -> None:
    pinned = key.routing_targets.count()
    if pinned:
        raise Conflict(f'Key "{key.name}" is pinned by {pinned} routing targets; '
                       "change those rules first")
    with transaction.atomic():
        audit.record_delete(actor, key)
        key.delete()
        config_version.bump_on_commit()


def save_alias(actor: Actor, alias: ModelAlias | None, data: dict[str, Any]) -> ModelAlias:
    with transaction.atomic():
        name = data.get("name", alias.name if alias else "")
        ensure_unique(ModelAlias.objects.filter(name=name),
                      f'A model alias named "{name}" already exists',
                      exclude=alias.pk if alias is not None else None)
        before = audit.snapshot(alias) if alias is not None else None
        if alias is None:
            alias = ModelAlias()
        else:
            alias = ModelAlias.objects.select_for_update().get(pk=alias.pk)
        _apply(alias, data, ("name", "description", "strategy"))
        alias.save()
        if before is None:
            audit.record_create(actor, alias)
        else:
            audit.record_update(actor, alias, before)
        if data.get("routes") is not None:
            for route in alias.routes.all():
                audit.record_delete(actor, route)
            alias.routes.all().delete()
            for route in data["routes"]:
                created = ModelAliasRoute.objects.create(
                    alias=alias,
                    provider=route["provider"],
                    model=route["model"],
                    weight=route.get("weight", 1.0),
                    priority=route.get("priority", 0),
                )
                audit.record_create(actor, created)
        config_version.bump_on_commit()
    return alias
