from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from governance.durations import (
    InvalidDuration,
    calendar_period_start,
    next_calendar_period_start,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds", "unit"),
    [
        ("30s", 30, "s"),
        ("5m", 300, "m"),
        ("1h", 3600, "h"),
        ("1h30m", 5400, "s"),
        ("1d", 86400, "d"),
        ("1.5d", 129600, "d"),
        ("1w", 604800, "w"),
        ("1M", 30 * 86400, "M"),
        ("1Q", 90 * 86400, "Q"),
        ("1Y", 365 * 86400, "Y"),
        ("daily", 86400, "d"),
        ("Weekly", 604800, "w"),
        ("monthly", 30 * 86400, "M"),
        ("quarterly", 90 * 86400, "Q"),
        ("yearly", 365 * 86400, "Y"),
    ],
)
def test_valid_durations(text, seconds, unit):
    duration = parse_duration(text)
    assert duration.seconds == seconds
    assert duration.unit == unit


@pytest.mark.parametrize(
    "text",
    ["", " ", "0s", "0d", "-1h", "+1h", "1", "1.5M", "1.5Q", "1d12h", "h", "1x", "1 h",
     "0.5s", "1ms", "1e3s", "101Y", "nan", None, 5, 1.5, [], {},
     "\u0663d", "\uff11d", "1\u0660m", "1h\u0663\u0660m"],  # digits other than ASCII ones
)
def test_invalid_durations_share_one_message(text):
    with pytest.raises(InvalidDuration) as error:
        parse_duration(text)
    assert "use a positive number followed by s, m, h, d, w, M, Q or Y" in str(error.value)


NOW = datetime(2026, 11, 25, 15, 7, 9, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("1h", datetime(2026, 11, 25, 15, tzinfo=UTC)),
        ("1d", datetime(2026, 11, 25, tzinfo=UTC)),
        ("1w", datetime(2026, 11, 23, tzinfo=UTC)),  # Monday
        ("1M", datetime(2026, 11, 1, tzinfo=UTC)),
        ("1Q", datetime(2026, 10, 1, tzinfo=UTC)),
        ("1Y", datetime(2026, 1, 1, tzinfo=UTC)),
        ("6M", datetime(2026, 7, 1, tzinfo=UTC)),
    ],
)
def test_calendar_period_start(text, start):
    assert calendar_period_start(parse_duration(text), NOW) == start


@pytest.mark.parametrize(
    ("text", "start", "following"),
    [
        ("1M", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)),
        ("1M", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        ("1Q", datetime(2026, 10, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        ("1Y", datetime(2028, 1, 1, tzinfo=UTC), datetime(2029, 1, 1, tzinfo=UTC)),
        ("1d", datetime(2024, 2, 28, tzinfo=UTC), datetime(2024, 2, 29, tzinfo=UTC)),
    ],
)
def test_next_calendar_period(text, start, following):
    assert next_calendar_period_start(parse_duration(text), start) == following


@given(
    st.sampled_from(["1m", "1h", "1d", "2d", "1w", "1M", "1Q", "6M", "1Y"]),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1),
                 timezones=st.just(UTC)),
)
def test_calendar_windows_contain_now_and_tile(text, now):
    duration = parse_duration(text)
    start = calendar_period_start(duration, now)
    following = next_calendar_period_start(duration, start)
    assert start <= now < following
    assert calendar_period_start(duration, following) == following
    assert calendar_period_start(duration, start) == start


@given(st.integers(min_value=1, max_value=5_000), st.sampled_from("smhdw"))
def test_integer_counts_round_trip(count, unit):
    duration = parse_duration(f"{count}{unit}")
    factor = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    assert duration.seconds == count * factor
