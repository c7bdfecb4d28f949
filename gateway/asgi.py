"""ASGI entry point: Channels' protocol router in front of two applications.

- ``/v1/``, ``/openai/``, ``/anthropic/``: the inference data plane, a plain ASGI app
  (``gateway/proxy/app.py``) that never enters Django's request handler (DESIGN.md section 3),
  chosen by a string prefix test (:class:`InferencePrefixRouter`);
- everything else: Channels' ``URLRouter`` in front of Django (admin, management API), with
  its static files handler.

The lifespan protocol starts the governance runtime (snapshot, ledger, usage sink and, in the
embedded mode, the background jobs) and the pooled upstream HTTP session, and stops them in
order on shutdown, after the server has drained in-flight requests.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")

from channels.routing import ProtocolTypeRouter, URLRouter
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application
from django.urls import re_path

# Sets Django up: everything below may import models.
django_application = ASGIStaticFilesHandler(get_asgi_application())

from gateway.proxy.app import InferenceApp  # noqa: E402
from gateway.proxy.lifecycle import start_data_plane, stop_data_plane  # noqa: E402

logger = logging.getLogger("gateway.asgi")
inference_application = InferenceApp()


async def lifespan(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    """Start the data plane on startup, drain and stop it on shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await start_data_plane(inference_application)
            except Exception as exc:
                logger.exception("data plane failed to start")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await stop_data_plane(inference_application)
            await send({"type": "lifespan.shutdown.complete"})
            return


class InferencePrefixRouter:
    """``/v1``, ``/openai`` and ``/anthropic`` (alone or followed by ``/``) go to the data
    plane by a string prefix test; everything else goes on to ``fallback`` (Channels'
    ``URLRouter`` in front of Django). Channels' ``URLRouter`` resolves a path with Django's
    regular-expression patterns and copies the scope for every request, which cost the data
    plane more than any of its own steps; the prefix test costs a few hundred nanoseconds.
    """

    PREFIXES = ("/v1", "/openai", "/anthropic")

    def __init__(self, inference: Any, fallback: Any) -> None:
        self.inference = inference
        self.fallback = fallback

    def is_inference(self, path: str) -> bool:
        for prefix in self.PREFIXES:
            if path.startswith(prefix) and (len(path) == len(prefix)
                                            or path[len(prefix)] == "/"):
                return True
        return False

    _asgi_single_callable = True  # ``__call__`` is not a coroutine function, but ASGI 3

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        """The chosen application's coroutine itself: no coroutine of its own around it
        (every resumption of a request's task walks down the whole chain of them)."""
        if self.is_inference(scope["path"]):
            return self.inference(scope, receive, send)
        return self.fallback(scope, receive, send)


application = ProtocolTypeRouter({
    "http": InferencePrefixRouter(
        inference_application,
        URLRouter([re_path(r"", django_application)]),
    ),
    "lifespan": lifespan,
})
