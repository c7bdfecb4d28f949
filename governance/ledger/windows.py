"""Window arithmetic for ledger limits (pure; epoch seconds in, epoch seconds out).

Rolling windows lie on the lattice ``anchor + n * length`` (``anchor`` is the limit's
``last_reset``), so they never drift however many windows pass. Calendar-aligned windows use
:func:`governance.durations.calendar_period_start` (UTC day, Monday, month, quarter, year).

Reset marker: an operator "reset usage" at time ``m``. When ``m`` lies inside the lattice
window that contains ``now`` (``start <= m <= now``), the effective window is ``[m, end)`` and
its key gains an ``r<m>`` suffix, so counting starts from zero in a fresh counter without
touching the old one (no history is edited, nothing needs a job). Once the lattice window
containing the marker ends, the marker is ignored and the next window is counted normally.
A marker in the future (``m > now``) is ignored until it is reached.

    >>> from governance.durations import parse_duration
    >>> w = Window(parse_duration("1h"), calendar_aligned=False, anchor=600.0)
    >>> window_bounds(w, 7300.0)
    (4200.0, 7800.0)
    >>> window_key(w, 7300.0)
    '4200'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

from governance.durations import Duration, calendar_period_start, next_calendar_period_start


@dataclass(frozen=True)
class Window:
    duration: Duration
    calendar_aligned: bool = False
    anchor: float = 0.0
    reset_marker: float | None = None

    # The lattice window last found, ``(start, end, key)``: see :func:`window_slot`. Not a
    # field (a ClassVar): equality, hashing and pickling ignore it.
    _slot: ClassVar[tuple[float, float, str] | None] = None

    def __post_init__(self) -> None:
        # Windows key the per-request caches; hashing the fields (a Decimal among them)
        # on every lookup cost more than the lookup.
        object.__setattr__(self, "_hash", hash((self.duration, self.calendar_aligned,
                                                 self.anchor, self.reset_marker)))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined,no-any-return]

    def __reduce__(self) -> tuple[type[Window], tuple[Duration, bool, float, float | None]]:
        # Rebuilt through __init__, so the cached hash is this process's own.
        return (Window, (self.duration, self.calendar_aligned, self.anchor, self.reset_marker))


def lattice_bounds(window: Window, now: float) -> tuple[float, float]:
    """The window containing ``now`` ignoring any reset marker."""
    if window.calendar_aligned:
        start_dt = calendar_period_start(window.duration, datetime.fromtimestamp(now, UTC))
        end_dt = next_calendar_period_start(window.duration, start_dt)
        return start_dt.timestamp(), end_dt.timestamp()
    length = window.duration.seconds
    index = math.floor((now - window.anchor) / length)
    start = window.anchor + index * length
    if start > now:  # float rounding at a boundary
        start -= length
    elif start + length <= now:
        start += length
    return start, start + length


def _active_marker(window: Window, now: float, start: float) -> float | None:
    marker = window.reset_marker
    if marker is not None and start <= marker <= now:
        return marker
    return None


def window_bounds(window: Window, now: float) -> tuple[float, float]:
    """``(start, end)`` of the counted window containing ``now``; start honours a reset."""
    start, end = lattice_bounds(window, now)
    marker = _active_marker(window, now, start)
    return (marker if marker is not None else start), end


def _format(seconds: float) -> str:
    text = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def window_key(window: Window, now: float) -> str:
    """Counter key suffix for ``now``: the lattice start, plus ``r<marker>`` after a reset."""
    start, _end = lattice_bounds(window, now)
    marker = _active_marker(window, now, start)
    if marker is None:
        return _format(start)
    return f"{_format(start)}r{_format(marker)}"


def window_slot(window: Window, now: float) -> tuple[str, float, float]:
    """``(window_key, start, end)`` in one step; same values as :func:`window_key` and
    :func:`window_bounds`. The lattice window last found is kept on ``window`` itself and
    reused while ``now`` stays inside it: the hot path computes a calendar boundary once
    per window, not once per request, and no shared cache grows with the windows that
    come and go (the usage flush builds its own on every pass)."""
    cached = window._slot
    if cached is not None and cached[0] <= now < cached[1]:
        start, end, base = cached
    else:
        start, end = lattice_bounds(window, now)
        base = _format(start)
        object.__setattr__(window, "_slot", (start, end, base))  # one assignment: atomic
    marker = window.reset_marker  # _active_marker, inlined
    if marker is None or not start <= marker <= now:
        return base, start, end
    return f"{base}r{_format(marker)}", marker, end
