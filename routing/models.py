"""Routing rules: a CEL condition, weighted targets and fallbacks, scoped to a key, team,
customer or everyone."""

from __future__ import annotations

import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from gateway.models import Provider, ProviderKey, TimestampedModel
from governance.models import Customer, Team, VirtualKey
from routing.validators import validate_cel_expression, validate_fallbacks


class RoutingScope(models.TextChoices):
    GLOBAL = "global", "Global"
    TEAM = "team", "Team"
    CUSTOMER = "customer", "Customer"
    VIRTUAL_KEY = "virtual_key", "Virtual key"


SCOPE_FIELDS = {
    RoutingScope.TEAM: "team",
    RoutingScope.CUSTOMER: "customer",
    RoutingScope.VIRTUAL_KEY: "virtual_key",
}


class RoutingRule(TimestampedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=255)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=True)
    chain_rule = models.BooleanField(
        default=False,
        help_text="After this rule matches, evaluate the rules again with the new "
        "provider and model.",
    )
    cel_expression = models.TextField(
        blank=True,
        validators=[validate_cel_expression],
        help_text='CEL condition, e.g. headers["x-tier"] == "premium" && budget_used < 80.0. '
        "Empty matches every request.",
    )
    fallbacks = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_fallbacks],
        help_text='Tried in order when the target fails: ["provider/model", "provider"].',
    )
    query = models.JSONField(null=True, blank=True)
    scope = models.CharField(
        max_length=20, choices=RoutingScope.choices, default=RoutingScope.GLOBAL
    )
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="routing_rules"
    )
    customer = models.ForeignKey(
        Customer, null=True, blank=True, on_delete=models.CASCADE, related_name="routing_rules"
    )
    virtual_key = models.ForeignKey(
        VirtualKey, null=True, blank=True, on_delete=models.CASCADE, related_name="routing_rules"
    )
    priority = models.IntegerField(
        default=0,
        validators=[MinValueValidator(-1_000_000), MaxValueValidator(1_000_000)],
        help_text="Lower runs first within its scope.",
    )

    class Meta:
        ordering = ["scope", "priority", "created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(scope="global", team__isnull=True, customer__isnull=True,
                      virtual_key__isnull=True)
                    | Q(scope="team", team__isnull=False, customer__isnull=True,
                        virtual_key__isnull=True)
                    | Q(scope="customer", team__isnull=True, customer__isnull=False,
                        virtual_key__isnull=True)
                    | Q(scope="virtual_key", team__isnull=True, customer__isnull=True,
                        virtual_key__isnull=False)
                ),
                name="routing_rule_scope_matches_owner",
            ),
            models.UniqueConstraint(
                fields=["name"], condition=Q(scope="global"), name="routing_rule_unique_global"
            ),
            *[
                models.UniqueConstraint(
                    fields=["name", field],
                    condition=Q(**{f"{field}__isnull": False}),
                    name=f"routing_rule_unique_{field}",
                )
                for field in ("team", "customer", "virtual_key")
            ],
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def scope_id(self) -> str | None:
        field = SCOPE_FIELDS.get(self.scope)
        if field is None:
            return None
        value = getattr(self, f"{field}_id")
        return str(value) if value else None

    @property
    def scope_owner(self) -> models.Model | None:
        field = SCOPE_FIELDS.get(self.scope)
        return getattr(self, field) if field else None


class RoutingTarget(models.Model):
    """One weighted destination of a rule; an empty provider or model keeps the request's."""

    id = models.BigAutoField(primary_key=True)
    rule = models.ForeignKey(RoutingRule, on_delete=models.CASCADE, related_name="targets")
    position = models.PositiveSmallIntegerField(default=0)
    provider = models.ForeignKey(
        Provider, null=True, blank=True, on_delete=models.PROTECT, related_name="routing_targets"
    )
    model = models.CharField(max_length=255, blank=True)
    key = models.ForeignKey(
        ProviderKey,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="routing_targets",
        help_text="Pin one API key of the provider.",
    )
    weight = models.FloatField(validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])

    class Meta:
        ordering = ["position", "id"]

    def __str__(self) -> str:
        provider = self.provider.name if self.provider_id else "(incoming provider)"
        return f"{provider}/{self.model or '(incoming model)'} × {self.weight}"
