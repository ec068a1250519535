"""Go durations (gatewayd.config.durations): parsing as time.ParseDuration, printing as Duration.String()."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from gatewayd.config.durations import (
    GO_DURATION_PATTERN, compact_duration, format_duration, parse_duration,
)


@pytest.mark.parametrize("text, seconds", [
    ("0", 0.0),
    ("-0", 0.0),
    ("+0", 0.0),
    ("0s", 0.0),
    ("30s", 30.0),
    ("1m", 60.0),
    ("1h", 3600.0),
    ("1h2m3.5s", 3723.5),
    ("500ms", 0.5),
    ("250us", 0.00025),
    ("250\u00b5s", 0.00025),   # micro sign
    ("250\u03bcs", 0.00025),   # Greek mu
    ("10ns", 1e-08),
    ("1.5h", 5400.0),
    (".5s", 0.5),
    ("1.s", 1.0),
    ("-1s", -1.0),
    ("+5s", 5.0),
    ("1m30s", 90.0),
    ("2h45m", 9900.0),
    ("100ms200us", 0.1002),
    ("1.0000000001s", 1.0),  # fractions of a nanosecond are truncated, as in Go
])
def test_parse_go_strings(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-12)


def test_integers_are_nanoseconds_like_gatewayd() -> None:
    assert parse_duration(30_000_000_000) == 30.0
    assert parse_duration(1) == 1e-9
    assert parse_duration(0) == 0.0


@pytest.mark.parametrize("value, message", [
    ("30", "missing unit in duration '30' (e.g. '30s')"),
    ("1s2", "missing unit in duration '1s2'"),
    ("", "invalid duration ''"),
    ("s", "invalid duration 's'"),
    (".s", "invalid duration '.s'"),
    ("-", "invalid duration '-'"),
    ("1x", "unknown unit 'x' in duration '1x' (use ns, us, ms, s, m or h)"),
    ("1 s", "unknown unit ' s' in duration '1 s' (use ns, us, ms, s, m or h)"),
    ("1S", "unknown unit 'S' in duration '1S' (use ns, us, ms, s, m or h)"),
    ("3000000h", "duration '3000000h' is out of range"),
    (True, "expected a duration such as '30s', '1m', '500ms' or integer nanoseconds, got True"),
    (1.5, "expected a duration such as '30s', '1m', '500ms' or integer nanoseconds, got 1.5"),
    (None, "expected a duration such as '30s', '1m', '500ms' or integer nanoseconds, got None"),
    (1 << 63, f"duration {1 << 63} ns is out of range"),
])
def test_bad_durations_say_why(value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    assert str(caught.value) == message


@pytest.mark.parametrize("seconds, text", [
    # Go's own table for Duration.String
    (0, "0s"),
    (1e-9, "1ns"),
    (1.1e-6, "1.1\u00b5s"),
    (2.2e-3, "2.2ms"),
    (3.3, "3.3s"),
    (245, "4m5s"),
    (245.001, "4m5.001s"),
    (18367.001, "5h6m7.001s"),
    (480.000000001, "8m0.000000001s"),
    (60, "1m0s"),
    (3600, "1h0m0s"),
    (0.5, "500ms"),
    (-1.5, "-1.5s"),
    (-0.000001, "-1\u00b5s"),
])
def test_format_like_go(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (60, "1m"), (3600, "1h"), (90, "1m30s"), (30, "30s"), (3723, "1h2m3s"),
    (0.5, "500ms"), (1.5, "1.5s"), (-60, "-1m"),
])
def test_compact_form_for_humans(seconds: float, text: str) -> None:
    assert compact_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@given(st.integers(min_value=-10**15, max_value=10**15))
def test_format_then_parse_round_trips(nanos: int) -> None:
    seconds = nanos / 1e9
    assert round(parse_duration(format_duration(seconds)) * 1e9) == nanos
    assert round(parse_duration(compact_duration(seconds)) * 1e9) == nanos


@given(st.integers(min_value=-10**15, max_value=10**15))
def test_schema_pattern_accepts_what_we_print(nanos: int) -> None:
    assert re.match(GO_DURATION_PATTERN, format_duration(nanos / 1e9))


@pytest.mark.parametrize("text", ["30", "1x", "", "s", "1 s", ".s"])
def test_schema_pattern_refuses_what_we_refuse(text: str) -> None:
    assert not re.match(GO_DURATION_PATTERN, text)
