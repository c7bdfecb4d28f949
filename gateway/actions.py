"""Generic audited writes, used by admin pages whose forms already validated the object."""

from __future__ import annotations

from typing import Any

from django.db import models, transaction

from gateway import audit, config_version
from gateway.audit import Actor


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
