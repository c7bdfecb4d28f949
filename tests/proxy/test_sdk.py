"""The official OpenAI and Anthropic SDKs, unmodified, against the gateway."""

from __future__ import annotations

import math
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest

from bench.mock_upstream import DEFAULT_CHUNKS, DEFAULT_CONTENT, DEFAULT_EMBEDDING_DIMENSIONS
from governance.models import UsageRecord
from tests.factories import BudgetFactory, RateLimitFactory

# The mock answers DEFAULT_CONTENT and counts ceil(characters / 4) tokens (at least 1).
REPLY_TOKENS = math.ceil(len(DEFAULT_CONTENT) / 4)


def tokens(*texts):
    return max(1, math.ceil(sum(len(text) for text in texts) / 4))


def openai_client(gateway, secret, **kwargs):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=secret, max_retries=0, **kwargs)


def anthropic_client(gateway, secret):
    return anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key=secret,
                               max_retries=0)


def records():
    return list(UsageRecord.objects.order_by("created_at"))


def test_chat_completion(gateway, world):
    with openai_client(gateway, world["secret"]) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="mock/gpt-4o-mini", messages=[{"role": "user", "content": "Hello there"}])
    completion = raw.parse()
    assert completion.choices[0].message.content == DEFAULT_CONTENT
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == \
        (tokens("Hello there"), REPLY_TOKENS)
    headers = raw.headers
    assert headers["x-gateway-provider"] == "mock"
    assert headers["x-gateway-model"] == "gpt-4o-mini"
    assert headers["x-gateway-fallback-index"] == "0"
    assert Decimal(headers["x-gateway-cost-usd"]) > 0
    assert float(headers["x-gateway-overhead-ms"]) >= 0
    assert len(headers["x-request-id"]) == 32
    upstream = world["mock"].requests[-1]
    assert upstream.headers["authorization"] == "Bearer mock-ok"
    assert upstream.headers["x-request-id"] == headers["x-request-id"]
    assert upstream.headers["user-agent"] == "llm-gateway"  # not aiohttp's
    assert upstream.json["model"] == "gpt-4o-mini"
    gateway.flush()
    [record] = records()
    assert record.request_id == headers["x-request-id"]
    assert (record.provider, record.requested_model, record.resolved_model) == \
        ("mock", "mock/gpt-4o-mini", "gpt-4o-mini")
    assert (record.request_type, record.is_stream, record.status_code) == \
        ("chat_completion", False, 200)
    assert record.prompt_tokens == completion.usage.prompt_tokens
    assert record.completion_tokens == completion.usage.completion_tokens
    assert record.cost == Decimal(headers["x-gateway-cost-usd"])
    assert str(record.team_id) == str(world["team"].id)
    assert str(record.customer_id) == str(world["customer"].id)


def test_client_request_id_is_echoed_and_forwarded(gateway, world):
    with openai_client(gateway, world["secret"]) as client:
        echoed = [client.chat.completions.with_raw_response.create(
            model="mock/gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-request-id": "trace-42"}).headers["x-request-id"]
            for _ in range(2)]  # a client may reuse its id
    assert echoed == ["trace-42", "trace-42"]
    assert [request.headers["x-request-id"] for request in world["mock"].requests] == \
        ["trace-42", "trace-42"]
    gateway.flush()
    first, second = records()  # each request still has its own usage record...
    assert (first.request_id, second.request_id) == ("trace-42", "trace-42")  # ...under its id
    assert first.event_id != second.event_id


def test_a_providers_cookies_never_reach_another_request(gateway, world):
    # One pooled session serves every virtual key: a cookie a provider sets (its CDN's
    # __cf_bm, an auth proxy's session) must not be sent back with anyone's next request,
    # nor reach the client. (Cookie jars ignore IP hosts: the provider is named by name.)
    world["openai"].base_url = world["openai"].base_url.replace("127.0.0.1", "localhost")
    world["openai"].save()
    gateway.reload()
    with openai_client(gateway, world["secret"]) as client:
        first = client.chat.completions.with_raw_response.create(
            model="mock/gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
            extra_body={"mock": {"set_cookie": "session=tenant-a; Path=/; HttpOnly"}})
        client.chat.completions.create(model="mock/gpt-4o-mini",
                                       messages=[{"role": "user", "content": "y"}])
    assert "set-cookie" not in first.headers
    assert world["mock"].requests[0].json["mock"] == {
        "set_cookie": "session=tenant-a; Path=/; HttpOnly"}  # passed through untouched
    assert [request.headers.get("cookie") for request in world["mock"].requests] == [None, None]


def test_stream_with_usage(gateway, world):
    with openai_client(gateway, world["secret"]) as client:
        stream = client.chat.completions.create(
            model="mock/gpt-4o-mini", messages=[{"role": "user", "content": "Stream please"}],
            stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
    content = [c.choices[0].delta.content for c in chunks[:-1] if c.choices[0].delta.content]
    assert "".join(content) == DEFAULT_CONTENT and len(content) == DEFAULT_CHUNKS
    assert all(chunk.usage is None for chunk in chunks[:-1])
    usage_chunk = chunks[-1]  # the usage rides alone on the last chunk
    assert usage_chunk.choices == []
    assert (usage_chunk.usage.prompt_tokens, usage_chunk.usage.completion_tokens) == \
        (tokens("Stream please"), REPLY_TOKENS)
    gateway.flush()
    [record] = records()
    assert (record.request_type, record.is_stream) == ("chat_completion_stream", True)
    assert (record.prompt_tokens, record.completion_tokens) == \
        (tokens("Stream please"), REPLY_TOKENS)


def test_stream_without_usage_hides_the_usage_chunk_but_bills_it(gateway, world):
    messages = [{"role": "user", "content": "Stream"}]
    with openai_client(gateway, world["secret"]) as client:
        chunks = list(client.chat.completions.create(model="mock/gpt-4o-mini",
                                                     messages=messages, stream=True))
        same = client.chat.completions.with_raw_response.create(model="mock/gpt-4o-mini",
                                                                messages=messages)
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == DEFAULT_CONTENT
    assert world["mock"].requests[0].json["stream_options"] == {"include_usage": True}
    gateway.flush()
    streamed = UsageRecord.objects.get(is_stream=True)
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (tokens("Stream"), REPLY_TOKENS)
    assert streamed.cost == Decimal(same.headers["x-gateway-cost-usd"]) > 0  # same tokens


def test_embeddings_and_models(gateway, world):
    world["key"].provider_configs.filter(provider=world["claude"]).update(
        allowed_models=["claude-3-5-haiku-latest"])
    gateway.reload()
    with openai_client(gateway, world["secret"]) as client:
        result = client.embeddings.create(model="mock/text-embedding-3-small", input="hello")
        models = {model.id: model.owned_by for model in client.models.list()}
    assert [len(item.embedding) for item in result.data] == [DEFAULT_EMBEDDING_DIMENSIONS]
    assert result.usage.prompt_tokens == tokens("hello")
    [upstream] = world["mock"].requests  # the model list is the gateway's own
    assert (upstream.path, upstream.json["model"]) == ("/v1/embeddings", "text-embedding-3-small")
    # claude: its one allowed model; mock (every model allowed): its catalog models
    assert {name for name in models if not name.startswith("mock/")} == \
        {"claude/claude-3-5-haiku-latest"}
    assert {"mock/gpt-4o-mini", "mock/text-embedding-3-small"} <= set(models)
    # the catalog's prefix families (e.g. "ft:gpt-3.5-turbo-", every fine-tune) are not models
    assert not [name for name in models if name.endswith(("-", ":", "."))]
    assert all(owner == name.split("/")[0] for name, owner in models.items()), models
    gateway.flush()
    [record] = records()
    assert (record.request_type, record.prompt_tokens, record.completion_tokens) == \
        ("embedding", tokens("hello"), 0)


def test_models_retrieve_and_the_anthropic_model_list(gateway, world):
    world["key"].provider_configs.filter(provider=world["claude"]).update(
        allowed_models=["claude-3-5-haiku-latest", "claude-sonnet-4-5"])
    gateway.reload()
    with openai_client(gateway, world["secret"]) as client:
        model = client.models.retrieve("claude/claude-3-5-haiku-latest")
        assert (model.id, model.owned_by, model.object) == (
            "claude/claude-3-5-haiku-latest", "claude", "model")
        assert client.models.retrieve("mock/gpt-4o-mini").owned_by == "mock"
        with pytest.raises(openai.NotFoundError) as caught:
            client.models.retrieve("claude/claude-3-opus")  # not allowed for this key
        assert caught.value.code == "model_not_found"
    with anthropic_client(gateway, world["secret"]) as client:
        listed = [model.id for model in client.models.list(limit=1000)]
        assert {"claude/claude-3-5-haiku-latest", "claude/claude-sonnet-4-5"} <= set(listed)
        first = client.models.list(limit=1)
        assert [model.id for model in first.data] == listed[:1] and first.has_more
        # the SDK pages through the whole list with after_id
        assert [model.id for model in client.models.list(limit=7)] == listed
        info = client.models.retrieve("claude/claude-sonnet-4-5")
        assert (info.type, info.id, info.display_name) == (
            "model", "claude/claude-sonnet-4-5", "claude/claude-sonnet-4-5")
        assert info.created_at.year >= 2026
        with pytest.raises(anthropic.NotFoundError):
            client.models.retrieve("nope/nothing")
        with pytest.raises(anthropic.BadRequestError):
            client.models.list(limit=5000)
    assert world["mock"].requests == []  # the gateway's own answers


def test_completions(gateway, world):
    with openai_client(gateway, world["secret"]) as client:
        result = client.completions.create(model="mock/gpt-4o-mini", prompt="Say hi")
    assert result.object == "text_completion"
    assert result.choices[0].text == DEFAULT_CONTENT
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == \
        (tokens("Say hi"), REPLY_TOKENS)
    upstream = world["mock"].requests[-1]
    assert upstream.path == "/v1/completions" and upstream.json["prompt"] == "Say hi"
    gateway.flush()
    [record] = records()
    assert (record.request_type, record.prompt_tokens, record.completion_tokens) == \
        ("text_completion", tokens("Say hi"), REPLY_TOKENS)


@pytest.mark.parametrize(("secret", "exception", "code"), [
    ("", openai.AuthenticationError, "virtual_key_required"),
    ("sk-gw-nope", openai.AuthenticationError, "virtual_key_not_found"),
])
def test_authentication_errors(gateway, world, secret, exception, code):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=secret or "placeholder",
                           max_retries=0,
                           default_headers={"authorization": ""} if not secret else None)
    with client, pytest.raises(exception) as caught:
        client.chat.completions.create(model="mock/gpt-4o-mini",
                                       messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == code
    assert caught.value.response.headers["x-request-id"]
    assert world["mock"].requests == []


def test_blocked_model_is_403(gateway, world):
    config = world["key"].provider_configs.get(provider=world["openai"])
    config.allowed_models = ["gpt-4o"]
    config.save()
    gateway.reload()
    with openai_client(gateway, world["secret"]) as client, \
            pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="mock/gpt-4o-mini",
                                       messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "model_blocked"
    assert world["mock"].requests == []


def test_budget_exceeded_is_402(gateway, world):
    BudgetFactory(team=world["team"], max_limit=Decimal("0.000001"), reset_duration="1d")
    gateway.reload()
    with openai_client(gateway, world["secret"]) as client:
        client.chat.completions.create(model="mock/gpt-4o-mini",
                                       messages=[{"role": "user", "content": "x" * 400}])
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="mock/gpt-4o-mini",
                                           messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 402
    assert caught.value.code == "budget_exceeded"
    assert 'team "research" budget 1d: $0.0000' in caught.value.message
    assert len(world["mock"].requests) == 1


def test_request_limit_is_429_with_retry_after(gateway, world):
    RateLimitFactory(virtual_key=world["key"], request_max_limit=2, request_reset_duration="1h",
                     token_max_limit=None, token_reset_duration=None)
    gateway.reload()
    with openai_client(gateway, world["secret"]) as client:
        for _ in range(2):
            raw = client.chat.completions.with_raw_response.create(
                model="mock/gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
        assert raw.headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="mock/gpt-4o-mini",
                                           messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "request_limited"
    refused = caught.value.response.headers
    assert 0 < int(refused["retry-after"]) <= 3600
    # the refusal says which limit, as OpenAI's own 429s do
    assert (refused["x-ratelimit-limit-requests"], refused["x-ratelimit-remaining-requests"]) \
        == ("2", "0")
    assert refused["x-ratelimit-reset-requests"] == f"{refused['retry-after']}s"
    assert "x-ratelimit-limit-tokens" not in refused


def test_anthropic_messages_native(gateway, world):
    with anthropic_client(gateway, world["secret"]) as client:
        message = client.messages.create(model="claude/claude-3-5-haiku-latest", max_tokens=50,
                                         messages=[{"role": "user", "content": "Hello"}])
    assert [block.text for block in message.content] == [DEFAULT_CONTENT]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == \
        (tokens("Hello"), REPLY_TOKENS)
    upstream = world["mock"].requests[-1]
    assert upstream.path == "/v1/messages" and upstream.headers["x-api-key"] == "mock-ok"
    assert upstream.json["model"] == "claude-3-5-haiku-latest"
    assert upstream.json["max_tokens"] == 50
    gateway.flush()
    [record] = records()
    assert (record.provider, record.request_type, record.prompt_tokens,
            record.completion_tokens) == ("claude", "chat_completion", tokens("Hello"),
                                          REPLY_TOKENS)


def test_anthropic_messages_stream(gateway, world):
    with anthropic_client(gateway, world["secret"]) as client, client.messages.stream(
            model="claude/claude-3-5-haiku-latest", max_tokens=50,
            messages=[{"role": "user", "content": "Hello"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == DEFAULT_CONTENT
    assert (final.usage.input_tokens, final.usage.output_tokens) == (tokens("Hello"), REPLY_TOKENS)
    gateway.flush()
    [record] = records()
    assert (record.provider, record.is_stream) == ("claude", True)
    assert (record.prompt_tokens, record.completion_tokens) == (tokens("Hello"), REPLY_TOKENS)


def test_anthropic_errors_have_anthropic_shape(gateway, world):
    with anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key="sk-gw-bad",
                             max_retries=0) as client, \
            pytest.raises(anthropic.AuthenticationError) as caught:
        client.messages.create(model="claude/claude-3-5-haiku-latest", max_tokens=5,
                               messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "authentication_error"
    assert len(caught.value.request_id) == 32  # the gateway's id, as Anthropic's request-id


def test_the_sdks_see_the_gateways_request_id_and_the_provider_keeps_its_own(gateway, world):
    with anthropic_client(gateway, world["secret"]) as client:
        raw = client.messages.with_raw_response.create(
            model="claude/claude-3-5-haiku-latest", max_tokens=5,
            messages=[{"role": "user", "content": "x"}])
    assert raw.parse()._request_id == raw.headers["x-request-id"]
    assert raw.headers.get_list("request-id") == [raw.headers["x-request-id"]]
    assert raw.headers["x-provider-request-id"].startswith("req_mock")  # the provider's own
    with openai_client(gateway, world["secret"]) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="mock/gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert raw.parse()._request_id == raw.headers["x-request-id"]
    assert raw.headers["x-provider-request-id"] != raw.headers["x-request-id"]


def test_openai_client_reaches_a_claude_model_through_translation(gateway, world):
    with openai_client(gateway, world["secret"]) as client:
        completion = client.chat.completions.create(
            model="claude/claude-3-5-haiku-latest",
            messages=[{"role": "system", "content": "Be brief"},
                      {"role": "user", "content": "Hello"}], max_tokens=20)
        chunks = list(client.chat.completions.create(
            model="claude/claude-3-5-haiku-latest", messages=[{"role": "user", "content": "Hi"}],
            stream=True, stream_options={"include_usage": True}))
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == DEFAULT_CONTENT
    assert completion.choices[0].finish_reason == "stop"  # from end_turn
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == \
        (tokens("Be brief", "Hello"), REPLY_TOKENS)
    upstream = world["mock"].requests[0]
    assert upstream.path == "/v1/messages"
    assert upstream.json["system"] == "Be brief" and upstream.json["max_tokens"] == 20
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        DEFAULT_CONTENT
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == \
        (tokens("Hi"), REPLY_TOKENS)
    # the model that answered, streamed or not (not the "provider/model" string asked for)
    assert completion.model == "claude-3-5-haiku-latest"
    assert {chunk.model for chunk in chunks} == {"claude-3-5-haiku-latest"}


def test_anthropic_client_reaches_an_openai_model_through_translation(gateway, world):
    with anthropic_client(gateway, world["secret"]) as client:
        message = client.messages.create(model="mock/gpt-4o-mini", max_tokens=30,
                                         system="terse",
                                         messages=[{"role": "user", "content": "Hello"}])
        with client.messages.stream(model="mock/gpt-4o-mini", max_tokens=30,
                                    messages=[{"role": "user", "content": "Hi"}]) as stream:
            text = "".join(stream.text_stream)
            streamed = stream.get_final_message()
    assert message.model == streamed.model == "gpt-4o-mini"  # the model that answered
    assert message.type == "message"
    assert [block.text for block in message.content] == [DEFAULT_CONTENT]
    assert message.stop_reason == "end_turn"  # from stop
    assert (message.usage.input_tokens, message.usage.output_tokens) == \
        (tokens("terse", "Hello"), REPLY_TOKENS)
    assert text == DEFAULT_CONTENT
    upstream = world["mock"].requests[0]
    assert upstream.path == "/v1/chat/completions"
    assert upstream.json["model"] == "gpt-4o-mini"
    assert upstream.json["messages"][0] == {"role": "system", "content": "terse"}
    # OpenAI's own API: max_completion_tokens (its reasoning models refuse max_tokens)
    assert upstream.json["max_completion_tokens"] == 30 and "max_tokens" not in upstream.json


def test_an_openai_compatible_server_gets_max_tokens_from_an_anthropic_client(gateway, world):
    from gateway.models import Provider

    Provider.objects.filter(name="mock").update(kind="openai_compatible")
    gateway.reload()
    with anthropic_client(gateway, world["secret"]) as client:
        client.messages.create(model="mock/gpt-4o-mini", max_tokens=30,
                               messages=[{"role": "user", "content": "Hello"}])
    upstream = world["mock"].requests[0]
    assert upstream.json["max_tokens"] == 30 and "max_completion_tokens" not in upstream.json


def test_no_inference_request_reaches_django(gateway, world):
    from django.core.signals import request_started

    seen = []

    def receiver(**kwargs):
        seen.append(kwargs)

    request_started.connect(receiver)
    try:
        with openai_client(gateway, world["secret"]) as client:
            client.chat.completions.create(model="mock/gpt-4o-mini",
                                           messages=[{"role": "user", "content": "x"}])
            client.models.list()
        httpx.post(f"{gateway.url}/v1/unknown", json={})
        assert seen == []
        httpx.get(f"{gateway.url}/admin/login/")
        assert len(seen) == 1  # the admin does go through Django
    finally:
        request_started.disconnect(receiver)
