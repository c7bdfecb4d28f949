"""Limit window durations, parsed in one place.

    >>> parse_duration("1h30m").seconds
    5400
    >>> parse_duration("monthly")
    Duration(text='monthly', count=1, unit='M', seconds=2592000)

Grammar: a positive number and a unit, ``s m h d w M Q Y`` (``m`` is minutes, ``M`` months),
or a Go-style composite of ``h``, ``m`` and ``s`` parts such as ``1h30m``; or one of the
aliases ``daily weekly monthly quarterly yearly``. Months, quarters and years take whole
numbers. The nominal length of a rolling ``1M`` window is 30 days, ``1Q`` 90 days and ``1Y``
365 days; calendar-aligned windows use real calendar boundaries in UTC (see
:func:`calendar_period_start`). Nothing here touches the database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

UNIT_SECONDS: dict[str, int] = {
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "M": 30 * 86400,
    "Q": 90 * 86400,
    "Y": 365 * 86400,
}
MONTH_UNITS: dict[str, int] = {"M": 1, "Q": 3, "Y": 12}
ALIASES: dict[str, tuple[int, str]] = {
    "daily": (1, "d"),
    "weekly": (1, "w"),
    "monthly": (1, "M"),
    "quarterly": (1, "Q"),
    "yearly": (1, "Y"),
}
MAX_WINDOW_SECONDS = 100 * 365 * 86400
DURATION_HELP = (
    "use a positive number followed by s, m, h, d, w, M, Q or Y (for example 30s, 5m, 1h, "
    "1d, 1w, 1M, 1Q, 1Y), a composite such as 1h30m, or daily, weekly, monthly, quarterly, "
    "yearly"
)

_SIMPLE = re.compile(r"(\d+(?:\.\d+)?)([smhdwMQY])", re.ASCII)
_COMPOSITE_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])", re.ASCII)
_COMPOSITE = re.compile(r"(?:\d+(?:\.\d+)?[hms])+", re.ASCII)
_EPOCH_MONDAY = datetime(1970, 1, 5, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidDuration(ValueError):
    """Raised for a duration string that does not parse; ``str()`` is the shared message."""

    def __init__(self, text: object) -> None:
        self.text = text
        super().__init__(f"invalid duration {str(text)!r}: {DURATION_HELP}")


@dataclass(frozen=True)
class Duration:
    text: str
    count: Decimal | int
    unit: str
    seconds: int

    @property
    def months(self) -> int:
        """Calendar months per window for ``M``, ``Q`` and ``Y``; 0 for fixed-length units."""
        if self.unit in MONTH_UNITS:
            return int(self.count) * MONTH_UNITS[self.unit]
        return 0


def parse_duration(text: object) -> Duration:
    if not isinstance(text, str) or len(text) > 32:
        raise InvalidDuration(text)
    stripped = text.strip()
    alias = ALIASES.get(stripped.lower())
    if alias is not None:
        count, unit = alias
        return Duration(text=text, count=count, unit=unit, seconds=count * UNIT_SECONDS[unit])
    match = _SIMPLE.fullmatch(stripped)
    if match:
        count = _number(match.group(1), text)
        unit = match.group(2)
        if unit in MONTH_UNITS and count != count.to_integral_value():
            raise InvalidDuration(text)
        seconds = count * UNIT_SECONDS[unit]
        count_value: Decimal | int = int(count) if count == count.to_integral_value() else count
        return _checked(Duration(text=text, count=count_value, unit=unit, seconds=int(seconds)),
                        seconds)
    if _COMPOSITE.fullmatch(stripped):
        seconds = sum(
            (_number(value, text) * UNIT_SECONDS[unit]
             for value, unit in _COMPOSITE_PART.findall(stripped)),
            Decimal(0),
        )
        return _checked(Duration(text=text, count=int(seconds), unit="s", seconds=int(seconds)),
                        seconds)
    raise InvalidDuration(text)


def _number(raw: str, text: object) -> Decimal:
    try:
        return Decimal(raw)
    except InvalidOperation:  # pragma: no cover - the regex admits only decimals
        raise InvalidDuration(text) from None


def _checked(duration: Duration, exact_seconds: Decimal) -> Duration:
    if exact_seconds < 1 or exact_seconds != exact_seconds.to_integral_value():
        raise InvalidDuration(duration.text)
    if exact_seconds > MAX_WINDOW_SECONDS:
        raise InvalidDuration(duration.text)
    return duration


def is_valid_duration(text: object) -> bool:
    try:
        parse_duration(text)
    except InvalidDuration:
        return False
    return True


def calendar_period_start(duration: Duration, now: datetime) -> datetime:
    """Start of the calendar-aligned window containing ``now`` (UTC).

    Windows lie on a lattice from a fixed origin, so they never drift: ``1d`` starts at
    00:00 UTC, ``1w`` on Monday 00:00 UTC, ``1M`` on the 1st of the month, ``1Q`` on
    January, April, July and October 1st, ``1Y`` on January 1st, ``1h`` at the top of the
    hour. A multiple counts from the Unix epoch (``2d`` windows start on even days since
    1970-01-01; ``6M`` windows in January and July).
    """
    now = now.astimezone(UTC)
    months = duration.months
    if months:
        index = (now.year - 1970) * 12 + (now.month - 1)
        start = index - index % months
        return datetime(1970 + start // 12, start % 12 + 1, 1, tzinfo=UTC)
    origin = _EPOCH_MONDAY if duration.unit == "w" else _EPOCH
    elapsed = int((now - origin).total_seconds())
    return origin + timedelta(seconds=elapsed - elapsed % duration.seconds)


def next_calendar_period_start(duration: Duration, start: datetime) -> datetime:
    """The window after the one starting at ``start`` (itself a period start)."""
    months = duration.months
    if months:
        index = (start.year - 1970) * 12 + (start.month - 1) + months
        return datetime(1970 + index // 12, index % 12 + 1, 1, tzinfo=UTC)
    return start + timedelta(seconds=duration.seconds)


def window_identity(text: str) -> tuple[int, int]:
    """What makes two window durations the same window whatever their spelling: ``1d``,
    ``daily`` and ``24h`` are one; ``1M`` (a calendar month) and ``30d`` are not. An
    unparsable text is its own identity (the validators report it)."""
    try:
        duration = parse_duration(text)
    except InvalidDuration:
        return (-1, hash(text))
    return (duration.seconds, duration.months)


def same_window(duration: str, others: Iterable[str]) -> str | None:
    """The first of ``others`` that is ``duration``'s window however spelled, else None."""
    identity = window_identity(duration)
    return next((other for other in others if window_identity(other) == identity), None)
