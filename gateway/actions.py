"""Generic audited writes, used by admin pages whose forms already validated the object."""

from __future__ import annotations

from typing import Any

from django.db import models, transaction

from gateway import audit, config_version
from gateway.audit import Actor
from gateway.errors import Conflict


def save_object(actor: Actor, obj: models.Model, before: dict[str, Any] | None) -> None:
    """Save a validated instance; ``before`` is ``audit.snapshot`` of it, None when new."""
    with transaction.atomic():
        obj.save()
        if before is None:
            audit.record_create(actor, obj)
        else:
            audit.record_update(actor, obj, before)
        config_version.bump_on_commit()


def delete_object(actor: Actor, obj: models.Model) -> None:
    """Delete with its database cascade (owned limits, configs, scoped rules) and audit it."""
    with transaction.atomic():
        audit.record_delete(actor, obj)
        obj.delete()
        config_version.bump_on_commit()


def lock_rows(queryset: models.QuerySet[Any]) -> models.QuerySet[Any]:
    """Lock the rows of ``queryset`` for update, in primary-key order (no deadlocks).

    Admin changelist querysets carry joins and annotations that PostgreSQL refuses to lock
    (``FOR UPDATE`` with ``GROUP BY`` or outer joins), so the lock is taken on a plain
    queryset of the same rows. Call inside ``transaction.atomic()``.
    """
    ids = list(queryset.values_list("pk", flat=True))
    return queryset.model._default_manager.select_for_update().filter(pk__in=ids).order_by("pk")


def ensure_unique(queryset: models.QuerySet[Any], message: str, *, exclude: Any = None,
                  field: str | None = "name") -> None:
    """Raise a 409 naming ``field`` when ``queryset`` (minus ``exclude``) holds a row.

    The database constraint stays the last word; this check gives the message.
    """
    if exclude is not None:
        queryset = queryset.exclude(pk=exclude)
    if queryset.exists():
        raise Conflict(message, fields={field: ["already exists"]} if field else None)
