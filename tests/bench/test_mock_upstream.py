"""The mock upstream: shapes checked with the official SDKs, and every failure control."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
import time
import urllib.error
import urllib.request
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from bench.mock_upstream import (
    DEFAULT_CONTENT,
    DEFAULT_EMBEDDING_DIMENSIONS,
    MODELS,
    MockUpstream,
    parse_controls,
)

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there, mock!"}]}
MESSAGES = {"model": "claude-haiku-4-5", "max_tokens": 256,
            "messages": [{"role": "user", "content": "Hello there, mock!"}]}
ANTHROPIC_HEADERS = {"x-api-key": "mock-ok", "anthropic-version": "2023-06-01"}
OPENAI_HEADERS = {"authorization": "Bearer mock-ok"}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "days": {"type": "integer"}},
                   "required": ["city", "days"]}}}


@pytest.fixture
async def mock():
    async with MockUpstream() as server:
        yield server


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def oai(mock):
    client = openai.AsyncOpenAI(base_url=f"{mock.url}/v1", api_key="mock-ok", max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def claude(mock):
    client = anthropic.AsyncAnthropic(base_url=mock.url, api_key="mock-ok", max_retries=0)
    yield client
    await client.close()


def sse(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) of each server-sent event."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data.append(line[len("data: "):])
        events.append((name, "\n".join(data)))
    return events


async def post(http: aiohttp.ClientSession, url: str, body: Any,
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    async with http.post(url, json=body, headers=headers or OPENAI_HEADERS) as response:
        return response.status, dict(response.headers), await response.read()


# --- shapes, through the SDKs --------------------------------------------------------------

async def test_openai_chat_through_the_sdk(mock, oai):
    completion = await oai.chat.completions.create(**CHAT)
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == DEFAULT_CONTENT
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage.prompt_tokens == math.ceil(len("Hello there, mock!") / 4)
    assert usage.completion_tokens == math.ceil(len(DEFAULT_CONTENT) / 4)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details.cached_tokens == 0
    recorded = mock.requests[-1]
    assert (recorded.method, recorded.path) == ("POST", "/v1/chat/completions")
    assert recorded.headers["authorization"] == "Bearer mock-ok"
    assert recorded.json["messages"] == CHAT["messages"]
    assert recorded.api_key == "mock-ok"


async def test_openai_stream_through_the_sdk_with_usage(oai):
    stream = await oai.chat.completions.create(
        **CHAT, stream=True, stream_options={"include_usage": True},
        extra_body={"mock": {"chunks": 3, "content": "abcdefghi"}})
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [chunk.choices[0].delta.content for chunk in chunks[1:] if chunk.choices
              and chunk.choices[0].delta.content]
    assert pieces == ["abc", "def", "ghi"]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 3
    assert all(chunk.usage is None for chunk in chunks[:-1])


async def test_openai_stream_has_no_usage_chunk_without_include_usage(mock, http):
    status, headers, body = await post(http, f"{mock.url}/v1/chat/completions",
                                       {**CHAT, "stream": True})
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    events = sse(body.decode())
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all(chunk["choices"] for chunk in chunks)
    assert all("usage" not in chunk for chunk in chunks)
    assert "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks) \
        == DEFAULT_CONTENT
    assert len(chunks) == 1 + mock.chunks + 1  # role, content pieces, finish


async def test_no_usage_control(mock, oai, http):
    completion = await oai.chat.completions.create(**CHAT, extra_headers={"x-mock-no-usage": "1"})
    assert completion.usage is None
    _, _, body = await post(http, f"{mock.url}/v1/chat/completions",
                            {**CHAT, "stream": True, "stream_options": {"include_usage": True},
                             "mock": {"no_usage": True}})
    chunks = [json.loads(data) for _, data in sse(body.decode())[:-1]]
    assert all(chunk["choices"] for chunk in chunks)


@pytest.mark.parametrize(("path", "body", "headers"), [
    ("/v1/chat/completions", CHAT, OPENAI_HEADERS),
    ("/v1/chat/completions", {**CHAT, "stream": True}, OPENAI_HEADERS),
    ("/v1/chat/completions", CHAT, {**OPENAI_HEADERS, "x-mock-first-byte-delay-ms": "1"}),
    ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hi"}, OPENAI_HEADERS),
    ("/v1/messages", MESSAGES, ANTHROPIC_HEADERS),
    ("/v1/messages", {**MESSAGES, "stream": True}, {**ANTHROPIC_HEADERS,
                                                     "x-mock-chunk-delay-ms": "1"}),
])
async def test_set_cookie_control(mock, http, path, body, headers):
    status, answered, _ = await post(http, f"{mock.url}{path}",
                                     {**body, "mock": {"set_cookie": "a=1; Path=/"}}, headers)
    assert status == 200 and answered["Set-Cookie"] == "a=1; Path=/"
    status, answered, _ = await post(http, f"{mock.url}{path}", body, headers)
    assert status == 200 and "Set-Cookie" not in answered


async def test_openai_tool_call(oai):
    completion = await oai.chat.completions.create(
        **CHAT, tools=[WEATHER_TOOL], extra_headers={"x-mock-tool-call": "true"})
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "mock", "days": 1}

    stream = await oai.chat.completions.create(
        **CHAT, tools=[WEATHER_TOOL], stream=True, extra_body={"mock": {"tool_call": True}})
    chunks = [chunk async for chunk in stream]
    arguments = "".join(chunk.choices[0].delta.tool_calls[0].function.arguments or ""
                        for chunk in chunks if chunk.choices and chunk.choices[0].delta.tool_calls)
    assert json.loads(arguments) == {"city": "mock", "days": 1}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # Without tools in the request the control is ignored.
    plain = await oai.chat.completions.create(**CHAT, extra_headers={"x-mock-tool-call": "1"})
    assert plain.choices[0].message.content == DEFAULT_CONTENT


async def test_completions_embeddings_and_models(oai):
    completion = await oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi",
                                              max_tokens=3)
    assert completion.object == "text_completion"
    assert completion.choices[0].text == DEFAULT_CONTENT[:12]
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 3

    embeddings = await oai.embeddings.create(model="text-embedding-3-small",
                                             input=["one", "two three"], dimensions=5)
    assert [len(item.embedding) for item in embeddings.data] == [5, 5]
    assert embeddings.usage.prompt_tokens == 1 + 3
    again = await oai.embeddings.create(model="text-embedding-3-small", input="one",
                                        dimensions=5, encoding_format="float")
    assert again.data[0].embedding == pytest.approx(embeddings.data[0].embedding, rel=1e-5)

    models = await oai.models.list()
    assert [model.id for model in models.data] == list(MODELS)


async def test_embeddings_base64(mock, http):
    _, _, body = await post(http, f"{mock.url}/v1/embeddings",
                            {"model": "e", "input": "x", "encoding_format": "base64"})
    vector = base64.b64decode(json.loads(body)["data"][0]["embedding"])
    assert len(vector) == 4 * DEFAULT_EMBEDDING_DIMENSIONS  # little-endian float32s
    values = struct.unpack(f"<{DEFAULT_EMBEDDING_DIMENSIONS}f", vector)
    assert math.fsum(value * value for value in values) == pytest.approx(1.0, rel=1e-5)


async def test_anthropic_message_through_the_sdk(mock, claude):
    message = await claude.messages.create(
        **MESSAGES, system="Be brief.",
        extra_headers={"x-mock-cached-tokens": "7", "x-mock-cache-creation-tokens": "2"})
    assert message.type == "message"
    assert message.model == "claude-haiku-4-5"
    assert message.content[0].text == DEFAULT_CONTENT
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == math.ceil(len("Be brief.Hello there, mock!") / 4)
    assert message.usage.output_tokens == math.ceil(len(DEFAULT_CONTENT) / 4)
    assert message.usage.cache_read_input_tokens == 7
    assert message.usage.cache_creation_input_tokens == 2
    assert mock.requests[-1].headers["anthropic-version"]


async def test_anthropic_stream_through_the_sdk(claude):
    stream = await claude.messages.create(**MESSAGES, stream=True,
                                          extra_body={"mock": {"chunks": 2}})
    events = [event async for event in stream]
    assert [event.type for event in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop"]
    assert events[0].message.usage.input_tokens == 5
    assert "".join(event.delta.text for event in events
                   if event.type == "content_block_delta") == DEFAULT_CONTENT
    assert events[-2].delta.stop_reason == "end_turn"
    assert events[-2].usage.output_tokens == math.ceil(len(DEFAULT_CONTENT) / 4)


async def test_anthropic_raw_stream_has_event_lines_and_ping(mock, http):
    _, _, body = await post(http, f"{mock.url}/v1/messages", {**MESSAGES, "stream": True},
                            ANTHROPIC_HEADERS)
    events = sse(body.decode())
    assert events[2] == ("ping", '{"type":"ping"}')
    assert all(name == json.loads(data)["type"] for name, data in events)


async def test_anthropic_tool_use(claude):
    tool = {"name": "get_weather", "description": "Weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
    message = await claude.messages.create(**MESSAGES, tools=[tool],
                                           extra_headers={"x-mock-tool-call": "get_weather"})
    assert message.stop_reason == "tool_use"
    assert message.content[0].type == "tool_use"
    assert message.content[0].input == {"city": "mock"}

    async with claude.messages.stream(**MESSAGES, tools=[tool],
                                      extra_headers={"x-mock-tool-call": "1"}) as stream:
        final = await stream.get_final_message()
    assert final.content[0].input == {"city": "mock"}
    assert final.stop_reason == "tool_use"


async def test_anthropic_requires_key_and_version(mock, http):
    status, _, body = await post(http, f"{mock.url}/v1/messages", MESSAGES,
                                 {"anthropic-version": "2023-06-01"})
    assert status == 401
    assert json.loads(body) == {"type": "error", "error": {
        "type": "authentication_error", "message": "x-api-key header is required"}}
    status, _, body = await post(http, f"{mock.url}/v1/messages", MESSAGES,
                                 {"x-api-key": "mock-ok"})
    assert status == 400
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    status, _, body = await post(http, f"{mock.url}/v1/messages",
                                 {**MESSAGES, "max_tokens": None}, ANTHROPIC_HEADERS)
    assert status == 400


async def test_azure_through_the_sdk_and_auth(mock, http):
    client = openai.AsyncAzureOpenAI(azure_endpoint=mock.url, api_key="mock-ok",
                                     api_version="2024-10-21", max_retries=0)
    try:
        completion = await client.chat.completions.create(
            model="my-deployment", messages=CHAT["messages"])
    finally:
        await client.close()
    assert completion.choices[0].message.content == DEFAULT_CONTENT
    recorded = mock.requests[-1]
    assert recorded.path == "/openai/deployments/my-deployment/chat/completions"
    assert recorded.query == {"api-version": "2024-10-21"}
    assert recorded.headers["api-key"] == "mock-ok"

    url = f"{mock.url}/openai/deployments/my-deployment/chat/completions"
    status, _, body = await post(http, f"{url}?api-version=2024-10-21", CHAT, {})
    assert status == 401
    assert json.loads(body)["error"]["code"] == "401"
    status, _, _ = await post(http, url, CHAT, {"api-key": "mock-ok"})
    assert status == 401
    status, _, body = await post(http, f"{url}?api-version=2024-10-21", {"messages": [
        {"role": "user", "content": "x"}]}, {"api-key": "mock-ok"})
    assert status == 200
    assert json.loads(body)["model"] == "my-deployment"


# --- failure injection -----------------------------------------------------------------

@pytest.mark.parametrize(("api", "path", "headers", "body"), [
    ("openai", "/v1/chat/completions", OPENAI_HEADERS, CHAT),
    ("azure", "/openai/deployments/d/chat/completions?api-version=1", {"api-key": "k"}, CHAT),
    ("anthropic", "/v1/messages", ANTHROPIC_HEADERS, MESSAGES),
])
async def test_status_control_is_provider_shaped(mock, http, api, path, headers, body):
    status, response_headers, payload = await post(
        http, f"{mock.url}{path}", body,
        {**headers, "x-mock-status": "429", "x-mock-retry-after": "7"})
    assert status == 429
    assert response_headers["Retry-After"] == "7"
    error = json.loads(payload)
    if api == "anthropic":
        assert error["type"] == "error"
        assert error["error"]["type"] == "rate_limit_error"
    elif api == "azure":
        assert error["error"]["code"] == "429"
    else:
        assert error["error"]["type"] == "rate_limit_error"
        assert error["error"]["code"] == "rate_limit_exceeded"


async def test_status_from_body_and_from_the_api_key(mock, oai, claude):
    with pytest.raises(openai.InternalServerError):
        await oai.chat.completions.create(**CHAT, extra_body={"mock": {"status": 503}})
    failing = openai.AsyncOpenAI(base_url=f"{mock.url}/v1", api_key="mock-status-401",
                                 max_retries=0)
    try:
        with pytest.raises(openai.AuthenticationError):
            await failing.chat.completions.create(**CHAT)
    finally:
        await failing.close()
    overloaded = anthropic.AsyncAnthropic(base_url=mock.url, api_key="mock-status-529",
                                          max_retries=0)
    try:
        with pytest.raises(anthropic.APIStatusError) as raised:
            await overloaded.messages.create(**MESSAGES)
    finally:
        await overloaded.close()
    assert raised.value.status_code == 529
    assert raised.value.body["error"]["type"] == "overloaded_error"
    # Header beats body beats key.
    assert parse_controls([(b"X-Mock-Status", b"502")], {"status": 503},
                          "mock-status-500").status == 502
    assert parse_controls([], {"status": 503}, "mock-status-500").status == 503
    assert parse_controls([], None, "mock-status-500-retry_after-3-drop").retry_after == "3"
    assert parse_controls([], None, "mock-ok").status is None


async def test_unknown_control_is_a_400(mock, http):
    status, _, body = await post(http, f"{mock.url}/v1/chat/completions", CHAT,
                                 {**OPENAI_HEADERS, "x-mock-dealy-ms": "5"})
    assert status == 400
    assert "dealy" in json.loads(body)["error"]["message"]


async def test_delays(mock, http):
    started = time.monotonic()
    status, _, _ = await post(http, f"{mock.url}/v1/chat/completions",
                              {**CHAT, "mock": {"delay_ms": 120}})
    assert status == 200
    assert time.monotonic() - started >= 0.12

    started = time.monotonic()
    async with http.post(f"{mock.url}/v1/chat/completions", json=CHAT,
                         headers={**OPENAI_HEADERS, "x-mock-first-byte-delay-ms": "150"}) as resp:
        headers_after = time.monotonic() - started
        body = await resp.json()
        body_after = time.monotonic() - started
    assert headers_after < 0.12 <= 0.15 <= body_after
    assert body["choices"][0]["message"]["content"] == DEFAULT_CONTENT


async def test_chunk_delay(mock, http):
    arrivals = []
    started = time.monotonic()
    async with http.post(f"{mock.url}/v1/chat/completions",
                         json={**CHAT, "stream": True, "mock": {"chunk_delay_ms": 40,
                                                                "chunks": 2}},
                         headers=OPENAI_HEADERS) as resp:
        async for _ in resp.content:  # lines
            arrivals.append(time.monotonic() - started)
    # role, 2 content chunks, finish, [DONE]: four gaps of 40 ms.
    assert arrivals[-1] >= 0.16


async def test_drop_closes_without_a_response(mock, http, oai):
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(http, f"{mock.url}/v1/chat/completions", {**CHAT, "mock": {"drop": True}})
    with pytest.raises(openai.APIConnectionError):
        await oai.chat.completions.create(**CHAT, extra_headers={"x-mock-drop": "1"})
    assert mock.disconnects == 0  # our own hang-ups are not client disconnects


async def read_events(http: aiohttp.ClientSession, url: str, body: Any,
                      received: list[Any]) -> None:
    """Append each SSE data payload to ``received`` as it arrives."""
    async with http.post(url, json=body, headers=OPENAI_HEADERS) as resp:
        assert resp.status == 200
        async for line in resp.content:
            if line.startswith(b"data: "):
                received.append(json.loads(line[6:]))


async def test_drop_after_chunks(mock, http):
    received: list[Any] = []
    with pytest.raises(aiohttp.ClientPayloadError):
        await read_events(http, f"{mock.url}/v1/chat/completions",
                          {**CHAT, "stream": True, "mock": {"drop_after_chunks": 2}}, received)
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in received)
    assert len(received) == 3  # the role chunk and two content chunks
    assert DEFAULT_CONTENT.startswith(text)
    assert text != DEFAULT_CONTENT

    with pytest.raises(aiohttp.ClientPayloadError):
        await post(http, f"{mock.url}/v1/chat/completions",
                   {**CHAT, "mock": {"drop_after_chunks": 0}})


async def test_malformed(mock, http, oai):
    status, _, body = await post(http, f"{mock.url}/v1/chat/completions",
                                 {**CHAT, "mock": {"malformed": True}})
    assert status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    _, _, body = await post(http, f"{mock.url}/v1/messages",
                            {**MESSAGES, "stream": True, "mock": {"malformed": True}},
                            ANTHROPIC_HEADERS)
    broken = 0
    for _, data in sse(body.decode()):
        try:
            json.loads(data)
        except json.JSONDecodeError:
            broken += 1
    assert broken == 1


async def test_fail_times(mock, http):
    body = {**CHAT, "mock": {"fail_times": 2, "fail_key": "retry-a", "status": 503}}
    statuses = [(await post(http, f"{mock.url}/v1/chat/completions", body))[0]
                for _ in range(3)]
    assert statuses == [503, 503, 200]
    # Another key counts on its own; without a status the failure is a 500.
    other = {**CHAT, "mock": {"fail_times": 1, "fail_key": "retry-b"}}
    assert (await post(http, f"{mock.url}/v1/chat/completions", other))[0] == 500
    assert (await post(http, f"{mock.url}/v1/chat/completions", other))[0] == 200
    # Counted per API key by default; fail_times also limits drops.
    keyed = {"authorization": "Bearer mock-fail_times-1-drop"}
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(http, f"{mock.url}/v1/chat/completions", CHAT, keyed)
    assert (await post(http, f"{mock.url}/v1/chat/completions", CHAT, keyed))[0] == 200
    mock.reset()
    assert (await post(http, f"{mock.url}/v1/chat/completions", other))[0] == 500
    assert len(mock.requests) == 1


async def test_client_disconnect_mid_stream_is_counted(mock, http):
    async with http.post(f"{mock.url}/v1/chat/completions",
                         json={**CHAT, "stream": True, "mock": {"chunk_delay_ms": 200}},
                         headers=OPENAI_HEADERS) as resp:
        await resp.content.readline()
        resp.close()  # drop the connection mid-stream
    for _ in range(100):
        if mock.disconnects:
            break
        await asyncio.sleep(0.01)
    assert mock.disconnects == 1
    assert mock.requests[-1].disconnected


async def test_bad_requests_are_400(mock, http):
    async with http.post(f"{mock.url}/v1/chat/completions", data=b"{not json",
                         headers=OPENAI_HEADERS) as resp:
        assert resp.status == 400
    status, _, _ = await post(http, f"{mock.url}/v1/chat/completions", {"model": "m"})
    assert status == 400


def test_thread_variant_for_sync_tests():
    mock = MockUpstream.start_in_thread(content="threaded")
    try:
        request = urllib.request.Request(
            f"{mock.url}/v1/chat/completions", data=json.dumps(CHAT).encode(),
            headers={"content-type": "application/json", "authorization": "Bearer mock-ok"})
        with urllib.request.urlopen(request, timeout=5) as response:
            body = json.loads(response.read())
        assert body["choices"][0]["message"]["content"] == "threaded"
        assert mock.requests[0].json == CHAT
        failing = urllib.request.Request(
            f"{mock.url}/v1/chat/completions", data=json.dumps(CHAT).encode(),
            headers={"authorization": "Bearer mock-status-418"})
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(failing, timeout=5)
        raised.value.close()
        assert raised.value.code == 418
    finally:
        mock.stop()
