"""DRF exception handler: every management API error has one body shape."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response

from gateway.errors import GatewayError

logger = logging.getLogger(__name__)

TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    406: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def flatten_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """``{"budgets": [{"max_limit": ["..."]}]}`` → ``{"budgets[0].max_limit": ["..."]}``."""
    fields: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            if isinstance(key, int):
                path = f"{prefix}[{key}]"
            else:
                name = "" if key == "non_field_errors" else str(key)
                path = f"{prefix}.{name}" if prefix and name else (prefix or name)
            for sub_key, messages in flatten_errors(value, path).items():
                fields.setdefault(sub_key, []).extend(messages)
    elif isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            fields.setdefault(prefix, []).extend(str(item) for item in detail)
        else:
            for index, item in enumerate(detail):
                if not item:
                    continue
                for sub_key, messages in flatten_errors(item, f"{prefix}[{index}]").items():
                    fields.setdefault(sub_key, []).extend(messages)
    else:
        fields.setdefault(prefix, []).append(str(detail))
    return fields


def summarize(fields: dict[str, list[str]]) -> str:
    parts = []
    for name, messages in fields.items():
        text = "; ".join(messages)
        parts.append(f"{name}: {text}" if name else text)
    return "; ".join(parts) or "Invalid request"


def error_body(status: int, message: str, error_type: str | None = None,
               fields: dict[str, list[str]] | None = None) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": error_type or TYPE_BY_STATUS.get(status, "api_error"),
            "fields": fields or {},
        },
        "status_code": status,
    }


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    headers: dict[str, str] = {}
    if isinstance(exc, GatewayError):
        status, message, fields = exc.status_code, exc.detail, exc.fields
        body = error_body(status, message, exc.type, fields)
        return Response(body, status=status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None  # a real bug: let Django log it and answer 500
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]
    status = exc.status_code
    if isinstance(exc, exceptions.ValidationError):
        fields = flatten_errors(exc.detail)
        message = summarize(fields)
    else:
        fields = {}
        message = str(exc.detail)
    return Response(error_body(status, message, fields=fields), status=status, headers=headers)
