"""The inference data plane: a plain ASGI app (no Django request handling, no ORM).

    POST /v1/chat/completions   POST /v1/completions   POST /v1/embeddings   GET /v1/models
    (the same under /openai/v1/...)                     POST /anthropic/v1/messages

Lifecycle of one request: request id → body (413/400) → virtual key (401/403) → model
resolution (routing rules, ``provider/model``, key configs, aliases; 404) → for each
candidate: access (403), one ledger ``admit`` (402/429/503), provider key by weight skipping
open circuits, the upstream call with retries and backoff → response (streamed as it
arrives) → cost, ``settle``, one usage event. Failed candidates are released and the next
fallback is admitted again for its own provider/model.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import orjson

from gateway.errors import (
    BadRequest,
    ClientDisconnected,
    CorsOriginNotAllowed,
    GatewayError,
    GatewayStopping,
    InvalidJSON,
    LimitExceeded,
    MethodNotAllowed,
    ModelNotFound,
    NoProviderAvailable,
    NotFound,
    ProviderBlocked,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from gateway.formats import dollars_text
from gateway.proxy import translation
from gateway.proxy.adapters import (
    Exchange,
    UnsupportedOperation,
    answer_length,
    anthropic_usage,
    estimate_tokens,
    exchange_for,
    merge_usage,
    openai_usage,
    prompt_length,
    upstream_request,
)
from gateway.proxy.breaker import Breakers
from gateway.proxy.http import (
    Cors,
    Receive,
    Send,
    encode_headers,
    error_body,
    error_headers,
    forwarded_headers,
    new_request_id,
    provider_error_in_dialect,
    read_body,
    request_headers,
    request_id_from,
    send_response,
)
from gateway.proxy.resolve import RouteStats, resolve, weighted_order
from gateway.proxy.sse import MalformedEvent, SSEParser, parse_event
from governance.engine import Admission, Governor, presented_key
from governance.ledger import Reservation
from governance.ledger import Usage as LedgerUsage
from governance.sink import UsageEvent
from pricing.cost import Usage
from routing.cel import get_engine
from routing.engine import RoutingEngine

logger = logging.getLogger(__name__)

# path -> (operation, dialect)
ROUTES: dict[str, tuple[str, str]] = {}
for _prefix in ("/v1", "/openai/v1", "/openai"):
    ROUTES[f"{_prefix}/chat/completions"] = ("chat", "openai")
    ROUTES[f"{_prefix}/completions"] = ("completions", "openai")
    ROUTES[f"{_prefix}/embeddings"] = ("embeddings", "openai")
    ROUTES[f"{_prefix}/models"] = ("models", "openai")
ROUTES["/anthropic/v1/messages"] = ("messages", "anthropic")
ROUTES["/anthropic/v1/models"] = ("models", "anthropic")
# GET .../models/<id> (the id may hold slashes: "provider/model").
MODEL_PATHS = tuple(f"{path}/" for path, route in ROUTES.items() if route[0] == "models")
ANTHROPIC_PAGE_DEFAULT, ANTHROPIC_PAGE_MAX = 20, 1000  # Anthropic's list limits

REQUEST_TYPES = {"chat": "chat_completion", "messages": "chat_completion",
                 "completions": "text_completion", "embeddings": "embedding"}
# Fields only the gateway reads; never sent upstream.
GATEWAY_FIELDS = ("fallbacks",)
SSE_HEADERS = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no"))
SSE_SET_HEADERS = frozenset({b"content-type", b"cache-control", b"x-accel-buffering"})
# Content events of a pass-through stream kept for counting their text later, at most.
UNCOUNTED_MAX_BYTES = 256 * 1024
ROUTE_HEADERS_CACHE_MAX = 10_000
# Control characters in a header value would make the server drop the response: names an
# operator gave (a routing rule, a routed model) are sent with "?" in their place.
CONTROL_BYTES = bytes(byte if 32 <= byte != 127 else ord("?") for byte in range(256))
MAX_FALLBACKS = 10
NOTHING = Reservation()  # what a request with no limits reserves
# What ends a stream on the provider's side (anything else that ends one is a bug of ours).
STREAM_BREAKS = (aiohttp.ClientError, OSError, TimeoutError, translation.TranslationError,
                 MalformedEvent)
# Answers to a request the gateway sent its provider more than once carry
# ``x-should-retry: false`` (honoured by the official OpenAI and Anthropic SDKs).
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
SHOULD_NOT_RETRY = (b"x-should-retry", b"false")
END_OF_STREAM_WAIT_S = 1.0  # for the last bytes of a stream cut short
# The message uvicorn cancels the requests it stops waiting for with (uvicorn/server.py).
SERVER_SHUTDOWN_CANCEL = "timeout graceful shutdown exceeded"
# A request still waiting for its provider after this long (at most half as long again) gets a
# task that watches for its client leaving (see ClientWatches); shorter ones never get one.
CLIENT_WATCH_DELAY_S = 0.25


def _fail(field_name: str, problem: str) -> BadRequest:
    return BadRequest(f"{field_name}: {problem}", fields={field_name: [problem]})


def parse_body(raw: bytes, operation: str) -> dict[str, Any]:
    """The JSON body, checked just enough to route, price and admit it; 400 naming the field."""
    if not raw:
        raise InvalidJSON("Request body is empty: send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    model = body.get("model")
    if model is None:
        raise _fail("model", "required")
    if not isinstance(model, str) or not model.strip():
        raise _fail("model", "must be a non-empty string")
    if len(model) > 256:
        raise _fail("model", "longer than 256 characters")
    if not model.isprintable():  # it is echoed in x-gateway-model
        raise _fail("model", "must not contain control characters")
    if operation in ("chat", "messages"):
        messages = body.get("messages")
        if messages is None:
            raise _fail("messages", "required")
        if not isinstance(messages, list) or not messages:
            raise _fail("messages", "must be a non-empty array")
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                raise _fail(f"messages[{index}]", "must be an object")
            if not isinstance(message.get("role"), str):
                raise _fail(f"messages[{index}].role", "required string")
    elif operation == "completions":
        if "prompt" not in body:
            raise _fail("prompt", "required")
        if not isinstance(body["prompt"], str | list):
            raise _fail("prompt", "must be a string or an array")
    elif operation == "embeddings":
        if "input" not in body:
            raise _fail("input", "required")
        if not isinstance(body["input"], str | list):
            raise _fail("input", "must be a string or an array")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _fail("stream", "must be a boolean")
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1 or value > 10_000_000):
            raise _fail(name, "must be an integer between 1 and 10000000")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _fail("stream_options", "must be an object")
    fallbacks = body.get("fallbacks")
    if fallbacks is not None:
        if not isinstance(fallbacks, list) or not all(isinstance(item, str) and item.isprintable()
                                                      for item in fallbacks):
            raise _fail("fallbacks", "must be an array of 'provider/model' strings")
        if len(fallbacks) > MAX_FALLBACKS:
            raise _fail("fallbacks", f"at most {MAX_FALLBACKS} entries")
    return body


@dataclass
class Failure:
    """A candidate that did not produce a response; ``response`` is the provider's own error
    (status, body, headers) when there was one."""

    error: GatewayError
    response: tuple[int, bytes, list[tuple[bytes, bytes]]] | None = None
    final: bool = False  # a 4xx the caller must see as is: no fallback
    reached: bool = False  # some attempt reached the provider


@dataclass(slots=True)
class FailedCandidate:
    """A candidate that was admitted and failed: the one that answers if no later one does."""

    candidate: Any
    admission: Admission
    index: int
    failure: Failure

    @property
    def status(self) -> int:
        """The status the client gets: the provider's own for a final 4xx, else the error's."""
        answer = self.failure.response if self.failure.final else None
        return answer[0] if answer else self.failure.error.status_code


@dataclass(slots=True, eq=False)  # hashed by identity (ClientWatches)
class Call:
    """Everything about one inference request."""

    scope: dict[str, Any]
    receive: Receive
    send: Send
    started: float
    request_id: str  # x-request-id: the client's own when it sent a valid one
    ledger_id: str  # unique: the request id when the gateway made it up, else a new id
    headers: dict[str, str]
    operation: str
    dialect: str
    base_headers: list[tuple[bytes, bytes]]  # on every response: request id, CORS
    body: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    request_type: str = ""
    snapshot: Any = None
    key: Any = None
    rule_id: str = ""
    rule_name: str = ""
    upstream_ms: float = 0.0
    waited_ms: float = 0.0  # for the client's body, or a backoff: not the gateway's overhead
    response_started: bool = False
    prompt_tokens_estimate: int = 0
    upstream_attempts: int = 0
    # Set while a provider works on an attempt (from sending it to having its answer), with
    # the provider key it went out with: what a request cut by a server stop is billed for.
    provider_working: bool = False
    provider_key: Any = None
    # Set when the client left before the answer started (see ClientWatches); ``cancelled``
    # when the watch cancelled the request's task to stop the provider's work.
    client_gone: bool = False
    cancelled_for_client: bool = False

    @property
    def wants_usage_chunk(self) -> bool:
        options = self.body.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True


class ProxyState:
    """Per worker: the governance runtime, one pooled aiohttp session, breakers, stats."""

    def __init__(self, runtime: Any, session: aiohttp.ClientSession, *, cors_origins: list[str],
                 max_body_bytes: int, cel_engine: str, max_depth: Callable[[], int],
                 rng: random.Random | None = None) -> None:
        self.runtime = runtime
        self.session = session
        self.breakers = Breakers()
        self.stats = RouteStats()
        self.watches = ClientWatches()
        self.rng = rng or random.Random()
        self.cors = Cors(cors_origins)
        self.max_body_bytes = max_body_bytes
        self.cel = get_engine(cel_engine)
        self.max_depth = max_depth
        self._engine: RoutingEngine | None = None
        self._timeouts: dict[tuple[int, int, int], aiohttp.ClientTimeout] = {}
        self._route_headers: dict[tuple[str, str, int, str],
                                  tuple[tuple[bytes, bytes], ...]] = {}

    def timeout_for(self, provider: Any) -> aiohttp.ClientTimeout:
        """The provider's connect and total timeouts, and its first-byte timeout as the
        socket read timeout: aiohttp starts that timer once the request is sent, so until
        the response starts it is the time to first byte. :func:`expect_idle_gaps` then
        switches the connection to the idle timeout for the rest of the response."""
        key = (provider.total_timeout_ms, provider.connect_timeout_ms,
               provider.first_byte_timeout_ms)
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(
                total=key[0] / 1000, sock_connect=key[1] / 1000, sock_read=key[2] / 1000)
        return timeout

    def route_headers(self, provider: str, model: str, index: int,
                      rule_name: str) -> tuple[tuple[bytes, bytes], ...]:
        """``x-gateway-provider``, ``-model``, ``-fallback-index`` and ``-routing-rule``,
        encoded once per combination."""
        key = (provider, model, index, rule_name)
        headers = self._route_headers.get(key)
        if headers is None:
            pairs = [("x-gateway-provider", provider), ("x-gateway-model", model),
                     ("x-gateway-fallback-index", str(index))]
            if rule_name:
                pairs.append(("x-gateway-routing-rule", rule_name))
            if len(self._route_headers) >= ROUTE_HEADERS_CACHE_MAX:
                self._route_headers.clear()
            headers = self._route_headers[key] = tuple(
                (name, value.translate(CONTROL_BYTES)) for name, value in encode_headers(pairs))
        return headers

    def routing_engine(self, snapshot: Any) -> RoutingEngine:
        """One engine (and its memo) per routing table, replaced when the snapshot is."""
        engine = self._engine
        if engine is None or engine.table is not snapshot.routing:
            engine = self._engine = RoutingEngine(snapshot.routing, engine=self.cel,
                                                  max_depth=self.max_depth, rng=self.rng)
        return engine


def expect_idle_gaps(response: aiohttp.ClientResponse, provider: Any) -> None:
    """The response has started: from now on the socket read timeout is the provider's idle
    timeout (the longest gap between chunks), no longer its first-byte timeout."""
    connection = response.connection
    if connection is not None and connection.protocol is not None:
        connection.protocol.read_timeout = provider.idle_timeout_ms / 1000


def backoff_seconds(attempt: int, initial_ms: int, max_ms: int, rng: random.Random,
                    retry_after: str | None = None) -> float:
    """Exponential backoff with full jitter in [base/2, base]; a provider's ``retry-after``
    is honoured when it is not longer than ``max_ms``."""
    if retry_after:
        with contextlib.suppress(ValueError):
            seconds = float(retry_after)
            if 0 <= seconds * 1000 <= max_ms:
                return seconds
    base = min(initial_ms * (2 ** attempt), max_ms) / 1000
    return base / 2 + rng.random() * base / 2


class InferenceApp:
    def __init__(self) -> None:
        self.state: ProxyState | None = None
        self.active = 0  # requests being handled, settlement and usage event included

    # -- entry point ------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        # One coroutine here, not two: every resumption of a request's task walks down the
        # whole chain of coroutines awaiting each other.
        started = time.perf_counter()
        headers = request_headers(scope)
        request_id = request_id_from(headers)
        path = scope["path"]
        dialect = "anthropic" if path.startswith("/anthropic") else "openai"
        state = self.state
        origin = headers.get("origin")
        cors_headers = state.cors.headers(origin) if state is not None and origin else []
        base_headers = encode_headers([("x-request-id", request_id), *cors_headers])
        if dialect == "anthropic":  # the Anthropic SDK's request_id
            base_headers.append((b"request-id", base_headers[0][1]))
        call = Call(scope=scope, receive=receive, send=send, started=started,
                    request_id=request_id,
                    ledger_id=request_id if request_id != headers.get("x-request-id")
                    else new_request_id(),
                    headers=headers, operation="", dialect=dialect, base_headers=base_headers)
        self.active += 1  # (no await before this line: nothing can stop the request earlier)
        try:
            if scope["method"] == "OPTIONS":
                await self._preflight(call, state)
                return
            route = ROUTES.get(path.rstrip("/") or path)
            model_id = ""
            if route is None and path.startswith(MODEL_PATHS):
                route, model_id = ("models", dialect), path.split("/models/", 1)[1]
            if route is None:
                raise NotFound(f"No inference route {scope['method']} {path}")
            call.operation = route[0]
            if state is None or state.runtime.snapshot is None:
                raise GatewayError("The gateway is starting; try again shortly")
            if call.operation == "models":
                if scope["method"] != "GET":
                    raise MethodNotAllowed(f"{path} accepts GET", allow="GET, OPTIONS")
                await self._models(call, state, model_id)
            else:
                if scope["method"] != "POST":
                    raise MethodNotAllowed(f"{path} accepts POST", allow="POST, OPTIONS")
                await self._infer(call, state)
        except GatewayError as error:
            if not call.response_started:
                await self._send_error(call, error)
        except ConnectionAbortedError:
            return
        except asyncio.CancelledError as exc:
            # The client left and the watch cancelled the provider's work: recorded already,
            # and there is nobody to answer. Any other cancellation (a server stop) goes on,
            # once the client knows why (the server would answer a bare 500).
            task = asyncio.current_task()
            if not call.cancelled_for_client or task is None or task.uncancel() > 0:
                if not call.response_started:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(END_OF_STREAM_WAIT_S):
                            await self._send_error(call, GatewayStopping())
                if SERVER_SHUTDOWN_CANCEL in str(exc):
                    # uvicorn's own cut at its shutdown timeout: answered (or the stream
                    # ended) and recorded. Ending quietly spares one error traceback per
                    # request, which on a normal stop reads like a crash.
                    logger.warning("request %s cut at the shutdown timeout: answered 503 "
                                   "gateway_shutdown and recorded", call.request_id)
                    return
                raise
        finally:
            self.active -= 1

    async def _send_error(self, call: Call, error: GatewayError) -> None:
        call.response_started = True
        headers = [*call.base_headers, *encode_headers(error_headers(error)),
                   *getattr(error, "rate_limit_headers", ()), self._overhead(call)]
        if call.upstream_attempts > 1 and error.status_code in RETRIED_STATUSES:
            # The gateway retried the provider already (with backoff): the official SDKs
            # would each retry the whole request again, multiplying the provider's calls.
            headers.append(SHOULD_NOT_RETRY)
        await send_response(call.send, error.status_code, error_body(error, call.dialect), headers)

    @staticmethod
    def _overhead(call: Call) -> tuple[bytes, bytes]:
        total_ms = (time.perf_counter() - call.started) * 1000
        return (b"x-gateway-overhead-ms",
                b"%.3f" % max(total_ms - call.upstream_ms - call.waited_ms, 0.0))

    async def _preflight(self, call: Call, state: ProxyState | None) -> None:
        origin = call.headers.get("origin")
        if state is None or not state.cors.allowed(origin):
            raise CorsOriginNotAllowed()
        call.response_started = True
        headers = [("x-request-id", call.request_id), *state.cors.preflight_headers(
            origin, call.headers.get("access-control-request-headers"))]
        await call.send({"type": "http.response.start", "status": 204,
                         "headers": encode_headers(headers)})
        await call.send({"type": "http.response.body", "body": b""})

    # -- GET /v1/models -----------------------------------------------------------------------

    async def _models(self, call: Call, state: ProxyState, model_id: str = "") -> None:
        """The models this key may use (``GET .../models``), or one of them (``GET
        .../models/<id>``, else 404), in the dialect's own shape."""
        runtime = state.runtime
        snapshot = runtime.snapshot
        key = runtime.governor.authenticate(snapshot, presented_key(call.headers))
        names: list[tuple[str, str]] = []
        pricer = snapshot.pricer
        providers = snapshot.providers
        configs = key.provider_configs.values() if key is not None else ()
        for config in configs:
            provider = providers.get(config.provider)
            if provider is None or not provider.enabled:
                continue
            if config.allows_every_model:
                names += [(f"{config.provider}/{model}", config.provider)
                          for model in pricer.catalog_model_ids(config.provider)]
            else:
                names += [(f"{config.provider}/{model}", config.provider)
                          for model in config.allowed_models]
        names += [(alias, "gateway") for alias in snapshot.aliases]
        owners = dict(names)
        created = int(snapshot.built_at)  # when this configuration took effect
        anthropic = call.dialect == "anthropic"
        if model_id:
            owner = owners.get(model_id)
            if owner is None:
                raise ModelNotFound(f"The model '{model_id}' does not exist or this virtual "
                                    f"key may not use it")
            body: Any = (_anthropic_model(model_id, created) if anthropic
                         else _openai_model(model_id, owner, created))
        elif anthropic:
            body = _anthropic_page(list(owners), created, _query(call.scope))
        else:
            body = {"object": "list", "data": [_openai_model(name, owner, created)
                                               for name, owner in owners.items()]}
        call.response_started = True
        await send_response(call.send, 200, orjson.dumps(body),
                            [*call.base_headers, self._overhead(call)])

    # -- inference ------------------------------------------------------------------------------

    async def _infer(self, call: Call, state: ProxyState) -> None:
        receiving = time.perf_counter()
        raw = await read_body(call.receive, call.headers, state.max_body_bytes)
        # (a slow upload is the client's time, not the gateway's overhead)
        call.waited_ms = (time.perf_counter() - receiving) * 1000
        call.body = parse_body(raw, call.operation)
        call.stream = call.body.get("stream") is True and call.operation != "embeddings"
        base_type = REQUEST_TYPES[call.operation]
        call.request_type = f"{base_type}_stream" if call.stream else base_type
        runtime = state.runtime
        governor: Governor = runtime.governor
        snapshot = call.snapshot = runtime.snapshot
        key = call.key = governor.authenticate(snapshot, presented_key(call.headers))
        requested = call.body["model"]
        query = _query(call.scope)
        resolution = resolve(
            snapshot, state.routing_engine(snapshot), key=key, requested=requested,
            request_type=base_type, headers=call.headers, query=query,
            capacity=governor.capacity(snapshot, key), stats=state.stats, rng=state.rng,
            request_fallbacks=call.body.get("fallbacks") or ())
        call.rule_id, call.rule_name = resolution.rule_id, resolution.rule_name
        call.prompt_tokens_estimate = estimate_tokens(prompt_length(call.body))
        max_tokens = call.body.get("max_tokens") or call.body.get("max_completion_tokens")
        denial: LimitExceeded | None = None
        failure: Failure | None = None
        # The failed candidate that answers if no later one does. One that reached its
        # provider is recorded even when every later candidate is skipped; it stays admitted
        # (``held``, and is settled at the end) until another candidate is admitted.
        last: FailedCandidate | None = None
        held = False
        final_index = len(resolution.candidates) - 1
        watches = state.watches
        watches.watch(call)
        try:
            for index, candidate in enumerate(resolution.candidates):
                if call.client_gone:  # no further candidate for a client that left
                    failure = failure or Failure(ClientDisconnected())
                    break
                provider = snapshot.providers.get(candidate.provider)
                if provider is None or not provider.enabled:
                    failure = failure or Failure(NoProviderAvailable(
                        f"Provider '{candidate.provider}' is not configured or disabled"))
                    continue
                try:
                    config = governor.authorize(key, candidate.provider, candidate.model)
                except GatewayError:
                    if index == 0:
                        raise
                    continue
                try:  # before admitting: a candidate that cannot serve the request is skipped
                    exchange = exchange_for(call.operation, provider.kind)
                except UnsupportedOperation as exc:  # e.g. embeddings on an Anthropic provider
                    failure = failure or Failure(BadRequest(
                        f"'{candidate.provider}/{candidate.model}' cannot answer "
                        f"{call.scope['path']}: {exc}"))
                    continue
                try:
                    upstream_body = self._upstream_body(call, exchange, candidate.model)
                except translation.TranslationError as exc:  # e.g. n: 2 for a Claude model
                    failure = failure or Failure(BadRequest(str(exc)))
                    continue
                limits = governor.limits_for(snapshot, key, candidate.provider, candidate.model)
                reservation = governor.reservation(  # the estimate matters only to limits
                    snapshot.pricer, provider=candidate.provider, model=candidate.model,
                    request_type=base_type, prompt_tokens=call.prompt_tokens_estimate,
                    max_output_tokens=0 if call.operation == "embeddings" else max_tokens,
                    virtual_key_id=key.id if key is not None else None) if limits else NOTHING
                admission_id = call.ledger_id if index == 0 else f"{call.ledger_id}#{index}"
                # One admission at a time: a concurrency limit of 1 still falls back.
                if held and last is not None:
                    held = False
                    await asyncio.shield(governor.release(last.admission))
                try:
                    admission = await governor.admit(admission_id, limits, reservation)
                except LimitExceeded as exc:
                    denial = denial or exc
                    continue
                state.stats.started(candidate.provider, candidate.model)
                attempts_before = call.upstream_attempts
                outcome: Failure | None = None
                upstream_started = time.perf_counter()
                try:
                    outcome = await self._try_candidate(call, state, candidate, provider, config,
                                                        exchange, upstream_body, admission, index)
                except asyncio.CancelledError:  # a server stop, or the client left (ClientWatches)
                    if call.provider_working and not call.response_started:
                        # Cut while the provider worked on it: it bills what it was sent, so the
                        # gateway bills the prompt too (estimated) and records the request.
                        usage = Usage(input_tokens=call.prompt_tokens_estimate)
                        status, error_type = ((499, "client_disconnected") if call.client_gone
                                              else (503, "gateway_shutdown"))
                        await self._settle(call, state, candidate, index, call.provider_key,
                                           admission, usage,
                                           self._cost(call, candidate, call.provider_key, usage),
                                           status=status, error_type=error_type)
                    else:  # nothing to bill, or already settled (a second release is a no-op)
                        await governor.release(admission)
                    raise
                except BaseException:
                    await governor.release(admission)
                    raise
                finally:
                    latency = (time.perf_counter() - upstream_started) * 1000
                    state.stats.finished(candidate.provider, candidate.model,
                                         latency if outcome is None else None)
                if outcome is None:
                    return  # answered, settled and recorded
                failure = outcome
                failure.reached = call.upstream_attempts > attempts_before
                answers = failure.reached or failure.final or index == final_index
                if answers and (last is None or failure.reached or not last.failure.reached):
                    last, held = FailedCandidate(candidate, admission, index, failure), True
                else:  # an earlier failure that reached its provider answers instead
                    await governor.release(admission)
                if failure.final:
                    break
        except asyncio.CancelledError:  # stopped between candidates
            if held and last is not None:  # it would have answered: accounted for all the same
                await self._account_failure(call, state, last, held=True)
            raise
        finally:
            watches.unwatch(call)
        if last is None:
            if denial is not None:
                raise denial
            raise failure.error if failure is not None else NoProviderAvailable()
        await self._finish_failure(call, state, last, held=held)

    async def _account_failure(self, call: Call, state: ProxyState, last: FailedCandidate, *,
                               held: bool) -> None:
        """The failure that answers: if it reached the provider, record it and, while still
        ``held``, settle it (the request counts); otherwise give the reservation back. (It is
        no longer held when a later candidate was admitted and failed without reaching its
        provider, or was denied.)"""
        if not last.failure.reached:
            if held:
                await state.runtime.governor.release(last.admission)
            return
        await self._settle(call, state, last.candidate, last.index, None, last.admission, None,
                           (0, True), status=last.status, error_type=last.failure.error.code,
                           held=held)

    async def _finish_failure(self, call: Call, state: ProxyState, last: FailedCandidate, *,
                              held: bool) -> None:
        """No candidate answered: account for this failure, then answer with it (in that
        order: a server stop while the answer is sent loses nothing)."""
        await self._account_failure(call, state, last, held=held)
        failure = last.failure
        # The provider's own answer for a 4xx it returned (a final one, or a 429 that lasted
        # through every retry: its body says why, e.g. OpenAI's insufficient_quota).
        answer = failure.response if failure.reached and failure.response is not None and (
            failure.final or failure.response[0] == 429) else None
        if answer is None:
            await self._send_error(call, failure.error)
            return
        body = answer[1]
        provider = call.snapshot.providers[last.candidate.provider]  # (it answered)
        if exchange_for(call.operation, provider.kind).translated:
            # a provider of the other API: the client's SDK reads its own API's errors
            body = provider_error_in_dialect(body, answer[0], call.dialect)
        headers = self._raw_headers(call, state, last.candidate, last.index, None)
        headers += forwarded_headers(answer[2])
        headers.append(self._overhead(call))
        if call.upstream_attempts > 1 and answer[0] in RETRIED_STATUSES:
            headers.append(SHOULD_NOT_RETRY)
        call.response_started = True
        await send_response(call.send, answer[0], body, headers)

    # -- one candidate: keys, retries, breaker ---------------------------------------------

    def _eligible_keys(self, provider: Any, config: Any, candidate: Any) -> list[Any]:
        keys = []
        for key in provider.keys:
            if not key.enabled:
                continue
            if candidate.key_id and key.id != candidate.key_id:
                continue
            if key.allowed_models and key.allowed_models != ("*",) and \
                    candidate.model not in key.allowed_models:
                continue
            if config is not None and not config.allow_all_keys and key.id not in config.key_ids:
                continue
            keys.append(key)
        return keys

    @staticmethod
    def _upstream_body(call: Call, exchange: Exchange, model: str) -> bytes:
        body = call.body
        if exchange.translated:
            if exchange.anthropic_upstream:
                translated = translation.chat_to_messages_request(body, model=model)
            else:
                translated = translation.messages_to_chat_request(body, model=model)
                if exchange.max_tokens_field != "max_tokens" and "max_tokens" in translated:
                    translated[exchange.max_tokens_field] = translated.pop("max_tokens")
            return orjson.dumps(translated)
        outgoing = {name: value for name, value in body.items() if name not in GATEWAY_FIELDS}
        outgoing["model"] = model
        if call.stream and not exchange.anthropic_upstream:
            options = outgoing.get("stream_options")
            outgoing["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                          "include_usage": True}
        return orjson.dumps(outgoing)

    async def _try_candidate(self, call: Call, state: ProxyState, candidate: Any, provider: Any,
                             config: Any, exchange: Exchange, body: bytes,
                             admission: Admission, index: int) -> Failure | None:
        keys = self._eligible_keys(provider, config, candidate)
        if not keys:
            if config is not None and not config.allow_all_keys and not config.key_ids:
                return Failure(ProviderBlocked(
                    f"The virtual key's provider config for '{provider.name}' allows none of "
                    f"its API keys: allow all keys (key_ids [\"*\"]) or list some"))
            return Failure(NoProviderAvailable(
                f"No enabled key of provider '{provider.name}' may serve '{candidate.model}'"))
        ordered = weighted_order([(key, key.weight) for key in keys], state.rng)
        timeout = state.timeout_for(provider)
        rejected: set[str] = set()
        attempt = 0
        last: Failure | None = None  # the latest attempt's failure
        while True:
            if call.client_gone:  # (during a backoff, or before this candidate's first try)
                return last or Failure(ClientDisconnected())
            now = state.breakers.clock()
            key = breaker = None
            for option in ordered:
                if option.id in rejected:
                    continue
                candidate_breaker = state.breakers.get(option.id, provider.failure_threshold,
                                                       provider.open_seconds)
                if candidate_breaker.allow(now):
                    key, breaker = option, candidate_breaker
                    break
            if key is None or breaker is None:
                if last is not None:
                    return last
                unavailable = NoProviderAvailable(
                    f"Every key of provider '{provider.name}' has an open circuit")
                # retry-after: when the first of them lets a probe through
                unavailable.retry_after_seconds = min(
                    (state.breakers.get(option.id, provider.failure_threshold,
                                        provider.open_seconds).seconds_until_probe(now)
                     for option in ordered if option.id not in rejected), default=1.0)
                return Failure(unavailable)
            request = upstream_request(provider.kind, provider.base_url, provider.api_version,
                                       key.value, exchange.upstream_operation,
                                       candidate.model, call.request_id, call.headers)
            sent_at = time.perf_counter()
            retry_after = None
            call.upstream_attempts += 1
            call.provider_working, call.provider_key = True, key
            try:
                # Redirects are not followed: one would carry the provider key (x-api-key,
                # api-key) to whatever host it names.
                response = await state.session.post(request.url, data=body,
                                                    headers=request.headers, timeout=timeout,
                                                    allow_redirects=False)
            except TimeoutError:
                call.upstream_ms += (time.perf_counter() - sent_at) * 1000
                breaker.failure(state.breakers.clock())
                last = Failure(UpstreamTimeout(  # connect, first byte or total: aiohttp's
                    f"Provider '{provider.name}' did not answer in time (connect "
                    f"{provider.connect_timeout_ms} ms, first byte "
                    f"{provider.first_byte_timeout_ms} ms, total {provider.total_timeout_ms} ms)"))
            except (aiohttp.ClientError, OSError) as exc:
                call.upstream_ms += (time.perf_counter() - sent_at) * 1000
                breaker.failure(state.breakers.clock())
                last = Failure(UpstreamError(
                    f"Provider '{provider.name}' could not be reached: {type(exc).__name__}"))
            else:
                status = response.status
                if 300 <= status < 400:  # a wrong base URL, most likely: not retried
                    call.provider_working = False
                    response.release()
                    call.upstream_ms += (time.perf_counter() - sent_at) * 1000
                    breaker.failure(state.breakers.clock())
                    return Failure(UpstreamError(
                        f"Provider '{provider.name}' answered a redirect ({status}); the "
                        f"gateway does not follow redirects: check the provider's base URL"))
                if status < 400:
                    result = await self._deliver(call, state, candidate, provider, exchange, key,
                                                 breaker, response, admission, index, sent_at)
                    if result is None:
                        return None
                    last = result
                else:
                    call.provider_working = False  # it answered: nothing more to bill
                    try:
                        payload = await response.read()
                    except (aiohttp.ClientError, OSError, TimeoutError):
                        payload = b""
                    finally:
                        response.release()
                    call.upstream_ms += (time.perf_counter() - sent_at) * 1000
                    upstream = (status, payload, list(response.raw_headers))
                    if status in (401, 403):
                        breaker.cancel_probe()
                        rejected.add(key.id)
                        last = Failure(UpstreamError(
                            f"Provider '{provider.name}' rejected its API key "
                            f"'{key.name}' ({status})"))
                        continue  # rotate to another key; not a retry
                    if status == 429 or status >= 500:
                        if status >= 500:
                            breaker.failure(state.breakers.clock())
                        else:
                            breaker.cancel_probe()
                        retry_after = response.headers.get("retry-after")
                        error_class = UpstreamRateLimited if status == 429 else UpstreamError
                        last = Failure(error_class(
                            f"Provider '{provider.name}' answered {status}"), upstream)
                    else:
                        breaker.success()
                        return Failure(UpstreamError(f"Provider answered {status}"), upstream,
                                       final=True)
            call.provider_working = False
            if attempt >= provider.max_retries:
                assert last is not None  # every attempt that comes here failed
                return last
            pause_s = backoff_seconds(attempt, provider.backoff_initial_ms,
                                      provider.backoff_max_ms, state.rng, retry_after)
            await asyncio.sleep(pause_s)
            call.waited_ms += pause_s * 1000  # waiting on the provider: not overhead
            attempt += 1

    # -- responses ------------------------------------------------------------------------------

    def _raw_headers(self, call: Call, state: ProxyState, candidate: Any, index: int,
                     admission: Admission | None) -> list[tuple[bytes, bytes]]:
        """The headers every answer from a provider carries: the request id (and CORS),
        the route taken and, when admitted, the key's rate limits."""
        raw = [*call.base_headers]
        raw += state.route_headers(candidate.provider, candidate.model, index, call.rule_name)
        if admission is not None:
            raw += state.runtime.governor.rate_limit_headers(admission)
        return raw

    async def _deliver(self, call: Call, state: ProxyState, candidate: Any, provider: Any,
                       exchange: Exchange, key: Any, breaker: Any,
                       response: aiohttp.ClientResponse, admission: Admission, index: int,
                       sent_at: float) -> Failure | None:
        if call.stream:
            return await self._deliver_stream(call, state, candidate, provider, exchange, key,
                                              breaker, response, admission, index, sent_at)
        expect_idle_gaps(response, provider)
        try:
            payload = await response.read()
        except TimeoutError:
            breaker.failure(state.breakers.clock())
            return Failure(UpstreamTimeout(f"Provider '{provider.name}' stopped sending"))
        except (aiohttp.ClientError, OSError) as exc:
            breaker.failure(state.breakers.clock())
            return Failure(UpstreamError(
                f"Provider '{provider.name}' dropped the response: {type(exc).__name__}"))
        finally:
            response.release()
        call.upstream_ms += (time.perf_counter() - sent_at) * 1000
        try:
            data = orjson.loads(payload)
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError:
            breaker.failure(state.breakers.clock())
            return Failure(UpstreamError(
                f"Provider '{provider.name}' returned a body that is not a JSON object"))
        breaker.success()
        if exchange.anthropic_upstream:
            usage = anthropic_usage(data.get("usage"))
            if exchange.translated:
                payload = orjson.dumps(translation.messages_to_chat_response(
                    data, model=candidate.model))
        else:
            usage = openai_usage(data.get("usage"))
            if exchange.translated:
                payload = orjson.dumps(translation.chat_to_messages_response(
                    data, model=candidate.model))
        if usage is None or not (usage.input_tokens or usage.output_tokens):
            # No usage from the provider: estimated (prompt and answer, 4 characters a
            # token) as for a stream without it, so limits and budgets still count it.
            usage = Usage(input_tokens=call.prompt_tokens_estimate,
                          output_tokens=estimate_tokens(answer_length(data)))
        cost = self._cost(call, candidate, key, usage)
        headers = self._raw_headers(call, state, candidate, index, admission)
        headers.append((b"x-gateway-cost-usd", dollars_text(cost[0]).encode()))
        headers += forwarded_headers(response.raw_headers)
        headers.append(self._overhead(call))
        call.response_started = True
        try:
            await send_response(call.send, 200, payload, headers)
        finally:  # even if the server stops waiting meanwhile: the answer is the provider's
            await self._settle(call, state, candidate, index, key, admission, usage, cost,
                               status=200, error_type="")
        return None

    def _cost(self, call: Call, candidate: Any, key: Any,
              usage: Usage | None) -> tuple[int, bool]:
        """(cost in nano-dollars, priced)."""
        return call.snapshot.pricer.cost_nanos(
            usage or Usage(), candidate.provider, candidate.model, call.request_type,
            call.key.id if call.key is not None else None, key.id)

    async def _settle(self, call: Call, state: ProxyState, candidate: Any, index: int, key: Any,
                      admission: Admission, usage: Usage | None, cost: tuple[int, bool], *,
                      status: int, error_type: str, held: bool = True) -> None:
        """Settle the admission (unless no longer ``held``) and record the request."""
        tokens = (usage.input_tokens + usage.output_tokens) if usage is not None else 0
        cost_nanos, priced = cost

        async def settle_and_record() -> None:
            if held:
                await state.runtime.governor.settle(
                    admission, LedgerUsage(cost_nanos=cost_nanos, tokens=tokens))
            await self._record(call, state, candidate, index, status=status,
                               error_type=error_type, usage=usage, cost_nanos=cost_nanos,
                               priced=priced, provider_key_id=key.id if key is not None else "")

        try:
            await settle_and_record()
        except asyncio.CancelledError:
            # Cancelled on the way (the server is stopping): both steps are idempotent (a
            # second settle finds nothing to do, a second event has the same key), so once
            # more where no cancellation reaches, then stop.
            await asyncio.shield(settle_and_record())
            raise

    async def _record(self, call: Call, state: ProxyState, candidate: Any, index: int, *,
                      status: int, error_type: str, usage: Usage | None, cost_nanos: int,
                      priced: bool, provider_key_id: str) -> None:
        key = call.key
        identity = key.identity if key is not None else None
        total_ms = (time.perf_counter() - call.started) * 1000
        customer_id = identity.effective_customer[0] if identity is not None else ""
        event = UsageEvent(
            request_id=call.request_id,
            event_id=call.ledger_id if call.ledger_id != call.request_id else "",
            created_at=time.time(), provider=candidate.provider,
            requested_model=call.body.get("model", ""), resolved_model=candidate.model,
            request_type=call.request_type, status_code=status,
            virtual_key_id=key.id if key is not None else None,
            virtual_key_name=key.name if key is not None else "",
            team_id=(identity.team_id or None) if identity is not None else None,
            customer_id=customer_id or None, provider_key_id=provider_key_id or None,
            is_stream=call.stream, error_type=error_type,
            prompt_tokens=usage.input_tokens if usage else 0,
            completion_tokens=usage.output_tokens if usage else 0,
            cached_tokens=usage.cached_read_tokens if usage else 0,
            cache_write_tokens=usage.cache_write_tokens if usage else 0,
            reasoning_tokens=usage.reasoning_tokens if usage else 0,
            cost_nanos=cost_nanos, priced=priced, latency_ms=total_ms,
            overhead_ms=max(total_ms - call.upstream_ms - call.waited_ms, 0.0),
            routing_rule_id=call.rule_id or None, routing_rule_name=call.rule_name,
            fallback_index=index)
        try:
            await state.runtime.sink.emit(event)
        except Exception:  # the sink buffers on its own; never fail an answered request
            logger.exception("usage event for %s could not be emitted", call.request_id)

    # -- streaming ------------------------------------------------------------------------------

    async def _deliver_stream(self, call: Call, state: ProxyState, candidate: Any, provider: Any,
                              exchange: Exchange, key: Any, breaker: Any,
                              response: aiohttp.ClientResponse, admission: Admission,
                              index: int, sent_at: float) -> Failure | None:
        relay = StreamRelay(call, exchange, candidate.model)
        reader = response.content
        # Read until the first event is ready: failures up to here can still be retried.
        try:
            async with asyncio.timeout(provider.first_byte_timeout_ms / 1000):
                while not relay.output and not relay.done:
                    chunk = await reader.readany()
                    if not chunk:
                        relay.end()
                        break
                    relay.feed(chunk)
        except TimeoutError:
            response.close()
            breaker.failure(state.breakers.clock())
            return Failure(UpstreamTimeout(
                f"Provider '{provider.name}' sent no stream data within "
                f"{provider.first_byte_timeout_ms} ms"))
        except STREAM_BREAKS as exc:  # (after TimeoutError: the first byte never came)
            response.close()
            breaker.failure(state.breakers.clock())
            return Failure(UpstreamError(
                f"Provider '{provider.name}' dropped the stream: {type(exc).__name__}"))
        except BaseException:  # cancelled, or a bug of ours: the connection is not reused
            response.close()
            raise
        if not relay.output:
            response.close()
            breaker.failure(state.breakers.clock())
            return Failure(UpstreamError(f"Provider '{provider.name}' sent an empty stream"))
        expect_idle_gaps(response, provider)
        breaker.success()
        headers = self._raw_headers(call, state, candidate, index, admission)
        headers += forwarded_headers(response.raw_headers, SSE_SET_HEADERS)
        headers += SSE_HEADERS
        headers.append(self._overhead(call))
        call.response_started = True
        status, error_type = 200, ""
        disconnected = finished = False

        async def watch() -> None:
            """The client went away: close the upstream response, which ends the read the
            stream is waiting on at once (and the provider's request with it). A server
            reports a disconnect once the response is complete, too: that one is not."""
            nonlocal disconnected
            while True:
                message = await call.receive()
                if message["type"] == "http.disconnect":
                    if not finished:
                        disconnected = True
                        response.close()
                    return

        # One task watches the client; the stream itself is pumped by this request's own
        # task (a second task and asyncio.wait cost more than the rest of a short stream).
        state.watches.unwatch(call)  # this one takes over: one reader of the client at a time
        watcher = asyncio.get_running_loop().create_task(watch())
        stopped: asyncio.CancelledError | None = None
        broken: Exception | None = None
        try:
            await call.send({"type": "http.response.start", "status": 200,
                             "headers": headers})
            await call.send({"type": "http.response.body", "body": relay.take(),
                             "more_body": True})
            while not relay.done and not disconnected:
                chunk = await reader.readany()
                if not chunk:
                    relay.end()
                else:
                    relay.feed(chunk)
                out = relay.take()
                if out:
                    await call.send({"type": "http.response.body", "body": out,
                                     "more_body": True})
            if not disconnected:
                await call.send({"type": "http.response.body", "body": b"",
                                 "more_body": False})
                finished = True
        except asyncio.CancelledError as exc:  # the server stopped waiting for this stream
            stopped = exc
        except Exception as exc:  # the provider's stream broke, or a bug of ours
            broken = exc
        finally:
            watcher.cancel()
            try:
                await watcher
            except asyncio.CancelledError as exc:  # the watcher's own, or this task's too
                task = asyncio.current_task()
                if stopped is None and task is not None and task.cancelling():
                    stopped = exc
            except Exception:  # the server's receive failed: the stream is billed regardless
                logger.exception("watching the client of stream %s failed", call.request_id)
            response.close()
        if disconnected:
            status, error_type = 499, "client_disconnected"
        elif stopped is not None or broken is not None:
            if stopped is not None:
                status, error_type = 503, "gateway_shutdown"
                message = "The gateway is stopping; the stream was cut"
            elif isinstance(broken, STREAM_BREAKS):
                status, error_type = 502, "upstream_stream_error"
                logger.warning("stream %s from %s broke: %r", call.request_id, provider.name,
                               broken)
                message = f"Provider '{provider.name}' stream ended unexpectedly"
            else:
                status, error_type = 500, "internal_error"
                logger.error("stream %s from %s failed", call.request_id, provider.name,
                             exc_info=broken)
                message = "The gateway failed while relaying this stream"
            # What was ready, then an error event the client's SDK raises, then the end.
            stopped = await self._end_stream(
                call, relay.take() + relay.error_event(message, error_type), stopped)
        usage = relay.usage_or_estimate(call.prompt_tokens_estimate)
        cost = self._cost(call, candidate, key, usage)
        call.upstream_ms = max((time.perf_counter() - sent_at) * 1000, call.upstream_ms)
        try:
            await self._settle(call, state, candidate, index, key, admission, usage, cost,
                               status=status, error_type=error_type)
        except asyncio.CancelledError as exc:  # settled and recorded all the same
            stopped = stopped or exc
        if stopped is not None:  # billed what was streamed; now stop as asked
            raise stopped
        return None

    @staticmethod
    async def _end_stream(call: Call, body: bytes,
                          stopped: asyncio.CancelledError | None
                          ) -> asyncio.CancelledError | None:
        """The last bytes of a stream cut short, sent if the client still takes them within
        a second; a cancellation that arrives meanwhile is returned, for the caller to
        re-raise once the usage is recorded."""
        try:
            async with asyncio.timeout(END_OF_STREAM_WAIT_S):  # counts cancellations right
                await call.send({"type": "http.response.body", "body": body,
                                 "more_body": False})
        except asyncio.CancelledError as exc:
            return stopped or exc
        except Exception:  # the client went away or stopped reading
            pass
        return stopped


class ClientWatches:
    """Notices clients that leave before their answer starts, and stops the provider's work
    on their requests: one per worker, not a timer per request.

    A request is entered (:meth:`watch`) once its body is read and left (:meth:`unwatch`)
    when it ends or its stream takes over watching. One sweeper task, running only while
    some request is entered, looks every half :attr:`delay_s`: a request entered at least
    :attr:`delay_s` ago gets a task that reads its client's next ASGI message (the body was
    read already: the next one is its disconnect). Then ``client_gone`` is set and, while
    the provider works on the request, the request's task is cancelled: aiohttp closes the
    upstream connection, and the request is recorded as 499 with its prompt billed
    (providers bill a request they received). Between attempts the flag alone stops the
    retries and fallbacks. Requests shorter than the delay cost two dictionary operations.

    Nothing here and the request refer to each other: entries are dropped on :meth:`unwatch`
    (a cycle per request would be left to the garbage collector, whose full collections
    stall the event loop for tens of milliseconds).
    """

    __slots__ = ("_sweeper", "_waiting", "_watchers", "delay_s")

    def __init__(self, delay_s: float = CLIENT_WATCH_DELAY_S) -> None:
        self.delay_s = delay_s
        # Entered and not watched yet, oldest first: (since, the request's task).
        self._waiting: dict[Call, tuple[float, asyncio.Task[Any] | None]] = {}
        self._watchers: dict[Call, asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def watch(self, call: Call) -> None:
        self._waiting[call] = (time.perf_counter(), asyncio.current_task())
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def unwatch(self, call: Call) -> None:
        if self._waiting.pop(call, None) is None:
            watcher = self._watchers.pop(call, None)
            if watcher is not None:
                watcher.cancel()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                await asyncio.sleep(self.delay_s / 2)
                ripe = time.perf_counter() - self.delay_s
                due = []
                for call, (since, task) in self._waiting.items():
                    if since > ripe:
                        break  # entered in order: the rest are younger
                    due.append((call, task))
                for call, task in due:
                    del self._waiting[call]
                    self._watchers[call] = loop.create_task(self._watch(call, task))
        finally:
            self._sweeper = None

    async def _watch(self, call: Call, task: asyncio.Task[Any] | None) -> None:
        try:
            while (await call.receive())["type"] != "http.disconnect":
                pass
        except Exception:  # the server's receive failed: nothing to watch
            logger.exception("watching the client of %s failed", call.request_id)
            return
        if call.response_started:
            return
        call.client_gone = True
        if call.provider_working and task is not None:
            call.cancelled_for_client = True
            task.cancel()

    def close(self) -> None:
        """Cancel the sweeper and every watcher (the server has drained its requests)."""
        for watcher in self._watchers.values():
            watcher.cancel()
        self._watchers.clear()
        self._waiting.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


class StreamRelay:
    """Turns upstream SSE bytes into what the client gets, reading usage on the way.

    Pass-through streams forward each upstream event unchanged (the usage-only chunk the
    gateway asked for is dropped when the client did not ask for it); translated streams
    re-encode every event in the client's dialect, naming ``model`` (the model that answers,
    as a translated non-streaming response does).
    """

    def __init__(self, call: Call, exchange: Exchange, model: str) -> None:
        self.parser = SSEParser()
        self.anthropic_upstream = exchange.anthropic_upstream
        self.openai_client = call.operation != "messages"
        self.client_wants_usage = call.wants_usage_chunk
        translated = exchange.translated
        self.to_chat = (translation.MessagesStreamToChat(model=model)
                        if translated and self.anthropic_upstream else None)
        self.to_messages = (translation.ChatStreamToMessages(model=model)
                            if translated and not self.anthropic_upstream else None)
        self.usage: Usage | None = None
        # True once the stream's final usage arrived (OpenAI's usage chunk, Anthropic's
        # message_delta): before it, Anthropic's message_start reports a placeholder of one
        # or a few output tokens, not what a stream cut short produced.
        self.usage_final = False
        self.text_chars = 0
        self.output: list[bytes] = []
        self.done = False
        self._finished_translation = False
        # OpenAI events passed through: only those that may carry usage or end the stream
        # are parsed as they pass. The text of the others is counted when the stream ends
        # without usage (rare: the gateway always asks for it), from the events kept here,
        # or in 256 KB batches as they go beyond that (long streams are parsed after all).
        self.passthrough = not self.anthropic_upstream and not translated
        self._uncounted: list[bytes] = []
        self._uncounted_bytes = 0

    def feed(self, chunk: bytes) -> None:
        if not self.passthrough:
            for raw, event, data in self.parser.feed(chunk):
                self._event(raw, event, data)
            return
        for raw in self.parser.feed_raw(chunk):
            if raw.startswith(b"data:") and b"[DONE]" not in raw and (
                    b'"usage"' not in raw or b'"usage":null' in raw
                    or b'"usage": null' in raw):
                self.output.append(raw)  # a content event: forwarded as it is
                self._uncounted.append(raw)
                self._uncounted_bytes += len(raw)
                if self._uncounted_bytes > UNCOUNTED_MAX_BYTES:
                    self._count_uncounted()
                continue
            parsed = parse_event(raw)
            if parsed is not None:
                self._event(raw, parsed[0], parsed[1])

    def _count_uncounted(self) -> None:
        """Count the text of the content events passed through without parsing."""
        for raw in self._uncounted:
            parsed = parse_event(raw)
            if parsed is None or not parsed[1]:
                continue
            try:
                payload = orjson.loads(parsed[1])
            except orjson.JSONDecodeError:
                continue
            if isinstance(payload, dict):
                self._read_openai(payload)
        self._uncounted.clear()
        self._uncounted_bytes = 0

    def end(self) -> None:
        for raw, event, data in self.parser.flush():
            self._event(raw, event, data)
        self._finish_translation()
        self.done = True

    def take(self) -> bytes:
        if not self.output:
            return b""
        out = b"".join(self.output)
        self.output.clear()
        return out

    def _event(self, raw: bytes, event: str | None, data: str) -> None:
        if data == "[DONE]":
            self._finish_translation()
            if self.to_messages is None:
                self.output.append(raw)
            return
        try:
            payload = orjson.loads(data) if data else {}
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            # Every event of this stream is parsed (translated, or from Anthropic): one the
            # client's SDK could not parse either ends it with an error event instead.
            # (OpenAI streams passed through forward content events unparsed.)
            raise MalformedEvent(f"an event's data is not a JSON object: {data[:80]!r}")
        if self.anthropic_upstream:
            self._read_anthropic(event or payload.get("type", ""), payload)
        else:
            self._read_openai(payload)
        if self.to_chat is not None:
            kind = event or payload.get("type", "")
            for chunk in self.to_chat.feed(kind, payload):
                self.output.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
            if kind == "message_stop":
                self._finish_translation()
        elif self.to_messages is not None:
            for name, item in self.to_messages.feed(payload):
                self.output.append(translation.sse_event(name, item))
        elif (not self.anthropic_upstream and not self.client_wants_usage
              and payload.get("choices") == [] and "usage" in payload):
            return  # the usage chunk only the gateway asked for
        else:
            self.output.append(raw)

    def _finish_translation(self) -> None:
        if self._finished_translation:
            return
        if self.to_chat is not None:
            self._finished_translation = True
            if self.client_wants_usage:
                self.output.append(b"data: " + orjson.dumps(self.to_chat.usage_chunk())
                                   + b"\n\n")
            self.output.append(b"data: [DONE]\n\n")
        elif self.to_messages is not None:
            self._finished_translation = True
            for name, item in self.to_messages.finish():
                self.output.append(translation.sse_event(name, item))

    def _read_openai(self, payload: dict[str, Any]) -> None:
        usage = payload.get("usage")
        if usage:
            self.usage = merge_usage(self.usage, openai_usage(usage))
            self.usage_final = True
        choices = payload.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):
                    delta = choice.get("delta") or {}
                    text = delta.get("content") if isinstance(delta, dict) else None
                    if text is None:
                        text = choice.get("text")
                    if isinstance(text, str):
                        self.text_chars += len(text)

    def _read_anthropic(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "message_start":
            message = payload.get("message")
            if isinstance(message, dict):
                self.usage = merge_usage(self.usage, anthropic_usage(message.get("usage")))
        elif kind == "message_delta":
            # output tokens at the end; merge_usage keeps message_start's input tokens
            usage = anthropic_usage(payload.get("usage"))
            if usage is not None:
                self.usage = merge_usage(self.usage, usage)
                self.usage_final = True
        elif kind == "content_block_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict):
                text = delta.get("text") or delta.get("partial_json") or delta.get("thinking")
                if isinstance(text, str):
                    self.text_chars += len(text)

    def usage_or_estimate(self, prompt_estimate: int) -> Usage:
        """The stream's final usage when it arrived. Otherwise (a stream cut short) what the
        upstream reported so far (e.g. Anthropic's input and cache tokens), with the output
        counted from the streamed text when that is more than the upstream's count so far
        (Anthropic's message_start says 1), and the prompt estimated when none was reported."""
        usage = self.usage
        if self.usage_final and usage is not None and usage.output_tokens:
            return usage
        self._count_uncounted()
        usage = self.usage
        completion = estimate_tokens(self.text_chars)
        if usage is None:
            return Usage(input_tokens=prompt_estimate, output_tokens=completion)
        return dataclasses.replace(usage, input_tokens=usage.input_tokens or prompt_estimate,
                                   output_tokens=max(usage.output_tokens, completion))

    def error_event(self, message: str, code: str) -> bytes:
        """The event that ends a stream cut short, in the client's dialect."""
        if self.openai_client:
            return b"data: " + orjson.dumps({"error": {"message": message,
                                                       "type": "api_error",
                                                       "code": code}}) + b"\n\n"
        return translation.sse_event("error", {"type": "error", "error": {
            "type": "api_error", "message": message}})


def _openai_model(name: str, owner: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": owner}


def _anthropic_model(name: str, created: int) -> dict[str, Any]:
    return {"type": "model", "id": name, "display_name": name,
            "created_at": datetime.datetime.fromtimestamp(created, datetime.UTC)
            .strftime("%Y-%m-%dT%H:%M:%SZ")}


def _anthropic_page(names: list[str], created: int, query: dict[str, str]) -> dict[str, Any]:
    """One page of Anthropic's model list: ``limit`` (1-1000, 20 by default), and
    ``after_id`` or ``before_id`` (an id of the list) for the next or previous page."""
    limit_text = query.get("limit", "")
    valid = limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 5
    limit = int(limit_text) if valid else ANTHROPIC_PAGE_DEFAULT
    if limit_text and not (valid and 1 <= limit <= ANTHROPIC_PAGE_MAX):
        raise BadRequest(f"limit: must be an integer between 1 and {ANTHROPIC_PAGE_MAX}",
                         fields={"limit": ["out of range"]})
    start, end = 0, len(names)
    for field_name in ("after_id", "before_id"):
        anchor = query.get(field_name)
        if anchor is None:
            continue
        if anchor not in names:
            raise BadRequest(f"{field_name}: no model '{anchor}' in the list",
                             fields={field_name: ["unknown id"]})
        if field_name == "after_id":
            start = names.index(anchor) + 1
        else:
            end = names.index(anchor)
    if "before_id" in query and "after_id" not in query:
        start = max(end - limit, 0)
    page = names[start:min(start + limit, end)]
    return {"data": [_anthropic_model(name, created) for name in page],
            "has_more": start + len(page) < end if "before_id" not in query else start > 0,
            "first_id": page[0] if page else None, "last_id": page[-1] if page else None}


def _query(scope: dict[str, Any]) -> dict[str, str]:
    raw = scope.get("query_string") or b""
    if not raw:
        return {}
    return dict(parse_qsl(raw.decode("latin-1")))
