"""``manage.py create_admin_token USERNAME``: a management API token for a staff user.

Creates the staff user if missing. The token is printed once, as the last line; only its
SHA-256 is stored.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from gateway import audit
from gateway.models import AdminToken
from gateway.secrets import digest, new_admin_token


class Command(BaseCommand):
    help = "Create (or reuse) a staff user and print a new management API token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A label for the token.")
        parser.add_argument("--expires-days", type=int, default=None,
                            help="Days until the token expires (default: never).")

    def handle(self, *args: Any, **options: Any) -> None:
        username = options["username"].strip()
        if not username or len(username) > 150:
            raise CommandError("USERNAME must be 1-150 characters")
        expires_days = options["expires_days"]
        if expires_days is not None and expires_days <= 0:
            raise CommandError("--expires-days must be positive")
        User = get_user_model()
        with transaction.atomic():
            user, created = User.objects.get_or_create(
                username=username, defaults={"is_staff": True}
            )
            if created:
                user.set_unusable_password()
                user.save()
                self.stdout.write(f"Created staff user {username} (no password; use the token).")
            elif not user.is_staff:
                user.is_staff = True
                user.save(update_fields=["is_staff"])
                self.stdout.write(f"Made {username} a staff user.")
            token = new_admin_token()
            record = AdminToken.objects.create(
                user=user,
                name=options["name"],
                token_hash=digest(token),
                prefix=token[:10],
                expires_at=timezone.now() + timedelta(days=expires_days) if expires_days else None,
            )
            audit.record_create(audit.Actor(user, "command"), record)
        self.stdout.write(token)
