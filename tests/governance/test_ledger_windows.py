"""Window arithmetic of the ledger: rolling lattices, calendar boundaries, reset markers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from governance.durations import parse_duration
from governance.ledger.windows import Window, window_bounds, window_key


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def test_rolling_window_lies_on_anchor_lattice() -> None:
    window = Window(parse_duration("1h"), anchor=600.0)
    assert window_bounds(window, 600.0) == (600.0, 4200.0)
    assert window_bounds(window, 4199.999) == (600.0, 4200.0)
    assert window_bounds(window, 4200.0) == (4200.0, 7800.0)
    assert window_bounds(window, 599.0) == (-3000.0, 600.0)


def test_rolling_lattice_does_not_drift_after_many_windows() -> None:
    anchor = ts(2024, 1, 1, 0, 7, 13) + 0.25
    window = Window(parse_duration("90s"), anchor=anchor)
    now = anchor + 90 * 1_000_003 + 5
    start, end = window_bounds(window, now)
    assert start == anchor + 90 * 1_000_003
    assert end - start == 90
    assert window_key(window, now) != window_key(window, end)


@pytest.mark.parametrize(
    ("duration", "now", "start", "end"),
    [
        pytest.param("1d", (2024, 3, 5, 13, 0), "2024-03-05T00:00:00+00:00",
                     "2024-03-06T00:00:00+00:00", id="day"),
        pytest.param("1w", (2024, 3, 7, 1, 0), "2024-03-04T00:00:00+00:00",
                     "2024-03-11T00:00:00+00:00", id="week-monday"),
        pytest.param("1M", (2024, 1, 31, 23, 59), "2024-01-01T00:00:00+00:00",
                     "2024-02-01T00:00:00+00:00", id="month-end"),
        pytest.param("1M", (2024, 2, 29, 12, 0), "2024-02-01T00:00:00+00:00",
                     "2024-03-01T00:00:00+00:00", id="leap-february"),
        pytest.param("1d", (2024, 2, 29, 23, 59), "2024-02-29T00:00:00+00:00",
                     "2024-03-01T00:00:00+00:00", id="leap-day"),
        pytest.param("1Q", (2024, 5, 15, 0, 0), "2024-04-01T00:00:00+00:00",
                     "2024-07-01T00:00:00+00:00", id="quarter"),
        pytest.param("1Y", (2024, 12, 31, 23, 59), "2024-01-01T00:00:00+00:00",
                     "2025-01-01T00:00:00+00:00", id="year"),
    ],
)
def test_calendar_windows(duration: str, now: tuple[int, ...], start: str, end: str) -> None:
    window = Window(parse_duration(duration), calendar_aligned=True, anchor=12345.0)
    got_start, got_end = window_bounds(window, ts(*now))
    assert (iso(got_start), iso(got_end)) == (start, end)


def test_calendar_ignores_anchor() -> None:
    a = Window(parse_duration("daily"), calendar_aligned=True, anchor=0.0)
    b = Window(parse_duration("daily"), calendar_aligned=True, anchor=ts(2024, 1, 1, 7))
    now = ts(2024, 6, 1, 3)
    assert window_key(a, now) == window_key(b, now)


def test_reset_marker_starts_a_fresh_key_until_the_window_ends() -> None:
    plain = Window(parse_duration("1h"), anchor=0.0)
    reset = Window(parse_duration("1h"), anchor=0.0, reset_marker=1800.0)
    assert window_key(reset, 1799.0) == window_key(plain, 1799.0)  # marker in the future
    assert window_key(reset, 1800.0) != window_key(plain, 1800.0)
    assert window_bounds(reset, 2000.0) == (1800.0, 3600.0)
    assert window_key(reset, 3600.0) == window_key(plain, 3600.0)  # next window: normal
    assert window_key(reset, 2000.0) == "0r1800"


@given(
    duration=st.sampled_from(["1s", "1m", "90s", "1h", "1d", "1w", "1M", "1Q", "1Y"]),
    aligned=st.booleans(),
    anchor=st.floats(min_value=0, max_value=2e9, allow_nan=False),
    offsets=st.lists(st.floats(min_value=0, max_value=1e8, allow_nan=False), min_size=1,
                     max_size=5),
    marker_offset=st.one_of(st.none(), st.floats(min_value=0, max_value=1e8)),
)
def test_cached_window_slot_matches_key_and_bounds(duration, aligned, anchor, offsets,
                                                   marker_offset):
    from governance.ledger.windows import window_slot

    marker = anchor + marker_offset if marker_offset is not None else None
    window = Window(parse_duration(duration), aligned, anchor, marker)
    for offset in sorted(offsets):  # the cache is reused across calls
        now = anchor + offset
        assert window_slot(window, now) == (window_key(window, now), *window_bounds(window, now))


def test_windows_hash_by_value_and_survive_a_round_trip_through_another_process() -> None:
    import dataclasses
    import pickle
    import subprocess
    import sys

    window = Window(parse_duration("1d"), calendar_aligned=True, anchor=5.0)
    same = Window(parse_duration("1d"), calendar_aligned=True, anchor=5.0)
    assert window == same and hash(window) == hash(same) and len({window, same}) == 1
    moved = dataclasses.replace(window, reset_marker=10.0)
    assert moved != window and moved.reset_marker == 10.0
    # Another interpreter hashes strings with another seed: its hash must be recomputed.
    check = ("import pickle, sys; w = pickle.loads(sys.stdin.buffer.read()); "
             "from governance.ledger.windows import Window; "
             "from governance.durations import parse_duration; "
             "assert {w: 1}[Window(parse_duration('1d'), True, 5.0)] == 1")
    completed = subprocess.run([sys.executable, "-c", check], input=pickle.dumps(window),
                               capture_output=True, env={"PYTHONHASHSEED": "123",
                                                         "PYTHONPATH": "."}, check=False)
    assert completed.returncode == 0, completed.stderr.decode()
