"""OpenAI Chat Completions <-> Anthropic Messages translation, checked against the SDK types."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.message_create_params import (
    MessageCreateParamsBase,
    MessageCreateParamsNonStreaming,
    MessageCreateParamsStreaming,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat.completion_create_params import (
    CompletionCreateParamsNonStreaming,
    CompletionCreateParamsStreaming,
)
from pydantic import BaseModel, TypeAdapter

from gateway.proxy.translation import (
    CHAT_FIELDS_DROPPED,
    CHAT_FIELDS_MAPPED,
    CHAT_FIELDS_REJECTED,
    MESSAGES_FIELDS_DROPPED,
    MESSAGES_FIELDS_MAPPED,
    ChatStreamToMessages,
    MessagesStreamToChat,
    TranslationError,
    chat_to_messages_request,
    chat_to_messages_response,
    messages_to_chat_request,
    messages_to_chat_response,
    sse_event,
)

PNG = "iVBORw0KGgo="
PDF = "JVBERi0xLjQ="
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
# The 2.x SDK no longer types the sampling parameters, which older models still accept.
SAMPLING = {"temperature", "top_p"}

_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _materialize(value: Any) -> Any:
    """Walk pydantic's lazily validated iterables so every nested item is validated."""
    if isinstance(value, dict):
        return {key: _materialize(item) for key, item in value.items()}
    if isinstance(value, list | tuple | Iterator):
        return [_materialize(item) for item in value]
    return value


def assert_typed_dict(typed_dict: Any, body: dict, *, ignore: frozenset[str] | set = frozenset()):
    """Validate against an SDK TypedDict and prove no key falls outside the SDK's types.

    TypedDict validation drops unknown keys, so a lossless round trip means every key we
    produce is a field the SDK knows about.
    """
    adapter = _ADAPTERS.setdefault(typed_dict, TypeAdapter(typed_dict))
    body = {key: value for key, value in body.items() if key not in ignore}
    assert _materialize(adapter.validate_python(body)) == body


def assert_no_extra(model: Any) -> None:
    """A validated SDK model whose every nested object used only declared fields."""
    if isinstance(model, BaseModel):
        assert not model.model_extra, f"{type(model).__name__} got extra {model.model_extra}"
        for name in type(model).model_fields:
            assert_no_extra(getattr(model, name))
    elif isinstance(model, list | tuple):
        for item in model:
            assert_no_extra(item)
    elif isinstance(model, dict):
        for item in model.values():
            assert_no_extra(item)


def anthropic_request(body: dict) -> None:
    typed = MessageCreateParamsStreaming if body.get("stream") else MessageCreateParamsNonStreaming
    assert_typed_dict(typed, body, ignore=SAMPLING)


def chat_request(body: dict) -> None:
    typed = CompletionCreateParamsStreaming if body.get("stream") else (
        CompletionCreateParamsNonStreaming)
    assert_typed_dict(typed, body)


def to_messages(messages: list[dict], **fields: Any) -> dict:
    body = chat_to_messages_request({"model": "gpt-x", "messages": messages, **fields},
                                    model="claude-sonnet")
    anthropic_request(body)
    return body


def to_chat(messages: list[dict], **fields: Any) -> dict:
    body = messages_to_chat_request({"model": "claude", "max_tokens": 100, "messages": messages,
                                     **fields}, model="gpt-4o")
    chat_request(body)
    return body


def call(call_id: str, name: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": arguments}}


# ------------------------------------------------------------------------------ sse_event


def test_sse_event_with_and_without_an_event_type():
    assert sse_event("message_stop", {"type": "message_stop"}) == (
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert sse_event(None, {"a": "é"}) == 'data: {"a":"é"}\n\n'.encode()


def test_sse_event_refuses_a_line_break_in_the_event_type():
    with pytest.raises(ValueError, match="line breaks"):
        sse_event("a\nb", {})


# ----------------------------------------------------- chat request -> Anthropic request


def test_field_tables_cover_every_sdk_request_field():
    chat_fields = set(typing.get_type_hints(CompletionCreateParamsStreaming))
    assert chat_fields == CHAT_FIELDS_MAPPED | CHAT_FIELDS_DROPPED | CHAT_FIELDS_REJECTED
    assert not CHAT_FIELDS_MAPPED & CHAT_FIELDS_DROPPED
    anthropic_fields = set(typing.get_type_hints(MessageCreateParamsStreaming)) | SAMPLING
    assert anthropic_fields | {"top_k"} == MESSAGES_FIELDS_MAPPED | MESSAGES_FIELDS_DROPPED
    assert "stream" not in typing.get_type_hints(MessageCreateParamsBase)


def test_a_minimal_request_gets_the_default_max_tokens_and_the_target_model():
    body = to_messages([{"role": "user", "content": "Hi"}])
    assert body == {"model": "claude-sonnet", "max_tokens": 4096,
                    "messages": [{"role": "user", "content": "Hi"}]}
    custom = chat_to_messages_request({"messages": [{"role": "user", "content": "Hi"}]},
                                      model="m", default_max_tokens=77)
    assert custom["max_tokens"] == 77


@pytest.mark.parametrize(("fields", "expected"), [
    ({"max_tokens": 50}, 50),
    ({"max_completion_tokens": 60}, 60),
    ({"max_tokens": 50, "max_completion_tokens": 60}, 60),
    ({"max_tokens": None}, 4096),
])
def test_max_tokens_prefers_max_completion_tokens(fields, expected):
    assert to_messages([{"role": "user", "content": "x"}], **fields)["max_tokens"] == expected


def test_system_and_developer_messages_are_hoisted_and_concatenated():
    body = to_messages([
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Hello"},
        {"role": "system", "content": "Late rule."},
        {"role": "assistant", "content": "Bonjour"},
        {"role": "user", "content": "Again"},
    ])
    assert body["system"] == "Be brief.\n\nAnswer in French.\n\nLate rule."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]


def test_cache_breakpoints_keep_the_system_prompt_as_blocks():
    body = to_messages([
        {"role": "system", "content": [
            {"type": "text", "text": "Long manual", "cache_control": {"type": "ephemeral",
                                                                      "ttl": "1h"}},
            {"type": "text", "text": "Rules", "prompt_cache_breakpoint": {"mode": "explicit"}},
        ]},
        {"role": "user", "content": "Q"},
    ])
    assert body["system"] == [
        {"type": "text", "text": "Long manual", "cache_control": {"type": "ephemeral",
                                                                  "ttl": "1h"}},
        {"type": "text", "text": "Rules", "cache_control": {"type": "ephemeral"}},
    ]


def test_multi_part_user_content_with_images_and_a_pdf():
    body = to_messages([{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": f"data:image/jpg;base64,{PNG}",
                                            "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp"}},
        {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}",
                                  "filename": "report.pdf"}},
        {"type": "text", "text": ""},
    ]}])
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.webp"}},
        {"type": "document", "title": "report.pdf",
         "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}},
    ]


def test_tool_calls_and_tool_results_are_translated_and_merged():
    body = to_messages([
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            call("call_1", "weather", '{"city": "Paris"}'),
            call("call_2", "weather", '{"city": "Rome"}'),
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_2",
         "content": [{"type": "text", "text": "21C"}]},
        {"role": "user", "content": "Thanks, which is warmer?"},
    ])
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "call_2",
             "content": [{"type": "text", "text": "21C"}]},
            {"type": "text", "text": "Thanks, which is warmer?"},
        ]},
    ]


def test_tool_results_lead_the_user_turn_and_empty_arguments_mean_no_input():
    body = to_messages([
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [call("c1", "now", "")]},
        {"role": "user", "content": "(context)"},
        {"role": "tool", "tool_call_id": "c1", "content": ""},
    ])
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "c1", "name": "now", "input": {}}]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c1"}, {"type": "text", "text": "(context)"}]


def test_consecutive_same_role_messages_are_merged_and_empty_turns_dropped():
    body = to_messages([
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "three"},
        {"role": "assistant", "content": "a"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "b"}]},
        {"role": "user", "content": "four"},
    ])
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"},
                                     {"type": "text", "text": "two"},
                                     {"type": "text", "text": "three"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a"},
                                          {"type": "text", "text": "b"}]},
        {"role": "user", "content": "four"},
    ]


def test_a_final_assistant_prefill_loses_trailing_whitespace():
    body = to_messages([{"role": "user", "content": "Count"},
                        {"role": "assistant", "content": "1, 2, "}])
    assert body["messages"][-1] == {"role": "assistant", "content": "1, 2,"}
    body = to_messages([{"role": "user", "content": "Count"},
                        {"role": "assistant", "content": "  "}])
    assert body["messages"] == [{"role": "user", "content": "Count"}]


@pytest.mark.parametrize(("stop", "expected"), [
    ("END", ["END"]),
    (["a", "b"], ["a", "b"]),
    ([], None),
    (None, None),
])
def test_stop_becomes_stop_sequences(stop, expected):
    body = to_messages([{"role": "user", "content": "x"}], stop=stop)
    assert body.get("stop_sequences") == expected


@pytest.mark.parametrize(("fields", "expected"), [
    ({"temperature": 0.3}, {"temperature": 0.3}),
    ({"temperature": 1.7}, {"temperature": 1.0}),
    ({"top_p": 0.9}, {"top_p": 0.9}),
    ({"temperature": 0, "top_p": 0.9}, {"temperature": 0.0}),
])
def test_sampling_parameters(fields, expected):
    body = to_messages([{"role": "user", "content": "x"}], **fields)
    assert {key: body[key] for key in SAMPLING if key in body} == expected


def test_tools_are_translated_with_their_schema():
    body = to_messages([{"role": "user", "content": "x"}], tools=[
        {"type": "function", "function": {"name": "weather", "description": "Get weather",
                                          "parameters": SCHEMA, "strict": True}},
        {"type": "function", "function": {"name": "now"}},
        {"type": "function", "function": {"name": "loose", "parameters": {"properties": {}}}},
    ])
    assert body["tools"] == [
        {"name": "weather", "description": "Get weather", "input_schema": SCHEMA},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
        {"name": "loose", "input_schema": {"properties": {}, "type": "object"}},
    ]
    assert "tool_choice" not in body


WEATHER_TOOL = {"type": "function", "function": {"name": "weather", "parameters": SCHEMA}}


@pytest.mark.parametrize(("fields", "expected"), [
    ({"tool_choice": "auto"}, {"type": "auto"}),
    ({"tool_choice": "none"}, {"type": "none"}),
    ({"tool_choice": "required"}, {"type": "any"}),
    ({"tool_choice": {"type": "function", "function": {"name": "weather"}}},
     {"type": "tool", "name": "weather"}),
    ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
    ({"tool_choice": "required", "parallel_tool_calls": False},
     {"type": "any", "disable_parallel_tool_use": True}),
    ({"tool_choice": "none", "parallel_tool_calls": False}, {"type": "none"}),
    ({"parallel_tool_calls": True}, None),
])
def test_tool_choice_table(fields, expected):
    body = to_messages([{"role": "user", "content": "x"}], tools=[WEATHER_TOOL], **fields)
    assert body.get("tool_choice") == expected


def test_tool_choice_without_tools_is_dropped():
    body = to_messages([{"role": "user", "content": "x"}], tool_choice="required",
                       parallel_tool_calls=False, tools=[])
    assert "tool_choice" not in body
    assert "tools" not in body


def test_stream_user_and_dropped_openai_only_fields():
    dropped = {"frequency_penalty": 0.5, "presence_penalty": 0.1, "logit_bias": {"1": 2},
               "logprobs": False, "top_logprobs": 0, "seed": 7, "n": 1,
               "response_format": {"type": "text"}, "service_tier": "auto",
               "store": True, "metadata": {"a": "b"}, "stream_options": {"include_usage": True},
               "reasoning_effort": "low", "prompt_cache_key": "k", "verbosity": "low"}
    body = to_messages([{"role": "user", "content": "x"}], stream=True, user="u-42", **dropped)
    assert body == {"model": "claude-sonnet", "max_tokens": 4096, "stream": True,
                    "messages": [{"role": "user", "content": "x"}],
                    "metadata": {"user_id": "u-42"}}
    assert set(dropped) <= CHAT_FIELDS_DROPPED | {"n"}
    safety = to_messages([{"role": "user", "content": "x"}], safety_identifier="hash-1")
    assert safety["metadata"] == {"user_id": "hash-1"}


@pytest.mark.parametrize(("body", "message"), [
    ({"messages": []}, "messages: must not be empty"),
    ({"messages": "hi"}, "messages: must be an array"),
    ({"messages": [{"role": "system", "content": "only"}]},
     "messages: no user or assistant content"),
    ({"messages": [{"role": "user", "content": "x"},
                   {"role": "assistant", "tool_calls": [call("c", "f", "{nope")]}]},
     r"messages\[1\]\.tool_calls\[0\]\.function\.arguments: not valid JSON"),
    ({"messages": [{"role": "user", "content": "x"},
                   {"role": "assistant", "tool_calls": [call("c", "f", '{"a": NaN}')]}]},
     r"messages\[1\]\.tool_calls\[0\]\.function\.arguments: not valid JSON"),
    ({"messages": [{"role": "user", "content": "x"},
                   {"role": "user", "content": "y"},
                   {"role": "assistant", "tool_calls": [call("c", "f", "[1, 2]")]}]},
     r"messages\[2\]\.tool_calls\[0\]\.function\.arguments: must encode a JSON object"),
    ({"messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "custom", "custom": {"name": "f", "input": "x"}}]}]},
     r"messages\[0\]\.tool_calls\[0\]\.type"),
    ({"messages": [{"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]},
     r"messages\[0\]\.tool_calls\[0\]\.id: must be a non-empty string"),
    ({"messages": [{"role": "tool", "content": "r"}]},
     r"messages\[0\]\.tool_call_id"),
    ({"messages": [{"role": "function", "name": "f", "content": "r"}]},
     r"messages\[0\]\.role: legacy function"),
    ({"messages": [{"role": "robot", "content": "r"}]}, r"messages\[0\]\.role: unknown role"),
    ({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}]}]},
     r"messages\[0\]\.content\[0\]\.type: 'input_audio'"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AA"}}]}]},
     r"messages\[0\]\.content\[0\]\.image_url\.url: media type 'image/bmp'"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}]}]},
     "only base64 data URLs"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}]}]},
     "must be an http"),
    ({"messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_id": "file-123"}}]}]},
     r"messages\[0\]\.content\[0\]\.file\.file_id"),
    ({"messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_data": "data:text/csv;base64,AA"}}]}]},
     "only application/pdf"),
    ({"messages": [{"role": "system", "content": [{"type": "image_url"}]}]},
     r"messages\[0\]\.content\[0\]\.type: 'image_url' is not supported here"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n: only one choice"),
    ({"messages": [{"role": "user", "content": "x"}],
      "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {}}}},
     "response_format: JSON output"),
    ({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}},
     "response_format: JSON output"),
    ({"messages": [{"role": "user", "content": "x"}], "response_format": "json"},
     "response_format: JSON output"),
    ({"messages": [{"role": "user", "content": "x"}], "logprobs": True}, "logprobs: Anthropic"),
    ({"messages": [{"role": "user", "content": "x"}], "functions": [{"name": "f"}]},
     "functions: legacy"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
     "max_tokens: must be a positive integer"),
    ({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": "9"},
     "max_completion_tokens: must be a positive integer"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
     "temperature: must be a number"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": [1]}, "stop: must be"),
    ({"messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "custom", "custom": {"name": "grammar"}}]},
     r"tools\[0\]\.type: only function tools"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL],
      "tool_choice": {"type": "allowed_tools",
                      "allowed_tools": {"mode": "auto", "tools": []}}},
     "tool_choice: only auto"),
])
def test_untranslatable_chat_requests_name_the_field(body, message):
    with pytest.raises(TranslationError, match=message):
        chat_to_messages_request(body, model="claude")


def test_translation_error_is_a_value_error():
    assert issubclass(TranslationError, ValueError)


# ----------------------------------------------------- Anthropic response -> chat.completion


def anthropic_message(**fields: Any) -> dict:
    message = {"id": "msg_01ABC", "type": "message", "role": "assistant",
               "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "Hi!"}],
               "stop_reason": "end_turn", "stop_sequence": None,
               "usage": {"input_tokens": 10, "output_tokens": 5}}
    message.update(fields)
    Message.model_validate(message)
    return message


def to_chat_response(message: dict) -> dict:
    resp = messages_to_chat_response(message, model="my-alias")
    assert_no_extra(ChatCompletion.model_validate(resp))
    return resp


def test_a_text_reply_becomes_a_chat_completion():
    resp = to_chat_response(anthropic_message())
    assert resp["id"] == "chatcmpl-01ABC"
    assert resp["object"] == "chat.completion"
    assert isinstance(resp["created"], int)
    assert resp["model"] == "my-alias"
    assert resp["choices"] == [{"index": 0, "logprobs": None, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "Hi!",
                                            "refusal": None}}]


def test_tool_use_blocks_become_tool_calls_and_thinking_is_ignored():
    resp = to_chat_response(anthropic_message(stop_reason="tool_use", content=[
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "text", "text": "Checking "},
        {"type": "text", "text": "now."},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
    ]))
    message = resp["choices"][0]["message"]
    assert message["content"] == "Checking now."
    assert message["tool_calls"] == [
        {"id": "toolu_1", "type": "function",
         "function": {"name": "weather", "arguments": '{"city":"Paris"}'}},
        {"id": "toolu_2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
    ]
    assert resp["choices"][0]["finish_reason"] == "tool_calls"


def test_big_integers_in_tool_arguments_survive_both_directions():
    arguments = '{"id": 123456789012345678901234567890}'
    body = to_messages([{"role": "user", "content": "x"},
                        {"role": "assistant", "tool_calls": [call("c", "f", arguments)]}])
    assert body["messages"][1]["content"][0]["input"] == {"id": 123456789012345678901234567890}
    resp = to_chat_response(anthropic_message(content=[body["messages"][1]["content"][0]]))
    assert resp["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == (
        '{"id":123456789012345678901234567890}')
    assert sse_event(None, {"n": 2**70}) == b'data: {"n":1180591620717411303424}\n\n'


def test_tool_calls_without_text_have_null_content():
    resp = to_chat_response(anthropic_message(stop_reason="tool_use", content=[
        {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}]))
    assert resp["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(("stop_reason", "finish_reason"), [
    ("end_turn", "stop"),
    ("stop_sequence", "stop"),
    ("pause_turn", "stop"),
    ("max_tokens", "length"),
    ("model_context_window_exceeded", "length"),
    ("tool_use", "tool_calls"),
    ("refusal", "content_filter"),
    (None, "stop"),
])
def test_finish_reason_table(stop_reason, finish_reason):
    resp = to_chat_response(anthropic_message(stop_reason=stop_reason))
    assert resp["choices"][0]["finish_reason"] == finish_reason


def test_usage_counts_cache_reads_and_writes_as_prompt_tokens():
    resp = to_chat_response(anthropic_message(usage={
        "input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 20, "output_tokens_details": {"thinking_tokens": 3}}))
    assert resp["usage"] == {
        "prompt_tokens": 130, "completion_tokens": 7, "total_tokens": 137,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }


def test_usage_with_null_cache_fields():
    resp = to_chat_response(anthropic_message(usage={
        "input_tokens": 3, "output_tokens": 1, "cache_read_input_tokens": None,
        "cache_creation_input_tokens": None}))
    assert resp["usage"]["prompt_tokens"] == 3
    assert resp["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


# ------------------------------------------------------- Anthropic stream -> chat chunks


def text_stream() -> list[tuple[str, dict]]:
    return [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_01XYZ", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5", "content": [], "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 30,
                      "cache_creation_input_tokens": 5}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hello"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": ", world"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": 9}}),
        ("message_stop", {"type": "message_stop"}),
    ]


def tool_stream() -> list[tuple[str, dict]]:
    def delta(index: int, delta: dict) -> tuple[str, dict]:
        return ("content_block_delta", {"type": "content_block_delta", "index": index,
                                        "delta": delta})

    def start(index: int, block: dict) -> tuple[str, dict]:
        return ("content_block_start", {"type": "content_block_start", "index": index,
                                        "content_block": block})

    def stop(index: int) -> tuple[str, dict]:
        return ("content_block_stop", {"type": "content_block_stop", "index": index})

    return [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_02", "type": "message", "role": "assistant", "model": "claude",
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 50, "output_tokens": 1}}}),
        start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        delta(0, {"type": "thinking_delta", "thinking": "Need weather."}),
        delta(0, {"type": "signature_delta", "signature": "sig"}),
        stop(0),
        start(1, {"type": "text", "text": ""}),
        delta(1, {"type": "text_delta", "text": "Checking."}),
        stop(1),
        start(2, {"type": "tool_use", "id": "toolu_A", "name": "weather", "input": {}}),
        delta(2, {"type": "input_json_delta", "partial_json": ""}),
        delta(2, {"type": "input_json_delta", "partial_json": '{"city": "Pa'}),
        delta(2, {"type": "input_json_delta", "partial_json": 'ris"}'}),
        stop(2),
        start(3, {"type": "tool_use", "id": "toolu_B", "name": "now", "input": {}}),
        stop(3),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                           "usage": {"output_tokens": 40, "input_tokens": 50}}),
        ("message_stop", {"type": "message_stop"}),
    ]


def run_messages_stream(events: list[tuple[str, dict]]) -> tuple[MessagesStreamToChat, list]:
    translator = MessagesStreamToChat(model="my-alias")
    chunks = []
    for event_type, data in events:
        if event_type != "ping":  # keep-alives are outside RawMessageStreamEvent
            assert_no_extra(EVENT_ADAPTER.validate_python(data))  # the fixture is realistic
        chunks.extend(translator.feed(event_type, data))
    for chunk in chunks:
        assert_no_extra(ChatCompletionChunk.model_validate(chunk))
    return translator, chunks


def accumulate_chunks(chunks: list[dict]) -> ChatCompletion:
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return state.get_final_completion()


def test_a_text_stream_becomes_chat_chunks():
    _, chunks = run_messages_stream(text_stream())
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""}, {"content": "Hello"}, {"content": ", world"}, {}]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert {c["id"] for c in chunks} == {"chatcmpl-01XYZ"}
    assert {c["model"] for c in chunks} == {"my-alias"}
    final = accumulate_chunks(chunks)
    assert final.choices[0].message.content == "Hello, world"
    assert final.choices[0].finish_reason == "stop"


def test_the_usage_chunk_closes_a_stream_for_include_usage_clients():
    translator, chunks = run_messages_stream(text_stream())
    usage_chunk = translator.usage_chunk()
    assert_no_extra(ChatCompletionChunk.model_validate(usage_chunk))
    assert usage_chunk["choices"] == []
    assert usage_chunk["id"] == chunks[0]["id"]
    assert usage_chunk["usage"] == {
        "prompt_tokens": 47, "completion_tokens": 9, "total_tokens": 56,
        "prompt_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 5}}
    assert accumulate_chunks([*chunks, usage_chunk]).usage.total_tokens == 56


def test_a_tool_use_stream_becomes_tool_call_deltas():
    translator, chunks = run_messages_stream(tool_stream())
    tool_deltas = [c["choices"][0]["delta"]["tool_calls"] for c in chunks
                   if "tool_calls" in c["choices"][0]["delta"]]
    assert tool_deltas == [
        [{"index": 0, "id": "toolu_A", "type": "function",
          "function": {"name": "weather", "arguments": ""}}],
        [{"index": 0, "function": {"arguments": '{"city": "Pa'}}],
        [{"index": 0, "function": {"arguments": 'ris"}'}}],
        [{"index": 1, "id": "toolu_B", "type": "function",
          "function": {"name": "now", "arguments": ""}}],
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert translator.usage_chunk()["usage"]["completion_tokens"] == 40
    final = accumulate_chunks(chunks)
    assert final.choices[0].message.content == "Checking."
    calls = final.choices[0].message.tool_calls
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("toolu_A", "weather", '{"city": "Paris"}'), ("toolu_B", "now", "")]


def test_a_stream_without_message_delta_still_finishes_once():
    events = [e for e in text_stream() if e[0] != "message_delta"]
    translator, chunks = run_messages_stream(events)
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "stop"
    assert translator.feed("message_stop", {"type": "message_stop"}) == []


def test_max_tokens_in_a_stream_finishes_with_length():
    events = text_stream()
    events[-2][1]["delta"]["stop_reason"] = "max_tokens"
    _, chunks = run_messages_stream(events)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_an_error_event_becomes_an_openai_error_payload():
    translator = MessagesStreamToChat(model="m")
    translator.feed(*text_stream()[0])
    out = translator.feed("error", {"type": "error", "error": {
        "type": "overloaded_error", "message": "Overloaded"}})
    assert out == [{"error": {"message": "Overloaded", "type": "overloaded_error",
                              "param": None, "code": None}}]
    assert translator.error == out[0]["error"]
    assert translator.feed(*text_stream()[3]) == []


# ---------------------------------------------------- Anthropic request -> chat request


def test_an_anthropic_request_becomes_a_chat_request():
    body = to_chat([{"role": "user", "content": "Hi"}], system="Be brief.",
                   stop_sequences=["END"], temperature=0.2, top_p=0.8, top_k=5,
                   metadata={"user_id": "u-1"}, thinking={"type": "enabled",
                                                          "budget_tokens": 1024})
    assert body == {"model": "gpt-4o", "max_tokens": 100, "temperature": 0.2, "top_p": 0.8,
                    "stop": ["END"], "user": "u-1",
                    "messages": [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "Hi"}]}


def test_system_blocks_and_inline_system_messages():
    body = to_chat([{"role": "user", "content": "a"},
                    {"role": "system", "content": [{"type": "text", "text": "mid"}]}],
                   system=[{"type": "text", "text": "one", "cache_control": {"type": "ephemeral"}},
                           {"type": "text", "text": "two"}])
    assert body["messages"] == [{"role": "system", "content": "one\n\ntwo"},
                                {"role": "user", "content": "a"},
                                {"role": "system", "content": "mid"}]


def test_stream_asks_for_usage():
    body = to_chat([{"role": "user", "content": "Hi"}], stream=True)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_content_blocks_become_parts():
    body = to_chat([{"role": "user", "content": [
        {"type": "text", "text": "Look"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
        {"type": "document", "title": "r.pdf",
         "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                        "data": "plain doc"}},
    ]}])
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "Look"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
        {"type": "file", "file": {"filename": "r.pdf",
                                  "file_data": f"data:application/pdf;base64,{PDF}"}},
        {"type": "text", "text": "plain doc"},
    ]


def test_tool_use_and_tool_results_become_tool_calls_and_tool_messages():
    body = to_chat([
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "t", "signature": "s"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Rome"}},
            {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "21C"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
             "content": [{"type": "text", "text": "clock"}, {"type": "text", "text": "down"}]},
            {"type": "text", "text": "And tomorrow?"},
        ]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_3", "name": "now", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_3"}]},
    ], tools=[{"name": "weather", "description": "Weather", "input_schema": SCHEMA},
              {"name": "now", "type": "custom", "input_schema": {"type": "object"}}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True})
    assert body["messages"] == [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            call("toolu_1", "weather", '{"city":"Rome"}'), call("toolu_2", "now", "{}")]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "21C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "clock\n\ndown"},
        {"role": "user", "content": "And tomorrow?"},
        {"role": "assistant", "content": None, "tool_calls": [call("toolu_3", "now", "{}")]},
        {"role": "tool", "tool_call_id": "toolu_3", "content": ""},
    ]
    assert body["tools"] == [
        {"type": "function", "function": {"name": "weather", "description": "Weather",
                                          "parameters": SCHEMA}},
        {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}},
    ]
    assert body["tool_choice"] == "required"
    assert body["parallel_tool_calls"] is False


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, "auto"),
    ({"type": "none"}, "none"),
    ({"type": "any"}, "required"),
    ({"type": "tool", "name": "weather"}, {"type": "function", "function": {"name": "weather"}}),
])
def test_reverse_tool_choice_table(choice, expected):
    body = to_chat([{"role": "user", "content": "x"}], tool_choice=choice,
                   tools=[{"name": "weather", "input_schema": SCHEMA}])
    assert body["tool_choice"] == expected
    assert "parallel_tool_calls" not in body


@pytest.mark.parametrize(("fields", "message"), [
    ({"messages": []}, "messages: must not be empty"),
    ({"messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
     r"tools\[0\]\.type: server tool 'web_search_20250305'"),
    ({"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG}}]}]}]},
     r"messages\[0\]\.content\[0\]\.content\[0\]\.type: 'image'"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
     r"messages\[0\]\.content\[0\]\.source\.type: 'file'"),
    ({"messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "url", "url": "https://x.test/a.pdf"}}]}]},
     r"messages\[0\]\.content\[0\]\.source\.type: 'url' documents"),
    ({"messages": [{"role": "user", "content": [{"type": "search_result"}]}]},
     r"messages\[0\]\.content\[0\]\.type: 'search_result'"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1},
     "max_tokens: must be a positive integer"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"name": "f", "input_schema": {
        "type": "object"}}], "tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({"messages": [{"role": "bot", "content": "x"}]}, r"messages\[0\]\.role"),
])
def test_untranslatable_anthropic_requests_name_the_field(fields, message):
    with pytest.raises(TranslationError, match=message):
        messages_to_chat_request(fields, model="gpt-4o")


# ----------------------------------------------- chat.completion -> Anthropic Message


def chat_completion(message: dict, finish_reason: str = "stop", **fields: Any) -> dict:
    resp = {"id": "chatcmpl-AbC", "object": "chat.completion", "created": 1700000000,
            "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "message": {"role": "assistant", **message},
                         "logprobs": None, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 8, "total_tokens": 128,
                      "prompt_tokens_details": {"cached_tokens": 100}}}
    resp.update(fields)
    ChatCompletion.model_validate(resp)
    return resp


def to_message(resp: dict) -> dict:
    message = chat_to_messages_response(resp, model="claude-alias")
    assert_no_extra(Message.model_validate(message))
    return message


def test_a_chat_completion_becomes_an_anthropic_message():
    message = to_message(chat_completion({"content": "Hello!", "refusal": None}))
    assert message == {
        "id": "msg_AbC", "type": "message", "role": "assistant", "model": "claude-alias",
        "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 8, "cache_read_input_tokens": 100,
                  "cache_creation_input_tokens": 0},
    }


def test_tool_calls_become_tool_use_blocks():
    message = to_message(chat_completion({"content": None, "tool_calls": [
        call("call_1", "weather", '{"city": "Oslo"}'), call("call_2", "now", "")]},
        "tool_calls"))
    assert message["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
    ]
    assert message["stop_reason"] == "tool_use"


def test_tool_calls_reported_with_stop_still_end_in_tool_use():
    message = to_message(chat_completion({"content": "ok", "tool_calls": [
        call("c", "now", "{}")]}, "stop"))
    assert message["stop_reason"] == "tool_use"


@pytest.mark.parametrize(("finish_reason", "stop_reason"), [
    ("stop", "end_turn"),
    ("length", "max_tokens"),
    ("tool_calls", "tool_use"),
    ("function_call", "tool_use"),
    ("content_filter", "refusal"),
])
def test_reverse_stop_reason_table(finish_reason, stop_reason):
    message = to_message(chat_completion({"content": "x"}, finish_reason))
    assert message["stop_reason"] == stop_reason


def test_a_refusal_becomes_text_with_a_refusal_stop_reason():
    message = to_message(chat_completion({"content": None, "refusal": "I can't help."}))
    assert message["content"] == [{"type": "text", "text": "I can't help."}]
    assert message["stop_reason"] == "refusal"


def test_usage_with_cache_writes_and_without_usage():
    resp = chat_completion({"content": "x"}, usage={
        "prompt_tokens": 100, "completion_tokens": 2, "total_tokens": 102,
        "prompt_tokens_details": {"cached_tokens": 50, "cache_write_tokens": 30}})
    assert to_message(resp)["usage"] == {"input_tokens": 20, "output_tokens": 2,
                                         "cache_read_input_tokens": 50,
                                         "cache_creation_input_tokens": 30}
    assert to_message(chat_completion({"content": "x"}, usage=None))["usage"]["input_tokens"] == 0


@pytest.mark.parametrize(("resp", "message"), [
    ({"id": "x", "choices": []}, "choices: the response has no choice"),
    ({"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "tool_calls": [call("c", "f", '{"a": ')]}}]},
     r"choices\[0\]\.message\.tool_calls\[0\]\.function\.arguments: not valid JSON"),
])
def test_untranslatable_chat_responses(resp, message):
    with pytest.raises(TranslationError, match=message):
        chat_to_messages_response(resp, model="m")


# ------------------------------------------------------- chat chunks -> Anthropic events


def chunk(delta: dict | None = None, finish_reason: str | None = None, **fields: Any) -> dict:
    value = {"id": "chatcmpl-S1", "object": "chat.completion.chunk", "created": 1700000000,
             "model": "gpt-4o", "choices": [] if delta is None else [
                 {"index": 0, "delta": delta, "logprobs": None,
                  "finish_reason": finish_reason}]}
    value.update(fields)
    ChatCompletionChunk.model_validate(value)
    return value


USAGE_CHUNK = {"usage": {"prompt_tokens": 40, "completion_tokens": 6, "total_tokens": 46,
                         "prompt_tokens_details": {"cached_tokens": 32}}}


def run_chat_stream(chunks: list[dict]) -> tuple[ChatStreamToMessages, list[tuple[str, dict]]]:
    translator = ChatStreamToMessages(model="claude-alias")
    events = []
    for item in chunks:
        events.extend(translator.feed(item))
    events.extend(translator.finish())
    for event_type, data in events:
        assert data["type"] == event_type
        if event_type != "error":
            assert_no_extra(EVENT_ADAPTER.validate_python(data))
    return translator, events


def accumulate_events(events: list[tuple[str, dict]]) -> Message:
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for _, data in events:
        snapshot = accumulate_event(event=EVENT_ADAPTER.validate_python(data),
                                    current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    return Message.model_validate(snapshot.model_dump())


def test_a_text_stream_with_late_usage_becomes_anthropic_events():
    _, events = run_chat_stream([
        chunk({"role": "assistant", "content": "", "refusal": None}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, "stop"),
        chunk(None, **USAGE_CHUNK),
    ])
    assert [e for e, _ in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop"]
    assert events[0][1]["message"]["id"] == "msg_S1"
    assert events[0][1]["message"]["model"] == "claude-alias"
    assert events[5][1] == {"type": "message_delta",
                            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                            "usage": {"input_tokens": 8, "output_tokens": 6,
                                      "cache_read_input_tokens": 32,
                                      "cache_creation_input_tokens": 0}}
    message = accumulate_events(events)
    assert [b.model_dump(exclude_none=True) for b in message.content] == [
        {"type": "text", "text": "Hello"}]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (8, 6)


def test_a_tool_call_stream_becomes_tool_use_blocks():
    translator, events = run_chat_stream([
        chunk({"role": "assistant", "content": None}),
        chunk({"content": "Let me look."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_A", "type": "function",
                               "function": {"name": "weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"index": 0, "id": "call_A", "function": {"arguments": '"Oslo"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_B", "type": "function",
                               "function": {"name": "now", "arguments": "{}"}}]}),
        chunk({}, "tool_calls", **USAGE_CHUNK),
    ])
    starts = [data["content_block"] for event, data in events if event == "content_block_start"]
    assert starts == [{"type": "text", "text": ""},
                      {"type": "tool_use", "id": "call_A", "name": "weather", "input": {}},
                      {"type": "tool_use", "id": "call_B", "name": "now", "input": {}}]
    assert [data["index"] for event, data in events if event == "content_block_stop"] == [0, 1, 2]
    assert translator.stop_reason == "tool_use"
    message = accumulate_events(events)
    assert [b.model_dump(exclude_none=True) for b in message.content] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "call_A", "name": "weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "call_B", "name": "now", "input": {}},
    ]
    assert message.stop_reason == "tool_use"
    assert message.usage.cache_read_input_tokens == 32


def test_interleaved_parallel_tool_call_deltas_reach_each_its_own_block():
    # Valid OpenAI streams may interleave parallel tool calls' argument deltas; each block
    # stays open until the end, and the Anthropic SDK assembles both inputs.
    _, events = run_chat_stream([
        chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f",
                                                                   "arguments": '{"x"'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g",
                                                                   "arguments": '{"y"'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": ": 2}"}}]}),
        chunk({}, "tool_calls", **USAGE_CHUNK),
    ])
    assert [data["index"] for event, data in events if event == "content_block_stop"] == [0, 1]
    message = accumulate_events(events)
    assert [(block.id, block.input) for block in message.content] == [("a", {"x": 1}),
                                                                      ("b", {"y": 2})]
    assert message.stop_reason == "tool_use"


def test_tool_arguments_after_text_closed_the_tool_call_are_rejected():
    translator = ChatStreamToMessages(model="m")
    translator.feed(chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f"}}]}))
    translator.feed(chunk({"content": "then some text"}))
    with pytest.raises(TranslationError, match=r"tool_calls\[0\]: arguments arrived after"):
        translator.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}))


def test_tool_call_deltas_without_an_index():
    _, events = run_chat_stream([
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"id": "a", "function": {"name": "f", "arguments": '{"x":'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"function": {"arguments": "1}"}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"id": "b", "function": {"name": "g", "arguments": "{}"}}]}}]},
    ])
    message = accumulate_events(events)
    assert [(b.id, b.input) for b in message.content] == [("a", {"x": 1}), ("b", {})]


@pytest.mark.parametrize(("finish_reason", "stop_reason"), [
    ("length", "max_tokens"), ("content_filter", "refusal"), (None, "end_turn")])
def test_stream_stop_reasons(finish_reason, stop_reason):
    chunks = [chunk({"content": "x"})]
    if finish_reason:
        chunks.append(chunk({}, finish_reason))
    translator, events = run_chat_stream(chunks)
    assert events[-2][1]["delta"]["stop_reason"] == stop_reason == translator.stop_reason


def test_a_refusal_stream_ends_with_a_refusal():
    _, events = run_chat_stream([chunk({"refusal": "No."}), chunk({}, "stop")])
    assert events[-2][1]["delta"]["stop_reason"] == "refusal"


def test_an_empty_stream_still_produces_a_valid_message():
    translator, events = run_chat_stream([])
    assert [e for e, _ in events] == ["message_start", "message_delta", "message_stop"]
    assert accumulate_events(events).content == []
    assert translator.finish() == []
    assert translator.feed(chunk({"content": "late"})) == []


def test_an_error_chunk_becomes_an_anthropic_error_event():
    translator = ChatStreamToMessages(model="m")
    translator.feed(chunk({"content": "partial"}))
    events = translator.feed({"error": {"message": "upstream broke", "type": "server_error"}})
    assert events == [("error", {"type": "error", "error": {"type": "api_error",
                                                           "message": "upstream broke"}})]
    assert translator.finish() == []


# ------------------------------------------------------------------------------ round trips

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
               max_size=20).map(str.strip).filter(bool)
ROLES = st.sampled_from(["system", "user", "assistant"])


def role_runs(messages: list[dict]) -> list[tuple[str, str]]:
    """(role, concatenated text) per run of same-role turns, system messages removed."""
    runs: list[tuple[str, str]] = []
    for message in messages:
        if message["role"] == "system":
            continue
        content = message["content"]
        text = content if isinstance(content, str) else "".join(p["text"] for p in content)
        if runs and runs[-1][0] == message["role"]:
            runs[-1] = (message["role"], runs[-1][1] + text)
        else:
            runs.append((message["role"], text))
    return runs


@settings(max_examples=75, deadline=None)
@given(st.lists(st.tuples(ROLES, TEXT, st.booleans()), min_size=1, max_size=8))
def test_chat_to_messages_to_chat_round_trips_text_and_roles(spec):
    messages = [{"role": role, "content": [{"type": "text", "text": text}] if as_parts else text}
                for role, text, as_parts in spec]
    if all(m["role"] == "system" for m in messages):
        messages.append({"role": "user", "content": "x"})
    # Shapes are proven against the SDK types above; the property checks content only.
    anthropic = chat_to_messages_request({"messages": messages}, model="claude")
    back = messages_to_chat_request(anthropic, model="gpt-4o")
    systems = [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"]
               for m in messages if m["role"] == "system"]
    if systems:
        assert back["messages"][0] == {"role": "system", "content": "\n\n".join(systems)}
    assert role_runs(back["messages"]) == role_runs(messages)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(TEXT, st.dictionaries(TEXT, st.integers() | TEXT, max_size=3)),
                min_size=1, max_size=4))
def test_tool_calls_round_trip_through_both_response_formats(calls):
    content = [{"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": arguments}
               for i, (name, arguments) in enumerate(calls)]
    message = anthropic_message(content=content, stop_reason="tool_use")
    back = to_message(to_chat_response(message))
    assert back["content"] == content
    assert back["stop_reason"] == "tool_use"
    assert back["id"] == message["id"]


def test_sse_event_payload_is_the_json_of_the_data():
    data = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}
    raw = sse_event("message_delta", data)
    assert orjson.loads(raw.split(b"data: ", 1)[1]) == data


@pytest.mark.parametrize("reported", [-5, "7", None, True, 2.5])
def test_token_counts_that_are_not_positive_integers_count_as_zero(reported):
    """The same reading as the gateway's own usage (``adapters.token_count``): a translated
    response never shows a negative or made-up count."""
    response = messages_to_chat_response({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
        "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": reported, "output_tokens": 3}}, model="alias")
    assert (response["usage"]["prompt_tokens"], response["usage"]["completion_tokens"]) == (0, 3)
    events = ChatStreamToMessages(model="m").feed({
        "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [], "usage": {"prompt_tokens": reported, "completion_tokens": 3}})
    assert events[0][1]["message"]["usage"]["input_tokens"] == 0
