"""A stream the server stops waiting for (its graceful-shutdown timeout ran out, and it
cancels the request's task) is still billed for what was streamed, released from the
ledger, and recorded, before the cancellation goes on."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import orjson

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
