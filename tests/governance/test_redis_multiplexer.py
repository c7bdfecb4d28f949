"""The multiplexed Redis connection of the ledger (governance/ledger/multiplex.py), against
the real Redis: ordering, errors, scripts, cancellation, time-outs, lost connections,
authentication, and a server that answers nonsense."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.exceptions
from redis.asyncio import Redis

from governance.durations import parse_duration
from governance.ledger import LedgerUnavailable, Limit, Metric, Reservation, Window
from governance.ledger.multiplex import RedisMultiplexer
from governance.ledger.redis import RedisLedger

pytestmark = pytest.mark.redis

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def mux() -> AsyncIterator[RedisMultiplexer]:
    multiplexer = RedisMultiplexer(URL, timeout_s=2.0)
    yield multiplexer
    await multiplexer.aclose()


@pytest.fixture
async def plain() -> AsyncIterator[Redis]:
    client = Redis(host="127.0.0.1", port=6379, db=0)
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"mux-test-{uuid.uuid4().hex}"


async def test_concurrent_commands_each_get_their_own_reply(mux, plain, prefix):
    async def one(index: int) -> tuple[object, object, object]:
        key = f"{prefix}:{index}"
        return (await mux.execute("INCRBY", key, index), await mux.execute("GET", key),
                await mux.execute("EXISTS", f"{prefix}:missing"))

    try:
        results = await asyncio.gather(*(one(index) for index in range(300)))
        assert results == [(index, str(index).encode(), 0) for index in range(300)]
    finally:
        await plain.delete(*[f"{prefix}:{index}" for index in range(300)])


async def test_commands_of_one_turn_leave_in_one_write(mux, prefix):
    await mux.execute("PING")  # connected
    protocol = mux._protocol
    writes: list[bytes] = []
    original = protocol.transport.write
    protocol.transport.write = lambda data: (writes.append(data), original(data))[1]
    replies = await asyncio.gather(*(mux.execute("ECHO", f"m{index}") for index in range(50)))
    assert replies == [f"m{index}".encode() for index in range(50)]
    assert len(writes) == 1 and writes[0].count(b"ECHO") == 50


async def test_an_error_reply_raises_and_the_connection_stays_in_step(mux, plain, prefix):
    await plain.set(f"{prefix}:text", "abc")
    try:
        results = await asyncio.gather(mux.execute("INCR", f"{prefix}:text"),
                                       mux.execute("ECHO", "after"), return_exceptions=True)
        assert isinstance(results[0], redis.exceptions.ResponseError)
        assert "not an integer" in str(results[0])
        assert results[1] == b"after"
        with pytest.raises(redis.exceptions.ResponseError, match="unknown command"):
            await mux.execute("NO-SUCH-COMMAND")
        assert await mux.execute("ECHO", "still") == b"still"
    finally:
        await plain.delete(f"{prefix}:text")


async def test_a_script_unknown_to_redis_is_sent_once_with_eval(mux, plain):
    source = f"return {{KEYS[1], ARGV[1], '{uuid.uuid4().hex}'}}"  # new to this server
    sha = plain.register_script(source).sha
    commands: list[bytes] = []
    original = mux.execute

    async def spy(*args):
        commands.append(args[0])
        return await original(*args)

    mux.execute = spy
    first = await mux.evalsha(sha, source, ["k"], ["v"])
    second = await mux.evalsha(sha, source, ["k"], ["w"])
    assert first[:2] == [b"k", b"v"] and second[:2] == [b"k", b"w"]
    assert commands == ["EVALSHA", "EVAL", "EVALSHA"]  # loaded by the EVAL
    with pytest.raises(redis.exceptions.ResponseError):  # a script error is not retried
        await mux.evalsha("0" * 40, "return redis.call('NO-SUCH')", [], [])


async def test_a_cancelled_caller_does_not_shift_the_replies(mux, prefix):
    slow = asyncio.ensure_future(mux.execute("BLPOP", f"{prefix}:never", 0.3))
    await asyncio.sleep(0.05)
    slow.cancel()
    echo = await mux.execute("ECHO", "mine")  # answered after the BLPOP's nil
    assert echo == b"mine"
    assert slow.cancelled()


async def test_an_unanswered_command_times_out_and_the_next_one_reconnects(prefix):
    mux = RedisMultiplexer(URL, timeout_s=0.2)
    try:
        started = time.monotonic()
        blocked = asyncio.ensure_future(mux.execute("BLPOP", f"{prefix}:never", 2))
        behind = asyncio.ensure_future(mux.execute("PING"))
        with pytest.raises(redis.exceptions.TimeoutError, match=r"within 0\.2 s"):
            await blocked
        with pytest.raises(redis.exceptions.TimeoutError):  # on the same connection
            await behind
        assert time.monotonic() - started < 1.5
        assert await mux.execute("PING") == b"PONG"  # a new connection
    finally:
        await mux.aclose()


async def test_a_killed_connection_fails_its_commands_and_the_next_one_reconnects(
        mux, plain, prefix):
    client_id = await mux.execute("CLIENT", "ID")
    pending = asyncio.ensure_future(mux.execute("BLPOP", f"{prefix}:never", 5))
    await asyncio.sleep(0.05)
    assert await plain.execute_command("CLIENT", "KILL", "ID", client_id) == 1
    with pytest.raises(redis.exceptions.ConnectionError, match="lost"):
        await asyncio.wait_for(pending, 2)
    assert await mux.execute("CLIENT", "ID") != client_id


async def test_an_unreachable_redis_makes_the_ledger_unavailable():
    multiplexer = RedisMultiplexer("redis://127.0.0.1:1/0", timeout_s=0.2, connect_timeout_s=0.2)
    client = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=None)
    ledger = RedisLedger(client, key_prefix=uuid.uuid4().hex, multiplexer=multiplexer)
    limit = Limit("rate:x:requests", Metric.REQUESTS, 1, Window(parse_duration("1h")), "x")
    try:
        with pytest.raises(LedgerUnavailable) as info:
            await ledger.admit("a", [limit], Reservation())
        assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError)
        assert "cannot connect to Redis at 127.0.0.1:1" in str(info.value.__cause__)
    finally:
        await ledger.aclose()


async def test_user_password_and_database_from_the_url(plain, prefix):
    user, password = f"mux-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await plain.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "+@all")
    database = Redis(host="127.0.0.1", port=6379, db=7)
    try:
        mux = RedisMultiplexer(f"redis://{user}:{password}@127.0.0.1:6379/7")
        try:
            assert await mux.execute("ACL", "WHOAMI") == user.encode()
            await mux.execute("SET", f"{prefix}:db", "seven")
            assert await database.get(f"{prefix}:db") == b"seven"
        finally:
            await mux.aclose()
        wrong = RedisMultiplexer(f"redis://{user}:not-it@127.0.0.1:6379/7")
        with pytest.raises(redis.exceptions.AuthenticationError):
            await wrong.execute("PING")
        await wrong.aclose()
    finally:
        await database.delete(f"{prefix}:db")
        await database.aclose()
        await plain.execute_command("ACL", "DELUSER", user)


async def test_a_server_answering_nonsense_fails_the_command_cleanly():
    done = asyncio.Event()

    async def nonsense(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(100)
            writer.write(b"?this is not RESP\r\n")
            await writer.drain()
            await reader.read()  # until the client hangs up
        finally:
            writer.close()
            done.set()

    server = await asyncio.start_server(nonsense, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    mux = RedisMultiplexer(f"redis://127.0.0.1:{port}/0", timeout_s=2.0)
    try:
        with pytest.raises(redis.exceptions.InvalidResponse):
            await mux.execute("PING")
        await asyncio.wait_for(done.wait(), 2)  # the multiplexer closed the connection
    finally:
        await mux.aclose()
        server.close()
        await server.wait_closed()


async def test_a_closed_multiplexer_refuses_commands(prefix):
    mux = RedisMultiplexer(URL)
    pending = asyncio.ensure_future(mux.execute("BLPOP", f"{prefix}:never", 2))
    await asyncio.sleep(0.05)
    await mux.aclose()
    with pytest.raises(redis.exceptions.ConnectionError, match="closed"):
        await pending
    with pytest.raises(redis.exceptions.ConnectionError, match="closed"):
        await mux.execute("PING")


@pytest.mark.parametrize("url", ["rediss://127.0.0.1:6379/0", "unix:///tmp/redis.sock",
                                 "127.0.0.1:6379", ""])
def test_only_plain_redis_urls_are_taken(url):
    with pytest.raises(ValueError, match="redis:// only"):
        RedisMultiplexer(url)


async def test_callers_share_one_connection_attempt_and_its_failure():
    """A Redis that accepts connections but never answers (here: the SELECT of the set-up):
    twenty callers wait for one attempt, bounded by the connect time-out, not for twenty
    attempts one after another."""
    connections: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    mux = RedisMultiplexer(f"redis://127.0.0.1:{port}/3", connect_timeout_s=0.3)
    try:
        started = time.monotonic()
        results = await asyncio.gather(*(mux.execute("PING") for _ in range(20)),
                                       return_exceptions=True)
        assert all(isinstance(result, redis.exceptions.TimeoutError) for result in results)
        assert "connecting to Redis at 127.0.0.1" in str(results[0])
        assert time.monotonic() - started < 1.5
        assert len(connections) == 1
        with pytest.raises(redis.exceptions.TimeoutError):  # a later caller tries again
            await mux.execute("PING")
        assert len(connections) == 2
    finally:
        await mux.aclose()
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_execute_many_answers_in_order_and_raises_the_first_error_after_all(
        mux, plain, prefix):
    await plain.set(f"{prefix}:text", "abc")
    try:
        assert await mux.execute_many([("SET", f"{prefix}:a", 1), ("INCR", f"{prefix}:a"),
                                       ("GET", f"{prefix}:a")]) == [b"OK", 2, b"2"]
        with pytest.raises(redis.exceptions.ResponseError, match="not an integer"):
            await mux.execute_many([("INCR", f"{prefix}:b"), ("INCR", f"{prefix}:text"),
                                    ("INCR", f"{prefix}:b"), ("LPUSH", f"{prefix}:text", 1)])
        assert await plain.get(f"{prefix}:b") == b"2"  # the commands around it ran
        assert await mux.execute("ECHO", "in step") == b"in step"
        assert await mux.execute_many([]) == []
    finally:
        await plain.delete(f"{prefix}:text", f"{prefix}:a", f"{prefix}:b")
