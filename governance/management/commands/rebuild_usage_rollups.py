"""``manage.py rebuild_usage_rollups``: recompute daily rollups from the usage records.

Rollups are derived data: every usage flush adds the records it writes to them, in the same
transaction. This recomputes whole days from the records instead, for records written by
other means (an import, a restored backup) or rollups from before they were kept that way.
A day whose records were partly purged by retention loses those requests when recomputed,
so by default only the days that still have all their records are rebuilt. Run it while no
flush is writing (it replaces each row it computes; a flush adding to a row meanwhile can
be overwritten).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from gateway.conf import gateway_settings
from governance.usage import rollup_usage

DAYS_MAX = 3660


class Command(BaseCommand):
    help = "Recompute the daily usage rollups of the last DAYS UTC days from usage records."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days", type=int, default=None,
            help="UTC days to rebuild, today included (default: the retention period, "
                 "GATEWAY_USAGE_RETENTION_DAYS, or 2 when records are kept forever)")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"]
        if days is None:
            days = gateway_settings.USAGE_RETENTION_DAYS or 2
        if not 1 <= days <= DAYS_MAX:
            raise CommandError(f"--days must be between 1 and {DAYS_MAX}: {days}")
        rows = rollup_usage(now=timezone.now(), days=days)
        self.stdout.write(f"Rebuilt {rows} rollup rows over {days} day(s).")
