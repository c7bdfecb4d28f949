"""Background work (DESIGN.md section 6): the same functions run as Celery tasks in
production and on an in-process timer in the embedded mode (``governance/runtime.py``).

- ``flush_usage`` (every 2 s): usage events → ``UsageRecord`` in bulk (idempotent: the unique
  ``event_id`` makes a redelivered event a no-op), then live ledger counters are copied into
  ``Budget.current_usage`` / ``RateLimit.*_current_usage`` for the admin.
- ``record_resets`` (every 10 s): ``last_reset`` of windows that rolled. Bookkeeping only: a
  reset is the start of a new window key in the ledger and needs no job to happen.
- ``purge_usage`` (every 60 s): retention. Daily rollups need no job: each flush adds its
  records to them in the same transaction (``governance.usage.add_to_rollups``).
- :func:`rebuild_counters`: counters are derived data; recompute them from usage records.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from gateway.conf import gateway_settings
from gateway.formats import dollars_text
from governance.durations import parse_duration
from governance.ledger import NANOS_PER_DOLLAR, Ledger, Limit, Metric, ledger_from_url
from governance.ledger.windows import lattice_bounds, window_bounds
from governance.models import USAGE_RECORD_COLUMNS, Budget, RateLimit, UsageRecord
from governance.sink import Batch, UsageEvent
from governance.snapshot import budget_limit, rate_limits, window_anchor
from governance.usage import add_to_rollups

logger = logging.getLogger(__name__)

MONEY_QUANTUM = Decimal("0.000000001")
FLUSH_BATCH = 5000


# -- usage records ---------------------------------------------------------------------------


# The record columns, in the order :func:`_insert_plan`'s row function gives their values.
RECORD_COLUMNS = USAGE_RECORD_COLUMNS


# Rows per multi-row ``INSERT``, at most; fewer when the database takes fewer parameters.
INSERT_ROWS_MAX = 250
POSTGRESQL_PARAMETERS_MAX = 65_535  # the protocol's limit on one statement's parameters


@dataclass(frozen=True)
class _InsertPlan:
    """``INSERT ... VALUES (...), (...) ON CONFLICT (event_id) DO NOTHING`` for up to
    ``rows_per_statement`` rows, and the function from an event to its row."""

    prefix: str  # INSERT INTO table (columns) VALUES
    values: str  # (%s, %s, ...) or (?, ?, ...): one row's placeholders, the driver's own
    suffix: str  # ON CONFLICT ... DO NOTHING, and RETURNING event_id when ``returning``
    rows_per_statement: int
    row: Callable[[UsageEvent], tuple[Any, ...]]
    # Which rows a statement inserted (for the rollups): PostgreSQL returns them. SQLite
    # could too, but its driver gives the GIL up and takes it back for each returned row
    # (measured: 18% more per record); there the row count tells, and only when it falls
    # short of the statement's rows does :meth:`newest` look the new ones up.
    returning: bool
    # Run on the driver's own cursor, in the driver's own placeholders: Django's SQLite
    # cursor rewrites every %s of a statement with a regular expression, with the GIL held
    # (thousands of them in a statement of hundreds of rows). Its errors are then the
    # driver's (sqlite3.IntegrityError, not django.db's) and Django logs no query; the
    # callers catch any exception.
    driver_cursor: bool = False
    newest_prefix: str = ""  # SELECT event_id FROM table WHERE event_id IN
    id_column: str = ""
    _statements: dict[int, str] = dataclasses.field(default_factory=dict, compare=False,
                                                    repr=False)

    def newest(self, cursor: Any, events: Sequence[UsageEvent], count: int) -> list[UsageEvent]:
        """The ``count`` of ``events`` that the last statement inserted, when the others
        were recorded before. SQLite only (the driver's cursor, its ``?`` placeholders):
        PostgreSQL says which rows it inserted (``returning``). One writer at a time and
        ``AUTOINCREMENT`` ids: the rows just inserted have the highest ids among these
        events' records."""
        placeholders = ", ".join(["?"] * len(events))
        cursor.execute(f"{self.newest_prefix} ({placeholders}) ORDER BY {self.id_column} DESC "
                       f"LIMIT {int(count)}", [event.key for event in events])
        keys = {key for (key,) in cursor.fetchall()}
        return [event for event in events if event.key in keys]

    def sql(self, rows: int) -> str:
        """The statement for ``rows`` rows (kept: a flush uses the same few widths)."""
        statement = self._statements.get(rows)
        if statement is None:
            statement = self._statements[rows] = (
                f"{self.prefix} {', '.join([self.values] * rows)} {self.suffix}")
        return statement


def _parameters_max(connection: Any) -> int:
    """How many parameters one statement may carry on ``connection``'s database."""
    if connection.vendor == "sqlite":
        import sqlite3

        connection.ensure_connection()
        return int(connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    if connection.vendor == "postgresql":
        return POSTGRESQL_PARAMETERS_MAX
    return int(connection.features.max_query_params or 999)


_INSERT_PLANS: dict[str, _InsertPlan] = {}


def _insert_plan(connection: Any) -> _InsertPlan:
    """``INSERT ... ON CONFLICT (event_id) DO NOTHING`` for every concrete field but the
    primary key (SQLite and PostgreSQL both speak it), and a function from an event to its
    row: what saving a ``UsageRecord`` would send (texts cut to their columns, datetimes and
    decimals through the backend's adapters, UUIDs through the field's own conversion,
    repeated ones converted once), without building a model instance per row. One function
    call per row: the flush shares the process (and its GIL) with the data plane."""
    plan = _INSERT_PLANS.get(connection.vendor)
    if plan is not None:
        return plan
    fields = {field.name: field for field in UsageRecord._meta.concrete_fields
              if not field.primary_key}
    assert set(fields) == set(RECORD_COLUMNS), "RECORD_COLUMNS must name every record field"
    ops = connection.ops
    uuid = functools.lru_cache(maxsize=4096)(
        functools.partial(fields["virtual_key_id"].get_db_prep_save, connection=connection))
    sqlite = connection.vendor == "sqlite"
    when, money = _sqlite_conversions(connection) if sqlite else _conversions(connection)

    def row(event: UsageEvent) -> tuple[Any, ...]:
        return (
            event.request_id,
            when(event.created_at),
            uuid(event.virtual_key_id or None),
            event.virtual_key_name[:255],
            uuid(event.team_id or None),
            uuid(event.customer_id or None),
            event.provider[:50],
            uuid(event.provider_key_id or None),
            event.requested_model[:255],
            event.resolved_model[:255],
            event.request_type[:40],
            event.is_stream,
            event.status_code,
            event.error_type[:64],
            event.prompt_tokens,
            event.completion_tokens,
            event.cached_tokens,
            event.cache_write_tokens,
            event.reasoning_tokens,
            money(event.cost_nanos),
            event.priced,
            event.latency_ms,
            event.overhead_ms,
            uuid(event.routing_rule_id or None),
            event.routing_rule_name[:255],
            event.fallback_index,
            event.key,
        )

    quote = ops.quote_name
    columns = ", ".join(quote(fields[name].column) for name in RECORD_COLUMNS)
    plan = _INSERT_PLANS[connection.vendor] = _InsertPlan(
        prefix=f"INSERT INTO {quote(UsageRecord._meta.db_table)} ({columns}) VALUES",
        values="(" + ", ".join(["?" if sqlite else "%s"] * len(RECORD_COLUMNS)) + ")",
        suffix=f"ON CONFLICT ({quote('event_id')}) DO NOTHING"
               + ("" if sqlite else f" RETURNING {quote('event_id')}"),
        returning=not sqlite,
        newest_prefix=f"SELECT {quote('event_id')} FROM {quote(UsageRecord._meta.db_table)} "
                      f"WHERE {quote('event_id')} IN",
        id_column=quote(UsageRecord._meta.pk.column),
        rows_per_statement=max(1, min(INSERT_ROWS_MAX,
                                      _parameters_max(connection) // len(RECORD_COLUMNS))),
        row=row, driver_cursor=sqlite)
    return plan


Conversion = Callable[[Any], Any]

def _conversions(connection: Any) -> tuple[Conversion, Conversion]:
    """An event's ``created_at`` (epoch seconds) and ``cost_nanos`` as the database backend's
    own adapters give a ``UsageRecord``'s datetime and decimal to its driver."""
    ops = connection.ops
    cost_field = UsageRecord._meta.get_field("cost")
    adapt_datetime, adapt_decimal = ops.adapt_datetimefield_value, ops.adapt_decimalfield_value
    from_timestamp = datetime.fromtimestamp

    def when(created_at: float) -> Any:
        return adapt_datetime(from_timestamp(created_at, UTC))

    def money(cost_nanos: int) -> Any:
        return adapt_decimal(Decimal(cost_nanos).scaleb(-9), cost_field.max_digits,
                             cost_field.decimal_places)  # exact: 9 places

    return when, money


def _sqlite_conversions(connection: Any) -> tuple[Conversion, Conversion]:
    """The same values as :func:`_conversions` on SQLite, without Django's adapters on the
    way (this runs once per record, holding the GIL the data plane needs): a datetime is
    stored as the text of its naive form in the connection's time zone, and a decimal as
    text the column's numeric affinity converts (Django registers ``str`` as the driver's
    adapter for ``Decimal``; the digits here are the same number)."""
    zone = connection.timezone
    from_timestamp = datetime.fromtimestamp

    def when(created_at: float) -> str:
        return str(from_timestamp(created_at, zone).replace(tzinfo=None))

    return when, dollars_text


def write_records(events: Sequence[UsageEvent]) -> int:
    """Insert records for ``events`` and add them to the daily rollups, in one transaction;
    events already recorded are skipped (the unique ``event_id`` makes a redelivered event a
    no-op, for the rollups too). Returns the rows inserted.

    Multi-row ``INSERT ... ON CONFLICT DO NOTHING`` statements of up to
    ``rows_per_statement`` rows; :func:`governance.usage.add_to_rollups` gets exactly the
    rows they inserted (see ``_InsertPlan.returning``). Not ``executemany``: SQLite's
    driver gives the GIL up and takes it back for every row, and in the embedded mode each
    of those hand-overs interrupts the data plane's event loop (measured: about a tenth of
    its CPU per request)."""
    if not events:
        return 0
    unique = list({event.key: event for event in events}.values())
    inserted: list[UsageEvent] = []
    with transaction.atomic():
        connection = transaction.get_connection()
        plan = _insert_plan(connection)
        rows = [plan.row(event) for event in unique]
        step = plan.rows_per_statement
        with (contextlib.closing(connection.connection.cursor()) if plan.driver_cursor
              else connection.cursor()) as cursor:
            for start in range(0, len(rows), step):
                chunk = rows[start:start + step]
                cursor.execute(plan.sql(len(chunk)), [value for row in chunk for value in row])
                chunk_events = unique[start:start + step]
                if plan.returning:
                    new = {key for (key,) in cursor.fetchall()}
                    inserted += (chunk_events if len(new) == len(chunk)
                                 else [event for event in chunk_events if event.key in new])
                elif cursor.rowcount == len(chunk):
                    inserted += chunk_events
                elif cursor.rowcount:  # some were recorded before (a redelivery)
                    inserted += plan.newest(cursor, chunk_events, cursor.rowcount)
        add_to_rollups(inserted)
    return len(inserted)


def drain_into_records(reader: Any, *, max_batches: int = 100,
                       batch_size: int = FLUSH_BATCH, pause_s: float = 0.0) -> int:
    """Drain ``reader`` (a MemorySink or RedisStreamReader) into the database; returns the
    number of new records. A batch is acked only after its rows are committed. ``pause_s``
    sleeps between batches (releasing the GIL to a data plane sharing the process)."""
    written = 0
    for index in range(max_batches):
        if index and pause_s:
            time.sleep(pause_s)
        batch: Batch = reader.drain(batch_size)
        if not batch.events and not batch.token:
            break
        try:
            written += write_records(batch.events)
        except Exception:
            reader.nack(batch)
            raise
        reader.ack(batch)
        if len(batch.events) < batch_size:
            break
    return written


# -- limits as rows --------------------------------------------------------------------------


@dataclass(frozen=True)
class LimitRow:
    limit: Limit
    row: Budget | RateLimit


def limit_rows() -> list[LimitRow]:
    rows: list[LimitRow] = []
    for budget in Budget.objects.all():
        rows.append(LimitRow(budget_limit(budget, ""), budget))
    for rate_limit in RateLimit.objects.all():
        rows.extend(LimitRow(limit, rate_limit) for limit in rate_limits(rate_limit, ""))
    return rows


def copy_counters(rows: Sequence[LimitRow], used: dict[str, int]) -> int:
    """Write live counters into the usage columns the admin shows; only changed rows."""
    budgets: dict[Any, Budget] = {}
    rates: dict[Any, RateLimit] = {}
    for item in rows:
        value = used.get(item.limit.id)
        if value is None:
            continue
        row = item.row
        if isinstance(row, Budget):
            dollars = (Decimal(value) / NANOS_PER_DOLLAR).quantize(MONEY_QUANTUM)
            if row.current_usage != dollars:
                row.current_usage = dollars
                budgets[row.pk] = row
        else:
            field = ("token_current_usage" if item.limit.metric is Metric.TOKENS
                     else "request_current_usage")
            if getattr(row, field) != value:
                setattr(row, field, value)
                rates[row.pk] = row
    # update() per field rather than bulk_update: never overwrites an operator's edit of
    # the limit itself that happened since the rows were read.
    for pk, budget in budgets.items():
        Budget.objects.filter(pk=pk).update(current_usage=budget.current_usage)
    for pk, rate_limit in rates.items():
        RateLimit.objects.filter(pk=pk).update(
            token_current_usage=rate_limit.token_current_usage,
            request_current_usage=rate_limit.request_current_usage)
    return len(budgets) + len(rates)


async def _read_counters(ledger: Ledger, rows: Sequence[LimitRow]) -> dict[str, int]:
    if not rows:
        return {}
    return await ledger.usage_many([item.limit for item in rows])


# -- record_resets ---------------------------------------------------------------------------


def _rolled_start(duration: str, aligned: bool, last_reset: datetime,
                  now: float) -> datetime | None:
    from governance.ledger.windows import Window

    window = Window(parse_duration(duration), aligned, window_anchor(last_reset))
    start, _end = lattice_bounds(window, now)
    if start > last_reset.timestamp() + 1e-6:
        return datetime.fromtimestamp(start, UTC)
    return None


def record_resets(*, now: datetime | None = None) -> int:
    """Move ``last_reset`` to the start of the current window where a window rolled.

    The new value lies on the same lattice, so ledger window keys do not change; plain
    ``update()`` so no config version bump (nothing the data plane needs changed).
    """
    moment = (now or timezone.now()).timestamp()
    changed = 0
    for budget in Budget.objects.only("id", "reset_duration", "calendar_aligned", "last_reset"):
        start = _rolled_start(budget.reset_duration, budget.calendar_aligned,
                              budget.last_reset, moment)
        if start is not None:
            changed += Budget.objects.filter(pk=budget.pk, last_reset=budget.last_reset).update(
                last_reset=start, current_usage=Decimal(0))
    for rate_limit in RateLimit.objects.all():
        updates: dict[str, Any] = {}
        for prefix in ("token", "request"):
            duration = getattr(rate_limit, f"{prefix}_reset_duration")
            if not duration or getattr(rate_limit, f"{prefix}_max_limit") is None:
                continue
            last_reset = getattr(rate_limit, f"{prefix}_last_reset")
            start = _rolled_start(duration, False, last_reset, moment)
            if start is not None:
                updates[f"{prefix}_last_reset"] = start
                updates[f"{prefix}_current_usage"] = 0
        if updates:
            changed += RateLimit.objects.filter(pk=rate_limit.pk).update(**updates)
    return changed


# -- rebuild_counters ------------------------------------------------------------------------


def _owner_filter(row: Budget | RateLimit) -> Q:
    """Usage records attributed to the owner of a limit."""
    if row.customer_id:
        return Q(customer_id=row.customer_id)
    if row.team_id:
        return Q(team_id=row.team_id)
    if row.virtual_key_id:
        return Q(virtual_key_id=row.virtual_key_id)
    if row.provider_config_id:
        config = row.provider_config
        return Q(virtual_key_id=config.virtual_key_id, provider=config.provider.name)
    if row.provider_id:
        return Q(provider=row.provider.name)
    if row.model_config_id:
        config = row.model_config
        q = Q(resolved_model=config.model_name)
        if config.provider_id:
            q &= Q(provider=config.provider.name)
        return q
    return Q(pk__in=[])


def counted_amounts(rows: Iterable[LimitRow], now: float) -> list[tuple[Limit, int]]:
    """What each limit's current window should hold, summed from usage records."""
    amounts: list[tuple[Limit, int]] = []
    end = datetime.fromtimestamp(now, UTC)
    for item in rows:
        limit = item.limit
        assert limit.window is not None
        start = datetime.fromtimestamp(window_bounds(limit.window, now)[0], UTC)
        records = UsageRecord.objects.filter(_owner_filter(item.row),
                                             created_at__gte=start, created_at__lte=end)
        if limit.metric is Metric.COST:
            total = records.aggregate(total=Sum("cost"))["total"] or Decimal(0)
            amount = int((total * NANOS_PER_DOLLAR).to_integral_value())
        elif limit.metric is Metric.TOKENS:
            totals = records.aggregate(prompt=Sum("prompt_tokens"),
                                       completion=Sum("completion_tokens"))
            amount = (totals["prompt"] or 0) + (totals["completion"] or 0)
        else:
            amount = records.aggregate(count=Count("id"))["count"]
        amounts.append((limit, amount))
    return amounts


async def rebuild_counters(ledger: Ledger, *, now: float | None = None) -> int:
    """Set every limit's current-window counter from the usage records (``SET``, so running
    it twice gives the same counters). Returns the number of counters written."""
    moment = ledger.clock() if now is None else now

    def compute() -> list[tuple[Limit, int]]:
        return counted_amounts(limit_rows(), moment)

    amounts = await in_thread(compute)
    await ledger.rebuild(amounts, moment)  # plus what requests in flight reserved
    return len(amounts)


# -- one pass of everything (embedded timer and Celery share these) ----------------------------


async def in_thread(function: Any, *args: Any) -> Any:
    """Run ORM work off the event loop, closing the worker thread's database connections
    afterwards (a pooled thread must not keep a connection open between jobs)."""
    from asgiref.sync import sync_to_async
    from django.db import connections

    def run() -> Any:
        try:
            return function(*args)
        finally:
            connections.close_all()

    return await sync_to_async(run, thread_sensitive=False)()


class DatabaseThread:
    """One thread for an embedded runtime's database jobs that keeps its connection from
    one job to the next. Closing the last connection to a SQLite database in WAL mode
    checkpoints the whole log (a sixth of the flush's time when every job closed its
    connection), and opening one runs the connection setup again. The connection is
    closed after a failed job (the next one reconnects) and by :meth:`close`."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-db")

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        from django.db import connections

        def job() -> Any:
            try:
                return function(*args)
            except BaseException:
                connections.close_all()
                raise

        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    async def close(self) -> None:
        from django.db import connections

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor,
                                                             connections.close_all)
        finally:
            self._executor.shutdown(wait=False)


# In-process flushes (embedded mode) share the interpreter with the data plane: small
# batches with a pause between them keep its latency smooth while the flush runs.
SHARED_BATCH = 250
SHARED_PAUSE_S = 0.005


async def flush_pass(reader: Any, ledger: Ledger | None, *, shared: bool = False,
                     run: Callable[..., Awaitable[Any]] = in_thread) -> int:
    """Drain events into records, then copy counters to the limit rows. ``run`` runs the
    database work off the event loop (a :class:`DatabaseThread`'s ``run`` in the embedded
    runtime)."""
    if shared:
        written = await run(lambda: drain_into_records(
            reader, max_batches=1_000_000, batch_size=SHARED_BATCH, pause_s=SHARED_PAUSE_S))
    else:
        written = await run(drain_into_records, reader)
    if ledger is not None:
        rows = await run(limit_rows)
        used = await _read_counters(ledger, rows)
        await run(copy_counters, rows, used)
    return written


def retention_pass(*, now: datetime | None = None) -> int:
    """Delete the usage records older than ``GATEWAY_USAGE_RETENTION_DAYS`` (the rollups,
    kept up to date as records are written, stay)."""
    from governance.usage import purge_usage

    return purge_usage(now=now or timezone.now(),
                       retention_days=gateway_settings.USAGE_RETENTION_DAYS)


# -- Celery (production) -----------------------------------------------------------------------


def redis_usage_reader() -> Any:
    import redis

    from governance.sink import RedisStreamReader

    return RedisStreamReader(redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5))


@shared_task(name="governance.flush_usage", ignore_result=True)
def flush_usage() -> int:
    if not settings.REDIS_URL:
        from governance.runtime import embedded_runtime

        runtime = embedded_runtime()
        return drain_into_records(runtime.sink) if runtime is not None else 0

    async def run() -> int:
        ledger = ledger_from_url(settings.REDIS_URL, key_prefix=settings.LEDGER_KEY_PREFIX)
        try:
            return await flush_pass(redis_usage_reader(), ledger)
        finally:
            await ledger.aclose()

    return asyncio.run(run())


@shared_task(name="governance.record_resets", ignore_result=True)
def record_resets_task() -> int:
    return record_resets()


@shared_task(name="governance.purge_usage", ignore_result=True)
def purge_usage_task() -> int:
    return retention_pass()
