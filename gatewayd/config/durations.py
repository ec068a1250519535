# -*- test-case-name: tests.unit.test_config_durations -*-
"""
Go durations, as GatewayD's configuration writes them.

GatewayD (koanf + mapstructure) reads a duration either as a Go duration
string (C{"30s"}, C{"1h2m3.5s"}, C{"500ms"}) or as an integer number of
nanoseconds.  We keep durations as float seconds in Python, so this module
converts both ways, exactly (integer nanoseconds, no float rounding on parse).
"""

from __future__ import annotations

import re
from fractions import Fraction

#: Nanoseconds per unit, with every spelling Go's C{time.ParseDuration} accepts.
_UNITS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek small letter mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}

_MAX_NS = (1 << 63) - 1
_TERM = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")

#: A regular expression matching every string L{parse_duration} accepts (used by the JSON Schema).
GO_DURATION_PATTERN = (
    r"^[-+]?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h))+)$"
)


def parse_duration(value: object) -> float:
    """
    Parse a GatewayD duration into float seconds.

    @param value: a Go duration string (C{"1m30s"}, C{"-1.5h"}, C{"0"}) or an
        C{int} of nanoseconds.  Booleans and floats are refused: YAML turns
        C{1.5} into a float, and Go would refuse it too.
    @raise ValueError: with a message fit for a config error.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(
            f"expected a duration such as '30s', '1m', '500ms' or integer nanoseconds, got {value!r}")
    if isinstance(value, int):
        if abs(value) > _MAX_NS:
            raise ValueError(f"duration {value} ns is out of range")
        return value / 1e9
    return _parse_go(value) / 1e9


def _parse_go(text: str) -> int:
    """Go's C{time.ParseDuration}, returning integer nanoseconds."""
    original = text
    sign = -1 if text[:1] == "-" else 1
    if text[:1] in ("-", "+"):
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise ValueError(f"invalid duration {original!r}")
    total = Fraction(0)
    pos = 0
    while pos < len(text):
        match = _TERM.match(text, pos)
        whole, frac, unit = match.groups() if match else ("", None, "")
        if match is None or (not whole and not frac):
            raise ValueError(f"invalid duration {original!r}")
        if not unit:
            hint = f" (e.g. '{original.lstrip('+')}s')" if pos == 0 else ""
            raise ValueError(f"missing unit in duration {original!r}{hint}")
        if unit not in _UNITS:
            raise ValueError(
                f"unknown unit {unit!r} in duration {original!r} (use ns, us, ms, s, m or h)")
        number = Fraction(int(whole or "0"))
        if frac:
            number += Fraction(int(frac), 10 ** len(frac))
        total += number * _UNITS[unit]
        pos = match.end()
    nanos = int(total)  # Go truncates fractions of a nanosecond
    if nanos > _MAX_NS:
        raise ValueError(f"duration {original!r} is out of range")
    return sign * nanos


def to_nanoseconds(seconds: float) -> int:
    """Float seconds to integer nanoseconds, rounding to the nearest."""
    return round(seconds * 1_000_000_000)


def format_duration(seconds: float) -> str:
    """
    Format float seconds the way Go's C{time.Duration.String()} does:
    C{"0s"}, C{"500ms"}, C{"1.5µs"}, C{"1m0s"}, C{"1h2m3.5s"}.

    GatewayD sends durations in this form in hook payloads (C{OnConfigLoaded}).
    """
    nanos = to_nanoseconds(seconds)
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    rest = abs(nanos)
    if rest < 1_000:
        return f"{sign}{rest}ns"
    if rest < 1_000_000:
        return f"{sign}{_fraction(rest, 3)}\u00b5s"
    if rest < 1_000_000_000:
        return f"{sign}{_fraction(rest, 6)}ms"
    text = f"{_fraction(rest % 60_000_000_000, 9)}s"
    minutes = rest // 60_000_000_000
    if minutes:
        text = f"{minutes % 60}m{text}"
        if minutes >= 60:
            text = f"{minutes // 60}h{text}"
    return sign + text


def compact_duration(seconds: float) -> str:
    """
    A short, still valid, Go duration for humans: C{"1m"} rather than C{"1m0s"}.
    Used when rendering YAML; L{format_duration} is the wire form.
    """
    nanos = to_nanoseconds(seconds)
    if nanos == 0:
        return "0s"
    if abs(nanos) % 1_000_000_000:
        return format_duration(seconds)
    sign = "-" if nanos < 0 else ""
    total = abs(nanos) // 1_000_000_000
    hours, rem = divmod(total, 3600)
    minutes, secs = divmod(rem, 60)
    parts = [f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return sign + "".join(parts)


def _fraction(value: int, digits: int) -> str:
    """C{value / 10**digits} with trailing zeros (and a bare dot) removed, as Go's fmtFrac."""
    whole, frac = divmod(value, 10 ** digits)
    if not frac:
        return str(whole)
    return f"{whole}.{frac:0{digits}d}".rstrip("0")
