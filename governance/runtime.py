"""One governance runtime per worker process: the current snapshot, the ledger, the usage
sink, and the background loops that keep them fresh (DESIGN.md sections 4-7).

Created and started by the ASGI lifespan (``gateway/asgi.py``); the data plane reads
``runtime.snapshot`` (an attribute read, never blocking) and calls ``runtime.governor``.

- Snapshot: the config version is polled at most every ``GATEWAY_CONFIG_POLL_MS``; a changed
  version triggers a rebuild in a worker thread, then an atomic attribute swap. Requests
  keep using the old snapshot until then.
- Embedded mode (no ``REDIS_URL``): memory ledger and sink. At start, counters are rebuilt
  from usage records (the memory ledger starts empty after a restart); ``flush_usage``
  (which keeps the daily rollups too), ``record_resets`` and ``purge_usage`` run on
  in-process timers; the flush runs once more at shutdown, after the server has drained
  in-flight requests: a clean stop loses no usage.
- Production: Redis ledger, Redis Stream sink; Celery beat runs the jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.db import connections

from gateway import config_version
from gateway.conf import gateway_settings
from governance.engine import Governor
from governance.ledger import Ledger, Limit, MemoryLedger, ledger_from_url
from governance.sink import MemorySink, RedisStreamSink
from governance.snapshot import Snapshot, build_snapshot, iter_limits

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 2.0
UNKNOWN_VERSION = -1  # a snapshot built while the config version could not be read
RESETS_INTERVAL_S = 10.0
RETENTION_INTERVAL_S = 60.0
USAGE_VIEW_INTERVAL_S = 1.0
STOP_RECANCEL_S = 0.1  # how long a stopping background loop gets before it is cancelled again

_current: GovernanceRuntime | None = None


def current_runtime() -> GovernanceRuntime | None:
    """The started runtime of this process, if it serves traffic (for the management API's
    live views: quota, ``from_memory``)."""
    return _current


def embedded_runtime() -> GovernanceRuntime | None:
    """The started runtime of this process in the embedded mode (for the flush task)."""
    return _current if _current is not None and _current.embedded else None


def _build_snapshot(version: int) -> Snapshot:
    try:
        return build_snapshot(version, built_at=time.time())
    finally:
        connections.close_all()  # this pooled thread's own connections


class GovernanceRuntime:
    def __init__(self, *, ledger: Ledger, sink: Any, embedded: bool,
                 redis_client: Any = None, poll_ms: int | None = None) -> None:
        self.ledger = ledger
        self.sink = sink
        self.embedded = embedded
        self.redis = redis_client
        self.poll_s = (poll_ms if poll_ms is not None else gateway_settings.CONFIG_POLL_MS) / 1000
        self._changed = asyncio.Event()  # set when this process changed the configuration
        self._wake: Callable[[], Any] | None = None
        self.governor = Governor(
            ledger,
            require_virtual_key=gateway_settings.REQUIRE_VIRTUAL_KEY,
            fail_open=gateway_settings.LEDGER_FAIL_MODE == "open",
            default_max_tokens=gateway_settings.DEFAULT_MAX_TOKENS,
        )
        self.snapshot: Snapshot | None = None
        # The snapshot the usage view's limits were taken from, and those limits.
        self._view_limits: tuple[Snapshot | None, tuple[Limit, ...]] = (None, ())
        self._tasks: list[asyncio.Task[None]] = []
        self._rebuild_lock = asyncio.Lock()
        self.swaps = 0
        if embedded:
            from governance.tasks import DatabaseThread

            self._database = DatabaseThread()  # the background jobs' database work

    @classmethod
    def from_settings(cls) -> GovernanceRuntime:
        if settings.REDIS_URL:
            import redis.asyncio as aioredis

            from governance.ledger.multiplex import multiplexer_for

            client = aioredis.from_url(settings.REDIS_URL, socket_timeout=1,
                                       socket_connect_timeout=1)
            # The sink's own connection: its batches (up to 500 XADDs) never hold up the
            # ledger's admits on theirs.
            multiplexer = multiplexer_for(settings.REDIS_URL, timeout_s=1, connect_timeout_s=1)
            return cls(ledger=ledger_from_url(settings.REDIS_URL,
                                              key_prefix=settings.LEDGER_KEY_PREFIX),
                       sink=RedisStreamSink(client, multiplexer=multiplexer), embedded=False,
                       redis_client=client)
        return cls(ledger=MemoryLedger(key_prefix="ledger"), sink=MemorySink(), embedded=True)

    # -- snapshot ---------------------------------------------------------------------------

    async def _version(self) -> int:
        if self.redis is not None:
            value = await self.redis.get(config_version.REDIS_KEY)
            return int(value or 0)
        return config_version.current_version()

    async def refresh(self, *, force: bool = False) -> bool:
        """Rebuild the snapshot if the config version moved; True when swapped."""
        async with self._rebuild_lock:
            try:
                version = await self._version()
            except Exception as exc:
                if self.snapshot is not None:
                    raise  # keep serving the snapshot there is
                # Starting while Redis is down: serve what the database holds (the ledger's
                # fail mode decides about admits); the first version read once Redis is
                # back differs from this one and rebuilds the snapshot.
                logger.warning("config version unreadable (%s); building the snapshot from "
                               "the database, again once Redis answers", exc)
                version = UNKNOWN_VERSION
            if not force and self.snapshot is not None and self.snapshot.version == version:
                return False
            snapshot = await asyncio.to_thread(_build_snapshot, version)
            self.snapshot = snapshot
            self.swaps += 1
            logger.info("governance snapshot %s: %d keys, %d providers, %d rules", version,
                        len(snapshot.keys_by_hash), len(snapshot.providers),
                        snapshot.routing.rule_count)
            return True

    async def _poll_loop(self) -> None:
        # (a start while Redis was down said so already)
        failing = self.snapshot is not None and self.snapshot.version == UNKNOWN_VERSION
        while True:
            with contextlib.suppress(TimeoutError):  # a poll, or a change in this process
                await asyncio.wait_for(self._changed.wait(), self.poll_s)
            self._changed.clear()
            try:
                # After an outage: rebuilt whatever the version says. A change committed
                # meanwhile may not have moved it (its writer could not reach Redis either).
                await self.refresh(force=failing)
            except Exception as exc:
                if not failing:  # once per outage, not twice a second
                    logger.exception("snapshot refresh failed; keeping the previous snapshot")
                else:
                    logger.debug("snapshot refresh still failing: %s", exc)
                failing = True
            else:
                if failing:
                    logger.info("snapshot refresh recovered")
                failing = False

    def usage_view_limits(self, snapshot: Snapshot) -> tuple[Limit, ...]:
        """The windowed limits of ``snapshot``, collected once per snapshot (snapshots are
        immutable), not on every refresh of the usage view."""
        owner, limits = self._view_limits
        if owner is not snapshot:
            limits = tuple(limit for limit in iter_limits(snapshot) if limit.window is not None)
            self._view_limits = (snapshot, limits)
        return limits

    async def refresh_usage_view(self) -> None:
        """Read the counters of every windowed limit into the usage view routing rules read."""
        snapshot = self.snapshot
        if snapshot is None:
            return
        try:
            limits = self.usage_view_limits(snapshot)
            if limits:
                self.governor.usage_view.replace(await self.ledger.usage_many(limits))
        except Exception as exc:
            logger.debug("usage view refresh skipped: %s", exc)

    async def _usage_view_loop(self) -> None:
        """Refresh the usage view every second, without touching any request; write what
        the ledger's outage log held back once its failures stop."""
        while True:
            await asyncio.sleep(USAGE_VIEW_INTERVAL_S)
            if self.governor.unfinished():
                try:
                    await self.governor.retry_unfinished()
                except Exception:  # never end the loop
                    logger.exception("retrying unfinished settles failed")
            await self.refresh_usage_view()
            self.governor.outage_log.flush()  # the count of an outage's last lines

    # -- embedded background jobs ---------------------------------------------------------

    async def flush(self) -> int:
        from governance.tasks import flush_pass

        if self.embedded:
            return await flush_pass(self.sink, self.ledger, shared=True, run=self._database.run)
        await self.sink.retry_pending()
        return 0

    async def _every(self, seconds: float, job: Callable[[], Awaitable[Any]], name: str) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception:
                logger.exception("background job %s failed; retrying next time", name)

    async def _record_resets(self) -> None:
        from governance.tasks import record_resets

        await self._database.run(record_resets)

    async def _purge(self) -> None:
        from governance.tasks import retention_pass

        await self._database.run(retention_pass)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        global _current
        await self.refresh(force=True)
        if self.embedded:
            from governance.tasks import rebuild_counters

            restored = await rebuild_counters(self.ledger)
            logger.info("embedded ledger: %d counters rebuilt from usage records", restored)
        _current = self
        if self.embedded:
            loop, changed = asyncio.get_running_loop(), self._changed

            def wake() -> None:
                if not loop.is_closed():  # (a runtime never stopped: its loop is gone)
                    loop.call_soon_threadsafe(changed.set)

            self._wake = wake
            config_version.add_listener(wake)
        loops: list[Awaitable[None]] = [self._poll_loop(), self._usage_view_loop(),
                                        self._every(FLUSH_INTERVAL_S, self.flush, "flush_usage")]
        if self.embedded:
            loops += [self._every(RESETS_INTERVAL_S, self._record_resets, "record_resets"),
                      self._every(RETENTION_INTERVAL_S, self._purge, "purge_usage")]
        self._tasks = [asyncio.ensure_future(loop) for loop in loops]

    async def stop(self) -> None:
        """Stop the loops, then flush what is left (the server drained requests already)."""
        global _current
        if self._wake is not None:
            config_version.remove_listener(self._wake)
            self._wake = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            # Cancelled again until it ends: on Python 3.11, asyncio.wait_for (which
            # redis-py runs each command in) can swallow a cancellation that arrives just as
            # the command completes, and the loop would go on forever.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=STOP_RECANCEL_S)
            if not task.cancelled() and task.exception() is not None:
                logger.error("background loop ended with an error", exc_info=task.exception())
        self._tasks = []
        if self.governor.unfinished():  # once more; what is left ends with its window/lease
            with contextlib.suppress(Exception):
                await self.governor.retry_unfinished()
            if self.governor.unfinished():
                logger.warning("stopping with %d settle(s) or release(s) the ledger could not "
                               "take; their reservations end with their windows and leases",
                               self.governor.unfinished())
        try:
            written = await self.flush()
            if self.embedded:
                logger.info("shutdown flush: %d usage records written", written)
        except Exception:
            logger.exception("shutdown flush failed")
        if not self.embedded:
            try:
                lost = self.sink.pending()
            except Exception:
                logger.exception("could not count the usage events left")
                lost = 0
            if lost:  # Redis still unreachable: the stop tried once more; these are lost
                logger.error("stopping with %d usage event(s) that could not be sent to "
                             "Redis; they are lost", lost)
        if self.embedded:
            await self._database.close()
        if _current is self:
            _current = None
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        with contextlib.suppress(Exception):
            await self.sink.aclose()
        with contextlib.suppress(Exception):
            await self.ledger.aclose()
