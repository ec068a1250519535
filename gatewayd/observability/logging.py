# -*- test-case-name: tests.unit.test_observability_logging -*-
"""
Logging through C{twisted.logger}, configured by C{loggers.<group>}.

Each logger group gets its own observer chain (level filter, then its outputs),
and L{GatewayLogging.logger} hands out C{twisted.logger.Logger}s bound to that
chain.  So per-group levels and outputs really are per group: in GatewayD the
zerolog level and time format are process-global and the last group configured
wins.  Every event carries C{group}.

Levels: C{trace} (a debug event marked with L{TRACE_KEY}; use
L{GroupLogger.trace} or L{trace}), C{debug}, C{info}, C{warn}, C{error},
C{fatal}/C{panic} (Twisted's C{critical}; logging one does not exit), and
C{disabled}.  Unknown levels mean C{info} and unknown outputs C{console}, as
in GatewayD.

Outputs: C{console} (zerolog-like human lines on stderr, coloured on a TTY
unless C{noColor}), C{stdout}/C{stderr} (JSON lines), C{file} (JSON lines,
lumberjack-style rotation, see L{gatewayd.observability.rotation}), C{syslog}
and C{rsyslog} (JSON lines as the message, see
L{gatewayd.observability.syslog}).  A failing output never raises into the
caller: failures are counted in L{GatewayLogging.errors} and reported once on
stderr.  Syslog severity follows each event's level (GatewayD does that only
for C{rsyslog}); C{syslogPriority} applies to events without a level.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Sequence, TextIO

from twisted.application.service import Service
from twisted.logger import (
    FilteringLogObserver, ILogFilterPredicate, ILogObserver, LogLevel, Logger, PredicateResult,
)
from zope.interface import implementer

from gatewayd.config.schema import Logger as LoggerConfig
from gatewayd.errors import ConfigError
from gatewayd.observability.formats import (
    LEVEL_RANKS, TRACE_KEY, event_rank, go_time_layout, render_console, render_json,
)
from gatewayd.observability.rotation import RotatingFile
from gatewayd.observability.syslog import LOCAL_SOCKETS, SEVERITIES, SyslogSender

__all__ = ["GatewayLogging", "GroupLogger", "TRACE_KEY", "trace"]

#: Event rank -> syslog severity (trace/debug, info, warn, error, fatal).
_SYSLOG_SEVERITY = (7, 7, 6, 4, 3, 2)


def trace(log: Logger, format: str | None = None, **kwargs: object) -> None:
    """Emit a trace event on any Twisted C{Logger} (a debug event marked as trace)."""
    kwargs[TRACE_KEY] = True
    log.emit(LogLevel.debug, format, **kwargs)


class GroupLogger(Logger):
    """
    A C{twisted.logger.Logger} bound to one group's chain, with C{trace()} and
    C{is_enabled()} so hot code can skip building events nobody will see.
    """

    def trace(self, format: str | None = None, **kwargs: object) -> None:
        if self.is_enabled("trace"):
            trace(self, format, **kwargs)

    def is_enabled(self, level: str) -> bool:
        check = getattr(self.observer, "is_enabled", None)
        return True if check is None else bool(check(level))


# -- sinks: one configured output each -------------------------------------------

class _Sink:
    """One output of one group; C{write} may raise, the chain counts it."""

    name = "?"
    wants_json = True

    def open(self) -> None:
        """Acquire resources early so that config problems show at start."""

    def write(self, event: dict[str, Any], line: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources; later writes are dropped."""


class _StreamSink(_Sink):
    """JSON lines to stdout or stderr (resolved at write time, so redirection works)."""

    def __init__(self, name: str, stream: Callable[[], TextIO], lock: threading.Lock) -> None:
        self.name = name
        self._stream = stream
        self._lock = lock

    def write(self, event: dict[str, Any], line: bytes) -> None:
        stream = self._stream()
        with self._lock:
            stream.write(line.decode("utf-8"))
            stream.flush()


class _ConsoleSink(_Sink):
    name = "console"
    wants_json = False

    def __init__(self, stream: Callable[[], TextIO], lock: threading.Lock, time_format: str,
                 no_color: bool) -> None:
        self._stream = stream
        self._lock = lock
        self._layout = go_time_layout(time_format)
        self._no_color = no_color

    def write(self, event: dict[str, Any], line: bytes) -> None:
        stream = self._stream()
        isatty = getattr(stream, "isatty", None)
        colour = not self._no_color and bool(isatty and isatty())
        text = render_console(event, self._layout, colour)
        with self._lock:
            stream.write(text)
            stream.flush()


class _FileSink(_Sink):
    name = "file"

    def __init__(self, rotating: RotatingFile, key: str, config_path: str | None) -> None:
        self.file = rotating
        self._key = key
        self._config_path = config_path
        self._closed = False

    def open(self) -> None:
        self._closed = False
        try:
            self.file.open()
        except OSError as e:
            raise ConfigError(self._config_path, self._key,
                              f"cannot open log file {self.file.path!r}: {e.strerror}") from None

    def write(self, event: dict[str, Any], line: bytes) -> None:
        if not self._closed:
            self.file.write(line)

    def close(self) -> None:
        self._closed = True
        self.file.close()


class _SyslogSink(_Sink):
    def __init__(self, name: str, sender: SyslogSender, default_severity: int) -> None:
        self.name = name
        self.sender = sender
        self._default = default_severity
        self._closed = False

    def open(self) -> None:
        self._closed = False
        self.sender.start()

    def write(self, event: dict[str, Any], line: bytes) -> None:
        if self._closed:
            return
        severity = (_SYSLOG_SEVERITY[event_rank(event)] if "log_level" in event
                    else self._default)
        self.sender.send(severity, event.get("log_time") or time.time(),
                         line.decode("utf-8").rstrip("\n"))

    def close(self) -> None:
        self._closed = True
        self.sender.stop()


# -- per-group chains -------------------------------------------------------------

@implementer(ILogFilterPredicate)
class _LevelPredicate:
    """ILogFilterPredicate: pass events at or above the group's level."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold

    def __call__(self, event: dict[str, Any]) -> PredicateResult:
        if event_rank(event) >= self.threshold:
            return PredicateResult.maybe
        return PredicateResult.no


class _Chain:
    """One group's level filter and outputs (shared by every logger of the group)."""

    def __init__(self, name: str, config: LoggerConfig, sinks: list[_Sink],
                 errors: dict[str, int], report: Callable[[str], None]) -> None:
        self.name = name
        self.threshold = LEVEL_RANKS.get(config.level, LEVEL_RANKS["info"])
        self.time_format = config.time_format
        self.sinks = sinks
        self._wants_json = any(s.wants_json for s in sinks)
        self._errors = errors
        self._report = report
        self.predicate = _LevelPredicate(self.threshold)
        self.observer = FilteringLogObserver(self._fan_out, [self.predicate])

    def is_enabled(self, level: str) -> bool:
        return LEVEL_RANKS.get(level, LEVEL_RANKS["info"]) >= self.threshold

    def _fan_out(self, event: dict[str, Any]) -> None:
        line = render_json(event, self.time_format) if self._wants_json else b""
        for sink in self.sinks:
            try:
                sink.write(event, line)
            except Exception as e:  # noqa: BLE001 - a log output must never break the caller
                key = f"{self.name}.{sink.name}"
                count = self._errors.get(key, 0)
                self._errors[key] = count + 1
                if count == 0:
                    self._report(f"gatewayd: log output {key} failed: {e!r} "
                                 "(further failures are only counted)")


@implementer(ILogObserver)
class _GroupObserver:
    """Stamps C{group} on each event and hands it to the chain."""

    def __init__(self, group: str, chain: _Chain) -> None:
        self.group = group
        self.chain = chain

    def __call__(self, event: dict[str, Any]) -> None:
        event["group"] = self.group
        self.chain.observer(event)

    def is_enabled(self, level: str) -> bool:
        return self.chain.is_enabled(level)


class GatewayLogging(Service):
    """
    All logger groups of one gateway.  Start it before (stop it after) the
    services that log; as a twisted C{Service} it is simply added first.

    @ivar errors: failed writes per C{"<group>.<output>"}.
    """

    name = "logging"

    def __init__(self, config: Mapping[str, LoggerConfig], *, config_path: str | None = None,
                 stdout: Callable[[], TextIO] | None = None,
                 stderr: Callable[[], TextIO] | None = None,
                 syslog_paths: Sequence[str] = LOCAL_SOCKETS, rsyslog_format: str = "rfc3164",
                 clock: Callable[[], float] | None = None) -> None:
        """
        @param config: C{loggers} by group; a missing C{default} group gets defaults.
        @param config_path: the config file, for error lines.
        @param stdout: returns the stream for C{stdout} output (default C{sys.stdout}
            looked up at each write).
        @param stderr: the same for C{stderr} and C{console}.
        @param syslog_paths: local syslog sockets to try (C{syslog} output).
        @param rsyslog_format: C{rfc3164} (GatewayD's framing) or C{rfc5424}.
        @param clock: time source for rotated file names and ages.
        @raise ConfigError: a bad C{rsyslogAddress} (file problems surface in L{start}).
        """
        self._stdout = stdout or (lambda: sys.stdout)
        self._stderr = stderr or (lambda: sys.stderr)
        self._config_path = config_path
        self.errors: dict[str, int] = {}
        locks: dict[str, threading.Lock] = {"stdout": threading.Lock(), "stderr": threading.Lock()}
        files: dict[str, _FileSink] = {}
        senders: dict[tuple[str, str], _SyslogSink] = {}
        groups = dict(config)
        groups.setdefault("default", LoggerConfig())
        self._chains: dict[str, _Chain] = {}
        for group, cfg in groups.items():
            sinks: list[_Sink] = []
            for output in dict.fromkeys(cfg.output or ["console"]):
                prefix = f"loggers.{group}"
                if output == "stdout":
                    sinks.append(_StreamSink("stdout", self._stdout, locks["stdout"]))
                elif output == "stderr":
                    sinks.append(_StreamSink("stderr", self._stderr, locks["stderr"]))
                elif output == "file":
                    sinks.append(self._file_sink(files, cfg, f"{prefix}.fileName", clock))
                elif output in ("syslog", "rsyslog"):
                    sinks.append(self._syslog_sink(senders, group, output, cfg, syslog_paths,
                                                   rsyslog_format))
                else:
                    sinks.append(_ConsoleSink(self._stderr, locks["stderr"],
                                              cfg.console_time_format, cfg.no_color))
            self._chains[group] = _Chain(group, cfg, sinks, self.errors, self._report)
        self._closables: list[_Sink] = [*files.values(), *senders.values()]

    def _file_sink(self, files: dict[str, _FileSink], cfg: LoggerConfig, key: str,
                   clock: Callable[[], float] | None) -> _FileSink:
        path = os.path.abspath(cfg.file_name or "gatewayd.log")
        if path not in files:  # groups sharing a file share one writer (and rotation)
            rotating = RotatingFile(
                path, max_size_mb=cfg.max_size, max_backups=cfg.max_backups,
                max_age_days=cfg.max_age, compress=cfg.compress, local_time=cfg.local_time,
                clock=clock)
            files[path] = _FileSink(rotating, key, self._config_path)
        return files[path]

    def _syslog_sink(self, senders: dict[tuple[str, str], _SyslogSink], group: str,
                     output: str, cfg: LoggerConfig, syslog_paths: Sequence[str],
                     rsyslog_format: str) -> _SyslogSink:
        if output == "syslog":
            where = ("local", "")
        else:
            where = (cfg.rsyslog_network, cfg.rsyslog_address)
        if where not in senders:
            try:
                sender = SyslogSender(where[0], where[1], local_paths=syslog_paths,
                                      style="rfc3164" if output == "syslog" else rsyslog_format,
                                      report=self._report)
            except ValueError as e:
                raise ConfigError(self._config_path, f"loggers.{group}.rsyslogAddress",
                                  str(e)) from None
            default = SEVERITIES.get(cfg.syslog_priority, SEVERITIES["info"])
            senders[where] = _SyslogSink(output, sender, default)
        return senders[where]

    def _report(self, line: str) -> None:
        """Tell the operator about a broken output, bypassing logging itself."""
        try:
            stream = self._stderr()
            stream.write(line + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - nowhere left to report to
            pass

    # -- public API ---------------------------------------------------------

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self._chains)

    def observer(self, group: str) -> ILogObserver:
        """
        The observer of C{group} (unknown groups use C{default}'s chain but keep
        their own name in C{group}).  Add C{observer("default")} to
        C{globalLogPublisher} to route Twisted's own events the same way.
        """
        chain = self._chains.get(group) or self._chains["default"]
        return _GroupObserver(group, chain)

    def logger(self, group: str, namespace: str, source: object = None) -> GroupLogger:
        """A Logger for C{namespace} writing through C{group}'s chain."""
        return GroupLogger(namespace=namespace, source=source, observer=self.observer(group))

    def is_enabled(self, group: str, level: str) -> bool:
        """Would C{group} record an event at C{level}?  Cheap; for hot paths."""
        chain = self._chains.get(group) or self._chains["default"]
        return chain.is_enabled(level)

    def sinks(self, group: str) -> Iterable[_Sink]:
        """The outputs of C{group} (for tests and the admin API)."""
        return tuple((self._chains.get(group) or self._chains["default"]).sinks)

    def start(self) -> None:
        """Open files and start syslog threads; raises L{ConfigError} for a bad file."""
        for sink in self._closables:
            sink.open()

    def stop(self) -> None:
        """Flush and close files, deliver queued syslog lines (bounded), stop threads."""
        for sink in self._closables:
            sink.close()

    def startService(self) -> None:  # noqa: N802 - Twisted API
        self.start()
        super().startService()

    def stopService(self) -> None:  # noqa: N802 - Twisted API
        super().stopService()
        self.stop()
