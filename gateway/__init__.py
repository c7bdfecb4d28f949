"""The Django project: settings, URLs, ASGI entry point, Celery app, shared infrastructure."""

from gateway.celery import app as celery_app

__all__ = ["celery_app"]
