"""ASGI plumbing for the data plane: request ids, bodies, responses, errors, CORS (pure)."""

from __future__ import annotations

import itertools
import math
import os
import re
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar

import orjson

from gateway.errors import GatewayError, LimitExceeded, PayloadTooLarge

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# Never forwarded from a provider to the client: hop-by-hop, framing we recompute, and
# anything that carries or sets credentials.
DROPPED_RESPONSE_HEADERS = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"trailers", b"transfer-encoding", b"upgrade", b"content-length",
    b"content-encoding", b"set-cookie", b"authorization", b"www-authenticate", b"api-key",
    b"x-api-key", b"cookie", b"date", b"server", b"alt-svc", b"content-type",
})
# The provider's own request ids, which its support asks for: kept under another name (the
# gateway's own id is x-request-id, and request-id in Anthropic's dialect).
PROVIDER_REQUEST_ID_HEADERS = frozenset({b"x-request-id", b"request-id"})
PROVIDER_REQUEST_ID = b"x-provider-request-id"
EXPOSED_HEADERS = ("x-request-id, x-gateway-provider, x-gateway-model, x-gateway-routing-rule, "
                   "x-gateway-fallback-index, x-gateway-cost-usd, x-gateway-overhead-ms, "
                   "x-ratelimit-limit-requests, x-ratelimit-remaining-requests, "
                   "x-ratelimit-reset-requests, x-ratelimit-limit-tokens, "
                   "x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens, retry-after")

ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
    429: "rate_limit_error", 503: "overloaded_error", 504: "timeout_error",
}


def request_headers(scope: Mapping[str, Any]) -> dict[str, str]:
    """Lower-case header names (ASGI gives them lower-cased already); last value wins."""
    return {name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]}


class RequestIds:
    """Unique 32-hex-digit ids: 16 random digits per process, then a counter. ``uuid4``
    reads the kernel's random source on every call, which costs more than the rest of the
    id path together on some machines; uniqueness is all a request id needs. A forked
    process starts over with new random digits (``os.register_at_fork``): a ``getpid()``
    check per id was a system call per request."""

    _live: ClassVar[weakref.WeakSet[RequestIds]] = weakref.WeakSet()

    def __init__(self) -> None:
        self.restart()
        RequestIds._live.add(self)

    def restart(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


def _restart_request_ids() -> None:
    for ids in list(RequestIds._live):
        ids.restart()


if hasattr(os, "register_at_fork"):  # POSIX; elsewhere there is no fork
    os.register_at_fork(after_in_child=_restart_request_ids)
new_request_id = RequestIds()


def request_id_from(headers: Mapping[str, str]) -> str:
    candidate = headers.get("x-request-id", "")
    if candidate and REQUEST_ID.fullmatch(candidate):
        return candidate
    return new_request_id()


async def read_body(receive: Receive, headers: Mapping[str, str], max_bytes: int) -> bytes:
    """The whole request body, or 413 as soon as it is known to be over ``max_bytes``."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"Request body is larger than {max_bytes // (1024 * 1024)} MB")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError("client disconnected while sending the body")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(
                    f"Request body is larger than {max_bytes // (1024 * 1024)} MB")
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks) if len(chunks) != 1 else chunks[0]


def encode_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1", "replace"))
            for name, value in headers]


async def send_response(send: Send, status: int, body: bytes,
                        raw_headers: list[tuple[bytes, bytes]],
                        content_type: bytes = b"application/json") -> None:
    """Answer with ``body``; ``raw_headers`` (encoded already) get the content type and
    length appended."""
    raw_headers.append((b"content-type", content_type))
    raw_headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def error_body(error: GatewayError, dialect: str) -> bytes:
    if dialect == "anthropic":
        return orjson.dumps({"type": "error", "error": {
            "type": ANTHROPIC_ERROR_TYPES.get(error.status_code, "api_error"),
            "message": error.detail}})
    return orjson.dumps({"error": {"message": error.detail, "type": error.type,
                                   "code": error.code, "param": _param(error)}})


def provider_error_in_dialect(body: bytes, status: int, dialect: str) -> bytes:
    """A provider's error answer (OpenAI's or Anthropic's shape, or anything) in the
    client's ``dialect``: a client of one API reaching a provider of the other gets the error
    its SDK reads (message, type, code). The provider's message is kept as it is."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        kind, code, param = error.get("type"), error.get("code"), error.get("param")
    else:
        message, kind, code, param = None, None, None, None
    if not isinstance(message, str) or not message:
        message = body[:1000].decode("utf-8", "replace").strip() or f"Provider answered {status}"
    if dialect == "anthropic":
        anthropic_kind = kind if kind in ANTHROPIC_ERROR_TYPES.values() else \
            ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        return orjson.dumps({"type": "error", "error": {"type": anthropic_kind,
                                                        "message": message}})
    if code is None and "prompt is too long" in message:  # Anthropic's words for it
        code = "context_length_exceeded"
    return orjson.dumps({"error": {
        "message": message, "type": kind if isinstance(kind, str) else "invalid_request_error",
        "param": param if isinstance(param, str) else None,
        "code": code if isinstance(code, str) else None}})


def _param(error: GatewayError) -> str | None:
    return next(iter(error.fields), None) if error.fields else None


def error_headers(error: GatewayError) -> list[tuple[str, str]]:
    headers = [("x-gateway-error", error.code)]
    allow = getattr(error, "allow", "")
    if allow:  # a 405 says what the resource takes (RFC 9110, 15.5.6)
        headers.append(("allow", allow))
    if isinstance(error, LimitExceeded) or error.status_code in (429, 503):
        seconds = getattr(error, "retry_after_seconds", 1.0) or 1.0
        headers.append(("retry-after", str(max(math.ceil(seconds), 1))))
    return headers


# Provider header name -> its lower-cased name when it is forwarded, else None. Providers
# send the same few names again and again; the size bound keeps a hostile one from growing it.
_FORWARDED_NAMES: dict[bytes, bytes | None] = {}
_FORWARDED_NAMES_MAX = 4096
_UNSEEN = object()  # a name not looked at yet


def _forwarded_name(name: bytes) -> bytes | None:
    lowered = name.lower()
    kept = lowered if lowered not in DROPPED_RESPONSE_HEADERS \
        and not lowered.startswith(b"x-ratelimit-") else None
    if lowered in PROVIDER_REQUEST_ID_HEADERS:
        kept = PROVIDER_REQUEST_ID
    if len(_FORWARDED_NAMES) >= _FORWARDED_NAMES_MAX:
        _FORWARDED_NAMES.clear()
    _FORWARDED_NAMES[name] = kept
    return kept


def forwarded_headers(upstream: Iterable[tuple[bytes, bytes]],
                      also_dropped: frozenset[bytes] = frozenset()) -> list[tuple[bytes, bytes]]:
    """Provider headers worth passing on, from its raw headers (aiohttp's ``raw_headers``:
    nothing decoded or encoded again), names lower-cased. The provider's own
    ``x-ratelimit-*`` describe the provider account behind every virtual key; the gateway
    sends its own for the key."""
    kept = []
    names = _FORWARDED_NAMES
    for name, value in upstream:
        lowered = names.get(name, _UNSEEN)
        if lowered is _UNSEEN:
            lowered = _forwarded_name(name)
        if lowered is not None and (not also_dropped or lowered not in also_dropped):
            kept.append((lowered, value))
    return kept


class Cors:
    """Allowed origins from ``GATEWAY_CORS_ORIGINS`` (``*`` allows any)."""

    def __init__(self, origins: Iterable[str]) -> None:
        self.origins = frozenset(origin.rstrip("/") for origin in origins)
        self.any = "*" in self.origins

    def allowed(self, origin: str | None) -> bool:
        return bool(origin) and (self.any or origin.rstrip("/") in self.origins)  # type: ignore[union-attr]

    def headers(self, origin: str | None) -> list[tuple[str, str]]:
        if not self.allowed(origin):
            return []
        return [("access-control-allow-origin", origin or "*"),
                ("access-control-expose-headers", EXPOSED_HEADERS), ("vary", "origin")]

    def preflight_headers(self, origin: str | None,
                          requested_headers: str | None) -> list[tuple[str, str]]:
        return [
            ("access-control-allow-origin", origin or "*"),
            ("access-control-allow-methods", "GET, POST, OPTIONS"),
            ("access-control-allow-headers", requested_headers or
             "authorization, content-type, x-api-key, api-key, anthropic-version, "
             "anthropic-beta, x-request-id"),
            ("access-control-max-age", "600"),
            ("vary", "origin"),
        ]
