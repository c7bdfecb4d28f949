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


ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error of the management API.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string", "description": "e.g. invalid_request_error"},
                "fields": {"type": "object", "additionalProperties": {
                    "type": "array", "items": {"type": "string"}},
                    "description": "Field path (e.g. budgets[0].max_limit) -> messages"},
            },
            "required": ["message", "type", "fields"],
        },
        "status_code": {"type": "integer"},
    },
    "required": ["error", "status_code"],
}
MESSAGE_SCHEMA = {"type": "object", "properties": {"message": {"type": "string"}},
                  "required": ["message"]}
ERROR_DESCRIPTIONS = {
    "400": "Invalid input: the message and `fields` name the problem",
    "401": "Missing, unknown or expired credentials",
    "403": "Authenticated but not staff",
    "404": "No such object",
    "409": "Conflicts with stored state (a duplicate name, an object still in use)",
    "413": "Request body too large",
    "415": "Request body is not JSON",
    "429": "Too many requests",
}


def document_responses(result: dict[str, Any], generator: Any, request: Any,
                       public: bool) -> dict[str, Any]:
    """Postprocessing hook: every operation lists the errors it can answer, in the one error
    shape (``Error``); deletes answer 200 with a message (Bifrost's), not 204."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    schemas["Message"] = MESSAGE_SCHEMA
    error = {"$ref": "#/components/schemas/Error"}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if method == "delete":
                responses.pop("204", None)
                responses["200"] = {"description": "Deleted", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Message"}}}}
            codes = ["400"]
            if operation.get("security") not in (None, [], [{}]):  # the admin token's operations
                codes += ["401", "403"]
            if "{" in path:
                codes.append("404")
            if method in ("post", "put", "patch"):
                codes += ["409", "413", "415"]
            for code in codes:
                responses.setdefault(code, {"description": ERROR_DESCRIPTIONS[code]})
            for code, response in responses.items():  # a view's own errors too
                if code >= "400" and "content" not in response:
                    response["content"] = {"application/json": {"schema": error}}
    return result
