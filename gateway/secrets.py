"""Generated credentials: virtual keys and admin API tokens. Only SHA-256 digests are stored."""

from __future__ import annotations

import hashlib
import secrets

VIRTUAL_KEY_PREFIX = "sk-gw-"
ADMIN_TOKEN_PREFIX = "gwa-"
DISPLAY_PREFIX_LENGTH = 10


def new_virtual_key_secret() -> str:
    # 24 random bytes encode to exactly 32 url-safe characters.
    return VIRTUAL_KEY_PREFIX + secrets.token_urlsafe(24)


def new_admin_token() -> str:
    return ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[:DISPLAY_PREFIX_LENGTH]
