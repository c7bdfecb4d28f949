"""Writes of routing rules, shared by the admin and the management API.

The serializers validate shapes, targets, fallbacks and the CEL expression; these actions
add what depends on stored state (the scope owner, name uniqueness within the scope), write
the rule and its targets in one transaction with the rule locked, record one audit event
per write (targets included) and bump the config version once the transaction commits.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import IntegrityError, models, transaction

from gateway import audit, config_version
from gateway.actions import save_object
from gateway.audit import Actor
from gateway.errors import BadRequest, Conflict
from gateway.models import AuditAction
from governance.models import Customer, Team, VirtualKey
from routing.models import SCOPE_FIELDS, RoutingRule, RoutingScope, RoutingTarget
from routing.validators import fallback_provider

SCOPE_ID_REQUIRED = "scope_id field is required when scope is not global"
SCOPE_MODELS: dict[str, tuple[type[models.Model], str]] = {
    RoutingScope.TEAM: (Team, "team"),
    RoutingScope.CUSTOMER: (Customer, "customer"),
    RoutingScope.VIRTUAL_KEY: (VirtualKey, "virtual key"),
}
# Fields an update sets when they are present and not null.
UPDATABLE_FIELDS = ("description", "enabled", "chain_rule", "cel_expression", "query",
                    "fallbacks", "priority")


def _target_summary(target: RoutingTarget) -> dict[str, Any]:
    return {
        "provider": target.provider.name if target.provider_id else None,
        "model": target.model or None,
        "key_id": str(target.key_id) if target.key_id else None,
        "weight": target.weight,
    }


def _snapshot(rule: RoutingRule) -> dict[str, Any]:
    """The rule's audited state: its own fields plus its targets, in order."""
    data = audit.snapshot(rule)
    targets = rule.targets.select_related("provider").order_by("position", "id")
    data["targets"] = [_target_summary(target) for target in targets]
    return data


def _bad_scope_id(message: str) -> BadRequest:
    return BadRequest(message, fields={"scope_id": [message]})


def resolve_scope_owner(scope: str, scope_id: str | None) -> models.Model:
    """The team, customer or virtual key a non-global rule belongs to, or a 400."""
    if not scope_id:
        raise _bad_scope_id(SCOPE_ID_REQUIRED)
    model, label = SCOPE_MODELS[scope]
    try:
        pk = uuid.UUID(scope_id)
    except ValueError:
        raise _bad_scope_id(f"scope_id {scope_id!r} is not a valid {label} id") from None
    owner = model.objects.filter(pk=pk).first()
    if owner is None:
        raise _bad_scope_id(f"{label} {scope_id} does not exist")
    return owner


def _set_scope(rule: RoutingRule, scope: str, owner: models.Model | None) -> None:
    rule.scope = scope
    for field in SCOPE_FIELDS.values():
        setattr(rule, field, None)
    if owner is not None:
        setattr(rule, SCOPE_FIELDS[scope], owner)


def _check_unique_name(rule: RoutingRule) -> None:
    """Names are unique per scope owner, and among global rules (B10)."""
    duplicates = RoutingRule.objects.filter(
        name=rule.name, scope=rule.scope, team_id=rule.team_id,
        customer_id=rule.customer_id, virtual_key_id=rule.virtual_key_id,
    ).exclude(pk=rule.pk)
    if duplicates.exists():
        where = "among global rules" if rule.scope == RoutingScope.GLOBAL else "in this scope"
        raise Conflict(f'A routing rule named "{rule.name}" already exists {where}',
                       fields={"name": ["already exists"]})


def _save(rule: RoutingRule) -> None:
    """Save, turning a uniqueness race lost to a concurrent writer into a 409."""
    try:
        with transaction.atomic():
            rule.save()
    except IntegrityError:
        raise Conflict(f'A routing rule named "{rule.name}" already exists in this scope',
                       fields={"name": ["already exists"]}) from None


def _replace_targets(rule: RoutingRule, targets: list[dict[str, Any]]) -> None:
    rule.targets.all().delete()
    RoutingTarget.objects.bulk_create(
        RoutingTarget(rule=rule, position=position, provider=target["provider"],
                      model=target["model"], key=target["key"], weight=target["weight"])
        for position, target in enumerate(targets)
    )


def create_routing_rule(actor: Actor, data: dict[str, Any]) -> RoutingRule:
    """``data`` is validated ``RoutingRuleCreateInput`` output; an absent or empty scope
    means global, and global ignores ``scope_id``."""
    scope = data.get("scope") or RoutingScope.GLOBAL
    with transaction.atomic():
        owner = None if scope == RoutingScope.GLOBAL else resolve_scope_owner(
            scope, data.get("scope_id"))
        rule = RoutingRule(
            name=data["name"],
            description=data.get("description") or "",
            enabled=True if data.get("enabled") is None else data["enabled"],
            chain_rule=bool(data.get("chain_rule")),
            cel_expression=data.get("cel_expression") or "",
            fallbacks=data.get("fallbacks") or [],
            query=data.get("query"),
            priority=data.get("priority") or 0,
        )
        _set_scope(rule, scope, owner)
        _check_unique_name(rule)
        _save(rule)
        _replace_targets(rule, data["targets"])
        audit.record(actor, AuditAction.CREATE, rule, audit.diff({}, _snapshot(rule)))
        config_version.bump_on_commit()
    return rule


def update_routing_rule(actor: Actor, rule: RoutingRule, data: dict[str, Any]) -> RoutingRule:
    """Partial update. Absent or null fields are kept; ``name: ""`` is ignored; ``targets``
    replaces every target. ``scope_id`` may only be cleared by switching to global, and a
    scope change to team, customer or virtual_key needs the new owner's id."""
    with transaction.atomic():
        rule = RoutingRule.objects.select_for_update().get(pk=rule.pk)
        before = _snapshot(rule)
        if data.get("name"):
            rule.name = data["name"]
        for field in UPDATABLE_FIELDS:
            if data.get(field) is not None:
                setattr(rule, field, data[field])
        scope = data.get("scope") or rule.scope
        if scope == RoutingScope.GLOBAL:
            _set_scope(rule, scope, None)
        elif "scope_id" in data or scope != rule.scope:
            _set_scope(rule, scope, resolve_scope_owner(scope, data.get("scope_id")))
        _check_unique_name(rule)
        _save(rule)
        if data.get("targets") is not None:
            _replace_targets(rule, data["targets"])
        changes = audit.diff(before, _snapshot(rule))
        if changes:
            audit.record(actor, AuditAction.UPDATE, rule, changes)
        config_version.bump_on_commit()
    return rule


def delete_routing_rule(actor: Actor, rule: RoutingRule) -> None:
    """Delete a rule and (by cascade) its targets; the audit event keeps both."""
    with transaction.atomic():
        audit.record(actor, AuditAction.DELETE, rule, audit.diff(_snapshot(rule), {}))
        rule.delete()
        config_version.bump_on_commit()


# -- fallbacks name providers by name ------------------------------------------------------


def rules_falling_back_to(provider_name: str) -> list[RoutingRule]:
    """The rules whose fallbacks name ``provider_name`` (alone or as ``provider/model``)."""
    return [rule for rule in RoutingRule.objects.exclude(fallbacks=[]).order_by("name")
            if any(fallback_provider(entry) == provider_name for entry in rule.fallbacks)]


def rename_fallback_provider(actor: Actor, old_name: str, new_name: str) -> int:
    """A provider was renamed: its name in the rules' fallbacks follows (each rule saved and
    audited like any write, in the caller's transaction). Returns the rules changed."""
    rules = rules_falling_back_to(old_name)
    for rule in rules:
        before = audit.snapshot(rule)  # the targets do not change
        rule.fallbacks = [new_name + entry[len(old_name):]
                          if fallback_provider(entry) == old_name else entry
                          for entry in rule.fallbacks]
        save_object(actor, rule, before)
    return len(rules)
