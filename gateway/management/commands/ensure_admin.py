"""``manage.py ensure_admin``: on the first run, create the superuser ``admin`` with a random
password and print it once. Later runs do nothing."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the superuser 'admin' with a random password if no superuser exists."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return
        password = secrets.token_urlsafe(16)
        User.objects.create_superuser("admin", "", password)
        bar = "=" * 64
        self.stdout.write(
            f"{bar}\nCreated the admin user. Log in at /admin/ with:\n"
            f"  username: admin\n  password: {password}\n"
            f"This password is shown only once; change it in the admin.\n{bar}"
        )
