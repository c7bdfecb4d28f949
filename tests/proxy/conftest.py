"""End-to-end fixtures: the real ASGI application (Channels router, data plane, Django) under
uvicorn in a background thread, talking to the project's mock upstream over real sockets.

Tests build their world with factories (committed: ``transactional_db``), then start the
server, whose lifespan builds the governance snapshot from the database like production.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from bench.mock_upstream import MockUpstream
from gateway import config_version
from gateway.secrets import digest
from tests.factories import (
    CustomerFactory,
    ProviderConfigFactory,
    ProviderFactory,
    ProviderKeyFactory,
    TeamFactory,
    VirtualKeyFactory,
)

SECRET = "sk-gw-" + "E2eTestKey0123456789abcdefghijk"[:32]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GatewayServer:
    """uvicorn serving ``gateway.asgi.application`` in a thread with its own event loop."""

    def __init__(self, graceful_shutdown_s: float = 10) -> None:
        from gateway.asgi import application, inference_application

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.inference = inference_application
        config = uvicorn.Config(application, host="127.0.0.1", port=self.port, lifespan="on",
                                log_level="warning", loop="asyncio", http="h11",
                                timeout_graceful_shutdown=graceful_shutdown_s)
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve())
        self.loop.close()

    def start(self) -> GatewayServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    @property
    def runtime(self) -> Any:
        return self.inference.state.runtime

    def call(self, coroutine: Any, timeout: float = 10) -> Any:
        """Run ``coroutine`` on the server's loop and wait for its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def reload(self) -> None:
        """Bump the config version and wait until the server swapped its snapshot."""
        version = config_version.bump_now()
        deadline = time.monotonic() + 5
        while self.runtime.snapshot.version != version:
            if time.monotonic() > deadline:
                raise RuntimeError("snapshot was not refreshed")
            time.sleep(0.01)

    def flush(self) -> int:
        """Write usage records, once every request in flight has settled."""
        deadline = time.monotonic() + 5
        while self.inference.active and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.call(self.runtime.flush())

    def events(self) -> list[Any]:
        sink = self.runtime.sink
        with sink._lock:
            return list(sink._queue)


@pytest.fixture(scope="session")
def mock_upstream() -> Iterator[Any]:
    mock = MockUpstream.start_in_thread()
    yield mock
    mock.stop()


@pytest.fixture
def mock(mock_upstream: Any) -> Any:
    mock_upstream.reset()
    return mock_upstream


@pytest.fixture
def world(transactional_db: None, mock: Any) -> dict[str, Any]:
    """A customer → team → key with access to an OpenAI-kind and an Anthropic-kind provider,
    both pointing at the mock."""
    customer = CustomerFactory(name="acme")
    team = TeamFactory(name="research", customer=customer)
    openai = ProviderFactory(name="mock", kind="openai", base_url=f"{mock.url}/v1",
                             max_retries=2, backoff_initial_ms=1, backoff_max_ms=5)
    openai_key = ProviderKeyFactory(provider=openai, name="main", plain_value="mock-ok",
                                    weight=1.0)
    claude = ProviderFactory(name="claude", kind="anthropic", base_url=mock.url,
                             max_retries=1, backoff_initial_ms=1, backoff_max_ms=5)
    claude_key = ProviderKeyFactory(provider=claude, name="main", plain_value="mock-ok")
    key = VirtualKeyFactory(name="app", team=team, secret_hash=digest(SECRET))
    ProviderConfigFactory(virtual_key=key, provider=openai, allowed_models=["*"],
                          allow_all_keys=True, weight=1.0)
    ProviderConfigFactory(virtual_key=key, provider=claude, allowed_models=["*"],
                          allow_all_keys=True, weight=None)
    return {"customer": customer, "team": team, "key": key, "secret": SECRET,
            "openai": openai, "openai_key": openai_key, "claude": claude,
            "claude_key": claude_key, "mock": mock}


@pytest.fixture
def gateway(world: dict[str, Any]) -> Iterator[GatewayServer]:
    server = GatewayServer().start()
    yield server
    server.stop()
