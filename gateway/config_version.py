"""The configuration version: bumped after every committed write, polled by data-plane
workers to know when to rebuild their snapshot (DESIGN.md section 4).

Embedded mode keeps it in process memory; production mode in a Redis key shared by every
worker and host.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable

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


# While a bump could not reach Redis: the thread that retries it (one per process; the
# bumps that fail meanwhile need no more than the one increment it makes).
RETRY_INTERVAL_S = 1.0
_retrying: threading.Thread | None = None


def bump_now() -> int:
    global _local_version
    if settings.REDIS_URL:
        try:
            return int(_redis_client().incr(REDIS_KEY))
        except Exception:  # the write is committed: the bump is retried until Redis answers
            logger.exception("could not bump the config version in Redis; retrying every "
                             "%.0f s until it answers", RETRY_INTERVAL_S)
            _retry_in_background()
            return -1
    with _lock:
        _local_version = next(_local_counter)
        version = _local_version
        listeners = list(_listeners)
    for listener in listeners:  # the embedded runtime rebuilds now, not at its next poll
        try:
            listener()
        except Exception:
            logger.exception("a config version listener failed")
    return version


# Called (from any thread) after each bump of the in-process version: the embedded runtime
# wakes its poll at once, so a key created through the API works within milliseconds.
_listeners: list[Callable[[], None]] = []


def add_listener(listener: Callable[[], None]) -> None:
    with _lock:
        _listeners.append(listener)


def remove_listener(listener: Callable[[], None]) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def _retry_in_background() -> None:
    """Bump the version once Redis answers again. Workers that could not poll during the
    outage rebuild their snapshot once it ends anyway (``governance.runtime``); this covers
    an outage of the writing process alone, whose change the workers could not learn of."""
    global _retrying
    with _lock:
        if _retrying is not None and _retrying.is_alive():
            return
        _retrying = threading.Thread(target=_retry_until_bumped, name="config-version-bump",
                                     daemon=True)
        _retrying.start()


def _retry_until_bumped() -> None:
    while True:
        time.sleep(RETRY_INTERVAL_S)
        try:
            version = int(_redis_client().incr(REDIS_KEY))
        except Exception as exc:
            logger.debug("config version bump still failing: %s", exc)
            continue
        logger.info("config version bumped to %d once Redis answered again", version)
        return


def bump_on_commit() -> None:
    """Bump the version once the surrounding transaction commits (at once outside one)."""
    transaction.on_commit(bump_now)
