"""Writes of budgets and rate limits on behalf of their owner, shared by every owner type.

Multi-budget owners (team, virtual key, key provider config) reconcile a list by
``reset_duration``; single-budget owners (customer, model config, provider) take a partial
update. Rate limits are merged (virtual keys and their provider configs) or replaced (the
other owners), as in the API we are compatible with; the merged result is always validated.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from django.db import models
from django.utils import timezone

from gateway import audit
from gateway.audit import Actor
from gateway.errors import BadRequest
from gateway.models import AuditAction
from governance.durations import (
    InvalidDuration,
    calendar_period_start,
    parse_duration,
    same_window,
)
from governance.models import Budget, RateLimit

RATE_LIMIT_FIELDS = (
    "token_max_limit",
    "token_reset_duration",
    "request_max_limit",
    "request_reset_duration",
)


def budget_window_start(reset_duration: str, aligned: bool, now: datetime) -> datetime:
    if not aligned:
        return now
    return calendar_period_start(parse_duration(reset_duration), now)


def create_budget(actor: Actor, owner_kind: str, owner: models.Model, spec: dict[str, Any],
                  *, aligned: bool) -> Budget:
    now = timezone.now()
    budget = Budget(
        max_limit=Decimal(str(spec["max_limit"])),
        reset_duration=spec["reset_duration"],
        calendar_aligned=aligned,
        last_reset=budget_window_start(spec["reset_duration"], aligned, now),
        **{owner_kind: owner},
    )
    budget.save()
    audit.record_create(actor, budget)
    return budget


def _check_unique_durations(entries: list[dict[str, Any]], field: str) -> None:
    seen: list[str] = []
    for index, entry in enumerate(entries):
        duration = entry["reset_duration"]
        same = same_window(duration, seen)
        if same is not None:
            detail = duration if same == duration else f"{duration} is the window of {same}"
            raise BadRequest(
                f"duplicate reset_duration in {field}: {detail}",
                fields={f"{field}[{index}].reset_duration": ["duplicate reset_duration"]},
            )
        seen.append(duration)


def reconcile_budgets(actor: Actor, owner_kind: str, owner: models.Model,
                      entries: list[dict[str, Any]], *, aligned: bool | None,
                      field: str = "budgets") -> None:
    """Make the owner's budgets match ``entries``, keyed by ``reset_duration``.

    A budget whose duration is listed keeps its usage and window; new durations are created;
    budgets not listed are deleted. ``aligned`` is the owner's calendar flag (virtual keys);
    ``None`` means each entry carries its own ``calendar_aligned`` (teams). A false→true
    switch starts the current calendar window and zeroes the usage.
    """
    _check_unique_durations(entries, field)
    existing = {budget.reset_duration: budget
                for budget in Budget.objects.filter(**{owner_kind: owner})}
    now = timezone.now()
    kept: set[Any] = set()
    for entry in entries:
        want_aligned = aligned if aligned is not None else bool(entry.get("calendar_aligned"))
        budget = existing.get(entry["reset_duration"])
        if budget is None:
            create_budget(actor, owner_kind, owner, entry, aligned=want_aligned)
            continue
        kept.add(budget.pk)
        before = audit.snapshot(budget)
        budget.max_limit = Decimal(str(entry["max_limit"]))
        _set_alignment(budget, want_aligned, now)
        budget.save()
        audit.record_update(actor, budget, before)
    for budget in existing.values():
        if budget.pk not in kept:
            audit.record_delete(actor, budget)
            budget.delete()


def _set_alignment(budget: Budget, aligned: bool, now: datetime) -> None:
    if aligned and not budget.calendar_aligned:
        budget.last_reset = budget_window_start(budget.reset_duration, True, now)
        budget.current_usage = Decimal(0)
    budget.calendar_aligned = aligned


def realign_budgets(actor: Actor, budgets: models.QuerySet[Budget], aligned: bool) -> None:
    """Apply an owner's new calendar flag to its existing budgets (false→true snaps)."""
    now = timezone.now()
    for budget in budgets:
        if budget.calendar_aligned == aligned:
            continue
        before = audit.snapshot(budget)
        _set_alignment(budget, aligned, now)
        budget.save()
        audit.record_update(actor, budget, before)


def apply_single_budget(actor: Actor, owner_kind: str, owner: models.Model,
                        spec: dict[str, Any], *, field: str = "budget") -> None:
    """``{}`` (neither max_limit nor reset_duration) removes; otherwise update or create."""
    existing = Budget.objects.filter(**{owner_kind: owner}).first()
    max_limit = spec.get("max_limit")
    reset_duration = spec.get("reset_duration")
    if max_limit is None and reset_duration is None:
        if existing is not None:
            audit.record_delete(actor, existing)
            existing.delete()
        return
    if existing is None:
        missing = [name for name, value in (("max_limit", max_limit),
                                            ("reset_duration", reset_duration)) if value is None]
        if missing:
            raise BadRequest(
                "both max_limit and reset_duration are required when creating a new budget",
                fields={f"{field}.{name}": ["is required when creating a new budget"]
                        for name in missing},
            )
        create_budget(actor, owner_kind, owner, spec,
                      aligned=bool(spec.get("calendar_aligned", False)))
        return
    before = audit.snapshot(existing)
    if max_limit is not None:
        existing.max_limit = Decimal(str(max_limit))
    if reset_duration is not None:
        existing.reset_duration = reset_duration
    if spec.get("calendar_aligned") is not None:
        _set_alignment(existing, bool(spec["calendar_aligned"]), timezone.now())
    existing.save()
    audit.record_update(actor, existing, before)


def apply_rate_limit(actor: Actor, owner_kind: str, owner: models.Model, spec: dict[str, Any],
                     *, mode: Literal["merge", "replace"], field: str = "rate_limit") -> None:
    """Create, update or remove the owner's rate limit.

    ``merge``: null or absent fields keep their stored value; all four null removes.
    ``replace``: every field is set from ``spec``; both max limits null removes.
    """
    existing = RateLimit.objects.filter(**{owner_kind: owner}).first()
    if mode == "merge":
        removal = all(spec.get(name) is None for name in RATE_LIMIT_FIELDS)
    else:
        removal = spec.get("token_max_limit") is None and spec.get("request_max_limit") is None
    if removal:
        if existing is not None:
            audit.record_delete(actor, existing)
            existing.delete()
        return
    if existing is None:
        now = timezone.now()
        limit = RateLimit(token_last_reset=now, request_last_reset=now, **{owner_kind: owner})
        before = None
    else:
        limit = existing
        before = audit.snapshot(existing)
    for name in RATE_LIMIT_FIELDS:
        if mode == "replace" or existing is None:
            setattr(limit, name, spec.get(name))
        elif spec.get(name) is not None:
            setattr(limit, name, spec[name])
    validate_rate_limit(limit, field)
    limit.save()
    if before is None:
        audit.record_create(actor, limit)
    else:
        audit.record_update(actor, limit, before)


def validate_rate_limit(limit: RateLimit, field: str = "rate_limit") -> None:
    errors: dict[str, list[str]] = {}
    for window in ("token", "request"):
        maximum = getattr(limit, f"{window}_max_limit")
        duration = getattr(limit, f"{window}_reset_duration")
        if maximum is not None and maximum <= 0:
            errors[f"{field}.{window}_max_limit"] = ["must be greater than 0"]
        if maximum is not None and not duration:
            errors[f"{field}.{window}_reset_duration"] = [
                f"is required when {window}_max_limit is set"
            ]
        if duration:
            try:
                parse_duration(duration)
            except InvalidDuration as exc:
                errors[f"{field}.{window}_reset_duration"] = [str(exc)]
    if errors:
        raise BadRequest(f"Invalid rate limit: {_summary(errors)}", fields=errors)


def _summary(errors: dict[str, list[str]]) -> str:
    return "; ".join(f"{name}: {'; '.join(messages)}" for name, messages in errors.items())


def reset_usage(actor: Actor, limit: Budget | RateLimit) -> None:
    """Start counting from now. History (usage records) is never edited."""
    now = timezone.now()
    if isinstance(limit, Budget):
        limit.current_usage = Decimal(0)
        limit.last_reset = budget_window_start(limit.reset_duration, limit.calendar_aligned, now)
        fields = ["current_usage", "last_reset", "usage_reset_at", "updated_at"]
    else:
        limit.token_current_usage = 0
        limit.request_current_usage = 0
        limit.token_last_reset = now
        limit.request_last_reset = now
        fields = ["token_current_usage", "request_current_usage", "token_last_reset",
                  "request_last_reset", "usage_reset_at", "updated_at"]
    limit.usage_reset_at = now
    limit.save(update_fields=fields)
    audit.record(actor, AuditAction.RESET_USAGE, limit, {"usage_reset_at": [None, now.isoformat()]})


def reset_owner_usage(actor: Actor, owner_kind: str, owner: models.Model) -> int:
    count = 0
    for model in (Budget, RateLimit):
        for limit in model.objects.filter(**{owner_kind: owner}):
            reset_usage(actor, limit)
            count += 1
    return count
