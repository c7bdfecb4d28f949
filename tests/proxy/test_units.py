"""Pure pieces of the data plane: body checks, SSE framing, breaker, backoff, resolution."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass, field
from decimal import Decimal, localcontext

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway import errors
from gateway.proxy.adapters import (
    USER_AGENT,
    answer_length,
    openai_usage,
    prompt_length,
    upstream_request,
)
from gateway.proxy.app import backoff_seconds, dollars_text, parse_body
from gateway.proxy.breaker import Breaker, State
from gateway.proxy.http import REQUEST_ID, Cors, RequestIds, forwarded_headers, request_id_from
from gateway.proxy.resolve import Candidate, RouteStats, resolve, split_model, weighted_order
from gateway.proxy.sse import SSEParser
from routing.cel import get_engine
from routing.engine import RoutingEngine, RoutingTable, no_capacity

CHAT = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("raw", "operation", "field_name"), [
    (b"", "chat", None),
    (b"{not json", "chat", None),
    (b"[1, 2]", "chat", None),
    (b'{"messages": []}', "chat", "model"),
    (b'{"model": 5, "messages": [{"role": "user"}]}', "chat", "model"),
    (b'{"model": "  ", "messages": [{"role": "user"}]}', "chat", "model"),
    (b'{"model": "m"}', "chat", "messages"),
    (b'{"model": "m", "messages": "hi"}', "chat", "messages"),
    (b'{"model": "m", "messages": []}', "chat", "messages"),
    (b'{"model": "m", "messages": [1]}', "chat", "messages[0]"),
    (b'{"model": "m", "messages": [{"content": "x"}]}', "chat", "messages[0].role"),
    (b'{"model": "m", "messages": [{"role": "user"}], "stream": "yes"}', "chat", "stream"),
    (b'{"model": "m", "messages": [{"role": "user"}], "max_tokens": -1}', "chat",
     "max_tokens"),
    (b'{"model": "m", "messages": [{"role": "user"}], "max_tokens": true}', "chat",
     "max_tokens"),
    (b'{"model": "m", "messages": [{"role": "user"}], "stream_options": 1}', "chat",
     "stream_options"),
    (b'{"model": "m", "messages": [{"role": "user"}], "fallbacks": "a/b"}', "chat",
     "fallbacks"),
    (b'{"model": "m"}', "completions", "prompt"),
    (b'{"model": "m", "prompt": 3}', "completions", "prompt"),
    (b'{"model": "m"}', "embeddings", "input"),
    (b'{"model": "m", "input": {"a": 1}}', "embeddings", "input"),
    (b'{"model": "' + b"m" * 300 + b'", "input": "x"}', "embeddings", "model"),
])
def test_bad_bodies_are_400_naming_the_field(raw, operation, field_name):
    with pytest.raises(errors.BadRequest) as caught:
        parse_body(raw, operation)
    assert caught.value.status_code == 400
    if field_name is not None:
        assert caught.value.detail.startswith(f"{field_name}:")
        assert field_name in caught.value.fields


def test_unknown_fields_are_kept():
    body = parse_body(orjson.dumps({**CHAT, "x_custom": {"deep": [1]}, "seed": 3}), "chat")
    assert body["x_custom"] == {"deep": [1]} and body["seed"] == 3


@given(st.binary(max_size=200))
def test_parse_body_never_raises_anything_but_bad_request(raw):
    with contextlib.suppress(errors.BadRequest):
        parse_body(raw, "chat")


@pytest.mark.parametrize(("header", "kept"), [
    ("abc-123_X.y", True), ("a" * 128, True), ("a" * 129, False), ("has space", False),
    ("", False), ("ünïcode", False), ("x;drop table", False),
])
def test_request_id(header, kept):
    result = request_id_from({"x-request-id": header})
    assert (result == header) is kept
    assert len(result) <= 128


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_generated_request_ids_are_unique_and_a_forked_process_gets_its_own():
    ids = RequestIds()
    made = [ids() for _ in range(1000)]
    assert len(set(made)) == 1000
    assert all(len(value) == 32 and int(value, 16) >= 0 for value in made)
    assert REQUEST_ID.fullmatch(made[0])
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its next id, then leave whatever happens (never back to pytest)
        code = 1
        try:
            os.write(write_end, ids().encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    in_child = os.read(read_end, 64).decode()
    os.close(read_end)
    assert len(in_child) == 32
    assert in_child[:16] != made[0][:16]  # new random digits, so no id repeats across workers
    assert ids()[:16] == made[0][:16]  # the parent's ids are unchanged


@pytest.mark.parametrize(("nanos", "text"), [
    (0, "0"), (1, "0.000000001"), (325_000, "0.000325"), (1_000_000_000, "1"),
    (50_020_000_000, "50.02"), (-1, "-0.000000001"),
    (123_456_789_012_345_678_901, "123456789012.345678901"),  # beyond a float's digits
])
def test_dollars_text(nanos, text):
    assert dollars_text(nanos) == text


@given(st.integers(min_value=-(10**30), max_value=10**30))
def test_dollars_text_is_the_exact_amount(nanos):
    text = dollars_text(nanos)
    with localcontext() as context:
        context.prec = 60
        assert Decimal(text) * 1_000_000_000 == nanos
    if "." in text:
        assert not text.endswith(("0", "."))


def test_sse_parser_handles_any_split_and_crlf():
    stream = (b'data: {"a": 1}\n\n: keep-alive\n\nevent: message_stop\r\ndata: {"b": 2}\r\n\r\n'
              b"data: [DONE]\n\n")
    for size in range(1, len(stream) + 1):
        parser = SSEParser()
        events = []
        for start in range(0, len(stream), size):
            events += [(name, data) for _raw, name, data in parser.feed(stream[start:start + size])]
        events += [(name, data) for _raw, name, data in parser.flush()]
        assert events == [(None, '{"a": 1}'), ("message_stop", '{"b": 2}'), (None, "[DONE]")]


def test_sse_parser_flushes_an_unterminated_last_event():
    parser = SSEParser()
    assert list(parser.feed(b"data: tail")) == []
    assert [data for _raw, _name, data in parser.flush()] == ["tail"]


def test_breaker_opens_half_opens_with_one_probe_and_closes():
    breaker = Breaker(failure_threshold=3, open_seconds=10)
    for _ in range(2):
        breaker.failure(0)
    assert breaker.state(0) is State.CLOSED
    breaker.failure(1)
    assert breaker.state(5) is State.OPEN and not breaker.allow(5)
    assert breaker.state(11) is State.HALF_OPEN
    assert breaker.allow(11) and not breaker.allow(11)  # one probe only
    breaker.failure(12)  # the probe failed: open again
    assert breaker.state(15) is State.OPEN
    assert breaker.allow(23)
    breaker.success()
    assert breaker.state(23) is State.CLOSED and breaker.allow(23) and breaker.allow(23)


def test_breaker_success_resets_consecutive_failures():
    breaker = Breaker(failure_threshold=2, open_seconds=10)
    breaker.failure(0)
    breaker.success()
    breaker.failure(1)
    assert breaker.state(1) is State.CLOSED


@pytest.mark.parametrize("attempt", range(6))
def test_backoff_is_exponential_with_jitter_and_capped(attempt):
    rng = random.Random(attempt)
    delay = backoff_seconds(attempt, 100, 1000, rng)
    base = min(100 * 2 ** attempt, 1000) / 1000
    assert base / 2 <= delay <= base


def test_backoff_honours_a_short_retry_after():
    assert backoff_seconds(0, 100, 5000, random.Random(), "2") == 2.0
    assert backoff_seconds(0, 100, 1000, random.Random(1), "30") <= 0.1  # too long: ignored


def test_forwarded_headers_drop_hop_by_hop_and_credentials():
    upstream = [(b"Content-Length", b"5"), (b"Set-Cookie", b"s=1"),
                (b"Transfer-Encoding", b"chunked"), (b"x-api-key", b"k"),
                (b"OpenAI-Processing-Ms", b"12"), (b"X-Request-Id", b"up"),
                (b"Connection", b"keep-alive"), (b"X-RateLimit-Limit-Requests", b"9"),
                (b"Content-Type", b"application/json")]
    for _ in range(2):  # the second time from the remembered names
        assert forwarded_headers(upstream) == [(b"openai-processing-ms", b"12"),
                                               (b"x-provider-request-id", b"up")]
        assert forwarded_headers([(b"Cache-Control", b"x"), (b"Via", b"y")],
                                 frozenset({b"cache-control"})) == [(b"via", b"y")]


def test_cors_origins():
    cors = Cors(["https://app.example.com"])
    assert cors.allowed("https://app.example.com") and not cors.allowed("https://evil.test")
    assert not cors.allowed(None)
    assert Cors(["*"]).allowed("https://anything.test")
    assert cors.headers("https://evil.test") == []


@pytest.mark.parametrize(("kind", "operation", "url", "credential"), [
    ("openai", "chat", "http://u/v1/chat/completions", ("authorization", "Bearer k")),
    ("openai_compatible", "embeddings", "http://u/v1/embeddings", ("authorization", "Bearer k")),
    ("azure", "chat", "http://u/v1/openai/deployments/gpt-4o/chat/completions"
                      "?api-version=2024-10-21", ("api-key", "k")),
    ("anthropic", "messages", "http://u/v1/v1/messages", ("x-api-key", "k")),
])
def test_upstream_request_per_kind(kind, operation, url, credential):
    request = upstream_request(kind, "http://u/v1/", "", "k", operation, "gpt-4o", "rid", {})
    assert request.url == url
    assert request.headers[credential[0]] == credential[1]
    assert request.headers["x-request-id"] == "rid"
    assert request.headers["user-agent"] == USER_AGENT


def test_openai_usage_reads_cached_and_reasoning_tokens():
    usage = openai_usage({"prompt_tokens": 100, "completion_tokens": 20,
                          "prompt_tokens_details": {"cached_tokens": 30},
                          "completion_tokens_details": {"reasoning_tokens": 5}})
    assert (usage.input_tokens, usage.cached_read_tokens, usage.output_tokens,
            usage.reasoning_tokens) == (100, 30, 20, 5)
    assert openai_usage("garbage") is None
    assert openai_usage({"prompt_tokens": -5, "completion_tokens": "x"}).input_tokens == 0


def test_prompt_length_counts_text_in_parts():
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "abcd"},
                                                      {"type": "image_url"}]},
                         {"role": "assistant", "content": "xy"}], "system": "sys"}
    assert prompt_length(body) == 9


def _reference_prompt_length(body: dict) -> int:
    """The definition: strings reached from the prompt fields through lists and the text
    fields of objects, nine levels deep at most."""
    def walk(value: object, depth: int) -> int:
        if depth > 8:
            return 0
        if isinstance(value, str):
            return len(value)
        if isinstance(value, list):
            return sum(walk(item, depth + 1) for item in value)
        if isinstance(value, dict):
            return sum(walk(value[key], depth + 1) for key in
                       ("content", "text", "system", "input", "prompt", "arguments", "messages")
                       if key in value)
        return 0
    return sum(walk(body[key], 1) for key in ("messages", "system", "prompt", "input")
               if key in body)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["content", "text", "role", "messages", "input", "arguments", "x"]),
        children, max_size=3),
    max_leaves=25)
# Chat messages as clients send them (a role and a string content: the fast path), with
# extra fields or other contents now and then (the general one), or anything at all.
_message = st.fixed_dictionaries(
    {"role": st.text(max_size=5), "content": st.text(max_size=8) | _json},
    optional={"text": _json, "name": st.text(max_size=5), "x": _json}) | _json


def _nested(value: object, levels: int) -> object:
    for _ in range(levels):
        value = [value]
    return value


# Text at the deepest level counted (8) and one below it, in a message and at the top.
_DEEP_MESSAGE = {"messages": [{"role": "u", "content": _nested(["eight", ["nine"]], 4)}]}
_DEEP_TOP = {"system": _nested(["eight", ["nine"]], 6)}


@settings(deadline=None)  # the first example pays for hypothesis' own warm-up
@example(body=_DEEP_MESSAGE)
@example(body=_DEEP_TOP)
@example(body={"messages": [{"content": "ab", "text": "cd"}]})  # two fields, no role
@example(body={"messages": [{"role": "u", "content": "ab", "text": "cd"}]})  # a third field
@given(st.fixed_dictionaries({}, optional={
    "messages": st.lists(_message, max_size=4) | _json, "system": _json, "prompt": _json,
    "input": _json, "model": _json}))
def test_prompt_length_matches_its_definition(body: dict) -> None:
    assert prompt_length(body) == _reference_prompt_length(body)


def test_prompt_length_stops_below_eight_levels() -> None:
    assert prompt_length(_DEEP_MESSAGE) == prompt_length(_DEEP_TOP) == len("eight")


# -- resolution ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Config:
    provider: str
    weight: float | None
    models: tuple[str, ...]

    @property
    def allows_every_model(self) -> bool:
        return self.models == ("*",)

    def allows_model(self, model: str) -> bool:
        return self.models == ("*",) or model in self.models


@dataclass(frozen=True)
class _Key:
    provider_configs: dict
    identity: object = None


@dataclass(frozen=True)
class _Route:
    provider: str
    model: str
    weight: float
    priority: int


@dataclass(frozen=True)
class _Alias:
    strategy: str
    routes: tuple


@dataclass(frozen=True)
class _Pricer:
    """Knows (prices) the (provider, model) pairs it was given."""

    known: frozenset = frozenset()

    def resolve(self, provider: str, model: str, request_type: str):
        from types import SimpleNamespace

        return SimpleNamespace(rates=object() if (provider, model) in self.known else None)


@dataclass
class _Snapshot:
    providers: dict = field(default_factory=lambda: {"openai": 1, "claude": 1, "azure": 1})
    aliases: dict = field(default_factory=dict)
    pricer: _Pricer = field(default_factory=_Pricer)


def _resolve(snapshot, key, model, *, stats=None, fallbacks=(), seed=0):
    engine = RoutingEngine(RoutingTable({}, "cel-expr-python"), engine=get_engine())
    return resolve(snapshot, engine, key=key, requested=model, request_type="chat_completion",
                   headers={}, query={}, capacity=no_capacity, stats=stats or RouteStats(),
                   rng=random.Random(seed), request_fallbacks=fallbacks)


def test_provider_prefix_then_request_fallbacks():
    result = _resolve(_Snapshot(), None, "openai/gpt-4o",
                      fallbacks=["claude/claude-sonnet-4-5", "unknown/x", "openai/gpt-4o"])
    assert result.candidates == (Candidate("openai", "gpt-4o"),
                                 Candidate("claude", "claude-sonnet-4-5"))


def test_model_with_slash_that_is_not_a_provider_stays_bare():
    assert split_model("meta-llama/Llama-3", {"openai": 1}) == ("", "meta-llama/Llama-3")


def test_key_configs_pick_by_weight_and_fall_back_by_weight():
    key = _Key({"openai": _Config("openai", 3.0, ("*",)), "azure": _Config("azure", 1.0, ("*",)),
                "claude": _Config("claude", 2.0, ("claude-only",))})
    firsts = [_resolve(_Snapshot(), key, "gpt-4o", seed=seed).candidates for seed in range(400)]
    share = sum(c[0].provider == "openai" for c in firsts) / len(firsts)
    assert 0.65 < share < 0.85
    assert all(len(c) == 2 for c in firsts)


def test_a_bare_model_goes_to_the_providers_the_catalog_knows_it_for():
    # A key allowed every model of an OpenAI and an Anthropic provider: gpt-4o goes to the
    # provider whose catalog prices it; a model no catalog knows may go to either.
    key = _Key({"openai": _Config("openai", 1.0, ("*",)), "claude": _Config("claude", 1.0, ("*",))})
    snapshot = _Snapshot(pricer=_Pricer(frozenset({("openai", "gpt-4o"),
                                                   ("claude", "claude-sonnet-4-5")})))
    for seed in range(50):
        assert [c.provider for c in _resolve(snapshot, key, "gpt-4o", seed=seed).candidates] \
            == ["openai"]
        assert [c.provider for c in _resolve(snapshot, key, "claude-sonnet-4-5",
                                             seed=seed).candidates] == ["claude"]
    unknown = {_resolve(snapshot, key, "my-finetune", seed=seed).candidates[0].provider
               for seed in range(50)}
    assert unknown == {"openai", "claude"}


def test_an_alias_comes_before_every_model_but_after_a_model_listed_by_name():
    smart = _Alias("priority", (_Route("openai", "gpt-4o-mini", 1.0, 1),
                                _Route("claude", "claude-haiku", 1.0, 2)))
    snapshot = _Snapshot(aliases={"smart": smart})
    everything = _Key({"openai": _Config("openai", 1.0, ("*",)),
                       "claude": _Config("claude", 1.0, ("*",))})
    assert _resolve(snapshot, everything, "smart").candidates == (
        Candidate("openai", "gpt-4o-mini"), Candidate("claude", "claude-haiku"))
    listed = _Key({"azure": _Config("azure", 1.0, ("smart",)),
                   "openai": _Config("openai", 1.0, ("*",))})
    assert _resolve(snapshot, listed, "smart").candidates == (Candidate("azure", "smart"),)


def test_an_alias_skips_the_routes_the_key_may_not_use():
    smart = _Alias("priority", (_Route("openai", "gpt-4o", 1.0, 1),
                                _Route("openai", "gpt-4o-mini", 1.0, 2)))
    snapshot = _Snapshot(aliases={"smart": smart})
    mini_only = _Key({"openai": _Config("openai", 1.0, ("gpt-4o-mini",))})
    assert _resolve(snapshot, mini_only, "smart").candidates == (
        Candidate("openai", "gpt-4o-mini"),)
    nothing = _Key({"claude": _Config("claude", 1.0, ("*",))})  # none usable: 403 says why
    assert _resolve(snapshot, nothing, "smart").candidates[0] == Candidate("openai", "gpt-4o")


def test_alias_strategies():
    routes = (_Route("openai", "a", 1.0, 2), _Route("claude", "b", 1.0, 1),
              _Route("azure", "c", 1.0, 3))
    snapshot = _Snapshot(aliases={"smart": _Alias("priority", routes)})
    assert [c.model for c in _resolve(snapshot, None, "smart").candidates] == ["b", "a", "c"]
    stats = RouteStats()
    for _ in range(3):
        stats.started("claude", "b")
    stats.started("openai", "a")
    snapshot.aliases["smart"] = _Alias("least_busy", routes)
    assert [c.model for c in _resolve(snapshot, None, "smart", stats=stats).candidates] == \
        ["c", "a", "b"]
    stats.finished("openai", "a", 50.0)
    stats.finished("claude", "b", 10.0)
    stats.started("azure", "c")
    stats.finished("azure", "c", 30.0)
    snapshot.aliases["smart"] = _Alias("lowest_latency", routes)
    assert [c.model for c in _resolve(snapshot, None, "smart", stats=stats).candidates] == \
        ["b", "c", "a"]


def test_unknown_model_is_404():
    with pytest.raises(errors.ModelNotFound):
        _resolve(_Snapshot(), _Key({}), "mystery")


def test_weighted_order_all_zero_weights_still_orders_everything():
    order = weighted_order([("a", 0.0), ("b", 0.0)], random.Random(3))
    assert sorted(order) == ["a", "b"]


@pytest.mark.parametrize(("path", "inference"), [
    ("/v1", True), ("/v1/", True), ("/v1/chat/completions", True),
    ("/openai/v1/chat/completions", True), ("/anthropic/v1/messages", True),
    ("/anthropic", True),
    ("/v1x", False), ("/v10/models", False), ("/openaiv1", False), ("/", False),
    ("/admin/", False), ("/api/governance/virtual-keys", False), ("/static/v1/x.css", False),
    ("", False),
])
def test_inference_prefixes_go_to_the_data_plane_and_the_rest_to_django(path, inference):
    from gateway.asgi import InferencePrefixRouter

    assert InferencePrefixRouter(None, None).is_inference(path) is inference


def _relay(include_usage: bool):
    from gateway.proxy.adapters import exchange_for
    from gateway.proxy.app import Call, StreamRelay

    body = {"model": "m", "messages": [], "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    call = Call(scope={}, receive=None, send=None, started=0.0, request_id="r", ledger_id="r",
                headers={}, operation="chat", dialect="openai", base_headers=[], body=body)
    return StreamRelay(call, exchange_for("chat", "openai"), "gpt-4o-mini")


def _chunk(text: str, usage: object = None) -> bytes:
    import orjson

    return b"data: " + orjson.dumps({"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": text}}], "usage": usage}) + b"\n\n"


@pytest.mark.parametrize("split", [1, 7, 10_000])
def test_a_passed_through_stream_is_forwarded_unchanged_and_its_text_counted(split):
    texts = ["Hello", ' "usage": {"x": 1} ', "[DONE] is text here", "é" * 10]
    events = [_chunk(text) for text in texts] + [b": keep-alive\n\n"]
    usage_chunk = (b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":9,'
                   b'"total_tokens":12}}\n\n')
    stream = b"".join(events) + usage_chunk + b"data: [DONE]\n\n"
    for include_usage in (False, True):
        relay = _relay(include_usage)
        for start in range(0, len(stream), split):
            relay.feed(stream[start:start + split])
        relay.end()
        forwarded = b"".join(events[:-1]) + (usage_chunk if include_usage else b"")
        assert relay.take() == forwarded + b"data: [DONE]\n\n"  # comment dropped
        assert (relay.usage_or_estimate(1).input_tokens,
                relay.usage_or_estimate(1).output_tokens) == (3, 9)

    cut = _relay(False)  # a stream that stops before any usage: counted from the text
    cut.feed(b"".join(events))
    expected_chars = sum(len(text) for text in texts)
    assert cut.usage_or_estimate(5).output_tokens == (expected_chars + 3) // 4
    assert cut.usage_or_estimate(5).input_tokens == 5


def test_uncounted_stream_text_is_bounded_in_memory():
    from gateway.proxy.app import UNCOUNTED_MAX_BYTES

    relay = _relay(False)
    event = _chunk("x" * 1000)
    count = 3 * UNCOUNTED_MAX_BYTES // len(event)
    for _ in range(count):
        relay.feed(event)
        assert relay._uncounted_bytes <= UNCOUNTED_MAX_BYTES
    assert relay.usage_or_estimate(0).output_tokens == (count * 1000 + 3) // 4


@pytest.mark.parametrize(("data", "length"), [
    ({"choices": [{"message": {"role": "assistant", "content": "abcd"}}]}, 4),
    ({"choices": [{"message": {"content": None, "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]}}]}, 7),
    ({"choices": [{"message": {"content": [{"type": "text", "text": "ab"}]}},
                  {"message": {"content": "cde"}}]}, 5),  # parts, and n > 1
    ({"choices": [{"text": "completion"}]}, 10),
    ({"content": [{"type": "text", "text": "hi"}, {"type": "thinking", "thinking": "hmm"},
                  {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}]}, 2 + 3 + 7),
    ({"data": [{"embedding": [0.1, 0.2]}]}, 0),  # embeddings generate no text
    ({"choices": "nonsense", "content": 5}, 0),
    ({"choices": [None, 3, {"message": "x"}]}, 0),
])
def test_answer_length_counts_generated_text_and_tool_arguments(data, length):
    assert answer_length(data) == length


def _watched_call(receive):
    from gateway.proxy.app import Call

    return Call(scope={}, receive=receive, send=None, started=0.0, request_id="r",
                ledger_id="r", headers={}, operation="chat", dialect="openai", base_headers=[])


def test_client_watches_read_the_client_only_of_requests_that_last():
    import asyncio

    from gateway.proxy.app import ClientWatches

    async def scenario() -> tuple[int, int, bool]:
        reads = {"short": 0, "long": 0}
        gone = asyncio.Event()

        def receiver(name):
            async def receive():
                reads[name] += 1
                if name == "long":
                    gone.set()
                    return {"type": "http.disconnect"}
                await asyncio.Event().wait()  # a client that stays
                return {"type": "http.disconnect"}
            return receive

        watches = ClientWatches(delay_s=0.05)
        short, long = _watched_call(receiver("short")), _watched_call(receiver("long"))
        long.provider_working = True
        worker = asyncio.get_running_loop().create_task(asyncio.sleep(10))  # "the request"

        async def run_long():
            watches.watch(long)
            try:
                await worker
            finally:
                watches.unwatch(long)

        long_task = asyncio.get_running_loop().create_task(run_long())
        watches.watch(short)
        await asyncio.sleep(0.01)
        watches.unwatch(short)  # answered before the delay: its client is never read
        await asyncio.wait_for(gone.wait(), 2)
        with contextlib.suppress(asyncio.CancelledError):
            await long_task  # cancelled by the watch: the client left while the provider worked
        await asyncio.sleep(0.1)  # nothing left entered: the sweeper ends on its own
        leftover = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        return reads["short"], reads["long"], long.client_gone and long.cancelled_for_client \
            and not leftover

    short_reads, long_reads, cancelled = asyncio.run(scenario())
    assert (short_reads, long_reads, cancelled) == (0, 1, True)


def test_client_watches_close_cancels_the_sweeper_and_the_watchers():
    import asyncio

    from gateway.proxy.app import ClientWatches

    async def scenario() -> list[asyncio.Task]:
        async def stays():
            await asyncio.Event().wait()

        watches = ClientWatches(delay_s=0.02)
        for _ in range(3):
            watches.watch(_watched_call(stays))
        await asyncio.sleep(0.1)  # watched by now
        watches.close()
        await asyncio.sleep(0)
        return [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]

    assert asyncio.run(scenario()) == []


@pytest.mark.parametrize(("query", "ids", "has_more"), [
    ({}, ["m0", "m1", "m2", "m3", "m4"], False),
    ({"limit": "2"}, ["m0", "m1"], True),
    ({"limit": "2", "after_id": "m1"}, ["m2", "m3"], True),
    ({"limit": "2", "after_id": "m3"}, ["m4"], False),
    ({"limit": "2", "before_id": "m3"}, ["m1", "m2"], True),
    ({"limit": "2", "before_id": "m1"}, ["m0"], False),
    ({"after_id": "m4"}, [], False),
])
def test_anthropic_model_pages(query, ids, has_more):
    from gateway.proxy.app import _anthropic_page

    page = _anthropic_page([f"m{index}" for index in range(5)], 1_800_000_000, query)
    assert [item["id"] for item in page["data"]] == ids
    assert page["has_more"] is has_more
    assert (page["first_id"], page["last_id"]) == ((ids[0], ids[-1]) if ids else (None, None))


@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "1001"}, {"limit": "x"},
                                   {"limit": "1" * 400}, {"limit": "\u0661"}, {"limit": "-1"},
                                   {"after_id": "nope"}, {"before_id": ""}])
def test_anthropic_model_pages_refuse_bad_queries(query):
    from gateway.proxy.app import _anthropic_page

    with pytest.raises(errors.BadRequest):
        _anthropic_page(["m0"], 1_800_000_000, query)
