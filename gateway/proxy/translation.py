"""Translate between the OpenAI Chat Completions and the Anthropic Messages wire formats.

Pure functions over decoded JSON (stdlib + orjson; no Django, no I/O) so the proxy can

1. serve an OpenAI client from a Claude model: ``chat_to_messages_request`` for the request,
   ``messages_to_chat_response`` for the reply and ``MessagesStreamToChat`` for the SSE stream;
2. serve an Anthropic client of ``/anthropic/v1/messages`` from an OpenAI-kind provider on
   fallback: ``messages_to_chat_request``, ``chat_to_messages_response`` and
   ``ChatStreamToMessages``.

Input that cannot be expressed in the other format raises ``TranslationError`` (a
``ValueError``) whose message starts with the offending field, e.g.
``messages[2].tool_calls[0].function.arguments: not valid JSON``; the proxy answers it with a
400 in the client's own error format.

OpenAI request fields (``CHAT_FIELDS_*`` below; ``model`` is always replaced by the argument):

* mapped: messages (system/developer messages are hoisted into ``system`` wherever they
  appear), max_completion_tokens / max_tokens, temperature (clamped to Anthropic's 0..1), top_p
  (dropped when temperature is also given: current Claude models reject the pair), stop,
  stream, tools, tool_choice, parallel_tool_calls, user / safety_identifier (metadata.user_id);
* dropped (no Anthropic equivalent, or would be rejected): see ``CHAT_FIELDS_DROPPED``;
* rejected: n > 1, legacy functions / function_call, custom (non-function) tools and tool
  choices, input_audio and file_id content parts, a ``response_format`` other than text
  (JSON mode and schemas would go unenforced), ``logprobs`` / ``top_logprobs`` asked for
  (dropped when false).

Content-part ``cache_control`` (the common gateway convention) is passed through and OpenAI's
``prompt_cache_breakpoint`` becomes ``cache_control: {"type": "ephemeral"}``.

Anthropic request fields (``MESSAGES_FIELDS_*``): system, messages, max_tokens, stop_sequences,
temperature, top_p, stream (adds ``stream_options.include_usage``), tools, tool_choice
(``disable_parallel_tool_use`` becomes ``parallel_tool_calls: false``) and metadata.user_id
are mapped; everything else (thinking, top_k, output_config, cache_control, service_tier, ...)
is dropped. Server tools (web search, code execution, ...) are rejected. Thinking blocks and
server-tool blocks in assistant turns are dropped, ``tool_result.is_error`` is lost, and images
inside tool results are rejected (OpenAI tool messages carry text only).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import orjson

from gateway.proxy.adapters import token_count

__all__ = [
    "CHAT_FIELDS_DROPPED",
    "CHAT_FIELDS_MAPPED",
    "CHAT_FIELDS_REJECTED",
    "FINISH_REASONS",
    "MESSAGES_FIELDS_DROPPED",
    "MESSAGES_FIELDS_MAPPED",
    "STOP_REASONS",
    "ChatStreamToMessages",
    "MessagesStreamToChat",
    "TranslationError",
    "chat_to_messages_request",
    "chat_to_messages_response",
    "messages_to_chat_request",
    "messages_to_chat_response",
    "sse_event",
]

CHAT_FIELDS_MAPPED = frozenset({
    "messages", "model", "max_completion_tokens", "max_tokens", "temperature", "top_p", "stop",
    "stream", "tools", "tool_choice", "parallel_tool_calls", "user", "safety_identifier",
})
CHAT_FIELDS_REJECTED = frozenset({"functions", "function_call", "n"})  # n only when > 1
CHAT_FIELDS_DROPPED = frozenset({
    "audio", "frequency_penalty", "logit_bias", "logprobs", "metadata", "modalities",
    "moderation", "prediction", "presence_penalty", "prompt_cache_key", "prompt_cache_options",
    "prompt_cache_retention", "reasoning_effort", "response_format", "seed", "service_tier",
    "store", "stream_options", "top_logprobs", "verbosity", "web_search_options",
})
MESSAGES_FIELDS_MAPPED = frozenset({
    "messages", "model", "system", "max_tokens", "stop_sequences", "temperature", "top_p",
    "stream", "tools", "tool_choice", "metadata",
})
MESSAGES_FIELDS_DROPPED = frozenset({
    "cache_control", "container", "diagnostics", "inference_geo", "output_config",
    "service_tier", "speed", "thinking", "top_k", "user_profile_id", "workspace_id",
})

_IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"data:(?P<media>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<data>.*)", re.DOTALL)

# Anthropic stop_reason -> OpenAI finish_reason.
FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# OpenAI finish_reason -> Anthropic stop_reason.
STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


class TranslationError(ValueError):
    """The input cannot be expressed in the other wire format; the message names the field."""


def sse_event(event_type: str | None, data: dict) -> bytes:
    """One server-sent event: ``event: X\\ndata: {json}\\n\\n``, or only ``data:`` without type."""
    payload = b"data: " + _encode(data) + b"\n\n"
    if event_type is None:
        return payload
    if "\n" in event_type or "\r" in event_type:
        raise ValueError("event_type must not contain line breaks")
    return b"event: " + event_type.encode() + b"\n" + payload


# --------------------------------------------------------------------------- shared helpers


def _encode(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # e.g. integers beyond 64 bits, which JSON allows
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _dumps(value: Any) -> str:
    return _encode(value).decode()


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _dict(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise TranslationError(f"{path}: must be an object")
    return value


def _list(value: Any, path: str) -> list:
    if not isinstance(value, list):
        raise TranslationError(f"{path}: must be an array")
    return value


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise TranslationError(f"{path}: must be a non-empty string")
    return value


def _chat_id(message_id: Any) -> str:
    base = message_id if isinstance(message_id, str) and message_id else uuid.uuid4().hex
    return "chatcmpl-" + base.removeprefix("msg_")


def _message_id(chat_id: Any) -> str:
    base = chat_id if isinstance(chat_id, str) and chat_id else uuid.uuid4().hex
    return "msg_" + base.removeprefix("chatcmpl-")


def _tool_use_id() -> str:
    return "toolu_" + uuid.uuid4().hex


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode_arguments(arguments: Any, path: str) -> dict:
    """OpenAI ``function.arguments`` (a JSON string) -> Anthropic ``tool_use.input``."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if not isinstance(arguments, str):
        raise TranslationError(f"{path}: must be a JSON string")
    try:
        # The stdlib keeps integers beyond 64 bits exact (orjson turns them into floats).
        decoded = json.loads(arguments, parse_constant=_reject_constant)
    except ValueError:
        raise TranslationError(f"{path}: not valid JSON") from None
    if not isinstance(decoded, dict):
        raise TranslationError(f"{path}: must encode a JSON object")
    return decoded


def _chat_usage(prompt: int, completion: int, cached: int, written: int) -> dict:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
    }


# ------------------------------------------------------- OpenAI chat request -> Anthropic


def _cache_control(part: dict) -> dict | None:
    control = part.get("cache_control")
    if isinstance(control, dict):
        out = {"type": "ephemeral"}
        if control.get("ttl") in ("5m", "1h"):
            out["ttl"] = control["ttl"]
        return out
    breakpoint_ = part.get("prompt_cache_breakpoint")
    if isinstance(breakpoint_, dict) and breakpoint_.get("mode") == "explicit":
        return {"type": "ephemeral"}
    return None


def _with_cache(block: dict, part: dict) -> dict:
    control = _cache_control(part)
    if control is not None:
        block["cache_control"] = control
    return block


def _text_blocks(content: Any, path: str, *, refusal: bool = False) -> list[dict]:
    """Text-only content (system, developer, tool, assistant) -> Anthropic text blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for j, part in enumerate(_list(content, f"{path}.content")):
        part_path = f"{path}.content[{j}]"
        part = _dict(part, part_path)
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
        elif kind == "refusal" and refusal:
            text = part.get("refusal")
        else:
            raise TranslationError(f"{part_path}.type: {kind!r} is not supported here")
        if not isinstance(text, str):
            raise TranslationError(f"{part_path}: text must be a string")
        if text:
            blocks.append(_with_cache({"type": "text", "text": text}, part))
    return blocks


def _data_url(url: str, path: str) -> tuple[str, str]:
    match = _DATA_URL.fullmatch(url)
    if match is None or ";base64" not in match["params"].lower():
        raise TranslationError(f"{path}: only base64 data URLs are supported")
    return match["media"].strip().lower(), match["data"]


def _image_block(part: dict, path: str) -> dict:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    url = _str(url, f"{path}.image_url.url")
    if url.startswith("data:"):
        media_type, data = _data_url(url, f"{path}.image_url.url")
        media_type = "image/jpeg" if media_type == "image/jpg" else media_type
        if media_type not in _IMAGE_MEDIA_TYPES:
            raise TranslationError(
                f"{path}.image_url.url: media type {media_type!r} is not supported "
                f"(use one of {', '.join(sorted(_IMAGE_MEDIA_TYPES))})"
            )
        source = {"type": "base64", "media_type": media_type, "data": data}
    elif url.startswith(("https://", "http://")):
        source = {"type": "url", "url": url}
    else:
        raise TranslationError(f"{path}.image_url.url: must be an http(s) or data URL")
    return _with_cache({"type": "image", "source": source}, part)


def _document_block(part: dict, path: str) -> dict:
    file = _dict(part.get("file"), f"{path}.file")
    if file.get("file_id"):
        raise TranslationError(f"{path}.file.file_id: uploaded files cannot be translated")
    media_type, data = _data_url(_str(file.get("file_data"), f"{path}.file.file_data"),
                                 f"{path}.file.file_data")
    if media_type != "application/pdf":
        raise TranslationError(f"{path}.file.file_data: only application/pdf files are supported")
    block = {"type": "document", "source": {"type": "base64", "media_type": media_type,
                                            "data": data}}
    if isinstance(file.get("filename"), str) and file["filename"]:
        block["title"] = file["filename"]
    return _with_cache(block, part)


def _user_content(content: Any, path: str) -> str | list[dict]:
    if isinstance(content, str):
        return content
    blocks = []
    for j, part in enumerate(_list(content, f"{path}.content")):
        part_path = f"{path}.content[{j}]"
        part = _dict(part, part_path)
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise TranslationError(f"{part_path}: text must be a string")
            if part["text"]:
                blocks.append(_with_cache({"type": "text", "text": part["text"]}, part))
        elif kind == "image_url":
            blocks.append(_image_block(part, part_path))
        elif kind == "file":
            blocks.append(_document_block(part, part_path))
        else:
            raise TranslationError(f"{part_path}.type: {kind!r} cannot be sent to Anthropic")
    return blocks


def _assistant_blocks(message: dict, path: str) -> list[dict]:
    if message.get("function_call"):
        raise TranslationError(f"{path}.function_call: legacy function calls are not supported")
    blocks = _text_blocks(message.get("content"), path, refusal=True)
    for k, call in enumerate(_list(message.get("tool_calls") or [], f"{path}.tool_calls")):
        call_path = f"{path}.tool_calls[{k}]"
        call = _dict(call, call_path)
        if call.get("type", "function") != "function":
            raise TranslationError(f"{call_path}.type: only function tool calls are supported")
        function = _dict(call.get("function"), f"{call_path}.function")
        blocks.append({
            "type": "tool_use",
            "id": _str(call.get("id"), f"{call_path}.id"),
            "name": _str(function.get("name"), f"{call_path}.function.name"),
            "input": _decode_arguments(function.get("arguments"),
                                       f"{call_path}.function.arguments"),
        })
    return blocks


def _tool_result_block(message: dict, path: str) -> dict:
    block = {"type": "tool_result",
             "tool_use_id": _str(message.get("tool_call_id"), f"{path}.tool_call_id")}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        parts = _text_blocks(content, path)
        if parts:
            block["content"] = parts
    return block


def _as_blocks(content: str | list[dict]) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return content


def _append_turn(turns: list[dict], role: str, content: str | list[dict]) -> None:
    """Anthropic requires user/assistant alternation: same-role neighbours are merged."""
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"] = _as_blocks(turns[-1]["content"]) + _as_blocks(content)
    else:
        turns.append({"role": role, "content": content})


def _finish_turns(turns: list[dict]) -> list[dict]:
    for turn in turns:
        content = turn["content"]
        if turn["role"] == "user" and isinstance(content, list):
            # Tool results must open the user turn that answers the tool calls.
            turn["content"] = ([b for b in content if b.get("type") == "tool_result"]
                               + [b for b in content if b.get("type") != "tool_result"])
    if turns and turns[-1]["role"] == "assistant":
        # A final (prefill) assistant turn may not end with whitespace.
        last = turns[-1]
        if isinstance(last["content"], str):
            last["content"] = last["content"].rstrip()
        elif last["content"] and last["content"][-1].get("type") == "text":
            last["content"][-1]["text"] = last["content"][-1]["text"].rstrip()
            if not last["content"][-1]["text"]:
                last["content"].pop()
        if not last["content"]:
            turns.pop()
    return turns


def _convert_chat_messages(messages: list) -> tuple[list[dict], list[dict]]:
    system: list[dict] = []
    turns: list[dict] = []
    for i, message in enumerate(messages):
        path = f"messages[{i}]"
        message = _dict(message, path)
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), path))
        elif role == "user":
            content = _user_content(message.get("content"), path)
            if content:
                _append_turn(turns, "user", content)
        elif role == "assistant":
            blocks = _assistant_blocks(message, path)
            if blocks:
                plain = len(blocks) == 1 and set(blocks[0]) == {"type", "text"}
                _append_turn(turns, "assistant", blocks[0]["text"] if plain else blocks)
        elif role == "tool":
            _append_turn(turns, "user", [_tool_result_block(message, path)])
        elif role == "function":
            raise TranslationError(f"{path}.role: legacy function messages are not supported")
        else:
            raise TranslationError(f"{path}.role: unknown role {role!r}")
    return system, _finish_turns(turns)


def _anthropic_tools(tools: list) -> list[dict]:
    out = []
    for i, tool in enumerate(tools):
        path = f"tools[{i}]"
        tool = _dict(tool, path)
        if tool.get("type", "function") != "function":
            raise TranslationError(f"{path}.type: only function tools can be translated")
        function = _dict(tool.get("function"), f"{path}.function")
        parameters = function.get("parameters")
        schema = dict(_dict(parameters, f"{path}.function.parameters")) if parameters else {
            "type": "object", "properties": {}}
        schema.setdefault("type", "object")
        converted = {"name": _str(function.get("name"), f"{path}.function.name"),
                     "input_schema": schema}
        if isinstance(function.get("description"), str) and function["description"]:
            converted["description"] = function["description"]
        out.append(converted)
    return out


def _anthropic_tool_choice(choice: Any, parallel: Any) -> dict | None:
    if choice is None:
        converted = None
    elif choice in ("auto", "none"):
        converted = {"type": choice}
    elif choice == "required":
        converted = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        function = _dict(choice.get("function"), "tool_choice.function")
        converted = {"type": "tool", "name": _str(function.get("name"),
                                                   "tool_choice.function.name")}
    else:
        raise TranslationError("tool_choice: only auto, none, required or a named function "
                               "can be translated")
    if parallel is False:
        converted = converted or {"type": "auto"}
        if converted["type"] != "none":
            converted["disable_parallel_tool_use"] = True
    return converted


def chat_to_messages_request(body: dict, *, model: str, default_max_tokens: int = 4096) -> dict:
    """An OpenAI ``/chat/completions`` body -> an Anthropic ``/v1/messages`` body for ``model``."""
    body = _dict(body, "body")
    messages = _list(body.get("messages"), "messages")
    if not messages:
        raise TranslationError("messages: must not be empty")
    if body.get("functions") or body.get("function_call"):
        raise TranslationError("functions: legacy function calling is not supported; use tools")
    if body.get("n") not in (None, 1):
        raise TranslationError("n: only one choice (n=1) can be requested from Anthropic")
    response_format = body.get("response_format")
    if response_format is not None and not (isinstance(response_format, dict)
                                            and response_format.get("type") == "text"):
        # Dropped, a client's JSON mode or schema would go unenforced and unnoticed.
        raise TranslationError("response_format: JSON output (json_object, json_schema) is "
                               "not translated for Anthropic models; ask for JSON in the "
                               "prompt, or use a forced tool call")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise TranslationError("logprobs: Anthropic models do not return log probabilities")

    system, turns = _convert_chat_messages(messages)
    if not turns:
        raise TranslationError("messages: no user or assistant content to send")

    field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else (
        "max_tokens")
    max_tokens = body.get(field)
    if max_tokens is None:
        max_tokens = default_max_tokens
    elif not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise TranslationError(f"{field}: must be a positive integer")

    out: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": turns}
    if system:
        if any("cache_control" in block for block in system):
            out["system"] = system
        else:
            out["system"] = "\n\n".join(block["text"] for block in system)

    temperature, top_p = body.get("temperature"), body.get("top_p")
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        if value is not None and not _number(value):
            raise TranslationError(f"{name}: must be a number")
    if temperature is not None:
        out["temperature"] = min(float(temperature), 1.0)
    elif top_p is not None:
        out["top_p"] = top_p

    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise TranslationError("stop: must be a string or an array of strings")
        out["stop_sequences"] = stop

    if body.get("stream") is True:
        out["stream"] = True

    tools = body.get("tools")
    if tools:
        out["tools"] = _anthropic_tools(_list(tools, "tools"))
        choice = _anthropic_tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice

    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    return out


# ---------------------------------------------------- Anthropic response -> chat.completion


def _usage_from_anthropic(usage: Any) -> tuple[int, int, int, int]:
    """(prompt incl. cache reads and writes, completion, cache reads, cache writes)."""
    usage = usage if isinstance(usage, dict) else {}
    read = token_count(usage.get("cache_read_input_tokens"))
    written = token_count(usage.get("cache_creation_input_tokens"))
    prompt = token_count(usage.get("input_tokens")) + read + written
    return prompt, token_count(usage.get("output_tokens")), read, written


def messages_to_chat_response(resp: dict, *, model: str) -> dict:
    """An Anthropic Message -> an OpenAI ``chat.completion`` reporting ``model``."""
    resp = _dict(resp, "response")
    texts: list[str] = []
    tool_calls: list[dict] = []
    for block in _list(resp.get("content") or [], "content"):
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(block.get("text") or "")
        elif block.get("type") == "tool_use":
            tool_calls.append({
                "id": block.get("id") or _tool_use_id(),
                "type": "function",
                "function": {"name": block.get("name") or "",
                             "arguments": _dumps(block.get("input") or {})},
            })
        # thinking, redacted_thinking and server-tool blocks have no chat equivalent.
    text = "".join(texts)
    message: dict[str, Any] = {"role": "assistant",
                               "content": text if text or not tool_calls else None,
                               "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    usage = _chat_usage(*_usage_from_anthropic(resp.get("usage")))
    details = (resp.get("usage") or {}).get("output_tokens_details")
    if isinstance(details, dict) and token_count(details.get("thinking_tokens")):
        usage["completion_tokens_details"] = {"reasoning_tokens": details["thinking_tokens"]}
    return {
        "id": _chat_id(resp.get("id")),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": FINISH_REASONS.get(resp.get("stop_reason") or "", "stop"),
        }],
        "usage": usage,
    }


class MessagesStreamToChat:
    """Anthropic Messages SSE events -> OpenAI ``chat.completion.chunk`` dicts.

    Feed every ``(event, data)`` pair in order; send each returned chunk as ``data:`` lines,
    then, when the client asked for ``stream_options.include_usage``, ``usage_chunk()``, then
    ``data: [DONE]``. The finish chunk is produced on ``message_delta``. An ``error`` event
    yields one OpenAI-style ``{"error": {...}}`` payload (kept in ``.error``) and ends output.
    """

    def __init__(self, *, model: str) -> None:
        self.model = model
        self.id = _chat_id(None)
        self.created = int(time.time())
        self.finish_reason: str | None = None
        self.error: dict | None = None
        self._started = False
        self._finished = False
        self._tool_index: dict[Any, int] = {}
        self._input = self._read = self._written = self._output = 0

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish_reason}],
        }

    def _absorb_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for key, attr in (("input_tokens", "_input"), ("cache_read_input_tokens", "_read"),
                          ("cache_creation_input_tokens", "_written"),
                          ("output_tokens", "_output")):
            value = usage.get(key)  # absent or null: keep what was reported before
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, attr, token_count(value))  # cumulative: overwrite, never add

    def _start(self) -> list[dict]:
        if self._started:
            return []
        self._started = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def _finish(self) -> list[dict]:
        if self._finished:
            return []
        out = self._start()
        self._finished = True
        out.append(self._chunk({}, self.finish_reason or "stop"))
        return out

    def feed(self, event_type: str, data: dict) -> list[dict]:
        if self._finished or not isinstance(data, dict):
            return []
        kind = event_type or data.get("type")
        if kind == "message_start":
            message = data.get("message") or {}
            if message.get("id"):
                self.id = _chat_id(message["id"])
            self._absorb_usage(message.get("usage"))
            return self._start()
        if kind == "content_block_start":
            return self._block_start(data.get("index"), data.get("content_block") or {})
        if kind == "content_block_delta":
            return self._block_delta(data.get("index"), data.get("delta") or {})
        if kind == "message_delta":
            self._absorb_usage(data.get("usage"))
            stop_reason = (data.get("delta") or {}).get("stop_reason")
            if stop_reason:
                self.finish_reason = FINISH_REASONS.get(stop_reason, "stop")
            return self._finish()
        if kind == "message_stop":
            return self._finish()
        if kind == "error":
            error = data.get("error") if isinstance(data.get("error"), dict) else {}
            self.error = {"message": str(error.get("message") or "upstream stream error"),
                          "type": str(error.get("type") or "api_error"), "param": None,
                          "code": None}
            self._finished = True
            return [{"error": self.error}]
        return []  # ping, content_block_stop and future event types

    def _block_start(self, index: Any, block: dict) -> list[dict]:
        out = self._start()
        if block.get("type") == "text" and block.get("text"):
            out.append(self._chunk({"content": block["text"]}))
        elif block.get("type") == "tool_use":
            position = self._tool_index[index] = len(self._tool_index)
            arguments = _dumps(block["input"]) if block.get("input") else ""
            out.append(self._chunk({"tool_calls": [{
                "index": position,
                "id": block.get("id") or _tool_use_id(),
                "type": "function",
                "function": {"name": block.get("name") or "", "arguments": arguments},
            }]}))
        return out

    def _block_delta(self, index: Any, delta: dict) -> list[dict]:
        out = self._start()
        if delta.get("type") == "text_delta" and delta.get("text"):
            out.append(self._chunk({"content": delta["text"]}))
        elif (delta.get("type") == "input_json_delta" and delta.get("partial_json")
              and index in self._tool_index):
            out.append(self._chunk({"tool_calls": [{
                "index": self._tool_index[index],
                "function": {"arguments": delta["partial_json"]},
            }]}))
        return out  # thinking, signature and citations deltas have no chat equivalent

    def usage_chunk(self) -> dict:
        prompt = self._input + self._read + self._written
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": _chat_usage(prompt, self._output, self._read, self._written),
        }


# ------------------------------------------------------- Anthropic request -> OpenAI chat


def _join_text(content: Any, path: str, sep: str = "\n\n") -> str:
    """Anthropic text content (a string or text blocks) -> one string."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for j, block in enumerate(_list(content, path)):
        block = _dict(block, f"{path}[{j}]")
        if block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise TranslationError(f"{path}[{j}].type: only text blocks can be translated here")
        texts.append(block["text"])
    return sep.join(texts)


def _image_part(block: dict, path: str) -> dict:
    source = _dict(block.get("source"), f"{path}.source")
    if source.get("type") == "base64":
        media_type = _str(source.get("media_type"), f"{path}.source.media_type")
        data = _str(source.get("data"), f"{path}.source.data")
        url = f"data:{media_type};base64,{data}"
    elif source.get("type") == "url":
        url = _str(source.get("url"), f"{path}.source.url")
    else:
        raise TranslationError(f"{path}.source.type: {source.get('type')!r} images cannot be "
                               "translated")
    return {"type": "image_url", "image_url": {"url": url}}


def _document_part(block: dict, path: str) -> dict:
    source = _dict(block.get("source"), f"{path}.source")
    if source.get("type") == "base64" and source.get("media_type") == "application/pdf":
        data = _str(source.get("data"), f"{path}.source.data")
        title = block.get("title")
        return {"type": "file", "file": {
            "filename": title if isinstance(title, str) and title else "document.pdf",
            "file_data": f"data:application/pdf;base64,{data}",
        }}
    if source.get("type") == "text":
        return {"type": "text", "text": _str(source.get("data"), f"{path}.source.data")}
    raise TranslationError(f"{path}.source.type: {source.get('type')!r} documents cannot be "
                           "translated")


def _tool_message(block: dict, path: str) -> dict:
    content = block.get("content")
    if isinstance(content, list):
        for k, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") != "text":
                raise TranslationError(f"{path}.content[{k}].type: {part.get('type')!r} cannot "
                                       "be returned in an OpenAI tool message")
    return {"role": "tool", "tool_call_id": _str(block.get("tool_use_id"), f"{path}.tool_use_id"),
            "content": _join_text(content, f"{path}.content")}


def _user_to_chat(content: Any, path: str) -> list[dict]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tool_messages: list[dict] = []
    parts: list[dict] = []
    for j, block in enumerate(_list(content, f"{path}.content")):
        block_path = f"{path}.content[{j}]"
        block = _dict(block, block_path)
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text") or ""})
        elif kind == "image":
            parts.append(_image_part(block, block_path))
        elif kind == "document":
            parts.append(_document_part(block, block_path))
        elif kind == "tool_result":
            tool_messages.append(_tool_message(block, block_path))
        else:
            raise TranslationError(f"{block_path}.type: {kind!r} cannot be translated to the "
                                   "chat format")
    if parts:
        single_text = len(parts) == 1 and parts[0]["type"] == "text"
        tool_messages.append({"role": "user",
                              "content": parts[0]["text"] if single_text else parts})
    return tool_messages


def _assistant_to_chat(content: Any, path: str) -> dict | None:
    if isinstance(content, str):
        return {"role": "assistant", "content": content} if content else None
    texts: list[str] = []
    calls: list[dict] = []
    for j, block in enumerate(_list(content, f"{path}.content")):
        block_path = f"{path}.content[{j}]"
        block = _dict(block, block_path)
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            calls.append({"id": _str(block.get("id"), f"{block_path}.id"), "type": "function",
                          "function": {"name": _str(block.get("name"), f"{block_path}.name"),
                                       "arguments": _dumps(block.get("input") or {})}})
        elif kind in ("thinking", "redacted_thinking") or kind == "server_tool_use" or (
                isinstance(kind, str) and kind.endswith("_tool_result")):
            continue  # model-internal or server-side artefacts with no chat equivalent
        else:
            raise TranslationError(f"{block_path}.type: {kind!r} cannot be translated to the "
                                   "chat format")
    text = "".join(texts)
    if not text and not calls:
        return None
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _chat_tools(tools: list) -> list[dict]:
    out = []
    for i, tool in enumerate(tools):
        path = f"tools[{i}]"
        tool = _dict(tool, path)
        if tool.get("type") not in (None, "custom"):
            raise TranslationError(f"{path}.type: server tool {tool.get('type')!r} cannot be "
                                   "served by an OpenAI-compatible provider")
        function: dict[str, Any] = {"name": _str(tool.get("name"), f"{path}.name")}
        if isinstance(tool.get("description"), str) and tool["description"]:
            function["description"] = tool["description"]
        function["parameters"] = _dict(tool.get("input_schema"), f"{path}.input_schema")
        out.append({"type": "function", "function": function})
    return out


def _chat_tool_choice(choice: Any) -> str | dict:
    choice = _dict(choice, "tool_choice")
    kind = choice.get("type")
    if kind in ("auto", "none"):
        return kind
    if kind == "any":
        return "required"
    if kind == "tool":
        return {"type": "function",
                "function": {"name": _str(choice.get("name"), "tool_choice.name")}}
    raise TranslationError(f"tool_choice.type: unknown tool choice {kind!r}")


def messages_to_chat_request(body: dict, *, model: str) -> dict:
    """An Anthropic ``/v1/messages`` body -> an OpenAI ``/chat/completions`` body for ``model``."""
    body = _dict(body, "body")
    messages = _list(body.get("messages"), "messages")
    if not messages:
        raise TranslationError("messages: must not be empty")
    chat: list[dict] = []
    system = _join_text(body.get("system"), "system")
    if system:
        chat.append({"role": "system", "content": system})
    for i, message in enumerate(messages):
        path = f"messages[{i}]"
        message = _dict(message, path)
        role, content = message.get("role"), message.get("content")
        if role == "user":
            chat.extend(_user_to_chat(content, path))
        elif role == "assistant":
            converted = _assistant_to_chat(content, path)
            if converted is not None:
                chat.append(converted)
        elif role == "system":
            text = _join_text(content, f"{path}.content")
            if text:
                chat.append({"role": "system", "content": text})
        else:
            raise TranslationError(f"{path}.role: unknown role {role!r}")

    out: dict[str, Any] = {"model": model, "messages": chat}
    max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise TranslationError("max_tokens: must be a positive integer")
        out["max_tokens"] = max_tokens
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            if not _number(body[name]):
                raise TranslationError(f"{name}: must be a number")
            out[name] = body[name]
    stop = body.get("stop_sequences")
    if stop:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise TranslationError("stop_sequences: must be an array of strings")
        out["stop"] = stop
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    tools = body.get("tools")
    if tools:
        out["tools"] = _chat_tools(_list(tools, "tools"))
        if body.get("tool_choice") is not None:
            out["tool_choice"] = _chat_tool_choice(body["tool_choice"])
            if body["tool_choice"].get("disable_parallel_tool_use") is True:
                out["parallel_tool_calls"] = False
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str) and (
            metadata["user_id"]):
        out["user"] = metadata["user_id"]
    return out


# ----------------------------------------------- chat.completion -> Anthropic Message


def _usage_from_chat(usage: Any) -> tuple[int, int, int, int]:
    """(prompt incl. cache, completion, cache reads, cache writes) from an OpenAI usage."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    return (token_count(usage.get("prompt_tokens")),
            token_count(usage.get("completion_tokens")),
            token_count(details.get("cached_tokens")),
            token_count(details.get("cache_write_tokens")))


def _anthropic_usage(prompt: int, completion: int, cached: int, written: int) -> dict:
    return {"input_tokens": max(prompt - cached - written, 0), "output_tokens": completion,
            "cache_read_input_tokens": cached, "cache_creation_input_tokens": written}


def _chat_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some providers answer with text parts
        return "".join(p.get("text") or "" for p in content
                       if isinstance(p, dict) and p.get("type") == "text")
    return ""


def chat_to_messages_response(resp: dict, *, model: str) -> dict:
    """An OpenAI ``chat.completion`` -> an Anthropic Message reporting ``model``."""
    resp = _dict(resp, "response")
    choices = resp.get("choices")
    if not isinstance(choices, list) or not choices:
        raise TranslationError("choices: the response has no choice")
    choice = _dict(choices[0], "choices[0]")
    message = _dict(choice.get("message") or {}, "choices[0].message")
    content: list[dict] = []
    text = _chat_text(message.get("content"))
    refusal = message.get("refusal") if isinstance(message.get("refusal"), str) else ""
    if text or refusal:
        content.append({"type": "text", "text": text or refusal})
    calls = message.get("tool_calls") or []
    for k, call in enumerate(_list(calls, "choices[0].message.tool_calls")):
        path = f"choices[0].message.tool_calls[{k}]"
        function = _dict(_dict(call, path).get("function"), f"{path}.function")
        content.append({
            "type": "tool_use",
            "id": call.get("id") or _tool_use_id(),
            "name": _str(function.get("name"), f"{path}.function.name"),
            "input": _decode_arguments(function.get("arguments"), f"{path}.function.arguments"),
        })
    stop_reason = STOP_REASONS.get(choice.get("finish_reason") or "", "end_turn")
    if calls and stop_reason == "end_turn":
        stop_reason = "tool_use"  # several providers report "stop" alongside tool calls
    if refusal and not text:
        stop_reason = "refusal"
    return {
        "id": _message_id(resp.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _anthropic_usage(*_usage_from_chat(resp.get("usage"))),
    }


class ChatStreamToMessages:
    """OpenAI ``chat.completion.chunk`` dicts -> Anthropic ``(event, data)`` SSE pairs.

    ``feed`` every decoded chunk (including the usage-only chunk), then call ``finish()`` at the
    end of the stream: it closes the open block and emits ``message_delta`` (stop_reason and
    usage, which OpenAI only reports at the very end) and ``message_stop``. A chunk carrying an
    ``error`` object yields an Anthropic ``error`` event (kept in ``.error``) and ends output.
    """

    def __init__(self, *, model: str) -> None:
        self.model = model
        self.id: str | None = None
        self.stop_reason: str | None = None
        self.error: dict | None = None
        self._started = False
        self._done = False
        self._index = -1  # Anthropic index of the last opened content block
        self._open: tuple[str, Any] | None = None  # ("text", None) or ("tool", openai index)
        self._tools: dict[Any, int] = {}
        # Tool blocks still open: OpenAI may interleave the argument deltas of parallel tool
        # calls (index 0, index 1, index 0 again); their blocks stay open until text or the
        # end comes, each delta naming its own block's index.
        self._open_tools: list[int] = []
        self._refused = False  # a refusal delta arrived
        self._answered = False  # a content delta arrived
        self._prompt = self._completion = self._cached = self._written = 0

    def _start(self, events: list, chunk_id: Any) -> None:
        if self._started:
            return
        self._started = True
        self.id = _message_id(chunk_id)
        events.append(("message_start", {"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": _anthropic_usage(self._prompt, 0, self._cached, self._written),
        }}))

    def _close(self, events: list) -> None:
        if self._open_tools:
            events.extend(("content_block_stop", {"type": "content_block_stop", "index": index})
                          for index in self._open_tools)
            self._open_tools.clear()
        elif self._open is not None:
            events.append(("content_block_stop",
                           {"type": "content_block_stop", "index": self._index}))
        self._open = None

    def _open_block(self, events: list, kind: tuple[str, Any], block: dict) -> None:
        if kind[0] != "tool" or self._open == ("text", None):
            self._close(events)  # a tool block leaves the other tool blocks open
        self._index += 1
        if kind[0] == "tool":
            self._open_tools.append(self._index)
        self._open = kind
        events.append(("content_block_start", {"type": "content_block_start",
                                               "index": self._index, "content_block": block}))

    def _add_text(self, events: list, text: str) -> None:
        if self._open != ("text", None):
            self._open_block(events, ("text", None), {"type": "text", "text": ""})
        events.append(("content_block_delta", {"type": "content_block_delta", "index": self._index,
                                                "delta": {"type": "text_delta", "text": text}}))

    def _add_tool_call(self, events: list, call: dict) -> None:
        if not isinstance(call, dict):
            return
        key = call.get("index")
        if key is None:  # a few providers omit the index: key by id, else the open call
            open_tool = self._open[1] if self._open and self._open[0] == "tool" else 0
            key = call.get("id") or open_tool
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        if key not in self._tools:
            self._open_block(events, ("tool", key), {
                "type": "tool_use", "id": call.get("id") or _tool_use_id(),
                "name": function.get("name") or "", "input": {}})
            self._tools[key] = self._index
        elif self._tools[key] not in self._open_tools:
            raise TranslationError(f"choices[0].delta.tool_calls[{key}]: arguments arrived "
                                   "after the tool call was closed")
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            events.append(("content_block_delta", {
                "type": "content_block_delta", "index": self._tools[key],
                "delta": {"type": "input_json_delta", "partial_json": arguments}}))

    def feed(self, chunk: dict) -> list[tuple[str, dict]]:
        if self._done or not isinstance(chunk, dict):
            return []
        events: list[tuple[str, dict]] = []
        if isinstance(chunk.get("error"), dict):
            self._start(events, chunk.get("id"))
            self.error = {"type": "api_error",
                          "message": str(chunk["error"].get("message") or "upstream error")}
            self._done = True
            events.append(("error", {"type": "error", "error": self.error}))
            return events
        if isinstance(chunk.get("usage"), dict):
            (self._prompt, self._completion, self._cached,
             self._written) = _usage_from_chat(chunk["usage"])
        self._start(events, chunk.get("id"))
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            if isinstance(delta.get("content"), str) and delta["content"]:
                self._answered = True
                self._add_text(events, delta["content"])
            if isinstance(delta.get("refusal"), str) and delta["refusal"]:
                self._refused = True
                self._add_text(events, delta["refusal"])
            for call in delta.get("tool_calls") or []:
                self._add_tool_call(events, call)
            if choice.get("finish_reason"):
                self._close(events)
                self.stop_reason = STOP_REASONS.get(choice["finish_reason"], "end_turn")
        return events

    def finish(self) -> list[tuple[str, dict]]:
        if self._done:
            return []
        self._done = True
        events: list[tuple[str, dict]] = []
        self._start(events, None)
        self._close(events)
        stop_reason = self.stop_reason or "end_turn"
        if self._tools and stop_reason == "end_turn":
            stop_reason = "tool_use"
        if self._refused and not self._answered:
            stop_reason = "refusal"
        self.stop_reason = stop_reason
        events.append(("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": _anthropic_usage(self._prompt, self._completion, self._cached,
                                      self._written),
        }))
        events.append(("message_stop", {"type": "message_stop"}))
        return events
