"""Pricing-override API views: ``/api/governance/pricing-overrides`` and ``.../{id}``.

Paths and shapes follow Bifrost's governance API (spec 4.8), plus ``GET .../{id}``, which the
upstream lacks.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from gateway.actions import delete_object
from gateway.api.listing import list_response
from gateway.api.views import ManagementAPIView
from pricing import actions
from pricing.api import representations as shapes
from pricing.api import serializers as inputs
from pricing.api.filters import PricingOverrideFilter
from pricing.models import ScopeKind

TAGS = ["Pricing overrides"]
NOT_FOUND = "Pricing override not found"


class PricingOverrideListView(ManagementAPIView):
    @extend_schema(
        tags=TAGS, operation_id="listPricingOverrides",
        description="The filters apply in every mode; `limit`, `offset` or `search` paginate.",
        parameters=[
            OpenApiParameter("scope_kind", str, enum=list(ScopeKind.values)),
            OpenApiParameter("virtual_key_id", str),
            OpenApiParameter("provider_id", str, description="Provider name, e.g. openai."),
            OpenApiParameter("provider_key_id", str),
            OpenApiParameter("limit", int, description="Page size (default 25, max 100)."),
            OpenApiParameter("offset", int, description="Rows to skip."),
            OpenApiParameter("search", str, description="Case-insensitive name substring."),
        ],
    )
    def get(self, request: Request) -> Response:
        queryset = self.filter(PricingOverrideFilter, request,
                               shapes.pricing_overrides_queryset())
        return Response(list_response(queryset, request.query_params, "pricing_overrides",
                                      shapes.many(shapes.pricing_override)))

    @extend_schema(tags=TAGS, operation_id="createPricingOverride",
                   request=inputs.PricingOverrideCreateInput, responses={201: OpenApiTypes.OBJECT},
                   description="The most specific matching scope wins during cost resolution.")
    def post(self, request: Request) -> Response:
        override = actions.create_pricing_override(
            self.actor(), self.parse(inputs.PricingOverrideCreateInput))
        override = shapes.pricing_overrides_queryset().get(pk=override.pk)
        return Response({"message": "Pricing override created successfully",
                         "pricing_override": shapes.pricing_override(override)},
                        status=status.HTTP_201_CREATED)


class PricingOverrideDetailView(ManagementAPIView):
    @extend_schema(tags=TAGS, operation_id="getPricingOverride")
    def get(self, request: Request, override_id: str) -> Response:
        override = self.get_or_404(shapes.pricing_overrides_queryset(), override_id, NOT_FOUND)
        return Response({"pricing_override": shapes.pricing_override(override)})

    @extend_schema(tags=TAGS, operation_id="updatePricingOverride",
                   request=inputs.PricingOverrideUpdateInput,
                   description="Omitted fields keep their value. `scope_kind` clears every "
                   "scope id not sent with it; a null id clears it; `patch` replaces the "
                   "stored patch in full (`{}` clears it).")
    def put(self, request: Request, override_id: str) -> Response:
        override = self.get_or_404(shapes.pricing_overrides_queryset(), override_id, NOT_FOUND)
        actions.update_pricing_override(self.actor(), override,
                                        self.parse(inputs.PricingOverrideUpdateInput))
        override = shapes.pricing_overrides_queryset().get(pk=override.pk)
        return Response({"message": "Pricing override updated successfully",
                         "pricing_override": shapes.pricing_override(override)})

    @extend_schema(tags=TAGS, operation_id="deletePricingOverride")
    def delete(self, request: Request, override_id: str) -> Response:
        override = self.get_or_404(shapes.pricing_overrides_queryset(), override_id, NOT_FOUND)
        delete_object(self.actor(), override)
        return Response({"message": "Pricing override deleted successfully"})
