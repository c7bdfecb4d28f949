"""A fast mock LLM upstream: OpenAI-, Azure OpenAI- and Anthropic-shaped APIs, with failure
injection controlled per request. Used by the tests and by ``make bench``.

    python -m bench.mock_upstream --host 127.0.0.1 --port 9000

Routes
    OpenAI      POST /v1/chat/completions, /v1/completions, /v1/embeddings; GET /v1/models
    Azure       POST /openai/deployments/{deployment}/chat/completions|completions|embeddings
                (``api-version`` query and ``api-key`` header required, else 401)
    Anthropic   POST /v1/messages (``x-api-key`` or ``Authorization: Bearer`` required, else
                401; ``anthropic-version`` required, else 400)

Responses are deterministic: the completion text is the configured content (``content``
control, else the server's default), prompt tokens are ``ceil(chars of prompt text / 4)``
(at least 1), completion tokens ``ceil(chars of completion / 4)`` (at least 1).

Controls (see ``CONTROL_TYPES``) come from, lowest precedence first:

1. the upstream API key (``Authorization: Bearer``, ``api-key`` or ``x-api-key``): a key
   ``mock-<name>[-<value>]...`` such as ``mock-status-429-retry_after-2`` or ``mock-drop``
   (boolean controls take no value; unknown words are ignored, so ``mock-ok`` is normal);
2. a ``"mock": {...}`` object in the JSON body, e.g. ``{"mock": {"status": 503}}``;
3. request headers ``x-mock-<name>`` (``-`` or ``_`` in the name), e.g. ``x-mock-delay-ms: 50``.

An unknown control name in a body or header is a 400, so typos do not pass silently.
``fail_times: N`` limits the failure controls (status, delays, drops, malformed) to the first
N requests with the same ``fail_key`` (default: the API key); without any of them those N
requests get a 500.

In tests::

    async with MockUpstream() as mock:            # 127.0.0.1, a free port, this loop
        client = openai.AsyncOpenAI(base_url=f"{mock.url}/v1", api_key="mock-ok")
        ...
        mock.requests[-1].json, mock.requests[-1].headers["authorization"]
        mock.disconnects                          # clients gone before the response ended
        mock.reset()

    mock = MockUpstream.start_in_thread()         # from synchronous code; mock.stop()
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import itertools
import math
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson
from aiohttp import web

DEFAULT_CONTENT = "This is a deterministic reply from the mock upstream."
DEFAULT_CHUNKS = 4
DEFAULT_EMBEDDING_DIMENSIONS = 8
MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "claude-haiku-4-5")
ID_PLACEHOLDER = "@@mockid@@"
CREATED_PLACEHOLDER = "@@created@@"
ID_PLACEHOLDER_BYTES = ID_PLACEHOLDER.encode()
CREATED_PLACEHOLDER_BYTES = f'"{CREATED_PLACEHOLDER}"'.encode()
CACHE_LIMIT = 4096
MODELS_BODY = orjson.dumps({"object": "list", "data": [
    {"id": name, "object": "model", "created": 1700000000, "owned_by": "mock"} for name in MODELS]})

# name -> type. ``tool_call`` is a bool or the name of the tool to call.
CONTROL_TYPES: dict[str, type] = {
    "status": int,                 # answer with this status and a provider-shaped error body
    "delay_ms": float,             # wait before the response headers
    "first_byte_delay_ms": float,  # wait after the headers, before the first body byte
    "chunks": int,                 # content chunks of a stream (capped at the text length)
    "chunk_delay_ms": float,       # wait between two stream events
    "drop": bool,                  # close the connection without any response
    "drop_after_chunks": int,      # stream N content chunks (non-stream: half the body), cut
    "malformed": bool,             # 200 with an invalid JSON body (streams: one broken event)
    "no_usage": bool,              # omit usage
    "tool_call": str,              # answer with a tool call when the request has tools
    "content": str,                # the completion text
    "fail_times": int,             # failure controls apply to the first N requests only ...
    "fail_key": str,               # ... counted per fail_key (default: the API key)
    "retry_after": str,            # retry-after header on error responses
    "cached_tokens": int,          # prompt_tokens_details.cached_tokens / cache_read_input_tokens
    "cache_creation_tokens": int,  # Anthropic cache_creation_input_tokens
    "reasoning_tokens": int,       # OpenAI completion_tokens_details.reasoning_tokens (added)
    "set_cookie": str,             # a Set-Cookie header on the answer (real providers' CDN
                                   # fronts set __cf_bm and the like)
    "location": str,               # a Location header on an error status (a redirect)
}
BOOL_CONTROLS = frozenset({"drop", "malformed", "no_usage", "tool_call"})
# What ``fail_times`` limits to the first N requests.
FAILURE_CONTROLS = ("status", "delay_ms", "first_byte_delay_ms", "drop", "drop_after_chunks",
                    "malformed")
TRUE_WORDS = frozenset({"1", "true", "yes", "on", ""})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})

OPENAI_ERRORS = {
    400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None), 404: ("invalid_request_error", "model_not_found"),
    409: ("invalid_request_error", None), 413: ("invalid_request_error", None),
    422: ("invalid_request_error", None), 429: ("rate_limit_error", "rate_limit_exceeded"),
}
ANTHROPIC_ERRORS = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
    429: "rate_limit_error", 500: "api_error", 503: "overloaded_error", 504: "timeout_error",
    529: "overloaded_error",
}
AZURE_DENIED = ("Access denied due to invalid subscription key or wrong API endpoint. Make sure "
                "to provide a valid key for an active subscription and use a correct regional "
                "API endpoint for your resource.")
SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}


class ControlError(ValueError):
    """A mock control that does not parse: answered with a 400."""


@dataclass(frozen=True, slots=True)
class Controls:
    status: int | None = None
    delay_ms: float = 0.0
    first_byte_delay_ms: float = 0.0
    chunks: int | None = None
    chunk_delay_ms: float = 0.0
    drop: bool = False
    drop_after_chunks: int | None = None
    malformed: bool = False
    no_usage: bool = False
    tool_call: bool | str = False
    content: str | None = None
    fail_times: int | None = None
    fail_key: str | None = None
    retry_after: str | None = None
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0
    set_cookie: str | None = None
    location: str | None = None


NO_CONTROLS = Controls()
_CLEAN = {name: getattr(NO_CONTROLS, name) for name in FAILURE_CONTROLS}


def _convert(name: str, value: Any) -> Any:
    kind = CONTROL_TYPES[name]
    if name in BOOL_CONTROLS:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            return bool(value)
        text = str(value).strip()
        if text.lower() in TRUE_WORDS:
            return True
        if text.lower() in FALSE_WORDS:
            return False
        if name == "tool_call":
            return text
        raise ControlError(f"mock control {name}={value!r} is not a boolean")
    try:
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if kind is float:
            return float(value)
    except (TypeError, ValueError):
        raise ControlError(f"mock control {name}={value!r} is not a number") from None
    return str(value)


def _controls_from_key(key: str) -> dict[str, Any]:
    words = key[len("mock-"):].split("-")
    found: dict[str, Any] = {}
    index = 0
    while index < len(words):
        name = words[index]
        index += 1
        if name not in CONTROL_TYPES:
            continue
        if name in BOOL_CONTROLS:
            found[name] = True
        elif index < len(words):
            found[name] = words[index]
            index += 1
    return found


def parse_controls(raw_headers: Iterable[tuple[bytes, bytes]], body_controls: Any,
                   api_key: str | None) -> Controls:
    """Merge the controls of the key, the body's ``mock`` object and ``x-mock-*`` headers."""
    values: dict[str, Any] = {}
    if api_key and api_key.startswith("mock-"):
        values.update(_controls_from_key(api_key))
    if body_controls is not None:
        if not isinstance(body_controls, dict):
            raise ControlError('the "mock" body field must be an object of controls')
        for raw_name, value in body_controls.items():
            name = str(raw_name).replace("-", "_")
            if name not in CONTROL_TYPES:
                raise ControlError(f"unknown mock control {raw_name!r}")
            values[name] = value
    for raw_name, raw_value in raw_headers:
        if len(raw_name) > 7 and raw_name[:7].lower() == b"x-mock-":
            name = raw_name[7:].decode("latin-1").lower().replace("-", "_")
            if name not in CONTROL_TYPES:
                raise ControlError(f"unknown mock control header {raw_name.decode('latin-1')!r}")
            values[name] = raw_value.decode("utf-8", "replace")
    if not values:
        return NO_CONTROLS
    return Controls(**{name: _convert(name, value) for name, value in values.items()})


@dataclass(slots=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    json: Any                # the parsed body, or None
    time: float              # time.monotonic() on arrival
    body: bytes = b""
    disconnected: bool = False  # the client went away before the response was complete

    @property
    def api_key(self) -> str | None:
        return _api_key(self.headers)


def _bearer(headers: Any) -> str | None:
    auth = headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


def _api_key(headers: Any) -> str | None:
    return headers.get("x-api-key") or headers.get("api-key") or _bearer(headers)


# --- token counting and deterministic content ---------------------------------------------

def _text_length(value: Any, depth: int = 0) -> int:
    if depth > 10:
        return 0
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_length(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return sum(_text_length(value[key], depth + 1)
                   for key in ("content", "text", "arguments", "input", "thinking")
                   if key in value)
    return 0


def tokens_for(chars: int) -> int:
    return max(1, math.ceil(chars / 4))


def prompt_tokens(body: dict[str, Any]) -> int:
    """``ceil(chars / 4)`` of the prompt text (messages, system, prompt, input), at least 1."""
    chars = 0
    for key in ("messages", "system", "prompt", "input"):
        if key in body:
            chars += _text_length(body[key])
    return tokens_for(chars)


def _split(text: str, count: int) -> list[str]:
    count = max(1, min(count, len(text)))
    return [text[len(text) * i // count:len(text) * (i + 1) // count] for i in range(count)]


def _placeholder_args(schema: Any) -> dict[str, Any]:
    """Deterministic arguments for a JSON schema: one value per required (or any) property."""
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return {}
    properties = schema["properties"]
    names = schema.get("required") or list(properties)
    samples = {"string": "mock", "integer": 1, "number": 1.5, "boolean": True, "array": [],
               "object": {}}
    args: dict[str, Any] = {}
    for name in names:
        spec = properties.get(name) if isinstance(properties.get(name), dict) else {}
        if isinstance(spec.get("enum"), list) and spec["enum"]:
            args[name] = spec["enum"][0]
        else:
            kind = spec.get("type")
            args[name] = samples.get(kind if isinstance(kind, str) else "string", "mock")
    return args


def _pick_tool(body: dict[str, Any], wanted: bool | str, anthropic: bool) -> tuple[str, str] | None:
    """(name, JSON arguments) of the tool to call, or None without tools."""
    tools = body.get("tools")
    if not wanted or not isinstance(tools, list) or not tools:
        return None
    candidates = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        if anthropic:
            candidates.append((tool.get("name"), tool.get("input_schema")))
        else:
            function = tool.get("function") if isinstance(tool.get("function"), dict) else {}
            candidates.append((function.get("name"), function.get("parameters")))
    candidates = [(name, schema) for name, schema in candidates if isinstance(name, str)]
    if not candidates:
        return None
    chosen = candidates[0]
    if isinstance(wanted, str):
        chosen = next((item for item in candidates if item[0] == wanted), chosen)
    return chosen[0], orjson.dumps(_placeholder_args(chosen[1])).decode()


@dataclass(slots=True)
class Call:
    """What one request asks for and what the mock answers, before it is shaped."""

    api: str                 # openai | azure | anthropic
    op: str                  # chat | completions | embeddings | messages
    body: dict[str, Any]
    model: str
    controls: Controls
    stream: bool
    include_usage: bool
    prompt_tokens: int
    text: str
    tool: tuple[str, str] | None
    completion_tokens: int
    finish: str              # stop | length | tool_calls
    chunks: int
    fast_key: tuple[str, bytes] | None = None  # (path, raw body) of a request without controls


def _sse(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _event(name: str, payload: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


DONE = b"data: [DONE]\n\n"
BROKEN_OPENAI_EVENT = b'data: {"id": "chatcmpl-broken", "choices": [{"delta": \n\n'
BROKEN_ANTHROPIC_EVENT = b'event: content_block_delta\ndata: {"type": "content_block_delta", \n\n'
BROKEN_BODY = b'{"id": "mock-broken", "object": "chat.completion", "choices": [{"message": '


# --- response shapes -------------------------------------------------------------------

def openai_usage(call: Call) -> dict[str, Any]:
    cached = min(call.controls.cached_tokens, call.prompt_tokens)
    usage: dict[str, Any] = {
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "total_tokens": call.prompt_tokens + call.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
    }
    if call.op == "chat":
        usage["completion_tokens_details"] = {
            "reasoning_tokens": call.controls.reasoning_tokens, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
        }
    return usage


def anthropic_usage(call: Call) -> dict[str, Any]:
    return {
        "input_tokens": call.prompt_tokens,
        "cache_creation_input_tokens": call.controls.cache_creation_tokens,
        "cache_read_input_tokens": call.controls.cached_tokens,
        "output_tokens": call.completion_tokens,
        "service_tier": "standard",
    }


def openai_body(call: Call, rid: str, created: Any) -> dict[str, Any]:
    if call.op == "completions":
        body: dict[str, Any] = {
            "id": f"cmpl-{rid}", "object": "text_completion", "created": created,
            "model": call.model,
            "choices": [{"text": call.text, "index": 0, "logprobs": None,
                         "finish_reason": call.finish}],
        }
    else:
        message: dict[str, Any] = {"role": "assistant", "content": call.text, "refusal": None,
                                   "annotations": []}
        if call.tool is not None:
            message["content"] = None
            message["tool_calls"] = [{"id": f"call_{rid}", "type": "function",
                                      "function": {"name": call.tool[0],
                                                   "arguments": call.tool[1]}}]
        body = {
            "id": f"chatcmpl-{rid}", "object": "chat.completion", "created": created,
            "model": call.model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": call.finish}],
            "service_tier": "default", "system_fingerprint": "fp_mock",
        }
    if not call.controls.no_usage:
        body["usage"] = openai_usage(call)
    return body


def openai_events(call: Call, rid: str, created: Any) -> list[tuple[bytes, bool]]:
    """SSE events of an OpenAI stream, each with whether it carries content."""
    completions = call.op == "completions"
    base: dict[str, Any] = {
        "id": f"{'cmpl' if completions else 'chatcmpl'}-{rid}",
        "object": "text_completion" if completions else "chat.completion.chunk",
        "created": created, "model": call.model,
    }
    if not completions:
        base["service_tier"] = "default"
        base["system_fingerprint"] = "fp_mock"
    usage_chunks = call.include_usage and not call.controls.no_usage
    if call.include_usage:
        base["usage"] = None

    def chunk(choice: dict[str, Any]) -> bytes:
        return _sse({**base, "choices": [{"index": 0, **choice}]})

    events: list[tuple[bytes, bool]] = []
    if completions:
        pieces = _split(call.text, call.chunks) if call.text else [""]
        events += [(chunk({"text": piece, "logprobs": None, "finish_reason": None}), True)
                   for piece in pieces]
        events.append((chunk({"text": "", "logprobs": None, "finish_reason": call.finish}),
                       False))
    elif call.tool is not None:
        name, arguments = call.tool
        events.append((chunk({"delta": {"role": "assistant", "content": None, "refusal": None,
                                        "tool_calls": [{"index": 0, "id": f"call_{rid}",
                                                        "type": "function",
                                                        "function": {"name": name,
                                                                     "arguments": ""}}]},
                              "logprobs": None, "finish_reason": None}), False))
        events += [(chunk({"delta": {"tool_calls": [{"index": 0,
                                                     "function": {"arguments": piece}}]},
                           "logprobs": None, "finish_reason": None}), True)
                   for piece in _split(arguments, call.chunks)]
        events.append((chunk({"delta": {}, "logprobs": None, "finish_reason": call.finish}),
                       False))
    else:
        events.append((chunk({"delta": {"role": "assistant", "content": "", "refusal": None},
                              "logprobs": None, "finish_reason": None}), False))
        pieces = _split(call.text, call.chunks) if call.text else []
        events += [(chunk({"delta": {"content": piece}, "logprobs": None,
                           "finish_reason": None}), True) for piece in pieces]
        events.append((chunk({"delta": {}, "logprobs": None, "finish_reason": call.finish}),
                       False))
    if usage_chunks:
        events.append((_sse({**base, "choices": [], "usage": openai_usage(call)}), False))
    events.append((DONE, False))
    return events


def anthropic_body(call: Call, rid: str, _created: Any = None) -> dict[str, Any]:
    if call.tool is not None:
        content = [{"type": "tool_use", "id": f"toolu_{rid}", "name": call.tool[0],
                    "input": orjson.loads(call.tool[1])}]
    else:
        content = [{"type": "text", "text": call.text}]
    body: dict[str, Any] = {
        "id": f"msg_{rid}", "type": "message", "role": "assistant", "model": call.model,
        "content": content, "stop_reason": call.finish, "stop_sequence": None,
    }
    if not call.controls.no_usage:
        body["usage"] = anthropic_usage(call)
    return body


def anthropic_events(call: Call, rid: str, _created: Any = None) -> list[tuple[bytes, bool]]:
    no_usage = call.controls.no_usage
    message: dict[str, Any] = {
        "id": f"msg_{rid}", "type": "message", "role": "assistant", "content": [],
        "model": call.model, "stop_reason": None, "stop_sequence": None,
    }
    if not no_usage:
        message["usage"] = {**anthropic_usage(call), "output_tokens": 1}
    if call.tool is not None:
        block: dict[str, Any] = {"type": "tool_use", "id": f"toolu_{rid}", "name": call.tool[0],
                                 "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": piece}
                  for piece in _split(call.tool[1], call.chunks)]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece}
                  for piece in (_split(call.text, call.chunks) if call.text else [])]
    events: list[tuple[bytes, bool]] = [
        (_event("message_start", {"type": "message_start", "message": message}), False),
        (_event("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": block}), False),
        (_event("ping", {"type": "ping"}), False),
    ]
    events += [(_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": delta}), True) for delta in deltas]
    message_delta: dict[str, Any] = {"type": "message_delta",
                                     "delta": {"stop_reason": call.finish,
                                               "stop_sequence": None}}
    if not no_usage:
        message_delta["usage"] = {"output_tokens": call.completion_tokens}
    events += [
        (_event("content_block_stop", {"type": "content_block_stop", "index": 0}), False),
        (_event("message_delta", message_delta), False),
        (_event("message_stop", {"type": "message_stop"}), False),
    ]
    return events


def _embedding(text: str, dimensions: int) -> list[float]:
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values += [(number / 0x7FFFFFFF) - 1.0 for number in struct.unpack("<8I", digest)]
        counter += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(value * value for value in values)) or 1.0
    return [value / norm for value in values]


def error_body(api: str, status: int, message: str) -> dict[str, Any]:
    if api == "anthropic":
        kind = ANTHROPIC_ERRORS.get(status, "api_error" if status >= 500 else
                                    "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    if api == "azure":
        return {"error": {"code": str(status), "message": message}}
    kind, code = OPENAI_ERRORS.get(status, ("server_error" if status >= 500 else
                                            "invalid_request_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def error_response(api: str, status: int, message: str, *,
                   retry_after: str | None = None, location: str | None = None
                   ) -> web.Response:
    headers = {"retry-after": retry_after} if retry_after else {}
    if location:
        headers["location"] = location
    return web.Response(status=status, body=orjson.dumps(error_body(api, status, message)),
                        content_type="application/json", headers=headers)


HUNG_UP = web.RequestKey("mock_hung_up", bool)


class _HungUp(Exception):
    """Raised after the mock closed a connection on purpose."""


# --- the server ------------------------------------------------------------------------

class MockUpstream:
    """The mock server. ``async with MockUpstream() as mock:`` serves on 127.0.0.1 on a free
    port in the running loop; ``MockUpstream.start_in_thread()`` serves from a thread."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 content: str = DEFAULT_CONTENT, chunks: int = DEFAULT_CHUNKS,
                 record: bool = True) -> None:
        self.host = host
        self.port = port
        self.content = content
        self.chunks = chunks
        self.record = record
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0
        self._fail_counts: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._cache: dict[tuple[Any, ...], bytes] = {}
        # (path, raw body) -> (template, stream) of requests without controls, when not
        # recording: the same bytes get the same answer without parsing them again.
        self._fast: dict[tuple[str, bytes], tuple[bytes, bool]] = {}
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        """Forget recorded requests, disconnects and ``fail_times`` counters."""
        self.requests.clear()
        self.disconnects = 0
        self._fail_counts.clear()
        self._cache.clear()
        self._fast.clear()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        route = app.router
        for path, op in (("/v1/chat/completions", "chat"), ("/v1/completions", "completions"),
                         ("/v1/embeddings", "embeddings")):
            route.add_post(path, self._handler("openai", op))
        route.add_post("/openai/deployments/{deployment}/chat/completions",
                       self._handler("azure", "chat"))
        route.add_post("/openai/deployments/{deployment}/completions",
                       self._handler("azure", "completions"))
        route.add_post("/openai/deployments/{deployment}/embeddings",
                       self._handler("azure", "embeddings"))
        route.add_post("/v1/messages", self._handler("anthropic", "messages"))
        route.add_get("/v1/models", self._list_models)
        return app

    async def start(self) -> MockUpstream:
        runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True,
                               shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=4096)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> MockUpstream:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @classmethod
    def start_in_thread(cls, **kwargs: Any) -> MockUpstream:
        """Serve from a daemon thread with its own event loop; call ``stop()`` when done."""
        mock = cls(**kwargs)
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            mock._loop = loop
            try:
                loop.run_until_complete(mock.start())
            except BaseException as exc:
                failure.append(exc)
                loop.close()
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
                loop.run_until_complete(mock.close())
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

        mock._thread = threading.Thread(target=run, name="mock-upstream", daemon=True)
        mock._thread.start()
        ready.wait()
        if failure:
            mock._thread.join()
            raise failure[0]
        return mock

    def stop(self) -> None:
        """Stop a server started by :meth:`start_in_thread`."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    # request handling ----------------------------------------------------------------

    def _handler(self, api: str, op: str) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._handle(request, api, op)
        return handle

    async def _list_models(self, request: web.Request) -> web.Response:
        if self.record:
            self._record(request, b"", None)
        return web.Response(body=MODELS_BODY, content_type="application/json")

    def _record(self, request: web.Request, raw: bytes, body: Any) -> RecordedRequest:
        recorded = RecordedRequest(
            method=request.method, path=request.path, query=dict(request.query),
            headers={name.lower(): value for name, value in request.headers.items()},
            json=body, time=time.monotonic(), body=raw,
        )
        self.requests.append(recorded)
        return recorded

    def _auth_error(self, request: web.Request, api: str) -> web.Response | None:
        headers = request.headers
        if api == "azure":
            if not headers.get("api-key"):
                return error_response(api, 401, AZURE_DENIED)
            if not request.query.get("api-version"):
                return error_response(api, 401, "Missing required query parameter api-version")
        elif api == "anthropic":
            if not headers.get("x-api-key") and not _bearer(headers):
                # anthropic SDK 2.x sends the API key as ``Authorization: Bearer``.
                return error_response(api, 401, "x-api-key header is required")
            if not headers.get("anthropic-version"):
                return error_response(api, 400, "anthropic-version: header is required")
        return None

    async def _handle(self, request: web.Request, api: str, op: str) -> web.StreamResponse:
        raw = await request.read()
        if not self.record:
            fast = self._fast.get((request.path, raw))
            if fast is not None and self._plain(request, api):
                return await self._send(request, api, self._fill(fast[0]), fast[1])
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                bad_json = True
        recorded = self._record(request, raw, body) if self.record else None
        denied = self._auth_error(request, api)
        if denied is not None:
            return denied
        api_key = _api_key(request.headers)
        try:
            controls = parse_controls(request.raw_headers,
                                      body.get("mock") if isinstance(body, dict) else None,
                                      api_key)
        except ControlError as exc:
            return error_response(api, 400, str(exc))
        if controls.fail_times is not None:
            controls = self._apply_fail_times(controls, api_key)
        try:
            if controls.delay_ms > 0:
                await asyncio.sleep(controls.delay_ms / 1000)
            if controls.drop:
                await self._hang_up(request)
            if controls.status is not None and not 200 <= controls.status < 300:
                return error_response(api, controls.status,
                                      f"mock upstream error (status {controls.status})",
                                      retry_after=controls.retry_after,
                                      location=controls.location)
            if bad_json or not isinstance(body, dict):
                return error_response(api, 400, "We could not parse the JSON body of your "
                                      "request. The body must be a JSON object.")
            invalid = _invalid(api, op, body)
            if invalid:
                return error_response(api, 400, invalid)
            call = self._call(request, api, op, body, controls)
            if controls is NO_CONTROLS:
                call.fast_key = (request.path, raw)
            if op == "embeddings":
                return self._embeddings(call)
            if call.stream:
                return await self._stream(request, call)
            return await self._respond(request, call)
        except _HungUp:
            raise asyncio.CancelledError from None
        except asyncio.CancelledError:
            if not request.get(HUNG_UP):
                self._disconnected(recorded)
            raise
        except ConnectionError:
            self._disconnected(recorded)
            return web.Response(status=499)

    def _disconnected(self, recorded: RecordedRequest | None) -> None:
        self.disconnects += 1
        if recorded is not None:
            recorded.disconnected = True

    def _apply_fail_times(self, controls: Controls, api_key: str | None) -> Controls:
        key = controls.fail_key if controls.fail_key is not None else (api_key or "")
        count = self._fail_counts.get(key, 0) + 1
        self._fail_counts[key] = count
        if count > (controls.fail_times or 0):
            return dataclasses.replace(controls, **_CLEAN)
        failing = (controls.drop or controls.malformed or controls.drop_after_chunks is not None
                   or (controls.status is not None and not 200 <= controls.status < 300)
                   or controls.delay_ms > 0 or controls.first_byte_delay_ms > 0)
        if not failing:
            return dataclasses.replace(controls, status=500)
        return controls

    async def _hang_up(self, request: web.Request) -> NoReturn:
        """Close the connection (flushing what was written) and let aiohttp cancel us."""
        request[HUNG_UP] = True
        transport = request.transport
        if transport is not None:
            transport.close()
        await asyncio.sleep(30)  # connection_lost cancels this handler first
        raise _HungUp

    def _call(self, request: web.Request, api: str, op: str, body: dict[str, Any],
              controls: Controls) -> Call:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            model = request.match_info.get("deployment", "mock-model")
        anthropic = api == "anthropic"
        stream = body.get("stream") is True and op != "embeddings"
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        text = self.content if controls.content is None else controls.content
        tool = _pick_tool(body, controls.tool_call, anthropic) if op != "embeddings" else None
        produced = (tool[0] + tool[1]) if tool else text
        completion = tokens_for(len(produced))
        finish = ("tool_use" if anthropic else "tool_calls") if tool else \
            ("end_turn" if anthropic else "stop")
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if tool is None and isinstance(limit, int) and 0 < limit < completion:
            text = text[:limit * 4]
            completion = limit
            finish = "max_tokens" if anthropic else "length"
        return Call(
            api=api, op=op, body=body, model=model, controls=controls, stream=stream,
            include_usage=include_usage, prompt_tokens=prompt_tokens(body), text=text, tool=tool,
            completion_tokens=completion + controls.reasoning_tokens * (not anthropic),
            finish=finish,
            chunks=controls.chunks if controls.chunks is not None else self.chunks,
        )

    def _headers(self, api: str, controls: Controls = NO_CONTROLS) -> dict[str, str]:
        rid = f"req_mock{next(self._ids):012d}"
        headers = ({"request-id": rid} if api == "anthropic"
                   else {"x-request-id": rid, "openai-processing-ms": "1"})
        if controls.set_cookie:
            headers["set-cookie"] = controls.set_cookie
        return headers

    def _fill(self, template: bytes) -> bytes:
        """A cached body with a fresh id and creation time."""
        rid = f"mock{next(self._ids):016x}".encode()
        return template.replace(ID_PLACEHOLDER_BYTES, rid).replace(
            CREATED_PLACEHOLDER_BYTES, str(int(time.time())).encode())

    def _render(self, call: Call, build: Callable[[Call, str, Any], Any]) -> bytes:
        """The body for ``call``; calls without controls reuse a cached template."""
        if call.controls is not NO_CONTROLS or call.tool is not None:
            return _join(build(call, f"mock{next(self._ids):016x}", int(time.time())))
        key = (call.api, call.op, call.model, call.prompt_tokens, call.stream,
               call.include_usage, call.text, call.finish, call.chunks)
        template = self._cache.get(key)
        if template is None:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            template = _join(build(call, ID_PLACEHOLDER, CREATED_PLACEHOLDER))
            self._cache[key] = template
        if call.fast_key is not None and not self.record:
            if len(self._fast) >= CACHE_LIMIT:
                self._fast.clear()
            self._fast[call.fast_key] = (template, call.stream)
        return self._fill(template)

    async def _send(self, request: web.Request, api: str, payload: bytes,
                    stream: bool, controls: Controls = NO_CONTROLS) -> web.StreamResponse:
        headers = self._headers(api, controls)
        if not stream:
            return web.Response(body=payload, content_type="application/json", headers=headers)
        response = web.StreamResponse(headers={**headers, **SSE_HEADERS})
        await response.prepare(request)
        await response.write(payload)
        await response.write_eof()
        return response

    def _plain(self, request: web.Request, api: str) -> bool:
        """Whether a request carries no header or key control and passes authentication."""
        if self._auth_error(request, api) is not None:
            return False
        try:
            controls = parse_controls(request.raw_headers, None, _api_key(request.headers))
        except ControlError:
            return False
        return controls is NO_CONTROLS

    async def _respond(self, request: web.Request, call: Call) -> web.StreamResponse:
        controls = call.controls
        if controls.malformed:
            payload = BROKEN_BODY
        else:
            build = anthropic_body if call.api == "anthropic" else openai_body
            payload = self._render(call, build)
        if controls.first_byte_delay_ms <= 0 and controls.drop_after_chunks is None:
            return await self._send(request, call.api, payload, False, call.controls)
        response = web.StreamResponse(headers={**self._headers(call.api, call.controls),
                                               "content-type": "application/json"})
        response.content_length = len(payload)
        await response.prepare(request)
        if controls.first_byte_delay_ms > 0:
            await asyncio.sleep(controls.first_byte_delay_ms / 1000)
        if controls.drop_after_chunks is not None:
            await response.write(payload[:len(payload) // 2])
            await self._hang_up(request)
        await response.write(payload)
        await response.write_eof()
        return response

    async def _stream(self, request: web.Request, call: Call) -> web.StreamResponse:
        controls = call.controls
        anthropic = call.api == "anthropic"
        build = anthropic_events if anthropic else openai_events
        if (controls.chunk_delay_ms <= 0 and controls.first_byte_delay_ms <= 0
                and controls.drop_after_chunks is None and not controls.malformed):
            return await self._send(request, call.api, self._render(call, build), True,
                                    call.controls)
        response = web.StreamResponse(headers={**self._headers(call.api, call.controls),
                                               **SSE_HEADERS})
        await response.prepare(request)
        events = build(call, f"mock{next(self._ids):016x}", int(time.time()))
        if controls.malformed:
            first_content = next((i for i, (_, content) in enumerate(events) if content), 1)
            events.insert(first_content + 1,
                          (BROKEN_ANTHROPIC_EVENT if anthropic else BROKEN_OPENAI_EVENT, False))
        cut = None
        if controls.drop_after_chunks is not None:
            cut = _cut_index(events, controls.drop_after_chunks)
            events = events[:cut]
        if controls.first_byte_delay_ms > 0:
            await asyncio.sleep(controls.first_byte_delay_ms / 1000)
        for index, (event, _) in enumerate(events):
            if index and controls.chunk_delay_ms > 0:
                await asyncio.sleep(controls.chunk_delay_ms / 1000)
            await response.write(event)
        if cut is not None:
            await self._hang_up(request)
        await response.write_eof()
        return response

    def _embeddings(self, call: Call) -> web.Response:
        body = call.body
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) \
            else [inputs]
        dimensions = body.get("dimensions")
        if not isinstance(dimensions, int) or dimensions <= 0:
            dimensions = DEFAULT_EMBEDDING_DIMENSIONS
        base64_format = body.get("encoding_format") == "base64"
        data = []
        tokens = 0
        for index, item in enumerate(items):
            if isinstance(item, list):
                text = " ".join(str(token) for token in item)
                tokens += max(1, len(item))
            else:
                text = str(item)
                tokens += tokens_for(len(text))
            vector: Any = _embedding(text, dimensions)
            if base64_format:
                vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        if call.controls.malformed:
            return web.Response(body=BROKEN_BODY, content_type="application/json")
        payload: dict[str, Any] = {"object": "list", "data": data, "model": call.model}
        if not call.controls.no_usage:
            payload["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return web.Response(body=orjson.dumps(payload), content_type="application/json",
                            headers=self._headers(call.api, call.controls))


def _join(built: Any) -> bytes:
    if isinstance(built, list):
        return b"".join(event for event, _ in built)
    return orjson.dumps(built)


def _cut_index(events: list[tuple[bytes, bool]], after: int) -> int:
    """Index just past the ``after``-th content event (0: before the first one; more than
    there are: just past the last one)."""
    positions = [index for index, (_, content) in enumerate(events) if content]
    if not positions:
        return 1
    if after <= 0:
        return positions[0]
    return positions[min(after, len(positions)) - 1] + 1


def _invalid(api: str, op: str, body: dict[str, Any]) -> str | None:
    """The 400 message for a request the real provider would reject, or None."""
    if api == "openai" and not isinstance(body.get("model"), str):
        return "you must provide a model parameter"
    if op in ("chat", "messages") and (not isinstance(body.get("messages"), list)
                                       or not body["messages"]):
        return "messages: a non-empty array of messages is required"
    if op == "completions" and "prompt" not in body:
        return "prompt: this parameter is required"
    if op == "embeddings" and body.get("input") in (None, "", []):
        return "input: this parameter is required"
    if api == "anthropic":
        if not isinstance(body.get("model"), str):
            return "model: Field required"
        if not isinstance(body.get("max_tokens"), int):
            return "max_tokens: Field required"
    return None


# --- command line ------------------------------------------------------------------------

def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop
    return uvloop.new_event_loop


async def _serve_forever(mock: MockUpstream) -> None:
    await mock.start()
    print(f"mock upstream on {mock.url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await mock.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Mock OpenAI/Azure/Anthropic upstream.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--content", default=DEFAULT_CONTENT)
    parser.add_argument("--chunks", type=int, default=DEFAULT_CHUNKS)
    parser.add_argument("--record", action="store_true",
                        help="keep every request in memory (off by default for benchmarks)")
    args = parser.parse_args(argv)
    mock = MockUpstream(host=args.host, port=args.port, content=args.content,
                        chunks=args.chunks, record=args.record)
    with contextlib.suppress(KeyboardInterrupt), \
            asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve_forever(mock))


if __name__ == "__main__":
    main()
