"""Test settings: the project's settings with fast hashing and an isolated state dir."""

import os
import tempfile

os.environ.setdefault("GATEWAY_STATE_DIR", os.path.join(tempfile.gettempdir(), "gateway-test"))
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("GATEWAY_ENCRYPTION_KEY", "x0uy3a5Z8Zf-vGJ6T5i3g2Zr8S3mnF9XWnUH7K2M1Hw=")

from gateway.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
GATEWAY_CONFIG_POLL_MS = 20
# Views served by the in-process test server run in asgiref's worker thread: close their
# connections at the end of each request, so PostgreSQL can drop the test database.
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
