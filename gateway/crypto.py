"""Encryption of provider API keys at rest (Fernet, key from ``GATEWAY_ENCRYPTION_KEY``)."""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@lru_cache(maxsize=4)
def _fernet(key: str) -> Fernet:
    try:
        return Fernet(key.encode())
    except (ValueError, TypeError):
        raise ImproperlyConfigured(
            "GATEWAY_ENCRYPTION_KEY is not a valid Fernet key (32 url-safe base64-encoded bytes)"
        ) from None


def encrypt(plain: str) -> str:
    return _fernet(settings.GATEWAY_ENCRYPTION_KEY).encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet(settings.GATEWAY_ENCRYPTION_KEY).decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "a provider key cannot be decrypted: GATEWAY_ENCRYPTION_KEY differs from the key "
            "it was encrypted with"
        ) from None
