"""The Django project: settings, URLs, ASGI entry point, Celery app, shared infrastructure."""

from typing import Any

# First: the request-time modules load compiled when a build of their current source exists.
from gateway.compiled import install as _install_compiled

_install_compiled()


def __getattr__(name: str) -> Any:
    """``celery_app``, imported when first asked for: importing a request-time module (and
    this package with it) must not import Celery and Django. Django loads it at start-up
    (``GatewayConfig.ready``); ``celery -A gateway`` finds ``gateway.celery`` itself."""
    if name == "celery_app":
        from gateway.celery import app

        return app
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")


__all__ = ["celery_app"]
