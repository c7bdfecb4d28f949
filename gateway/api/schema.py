"""OpenAPI generation for views that build their responses with plain functions."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
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


class AdminTokenScheme(OpenApiAuthenticationExtension):
    target_class = "gateway.api.authentication.AdminTokenAuthentication"
    name = "AdminToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A token from `manage.py create_admin_token USERNAME`.",
        }
