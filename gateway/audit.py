"""The audit log: who changed what, before and after, with secrets redacted."""

from __future__ import annotations

import datetime
import decimal
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import models

from gateway.models import AuditAction, AuditEvent

REDACTED = "[redacted]"
SECRET_FIELDS = frozenset({"secret_hash", "encrypted_value", "token_hash", "value", "password"})
IGNORED_FIELDS = frozenset({"created_at", "updated_at"})


@dataclass(frozen=True)
class Actor:
    """Who is writing: a user (or nobody, for system work) and through which door."""

    user: Any = None
    source: str = "api"

    @property
    def name(self) -> str:
        if self.user is not None and getattr(self.user, "is_authenticated", False):
            return self.user.get_username()
        return "system"


SYSTEM = Actor(None, "system")


def _plain(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return value


def snapshot(obj: models.Model) -> dict[str, Any]:
    """The concrete field values of ``obj`` (foreign keys as ids), secrets redacted."""
    data: dict[str, Any] = {}
    for field in obj._meta.concrete_fields:
        if field.name in IGNORED_FIELDS:
            continue
        name = field.attname
        value = getattr(obj, name)
        if field.name in SECRET_FIELDS and value:
            # A fingerprint of the stored (hashed or encrypted) value: the diff shows that a
            # secret was replaced without revealing anything about it.
            data[field.name] = f"{REDACTED} {hashlib.sha256(str(value).encode()).hexdigest()[:8]}"
        else:
            data[field.name] = _plain(value)
    if obj.pk is not None:
        for field in obj._meta.many_to_many:
            data[field.name] = sorted(str(pk) for pk in getattr(obj, field.name).values_list(
                "pk", flat=True))
    return data


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    return {
        key: [before.get(key), after.get(key)]
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    }


def record(actor: Actor, action: str, obj: models.Model, changes: dict[str, Any] | None = None,
           *, object_type: str | None = None) -> AuditEvent:
    user = actor.user if getattr(actor.user, "is_authenticated", False) else None
    return AuditEvent.objects.create(
        actor=user,
        actor_name=actor.name,
        source=actor.source,
        action=action,
        object_type=object_type or obj._meta.model_name or "",
        object_id=str(obj.pk),
        object_repr=describe(obj)[:255],
        changes=changes or {},
    )


def describe(obj: models.Model) -> str:
    """How an audit event names its object: a budget or rate limit with its owner (alone,
    "$10 per 1d" could be any team's)."""
    owner_label = getattr(obj, "owner_label", None)
    if callable(owner_label):
        try:
            return f"{owner_label()}: {obj}"
        except Exception:  # an owner already gone (a delete in progress): the object alone
            return str(obj)
    return str(obj)


def record_create(actor: Actor, obj: models.Model) -> AuditEvent:
    return record(actor, AuditAction.CREATE, obj, diff({}, snapshot(obj)))


def record_update(actor: Actor, obj: models.Model, before: dict[str, Any]) -> AuditEvent | None:
    changes = diff(before, snapshot(obj))
    if not changes:
        return None
    return record(actor, AuditAction.UPDATE, obj, changes)


def record_delete(actor: Actor, obj: models.Model, before: dict[str, Any] | None = None,
                  ) -> AuditEvent:
    return record(actor, AuditAction.DELETE, obj, diff(before or snapshot(obj), {}))
