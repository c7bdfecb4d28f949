"""``manage.py rebuild_counters``: recompute ledger counters from usage records.

Counters are derived data (DESIGN.md section 5): after Redis lost its data, or to repair
drift, this sets every budget's and rate limit's current-window counter to the sum of the
usage records in that window (honouring reset markers), plus what requests in flight
reserved (they settle against it). It first writes the usage events still waiting in the
Redis stream, so requests that finished just before are in the records. It uses ``SET``, so
running it twice gives the same result, during traffic too. In the embedded mode the gateway
does this by itself at start-up.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from governance.ledger import ledger_from_url
from governance.tasks import drain_into_records, rebuild_counters, redis_usage_reader


class Command(BaseCommand):
    help = "Recompute budget and rate-limit counters in the ledger from usage records."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.REDIS_URL:
            raise CommandError(
                "REDIS_URL is not set: in the embedded mode counters live in the gateway "
                "process, which rebuilds them from usage records every time it starts.")

        written = drain_into_records(redis_usage_reader(), max_batches=1_000_000)
        if written:
            self.stdout.write(f"Wrote {written} usage records still waiting in the stream.")

        async def run() -> int:
            ledger = ledger_from_url(settings.REDIS_URL, key_prefix=settings.LEDGER_KEY_PREFIX)
            try:
                return await rebuild_counters(ledger)
            finally:
                await ledger.aclose()

        count = asyncio.run(run())
        self.stdout.write(f"Rebuilt {count} counters from usage records.")
