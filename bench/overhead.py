"""The gateway's own CPU cost per request, in one process, with no network.

    python -m bench.overhead [--requests 20000] [--concurrency 32] [--stream] [--profile]

``make bench``'s wrk runs share two cores between the load generator, the mock and the proxy,
so their figures move by a third from run to run. This one drives the ASGI application
(``gateway.asgi.application``: the Channels router, the proxy, governance with the
benchmark's seed, the embedded usage flush) directly with ASGI messages, and answers every
upstream call from a canned in-memory response instead of a socket. What is left is the
Python work the gateway adds, measured as process CPU (all threads: the flush included) per
request, beside a baseline: ``bench/passthrough.py``'s bare ASGI app around the same canned
upstream. The requests run in ten rounds; the median round and the fastest
(the least disturbed by other processes on the machine) are printed. ``--profile`` prints
the cProfile top of the gateway run: 45 lines by own time; ``PROFILE_SORT=cumulative`` and
``PROFILE_TOP=80`` change that.

It is a development tool for the data plane's hot path; ``bench/proxy.py`` remains the
measurement the goals are stated in.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from bench.passthrough import Passthrough

MOCK_URL = "http://upstream.invalid"
PROMPT = [{"role": "user", "content": "Say hello in one short sentence."}]
CHAT_RESPONSE = orjson.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant",
                                         "content": "This is a deterministic reply."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 8, "completion_tokens": 14, "total_tokens": 22}})
STREAM_CHUNKS = [
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{"content":"word "},"finish_reason":null}]}\n\n'
] * 8 + [
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",'
    b'"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":8,"total_tokens":16}}\n\n',
    b"data: [DONE]\n\n",
]
UPSTREAM_HEADERS = (("x-request-id", "req-1"),
                    ("openai-processing-ms", "1"), ("date", "Mon, 23 Nov 2026 00:00:00 GMT"))


class CannedContent:
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = list(chunks)

    async def readany(self) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""

    async def iter_any(self) -> AsyncIterator[bytes]:
        while self._chunks:
            yield self._chunks.pop(0)


class CannedResponse:
    """What the proxy reads of an ``aiohttp.ClientResponse``."""

    def __init__(self, stream: bool) -> None:
        self.status = 200
        self.content_type = "text/event-stream" if stream else "application/json"
        self.headers = CIMultiDictProxy(CIMultiDict(
            [("content-type", self.content_type), *UPSTREAM_HEADERS]))
        self.raw_headers = tuple((name.encode(), value.encode())
                                 for name, value in self.headers.items())
        self.content = CannedContent(STREAM_CHUNKS if stream else [CHAT_RESPONSE])
        self.connection = None  # the body is already here: no socket timeouts to adjust
        self._body = b"".join(STREAM_CHUNKS) if stream else CHAT_RESPONSE

    async def read(self) -> bytes:
        return self._body

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


class CannedSession:
    """Stands in for the pooled ``aiohttp.ClientSession``: every call gets a canned answer
    after one event-loop turn (as a socket read would take)."""

    async def post(self, url: str, *, data: bytes, headers: Any, timeout: Any = None,
                   allow_redirects: bool = True) -> CannedResponse:
        await asyncio.sleep(0)
        return CannedResponse(b'"stream":true' in data)

    @contextlib.asynccontextmanager
    async def request(self, method: str, url: str, *, data: bytes,
                      headers: Any) -> AsyncIterator[CannedResponse]:
        response = await self.post(url, data=data, headers=headers)
        try:
            yield response
        finally:
            response.release()

    async def close(self) -> None:
        pass


def scope_for(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}


async def drive(app: Callable[..., Awaitable[None]], body: bytes,
                headers: list[tuple[bytes, bytes]], requests: int, concurrency: int) -> int:
    """Send ``requests`` requests, ``concurrency`` at a time; returns the non-200 count."""
    failures = 0

    async def one() -> None:
        nonlocal failures
        delivered = False
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:
                await asyncio.Event().wait()  # the client stays connected
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope_for("/v1/chat/completions", headers), receive, send)
        if status != 200:
            failures += 1

    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failures


def baseline_app() -> Any:
    """``bench/passthrough.py``'s application itself, around the same canned upstream."""
    app = Passthrough(MOCK_URL)
    app.session = CannedSession()  # type: ignore[assignment]
    return app


def measure(label: str, app: Any, body: bytes, headers: list[tuple[bytes, bytes]],
            requests: int, concurrency: int, profile: bool = False,
            rounds: int = 10) -> tuple[float, float]:
    """(median, fastest) µs of process CPU per request over ``rounds`` rounds."""
    loop = asyncio.get_event_loop()
    loop.run_until_complete(drive(app, body, headers, min(requests, 2000), concurrency))
    profiler = cProfile.Profile() if profile else None
    per_round = max(requests // rounds, 1)
    cpu_us: list[float] = []
    failures = 0
    if profiler:
        profiler.enable()
    for _ in range(rounds):
        cpu_start = time.process_time()
        failures += loop.run_until_complete(drive(app, body, headers, per_round, concurrency))
        cpu_us.append((time.process_time() - cpu_start) / per_round * 1e6)
    if profiler:
        profiler.disable()
    median, fastest = statistics.median(cpu_us), min(cpu_us)
    print(f"{label:<10} median {median:7.1f}  fastest {fastest:7.1f} µs CPU/request"
          f"  failures {failures}")
    if profiler:
        stats = pstats.Stats(profiler).sort_stats(os.environ.get("PROFILE_SORT", "tottime"))
        stats.print_stats(int(os.environ.get("PROFILE_TOP", "45")))
    return median, fastest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile the gateway run")
    args = parser.parse_args(argv)

    state_dir = tempfile.mkdtemp(prefix="gateway-overhead-")
    os.environ.update({"GATEWAY_STATE_DIR": state_dir, "DEBUG": "false",
                       "LOG_LEVEL": "WARNING", "DJANGO_SETTINGS_MODULE": "gateway.settings"})
    for name in ("REDIS_URL", "DATABASE_URL"):
        os.environ.pop(name, None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from bench.seed import seed_gateway

    seeded = seed_gateway(MOCK_URL)
    from gateway.asgi import application, inference_application
    from gateway.proxy.lifecycle import start_data_plane, stop_data_plane

    payload: dict[str, Any] = {"model": seeded["model"], "messages": PROMPT, "max_tokens": 64}
    if args.stream:
        payload.update(stream=True, stream_options={"include_usage": True})
    body = orjson.dumps(payload)
    headers = [(b"host", b"127.0.0.1:8000"),
               (b"authorization", f"Bearer {seeded['virtual_key']}".encode()),
               (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(start_data_plane(inference_application))
    assert inference_application.state is not None
    session = inference_application.state.session
    inference_application.state.session = CannedSession()  # type: ignore[assignment]
    loop.run_until_complete(session.close())
    print(f"{args.requests} requests, {args.concurrency} at a time, "
          f"{'stream' if args.stream else 'non-stream'}")
    baseline = measure("baseline", baseline_app(), body, headers, args.requests, args.concurrency)
    gateway = measure("gateway", application, body, headers, args.requests, args.concurrency,
                      args.profile)
    print(f"added by the gateway: median {gateway[0] - baseline[0]:.1f}, "
          f"fastest {gateway[1] - baseline[1]:.1f} µs CPU/request")
    loop.run_until_complete(stop_data_plane(inference_application))
    return 0


if __name__ == "__main__":
    sys.exit(main())
