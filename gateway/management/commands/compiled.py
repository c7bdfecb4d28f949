"""``manage.py compiled build|status``: the request-time modules compiled with Cython
(gateway/compiled.py)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway import compiled


class Command(BaseCommand):
    help = ("Compile the request-time modules with Cython (build), or list which of them "
            "load compiled (status).")
    requires_system_checks: list[str] = []  # runs before the database is migrated

    def add_arguments(self, parser: CommandParser) -> None:
        compiled.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        code = compiled.run(options["command"], options["root"], options["build_dir"],
                            options["modules"])
        if code:
            raise CommandError("the build failed; the gateway runs those modules from source",
                               returncode=code)
