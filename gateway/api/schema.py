"""OpenAPI generation for views that build their responses with plain functions."""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes


class ManagementAutoSchema(AutoSchema):
    """Responses default to a JSON object; ``@extend_schema`` still overrides them."""

    def get_response_serializers(self) -> Any:
        return OpenApiTypes.OBJECT

    def get_request_serializer(self) -> Any:
        if self.method in ("POST", "PUT", "PATCH"):
            return OpenApiTypes.OBJECT
        return None
