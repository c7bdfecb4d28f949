"""Providers, their API keys and model aliases; admin API tokens; the audit log."""

from __future__ import annotations

import re
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, URLValidator
from django.db import models

from gateway import crypto
from governance.validators import validate_whitelist

SLUG_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,49}")


def validate_provider_name(value: str) -> None:
    if not SLUG_PATTERN.fullmatch(value or ""):
        raise ValidationError(
            "must be 1-50 characters: lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            code="invalid",
        )


def validate_http_url(value: str) -> None:
    URLValidator(schemes=["http", "https"])(value)


class TimestampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class ProviderKind(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    AZURE = "azure", "Azure OpenAI"
    ANTHROPIC = "anthropic", "Anthropic"
    OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible server"


DEFAULT_BASE_URLS = {
    ProviderKind.OPENAI: "https://api.openai.com/v1",
    ProviderKind.ANTHROPIC: "https://api.anthropic.com",
}


class Provider(TimestampedModel):
    """An upstream LLM provider account. Governance (budget, rate limit) hangs off it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(
        max_length=50,
        unique=True,
        validators=[validate_provider_name],
        help_text="Identifier used in model names (provider/model) and in the API, e.g. openai.",
    )
    kind = models.CharField(max_length=32, choices=ProviderKind.choices)
    base_url = models.CharField(
        "base URL",
        max_length=500,
        blank=True,
        validators=[validate_http_url],
        help_text="Empty uses the provider's public endpoint (required for Azure and "
        "OpenAI-compatible servers).",
    )
    api_version = models.CharField(
        "API version", max_length=50, blank=True,
        help_text="Azure OpenAI api-version, e.g. 2024-10-21.",
    )
    price_provider = models.CharField(
        max_length=50,
        blank=True,
        help_text="Price catalog provider to bill this provider's models with (for "
        "OpenAI-compatible servers), e.g. groq or together. Empty derives it from the kind.",
    )
    is_enabled = models.BooleanField(default=True)
    connect_timeout_ms = models.PositiveIntegerField(
        default=5_000, validators=[MinValueValidator(1), MaxValueValidator(600_000)]
    )
    first_byte_timeout_ms = models.PositiveIntegerField(
        default=60_000, validators=[MinValueValidator(1), MaxValueValidator(3_600_000)]
    )
    idle_timeout_ms = models.PositiveIntegerField(
        default=30_000,
        validators=[MinValueValidator(1), MaxValueValidator(3_600_000)],
        help_text="Longest silence allowed between two chunks of a streamed response.",
    )
    total_timeout_ms = models.PositiveIntegerField(
        default=600_000, validators=[MinValueValidator(1), MaxValueValidator(86_400_000)]
    )
    max_retries = models.PositiveSmallIntegerField(
        default=2, validators=[MaxValueValidator(10)]
    )
    backoff_initial_ms = models.PositiveIntegerField(
        default=200, validators=[MaxValueValidator(60_000)]
    )
    backoff_max_ms = models.PositiveIntegerField(
        default=5_000, validators=[MaxValueValidator(300_000)]
    )
    failure_threshold = models.PositiveSmallIntegerField(
        default=5,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Consecutive failures of one key that open its circuit breaker.",
    )
    open_seconds = models.PositiveIntegerField(
        default=30,
        validators=[MinValueValidator(1), MaxValueValidator(86_400)],
        help_text="How long an open circuit rejects traffic before one probe is let through.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.kind in (ProviderKind.AZURE, ProviderKind.OPENAI_COMPATIBLE) and not self.base_url:
            errors["base_url"] = f"is required for {self.get_kind_display()} providers"
        if self.kind == ProviderKind.AZURE and not self.api_version:
            errors["api_version"] = "is required for Azure OpenAI providers"
        if self.backoff_initial_ms > self.backoff_max_ms:
            errors["backoff_max_ms"] = "must be at least backoff_initial_ms"
        if errors:
            raise ValidationError(errors)

    @property
    def effective_base_url(self) -> str:
        return self.base_url or DEFAULT_BASE_URLS.get(self.kind, "")


class ProviderKey(TimestampedModel):
    """One API key of a provider, encrypted at rest; the plain value is never returned."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="keys")
    name = models.CharField(max_length=100)
    encrypted_value = models.TextField(editable=False)
    value_hint = models.CharField(max_length=16, editable=False, blank=True)
    weight = models.FloatField(
        default=1.0, validators=[MinValueValidator(0.0), MaxValueValidator(1_000_000.0)]
    )
    allowed_models = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_whitelist],
        help_text='Models this key may serve: ["*"] or [] for all, or a list of names.',
    )
    is_enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["provider__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "name"], name="provider_key_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.provider.name}/{self.name}"

    def set_value(self, plain: str) -> None:
        self.encrypted_value = crypto.encrypt(plain)
        self.value_hint = "…" + plain[-4:] if len(plain) >= 12 else "…"

    def get_value(self) -> str:
        return crypto.decrypt(self.encrypted_value)


class BalancingStrategy(models.TextChoices):
    WEIGHTED = "weighted", "Weighted random"
    PRIORITY = "priority", "Priority order (fallback chain)"
    LEAST_BUSY = "least_busy", "Fewest requests in flight"
    LOWEST_LATENCY = "lowest_latency", "Lowest recent latency"


class ModelAlias(TimestampedModel):
    """A public model name served by an ordered list of provider/model routes."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(
        max_length=200, unique=True, help_text="The model name clients send, e.g. smart."
    )
    description = models.TextField(blank=True)
    strategy = models.CharField(
        max_length=20, choices=BalancingStrategy.choices, default=BalancingStrategy.WEIGHTED
    )
    is_enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "model aliases"

    def __str__(self) -> str:
        return self.name


class ModelAliasRoute(models.Model):
    id = models.BigAutoField(primary_key=True)
    alias = models.ForeignKey(ModelAlias, on_delete=models.CASCADE, related_name="routes")
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="alias_routes")
    model = models.CharField(max_length=200)
    weight = models.FloatField(
        default=1.0, validators=[MinValueValidator(0.0), MaxValueValidator(1_000_000.0)]
    )
    priority = models.IntegerField(
        default=0, help_text="Lower is tried first by the priority strategy."
    )

    class Meta:
        ordering = ["priority", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["alias", "provider", "model"], name="alias_route_unique_target"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider.name}/{self.model}"


class AdminToken(models.Model):
    """A management API bearer token for a staff user; only its SHA-256 is stored."""

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="admin_tokens"
    )
    name = models.CharField(max_length=100, blank=True)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"


class AuditAction(models.TextChoices):
    CREATE = "create", "Created"
    UPDATE = "update", "Updated"
    DELETE = "delete", "Deleted"
    ROTATE = "rotate", "Secret rotated"
    RESET_USAGE = "reset_usage", "Usage reset"


class AuditEvent(models.Model):
    """One write by an operator, through the admin, the API or a command. Never edited."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    actor_name = models.CharField(max_length=150, blank=True)
    source = models.CharField(max_length=20)  # admin | api | command
    action = models.CharField(max_length=20, choices=AuditAction.choices, db_index=True)
    object_type = models.CharField(max_length=50, db_index=True)
    object_id = models.CharField(max_length=64, db_index=True)
    object_repr = models.CharField(max_length=255, blank=True)
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object_idx")]

    def __str__(self) -> str:
        return f"{self.actor_name or 'system'} {self.action} {self.object_type} {self.object_repr}"

