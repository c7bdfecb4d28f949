"""Customers, teams, virtual keys and their limits; model configs; usage records.

A :class:`Budget` (dollars per window) or :class:`RateLimit` (tokens and requests per window)
belongs to exactly one owner, which the database enforces: customers, model configs and
providers have at most one budget, teams, virtual keys and key provider configs one per
window duration. Every owner has at most one rate limit.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from gateway.formats import plain_decimal
from gateway.models import Provider, ProviderKey, TimestampedModel
from governance.validators import (
    validate_duration,
    validate_money_limit,
    validate_whitelist,
)

MONEY = {"max_digits": 22, "decimal_places": 9}


class Customer(TimestampedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=255, unique=True)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Team(TimestampedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=255, unique=True)
    description = models.TextField(blank=True)
    customer = models.ForeignKey(
        Customer, null=True, blank=True, on_delete=models.SET_NULL, related_name="teams"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class VirtualKey(TimestampedModel):
    """The credential an application presents. Only the SHA-256 of the secret is stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=255, unique=True)
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="virtual_keys"
    )
    customer = models.ForeignKey(
        Customer, null=True, blank=True, on_delete=models.SET_NULL, related_name="virtual_keys"
    )
    calendar_aligned = models.BooleanField(
        default=False,
        help_text="Budgets of this key and its provider configs reset on UTC calendar "
        "boundaries (midnight, Monday, the 1st of the month...) instead of rolling windows.",
    )
    max_concurrent_requests = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(100_000)],
        help_text="Requests this key may have in flight at once; empty for no limit.",
    )
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    secret_prefix = models.CharField(max_length=12, editable=False)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(team__isnull=True) | Q(customer__isnull=True),
                name="virtual_key_team_xor_customer",
                violation_error_message="A virtual key belongs to a team or a customer, not both.",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class VirtualKeyProviderConfig(TimestampedModel):
    """A provider a key may use, with its models, provider keys, weight and own limits."""

    id = models.BigAutoField(primary_key=True)
    virtual_key = models.ForeignKey(
        VirtualKey, on_delete=models.CASCADE, related_name="provider_configs"
    )
    provider = models.ForeignKey(
        Provider, on_delete=models.PROTECT, related_name="virtual_key_configs"
    )
    weight = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(1_000_000.0)],
        help_text="Share of traffic for bare model names served by several providers.",
    )
    allowed_models = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_whitelist],
        help_text='["*"] allows every model; an empty list allows none.',
    )
    allow_all_keys = models.BooleanField(
        default=True, help_text="Use any of the provider's API keys; otherwise only those below."
    )
    keys = models.ManyToManyField(ProviderKey, blank=True, related_name="virtual_key_configs")

    class Meta:
        ordering = ["id"]
        verbose_name = "provider config"
        constraints = [
            models.UniqueConstraint(
                fields=["virtual_key", "provider"], name="virtual_key_provider_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.virtual_key.name} → {self.provider.name}"


class ModelConfig(TimestampedModel):
    """Limits for one model, on one provider or (provider empty) on every provider."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    model_name = models.CharField(max_length=255)
    provider = models.ForeignKey(
        Provider, null=True, blank=True, on_delete=models.PROTECT, related_name="model_configs"
    )

    class Meta:
        ordering = ["model_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["model_name", "provider"],
                condition=Q(provider__isnull=False),
                name="model_config_unique_per_provider",
                violation_error_message="A model config for this model and provider exists.",
            ),
            models.UniqueConstraint(
                fields=["model_name"],
                condition=Q(provider__isnull=True),
                name="model_config_unique_global",
                violation_error_message="A model config for this model on all providers exists.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_name} @ {self.provider.name if self.provider_id else 'any provider'}"


OWNER_FIELDS = ("customer", "team", "virtual_key", "provider_config", "model_config", "provider")
SINGLE_BUDGET_OWNERS = ("customer", "model_config", "provider")
MULTI_BUDGET_OWNERS = ("team", "virtual_key", "provider_config")


def _exactly_one_owner() -> Q:
    condition = Q()
    for owner in OWNER_FIELDS:
        term = Q(**{f"{owner}__isnull": False})
        for other in OWNER_FIELDS:
            if other != owner:
                term &= Q(**{f"{other}__isnull": True})
        condition |= term
    return condition


class LimitOwnerMixin(models.Model):
    customer = models.ForeignKey(
        Customer, null=True, blank=True, on_delete=models.CASCADE, related_name="%(class)ss"
    )
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="%(class)ss"
    )
    virtual_key = models.ForeignKey(
        VirtualKey, null=True, blank=True, on_delete=models.CASCADE, related_name="%(class)ss"
    )
    provider_config = models.ForeignKey(
        VirtualKeyProviderConfig,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="%(class)ss",
    )
    model_config = models.ForeignKey(
        ModelConfig, null=True, blank=True, on_delete=models.CASCADE, related_name="%(class)ss"
    )
    provider = models.ForeignKey(
        Provider, null=True, blank=True, on_delete=models.CASCADE, related_name="%(class)ss"
    )

    class Meta:
        abstract = True

    @property
    def owner_kind(self) -> str:
        for field in OWNER_FIELDS:
            if getattr(self, f"{field}_id") is not None:
                return field
        return ""

    @property
    def owner(self) -> models.Model | None:
        kind = self.owner_kind
        return getattr(self, kind) if kind else None

    def owner_label(self) -> str:
        owner = self.owner
        if owner is None:
            return "(no owner)"
        return f'{self.owner_kind.replace("_", " ")} "{owner}"'


class Budget(LimitOwnerMixin, TimestampedModel):
    """Dollars per window. Money is Decimal here and integer nano-dollars in the ledger."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    max_limit = models.DecimalField(**MONEY, validators=[validate_money_limit])
    reset_duration = models.CharField(max_length=32, validators=[validate_duration])
    calendar_aligned = models.BooleanField(default=False)
    last_reset = models.DateTimeField()
    current_usage = models.DecimalField(**MONEY, default=Decimal(0), editable=False)
    usage_reset_at = models.DateTimeField(
        null=True, blank=True, editable=False,
        help_text="When an operator last reset this budget's usage.",
    )

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(condition=_exactly_one_owner(), name="budget_exactly_one_owner"),
            *[
                models.UniqueConstraint(
                    fields=[owner],
                    condition=Q(**{f"{owner}__isnull": False}),
                    name=f"budget_single_per_{owner}",
                )
                for owner in SINGLE_BUDGET_OWNERS
            ],
            *[
                models.UniqueConstraint(
                    fields=[owner, "reset_duration"],
                    condition=Q(**{f"{owner}__isnull": False}),
                    name=f"budget_one_per_duration_{owner}",
                )
                for owner in MULTI_BUDGET_OWNERS
            ],
        ]

    def __str__(self) -> str:
        return f"${plain_decimal(Decimal(self.max_limit))} per {self.reset_duration}"

    @property
    def usage_percent(self) -> float | None:
        if not self.max_limit:
            return None
        return float(self.current_usage / self.max_limit * 100)


class RateLimit(LimitOwnerMixin, TimestampedModel):
    """Tokens and requests per window; the two windows are independent."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    token_max_limit = models.BigIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    token_reset_duration = models.CharField(
        max_length=32, null=True, blank=True, validators=[validate_duration]
    )
    token_current_usage = models.BigIntegerField(default=0, editable=False)
    token_last_reset = models.DateTimeField()
    request_max_limit = models.BigIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    request_reset_duration = models.CharField(
        max_length=32, null=True, blank=True, validators=[validate_duration]
    )
    request_current_usage = models.BigIntegerField(default=0, editable=False)
    request_last_reset = models.DateTimeField()
    usage_reset_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=_exactly_one_owner(), name="rate_limit_exactly_one_owner"
            ),
            *[
                models.UniqueConstraint(
                    fields=[owner],
                    condition=Q(**{f"{owner}__isnull": False}),
                    name=f"rate_limit_single_per_{owner}",
                )
                for owner in OWNER_FIELDS
            ],
            models.CheckConstraint(
                condition=Q(token_max_limit__isnull=True)
                | Q(token_reset_duration__isnull=False),
                name="rate_limit_token_window_required",
            ),
            models.CheckConstraint(
                condition=Q(request_max_limit__isnull=True)
                | Q(request_reset_duration__isnull=False),
                name="rate_limit_request_window_required",
            ),
        ]

    def __str__(self) -> str:
        parts = []
        if self.token_max_limit is not None:
            parts.append(f"{self.token_max_limit} tokens per {self.token_reset_duration}")
        if self.request_max_limit is not None:
            parts.append(f"{self.request_max_limit} requests per {self.request_reset_duration}")
        return ", ".join(parts) or "no limit"

    @property
    def token_usage_percent(self) -> float | None:
        if not self.token_max_limit:
            return None
        return self.token_current_usage / self.token_max_limit * 100

    @property
    def request_usage_percent(self) -> float | None:
        if not self.request_max_limit:
            return None
        return self.request_current_usage / self.request_max_limit * 100


class UsageRecord(models.Model):
    """One request that reached an upstream. Written by the usage flush, never edited.

    Owners are kept as plain ids plus names rather than foreign keys: history survives the
    deletion of a key, team or provider, and the flush never fails on a vanished row.

    ``request_id`` is the id the client saw in ``x-request-id``: its own when it sent one, so
    it may repeat. ``event_id`` is unique to the request (the same as ``request_id`` when the
    gateway made that up): a redelivered usage event is a no-op.
    """

    id = models.BigAutoField(primary_key=True)
    event_id = models.CharField(max_length=128)  # unique: Meta.constraints
    request_id = models.CharField(max_length=128)  # indexed: Meta.indexes
    created_at = models.DateTimeField(db_index=True)
    # Filters by key, team or customer use the (owner, created_at) indexes below; a
    # single-column index beside each would only slow the usage flush down.
    virtual_key_id = models.UUIDField(null=True, blank=True)
    virtual_key_name = models.CharField(max_length=255, blank=True)
    team_id = models.UUIDField(null=True, blank=True)
    customer_id = models.UUIDField(null=True, blank=True)
    provider = models.CharField(max_length=50)  # indexed: Meta.indexes
    provider_key_id = models.UUIDField(null=True, blank=True)
    requested_model = models.CharField(max_length=255)
    resolved_model = models.CharField(max_length=255)  # indexed: Meta.indexes
    request_type = models.CharField(max_length=40)
    is_stream = models.BooleanField(default=False)
    status_code = models.PositiveSmallIntegerField()
    error_type = models.CharField(max_length=64, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cache_write_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(**MONEY, default=Decimal(0))
    priced = models.BooleanField(default=True)
    latency_ms = models.FloatField(default=0.0)
    overhead_ms = models.FloatField(default=0.0)
    routing_rule_id = models.UUIDField(null=True, blank=True)
    routing_rule_name = models.CharField(max_length=255, blank=True)
    fallback_index = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        # Declared here rather than with unique=/db_index= on the fields: on PostgreSQL those
        # add a second, LIKE-prefix index to each column, which nothing queries and every
        # usage insert would pay for.
        constraints = [
            models.UniqueConstraint(fields=["event_id"], name="usage_event_id_unique"),
        ]
        indexes = [
            models.Index(fields=["request_id"], name="usage_request_id_idx"),
            models.Index(fields=["provider"], name="usage_provider_idx"),
            models.Index(fields=["resolved_model"], name="usage_model_idx"),
            models.Index(fields=["virtual_key_id", "created_at"], name="usage_key_time_idx"),
            models.Index(fields=["team_id", "created_at"], name="usage_team_time_idx"),
            models.Index(fields=["customer_id", "created_at"], name="usage_customer_time_idx"),
        ]

    def __str__(self) -> str:
        return self.request_id


# Every column of a usage record but its primary key, in the one order the usage flush
# inserts them and the usage API and its CSV return them (``event_id`` last: CSV readers that
# go by position kept working when it was added).
USAGE_RECORD_COLUMNS = (
    "request_id", "created_at", "virtual_key_id", "virtual_key_name", "team_id",
    "customer_id", "provider", "provider_key_id", "requested_model", "resolved_model",
    "request_type", "is_stream", "status_code", "error_type", "prompt_tokens",
    "completion_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens", "cost",
    "priced", "latency_ms", "overhead_ms", "routing_rule_id", "routing_rule_name",
    "fallback_index", "event_id",
)


class UsageDimension(models.TextChoices):
    VIRTUAL_KEY = "virtual_key", "virtual key"
    TEAM = "team", "team"
    CUSTOMER = "customer", "customer"
    PROVIDER = "provider", "provider"
    MODEL = "model", "model"


class UsageRollup(models.Model):
    """Daily (UTC) totals of :class:`UsageRecord` per virtual key, team, customer, provider
    and resolved model, for dashboards. Each usage flush adds its records to them
    (:func:`governance.usage.add_to_rollups`); :func:`governance.usage.rollup_usage` rebuilds
    days from the records. Kept when the records they summarise are purged.

    ``dimension_id`` is the key, team or customer id (``""`` for requests without one), the
    provider name or the model name.
    """

    id = models.BigAutoField(primary_key=True)
    day = models.DateField()
    dimension = models.CharField(max_length=16, choices=UsageDimension.choices)
    dimension_id = models.CharField(max_length=255, blank=True)
    dimension_name = models.CharField(max_length=255, blank=True)
    request_count = models.BigIntegerField(default=0)
    error_count = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(**MONEY, default=Decimal(0))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-day", "dimension", "dimension_id"]
        constraints = [
            models.UniqueConstraint(fields=["day", "dimension", "dimension_id"],
                                    name="usage_rollup_unique_day_dimension"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.dimension} {self.dimension_name or self.dimension_id or '-'}"
