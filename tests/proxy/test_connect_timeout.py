"""The connect timeout, end to end: a provider whose listening socket never completes the
TCP handshake (its accept queue is full, so the kernel drops further SYNs) is given up on
after ``connect_timeout_ms`` per attempt, long before the first-byte or total timeouts."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from gateway.models import Provider
from governance.models import UsageRecord


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))  # fills the accept queue
    try:
        yield port
    finally:
        filler.close()
        server.close()


def test_a_provider_that_never_accepts_times_out_on_connect(gateway, world, unanswered_port):
    Provider.objects.filter(name="mock").update(
        base_url=f"http://127.0.0.1:{unanswered_port}/v1", connect_timeout_ms=300,
        first_byte_timeout_ms=30_000, total_timeout_ms=60_000, max_retries=1,
        backoff_initial_ms=1, backoff_max_ms=2)
    gateway.reload()

    started = time.monotonic()
    response = httpx.post(f"{gateway.url}/v1/chat/completions", timeout=30,
                          headers={"authorization": f"Bearer {world['secret']}"},
                          json={"model": "mock/gpt-4o-mini",
                                "messages": [{"role": "user", "content": "hello"}]})
    elapsed = time.monotonic() - started

    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "upstream_timeout"
    assert "connect 300 ms" in error["message"]
    assert 0.6 <= elapsed < 5  # two attempts of 300 ms each, nowhere near 30 s
    gateway.flush()
    [record] = UsageRecord.objects.all()
    assert (record.status_code, record.error_type, record.provider) == (
        504, "upstream_timeout", "mock")
