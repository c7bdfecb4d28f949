"""Governance API views: customers, teams, virtual keys, model configs, provider limits,
and the read-only budget and rate-limit lists. Paths and shapes follow Bifrost's
``/api/governance`` (see docs/api.md for the deliberate differences)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from gateway.actions import delete_object
from gateway.api.base import ManagementAPIView
from gateway.api.listing import list_response
from gateway.errors import NotFound
from gateway.models import Provider
from governance import actions
from governance.api import memory
from governance.api import representations as shapes
from governance.api import serializers as inputs
from governance.api.filters import (
    SORTABLE_KEY_FIELDS,
    CustomerFilter,
    ModelConfigFilter,
    TeamFilter,
    VirtualKeyFilter,
)
from governance.models import Budget, RateLimit

LIST_PARAMETERS = [
    OpenApiParameter("limit", int, description="Page size (default 25, max 100)."),
    OpenApiParameter("offset", int, description="Rows to skip."),
    OpenApiParameter("search", str, description="Case-insensitive name substring."),
]
TAGS = ["Governance"]


# --- virtual keys ------------------------------------------------------------------------

class VirtualKeyListView(ManagementAPIView):
    @extend_schema(tags=TAGS, operation_id="listVirtualKeys", parameters=[
        *LIST_PARAMETERS,
        OpenApiParameter("team_id", str), OpenApiParameter("customer_id", str),
        OpenApiParameter("is_active", bool),
        OpenApiParameter("sort_by", str, enum=list(SORTABLE_KEY_FIELDS)),
        OpenApiParameter("order", str, enum=["asc", "desc"]),
        OpenApiParameter("export", bool, description="All matching rows, no page limit."),
    ])
    def get(self, request: Request) -> Response:
        if memory.requested(request):
            return Response(memory.memory_list(
                "virtual_keys", "virtual_keys",
                shapes.virtual_keys_queryset().order_by("created_at", "id"),
                shapes.virtual_key))
        queryset = self.filter(VirtualKeyFilter, request, shapes.virtual_keys_queryset())
        export = request.query_params.get("export") == "true"
        return Response(list_response(
            queryset, request.query_params, "virtual_keys", shapes.many(shapes.virtual_key),
            triggers=("limit", "offset", "search", "customer_id", "team_id", "sort_by",
                      "export", "is_active"),
            export=export,
        ))

    @extend_schema(tags=TAGS, operation_id="createVirtualKey",
                   request=inputs.VirtualKeyCreateInput,
                   description="Creates a key. The response's `value` is the secret: it is "
                   "shown only here and by rotate, and never stored.")
    def post(self, request: Request) -> Response:
        data = self.parse(inputs.VirtualKeyCreateInput)
        key, secret = actions.create_virtual_key(self.actor(), data)
        key = shapes.virtual_keys_queryset().get(pk=key.pk)
        return Response({"message": "Virtual key created successfully",
                         "virtual_key": shapes.virtual_key(key, secret=secret)})


class VirtualKeyDetailView(ManagementAPIView):
    not_found = "Virtual key not found"

    @extend_schema(tags=TAGS, operation_id="getVirtualKey")
    def get(self, request: Request, vk_id: str) -> Response:
        key = self.get_or_404(shapes.virtual_keys_queryset(), vk_id, self.not_found)
        return Response({"virtual_key": shapes.virtual_key(key)})

    @extend_schema(tags=TAGS, operation_id="updateVirtualKey",
                   request=inputs.VirtualKeyUpdateInput)
    def put(self, request: Request, vk_id: str) -> Response:
        key = self.get_or_404(shapes.virtual_keys_queryset(), vk_id, self.not_found)
        data = self.parse(inputs.VirtualKeyUpdateInput)
        actions.update_virtual_key(self.actor(), key, data)
        key = shapes.virtual_keys_queryset().get(pk=key.pk)
        return Response({"message": "Virtual key updated successfully",
                         "virtual_key": shapes.virtual_key(key)})

    @extend_schema(tags=TAGS, operation_id="deleteVirtualKey")
    def delete(self, request: Request, vk_id: str) -> Response:
        key = self.get_or_404(shapes.virtual_keys_queryset(), vk_id, self.not_found)
        delete_object(self.actor(), key)
        return Response({"message": "Virtual key deleted successfully"})


class VirtualKeyRotateView(ManagementAPIView):
    @extend_schema(tags=TAGS, operation_id="rotateVirtualKey", request=None,
                   description="Replaces the key's secret; the old one stops working at once. "
                   "The new secret is in `value`, shown only in this response.")
    def post(self, request: Request, vk_id: str) -> Response:
        key = self.get_or_404(shapes.virtual_keys_queryset(), vk_id, "Virtual key not found")
        key, secret = actions.rotate_virtual_key(self.actor(), key)
        key = shapes.virtual_keys_queryset().get(pk=key.pk)
        return Response({"message": "Virtual key rotated successfully",
                         "virtual_key": shapes.virtual_key(key, secret=secret)})


# --- teams -------------------------------------------------------------------------------

class TeamListView(ManagementAPIView):
    @extend_schema(tags=TAGS, operation_id="listTeams",
                   parameters=[*LIST_PARAMETERS, OpenApiParameter("customer_id", str)])
    def get(self, request: Request) -> Response:
        if memory.requested(request):
            queryset = shapes.teams_queryset().order_by("created_at", "id")
            customer_id = request.query_params.get("customer_id")
            if customer_id:
                queryset = self.filter(TeamFilter, request, queryset)
            return Response(memory.memory_list("teams", "", queryset, shapes.team))
        queryset = self.filter(TeamFilter, request, shapes.teams_queryset())
        return Response(list_response(queryset, request.query_params, "teams",
                                      shapes.many(shapes.team)))

    @extend_schema(tags=TAGS, operation_id="createTeam", request=inputs.TeamInput)
    def post(self, request: Request) -> Response:
        team = actions.create_team(self.actor(), self.parse(inputs.TeamInput))
        return Response({"message": "Team created successfully",
                         "team": shapes.team(shapes.teams_queryset().get(pk=team.pk))})


class TeamDetailView(ManagementAPIView):
    not_found = "Team not found"

    @extend_schema(tags=TAGS, operation_id="getTeam")
    def get(self, request: Request, team_id: str) -> Response:
        team = self.get_or_404(shapes.teams_queryset(), team_id, self.not_found)
        return Response({"team": shapes.team(team)})

    @extend_schema(tags=TAGS, operation_id="updateTeam", request=inputs.TeamUpdateInput)
    def put(self, request: Request, team_id: str) -> Response:
        team = self.get_or_404(shapes.teams_queryset(), team_id, self.not_found)
        actions.update_team(self.actor(), team, self.parse(inputs.TeamUpdateInput))
        return Response({"message": "Team updated successfully",
                         "team": shapes.team(shapes.teams_queryset().get(pk=team.pk))})

    @extend_schema(tags=TAGS, operation_id="deleteTeam")
    def delete(self, request: Request, team_id: str) -> Response:
        team = self.get_or_404(shapes.teams_queryset(), team_id, self.not_found)
        delete_object(self.actor(), team)
        return Response({"message": "Team deleted successfully"})


# --- customers ---------------------------------------------------------------------------

class CustomerListView(ManagementAPIView):
    @extend_schema(tags=TAGS, operation_id="listCustomers", parameters=LIST_PARAMETERS)
    def get(self, request: Request) -> Response:
        if memory.requested(request):
            return Response(memory.memory_list(
                "customers", "", shapes.customers_queryset().order_by("created_at", "id"),
                shapes.customer))
        queryset = self.filter(CustomerFilter, request, shapes.customers_queryset())
        return Response(list_response(queryset, request.query_params, "customers",
                                      shapes.many(shapes.customer)))

    @extend_schema(tags=TAGS, operation_id="createCustomer", request=inputs.CustomerInput)
    def post(self, request: Request) -> Response:
        customer = actions.create_customer(self.actor(), self.parse(inputs.CustomerInput))
        customer = shapes.customers_queryset().get(pk=customer.pk)
        return Response({"message": "Customer created successfully",
                         "customer": shapes.customer(customer)})


class CustomerDetailView(ManagementAPIView):
    not_found = "Customer not found"

    @extend_schema(tags=TAGS, operation_id="getCustomer")
    def get(self, request: Request, customer_id: str) -> Response:
        customer = self.get_or_404(shapes.customers_queryset(), customer_id, self.not_found)
        return Response({"customer": shapes.customer(customer)})

    @extend_schema(tags=TAGS, operation_id="updateCustomer", request=inputs.CustomerUpdateInput)
    def put(self, request: Request, customer_id: str) -> Response:
        customer = self.get_or_404(shapes.customers_queryset(), customer_id, self.not_found)
        actions.update_customer(self.actor(), customer, self.parse(inputs.CustomerUpdateInput))
        customer = shapes.customers_queryset().get(pk=customer.pk)
        return Response({"message": "Customer updated successfully",
                         "customer": shapes.customer(customer)})

    @extend_schema(tags=TAGS, operation_id="deleteCustomer")
    def delete(self, request: Request, customer_id: str) -> Response:
        customer = self.get_or_404(shapes.customers_queryset(), customer_id, self.not_found)
        delete_object(self.actor(), customer)
        return Response({"message": "Customer deleted successfully"})


# --- budgets and rate limits (read-only) ---------------------------------------------------

class BudgetListView(ManagementAPIView):
    @extend_schema(tags=TAGS, operation_id="listBudgets")
    def get(self, request: Request) -> Response:
        if memory.requested(request):
            return Response(memory.memory_list(
                "budgets", "", Budget.objects.select_related("provider"), shapes.budget))
        items = [shapes.budget(item) for item in Budget.objects.select_related("provider")]
        return Response({"budgets": items, "count": len(items)})


class RateLimitListView(ManagementAPIView):
    @extend_schema(tags=TAGS, operation_id="listRateLimits")
    def get(self, request: Request) -> Response:
        if memory.requested(request):
            return Response(memory.memory_list(
                "rate_limits", "", RateLimit.objects.select_related("provider"),
                shapes.rate_limit))
        items = [shapes.rate_limit(item) for item in RateLimit.objects.select_related("provider")]
        return Response({"rate_limits": items, "count": len(items)})


# --- model configs -----------------------------------------------------------------------

class ModelConfigListView(ManagementAPIView):
    @extend_schema(tags=TAGS, operation_id="listModelConfigs",
                   parameters=[*LIST_PARAMETERS, OpenApiParameter("provider", str)])
    def get(self, request: Request) -> Response:
        if memory.requested(request):
            return Response(memory.memory_list(
                "model_configs", "", shapes.model_configs_queryset(), shapes.model_config))
        queryset = self.filter(ModelConfigFilter, request, shapes.model_configs_queryset())
        return Response(list_response(queryset, request.query_params, "model_configs",
                                      shapes.many(shapes.model_config)))

    @extend_schema(tags=TAGS, operation_id="createModelConfig", request=inputs.ModelConfigInput)
    def post(self, request: Request) -> Response:
        config = actions.create_model_config(self.actor(), self.parse(inputs.ModelConfigInput))
        config = shapes.model_configs_queryset().get(pk=config.pk)
        return Response({"message": "Model config created successfully",
                         "model_config": shapes.model_config(config)})


class ModelConfigDetailView(ManagementAPIView):
    not_found = "Model config not found"

    @extend_schema(tags=TAGS, operation_id="getModelConfig")
    def get(self, request: Request, mc_id: str) -> Response:
        config = self.get_or_404(shapes.model_configs_queryset(), mc_id, self.not_found)
        return Response({"model_config": shapes.model_config(config)})

    @extend_schema(tags=TAGS, operation_id="updateModelConfig",
                   request=inputs.ModelConfigUpdateInput)
    def put(self, request: Request, mc_id: str) -> Response:
        config = self.get_or_404(shapes.model_configs_queryset(), mc_id, self.not_found)
        actions.update_model_config(self.actor(), config,
                                    self.parse(inputs.ModelConfigUpdateInput))
        config = shapes.model_configs_queryset().get(pk=config.pk)
        return Response({"message": "Model config updated successfully",
                         "model_config": shapes.model_config(config)})

    @extend_schema(tags=TAGS, operation_id="deleteModelConfig")
    def delete(self, request: Request, mc_id: str) -> Response:
        config = self.get_or_404(shapes.model_configs_queryset(), mc_id, self.not_found)
        delete_object(self.actor(), config)
        return Response({"message": "Model config deleted successfully"})


# --- provider governance -----------------------------------------------------------------

class ProviderGovernanceListView(ManagementAPIView):
    @extend_schema(tags=TAGS, operation_id="listProviderGovernance",
                   description="Providers that have a budget or a rate limit.")
    def get(self, request: Request) -> Response:
        if memory.requested(request):
            payload = memory.memory_list("providers", "providers",
                                         shapes.providers_queryset(), shapes.provider_governance,
                                         identity=lambda provider: provider.name)
            payload["providers"] = [item for item in payload["providers"]
                                    if item["budget"] or item["rate_limit"]]
            payload["count"] = len(payload["providers"])
            return Response(payload)
        items = [shapes.provider_governance(provider)
                 for provider in shapes.providers_queryset()]
        items = [item for item in items if item["budget"] or item["rate_limit"]]
        return Response({"providers": items, "count": len(items)})


class ProviderGovernanceDetailView(ManagementAPIView):
    def _provider(self, provider_name: str) -> Provider:
        provider = shapes.providers_queryset().filter(name=provider_name).first()
        if provider is None:
            raise NotFound("Provider not found")
        return provider

    @extend_schema(tags=TAGS, operation_id="updateProviderGovernance",
                   request=inputs.ProviderGovernanceInput)
    def put(self, request: Request, provider_name: str) -> Response:
        provider = self._provider(provider_name)
        actions.update_provider_governance(self.actor(), provider,
                                           self.parse(inputs.ProviderGovernanceInput))
        return Response({"message": "Provider governance updated successfully",
                         "provider": shapes.provider_governance(self._provider(provider_name))})

    @extend_schema(tags=TAGS, operation_id="deleteProviderGovernance")
    def delete(self, request: Request, provider_name: str) -> Response:
        actions.delete_provider_governance(self.actor(), self._provider(provider_name))
        return Response({"message": "Provider governance deleted successfully"})
