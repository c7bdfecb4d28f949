"""Usage events and where they go (DESIGN.md section 6). Pure: no Django.

The data plane emits one :class:`UsageEvent` per request that reached an upstream; it never
writes the database. ``flush_usage`` (``governance/tasks.py``) drains events into
``UsageRecord`` rows; an event's ``key`` is unique there, so a redelivered event is harmless.

- :class:`MemorySink`: an in-process buffer (embedded mode). ``drain`` hands out a batch and
  ``ack`` forgets it; a batch that is never acked (the flush failed) is handed out again.
- :class:`RedisStreamSink`: a Redis Stream with a consumer group (production). ``emit`` is
  ``XADD``; ``drain`` is ``XREADGROUP`` plus ``XAUTOCLAIM`` of entries a crashed consumer left
  pending; ``ack`` is ``XACK`` + ``XDEL`` after the rows are committed. If Redis cannot take an
  event, it waits in a local buffer and is re-sent by the next ``emit`` or ``retry_pending``;
  the data plane never fails a request because the sink is down.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import orjson

from governance.lograte import RateLimitedLog

logger = logging.getLogger(__name__)

STREAM_KEY = "gateway:usage"
GROUP = "usage-flush"
CLAIM_IDLE_MS = 60_000
SINK_BATCH_MAX = 500  # events per pipelined XADD round trip, at most


@dataclass(slots=True)  # not frozen: that sets each field through object.__setattr__,
class UsageEvent:        # four times the construction cost, once per request
    request_id: str
    created_at: float  # epoch seconds
    provider: str
    requested_model: str
    resolved_model: str
    request_type: str
    status_code: int
    virtual_key_id: str | None = None
    virtual_key_name: str = ""
    team_id: str | None = None
    customer_id: str | None = None
    provider_key_id: str | None = None
    is_stream: bool = False
    error_type: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_nanos: int = 0
    priced: bool = True
    latency_ms: float = 0.0
    overhead_ms: float = 0.0
    routing_rule_id: str | None = None
    routing_rule_name: str = ""
    fallback_index: int = 0
    # Unique to the request when ``request_id`` is not (a client may send the same
    # ``x-request-id`` twice); empty when ``request_id`` is the gateway's own, unique id.
    event_id: str = ""

    @property
    def key(self) -> str:
        """What makes this event's record unique (``UsageRecord.event_id``)."""
        return self.event_id or self.request_id

    def to_json(self) -> bytes:
        return orjson.dumps(self)  # orjson writes a dataclass's fields, in order

    @classmethod
    def from_json(cls, raw: bytes | str) -> UsageEvent:
        data = orjson.loads(raw)
        known = {field.name for field in fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in known})


@dataclass(frozen=True, slots=True)
class Batch:
    """Events handed to one flush; ``token`` identifies them for :meth:`Sink.ack`."""

    events: tuple[UsageEvent, ...]
    token: Any


class Sink(Protocol):
    async def emit(self, event: UsageEvent) -> None: ...

    def pending(self) -> int:
        """Events held in this process, not yet delivered."""
        ...

    async def aclose(self) -> None: ...


class MemorySink:
    """Thread-safe in-process buffer: the event loop emits, a flush thread drains."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: collections.deque[UsageEvent] = collections.deque()
        self._in_flight: dict[int, tuple[UsageEvent, ...]] = {}
        self._tokens = itertools.count(1)

    async def emit(self, event: UsageEvent) -> None:
        self.put(event)

    async def aclose(self) -> None:
        """Nothing to close: the buffer stays readable for the final flush."""

    def put(self, event: UsageEvent) -> None:
        with self._lock:
            self._queue.append(event)

    def drain(self, max_events: int = 5000) -> Batch:
        with self._lock:
            count = min(max_events, len(self._queue))
            events = tuple(self._queue.popleft() for _ in range(count))
            token = next(self._tokens)
            if events:
                self._in_flight[token] = events
        return Batch(events, token)

    def ack(self, batch: Batch) -> None:
        with self._lock:
            self._in_flight.pop(batch.token, None)

    def nack(self, batch: Batch) -> None:
        """Put a batch whose flush failed back at the front, in order."""
        with self._lock:
            events = self._in_flight.pop(batch.token, ())
            self._queue.extendleft(reversed(events))

    def pending(self) -> int:
        with self._lock:
            return len(self._queue) + sum(len(events) for events in self._in_flight.values())


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class RedisStreamSink:
    """Producer side (async, data plane). ``client`` is a ``redis.asyncio.Redis``; with a
    ``multiplexer`` (:class:`governance.ledger.multiplex.RedisMultiplexer`), batches go
    through it instead.

    One sender at a time, in batches: an event emitted while a batch is on its way joins the
    next one, which the same sender sends (``XADD`` of each, pipelined: one round trip) as
    soon as the last is acknowledged. Events leave the buffer only once Redis took them, in
    order; a failed batch stays for the next ``emit`` or ``retry_pending``. (Several senders
    at once sent the head of the buffer twice and took each other's events off it.)"""

    def __init__(self, client: Any, *, stream: str = STREAM_KEY,
                 batch_max: int = SINK_BATCH_MAX, multiplexer: Any = None) -> None:
        self.client = client
        self.multiplexer = multiplexer  # a RedisMultiplexer: batches go through it instead
        self.stream = stream
        self.batch_max = batch_max
        self._unsent: collections.deque[UsageEvent] = collections.deque()
        self._sending = asyncio.Lock()
        self._outage_log = RateLimitedLog(logger)  # a failed batch per request, when down

    async def emit(self, event: UsageEvent) -> None:
        self._unsent.append(event)
        if not self._sending.locked():  # else the sender at work takes this event too
            await self.retry_pending()

    async def retry_pending(self) -> int:
        """Send buffered events (after the batch on its way, if any); returns how many are
        still waiting."""
        async with self._sending:
            while self._unsent:
                batch = list(itertools.islice(self._unsent, self.batch_max))
                try:
                    if self.multiplexer is not None:
                        await self.multiplexer.execute_many(
                            [("XADD", self.stream, "*", "event", event.to_json())
                             for event in batch])
                    else:
                        pipe = self.client.pipeline(transaction=False)
                        for event in batch:
                            pipe.xadd(self.stream, {"event": event.to_json()})
                        await pipe.execute()
                except Exception as exc:  # Redis down: keep the events, never fail a request
                    self._outage_log.warning(
                        "sink", "usage sink unavailable, %d event(s) buffered: %s",
                        len(self._unsent), exc)
                    break
                for _ in batch:
                    self._unsent.popleft()
            # (called every flush interval: an outage's last failures get their line)
            self._outage_log.flush()
        return len(self._unsent)

    def pending(self) -> int:
        return len(self._unsent)

    async def aclose(self) -> None:
        """Close the multiplexed connection (``client`` belongs to the caller)."""
        if self.multiplexer is not None:
            await self.multiplexer.aclose()


class RedisStreamReader:
    """Consumer side (sync, Celery ``flush_usage``). ``client`` is a ``redis.Redis``."""

    def __init__(self, client: Any, *, stream: str = STREAM_KEY, group: str = GROUP,
                 consumer: str | None = None) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer or consumer_name()
        self._group_ready = False

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def drain(self, max_events: int = 5000) -> Batch:
        self._ensure_group()
        entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        # entries another consumer read but never acked (it crashed mid-flush)
        claimed = self.client.xautoclaim(self.stream, self.group, self.consumer,
                                         min_idle_time=CLAIM_IDLE_MS, start_id="0-0",
                                         count=max_events)
        entries.extend(claimed[1] if claimed else [])
        if len(entries) < max_events:
            # our own pending entries first ("0"), then new ones (">")
            for start in ("0", ">"):
                response = self.client.xreadgroup(self.group, self.consumer,
                                                  {self.stream: start},
                                                  count=max_events - len(entries))
                for _stream, items in response or []:
                    entries.extend(item for item in items if item[1])
                if len(entries) >= max_events:
                    break
        seen: set[bytes] = set()
        events = []
        ids = []
        for entry_id, payload in entries:
            if entry_id in seen:
                continue
            seen.add(entry_id)
            ids.append(entry_id)
            try:
                events.append(UsageEvent.from_json(payload[b"event"]))
            except (KeyError, TypeError, ValueError, orjson.JSONDecodeError):
                logger.error("dropping malformed usage event %r", entry_id)
        return Batch(tuple(events), tuple(ids))

    def ack(self, batch: Batch) -> None:
        ids: Sequence[bytes] = batch.token
        if ids:
            pipe = self.client.pipeline(transaction=False)
            pipe.xack(self.stream, self.group, *ids)
            pipe.xdel(self.stream, *ids)
            pipe.execute()

    def nack(self, batch: Batch) -> None:
        """Nothing to do: unacked entries stay pending and are read again."""

    def pending(self) -> int:
        self._ensure_group()
        return int(self.client.xlen(self.stream))
