"""Start and stop the data plane of one worker: governance runtime + upstream session."""

from __future__ import annotations

import asyncio
import gc
import logging

import aiohttp

from gateway.conf import gateway_settings
from gateway.proxy.app import InferenceApp, ProxyState
from governance.runtime import GovernanceRuntime

logger = logging.getLogger(__name__)

# Connections per upstream host kept open for reuse; 0 would mean unlimited.
CONNECTION_LIMIT = 1000
# At shutdown, how long requests the server cancelled get to settle and emit their usage
# before the final flush.
SETTLE_WAIT_S = 5.0


def new_session() -> aiohttp.ClientSession:
    """The worker's one pooled upstream session. It keeps no cookies: it serves every
    virtual key, and a cookie one provider response sets (a CDN's, an auth proxy's session)
    would otherwise go out with everyone's later requests to that host."""
    connector = aiohttp.TCPConnector(limit=CONNECTION_LIMIT, ttl_dns_cache=300,
                                     enable_cleanup_closed=True)
    return aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                 cookie_jar=aiohttp.DummyCookieJar())


async def start_data_plane(app: InferenceApp, runtime: GovernanceRuntime | None = None) -> None:
    runtime = runtime or GovernanceRuntime.from_settings()
    await runtime.start()
    app.state = ProxyState(
        runtime, new_session(),
        cors_origins=list(gateway_settings.CORS_ORIGINS),
        max_body_bytes=gateway_settings.MAX_BODY_MB * 1024 * 1024,
        cel_engine=gateway_settings.CEL_ENGINE,
        max_depth=lambda: gateway_settings.ROUTING_MAX_DEPTH,
    )
    tune_garbage_collector()


def tune_garbage_collector() -> None:
    """Everything alive after start-up (Django, the snapshot, the catalog: hundreds of
    thousands of objects) is moved out of the collector's sight, and young collections run
    less often: full collections otherwise stall the event loop for tens of milliseconds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


async def stop_data_plane(app: InferenceApp, settle_wait_s: float = SETTLE_WAIT_S) -> None:
    """After the server stopped waiting for its requests (and cancelled those left, which
    settle and record what they used as they stop): wait for them, then the final flush."""
    state = app.state
    if state is None:
        return
    app.state = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle_wait_s
    while app.active and loop.time() < deadline:
        await asyncio.sleep(0.01)
    if app.active:
        logger.warning("shutdown: %d requests had not settled after %.0f s; their usage is "
                       "not flushed", app.active, settle_wait_s)
    state.watches.close()
    try:
        await state.runtime.stop()
    finally:
        await state.session.close()
