"""
Logging groups over twisted.logger: levels per group, JSON and console
formats, Go time layouts, and outputs that fail without hurting the caller.
"""

from __future__ import annotations

import io
import json
import os
from datetime import timezone

import pytest
from twisted.logger import ILogFilterPredicate, ILogObserver, Logger, LogLevel
from zope.interface.verify import verifyObject

from gatewayd.config.schema import Logger as LoggerConfig
from gatewayd.errors import ConfigError
from gatewayd.observability.formats import (
    TRACE_KEY, go_time_layout, render_console, render_json, unix_time,
)
from gatewayd.observability.logging import GatewayLogging, GroupLogger, trace

#: 2023-11-14T22:13:20.123456Z
WHEN = 1700000000.123456


class Streams:
    def __init__(self, tty: bool = False) -> None:
        self.out = io.StringIO()
        self.err = _Tty() if tty else io.StringIO()

    def logging(self, config: dict[str, LoggerConfig], **kw) -> GatewayLogging:
        return GatewayLogging(config, stdout=lambda: self.out, stderr=lambda: self.err, **kw)

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.out.getvalue().splitlines()]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def event(level: LogLevel = LogLevel.info, fmt: str | None = "hello {who}", **kw) -> dict:
    return {"log_level": level, "log_format": fmt, "log_time": WHEN, "log_namespace": "t",
            "log_source": None, "who": "world", **kw}


# -- JSON lines ---------------------------------------------------------------

def test_json_line_has_zerolog_fields() -> None:
    line = render_json({**event(), "group": "default", "n": 3, "ok": True}, "unix")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {
        "level": "info", "time": 1700000000, "group": "default", "who": "world", "n": 3,
        "ok": True, "message": "hello world",
    }


@pytest.mark.parametrize("fmt,expected", [
    ("unix", 1700000000),
    ("unixms", 1700000000123),
    ("unixmicro", 1700000000123456),
    ("unixnano", 1700000000123456000),
])
def test_json_time_formats(fmt: str, expected: int) -> None:
    assert unix_time(WHEN, fmt) == expected
    assert json.loads(render_json(event(), fmt))["time"] == expected


@pytest.mark.parametrize("level,extra,name", [
    (LogLevel.debug, {TRACE_KEY: True}, "trace"),
    (LogLevel.debug, {}, "debug"),
    (LogLevel.info, {}, "info"),
    (LogLevel.warn, {}, "warn"),
    (LogLevel.error, {}, "error"),
    (LogLevel.critical, {}, "fatal"),
])
def test_json_level_names(level: LogLevel, extra: dict, name: str) -> None:
    record = json.loads(render_json(event(level, **extra), "unix"))
    assert record["level"] == name
    assert TRACE_KEY not in record


def test_json_failure_and_unserialisable_fields() -> None:
    try:
        raise KeyError("missing")
    except KeyError:
        from twisted.python.failure import Failure
        failure = Failure()

    class Opaque:
        def __str__(self) -> str:
            return "opaque!"

    record = json.loads(render_json(event(log_failure=failure, thing=Opaque(),
                                          blob=b"\x00"), "unix"))
    assert record["error"] == "KeyError: 'missing'"
    assert "Traceback" in record["stack"] and "KeyError" in record["stack"]
    assert record["thing"] == "opaque!"
    assert record["blob"] == "b'\\x00'"
    assert not any(k.startswith("log_") for k in record)


def test_json_survives_unserialisable_structures() -> None:
    loop: list = []
    loop.append(loop)
    record = json.loads(render_json(event(loop=loop), "unix"))
    assert record["loop"] == "[[...]]" and record["message"] == "hello world"


def test_json_without_message_omits_it() -> None:
    assert "message" not in json.loads(render_json(event(fmt=None, who="x"), "unix"))


# -- console and Go layouts ---------------------------------------------------

@pytest.mark.parametrize("name,expected", [
    ("Layout", "11/14 10:13:20PM '23 +0000"),
    ("ANSIC", "Tue Nov 14 22:13:20 2023"),
    ("UnixDate", "Tue Nov 14 22:13:20 UTC 2023"),
    ("RubyDate", "Tue Nov 14 22:13:20 +0000 2023"),
    ("RFC822", "14 Nov 23 22:13 UTC"),
    ("RFC822Z", "14 Nov 23 22:13 +0000"),
    ("RFC850", "Tuesday, 14-Nov-23 22:13:20 UTC"),
    ("RFC1123", "Tue, 14 Nov 2023 22:13:20 UTC"),
    ("RFC1123Z", "Tue, 14 Nov 2023 22:13:20 +0000"),
    ("RFC3339", "2023-11-14T22:13:20Z"),
    ("RFC3339Nano", "2023-11-14T22:13:20.123456Z"),
    ("Kitchen", "10:13PM"),
    ("Stamp", "Nov 14 22:13:20"),
    ("StampMilli", "Nov 14 22:13:20.123"),
    ("StampMicro", "Nov 14 22:13:20.123456"),
    ("StampNano", "Nov 14 22:13:20.123456000"),
])
def test_go_layouts(name: str, expected: str) -> None:
    assert go_time_layout(name, timezone.utc)(1700000000.123456) == expected


def test_go_layout_details() -> None:
    from datetime import timedelta
    plus_five_thirty = timezone(timedelta(hours=5, minutes=30), "IST")
    assert go_time_layout("RFC3339", plus_five_thirty)(1700000000) == "2023-11-15T03:43:20+05:30"
    assert go_time_layout("RFC3339Nano", timezone.utc)(1700000000.0) == "2023-11-14T22:13:20Z"
    # _2 pads the day with a space; Kitchen has an unpadded 12-hour clock
    assert go_time_layout("Stamp", timezone.utc)(1699000000) == "Nov  3 08:26:40"
    assert go_time_layout("Kitchen", timezone.utc)(1699000000) == "8:26AM"


def test_console_line_plain_and_coloured() -> None:
    layout = go_time_layout("RFC3339", timezone.utc)
    line = render_console({**event(LogLevel.warn), "group": "default", "note": "two words"},
                          layout, colour=False)
    assert line == ('2023-11-14T22:13:20Z WRN hello world group=default note="two words" '
                    'who=world\n')
    coloured = render_console({**event(LogLevel.error), "group": "g"}, layout, colour=True)
    assert "\x1b[1;31mERR\x1b[0m" in coloured
    assert "\x1b[36mgroup=\x1b[0mg" in coloured


# -- groups and levels --------------------------------------------------------------

def test_per_group_levels_and_outputs() -> None:
    streams = Streams()
    logging = streams.logging({
        "default": LoggerConfig(output=["stdout"], level="debug"),
        "quiet": LoggerConfig(output=["stdout"], level="error", time_format="unixms"),
    })
    loud, quiet = logging.logger("default", "a"), logging.logger("quiet", "b")
    for log in (loud, quiet):
        log.debug("debug {n}", n=1)
        log.info("info")
        log.error("error")
    records = streams.json_lines()
    assert [(r["group"], r["level"]) for r in records] == [
        ("default", "debug"), ("default", "info"), ("default", "error"), ("quiet", "error")]
    assert records[0]["n"] == 1
    assert records[-1]["time"] > 10**12  # the quiet group's own time format (ms)
    assert records[0]["time"] < 10**11


def test_trace_level() -> None:
    streams = Streams()
    logging = streams.logging({
        "default": LoggerConfig(output=["stdout"], level="trace"),
        "other": LoggerConfig(output=["stdout"], level="debug"),
    })
    logging.logger("default", "a").trace("traced {x}", x=1)
    logging.logger("other", "a").trace("dropped")
    trace(logging.logger("default", "a"), "plain helper")
    assert [(r["level"], r["message"]) for r in streams.json_lines()] == [
        ("trace", "traced 1"), ("trace", "plain helper")]
    assert logging.is_enabled("default", "trace")
    assert not logging.is_enabled("other", "trace")
    assert logging.is_enabled("other", "debug")


@pytest.mark.parametrize("level,enabled", [
    ("info", ["info", "warn", "error", "fatal"]),
    ("warn", ["warn", "error", "fatal"]),
    ("fatal", ["fatal", "panic"]),
    ("panic", ["fatal", "panic"]),
    ("disabled", []),
    ("nonsense", ["info", "warn", "error", "fatal"]),  # unknown means info, as GatewayD
])
def test_is_enabled(level: str, enabled: list[str]) -> None:
    logging = Streams().logging({"default": LoggerConfig(output=["stdout"], level=level)})
    log = logging.logger("default", "x")
    for name in ("trace", "debug", "info", "warn", "error", "fatal", "panic"):
        expected = name in enabled or (name == "panic" and "fatal" in enabled)
        assert logging.is_enabled("default", name) is expected, name
        assert log.is_enabled(name) is expected, name


def test_disabled_group_writes_nothing() -> None:
    streams = Streams()
    logging = streams.logging({"default": LoggerConfig(output=["stdout"], level="disabled")})
    logging.logger("default", "x").critical("no")
    assert streams.out.getvalue() == ""


def test_unknown_group_uses_default_chain_but_keeps_its_name() -> None:
    streams = Streams()
    logging = streams.logging({"default": LoggerConfig(output=["stdout"], level="info")})
    logging.logger("tenant9", "x").info("hi")
    assert streams.json_lines()[0]["group"] == "tenant9"
    assert logging.is_enabled("tenant9", "info") and not logging.is_enabled("tenant9", "debug")


def test_missing_default_group_gets_defaults() -> None:
    streams = Streams()
    logging = streams.logging({"tenant": LoggerConfig(output=["stdout"])})
    assert set(logging.groups) == {"tenant", "default"}
    logging.logger("default", "x").info("to console")
    assert "INF to console group=default" in streams.err.getvalue()


def test_console_output_colour_rules() -> None:
    tty = Streams(tty=True)
    tty.logging({"default": LoggerConfig(output=["console"])}).logger("default", "x").info("c")
    assert "\x1b[" in tty.err.getvalue()
    plain = Streams(tty=True)
    plain.logging({"default": LoggerConfig(output=["console"], no_color=True)}).logger(
        "default", "x").info("c")
    assert "\x1b[" not in plain.err.getvalue() and " INF c group=default" in plain.err.getvalue()
    not_tty = Streams()
    not_tty.logging({"default": LoggerConfig(output=["console"])}).logger("default", "x").info("c")
    assert "\x1b[" not in not_tty.err.getvalue()


def test_unknown_and_empty_outputs_mean_console() -> None:
    for outputs in ([], ["carrier-pigeon"]):
        streams = Streams()
        streams.logging({"default": LoggerConfig(output=outputs)}).logger("default", "x").info("c")
        assert " INF c group=default" in streams.err.getvalue()
        assert streams.out.getvalue() == ""


def test_stderr_output_is_json() -> None:
    streams = Streams()
    streams.logging({"default": LoggerConfig(output=["stderr"])}).logger("default", "x").warn("w")
    assert json.loads(streams.err.getvalue())["level"] == "warn"


def test_group_logger_is_a_twisted_logger_and_works_as_descriptor() -> None:
    streams = Streams()
    logging = streams.logging({"default": LoggerConfig(output=["stdout"], level="debug")})

    class Relay:
        log = logging.logger("default", "gatewayd.relay")

        def go(self) -> None:
            self.log.debug("relaying for {me}", me="relay")
            self.log.trace("not at debug")

    Relay().go()
    assert isinstance(Relay.log, GroupLogger) and isinstance(Relay.log, Logger)
    assert [r["message"] for r in streams.json_lines()] == ["relaying for relay"]
    assert streams.json_lines()[0]["group"] == "default"
    assert verifyObject(ILogObserver, logging.observer("default"))
    predicate = logging.observer("default").chain.predicate
    assert verifyObject(ILogFilterPredicate, predicate)


def test_routing_foreign_events_through_a_group_observer() -> None:
    streams = Streams()
    logging = streams.logging({"default": LoggerConfig(output=["stdout"])})
    foreign = Logger(namespace="twisted.web", observer=logging.observer("default"))
    foreign.info("Site starting on {port}", port=9090)
    logging.observer("default")({"log_format": "no level at all", "log_time": WHEN})
    records = streams.json_lines()
    assert records[0]["message"] == "Site starting on 9090" and records[0]["port"] == 9090
    assert records[1] == {"level": "info", "time": 1700000000, "group": "default",
                          "message": "no level at all"}


def test_failing_output_is_counted_reported_once_and_spares_the_others() -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    err = io.StringIO()
    logging = GatewayLogging({"default": LoggerConfig(output=["stdout", "stderr"])},
                             stdout=lambda: Broken(), stderr=lambda: err)
    log = logging.logger("default", "x")
    log.info("one")
    log.info("two")
    assert logging.errors == {"default.stdout": 2}
    lines = err.getvalue().splitlines()
    reports = [line for line in lines if line.startswith("gatewayd: log output")]
    assert len(reports) == 1 and "default.stdout" in reports[0]
    assert [json.loads(line)["message"] for line in lines if line.startswith("{")] == [
        "one", "two"]


def test_file_output_writes_json_lines(tmp_path) -> None:
    path = tmp_path / "logs" / "gatewayd.log"
    logging = Streams().logging({
        "default": LoggerConfig(output=["file"], file_name=str(path)),
        "t2": LoggerConfig(output=["file"], file_name=str(path), level="warn"),
    })
    logging.start()
    logging.logger("default", "x").info("first")
    logging.logger("t2", "x").info("hidden")
    logging.logger("t2", "x").warn("second")
    logging.stop()
    logging.logger("default", "x").info("after stop is dropped")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["group"], r["message"]) for r in records] == [("default", "first"), ("t2", "second")]
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_unwritable_log_file_is_a_config_error(tmp_path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    logging = Streams().logging(
        {"default": LoggerConfig(output=["file"], file_name=str(blocker / "gatewayd.log"))},
        config_path="etc/gatewayd.yaml")
    with pytest.raises(ConfigError) as info:
        logging.start()
    assert info.value.key == "loggers.default.fileName"
    assert str(info.value).startswith("etc/gatewayd.yaml: loggers.default.fileName: cannot open")


def test_service_start_and_stop(tmp_path) -> None:
    path = tmp_path / "g.log"
    logging = Streams().logging({"default": LoggerConfig(output=["file"], file_name=str(path))})
    logging.startService()
    assert logging.running and path.exists()
    logging.stopService()
    assert not logging.running


def test_logging_before_start_opens_once(tmp_path) -> None:
    path = tmp_path / "early.log"
    logging = Streams().logging({"default": LoggerConfig(output=["file"], file_name=str(path))})
    rotating = next(iter(logging.sinks("default"))).file
    logging.logger("default", "x").info("before start")
    fd = rotating._fd
    assert fd is not None
    logging.start()
    logging.logger("default", "x").info("after start")
    assert rotating._fd == fd  # start() did not open a second descriptor
    logging.stop()
    assert rotating._fd is None
    assert [json.loads(line)["message"] for line in path.read_text().splitlines()] == [
        "before start", "after start"]


@pytest.mark.parametrize("network,address", [("tcp", "localhost:syslog"), ("udp", "h:0"),
                                             ("unix", ""), ("tcp", "h:70000")])
def test_bad_rsyslog_address_is_a_config_error(network: str, address: str) -> None:
    with pytest.raises(ConfigError) as info:
        Streams().logging({"t": LoggerConfig(output=["rsyslog"], rsyslog_network=network,
                                             rsyslog_address=address)},
                          config_path="etc/gatewayd.yaml")
    assert info.value.key == "loggers.t.rsyslogAddress"


def test_rsyslog_address_forms() -> None:
    from gatewayd.observability.syslog import parse_address

    assert parse_address("tcp", "localhost:514") == ("localhost", 514)
    assert parse_address("udp", "[::1]:1514") == ("::1", 1514)
    assert parse_address("udp", "[::1]") == ("::1", 514)
    assert parse_address("tcp", "syslog.example") == ("syslog.example", 514)
    assert parse_address("unix", "/dev/log") == "/dev/log"
