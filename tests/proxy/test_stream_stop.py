"""Requests that end early on the gateway's side are billed for what they used and
recorded. A stream the server stops waiting for (its graceful-shutdown timeout ran out, and
it cancels the request's task), before the cancellation goes on; a stream that breaks in
the middle (a provider stream that cannot be translated, or a bug of ours), which the client
sees end with an error event; a request cut while its provider works on it, for the prompt
it sent."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import orjson
import pytest

from gateway.proxy.app import StreamRelay
from gateway.proxy.translation import TranslationError
from governance.engine import Governor
from governance.models import UsageRecord, VirtualKey
from tests.proxy.conftest import GatewayServer


def scope(secret: str) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
            "headers": [(b"authorization", f"Bearer {secret}".encode()),
                        (b"content-type", b"application/json")],
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}


def client_receive(body: bytes) -> Any:
    """ASGI ``receive`` of a client that sends ``body`` and then stays connected."""
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await asyncio.Event().wait()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def stream_then_cancel(app: Any, secret: str,
                             chunks_before_stop: int) -> list[dict[str, Any]]:
    body = orjson.dumps({"model": "mock/gpt-4o-mini", "stream": True,
                         "messages": [{"role": "user", "content": "hello"}],
                         "mock": {"chunks": 50, "chunk_delay_ms": 50}})
    receive = client_receive(body)
    bodies: list[dict[str, Any]] = []
    enough = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message)
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

    assert b"".join(message["body"] for message in bodies).count(b"data: ") >= 5
    last = bodies[-1]  # the client is told, and its stream ends
    assert last["more_body"] is False and b'"code":"gateway_shutdown"' in last["body"]
    gateway.flush()
    [record] = UsageRecord.objects.all()
    assert (record.status_code, record.error_type, record.is_stream) == (
        503, "gateway_shutdown", True)
    assert record.completion_tokens > 0 and record.cost > 0
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
    body = {"model": "mock/gpt-4o-mini", "stream": True,
            "mock": {"chunks": 8, "chunk_delay_ms": 20},
            "messages": [{"role": "user", "content": "hello"}]}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=10,
                      headers={"authorization": f"Bearer {world['secret']}"}) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    error = orjson.loads(events[-1].removeprefix("data: "))["error"]
    assert error["code"] == error_type
    assert ("Provider 'mock'" in error["message"]) is (status == 502)  # ours: not its fault
    gateway.flush()
    [record] = UsageRecord.objects.all()
    assert (record.status_code, record.error_type) == (status, error_type)
    assert record.completion_tokens > 0 and record.cost > 0


def test_a_server_stop_waits_for_a_cut_stream_to_be_recorded(world, monkeypatch):
    """Through uvicorn's own shutdown: after its graceful wait it cancels the stream and runs
    the lifespan shutdown at once; the final flush waits for the stream to settle, even a
    slow settle (a Redis round trip, say)."""
    settle = Governor.settle

    async def slow_settle(self, *args, **kwargs):
        await asyncio.sleep(0.3)
        return await settle(self, *args, **kwargs)

    monkeypatch.setattr(Governor, "settle", slow_settle)
    server = GatewayServer(graceful_shutdown_s=0.5).start()
    body = {"model": "mock/gpt-4o-mini", "stream": True,
            "messages": [{"role": "user", "content": "hello"}],
            "mock": {"chunks": 100, "chunk_delay_ms": 50}}
    received: list[str] = []
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=20,
                      headers={"authorization": f"Bearer {world['secret']}"}) as response:
        lines = response.iter_lines()
        received += [next(lines) for _ in range(6)]
        server.stop()  # returns once uvicorn and its lifespan shutdown are done
        with contextlib.suppress(httpx.HTTPError):
            received += list(lines)
    assert not server.thread.is_alive()
    [record] = UsageRecord.objects.all()  # written by the shutdown flush
    assert (record.status_code, record.error_type) == (503, "gateway_shutdown")
    assert record.completion_tokens > 0
    assert any("gateway_shutdown" in line for line in received)


async def request_then_cancel(app: Any, secret: str, mock: Any, message: str | None = None
                              ) -> None:
    body = orjson.dumps({"model": "mock/gpt-4o-mini",
                         "messages": [{"role": "user", "content": "x" * 400}],
                         "mock": {"delay_ms": 5000}})
    receive = client_receive(body)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    task = asyncio.ensure_future(app(scope(secret), receive, send))
    for _ in range(500):  # until the provider has the request
        if mock.requests:
            break
        await asyncio.sleep(0.01)
    assert mock.requests and not sent  # nothing is answered before the stop
    task.cancel(message)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # uvicorn's own cut at its shutdown timeout ends quietly (it would log a traceback);
    # any other cancellation goes on
    assert task.cancelled() is (message is None)
    # then the client is told why (a server would otherwise answer a bare 500)
    assert sent[0]["status"] == 503
    assert orjson.loads(sent[1]["body"])["error"]["code"] == "gateway_shutdown"


def test_a_request_cut_while_its_provider_works_on_it_is_billed_for_its_prompt(gateway,
                                                                              world):
    VirtualKey.objects.filter(pk=world["key"].pk).update(max_concurrent_requests=1)
    gateway.reload()
    gateway.call(request_then_cancel(gateway.inference, world["secret"], world["mock"]), 20)
    gateway.flush()
    [record] = UsageRecord.objects.all()
    assert (record.status_code, record.error_type, record.is_stream) == (
        503, "gateway_shutdown", False)
    assert record.prompt_tokens >= 100 and record.completion_tokens == 0  # 400 characters
    assert record.cost > 0
    after = httpx.post(f"{gateway.url}/v1/chat/completions", timeout=10,
                       headers={"authorization": f"Bearer {world['secret']}"},
                       json={"model": "mock/gpt-4o-mini",
                             "messages": [{"role": "user", "content": "again"}]})
    assert after.status_code == 200  # the concurrency slot was given back


def test_uvicorns_cut_at_its_shutdown_timeout_ends_with_one_line_not_a_traceback(
        gateway, world, caplog):
    caplog.set_level("WARNING", logger="gateway.proxy.app")
    gateway.call(request_then_cancel(gateway.inference, world["secret"], world["mock"],
                                     "Task cancelled, timeout graceful shutdown exceeded"), 20)
    [line] = [record for record in caplog.records if record.name == "gateway.proxy.app"]
    assert "cut at the shutdown timeout" in line.getMessage() and line.exc_info is None
    gateway.flush()
    [record] = UsageRecord.objects.all()
    assert (record.status_code, record.error_type) == (503, "gateway_shutdown")


async def answer_then_cancel(app: Any, secret: str, *, client_reads: bool) -> None:
    """A non-stream request cancelled once its answer is being sent: to a client that does
    not read (the send never completes), or to one that does, while the gateway settles."""
    body = orjson.dumps({"model": "mock/gpt-4o-mini",
                         "messages": [{"role": "user", "content": "hello"}]})
    receive = client_receive(body)
    answering = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            answering.set()
            if not client_reads:
                await asyncio.Event().wait()

    task = asyncio.ensure_future(app(scope(secret), receive, send))
    await asyncio.wait_for(answering.wait(), 10)
    await asyncio.sleep(0.05)  # into the send that never ends, or the (slowed) settlement
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()


@pytest.mark.parametrize("client_reads", [False, True], ids=["while sending", "while settling"])
def test_an_answer_cut_by_a_server_stop_is_still_recorded_with_its_usage(
        gateway, world, monkeypatch, client_reads):
    if client_reads:
        settle = Governor.settle

        async def slow_settle(self, *args, **kwargs):
            await asyncio.sleep(0.3)
            return await settle(self, *args, **kwargs)

        monkeypatch.setattr(Governor, "settle", slow_settle)
    gateway.call(answer_then_cancel(gateway.inference, world["secret"],
                                    client_reads=client_reads), 20)
    gateway.flush()
    [record] = UsageRecord.objects.all()
    assert (record.status_code, record.error_type) == (200, "")
    assert record.completion_tokens > 0 and record.cost > 0
