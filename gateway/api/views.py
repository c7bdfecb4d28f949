"""Provider (with nested keys), model-alias and audit-log endpoints under ``/api/``."""

from __future__ import annotations

import uuid

from django.db.models import Prefetch, Q, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from gateway import provider_actions as actions
from gateway.actions import delete_object
from gateway.api import representations as shapes
from gateway.api import serializers as inputs
from gateway.api.base import ManagementAPIView
from gateway.api.filters import AliasFilter, AuditEventFilter, ProviderFilter
from gateway.api.listing import list_response
from gateway.errors import NotFound
from gateway.models import AuditEvent, ModelAlias, ModelAliasRoute, Provider, ProviderKey
from governance.api.representations import many, provider_key

PAGE = [OpenApiParameter("limit", int), OpenApiParameter("offset", int),
        OpenApiParameter("search", str)]


def providers() -> QuerySet[Provider]:
    return Provider.objects.prefetch_related(
        Prefetch("keys", queryset=ProviderKey.objects.select_related("provider"))
    )


def aliases() -> QuerySet[ModelAlias]:
    return ModelAlias.objects.prefetch_related(
        Prefetch("routes", queryset=ModelAliasRoute.objects.select_related("provider"))
    )


class ProviderListView(ManagementAPIView):
    @extend_schema(tags=["Providers"], operation_id="listProviders", parameters=PAGE)
    def get(self, request: Request) -> Response:
        queryset = self.filter(ProviderFilter, request, providers())
        return Response(list_response(queryset, request.query_params, "providers",
                                      many(shapes.provider)))

    @extend_schema(tags=["Providers"], operation_id="createProvider",
                   request=inputs.ProviderCreateInput, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        provider = actions.create_provider(self.actor(), self.parse(inputs.ProviderCreateInput))
        return Response({"message": "Provider created successfully",
                         "provider": shapes.provider(providers().get(pk=provider.pk))},
                        status=201)


def get_provider(reference: str) -> Provider:
    """A provider by name, or by id when ``reference`` is a UUID."""
    try:
        condition = Q(pk=uuid.UUID(reference)) | Q(name=reference)
    except ValueError:
        condition = Q(name=reference)
    provider = providers().filter(condition).first()
    if provider is None:
        raise NotFound("Provider not found")
    return provider


class ProviderDetailView(ManagementAPIView):
    def _get(self, name: str) -> Provider:
        return get_provider(name)

    @extend_schema(tags=["Providers"], operation_id="getProvider")
    def get(self, request: Request, name: str) -> Response:
        return Response({"provider": shapes.provider(self._get(name))})

    @extend_schema(tags=["Providers"], operation_id="updateProvider",
                   request=inputs.ProviderUpdateInput,
                   description="Partial update. `keys`, when sent, is the full list: entries "
                   "with an `id` update that key (omit `value` to keep it), entries without "
                   "one are created, keys not listed are deleted.")
    def put(self, request: Request, name: str) -> Response:
        provider = self._get(name)
        provider = actions.update_provider(self.actor(), provider,
                                           self.parse(inputs.ProviderUpdateInput))
        return Response({"message": "Provider updated successfully",
                         "provider": shapes.provider(providers().get(pk=provider.pk))})

    @extend_schema(tags=["Providers"], operation_id="patchProvider",
                   request=inputs.ProviderUpdateInput)
    def patch(self, request: Request, name: str) -> Response:
        return self.put(request, name)

    @extend_schema(tags=["Providers"], operation_id="deleteProvider")
    def delete(self, request: Request, name: str) -> Response:
        actions.delete_provider(self.actor(), self._get(name))
        return Response({"message": "Provider deleted successfully"})


class ProviderKeyListView(ManagementAPIView):
    @extend_schema(tags=["Providers"], operation_id="listProviderKeys")
    def get(self, request: Request, name: str) -> Response:
        provider = get_provider(name)
        keys = [provider_key(key) for key in provider.keys.all()]
        return Response({"keys": keys, "count": len(keys)})

    @extend_schema(tags=["Providers"], operation_id="createProviderKey",
                   request=inputs.KeyCreateInput, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request, name: str) -> Response:
        provider = get_provider(name)
        key = actions.create_key(self.actor(), provider, self.parse(inputs.KeyCreateInput))
        return Response({"message": "Provider key created successfully",
                         "key": provider_key(key)}, status=201)


class ProviderKeyDetailView(ManagementAPIView):
    def _key(self, name: str, key_id: str) -> ProviderKey:
        provider = get_provider(name)
        return self.get_or_404(provider.keys.select_related("provider"), key_id,
                               "Provider key not found")

    @extend_schema(tags=["Providers"], operation_id="getProviderKey")
    def get(self, request: Request, name: str, key_id: str) -> Response:
        return Response({"key": provider_key(self._key(name, key_id))})

    @extend_schema(tags=["Providers"], operation_id="updateProviderKey",
                   request=inputs.KeyUpdateInput,
                   description="Partial update; send `value` to replace the secret.")
    def put(self, request: Request, name: str, key_id: str) -> Response:
        key = actions.update_key(self.actor(), self._key(name, key_id),
                                 self.parse(inputs.KeyUpdateInput))
        return Response({"message": "Provider key updated successfully",
                         "key": provider_key(key)})

    @extend_schema(tags=["Providers"], operation_id="patchProviderKey",
                   request=inputs.KeyUpdateInput)
    def patch(self, request: Request, name: str, key_id: str) -> Response:
        return self.put(request, name, key_id)

    @extend_schema(tags=["Providers"], operation_id="deleteProviderKey")
    def delete(self, request: Request, name: str, key_id: str) -> Response:
        actions.delete_key(self.actor(), self._key(name, key_id))
        return Response({"message": "Provider key deleted successfully"})


class AliasListView(ManagementAPIView):
    @extend_schema(tags=["Model aliases"], operation_id="listAliases", parameters=PAGE)
    def get(self, request: Request) -> Response:
        queryset = self.filter(AliasFilter, request, aliases())
        return Response(list_response(queryset, request.query_params, "aliases",
                                      many(shapes.alias)))

    @extend_schema(tags=["Model aliases"], operation_id="createAlias", request=inputs.AliasInput,
                   responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        alias = actions.save_alias(self.actor(), None, self.parse(inputs.AliasInput))
        return Response({"message": "Model alias created successfully",
                         "alias": shapes.alias(aliases().get(pk=alias.pk))}, status=201)


class AliasDetailView(ManagementAPIView):
    not_found = "Model alias not found"

    @extend_schema(tags=["Model aliases"], operation_id="getAlias")
    def get(self, request: Request, alias_id: str) -> Response:
        return Response({"alias": shapes.alias(self.get_or_404(aliases(), alias_id,
                                                               self.not_found))})

    @extend_schema(tags=["Model aliases"], operation_id="updateAlias",
                   request=inputs.AliasUpdateInput)
    def put(self, request: Request, alias_id: str) -> Response:
        alias = self.get_or_404(aliases(), alias_id, self.not_found)
        alias = actions.save_alias(self.actor(), alias, self.parse(inputs.AliasUpdateInput))
        return Response({"message": "Model alias updated successfully",
                         "alias": shapes.alias(aliases().get(pk=alias.pk))})

    @extend_schema(tags=["Model aliases"], operation_id="patchAlias",
                   request=inputs.AliasUpdateInput)
    def patch(self, request: Request, alias_id: str) -> Response:
        return self.put(request, alias_id)

    @extend_schema(tags=["Model aliases"], operation_id="deleteAlias")
    def delete(self, request: Request, alias_id: str) -> Response:
        delete_object(self.actor(), self.get_or_404(aliases(), alias_id, self.not_found))
        return Response({"message": "Model alias deleted successfully"})


class AuditEventListView(ManagementAPIView):
    @extend_schema(tags=["Audit"], operation_id="listAuditEvents", parameters=[
        OpenApiParameter("limit", int), OpenApiParameter("offset", int),
        OpenApiParameter("actor", str), OpenApiParameter("object_type", str),
        OpenApiParameter("object_id", str), OpenApiParameter("action", str),
        OpenApiParameter("source", str),
        OpenApiParameter("since", str, description="ISO 8601 time, inclusive"),
        OpenApiParameter("until", str, description="ISO 8601 time, exclusive"),
    ])
    def get(self, request: Request) -> Response:
        queryset = self.filter(AuditEventFilter, request, AuditEvent.objects.all())
        # The log grows without bound: always paginated, newest first.
        params = request.query_params.copy()
        params.setdefault("limit", "0")
        return Response(list_response(queryset, params, "audit_events",
                                      many(shapes.audit_event)))


class AuditEventDetailView(ManagementAPIView):
    @extend_schema(tags=["Audit"], operation_id="getAuditEvent")
    def get(self, request: Request, event_id: str) -> Response:
        event = self.get_or_404(AuditEvent.objects.all(), event_id, "Audit event not found")
        return Response({"audit_event": shapes.audit_event(event)})

