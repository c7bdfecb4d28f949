"""Provider adapters (pure): where a request goes, with which credentials, and how usage is
read from what comes back. One table per provider kind, no classes to subclass.

- ``openai`` / ``openai_compatible``: ``{base_url}/chat/completions`` etc. (the base URL
  includes ``/v1``), ``Authorization: Bearer``; streams get ``stream_options.include_usage``.
- ``azure``: ``{base_url}/openai/deployments/{model}/{path}?api-version=...``, ``api-key``.
- ``anthropic``: ``{base_url}/v1/messages``, ``x-api-key`` and ``anthropic-version``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson

from pricing.cost import Usage

ANTHROPIC_VERSION = "2023-06-01"
# Sent to providers in place of aiohttp's own ("Python/3.x aiohttp/3.x"). Set on each
# request: the session's skip_auto_headers, the other way to leave that out, rebuilds a
# header dictionary on every request.
USER_AGENT = "llm-gateway"
OPENAI_KINDS = frozenset({"openai", "openai_compatible", "azure"})
OPENAI_PATHS = {"chat": "chat/completions", "completions": "completions",
                "embeddings": "embeddings"}
# Client headers worth passing on to Anthropic (feature flags), never credentials.
ANTHROPIC_PASS_HEADERS = ("anthropic-version", "anthropic-beta")


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    url: str
    headers: dict[str, str]


class UnsupportedOperation(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Exchange:
    """How a client's operation reaches one kind of provider, decided once per candidate
    (before it is admitted): what the provider is asked for, whether it speaks Anthropic's
    dialect, and whether requests, responses and streams are translated on the way."""

    upstream_operation: str
    anthropic_upstream: bool
    translated: bool
    # The output cap's name in a translated request: OpenAI's own API has replaced
    # max_tokens (which its reasoning models refuse) with max_completion_tokens; compatible
    # servers and Azure's older API versions know max_tokens only.
    max_tokens_field: str = "max_tokens"


def _exchange_table() -> dict[tuple[str, str], Exchange]:
    table: dict[tuple[str, str], Exchange] = {
        ("messages", "anthropic"): Exchange("messages", True, translated=False),
        ("chat", "anthropic"): Exchange("messages", True, translated=True),
    }
    for kind in OPENAI_KINDS:
        for operation in OPENAI_PATHS:
            table[operation, kind] = Exchange(operation, False, translated=False)
        table["messages", kind] = Exchange(
            "chat", False, translated=True,
            max_tokens_field="max_completion_tokens" if kind == "openai" else "max_tokens")
    return table


EXCHANGES = _exchange_table()


def exchange_for(operation: str, kind: str) -> Exchange:
    """The exchange for a client ``operation`` (chat, completions, embeddings, messages) on a
    provider of ``kind``; :class:`UnsupportedOperation` when that provider cannot serve it."""
    exchange = EXCHANGES.get((operation, kind))
    if exchange is None:
        raise UnsupportedOperation(f"provider kind {kind} does not serve {operation}")
    return exchange


def upstream_request(kind: str, base_url: str, api_version: str, api_key: str,
                     operation: str, model: str, request_id: str,
                     client_headers: Mapping[str, str]) -> UpstreamRequest:
    """URL and headers for ``operation`` (chat, completions, embeddings, messages)."""
    base = base_url.rstrip("/")
    headers = {"content-type": "application/json", "user-agent": USER_AGENT,
               "x-request-id": request_id}
    if kind == "anthropic":
        if operation != "messages":
            raise UnsupportedOperation(f"provider kind anthropic does not serve {operation}")
        headers["x-api-key"] = api_key
        headers["anthropic-version"] = ANTHROPIC_VERSION
        for name in ANTHROPIC_PASS_HEADERS:
            value = client_headers.get(name)
            if value:
                headers[name] = value
        return UpstreamRequest(f"{base}/v1/messages", headers)
    path = OPENAI_PATHS.get(operation)
    if path is None:
        raise UnsupportedOperation(f"provider kind {kind} does not serve {operation}")
    if kind == "azure":
        headers["api-key"] = api_key
        version = quote(api_version or "2024-10-21", safe="")
        return UpstreamRequest(
            f"{base}/openai/deployments/{quote(model, safe='')}/{path}?api-version={version}",
            headers)
    headers["authorization"] = f"Bearer {api_key}"
    return UpstreamRequest(f"{base}/{path}", headers)


def token_count(value: Any) -> int:
    """A token count as a provider reports it: a positive integer, anything else is 0."""
    return value if type(value) is int and value > 0 else 0  # not bool, not a subclass


def openai_usage(usage: Any) -> Usage | None:
    """Usage from an OpenAI ``usage`` object (chat, completions, embeddings)."""
    if not isinstance(usage, dict):
        return None
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    cached = (token_count(prompt_details.get("cached_tokens"))
              if isinstance(prompt_details, dict) else 0)
    reasoning = (token_count(completion_details.get("reasoning_tokens"))
                 if isinstance(completion_details, dict) else 0)
    prompt = token_count(usage.get("prompt_tokens"))
    completion = token_count(usage.get("completion_tokens"))
    if not prompt and not completion:
        total = token_count(usage.get("total_tokens"))
        prompt = total
    return Usage(input_tokens=prompt, cached_read_tokens=min(cached, prompt),
                 output_tokens=completion, reasoning_tokens=reasoning)


def anthropic_usage(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    return Usage.from_anthropic(
        input_tokens=token_count(usage.get("input_tokens")),
        output_tokens=token_count(usage.get("output_tokens")),
        cache_read_input_tokens=token_count(usage.get("cache_read_input_tokens")),
        cache_creation_input_tokens=token_count(usage.get("cache_creation_input_tokens")),
    )


def merge_usage(current: Usage | None, update: Usage | None) -> Usage | None:
    """Streams report usage in pieces (Anthropic: input at the start, output at the end):
    keep the largest value seen for each field."""
    if update is None:
        return current
    if current is None:
        return update
    return Usage(
        input_tokens=max(current.input_tokens, update.input_tokens),
        cached_read_tokens=max(current.cached_read_tokens, update.cached_read_tokens),
        cache_write_tokens=max(current.cache_write_tokens, update.cache_write_tokens),
        output_tokens=max(current.output_tokens, update.output_tokens),
        reasoning_tokens=max(current.reasoning_tokens, update.reasoning_tokens),
    )


def estimate_tokens(text_length: int) -> int:
    """Rough token count of generated text when a stream ended without usage (4 chars each)."""
    return (text_length + 3) // 4 if text_length > 0 else 0


# Where prompt text lies in a request body, at the top and inside messages and their parts.
PROMPT_FIELDS = ("messages", "system", "prompt", "input")
TEXT_FIELDS = frozenset({"content", "text", "system", "input", "prompt", "arguments",
                         "messages"})
TEXT_MAX_DEPTH = 8


def prompt_length(body: Mapping[str, Any]) -> int:
    """Characters of prompt text in a chat, completion, embedding or messages body."""
    total = 0
    for name in PROMPT_FIELDS:
        value = body.get(name)
        if value is None:
            continue
        if name == "messages" and type(value) is list:
            for message in value:  # the common message first: a role and a string content
                content = message.get("content") if type(message) is dict else None
                if type(content) is str and len(message) == 2 and "role" in message:
                    total += len(content)
                else:
                    total += _text_length(message, 2)
        else:
            total += _text_length(value, 1)
    return total


def _text_length(value: Any, depth: int) -> int:
    """Characters of the strings in ``value``, through lists and the :data:`TEXT_FIELDS` of
    objects, down to :data:`TEXT_MAX_DEPTH`."""
    if depth > TEXT_MAX_DEPTH:
        return 0
    if isinstance(value, str):
        return len(value)
    total = 0
    if isinstance(value, list):
        for item in value:
            total += _text_length(item, depth + 1)
    elif isinstance(value, dict):
        for name, item in value.items():  # a message has few fields: cheaper than a lookup each
            if name in TEXT_FIELDS:
                total += _text_length(item, depth + 1)
    return total


def answer_length(data: Mapping[str, Any]) -> int:
    """Characters of generated output in a non-streaming answer (OpenAI chat or completion
    choices, Anthropic content blocks), tool call arguments included: what a response
    without usage is billed for, as a stream without usage is."""
    total = 0
    choices = data.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            message = choice.get("message")
            if isinstance(message, dict):
                total += _text_length(message.get("content"), 1)
                for call in message.get("tool_calls") or ():
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict):
                        total += _text_length(function.get("arguments"), 1)
            total += _text_length(choice.get("text"), 1)
    blocks = data.get("content")
    if isinstance(blocks, list):
        for block in blocks:
            if not isinstance(block, dict):
                continue
            total += _text_length(block.get("text"), 1) + _text_length(block.get("thinking"), 1)
            if block.get("type") == "tool_use":
                total += len(orjson.dumps(block.get("input")))
    return total
