# -*- test-case-name: tests.unit.test_observability_logging -*-
"""
How one log event becomes text: zerolog-compatible JSON lines, a zerolog-like
human console line, and Go's named time layouts.

GatewayD logs through zerolog, so log shippers already parse C{level}, C{time}
and C{message}; we keep those names and level spellings.  Twisted's logger has
no trace level, so a trace event is a debug event carrying L{TRACE_KEY}.
"""

from __future__ import annotations

import json
import time as _time
from datetime import datetime, timezone
from typing import Any, Callable

from twisted.logger import LogLevel, formatEvent

#: Event key marking a debug event as trace (C{log_trace} is taken by Twisted).
TRACE_KEY = "gatewayd_trace"

#: Config level name -> rank; an event passes when its rank >= the group's.
LEVEL_RANKS: dict[str, int] = {
    "trace": 0, "debug": 1, "info": 2, "warn": 3, "error": 4, "fatal": 5, "panic": 5,
    "disabled": 99,
}

_TWISTED_RANKS: dict[LogLevel, int] = {
    LogLevel.debug: 1, LogLevel.info: 2, LogLevel.warn: 3, LogLevel.error: 4,
    LogLevel.critical: 5,
}
_RANK_NAMES = ("trace", "debug", "info", "warn", "error", "fatal")

#: Keys that never become JSON fields: ours, and legacy twisted.python.log keys.
_RESERVED = frozenset((
    "level", "time", "group", "message", TRACE_KEY,
    "isError", "system", "why", "failure", "format",
))


def event_rank(event: dict[str, Any]) -> int:
    """The L{LEVEL_RANKS} rank of an event (info when it has no level)."""
    rank = _TWISTED_RANKS.get(event.get("log_level", LogLevel.info), 2)  # type: ignore[arg-type]
    if rank == 1 and event.get(TRACE_KEY):
        return 0
    return rank


def level_name(event: dict[str, Any]) -> str:
    """zerolog's spelling of the event's level; Twisted's critical is C{fatal}."""
    return _RANK_NAMES[event_rank(event)]


def unix_time(seconds: float, time_format: str) -> int:
    """
    The JSON C{time} field: integer seconds, ms, µs or ns since the epoch.
    Event times are float seconds (about 0.2 µs resolution today), so
    nanoseconds are whole microseconds rather than invented digits.
    """
    if time_format == "unixms":
        return int(seconds * 1_000)
    if time_format == "unixmicro":
        return round(seconds * 1_000_000)
    if time_format == "unixnano":
        return round(seconds * 1_000_000) * 1_000
    return int(seconds)


def _json_default(value: object) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the line
        return f"<unprintable {type(value).__name__}>"


def event_fields(event: dict[str, Any]) -> dict[str, Any]:
    """The caller's own key/value pairs of an event (no C{log_*}, no reserved names)."""
    return {k: v for k, v in event.items()
            if not k.startswith("log_") and k not in _RESERVED}


def render_json(event: dict[str, Any], time_format: str) -> bytes:
    """
    One JSON line, zerolog style: C{level}, C{time}, C{group}, the event's
    fields, C{error}/C{stack} for failures, then C{message} (omitted when empty).
    """
    out: dict[str, Any] = {
        "level": level_name(event),
        "time": unix_time(event.get("log_time") or _time.time(), time_format),
    }
    if "group" in event:
        out["group"] = event["group"]
    out.update(event_fields(event))
    failure = event.get("log_failure")
    if failure is not None:
        out["error"] = _describe_error(failure)
        out["stack"] = failure.getTraceback()
    message = formatEvent(event)
    if message:
        out["message"] = message
    try:
        text = json.dumps(out, default=_json_default, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):  # e.g. a self-referencing list
        flat = {k: v if isinstance(v, (str, int, float, bool, type(None))) else _json_default(v)
                for k, v in out.items()}
        text = json.dumps(flat, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8") + b"\n"


def _describe_error(failure: Any) -> str:
    value = failure.value
    text = str(value)
    name = type(value).__name__
    return f"{name}: {text}" if text else name


# -- console ------------------------------------------------------------------

_LEVEL_TAGS = ("TRC", "DBG", "INF", "WRN", "ERR", "FTL")
_LEVEL_COLOURS = ("35", "33", "32", "31", "1;31", "1;31")  # zerolog's choices
_DIM, _CYAN, _RED = "90", "36", "31"


def _paint(text: str, code: str, colour: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if colour else text


def _console_value(value: object) -> str:
    if isinstance(value, str):
        needs_quotes = not value or any(c.isspace() or c in '"=\\' for c in value)
        return json.dumps(value, ensure_ascii=False) if needs_quotes else value
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    return _console_value(_json_default(value))


def render_console(event: dict[str, Any], time_layout: Callable[[float], str],
                   colour: bool) -> str:
    """
    One human line like zerolog's ConsoleWriter: C{time LVL message k=v ...}
    with fields sorted; a failure adds C{error=} and its traceback below.
    """
    rank = event_rank(event)
    parts = [
        _paint(time_layout(event.get("log_time") or _time.time()), _DIM, colour),
        _paint(_LEVEL_TAGS[rank], _LEVEL_COLOURS[rank], colour),
    ]
    message = formatEvent(event)
    if message:
        parts.append(message)
    fields = event_fields(event)
    if "group" in event:
        fields["group"] = event["group"]
    failure = event.get("log_failure")
    if failure is not None:
        fields["error"] = _describe_error(failure)
    for name in sorted(fields):
        value = _console_value(fields[name])
        if name == "error":
            value = _paint(value, _RED, colour)
        parts.append(_paint(name + "=", _CYAN, colour) + value)
    line = " ".join(parts) + "\n"
    if failure is not None:
        line += failure.getTraceback()
    return line


# -- Go time layouts ---------------------------------------------------------

#: Go's named layouts (package time), accepted by C{consoleTimeFormat}.
GO_LAYOUTS: dict[str, str] = {
    "Layout": "01/02 03:04:05PM '06 -0700",
    "ANSIC": "Mon Jan _2 15:04:05 2006",
    "UnixDate": "Mon Jan _2 15:04:05 MST 2006",
    "RubyDate": "Mon Jan 02 15:04:05 -0700 2006",
    "RFC822": "02 Jan 06 15:04 MST",
    "RFC822Z": "02 Jan 06 15:04 -0700",
    "RFC850": "Monday, 02-Jan-06 15:04:05 MST",
    "RFC1123": "Mon, 02 Jan 2006 15:04:05 MST",
    "RFC1123Z": "Mon, 02 Jan 2006 15:04:05 -0700",
    "RFC3339": "2006-01-02T15:04:05Z07:00",
    "RFC3339Nano": "2006-01-02T15:04:05.999999999Z07:00",
    "Kitchen": "3:04PM",
    "Stamp": "Jan _2 15:04:05",
    "StampMilli": "Jan _2 15:04:05.000",
    "StampMicro": "Jan _2 15:04:05.000000",
    "StampNano": "Jan _2 15:04:05.000000000",
}

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _offset(dt: datetime, colon: bool, z: bool) -> str:
    delta = dt.utcoffset()
    minutes = int(delta.total_seconds() // 60) if delta is not None else 0
    if z and minutes == 0:
        return "Z"
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{mins:02d}" if colon else f"{sign}{hours:02d}{mins:02d}"


def _hour12(dt: datetime) -> int:
    return dt.hour % 12 or 12


def _trimmed_nanos(ns: int) -> str:
    digits = f"{ns:09d}".rstrip("0")
    return "." + digits if digits else ""


# Longest first where one token is a prefix of another ("Monday" before "Mon").
_TOKENS: tuple[tuple[str, Callable[[datetime, int], str]], ...] = (
    ("2006", lambda d, ns: f"{d.year:04d}"),
    ("January", lambda d, ns: _MONTHS[d.month - 1]),
    ("Jan", lambda d, ns: _MONTHS[d.month - 1][:3]),
    ("Monday", lambda d, ns: _DAYS[d.weekday()]),
    ("Mon", lambda d, ns: _DAYS[d.weekday()][:3]),
    ("MST", lambda d, ns: d.tzname() or _offset(d, False, False)),
    ("Z07:00", lambda d, ns: _offset(d, True, True)),
    ("-0700", lambda d, ns: _offset(d, False, False)),
    (".000000000", lambda d, ns: f".{ns:09d}"),
    (".000000", lambda d, ns: f".{ns // 1000:06d}"),
    (".000", lambda d, ns: f".{ns // 1_000_000:03d}"),
    (".999999999", lambda d, ns: _trimmed_nanos(ns)),
    ("01", lambda d, ns: f"{d.month:02d}"),
    ("02", lambda d, ns: f"{d.day:02d}"),
    ("_2", lambda d, ns: f"{d.day:2d}"),
    ("15", lambda d, ns: f"{d.hour:02d}"),
    ("03", lambda d, ns: f"{_hour12(d):02d}"),
    ("04", lambda d, ns: f"{d.minute:02d}"),
    ("05", lambda d, ns: f"{d.second:02d}"),
    ("06", lambda d, ns: f"{d.year % 100:02d}"),
    ("PM", lambda d, ns: "PM" if d.hour >= 12 else "AM"),
    ("3", lambda d, ns: str(_hour12(d))),
)


def go_time_layout(name: str, tz: timezone | None = None) -> Callable[[float], str]:
    """
    A formatter for Go layout C{name} (see L{GO_LAYOUTS}; unknown names mean
    RFC3339), compiled once.  Times are shown in local time unless C{tz}.
    """
    layout = GO_LAYOUTS.get(name, GO_LAYOUTS["RFC3339"])
    pieces: list[str | Callable[[datetime, int], str]] = []
    i = 0
    while i < len(layout):
        for token, render in _TOKENS:
            if layout.startswith(token, i):
                pieces.append(render)
                i += len(token)
                break
        else:
            if pieces and isinstance(pieces[-1], str):
                pieces[-1] += layout[i]
            else:
                pieces.append(layout[i])
            i += 1

    def format_time(seconds: float) -> str:
        micros = round(seconds * 1_000_000)  # float seconds carry no real nanoseconds
        whole, ns = micros // 1_000_000, micros % 1_000_000 * 1_000
        dt = datetime.fromtimestamp(whole, tz) if tz else datetime.fromtimestamp(whole).astimezone()
        return "".join(p if isinstance(p, str) else p(dt, ns) for p in pieces)

    return format_time
