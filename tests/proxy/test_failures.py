"""Failure paths end to end: retries and backoff, key rotation, fallbacks, the circuit
breaker, timeouts, client disconnects, bad input, CORS, concurrency, routing and aliases.
Every outcome that reached a provider leaves exactly one usage record."""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import time

import httpx
import pytest

from gateway.models import Provider
from governance.models import UsageRecord, VirtualKey
from tests.factories import (
    ModelAliasFactory,
    ModelAliasRouteFactory,
    ProviderConfigFactory,
    ProviderFactory,
    ProviderKeyFactory,
    RoutingRuleFactory,
    RoutingTargetFactory,
)

CHAT = {"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


def post(gateway, world, body=None, path="/v1/chat/completions", **kwargs):
    headers = {"authorization": f"Bearer {world['secret']}", **kwargs.pop("headers", {})}
    return httpx.post(f"{gateway.url}{path}", json=body if body is not None else CHAT,
                      headers=headers, timeout=kwargs.pop("timeout", 20), **kwargs)


def with_mock(**controls):
    return {**CHAT, "mock": controls}


def set_provider(gateway, name, **fields):
    Provider.objects.filter(name=name).update(**fields)
    gateway.reload()


def upstream_calls(world, path="/v1/chat/completions"):
    return [request for request in world["mock"].requests if request.path == path]


# The wait before retry n (from 0) is in [base/2, base], base = min(initial * 2**n, max).
# Between two arrivals at the upstream there is also one failed round trip (a few ms, more
# on a loaded machine: only the lower bounds are exact).


def test_retries_back_off_exponentially_with_jitter_up_to_the_cap(gateway, world):
    set_provider(gateway, "mock", max_retries=4, backoff_initial_ms=30, backoff_max_ms=60)
    response = post(gateway, world, with_mock(status=503, fail_times=4, fail_key="r1"))
    assert response.status_code == 200
    calls = upstream_calls(world)
    assert len(calls) == 5
    gaps = [b.time - a.time for a, b in itertools.pairwise(calls)]
    # bases 30, 60, then capped at 60: waits of at least 15, 30, 30, 30 ms
    assert [gap >= shortest for gap, shortest in zip(gaps, (0.015, 0.03, 0.03, 0.03),
                                                     strict=True)] == [True] * 4, gaps
    # the cap: uncapped, the last wait would be 120-240 ms
    assert gaps[3] < 0.11, gaps


def test_retries_exhausted_returns_the_last_status(gateway, world):
    response = post(gateway, world, with_mock(status=500))
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert len(upstream_calls(world)) == 3  # 1 + max_retries (2)
    # the gateway retried already: the SDKs must not retry it all again (3 calls each)
    assert response.headers["x-should-retry"] == "false"
    gateway.flush()
    [record] = UsageRecord.objects.all()
    assert (record.status_code, record.error_type) == (502, "upstream_error")


def test_429_from_the_provider_is_retried_honouring_a_short_retry_after(gateway, world):
    set_provider(gateway, "mock", backoff_max_ms=2000)
    started = time.monotonic()
    response = post(gateway, world, with_mock(status=429, retry_after="0.2", fail_times=1,
                                              fail_key="ra"))
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.2
    assert float(response.headers["x-gateway-overhead-ms"]) < 150  # the wait is not overhead


def test_a_single_failed_attempt_leaves_retrying_to_the_client(gateway, world):
    set_provider(gateway, "mock", max_retries=0)
    response = post(gateway, world, with_mock(status=500))
    assert response.status_code == 502
    assert "x-should-retry" not in response.headers


def test_an_open_circuit_says_how_long_it_stays_open(gateway, world):
    set_provider(gateway, "mock", max_retries=0, failure_threshold=1, open_seconds=30)
    assert post(gateway, world, with_mock(status=500)).status_code == 502
    time.sleep(1.2)
    blocked = post(gateway, world)
    assert blocked.status_code == 503
    assert 28 <= int(blocked.headers["retry-after"]) <= 29  # not a bare 1: SDKs wait that long


def test_a_429_that_outlasts_the_retries_is_the_providers_own_answer(gateway, world):
    set_provider(gateway, "mock", max_retries=1, backoff_initial_ms=10, backoff_max_ms=20)
    response = post(gateway, world, with_mock(status=429))
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"  # the provider's code
    assert response.headers["x-should-retry"] == "false"  # retried already, by the gateway
    assert response.headers["x-gateway-provider"] == "mock"
    assert len(upstream_calls(world)) == 2
    gateway.flush()
    assert UsageRecord.objects.get().status_code == 429


def test_client_errors_are_returned_as_they_are_without_retry(gateway, world):
    response = post(gateway, world, with_mock(status=400))
    assert response.status_code == 400
    assert response.json()["error"]["message"]
    assert len(upstream_calls(world)) == 1
    gateway.flush()
    assert UsageRecord.objects.get().status_code == 400


def test_a_provider_error_reaches_a_client_of_the_other_api_in_its_own_shape(gateway, world):
    world["claude_key"].set_value("mock-status-400")
    world["claude_key"].save()
    gateway.reload()
    # an OpenAI client reaching a Claude model gets OpenAI's error shape ...
    response = post(gateway, world, {**CHAT, "model": "claude/claude-3-5-haiku-latest"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    # ... and an Anthropic client reaching an OpenAI model gets Anthropic's
    world["openai_key"].set_value("mock-status-400")
    world["openai_key"].save()
    gateway.reload()
    response = post(gateway, world, {"model": "mock/gpt-4o-mini", "max_tokens": 10,
                                     "messages": [{"role": "user", "content": "x"}]},
                    path="/anthropic/v1/messages")
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"]
    # the same API passes the provider's own body through as it came
    native = post(gateway, world, {"model": "claude/claude-3-5-haiku-latest", "max_tokens": 10,
                                   "messages": [{"role": "user", "content": "x"}]},
                  path="/anthropic/v1/messages")
    assert native.status_code == 400 and native.json()["type"] == "error"


@pytest.mark.parametrize(("body", "dialect", "expected"), [
    (b'{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: '
     b'300000 tokens > 200000 maximum"}}', "openai",
     {"error": {"message": "prompt is too long: 300000 tokens > 200000 maximum",
                "type": "invalid_request_error", "param": None,
                "code": "context_length_exceeded"}}),
    (b'{"error":{"message":"quota","type":"insufficient_quota","param":null,'
     b'"code":"insufficient_quota"}}', "anthropic",
     {"type": "error", "error": {"type": "invalid_request_error", "message": "quota"}}),
    (b"<html>bad gateway</html>", "openai",
     {"error": {"message": "<html>bad gateway</html>", "type": "invalid_request_error",
                "param": None, "code": None}}),
    (b"", "anthropic", {"type": "error", "error": {"type": "invalid_request_error",
                                                   "message": "Provider answered 400"}}),
])
def test_provider_errors_change_shape_keeping_their_message(body, dialect, expected):
    import orjson

    from gateway.proxy.http import provider_error_in_dialect

    assert orjson.loads(provider_error_in_dialect(body, 400, dialect)) == expected


def test_rejected_provider_key_rotates_to_another(gateway, world):
    world["openai_key"].set_value("mock-status-401")
    world["openai_key"].weight = 1000.0
    world["openai_key"].save()
    ProviderKeyFactory(provider=world["openai"], name="spare", plain_value="mock-ok",
                       weight=0.001)
    gateway.reload()
    response = post(gateway, world)
    assert response.status_code == 200
    keys = [request.api_key for request in upstream_calls(world)]
    assert keys == ["mock-status-401", "mock-ok"]


def test_request_fallbacks_in_order_each_admitted_for_its_own_provider(gateway, world):
    body = {**with_mock(status=503), "fallbacks": ["claude/claude-3-5-haiku-latest"]}
    response = post(gateway, world, body)
    assert response.status_code == 200
    assert response.headers["x-gateway-provider"] == "claude"
    assert response.headers["x-gateway-fallback-index"] == "1"
    assert response.json()["object"] == "chat.completion"
    assert "fallbacks" not in upstream_calls(world)[0].json
    gateway.flush()
    [record] = UsageRecord.objects.all()
    assert (record.provider, record.fallback_index, record.status_code) == ("claude", 1, 200)


def test_fallback_skips_a_candidate_over_its_limit(gateway, world):
    from tests.factories import RateLimitFactory

    config = world["key"].provider_configs.get(provider=world["openai"])
    RateLimitFactory(provider_config=config, request_max_limit=1, request_reset_duration="1h",
                     token_max_limit=None, token_reset_duration=None)
    gateway.reload()
    body = {**CHAT, "fallbacks": ["claude/claude-3-5-haiku-latest"]}
    assert post(gateway, world, body).headers["x-gateway-provider"] == "mock"
    second = post(gateway, world, body)
    assert second.status_code == 200 and second.headers["x-gateway-provider"] == "claude"
    third = post(gateway, world)  # no fallback: the limit's own error
    assert third.status_code == 429 and third.json()["error"]["code"] == "request_limited"


def test_breaker_opens_then_probes_then_closes(gateway, world):
    set_provider(gateway, "mock", max_retries=0, failure_threshold=2, open_seconds=1)
    assert post(gateway, world, with_mock(status=500)).status_code == 502
    assert post(gateway, world, with_mock(status=500)).status_code == 502
    before = len(upstream_calls(world))
    blocked = post(gateway, world)
    assert blocked.status_code == 503
    assert blocked.json()["error"]["code"] == "no_provider_available"
    assert blocked.headers["retry-after"] == "1"  # when the circuit lets its probe through
    assert "x-should-retry" not in blocked.headers  # the provider was not called: SDKs may
    assert len(upstream_calls(world)) == before  # open: the provider was not called
    time.sleep(1.05)
    assert post(gateway, world, with_mock(status=500)).status_code == 502  # failed probe
    assert post(gateway, world).status_code == 503  # open again
    time.sleep(1.05)
    assert post(gateway, world).status_code == 200  # probe succeeds: closed
    assert post(gateway, world).status_code == 200


def test_first_byte_timeout(gateway, world):
    set_provider(gateway, "mock", max_retries=0, first_byte_timeout_ms=200)
    started = time.monotonic()
    response = post(gateway, world, with_mock(delay_ms=2000))
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 1.5


def test_idle_timeout_between_stream_chunks_after_the_first_byte(gateway, world):
    set_provider(gateway, "mock", max_retries=0, idle_timeout_ms=200)
    body = {**with_mock(chunks=4, chunk_delay_ms=1000), "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=10,
                      headers={"authorization": f"Bearer {world['secret']}"}) as response:
        assert response.status_code == 200  # headers went out with the first event
        text = response.read().decode()
    assert "stream ended unexpectedly" in text
    assert len(upstream_calls(world)) == 1  # nothing retried after the first byte



def test_the_idle_timeout_does_not_cut_the_wait_for_the_first_byte(gateway, world):
    set_provider(gateway, "mock", max_retries=0, first_byte_timeout_ms=5000,
                 idle_timeout_ms=200)
    response = post(gateway, world, with_mock(delay_ms=700))
    assert response.status_code == 200
    assert len(upstream_calls(world)) == 1


def test_the_first_byte_timeout_does_not_limit_a_stream_that_keeps_coming(gateway, world):
    set_provider(gateway, "mock", max_retries=0, first_byte_timeout_ms=800,
                 idle_timeout_ms=5000)
    body = {**with_mock(chunks=4, chunk_delay_ms=400), "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=10,
                      headers={"authorization": f"Bearer {world['secret']}"}) as response:
        assert response.status_code == 200
        text = response.read().decode()
    assert text.rstrip().endswith("data: [DONE]")
    assert "stream ended unexpectedly" not in text


def test_total_timeout(gateway, world):
    set_provider(gateway, "mock", max_retries=0, total_timeout_ms=300,
                 first_byte_timeout_ms=5000)
    started = time.monotonic()
    response = post(gateway, world, with_mock(delay_ms=2000))
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "upstream_timeout"
    assert "total 300 ms" in error["message"]
    assert time.monotonic() - started < 1.5


def test_dropped_connection_is_retried(gateway, world):
    response = post(gateway, world, with_mock(drop=True, fail_times=1, fail_key="drop1"))
    assert response.status_code == 200
    assert len(upstream_calls(world)) == 2


@pytest.mark.parametrize("status", [301, 307, 308])
def test_a_redirect_from_the_provider_is_never_followed(gateway, world, status):
    # Following it would send the provider key to whatever host it names.
    elsewhere = f"{world['mock'].url}/v1/elsewhere"
    response = post(gateway, world, with_mock(status=status, location=elsewhere))
    assert response.status_code == 502
    assert "does not follow redirects" in response.json()["error"]["message"]
    assert "location" not in response.headers
    assert [request.path for request in world["mock"].requests] == \
        ["/v1/chat/completions"]  # once: not retried, not followed
    gateway.flush()
    [record] = UsageRecord.objects.all()
    assert (record.status_code, record.provider) == (502, "mock")


def test_malformed_upstream_body_is_502(gateway, world):
    set_provider(gateway, "mock", max_retries=0)
    response = post(gateway, world, with_mock(malformed=True))
    assert response.status_code == 502


def test_client_disconnect_mid_stream_cancels_upstream_and_bills_what_was_streamed(gateway,
                                                                                   world):
    body = {**with_mock(chunks=50, chunk_delay_ms=50), "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=10,
                      headers={"authorization": f"Bearer {world['secret']}"}) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]
    assert any(line.startswith("data: ") for line in received)
    deadline = time.monotonic() + 5
    while not upstream_calls(world)[-1].disconnected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream_calls(world)[-1].disconnected
    deadline = time.monotonic() + 5
    while not gateway.events() and time.monotonic() < deadline:
        time.sleep(0.05)
    gateway.flush()
    [record] = UsageRecord.objects.all()
    assert (record.status_code, record.error_type) == (499, "client_disconnected")
    assert record.completion_tokens > 0 and record.cost > 0


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b"{broken", 400, "not valid JSON"),
    (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model: required"),
    (b'{"model": "mock/gpt-4o-mini"}', 400, "messages: required"),
    (b'{"model": "mock/gpt-4o-mini", "messages": [{"role": 1}]}', 400, "messages[0].role"),
    # control characters would be echoed in x-gateway-model: refused before any upstream call
    *[(b'{"model": "mock/gpt' + escaped + b'x", "messages": [{"role": "user", "content": "x"}]}',
       400, "model: must not contain control characters")
      for escaped in (b"\\u0000", b"\\u0001", b"\\r\\n", b"\\u007f")],
    (b'{"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], '
     b'"fallbacks": ["claude/x\\u0000"]}', 400, "fallbacks"),
])
def test_bad_requests(gateway, world, body, status, needle):
    response = httpx.post(f"{gateway.url}/v1/chat/completions", content=body,
                          headers={"authorization": f"Bearer {world['secret']}",
                                   "content-type": "application/json"})
    assert response.status_code == status
    assert needle in response.json()["error"]["message"]
    assert response.headers["x-request-id"]
    assert world["mock"].requests == []


def test_oversized_body_is_413(gateway, world):
    big = b'{"model": "mock/gpt-4o-mini", "messages": [{"role": "user", "content": "' + \
        b"x" * (10 * 1024 * 1024 + 1) + b'"}]}'
    response = httpx.post(f"{gateway.url}/v1/chat/completions", content=big,
                          headers={"authorization": f"Bearer {world['secret']}"}, timeout=30)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(("method", "path", "status", "allow"), [
    ("GET", "/v1/chat/completions", 405, "POST, OPTIONS"),
    ("DELETE", "/anthropic/v1/messages", 405, "POST, OPTIONS"),
    ("POST", "/v1/models", 405, "GET, OPTIONS"),
    ("POST", "/v1/unknown", 404, None),
    ("POST", "/anthropic/v1/unknown", 404, None),
])
def test_wrong_routes(gateway, world, method, path, status, allow):
    response = httpx.request(method, f"{gateway.url}{path}",
                             headers={"authorization": f"Bearer {world['secret']}"})
    assert response.status_code == status
    assert response.headers.get("allow") == allow  # a 405 says what the route takes


def test_cors_preflight_and_headers(gateway, world, settings):
    from gateway.conf import gateway_settings

    gateway.inference.state.cors.__init__(["https://app.example.com"])
    try:
        preflight = httpx.options(f"{gateway.url}/v1/chat/completions", headers={
            "origin": "https://app.example.com", "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type"})
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "authorization" in preflight.headers["access-control-allow-headers"]
        refused = httpx.options(f"{gateway.url}/v1/chat/completions",
                                headers={"origin": "https://evil.test"})
        assert refused.status_code == 403
        response = post(gateway, world, headers={"origin": "https://app.example.com"})
        assert response.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "x-request-id" in response.headers["access-control-expose-headers"]
    finally:
        gateway.inference.state.cors.__init__(gateway_settings.CORS_ORIGINS)


def test_concurrency_limit_two_with_five_long_requests(gateway, world):
    VirtualKey.objects.filter(pk=world["key"].pk).update(max_concurrent_requests=2)
    gateway.reload()
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        responses = list(pool.map(lambda _: post(gateway, world, with_mock(delay_ms=600)),
                                  range(5)))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, 200, 429, 429, 429]
    denied = [r for r in responses if r.status_code == 429]
    assert all(r.json()["error"]["code"] == "concurrency_limited" for r in denied)
    assert post(gateway, world).status_code == 200  # slots came back


def test_routing_rule_rewrites_the_target(gateway, world):
    rule = RoutingRuleFactory(name="to-claude", cel_expression='headers["x-tier"] == "gold"',
                              scope="global")
    RoutingTargetFactory(rule=rule, provider=world["claude"], model="claude-3-5-haiku-latest")
    gateway.reload()
    gold = post(gateway, world, headers={"x-tier": "gold"})
    assert gold.status_code == 200
    assert gold.headers["x-gateway-provider"] == "claude"
    assert gold.headers["x-gateway-routing-rule"] == "to-claude"
    plain = post(gateway, world)
    assert plain.headers["x-gateway-provider"] == "mock"
    assert "x-gateway-routing-rule" not in plain.headers
    gateway.flush()
    names = sorted(UsageRecord.objects.values_list("routing_rule_name", flat=True))
    assert names == ["", "to-claude"]


def test_bare_model_uses_the_key_configs_then_aliases_then_404(gateway, world):
    configs = world["key"].provider_configs
    configs.filter(provider=world["openai"]).update(allowed_models=["gpt-4o-mini", "gpt-4o"])
    configs.filter(provider=world["claude"]).update(allowed_models=["claude-3-5-haiku-latest"])
    alias = ModelAliasFactory(name="smart", strategy="priority")
    ModelAliasRouteFactory(alias=alias, provider=world["claude"], model="claude-3-5-haiku-latest",
                           priority=0)
    ModelAliasRouteFactory(alias=alias, provider=world["openai"], model="gpt-4o", priority=1)
    gateway.reload()
    for model, provider in (("gpt-4o-mini", "mock"), ("claude-3-5-haiku-latest", "claude")):
        bare = post(gateway, world, {**CHAT, "model": model})
        assert bare.status_code == 200
        assert bare.headers["x-gateway-provider"] == provider  # the one config allowing it
        assert bare.headers["x-gateway-model"] == model
    aliased = post(gateway, world, {**CHAT, "model": "smart"})
    assert aliased.headers["x-gateway-provider"] == "claude"
    assert aliased.headers["x-gateway-model"] == "claude-3-5-haiku-latest"
    unknown = post(gateway, world, {**CHAT, "model": "mystery"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"


def test_config_change_is_visible_within_a_second(gateway, world):
    from gateway import config_version

    VirtualKey.objects.filter(pk=world["key"].pk).update(is_active=False)
    config_version.bump_now()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if post(gateway, world).status_code == 403:
            break
        time.sleep(0.02)
    else:
        pytest.fail("a deactivated key still worked after a second")


def test_a_provider_config_allowing_no_keys_is_403_saying_why(gateway, world):
    world["key"].provider_configs.filter(provider=world["openai"]).update(allow_all_keys=False)
    gateway.reload()
    response = post(gateway, world)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "provider_blocked"
    assert "key_ids" in response.json()["error"]["message"]
    assert world["mock"].requests == []
    gateway.flush()
    assert not UsageRecord.objects.exists()  # never reached a provider: no usage



def _streamed_text(text: str) -> str:
    """The generated text in a stream as the client got it (chat chunks or Anthropic
    deltas)."""
    pieces = []
    for line in text.splitlines():
        if not line.startswith("data: {"):
            continue
        event = json.loads(line[6:])
        for choice in event.get("choices") or ():
            pieces.append((choice.get("delta") or {}).get("content") or "")
        if event.get("type") == "content_block_delta":
            pieces.append(event["delta"].get("text", ""))
    return "".join(pieces)


def _stream_from_a_claude_provider(gateway, world, path, key_value):
    """A stream on ``path`` from a new Anthropic provider, ``claude-special``, whose API key
    carries the mock's controls (the body's ``mock`` field is not translated); the text the
    client got, after checking it was a 200."""
    provider = ProviderFactory(name="claude-special", kind="anthropic",
                               base_url=world["mock"].url, max_retries=0)
    ProviderKeyFactory(provider=provider, name="k", plain_value=key_value)
    ProviderConfigFactory(virtual_key=world["key"], provider=provider, allowed_models=["*"],
                          allow_all_keys=True, weight=None)
    gateway.reload()
    request = {"model": "claude-special/claude-3-5-haiku-latest", "max_tokens": 900,
               "stream": True, "messages": [{"role": "user", "content": "hello"}]}
    with httpx.stream("POST", f"{gateway.url}{path}", json=request, timeout=10,
                      headers={"authorization": f"Bearer {world['secret']}"}) as response:
        assert response.status_code == 200
        return "".join(response.iter_text())


@pytest.mark.parametrize("path", ["/anthropic/v1/messages", "/v1/chat/completions"])
def test_a_claude_stream_cut_short_is_billed_for_the_text_it_streamed(gateway, world, path):
    # Anthropic's message_start reports output_tokens: 1 as a placeholder; the real count
    # comes in message_delta at the end. A stream that breaks before it (here after 10 of 20
    # deltas, on the native route and translated for an OpenAI client) is billed for the
    # text streamed, 4 characters a token.
    text = _stream_from_a_claude_provider(gateway, world, path,
                                          "mock-chunks-20-drop_after_chunks-10")
    assert "error" in text  # the client was told the stream broke
    streamed = _streamed_text(text)
    assert len(streamed) >= 20
    gateway.flush()
    [record] = UsageRecord.objects.all()
    assert (record.status_code, record.error_type) == (502, "upstream_stream_error")
    assert record.completion_tokens == (len(streamed) + 3) // 4
    assert record.prompt_tokens > 0 and record.cost > 0


def test_a_routing_rule_name_with_control_characters_cannot_break_the_response(gateway,
                                                                               world):
    # Names come from operators; a header value with a control character would make the
    # server drop the answer after the provider was paid. It is sent with "?" instead.
    rule = RoutingRuleFactory(name="tab\there", cel_expression="true", scope="global")
    RoutingTargetFactory(rule=rule, provider=world["openai"], model="gpt-4o-mini")
    gateway.reload()
    response = post(gateway, world)
    assert response.status_code == 200
    assert response.headers["x-gateway-routing-rule"] == "tab?here"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/anthropic/v1/messages"])
def test_a_malformed_event_from_claude_ends_the_stream_with_an_error_event(gateway, world,
                                                                          path):
    # The stream is translated for the OpenAI client, parsed on the native route: an event
    # that is not JSON is never passed on raw (the client's SDK would fail to parse it); the
    # stream ends with an error event in the client's dialect instead, and is recorded.
    text = _stream_from_a_claude_provider(gateway, world, path,
                                          "mock-malformed-chunk_delay_ms-30")
    data = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    parsed = [json.loads(item) for item in data if item != "[DONE]"]  # every one parses
    last = parsed[-1]
    assert last["error"]["message"] == "Provider 'claude-special' stream ended unexpectedly"
    if path.startswith("/v1"):
        assert all(item.get("object") == "chat.completion.chunk" for item in parsed[:-1])
    gateway.flush()
    [record] = UsageRecord.objects.all()
    assert (record.status_code, record.error_type) == (502, "upstream_stream_error")


def _raw_chat(gateway, world, payload: bytes):
    """A raw socket to the gateway with the head of a chat request for ``payload`` sent
    (``connection: close``): the caller sends the body when it likes."""
    import socket

    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\n"
                 b"authorization: Bearer " + world["secret"].encode() + b"\r\n"
                 b"content-type: application/json\r\nconnection: close\r\n"
                 b"content-length: " + str(len(payload)).encode() + b"\r\n\r\n")
    return sock


def _leave_after(gateway, world, body, seconds):
    """Send ``body`` to /v1/chat/completions on a raw socket and close it after ``seconds``
    without reading the answer."""
    payload = json.dumps(body).encode()
    with _raw_chat(gateway, world, payload) as sock:
        sock.sendall(payload)
        time.sleep(seconds)


def _wait_for(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_while_the_provider_works_cancels_it_and_is_billed_the_prompt(
        gateway, world, stream):
    # Non-streaming, or a stream whose first byte has not come: the provider's work is
    # cancelled (the mock sees the gateway hang up), the request is recorded as 499 with its
    # prompt billed, and the admission is settled: the key's one concurrency slot is free.
    VirtualKey.objects.filter(pk=world["key"].pk).update(max_concurrent_requests=1)
    gateway.reload()
    controls = {"first_byte_delay_ms": 4000} if stream else {"delay_ms": 4000}
    started = time.monotonic()
    _leave_after(gateway, world, {**with_mock(**controls), "stream": stream}, 0.5)
    assert _wait_for(lambda: upstream_calls(world) and upstream_calls(world)[-1].disconnected)
    assert time.monotonic() - started < 3  # well before the provider would have answered
    assert _wait_for(lambda: gateway.inference.active == 0)
    gateway.flush()
    [record] = UsageRecord.objects.all()
    assert (record.status_code, record.error_type) == (499, "client_disconnected")
    assert record.prompt_tokens > 0 and record.completion_tokens == 0 and record.cost > 0
    assert len(upstream_calls(world)) == 1
    assert post(gateway, world).status_code == 200  # the slot is free; the server serves on


def test_a_client_that_leaves_during_a_backoff_gets_no_further_attempt(gateway, world):
    set_provider(gateway, "mock", max_retries=3, backoff_initial_ms=1500, backoff_max_ms=1500)
    _leave_after(gateway, world, with_mock(status=503), 0.4)
    assert _wait_for(lambda: gateway.inference.active == 0, seconds=4)
    assert len(upstream_calls(world)) == 1  # the retries (and fallbacks) were dropped
    gateway.flush()
    [record] = UsageRecord.objects.all()  # the attempt that reached the provider
    assert record.status_code == 502


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", CHAT),
    ("/v1/completions", {"model": "mock/gpt-3.5-turbo-instruct", "prompt": "hello"}),
    ("/anthropic/v1/messages", {"model": "claude/claude-3-5-haiku-latest", "max_tokens": 50,
                                "messages": [{"role": "user", "content": "hello"}]}),
])
def test_an_answer_without_usage_is_billed_on_estimates_and_counts_against_limits(
        gateway, world, path, body):
    # A provider that omits usage must not make requests free: prompt and answer are
    # estimated at 4 characters a token (as the mock counts them), priced, and counted.
    from decimal import Decimal

    from bench.mock_upstream import DEFAULT_CONTENT
    from tests.factories import BudgetFactory

    BudgetFactory(virtual_key=world["key"], max_limit=Decimal("0.000001"), reset_duration="1d")
    gateway.reload()
    response = post(gateway, world, {**body, "mock": {"no_usage": True}}, path=path)
    assert response.status_code == 200
    assert "usage" not in response.json()
    assert float(response.headers["x-gateway-cost-usd"]) > 0.000001
    assert post(gateway, world, body, path=path).status_code == 402  # the budget counted it
    gateway.flush()
    [record] = UsageRecord.objects.filter(status_code=200)
    assert (record.prompt_tokens, record.completion_tokens) == (2, -(-len(DEFAULT_CONTENT) // 4))


def test_a_slow_upload_is_not_counted_as_the_gateways_overhead(gateway, world):
    payload = json.dumps(CHAT).encode()
    with _raw_chat(gateway, world, payload) as sock:
        time.sleep(0.6)  # the client takes its time to send the body
        sock.sendall(payload)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 200")
    headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:])
    assert float(headers["x-gateway-overhead-ms"]) < 300
    gateway.flush()
    [record] = UsageRecord.objects.all()
    assert record.latency_ms >= 600 and record.overhead_ms < 300


def test_requests_leave_no_reference_cycles_behind(gateway, world):
    # The data plane leaves young collections rare and full ones rarer (gc.freeze at start):
    # a cycle per request would pile up until a full collection stalls the event loop for
    # tens of milliseconds. Every request's objects go by reference counting alone.
    import gc

    from gateway.proxy.app import Call

    assert post(gateway, world).status_code == 200
    gc.collect()
    gc.disable()
    try:
        for body in (CHAT, {**CHAT, "stream": True}, {**CHAT, "model": "nope/x"}):
            post(gateway, world, body)
        assert _wait_for(lambda: gateway.inference.active == 0)
        time.sleep(0.2)  # the last request's task lets go of its frame
        assert [item for item in gc.get_objects() if type(item) is Call] == []
    finally:
        gc.enable()
