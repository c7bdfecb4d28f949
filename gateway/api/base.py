"""Base class of every management API view."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Model, QuerySet
from django_filters import FilterSet
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.views import APIView

from gateway.audit import Actor
from gateway.errors import BadRequest, InvalidJSON, NotFound


class ManagementAPIView(APIView):
    """Staff-only JSON view; subclasses read input with :meth:`parse` and write via actions."""

    def actor(self) -> Actor:
        return Actor(self.request.user, "api")

    def parse(self, serializer_class: type[serializers.Serializer], *,
              context: dict[str, Any] | None = None) -> dict[str, Any]:
        if not int(self.request.META.get("CONTENT_LENGTH") or 0):
            raise InvalidJSON("Invalid JSON: the request body is empty")
        serializer = serializer_class(data=self.request.data, context=context or {})
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    @staticmethod
    def get_or_404(queryset: QuerySet[Any], pk: str, message: str) -> Any:
        try:
            key = uuid.UUID(pk) if _is_uuid_pk(queryset.model) else pk
        except ValueError:
            raise NotFound(message) from None
        obj = queryset.filter(pk=key).first()
        if obj is None:
            raise NotFound(message)
        return obj

    @staticmethod
    def filter(filterset_class: type[FilterSet], request: Request,
               queryset: QuerySet[Any]) -> QuerySet[Any]:
        filterset = filterset_class(request.query_params, queryset=queryset, request=request)
        if not filterset.is_valid():
            fields = {name: [str(error) for error in errors]
                      for name, errors in filterset.errors.items()}
            message = "; ".join(f"{name}: {' '.join(errors)}" for name, errors in fields.items())
            raise BadRequest(f"Invalid query parameters: {message}", fields=fields)
        return filterset.qs


def _is_uuid_pk(model: type[Model]) -> bool:
    from django.db.models import UUIDField

    return isinstance(model._meta.pk, UUIDField)
