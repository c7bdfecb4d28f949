from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission


class IsStaff(BasePermission):
    """Staff users only: 401 without credentials, 403 for an authenticated non-staff user."""

    message = "Staff access is required"

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_active and user.is_staff)
