"""Writes of governance objects, shared by the admin and the management API.

Each action validates what the serializers cannot (state-dependent rules, uniqueness),
writes in one transaction with the owner row locked, records the audit log and bumps the
config version once the transaction commits.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, models, transaction

from gateway import audit, config_version
from gateway.actions import ensure_unique, lock_rows
from gateway.audit import Actor
from gateway.errors import BadRequest, Conflict
from gateway.models import AuditAction, Provider
from gateway.secrets import digest, display_prefix, new_virtual_key_secret
from governance import limits
from governance.models import (
    Budget,
    Customer,
    ModelConfig,
    RateLimit,
    Team,
    VirtualKey,
    VirtualKeyProviderConfig,
)

# On update, null keeps these fields (they cannot be empty) ...
VK_REQUIRED_FIELDS = ("name", "description", "is_active")
# ... and clears these.
VK_NULLABLE_FIELDS = ("expires_at", "max_concurrent_requests")


def _unique_name(model: type[models.Model], name: str, label: str, *,
                 exclude: Any = None) -> None:
    ensure_unique(model.objects.filter(name=name), f'{label} named "{name}" already exists',
                  exclude=exclude)


def _require_name(value: str, field: str = "name") -> str:
    if not value:
        raise BadRequest(f"{field} must not be empty", fields={field: ["must not be empty"]})
    return value


def _save(obj: models.Model) -> None:
    """Save, turning a uniqueness race lost to a concurrent writer into a 409."""
    try:
        with transaction.atomic():
            obj.save()
    except IntegrityError as exc:
        raise Conflict(f"{obj._meta.verbose_name} conflicts with an existing one: {exc}") from None


def _limits(actor: Actor, owner_kind: str, owner: models.Model, data: dict[str, Any], *,
            budget_mode: str, rate_mode: str, aligned: bool | None = None) -> None:
    if budget_mode == "multi" and data.get("budgets") is not None:
        limits.reconcile_budgets(actor, owner_kind, owner, data["budgets"], aligned=aligned)
    if budget_mode == "single" and data.get("budget") is not None:
        limits.apply_single_budget(actor, owner_kind, owner, data["budget"])
    if data.get("rate_limit") is not None:
        limits.apply_rate_limit(actor, owner_kind, owner, data["rate_limit"], mode=rate_mode)
    if data.get("reset_usage"):
        limits.reset_owner_usage(actor, owner_kind, owner)


# --- customers ---------------------------------------------------------------------------

def create_customer(actor: Actor, data: dict[str, Any]) -> Customer:
    with transaction.atomic():
        _unique_name(Customer, data["name"], "A customer")
        customer = Customer(name=data["name"], description=data.get("description", ""))
        _save(customer)
        audit.record_create(actor, customer)
        _limits(actor, "customer", customer, data, budget_mode="single", rate_mode="replace")
        config_version.bump_on_commit()
    return customer


def update_customer(actor: Actor, customer: Customer, data: dict[str, Any]) -> Customer:
    with transaction.atomic():
        customer = Customer.objects.select_for_update().get(pk=customer.pk)
        before = audit.snapshot(customer)
        if "name" in data:
            customer.name = _require_name(data["name"])
            _unique_name(Customer, customer.name, "A customer", exclude=customer.pk)
        if "description" in data:
            customer.description = data["description"]
        _save(customer)
        audit.record_update(actor, customer, before)
        _limits(actor, "customer", customer, data, budget_mode="single", rate_mode="replace")
        config_version.bump_on_commit()
    return customer


# --- teams -------------------------------------------------------------------------------

def create_team(actor: Actor, data: dict[str, Any]) -> Team:
    with transaction.atomic():
        _unique_name(Team, data["name"], "A team")
        team = Team(
            name=data["name"],
            description=data.get("description", ""),
            customer=data.get("customer_id"),
        )
        _save(team)
        audit.record_create(actor, team)
        _limits(actor, "team", team, data, budget_mode="multi", rate_mode="replace")
        config_version.bump_on_commit()
    return team


def update_team(actor: Actor, team: Team, data: dict[str, Any]) -> Team:
    with transaction.atomic():
        team = Team.objects.select_for_update().get(pk=team.pk)
        before = audit.snapshot(team)
        if "name" in data:
            team.name = _require_name(data["name"])
            _unique_name(Team, team.name, "A team", exclude=team.pk)
        if "description" in data:
            team.description = data["description"]
        if "customer_id" in data:
            team.customer = data["customer_id"]  # None (null or "") detaches
        _save(team)
        audit.record_update(actor, team, before)
        _limits(actor, "team", team, data, budget_mode="multi", rate_mode="replace")
        config_version.bump_on_commit()
    return team


# --- virtual keys ------------------------------------------------------------------------

def create_virtual_key(actor: Actor, data: dict[str, Any]) -> tuple[VirtualKey, str]:
    """Create a key; returns it with its secret, which is never stored or shown again."""
    secret = new_virtual_key_secret()
    with transaction.atomic():
        _unique_name(VirtualKey, data["name"], "A virtual key")
        key = VirtualKey(
            name=data["name"],
            description=data.get("description", ""),
            is_active=True if data.get("is_active") is None else data["is_active"],
            expires_at=data.get("expires_at"),
            team=data.get("team_id"),
            customer=data.get("customer_id"),
            calendar_aligned=bool(data.get("calendar_aligned")),
            max_concurrent_requests=data.get("max_concurrent_requests"),
            secret_hash=digest(secret),
            secret_prefix=display_prefix(secret),
        )
        _save(key)
        audit.record_create(actor, key)
        _limits(actor, "virtual_key", key, data, budget_mode="multi", rate_mode="merge",
                aligned=key.calendar_aligned)
        for index, config in enumerate(data.get("provider_configs") or []):
            _create_provider_config(actor, key, config, index)
        config_version.bump_on_commit()
    return key, secret


def update_virtual_key(actor: Actor, key: VirtualKey, data: dict[str, Any]) -> VirtualKey:
    """Partial update. ``team_id``/``customer_id`` change the owner only when present:
    setting one clears the other, an explicit null detaches."""
    with transaction.atomic():
        key = VirtualKey.objects.select_for_update().get(pk=key.pk)
        before = audit.snapshot(key)
        for field in VK_REQUIRED_FIELDS:
            if data.get(field) is not None:
                setattr(key, field, data[field])
        for field in VK_NULLABLE_FIELDS:
            if field in data:
                setattr(key, field, data[field])
        if "name" in data:
            _require_name(key.name)
            _unique_name(VirtualKey, key.name, "A virtual key", exclude=key.pk)
        if data.get("team_id") is not None:
            key.team, key.customer = data["team_id"], None
        elif data.get("customer_id") is not None:
            key.team, key.customer = None, data["customer_id"]
        else:
            if "team_id" in data:
                key.team = None
            if "customer_id" in data:
                key.customer = None
        realign = data.get("calendar_aligned") is not None and \
            data["calendar_aligned"] != key.calendar_aligned
        if data.get("calendar_aligned") is not None:
            key.calendar_aligned = data["calendar_aligned"]
        _save(key)
        audit.record_update(actor, key, before)
        if realign:
            limits.realign_budgets(
                actor,
                Budget.objects.filter(models.Q(virtual_key=key)
                                      | models.Q(provider_config__virtual_key=key)),
                key.calendar_aligned,
            )
        _limits(actor, "virtual_key", key, data, budget_mode="multi", rate_mode="merge",
                aligned=key.calendar_aligned)
        if data.get("provider_configs") is not None:
            _reconcile_provider_configs(actor, key, data["provider_configs"])
        config_version.bump_on_commit()
    return key


def rotate_virtual_key(actor: Actor, key: VirtualKey) -> tuple[VirtualKey, str]:
    secret = new_virtual_key_secret()
    with transaction.atomic():
        key = VirtualKey.objects.select_for_update().get(pk=key.pk)
        key.secret_hash = digest(secret)
        key.secret_prefix = display_prefix(secret)
        key.save(update_fields=["secret_hash", "secret_prefix", "updated_at"])
        audit.record(actor, AuditAction.ROTATE, key,
                     {"secret_hash": [audit.REDACTED, audit.REDACTED]})
        config_version.bump_on_commit()
    return key, secret


def set_virtual_keys_active(actor: Actor, keys: models.QuerySet[VirtualKey], active: bool) -> int:
    count = 0
    with transaction.atomic():
        for key in lock_rows(keys):
            if key.is_active == active:
                continue
            before = audit.snapshot(key)
            key.is_active = active
            key.save(update_fields=["is_active", "updated_at"])
            audit.record_update(actor, key, before)
            count += 1
        config_version.bump_on_commit()
    return count


def _create_provider_config(actor: Actor, key: VirtualKey, data: dict[str, Any],
                            index: int) -> VirtualKeyProviderConfig:
    config = VirtualKeyProviderConfig(
        virtual_key=key,
        provider=data["provider"],
        weight=data.get("weight"),
        allowed_models=data["allowed_models"],
        allow_all_keys=data["allow_all_keys"],
    )
    config.save()
    config.keys.set(data["keys"])
    audit.record_create(actor, config)
    _config_limits(actor, key, config, data, index)
    return config


def _config_limits(actor: Actor, key: VirtualKey, config: VirtualKeyProviderConfig,
                   data: dict[str, Any], index: int) -> None:
    prefix = f"provider_configs[{index}]"
    if data.get("budgets") is not None:
        limits.reconcile_budgets(actor, "provider_config", config, data["budgets"],
                                 aligned=key.calendar_aligned, field=f"{prefix}.budgets")
    if data.get("rate_limit") is not None:
        limits.apply_rate_limit(actor, "provider_config", config, data["rate_limit"],
                                mode="merge", field=f"{prefix}.rate_limit")


def _reconcile_provider_configs(actor: Actor, key: VirtualKey,
                                entries: list[dict[str, Any]]) -> None:
    """Entries with an ``id`` update that config (weight, models and keys are replaced);
    entries without one create a config; configs not listed are deleted."""
    existing = {config.pk: config for config in key.provider_configs.all()}
    listed = {entry["id"] for entry in entries if entry.get("id") is not None}
    for config_id in listed - set(existing):
        raise BadRequest(f"provider config {config_id} does not belong to this virtual key",
                         fields={"provider_configs": [f"unknown id {config_id}"]})
    for config in existing.values():
        if config.pk not in listed:
            audit.record_delete(actor, config)
            config.delete()
    for index, entry in enumerate(entries):
        config = existing.get(entry.get("id")) if entry.get("id") is not None else None
        if config is None:
            _create_provider_config(actor, key, entry, index)
            continue
        before = audit.snapshot(config)
        config.provider = entry["provider"]
        config.weight = entry.get("weight")
        config.allowed_models = entry["allowed_models"]
        config.allow_all_keys = entry["allow_all_keys"]
        config.save()
        config.keys.set(entry["keys"])
        audit.record_update(actor, config, before)
        _config_limits(actor, key, config, entry, index)


# --- model configs and provider governance ------------------------------------------------

def _model_config_conflict(model_name: str, provider: Provider | None, exclude: Any = None) -> None:
    where = f"with provider '{provider.name}'" if provider else "(global)"
    ensure_unique(ModelConfig.objects.filter(model_name=model_name, provider=provider),
                  f"Model config for model '{model_name}' {where} already exists",
                  exclude=exclude, field=None)


def create_model_config(actor: Actor, data: dict[str, Any]) -> ModelConfig:
    with transaction.atomic():
        provider = data.get("provider")
        _model_config_conflict(data["model_name"], provider)
        config = ModelConfig(model_name=data["model_name"], provider=provider)
        _save(config)
        audit.record_create(actor, config)
        _limits(actor, "model_config", config, data, budget_mode="single", rate_mode="replace")
        config_version.bump_on_commit()
    return config


def update_model_config(actor: Actor, config: ModelConfig, data: dict[str, Any]) -> ModelConfig:
    """``"provider": null`` (or ``""``) makes the config apply to the model on every provider."""
    with transaction.atomic():
        config = ModelConfig.objects.select_for_update().get(pk=config.pk)
        before = audit.snapshot(config)
        if "model_name" in data:
            config.model_name = _require_name(data["model_name"], "model_name")
        if "provider" in data:
            config.provider = data["provider"]
        _model_config_conflict(config.model_name, config.provider, exclude=config.pk)
        _save(config)
        audit.record_update(actor, config, before)
        _limits(actor, "model_config", config, data, budget_mode="single", rate_mode="replace")
        config_version.bump_on_commit()
    return config


def update_provider_governance(actor: Actor, provider: Provider, data: dict[str, Any]) -> Provider:
    with transaction.atomic():
        provider = Provider.objects.select_for_update().get(pk=provider.pk)
        _limits(actor, "provider", provider, data, budget_mode="single", rate_mode="replace")
        config_version.bump_on_commit()
    return provider


def delete_provider_governance(actor: Actor, provider: Provider) -> None:
    with transaction.atomic():
        for model in (Budget, RateLimit):
            for limit in model.objects.filter(provider=provider):
                audit.record_delete(actor, limit)
                limit.delete()
        config_version.bump_on_commit()
