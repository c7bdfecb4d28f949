"""Streams that end early on the gateway's side are billed for what they streamed and
recorded: one the server stops waiting for (its graceful-shutdown timeout ran out, and it
cancels the request's task), before the cancellation goes on, and one that breaks in the
middle (a provider stream that cannot be translated, or a bug of ours), which the client
sees end with an error event."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import orjson
import pytest

from gateway.proxy.app import StreamRelay
from gateway.proxy.translation import TranslationError
from governance.models import UsageRecord, VirtualKey


def scope(secret: str) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
            "headers": [(b"authorization", f"Bearer {secret}".encode()),
                        (b"content-type", b"application/json")],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}


async def stream_then_cancel(app: Any, secret: str, chunks_before_stop: int) -> list[bytes]:
    body = orjson.dumps({"model": "mock/gpt-4o-mini", "stream": True,
                         "messages": [{"role": "user", "content": "hello"}],
                         "mock": {"chunks": 50, "chunk_delay_ms": 50}})
    delivered = False
    bodies: list[bytes] = []
    enough = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await asyncio.Event().wait()  # the client stays
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            bodies.append(message["body"])
            if len(bodies) >= chunks_before_stop:
                enough.set()

    task = asyncio.ensure_future(app(scope(secret), receive, send))
    await asyncio.wait_for(enough.wait(), 10)
    task.cancel()  # what uvicorn does when its graceful-shutdown timeout runs out
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()  # the cancellation went on after the billing
    return bodies


def test_a_stream_cut_by_a_server_stop_is_billed_for_what_was_streamed(gateway, world):
    VirtualKey.objects.filter(pk=world["key"].pk).update(max_concurrent_requests=1)
    gateway.reload()
    bodies = gateway.call(stream_then_cancel(gateway.inference, world["secret"], 5), 20)

    assert b"".join(bodies).count(b"data: ") >= 5
    gateway.flush()
    [record] = UsageRecord.objects.all()
    assert (record.status_code, record.error_type, record.is_stream) == (
        503, "gateway_shutdown", True)
    assert record.completion_tokens > 0 and record.cost > 0
    assert gateway.inference.active == 0
    # Its place under the key's concurrency limit of 1 was given back.
    after = httpx.post(f"{gateway.url}/v1/chat/completions", timeout=10,
                       headers={"authorization": f"Bearer {world['secret']}"},
                       json={"model": "mock/gpt-4o-mini",
                             "messages": [{"role": "user", "content": "again"}]})
    assert after.status_code == 200


@pytest.mark.parametrize(("error", "status", "error_type"), [
    (TranslationError("choices[0].delta.tool_calls[0]: arguments arrived after the tool "
                      "call was closed"), 502, "upstream_stream_error"),
    (RuntimeError("a bug"), 500, "internal_error"),
])
def test_a_stream_that_breaks_midway_ends_with_an_error_event_and_is_billed(
        gateway, world, monkeypatch, error, status, error_type):
    feed = StreamRelay.feed
    calls = 0

    def breaks_on_the_third_chunk(relay: StreamRelay, chunk: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise error
        feed(relay, chunk)

    monkeypatch.setattr(StreamRelay, "feed", breaks_on_the_third_chunk)
    body = {"model": "mock/gpt-4o-mini", "stream": True, "mock": {"chunks": 8, "chunk_delay_ms": 20},
            "messages": [{"role": "user", "content": "hello"}]}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=10,
                      headers={"authorization": f"Bearer {world['secret']}"}) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert '"error"' in events[-1] and "[DONE]" not in events[-1]
    gateway.flush()
    [record] = UsageRecord.objects.all()
    assert (record.status_code, record.error_type) == (status, error_type)
    assert record.completion_tokens > 0 and record.cost > 0
