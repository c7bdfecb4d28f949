"""ASGI entry point: Django (admin, API) behind Channels' protocol router.

The inference data plane (/v1, /openai, /anthropic) mounts here as a plain ASGI app
(DESIGN.md section 3). Static files for the admin are served by Django's static handler.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")

from channels.routing import ProtocolTypeRouter
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

django_application = ASGIStaticFilesHandler(get_asgi_application())


async def lifespan(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    """Answer the ASGI lifespan protocol so uvicorn starts and stops cleanly."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


application = ProtocolTypeRouter({"http": django_application, "lifespan": lifespan})
