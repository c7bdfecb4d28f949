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


# -- inference: governance decisions (DESIGN.md section 8; spec model-provider-governance 1.8)


class VirtualKeyRequired(GatewayError):
    status_code = 401
    code = "virtual_key_required"
    type = "authentication_error"
    message = "A virtual key is required: send it as 'Authorization: Bearer sk-gw-...'"


class VirtualKeyNotFound(GatewayError):
    status_code = 401
    code = "virtual_key_not_found"
    type = "authentication_error"
    message = "Virtual key not found"


class VirtualKeyBlocked(GatewayError):
    status_code = 403
    code = "virtual_key_blocked"
    type = "permission_error"
    message = "Virtual key is inactive"


class ProviderBlocked(GatewayError):
    status_code = 403
    code = "provider_blocked"
    type = "permission_error"
    message = "Provider is not allowed for this virtual key"


class ModelBlocked(GatewayError):
    status_code = 403
    code = "model_blocked"
    type = "permission_error"
    message = "Model is not allowed for this virtual key"


class LimitExceeded(GatewayError):
    """A budget or rate limit denied the request; ``retry_after_seconds`` feeds the header."""

    def __init__(self, message: str | None = None, *, retry_after_seconds: float = 0.0,
                 fields: dict[str, list[str]] | None = None):
        super().__init__(message, fields=fields)
        self.retry_after_seconds = retry_after_seconds
        # x-ratelimit-* of the limits that refused (encoded ASGI headers; the governor's)
        self.rate_limit_headers: list[tuple[bytes, bytes]] = []


class BudgetExceeded(LimitExceeded):
    status_code = 402
    code = "budget_exceeded"
    type = "insufficient_quota"
    message = "Budget exceeded"


class RequestLimited(LimitExceeded):
    status_code = 429
    code = "request_limited"
    type = "rate_limit_error"
    message = "Request limit exceeded"


class TokenLimited(RequestLimited):
    code = "token_limited"
    message = "Token limit exceeded"


class RateLimited(RequestLimited):
    code = "rate_limited"
    message = "Token and request limits exceeded"


class ConcurrencyLimited(RequestLimited):
    code = "concurrency_limited"
    message = "Too many concurrent requests"


class GovernanceUnavailable(GatewayError):
    status_code = 503
    code = "governance_unavailable"
    type = "api_error"
    message = "Usage limits cannot be checked right now; try again shortly"


# -- inference: resolution and upstream


class ModelNotFound(GatewayError):
    status_code = 404
    code = "model_not_found"
    type = "invalid_request_error"
    message = "Model not found"


class NoProviderAvailable(GatewayError):
    status_code = 503
    code = "no_provider_available"
    type = "api_error"
    message = "No provider key is available for this model"


class UpstreamError(GatewayError):
    status_code = 502
    code = "upstream_error"
    type = "api_error"
    message = "The provider could not be reached or returned an invalid response"


class UpstreamRateLimited(UpstreamError):
    """The provider kept answering 429 after every retry."""

    status_code = 429
    type = "rate_limit_error"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    code = "upstream_timeout"
    message = "The provider did not answer in time"


class CorsOriginNotAllowed(GatewayError):
    status_code = 403
    code = "cors_origin_not_allowed"
    type = "permission_error"
    message = "This origin is not allowed (GATEWAY_CORS_ORIGINS)"


class GatewayStopping(ServiceUnavailable):
    code = "gateway_shutdown"
    message = "The gateway is stopping and could not finish this request; retry it"


class ClientDisconnected(GatewayError):
    """The client closed its connection before the answer (nginx's 499): what the usage
    record of such a request says; never sent, there is nobody to send it to."""

    status_code = 499
    code = "client_disconnected"
    type = "api_error"
    message = "The client closed the connection before the answer"


class MethodNotAllowed(GatewayError):
    status_code = 405
    code = "method_not_allowed"
    type = "invalid_request_error"
    message = "Method not allowed"

    def __init__(self, message: str | None = None, *, allow: str = "") -> None:
        super().__init__(message)
        self.allow = allow  # the Allow header's value: the methods the resource takes
