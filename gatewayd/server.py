# -*- test-case-name: tests.unit.test_server -*-
"""
The client-facing side: one Factory per server group (tenant), one
L{FrontendProtocol} per incoming client.

The protocol reads the startup phase through the sans-IO L{StartupParser}:
SSLRequest (answer C{S} and start TLS, or C{N}), GSSENCRequest (C{N}),
CancelRequest (forwarded to the server that owns the key), a direct TLS
ClientHello (PostgreSQL 17), then the StartupMessage.  With that in hand the
balancer ranks the group's blocks, the first usable block's pool hands over a
backend (or queues the client), and a L{Session} takes over the bytes.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import Span, SpanKind
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gatewayd.backend import BackendConnection, _format_peer, tune_socket
from gatewayd.block import Block
from gatewayd.cancel import CancelRegistry
from gatewayd.config.schema import Server
from gatewayd.errors import BackendUnavailable, PoolExhausted, ProtocolViolation
from gatewayd.hooks import names as hook
from gatewayd.interfaces import IHookRegistry, ILoadBalancer
from gatewayd.loadbalancer import ClientInfo
from gatewayd.observability.tracing import Tracing
from gatewayd.pgwire import (
    CancelRequest,
    DirectTLS,
    GSSENCRequest,
    SSLRequest,
    StartupMessage,
    StartupParser,
    cancel_request,
    error_response,
    sqlstate,
)
from gatewayd.proxy import Session
from gatewayd.stats import Stats

_STARTUP, _TLS, _WAITING, _RELAY, _DONE = range(5)
#: Seconds a drain waits for the cancels of the queries it interrupted to be sent.
CANCEL_GRACE = 5.0


@implementer(IHandshakeListener)
class FrontendProtocol(Protocol):
    """One database client, from its first byte to its last."""

    def __init__(self, factory: GatewayServerFactory) -> None:
        self.factory = factory
        self.parser = StartupParser(factory.config.max_startup_packet_size)
        self.state = _STARTUP
        self.tls = False
        self.session: Session | None = None
        self.block: Block | None = None
        self._timer: Any = None
        self._acquiring: defer.Deferred[BackendConnection] | None = None
        self._early: list[bytes] = []
        self.close_error = ""
        self._peer = {"local": "", "remote": ""}
        #: tracing on only: this connection's span and its open children
        self.span: Span | None = None
        self._acquire_span: Span | None = None
        self._session_span: Span | None = None
        self._acquire_started = 0.0

    # -- Twisted protocol -------------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802
        f = self.factory
        t = self.transport
        # Recorded now: after the socket closes, getHost() no longer works.
        self._peer = {"local": _format_peer(t.getHost()), "remote": _format_peer(t.getPeer())}
        if f.tracing.enabled:
            self._trace_connection()
        tune_socket(t)
        f.connections.add(self)
        self._timer = f.clock.callLater(f.startup_timeout, self._startup_timed_out)
        if f.hooks.is_subscribed(hook.ON_OPENING):
            self.run_hook(hook.ON_OPENING, {"client": self.peer_info()})

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        # Only the startup phase lands here; the session replaces this handler.
        if self.state == _WAITING:
            self._early.append(data)
            if sum(map(len, self._early)) > self.factory.config.max_startup_packet_size:
                self.fail(sqlstate.PROTOCOL_VIOLATION, "too much data before authentication")
            return
        if self.state != _STARTUP:
            return
        try:
            packet = self.parser.feed(data)
        except ProtocolViolation as e:
            self.fail(e.sqlstate, str(e))
            return
        if packet is None:
            return
        if isinstance(packet, StartupMessage):
            self._startup(packet)
        elif isinstance(packet, SSLRequest):
            self._ssl_request()
        elif isinstance(packet, GSSENCRequest):
            if self._trailing("GSSENCRequest"):
                return
            self.transport.write(b"N")
            self.parser.reset()
        elif isinstance(packet, CancelRequest):
            self.state = _DONE
            self.factory.cancels.forward(packet)
            self.transport.loseConnection()
        elif isinstance(packet, DirectTLS):
            self._direct_tls()

    def handshakeCompleted(self) -> None:  # noqa: N802 (IHandshakeListener)
        self.tls = True
        if self.state == _TLS:
            self.state = _STARTUP
            self._restart_timer()

    def connectionLost(self, reason: Failure = None) -> None:  # noqa: N802
        f = self.factory
        self.state = _DONE
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._acquiring is not None and not self._acquiring.called:
            self._acquiring.cancel()
        f.connections.discard(self)
        if f.hooks.is_subscribed(hook.ON_CLOSING):
            self.run_hook(hook.ON_CLOSING, {"client": self.peer_info(), "error": self.close_error})
        if self.session is not None:
            self.session.end()
            stats = self.session.stats
            stats.client_connections -= 1
            if self.tls:
                stats.tls_connections -= 1
        if f.hooks.is_subscribed(hook.ON_CLOSED):
            self.run_hook(hook.ON_CLOSED, {"client": self.peer_info(), "error": self.close_error})
        if self.span is not None:
            self._trace_end(reason)
        f.connection_ended()

    # -- startup phase ----------------------------------------------------------------------

    def _trailing(self, what: str) -> bool:
        """Bytes after SSLRequest/GSSENCRequest would be read as plaintext: refuse (CVE-2021-23214)."""
        if self.parser.remaining:
            self.fail(sqlstate.PROTOCOL_VIOLATION, f"received unencrypted data after {what}")
            return True
        return False

    def _ssl_request(self) -> None:
        if self._trailing("SSL request"):
            return
        context = self.factory.tls_context
        if context is None or self.tls:
            self.transport.write(b"N")
            self.parser.reset()
            return
        self.transport.write(b"S")
        self._start_tls()

    def _direct_tls(self) -> None:
        hello = self.parser.remaining
        if self.factory.tls_context is None or self.tls:
            self.state = _DONE
            self.transport.abortConnection()
            return
        self._start_tls()
        self.transport.protocol.dataReceived(hello)

    def _start_tls(self) -> None:
        self.state = _TLS
        self.parser.reset()
        self._restart_timer(self.factory.config.handshake_timeout)
        self.transport.startTLS(self.factory.tls_context)

    def _startup(self, packet: StartupMessage) -> None:
        f = self.factory
        if f.config.require_tls and not self.tls:
            self.fail(sqlstate.INVALID_AUTHORIZATION,
                      "this gateway accepts TLS connections only; connect with sslmode=require")
            return
        if self.parser.remaining:
            self._early.append(self.parser.remaining)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        peer = self.transport.getPeer()
        info = ClientInfo(
            source_ip=getattr(peer, "host", "") or "", source_port=getattr(peer, "port", 0) or 0,
            database=packet.database, user=packet.user,
            application_name=packet.parameters.get("application_name", ""))
        try:
            block = f.choose_block(info)
        except BackendUnavailable as e:
            self.fail(sqlstate.CONNECTION_FAILURE, "could not connect to the database server",
                      detail=str(e))
            return
        self.block = block
        if self.span is not None:
            self._trace_acquire(block)
        self.state = _WAITING
        self.transport.pauseProducing()
        self._acquiring = block.pool.acquire()
        self._acquiring.addCallbacks(self._paired, self._not_paired, callbackArgs=(block, packet))

    def _paired(self, backend: BackendConnection, block: Block, packet: StartupMessage) -> None:
        self._acquiring = None
        if self._acquire_span is not None:
            self._trace_acquired(None)
        f = self.factory
        if self.state != _WAITING or not self.transport.connected:
            block.pool.release(backend)
            return
        self.state = _RELAY
        block.stats.client_connections += 1
        block.stats.proxied_connections += 1
        if self.tls:
            block.stats.tls_connections += 1
        self.session = Session(self, backend, block, f.hooks, f.cancels,
                               max_message_size=f.config.max_message_size, log=f.log)
        if self.span is not None:
            self._trace_session(block, packet)
        self.session.start(packet.raw)
        if f.hooks.is_subscribed(hook.ON_OPENED):
            self.run_hook(hook.ON_OPENED, {"client": self.peer_info()})
        if f.hooks.is_subscribed(hook.ON_TRAFFIC):
            self.run_hook(hook.ON_TRAFFIC, {"client": self.peer_info()})
        early, self._early = self._early, []
        for data in early:
            self.dataReceived(data)
        if self.session is not None and not self.session.closed:
            self.transport.resumeProducing()

    def _not_paired(self, failure: Failure) -> None:
        self._acquiring = None
        if self._acquire_span is not None:
            self._trace_acquired(failure)
        if failure.check(defer.CancelledError) or self.state != _WAITING:
            return
        if failure.check(PoolExhausted):
            self.fail(sqlstate.TOO_MANY_CONNECTIONS, "sorry, too many clients already",
                      detail=failure.getErrorMessage())
        elif failure.check(BackendUnavailable):
            self.fail(sqlstate.CONNECTION_FAILURE, "could not connect to the database server",
                      detail=failure.getErrorMessage())
        else:
            self.factory.log.failure("pool acquire failed", failure)
            self.fail(sqlstate.INTERNAL_ERROR, "internal error in the gateway")

    def _restart_timer(self, seconds: float | None = None) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.factory.clock.callLater(
            seconds or self.factory.startup_timeout, self._startup_timed_out)

    def _startup_timed_out(self) -> None:
        if self.state in (_STARTUP, _TLS):
            self.close_error = "startup timeout"
            if self.state == _TLS:
                self.transport.abortConnection()
            else:
                self.fail(sqlstate.PROTOCOL_VIOLATION, "timeout waiting for the startup packet")

    # -- ours -------------------------------------------------------------------------------

    def fail(self, code: str, message: str, *, detail: str | None = None) -> None:
        """Answer a FATAL ErrorResponse and close this client only."""
        if self.state == _DONE:
            return
        self.state = _DONE
        self.close_error = message
        f = self.factory
        f.stats.clients_rejected[f.group] = f.stats.clients_rejected.get(f.group, 0) + 1
        f.log.info("client {peer} refused: {code} {message}", peer=self.peer_info()["remote"],
                   code=code, message=message,
                   block=self.block.name if self.block is not None else "")
        if self.transport.connected:
            self.transport.write(error_response(code, message, severity="FATAL", detail=detail))
            self.transport.loseConnection()

    def protocol_violation(self, e: ProtocolViolation) -> None:
        """A malformed message mid-session: tell the client and close only it."""
        if self.state == _DONE:
            return
        self.state = _DONE
        self.close_error = str(e)
        # Inside a server message an ErrorResponse would be read as its payload.
        if self.transport.connected and (self.session is None
                                         or self.session.at_message_boundary()):
            self.transport.write(error_response(e.sqlstate, str(e), severity="FATAL"))
        if self.session is not None:
            self.session.end("protocol violation")
        else:
            self.transport.loseConnection()

    def peer_info(self) -> dict[str, str]:
        """GatewayD's C{client{local, remote}} payload."""
        return dict(self._peer)

    def shutdown(self) -> None:
        """
        Drain deadline passed: tell the client why and close.  A query still
        running is cancelled on its server first: PostgreSQL does not notice a
        closed socket while it computes, and would run it to the end.
        """
        self.close_error = "gateway shutting down"
        session = self.session
        if session is None:
            self.transport.abortConnection()
            return
        if session.cancel_key is not None and session.in_flight:
            pid, key = session.cancel_key
            self.factory.cancelling.append(self.factory.cancels.forward(
                CancelRequest(pid, key, cancel_request(pid, key))))
        if session.at_message_boundary():
            self.transport.write(error_response(
                sqlstate.ADMIN_SHUTDOWN, "terminating connection due to administrator command",
                severity="FATAL"))
        session.end("shutdown")

    def run_hook(self, name: str, payload: dict[str, Any]) -> Any:
        """Run a hook about this connection; with tracing, its span is the chain's parent."""
        if self.span is None:
            return self.factory.hooks.run(name, payload)
        return self.factory.hooks.run(name, payload, parent=self.span)

    # -- tracing (only with a tracer provider; see gatewayd.observability.tracing) ---------

    def _trace_connection(self) -> None:
        peer = self.transport.getPeer()
        attributes: dict[str, Any] = {"gatewayd.group": self.factory.group}
        host = getattr(peer, "host", None)
        if host is not None:
            attributes["client.address"] = host
            attributes["client.port"] = peer.port
        else:
            attributes["client.address"] = self._peer["remote"]
        self.span = self.factory.tracing.start_span("gatewayd.connection", None, attributes,
                                                    kind=SpanKind.SERVER)

    def _trace_acquire(self, block: Block) -> None:
        assert self.span is not None
        self.span.set_attribute("gatewayd.block", block.name)
        self._acquire_started = self.factory.clock.seconds()
        self._acquire_span = self.factory.tracing.start_span(
            "gatewayd.pool.acquire", self.span,
            {"gatewayd.group": block.group, "gatewayd.block": block.name,
             "gatewayd.pool.size": block.pool.size,
             "gatewayd.pool.available": block.pool.idle_count})

    def _trace_acquired(self, failure: Failure | None) -> None:
        span, self._acquire_span = self._acquire_span, None
        assert span is not None
        span.set_attribute("gatewayd.pool.wait_seconds",
                           self.factory.clock.seconds() - self._acquire_started)
        if failure is not None and failure.check(defer.CancelledError):
            span.set_attribute("gatewayd.pool.cancelled", True)  # the client left first
            failure = None
        Tracing.end(span, failure)

    def _trace_session(self, block: Block, packet: StartupMessage) -> None:
        assert self.session is not None
        attributes: dict[str, Any] = {
            "db.system": "postgresql", "db.namespace": packet.database, "db.user": packet.user,
            "server.address": block.target.address,
            "gatewayd.relay": "framed" if self.session.hooked else "pump"}
        if self.tls:
            attributes["gatewayd.client.tls"] = True
        self._session_span = self.factory.tracing.start_span("gatewayd.session", self.span,
                                                             attributes)

    def _trace_end(self, reason: Failure | None) -> None:
        """Close the connection's spans; an error is why the gateway ended it, if it did."""
        if self._acquire_span is not None:
            self._trace_acquired(Failure(defer.CancelledError()))
        error: Any = self.close_error or None
        if error is None and reason is not None and not reason.check(ConnectionDone):
            error = reason
        if self._session_span is not None:
            span, self._session_span = self._session_span, None
            Tracing.end(span, error)
        span, self.span = self.span, None
        if span is not None:
            Tracing.end(span, error)


class GatewayServerFactory(ServerFactory):
    """
    One server group (tenant): its listener's protocol factory, its blocks and balancer.
    """

    noisy = False
    protocol = FrontendProtocol  # type: ignore[assignment]

    def __init__(self, group: str, config: Server, blocks: dict[str, Block],
                 balancer: ILoadBalancer, cancels: CancelRegistry, hooks: IHookRegistry,
                 stats: Stats, clock: Any, log: Logger, tls_context: Any = None,
                 tracing: Tracing | None = None) -> None:
        self.group = group
        self.config = config
        self.blocks = blocks
        self.balancer = balancer
        self.cancels = cancels
        self.hooks = hooks
        self.stats = stats
        self.clock = clock
        self.log = log
        self.tls_context = tls_context
        #: a connection span per client when enabled (see FrontendProtocol._trace_connection)
        self.tracing = tracing if tracing is not None else Tracing()
        self.connections: set[FrontendProtocol] = set()
        #: a client must finish its startup packet (and TLS handshake) within this
        self.startup_timeout = max(config.handshake_timeout, 10.0)
        self._drained: list[defer.Deferred[None]] = []
        #: cancels sent by a drain for the queries it interrupted
        self.cancelling: list[defer.Deferred[bool]] = []

    def buildProtocol(self, addr: Any) -> FrontendProtocol:  # noqa: N802
        return FrontendProtocol(self)

    def choose_block(self, client: ClientInfo) -> Block:
        """
        The balancer's first candidate with an idle connection; else its first
        healthy candidate (the client queues there); else none is up: 08006.
        """
        ranked = [self.blocks[name] for name in self.balancer.candidates(client)
                  if name in self.blocks]
        for block in ranked:
            if block.available:
                return block
        for block in ranked:
            if block.pool.healthy or block.pool.starting:
                return block
        if not ranked:
            raise BackendUnavailable("no backend block accepts this client")
        reasons = "; ".join(f"{b.name}: {b.pool.last_error or 'down'}" for b in ranked)
        raise BackendUnavailable(f"no backend is available ({reasons})")

    def drain(self, timeout: float) -> defer.Deferred[None]:
        """
        After the listener stopped: let sessions finish for up to C{timeout}
        seconds, then cancel the queries still running and close what is left
        with 57P01.  Fires once every client is gone and the cancels are sent.
        """
        for proto in list(self.connections):
            if proto.session is None and proto.state != _WAITING:
                proto.transport.abortConnection()
        if not self.connections:
            return defer.succeed(None)
        done: defer.Deferred[None] = defer.Deferred()
        self._drained.append(done)

        def deadline() -> None:
            for proto in list(self.connections):
                proto.shutdown()

        def sent(_: None) -> defer.Deferred[None] | None:
            # Let the cancels reach their servers before the reactor may stop
            # (bounded: a server that does not answer must not hold us up).
            cancels, self.cancelling = self.cancelling, []
            if not cancels:
                return None
            return (defer.DeferredList(cancels, consumeErrors=True)
                    .addTimeout(CANCEL_GRACE, self.clock)
                    .addBoth(lambda _: None))

        timer = self.clock.callLater(timeout, deadline)
        done.addBoth(lambda r: (timer.cancel() if timer.active() else None, r)[1])
        done.addCallback(sent)
        return done

    def connection_ended(self) -> None:
        if not self.connections and self._drained:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)
