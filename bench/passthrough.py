"""Baseline (b) of ``make bench``: the thinnest proxy this stack allows.

    python -m bench.passthrough --upstream http://127.0.0.1:9000 --port 9001

A bare ASGI application (no framework) under uvicorn (uvloop, httptools, one worker, no
access log) that forwards each request's method, path, query, body and headers to the
upstream with one pooled ``aiohttp.ClientSession`` created at lifespan startup, and returns
the status and body; ``text/event-stream`` responses are streamed through chunk by chunk.
No parsing, no authentication, no governance: what is left is the cost of receiving,
forwarding and answering, the practical limit of any gateway on the same stack.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Not forwarded in either direction: hop-by-hop and framing headers.
HOP_HEADERS = frozenset({"host", "connection", "keep-alive", "transfer-encoding",
                         "content-length", "te", "trailer", "upgrade", "proxy-connection"})
HOP_HEADERS_BYTES = frozenset(name.encode() for name in HOP_HEADERS)
# uvicorn writes its own date and server headers.
DROPPED_RESPONSE_HEADERS = HOP_HEADERS_BYTES | {b"date", b"server"}


class Passthrough:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=None),
                    auto_decompress=False, timeout=aiohttp.ClientTimeout(total=600),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        headers = {name.decode("latin-1"): value.decode("latin-1")
                   for name, value in scope["headers"] if name not in HOP_HEADERS_BYTES}
        url = self.upstream + scope["path"]
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        assert self.session is not None, "lifespan startup did not run"
        started = False
        try:
            async with self.session.request(scope["method"], url, data=body,
                                            headers=headers) as upstream:
                response_headers = [
                    (name.lower(), value) for name, value in upstream.raw_headers
                    if name.lower() not in DROPPED_RESPONSE_HEADERS
                ]
                if upstream.content_type == "text/event-stream":
                    await send({"type": "http.response.start", "status": upstream.status,
                                "headers": response_headers})
                    started = True
                    async for chunk in upstream.content.iter_any():
                        await send({"type": "http.response.body", "body": chunk,
                                    "more_body": True})
                    await send({"type": "http.response.body", "body": b""})
                    return
                payload = await upstream.read()
        except aiohttp.ClientError as exc:
            if started:  # the stream broke: end it, the client sees a short stream
                await send({"type": "http.response.body", "body": b""})
                return
            message = f"upstream error: {exc}".encode()
            await send({"type": "http.response.start", "status": 502,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": message})
            return
        response_headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": upstream.status,
                    "headers": response_headers})
        await send({"type": "http.response.body", "body": payload})


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Bare aiohttp pass-through proxy (bench b).")
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9000")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args(argv)
    uvicorn.run(Passthrough(args.upstream), host=args.host, port=args.port, loop="uvloop",
                http="httptools", workers=1, access_log=False, log_level="warning",
                lifespan="on")


if __name__ == "__main__":
    main()
