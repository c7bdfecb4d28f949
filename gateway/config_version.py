"""The configuration version: bumped after every committed write, polled by data-plane
workers to know when to rebuild their snapshot (DESIGN.md section 4).

Embedded mode keeps it in process memory; production mode in a Redis key shared by every
worker and host.
"""

from __future__ import annotations

import itertools
import logging
import threading

from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

REDIS_KEY = "gateway:config_version"

_lock = threading.Lock()
_local_counter = itertools.count(1)
_local_version = 0


def _redis_client():  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def current_version() -> int:
    if settings.REDIS_URL:
        value = _redis_client().get(REDIS_KEY)
        return int(value or 0)
    return _local_version


def bump_now() -> int:
    global _local_version
    if settings.REDIS_URL:
        try:
            return int(_redis_client().incr(REDIS_KEY))
        except Exception:  # the write is committed; workers catch up on their next poll
            logger.exception("could not bump the config version in Redis")
            return -1
    with _lock:
        _local_version = next(_local_counter)
        return _local_version


def bump_on_commit() -> None:
    """Bump the version once the surrounding transaction commits (at once outside one)."""
    transaction.on_commit(bump_now)
