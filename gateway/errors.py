"""One error vocabulary for the management API and the inference routes.

Each error is a class with a status, a machine-readable ``code`` and a default message, in
the manner of DRF's ``exceptions.py``. The management API renders them as
``{"error": {"message", "type", "fields"}, "status_code"}``; the inference routes render the
OpenAI (or Anthropic) shape from the same attributes.
"""

from __future__ import annotations

from typing import ClassVar


class GatewayError(Exception):
    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    type: ClassVar[str] = "api_error"
    message: ClassVar[str] = "Internal error"

    def __init__(self, message: str | None = None, *, fields: dict[str, list[str]] | None = None):
        self.detail = message or self.message
        self.fields = fields or {}
        super().__init__(self.detail)


class BadRequest(GatewayError):
    status_code = 400
    code = "invalid_request"
    type = "invalid_request_error"
    message = "Invalid request"


class InvalidJSON(BadRequest):
    code = "invalid_json"
    message = "Invalid JSON"


class AuthenticationRequired(GatewayError):
    status_code = 401
    code = "authentication_required"
    type = "authentication_error"
    message = "Authentication credentials were not provided"


class PermissionDenied(GatewayError):
    status_code = 403
    code = "permission_denied"
    type = "permission_error"
    message = "You do not have permission to perform this action"


class NotFound(GatewayError):
    status_code = 404
    code = "not_found"
    type = "not_found_error"
    message = "Not found"


class Conflict(GatewayError):
    status_code = 409
    code = "conflict"
    type = "conflict_error"
    message = "Conflict"


class PayloadTooLarge(GatewayError):
    status_code = 413
    code = "payload_too_large"
    type = "invalid_request_error"
    message = "Request body too large"


class ServiceUnavailable(GatewayError):
    status_code = 503
    code = "service_unavailable"
    type = "api_error"
    message = "Service unavailable"
