# -*- test-case-name: tests.integration.test_plugin_host -*-
"""
The plugin child process as Twisted sees it: the first stdout line is the
go-plugin handshake, stderr is relayed into our logs, and the exit is noted.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from gatewayd.plugins.logs import MAX_LINE, LineRelay


class PluginExited(Exception):
    """The process ended before it printed its handshake line."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class PluginProcessProtocol(ProcessProtocol):
    """
    @ivar handshake: fires with the first stdout line (str), or fails with
        L{PluginExited} when the process ends first or L{ValueError} when it
        writes more than L{MAX_LINE} bytes without a newline.
    @ivar exit_status: None while running, then a description such as
        C{"exit code 1"} or C{"signal 9"}.
    """

    def __init__(self, log: Logger, plugin: str) -> None:
        self.handshake: Deferred[str] = Deferred()
        self.exit_status: str | None = None
        self._log = log
        self._plugin = plugin
        self._stdout = b""
        self._stderr = LineRelay(log, plugin)
        self._after_handshake = LineRelay(log, plugin)
        self._end_waiters: list[Deferred[None]] = []

    @property
    def running(self) -> bool:
        return self.exit_status is None

    def connectionMade(self) -> None:
        self.transport.closeStdin()  # a plugin has nothing to read from us

    def outReceived(self, data: bytes) -> None:
        if self.handshake.called:
            # go-plugin drains and drops later stdout; we keep it, quietly.
            self._after_handshake.feed(data)
            return
        self._stdout += data
        line, newline, rest = self._stdout.partition(b"\n")
        if newline:
            self._stdout = b""
            self.handshake.callback(line.decode("utf-8", "replace").rstrip("\r"))
            if rest:
                self._after_handshake.feed(rest)
        elif len(self._stdout) > MAX_LINE:
            self._stdout = b""
            self.handshake.errback(ValueError(
                f"more than {MAX_LINE} bytes on stdout without a handshake line"))

    def errReceived(self, data: bytes) -> None:
        self._stderr.feed(data)

    def processEnded(self, reason: Failure) -> None:
        self._stderr.flush()
        self._after_handshake.flush()
        value: Any = reason.value
        if isinstance(value, ProcessDone):
            self.exit_status = "exit code 0"
        elif getattr(value, "signal", None) is not None:
            self.exit_status = f"signal {value.signal}"
        else:
            self.exit_status = f"exit code {getattr(value, 'exitCode', '?')}"
        if not self.handshake.called:
            if self._stdout:
                # A last line without a newline still counts, as in go-plugin's scanner.
                line, self._stdout = self._stdout, b""
                self.handshake.callback(line.decode("utf-8", "replace").rstrip("\r"))
            else:
                self.handshake.errback(PluginExited(self.exit_status))
        waiters, self._end_waiters = self._end_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def when_ended(self) -> Deferred[None]:
        """Fires (once) when the process has ended."""
        if not self.running:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._end_waiters.append(waiter)
        return waiter
