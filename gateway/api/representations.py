"""Response shapes of the provider, alias and audit-log APIs."""

from __future__ import annotations

from typing import Any

from gateway.models import AuditEvent, ModelAlias, Provider
from governance.api.representations import provider_key, timestamp


def provider(item: Provider) -> dict[str, Any]:
    return {
        "id": str(item.id),
        "name": item.name,
        "kind": item.kind,
        "base_url": item.base_url,
        "effective_base_url": item.effective_base_url,
        "api_version": item.api_version,
        "price_provider": item.price_provider,
        "enabled": item.is_enabled,
        "connect_timeout_ms": item.connect_timeout_ms,
        "first_byte_timeout_ms": item.first_byte_timeout_ms,
        "idle_timeout_ms": item.idle_timeout_ms,
        "total_timeout_ms": item.total_timeout_ms,
        "max_retries": item.max_retries,
        "backoff_initial_ms": item.backoff_initial_ms,
        "backoff_max_ms": item.backoff_max_ms,
        "failure_threshold": item.failure_threshold,
        "open_seconds": item.open_seconds,
        "keys": [provider_key(key) for key in item.keys.all()],
        "created_at": timestamp(item.created_at),
        "updated_at": timestamp(item.updated_at),
    }


def alias(item: ModelAlias) -> dict[str, Any]:
    return {
        "id": str(item.id),
        "name": item.name,
        "description": item.description,
        "strategy": item.strategy,
        "enabled": item.is_enabled,
        "routes": [
            {"provider": route.provider.name, "model": route.model, "weight": route.weight,
             "priority": route.priority}
            for route in item.routes.all()
        ],
        "created_at": timestamp(item.created_at),
        "updated_at": timestamp(item.updated_at),
    }


def audit_event(item: AuditEvent) -> dict[str, Any]:
    return {
        "id": str(item.id),
        "created_at": timestamp(item.created_at),
        "actor": item.actor_name,
        "actor_id": item.actor_id,
        "source": item.source,
        "action": item.action,
        "object_type": item.object_type,
        "object_id": item.object_id,
        "object_repr": item.object_repr,
        "changes": item.changes,
    }
