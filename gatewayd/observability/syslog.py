# -*- test-case-name: tests.integration.test_logging_outputs -*-
"""
Syslog delivery that can never stall or crash the gateway.

GatewayD uses Go's C{log/syslog}: a blocking dial at start (a down TCP syslog
is fatal) and blocking writes.  Here every syslog output owns a bounded queue
and one daemon thread that dials (with a timeout), reconnects with backoff and
writes; the caller only enqueues.  When the queue is full, lines are dropped and
counted; outages are reported once on stderr, never through logging itself.

Framing: RFC 3164 as Go writes it (C{<PRI>Stamp tag[pid]: msg} to the local
socket, C{<PRI>RFC3339 host tag[pid]: msg} remotely, newline-terminated on
streams) or RFC 5424 (octet-counted on streams, RFC 6587).  The tag is
C{gatewayd} and the facility C{daemon}.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
from datetime import datetime, timezone
from typing import Callable, Sequence

#: RFC 5424 severities by name (C{syslogPriority} values).
SEVERITIES: dict[str, int] = {
    "emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5, "info": 6,
    "debug": 7,
}
FACILITY_DAEMON = 3
TAG = "gatewayd"
#: Where local syslog daemons listen, in the order Go's log/syslog tries them.
LOCAL_SOCKETS: tuple[str, ...] = ("/dev/log", "/var/run/syslog", "/var/run/log")
FORMATS = ("rfc3164", "rfc5424")

_STOP = object()
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def priority(severity: int, facility: int = FACILITY_DAEMON) -> int:
    return facility * 8 + severity


def frame(pri: int, when: float, message: str, *, style: str, local: bool, hostname: str,
          pid: int, tag: str = TAG) -> str:
    """One syslog message (without transport framing)."""
    if style == "rfc5424":
        stamp = datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="microseconds")
        stamp = stamp.replace("+00:00", "Z")
        return f"<{pri}>1 {stamp} {hostname or '-'} {tag} {pid} - - {message}"
    if local:
        dt = datetime.fromtimestamp(when)
        stamp = f"{_MONTHS[dt.month - 1]} {dt.day:2d} {dt:%H:%M:%S}"
        return f"<{pri}>{stamp} {tag}[{pid}]: {message}"
    stamp = datetime.fromtimestamp(when).astimezone().isoformat(timespec="seconds")
    stamp = stamp.replace("+00:00", "Z")
    return f"<{pri}>{stamp} {hostname} {tag}[{pid}]: {message}"


def parse_address(network: str, address: str) -> tuple[str, int] | str:
    """C{host:port} (port defaults to 514, IPv6 in brackets) or a unix socket path."""
    if network == "unix":
        if not address:
            raise ValueError("empty unix socket path")
        return address
    host, sep, port = address.rpartition(":")
    if not sep or "]" in port:  # no port at all ("host", "[::1]")
        host, port = address, "514"
    host = host.strip("[]") or "localhost"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port in {address!r}")
    return host, int(port)


class SyslogSender:
    """
    One syslog destination: a queue and the thread that empties it.

    @ivar sent: messages delivered.
    @ivar dropped: messages lost (queue full, or undeliverable at stop).
    @ivar errors: failed dials and writes.
    """

    def __init__(self, network: str, address: str = "", *, style: str = "rfc3164",
                 local_paths: Sequence[str] = LOCAL_SOCKETS, queue_size: int = 10_000,
                 connect_timeout: float = 5.0, send_timeout: float = 5.0,
                 max_backoff: float = 30.0, report: Callable[[str], None] | None = None,
                 hostname: str | None = None) -> None:
        """
        @param network: C{tcp}, C{udp}, C{unix} (stream) or C{local} (the host's
            syslog socket, datagram first, like Go's C{syslog.New}).
        @param address: C{host:port} or a socket path; ignored for C{local}.
        @param style: C{rfc3164} (Go's framing) or C{rfc5424}.
        @param report: receives one line when the destination fails or recovers.
        @raise ValueError: bad network, address or style.
        """
        if style not in FORMATS:
            raise ValueError(f"unknown syslog format {style!r}")
        if network not in ("local", "tcp", "udp", "unix"):
            raise ValueError(f"unknown network {network!r}")
        if network != "local":
            parse_address(network, address)  # raises ValueError now, not in the thread
        self.network = network
        self.address = address
        self.style = style
        self.local = network == "local"
        self.hostname = hostname if hostname is not None else socket.gethostname()
        self.pid = os.getpid()
        self._local_paths = tuple(local_paths)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._connect_timeout = connect_timeout
        self._send_timeout = send_timeout
        self._max_backoff = max_backoff
        self._report = report or (lambda line: None)
        self._sock: socket.socket | None = None
        self._stream = False
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._failing = False
        self.sent = 0
        self.dropped = 0
        self.errors = 0

    def describe(self) -> str:
        if self.local:
            return "syslog (local)"
        return f"rsyslog {self.network} {self.address}"

    # -- caller side ---------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"gatewayd-{self.describe()}", daemon=True)
            self._thread.start()

    def send(self, severity: int, when: float, message: str) -> None:
        """Queue one message; never blocks.  Starts the thread on first use."""
        if self._thread is None:
            self.start()
        text = frame(priority(severity), when, message, style=self.style, local=self.local,
                     hostname=self.hostname, pid=self.pid)
        try:
            self._queue.put_nowait(text)
        except queue.Full:
            self.dropped += 1

    def stop(self, timeout: float = 2.0) -> None:
        """Deliver what is queued (bounded by C{timeout}), then close."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            pass
        thread.join(timeout)

    # -- worker thread ------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.1
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            assert isinstance(item, str)
            while True:
                try:
                    delivered = self._deliver(item)
                except Exception as e:  # noqa: BLE001 - the thread must outlive any bug
                    self._close()
                    self._fail(f"unexpected error: {e!r}")
                    self.dropped += 1
                    break
                if delivered:
                    backoff = 0.1
                    break
                if self._stopping.is_set():
                    self.dropped += 1 + self._drain()
                    self._close()
                    return
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)
        self._close()

    def _drain(self) -> int:
        lost = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return lost
            if item is not _STOP:
                lost += 1

    def _deliver(self, text: str) -> bool:
        """Send one message, redialling once on a broken connection."""
        for _ in range(2):
            if self._sock is None:
                try:
                    self._connect()
                except OSError as e:
                    self._fail(f"cannot connect: {e}")
                    return False
            try:
                self._write(text)
            except OSError as e:
                self._close()
                self._fail(f"write failed: {e}")
                continue
            self.sent += 1
            if self._failing:
                self._failing = False
                self._report(f"gatewayd: log output {self.describe()}: delivering again")
            return True
        return False

    def _fail(self, problem: str) -> None:
        self.errors += 1
        if not self._failing:
            self._failing = True
            self._report(f"gatewayd: log output {self.describe()}: {problem}; "
                         "retrying, lines queue up (and are counted when dropped)")

    def _write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        assert self._sock is not None
        if not self._stream:
            self._sock.send(data)
        elif self.style == "rfc5424":
            self._sock.sendall(b"%d %s" % (len(data), data))
        else:
            self._sock.sendall(data + b"\n")

    def _connect(self) -> None:
        if self.local:
            self._connect_local()
            return
        target = parse_address(self.network, self.address)
        if self.network == "unix":
            assert isinstance(target, str)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self._connect_timeout)
            try:
                sock.connect(target)
            except OSError:
                sock.close()
                raise
            self._adopt(sock, stream=True)
            return
        assert isinstance(target, tuple)
        if self.network == "udp":
            infos = socket.getaddrinfo(target[0], target[1], type=socket.SOCK_DGRAM)
            family, kind, proto, _, sockaddr = infos[0]
            sock = socket.socket(family, kind, proto)
            try:
                sock.connect(sockaddr)
            except OSError:
                sock.close()
                raise
            self._adopt(sock, stream=False)
            return
        sock = socket.create_connection(target, timeout=self._connect_timeout)
        self._adopt(sock, stream=True)

    def _connect_local(self) -> None:
        last: OSError = FileNotFoundError(
            "no local syslog socket in " + ", ".join(self._local_paths))
        for path in self._local_paths:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                sock = socket.socket(socket.AF_UNIX, kind)
                sock.settimeout(self._connect_timeout)
                try:
                    sock.connect(path)
                except OSError as e:
                    sock.close()
                    last = e
                    continue
                self._adopt(sock, stream=kind == socket.SOCK_STREAM)
                return
        raise last

    def _adopt(self, sock: socket.socket, *, stream: bool) -> None:
        sock.settimeout(self._send_timeout)
        self._sock, self._stream = sock, stream

    def _close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
