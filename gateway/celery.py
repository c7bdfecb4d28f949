"""The Celery application (production mode: Redis broker; embedded mode runs tasks inline).

    celery -A gateway worker
    celery -A gateway beat
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway.settings")

app = Celery("gateway")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
