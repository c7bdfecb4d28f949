"""One Redis connection shared by every request of a worker process, pipelined implicitly.

    redis = RedisMultiplexer("redis://:secret@10.0.0.5:6379/2", timeout_s=5.0)
    reply = await redis.execute("INCRBY", "counter", 5)
    reply = await redis.evalsha(sha, source, keys, args)  # NOSCRIPT: sent once as EVAL
    await redis.aclose()

Commands issued in the same turn of the event loop leave in one write, and replies are
matched to them in order (Redis answers a connection's commands in the order it received
them). Under load, the admits and settles of many requests share one round trip and one
system call, without one request waiting for another: a command is written in the turn it
was issued. redis-py's pooled client takes a connection from the pool for every command,
wraps the round trip in a timeout task and parses the reply in Python: measured with
``python -m bench.redis_calls`` (the ledger's admit and settle scripts), 72 µs of CPU per
call at 32 concurrent callers against 15 µs here, and 166 against 55 µs from one caller.
Never send a blocking command (``BLPOP``, ``XREAD BLOCK``) through it: every command
behind it would wait.

What it does not do, by design:

- No retry. A command whose connection breaks while it is on its way may have run; running
  it again could count a request twice. Its caller gets ``redis.exceptions.ConnectionError``
  (or ``TimeoutError``); the next command opens a new connection.
- Replies are the RESP2 values hiredis gives (``bytes``, ``int``, lists, ``None``); an error
  reply raises ``redis.exceptions.ResponseError``.
- ``redis://`` only (host, port, database, user name, password). TLS (``rediss://``) and
  Unix sockets keep redis-py's client (:func:`governance.ledger.ledger_from_url`).
- ``timeout_s`` bounds the wait for each reply: a connection that leaves a command
  unanswered that long is closed, failing everything still waiting on it with
  ``redis.exceptions.TimeoutError``.

No Django import: it runs in the data plane.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.exceptions
from redis.connection import parse_url

_INCOMPLETE = object()  # hiredis's answer when no whole reply is buffered yet


def multiplexer_for(url: str, *, timeout_s: float, connect_timeout_s: float
                    ) -> RedisMultiplexer | None:
    """A multiplexer for a ``redis://`` URL; None for the URLs it does not speak (TLS, Unix
    sockets), whose callers keep redis-py's client."""
    if not url.startswith("redis://"):
        return None
    return RedisMultiplexer(url, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s)


class RedisMultiplexer:
    def __init__(self, url: str, *, timeout_s: float = 5.0,
                 connect_timeout_s: float = 5.0) -> None:
        if not url.startswith("redis://"):
            raise ValueError(f"RedisMultiplexer speaks redis:// only, not {url.split(':')[0]}")
        params = parse_url(url)
        self.host: str = params.get("host") or "localhost"
        self.port: int = int(params.get("port") or 6379)
        self.db: int = int(params.get("db") or 0)
        self._username: str | None = params.get("username")
        self._password: str | None = params.get("password")
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._protocol: _RedisProtocol | None = None
        self._connecting: asyncio.Future[_RedisProtocol] | None = None
        self._closed = False

    async def execute(self, *args: Any) -> Any:
        """Send one command; its reply, or ``ResponseError`` for an error reply."""
        protocol = await self._connected()
        return await protocol.send(hiredis.pack_command(args))

    async def execute_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send ``commands`` together (one write); their replies in order. An error reply
        or a lost connection raises the first error once every reply is in (the commands
        before and after it may have run)."""
        protocol = await self._connected()
        pack = hiredis.pack_command
        futures = [protocol.send(pack(tuple(command))) for command in commands]
        replies: list[Any] = []
        error: redis.exceptions.RedisError | None = None
        try:
            for future in futures:
                try:
                    replies.append(await future)
                except redis.exceptions.RedisError as exc:
                    error = error or exc
                    replies.append(exc)
        finally:
            for future in futures:  # cancelled midway: the replies still due are dropped
                future.cancel()
        if error is not None:
            raise error
        return replies

    async def evalsha(self, sha: str, source: str, keys: Sequence[Any],
                      args: Sequence[Any]) -> Any:
        """Run a Lua script by its SHA-1; when Redis does not know it (a restart, ``SCRIPT
        FLUSH``), once with ``EVAL``, which also loads it for the calls that follow."""
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except redis.exceptions.ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.execute("EVAL", source, len(keys), *keys, *args)

    async def aclose(self) -> None:
        self._closed = True  # an attempt under way ends by itself, refused (``_attempt``)
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.abort(redis.exceptions.ConnectionError("the Redis client was closed"))

    async def _connected(self) -> _RedisProtocol:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        return protocol

    async def _connect(self) -> _RedisProtocol:
        """The connection, opened by the first caller that finds none; callers arriving
        meanwhile wait for that same attempt and share its outcome (one attempt at a time,
        and none waits longer than ``connect_timeout_s`` for its own)."""
        if self._closed:
            raise redis.exceptions.ConnectionError("the Redis client was closed")
        attempt = self._connecting
        if attempt is None:
            attempt = self._connecting = asyncio.ensure_future(self._attempt())
            attempt.add_done_callback(self._attempt_done)
        return await asyncio.shield(attempt)

    def _attempt_done(self, attempt: asyncio.Future[_RedisProtocol]) -> None:
        if self._connecting is attempt:
            self._connecting = None
        if not attempt.cancelled():
            attempt.exception()  # retrieved: the callers that waited got it already

    async def _attempt(self) -> _RedisProtocol:
        try:
            protocol = await asyncio.wait_for(self._open(), self.connect_timeout_s)
        except TimeoutError as exc:
            raise redis.exceptions.TimeoutError(
                f"connecting to Redis at {self.host}:{self.port} timed out") from exc
        except OSError as exc:
            raise redis.exceptions.ConnectionError(
                f"cannot connect to Redis at {self.host}:{self.port}: {exc}") from exc
        if self._closed:  # closed while connecting
            protocol.abort(redis.exceptions.ConnectionError("the Redis client was closed"))
            raise redis.exceptions.ConnectionError("the Redis client was closed")
        self._protocol = protocol
        return protocol

    async def _open(self) -> _RedisProtocol:
        loop = asyncio.get_running_loop()
        _transport, protocol = await loop.create_connection(
            lambda: _RedisProtocol(loop, self.timeout_s), self.host, self.port)
        try:
            if self._password is not None:
                credentials = ((self._username, self._password) if self._username
                               else (self._password,))
                try:
                    await protocol.send(hiredis.pack_command(("AUTH", *credentials)))
                except redis.exceptions.ResponseError as exc:
                    raise redis.exceptions.AuthenticationError(str(exc)) from None
            if self.db:
                await protocol.send(hiredis.pack_command(("SELECT", self.db)))
        except BaseException:
            protocol.abort(redis.exceptions.ConnectionError("the connection setup failed"))
            raise
        return protocol


class _RedisProtocol(asyncio.Protocol):
    """One connection: a queue of callers waiting for replies, in the order sent."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self.loop = loop
        self.timeout_s = timeout_s
        self.reader = hiredis.Reader(protocolError=redis.exceptions.InvalidResponse,
                                     replyError=redis.exceptions.ResponseError,
                                     notEnoughData=_INCOMPLETE)
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.deadlines: collections.deque[float] = collections.deque()
        self.outgoing: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        if self.closed:
            raise redis.exceptions.ConnectionError("the Redis connection is closed")
        future = self.loop.create_future()
        self.waiting.append(future)
        self.deadlines.append(self.loop.time() + self.timeout_s)
        if not self.outgoing:  # the first command of this turn: write them all at its end
            self.loop.call_soon(self._write)
        self.outgoing.append(packed)
        if self._timer is None:
            self._timer = self.loop.call_at(self.deadlines[0], self._check_deadline)
        return future

    def _write(self) -> None:
        if self.closed or self.transport is None:
            self.outgoing.clear()
            return
        outgoing = self.outgoing
        self.transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))
        outgoing.clear()

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiting, deadlines = self.waiting, self.deadlines
        while True:
            try:
                reply = reader.gets()
            except redis.exceptions.InvalidResponse as exc:
                self.abort(exc)
                return
            if reply is _INCOMPLETE:
                return
            if not waiting:  # a reply nobody asked for: the stream is out of step
                self.abort(redis.exceptions.InvalidResponse("unexpected reply from Redis"))
                return
            future = waiting.popleft()
            deadlines.popleft()
            if future.done():  # its caller was cancelled: the reply is dropped, in order
                continue
            if isinstance(reply, redis.exceptions.ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def _check_deadline(self) -> None:
        self._timer = None
        if not self.deadlines or self.closed:
            return
        if self.deadlines[0] <= self.loop.time():
            self.abort(redis.exceptions.TimeoutError(
                f"Redis did not answer within {self.timeout_s} s"))
            return
        self._timer = self.loop.call_at(self.deadlines[0], self._check_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        self.abort(redis.exceptions.ConnectionError(
            f"the Redis connection was lost{f': {exc}' if exc else ''}"))

    def abort(self, error: Exception) -> None:
        """Close the connection and fail every command still waiting with ``error``."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.outgoing.clear()
        waiting = list(self.waiting)
        self.waiting.clear()
        self.deadlines.clear()
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
        for future in waiting:
            if not future.done():
                future.set_exception(error)


__all__ = ["RedisMultiplexer", "multiplexer_for"]
