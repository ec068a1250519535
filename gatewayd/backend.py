# -*- test-case-name: tests.unit.test_pool -*-
"""
Connections from the gateway to one PostgreSQL server (GatewayD's "clients").

A L{BackendTarget} knows how to reach a server (address, TLS, timeouts) and
dials L{BackendConnection}s: a TCP or Unix socket with TCP_NODELAY and
keepalive, upgraded to TLS first when C{sslmode} asks for it, and then left
idle, unauthenticated, until a client's StartupMessage arrives through it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet import defer, error
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.interfaces import IHandshakeListener, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from gatewayd import pgwire
from gatewayd.config.schema import Client
from gatewayd.errors import BackendUnavailable
from gatewayd.tls import BackendTLS, describe_tls_error


def split_address(address: str, default_port: int = 5432) -> tuple[str, int]:
    """C{"host:port"}, C{"[v6]:port"} or C{"host"} -> (host, port)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest.lstrip(":") or default_port)
    host, sep, port = address.rpartition(":")
    if not sep or ":" in host:
        return address, default_port
    return host or "localhost", int(port)


def tune_socket(transport: Any, keepalive: bool = False, keepalive_period: float = 30.0) -> None:
    """TCP_NODELAY always (PostgreSQL and libpq set it too); keepalive when asked."""
    handle = getattr(transport, "getHandle", lambda: None)()
    if not isinstance(handle, socket.socket) or handle.family == socket.AF_UNIX:
        return
    handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if keepalive:
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        period = max(1, int(keepalive_period))
        if hasattr(socket, "TCP_KEEPIDLE"):
            handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, period)
            handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, period)


class TLSNegotiationFailed(BackendUnavailable):
    """The server refused or failed TLS that C{sslmode} requires."""


@implementer(IHandshakeListener)
class BackendConnection(Protocol):
    """
    One socket to PostgreSQL.  Idle in a pool until L{attach}; then every byte
    goes to the session.  Anything a server says while idle (PostgreSQL's
    C{authentication_timeout} FATAL) means the socket is done.

    @ivar ready: fires with C{self} once the socket (and TLS, if any) is usable.
    @ivar created: reactor time when the socket became ready.
    @ivar on_lost: called with (self, reason) when the socket closes.
    """

    def __init__(self, target: BackendTarget, clock: IReactorTime) -> None:
        self.target = target
        self.clock = clock
        self.ready: defer.Deferred[BackendConnection] = defer.Deferred()
        self.created = 0.0
        self.session: Any = None
        self.on_lost: Callable[[BackendConnection, Failure], None] | None = None
        self.tls = False
        self._negotiating = False

    # -- Twisted protocol -------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802
        cfg = self.target.config
        tune_socket(self.transport, cfg.tcp_keep_alive, cfg.tcp_keep_alive_period)
        if self.target.tls.wants_tls:
            self._negotiating = True
            self.transport.write(pgwire.ssl_request())
        else:
            self._become_ready()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        # Replaced by the session's handler in attach(); here only while idle.
        if self._negotiating:
            self._tls_answer(data)
            return
        self.transport.loseConnection()

    def handshakeCompleted(self) -> None:  # noqa: N802 (IHandshakeListener)
        self._become_ready()

    def connectionLost(self, reason: Failure = error.ConnectionDone()) -> None:  # noqa: N802
        if not self.ready.called:
            self.ready.errback(reason)
        if self.on_lost is not None:
            callback, self.on_lost = self.on_lost, None
            callback(self, reason)

    # -- ours --------------------------------------------------------------------------

    def _tls_answer(self, data: bytes) -> None:
        self._negotiating = False
        answer, rest = data[:1], data[1:]
        if answer == b"S" and not rest:
            self.tls = True
            self.transport.startTLS(self.target.tls.creator)
        elif answer == b"N" and not rest and not self.target.tls.requires_tls:
            self._become_ready()
        else:
            why = ("server does not support SSL, but sslmode=%s requires it" % self.target.tls.mode
                   if answer == b"N" else "unexpected answer to SSLRequest")
            self.ready.errback(TLSNegotiationFailed(f"{self.target.address}: {why}"))
            self.transport.abortConnection()

    def _become_ready(self) -> None:
        if not self.ready.called:
            self.created = self.clock.seconds()
            self.ready.callback(self)

    def attach(self, session: Any, on_data: Callable[[bytes], None]) -> None:
        """Hand the socket to a client's session: bytes now go to C{on_data}."""
        self.session = session
        self.dataReceived = on_data  # type: ignore[method-assign]  # hot path: no extra frame

    @property
    def usable(self) -> bool:
        return bool(self.transport is not None and self.transport.connected
                    and not self.transport.disconnecting)

    def local_address(self) -> str:
        return _format_peer(self.transport.getHost()) if self.transport else ""

    def close(self) -> None:
        if self.transport is not None and self.transport.connected:
            self.transport.loseConnection()


def _format_peer(addr: Any) -> str:
    host = getattr(addr, "host", None)
    if host is None:
        return str(getattr(addr, "name", "") or "")
    return f"[{host}]:{addr.port}" if ":" in host else f"{host}:{addr.port}"


@dataclass
class BackendTarget:
    """
    Where one block's PostgreSQL server is and how to reach it.

    @ivar address: as configured (C{host:port} or a socket path for unix).
    """

    group: str
    block: str
    config: Client
    tls: BackendTLS
    reactor: Any
    address: str = field(init=False)

    def __post_init__(self) -> None:
        self.address = self.config.address

    def dial(self) -> defer.Deferred[BackendConnection]:
        """
        One connection attempt (no retries: the pool owns the retry policy),
        bounded by C{dialTimeout} including the TLS upgrade.
        """
        conn = BackendConnection(self, self.reactor)
        timeout = self.config.dial_timeout or 60.0
        if self.config.network == "unix":
            endpoint = UNIXClientEndpoint(self.reactor, self.address, timeout=timeout)
        else:
            host, port = split_address(self.address)
            endpoint = _tcp_endpoint(self.reactor, host, port, timeout)
        connecting = endpoint.connect(_QuietFactory(conn))
        result: defer.Deferred[BackendConnection] = defer.Deferred()
        timed_out = []

        def on_timeout() -> None:
            timed_out.append(True)
            if not connecting.called:
                connecting.cancel()
            elif conn.transport is not None:
                conn.transport.abortConnection()

        timer = self.reactor.callLater(timeout, on_timeout)

        def connected(_: Any) -> defer.Deferred[BackendConnection]:
            return conn.ready

        def done(outcome: Any) -> None:
            if timer.active():
                timer.cancel()
            if isinstance(outcome, Failure):
                if timed_out:
                    outcome = Failure(BackendUnavailable(f"{self.address}: connection timed out"))
                result.errback(_as_unavailable(self.address, outcome))
            else:
                result.callback(outcome)

        connecting.addCallback(connected).addBoth(done)
        return result


def _tcp_endpoint(reactor: Any, host: str, port: int, timeout: float) -> Any:
    """
    An IP literal is dialled directly; only names go through HostnameEndpoint,
    whose resolution runs on the thread pool (about a millisecond per dial).
    """
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return HostnameEndpoint(reactor, host, port, timeout=timeout)
    endpoint = TCP4ClientEndpoint if version == 4 else TCP6ClientEndpoint
    return endpoint(reactor, host, port, timeout=timeout)


class _QuietFactory(Factory):
    """Hands out one protocol; not noisy (one log line per backend dial is too many)."""

    noisy = False

    def __init__(self, protocol: BackendConnection) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> BackendConnection:  # noqa: N802
        return self._protocol


def _as_unavailable(address: str, failure: Failure) -> Failure:
    if failure.check(BackendUnavailable):
        return failure
    if failure.check(defer.CancelledError):
        return Failure(BackendUnavailable(f"{address}: connection timed out"))
    reason = (describe_tls_error(failure.value) or failure.getErrorMessage()
              or failure.type.__name__)
    return Failure(BackendUnavailable(f"{address}: {reason}"))
