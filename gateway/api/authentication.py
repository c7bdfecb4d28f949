"""``Authorization: Bearer <admin token>`` for the management API."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from gateway.models import AdminToken
from gateway.secrets import ADMIN_TOKEN_PREFIX, digest

LAST_USED_RESOLUTION = timedelta(minutes=1)


class AdminTokenAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request: Any) -> tuple[Any, AdminToken] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Invalid Authorization header: use Bearer <token>"
            )
        try:
            token = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token") from None
        if not token.startswith(ADMIN_TOKEN_PREFIX) or len(token) > 200:
            raise exceptions.AuthenticationFailed("Invalid token")
        record = (
            AdminToken.objects.select_related("user").filter(token_hash=digest(token)).first()
        )
        now = timezone.now()
        if record is None or (record.expires_at is not None and record.expires_at <= now):
            raise exceptions.AuthenticationFailed("Invalid or expired token")
        if not record.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted")
        if record.last_used_at is None or now - record.last_used_at > LAST_USED_RESOLUTION:
            AdminToken.objects.filter(pk=record.pk).update(last_used_at=now)
        return record.user, record

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="api"'
