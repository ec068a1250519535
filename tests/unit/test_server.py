"""
FrontendProtocol and GatewayServerFactory without sockets: the startup phase
(SSLRequest, GSSENCRequest, CancelRequest, bad packets, requireTLS, timeouts),
pairing with a pooled backend (53300 after waitTimeout, 08006 when down), the
relay's maxMessageSize and the drain.  Transports are StringTransports, time
is a MemoryReactorClock, the pool is the real BackendPool over fake dials.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransportWithDisconnection
from twisted.logger import Logger
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatewayd import pgwire
from gatewayd.backend import BackendConnection, BackendTarget
from gatewayd.block import Block
from gatewayd.cancel import CancelRegistry
from gatewayd.config.schema import Client, Pool, Proxy, Server
from gatewayd.errors import BackendUnavailable
from gatewayd.interfaces import IBackendPool, IHookRegistry, ILoadBalancer
from gatewayd.pool import BackendPool
from gatewayd.server import CANCEL_GRACE, GatewayServerFactory
from gatewayd.stats import Stats
from gatewayd.tls import BackendTLS
from tests.support import wire


# -- fakes ----------------------------------------------------------------------------------

@implementer(IHookRegistry)
class Hooks:
    """No plugin, or the hooks named in C{subscribed}; records what ran."""

    def __init__(self, subscribed: frozenset[str] = frozenset()) -> None:
        self.subscribed = subscribed
        self.ran: list[tuple[str, dict]] = []

    def is_subscribed(self, hook_name: str) -> bool:
        return hook_name in self.subscribed

    def run(self, hook_name: str, payload: dict, **kwargs: Any) -> defer.Deferred[dict]:
        self.ran.append((hook_name, payload))
        return defer.succeed(payload)

    def register(self, plugin: Any) -> None:
        raise NotImplementedError

    def unregister(self, name: str) -> None:
        raise NotImplementedError

    def plugins(self) -> list:
        return []


@implementer(ILoadBalancer)
class Balancer:
    strategy = "ROUND_ROBIN"

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.seen: list[Any] = []

    def candidates(self, client: Any) -> list:
        self.seen.append(client)
        return list(self.names)


class Transport(StringTransportWithDisconnection):
    """A StringTransport that records startTLS and aborts like a real one."""

    def __init__(self, port: int = 40000) -> None:
        super().__init__(hostAddress=IPv4Address("TCP", "127.0.0.1", 15432),
                         peerAddress=IPv4Address("TCP", "127.0.0.1", port))
        self.tls_context: Any = None
        self.aborted = False

    def startTLS(self, context: Any) -> None:  # noqa: N802
        self.tls_context = context

    def abortConnection(self) -> None:  # noqa: N802
        self.aborted = True
        self.loseConnection()


class Dials:
    """The pool's dial function: each dial waits until the test succeeds or fails it."""

    def __init__(self, target: BackendTarget, clock: MemoryReactorClock) -> None:
        self.target = target
        self.clock = clock
        self.pending: list[defer.Deferred[BackendConnection]] = []
        self.made: list[BackendConnection] = []

    def __call__(self) -> defer.Deferred[BackendConnection]:
        d: defer.Deferred[BackendConnection] = defer.Deferred()
        self.pending.append(d)
        return d

    def succeed(self) -> None:
        pending, self.pending = self.pending, []
        for d in pending:
            conn = BackendConnection(self.target, self.clock)
            transport = Transport(port=5432)
            transport.protocol = conn
            conn.makeConnection(transport)  # no TLS wanted: ready at once
            self.made.append(conn)
            d.callback(conn)

    def fail(self, why: str = "connection refused") -> None:
        pending, self.pending = self.pending, []
        for d in pending:
            d.errback(BackendUnavailable(f"{self.target.address}: {why}"))


class World:
    """One server group with one block, wired like GatewayService does it."""

    def __init__(self, *, pool_size: int = 1, wait: float = 1.0, retries: int = 0,
                 tls_context: Any = None, hooks: Hooks | None = None, **server: Any) -> None:
        self.clock = MemoryReactorClock()
        self.stats = Stats()
        client = Client(address="127.0.0.1:5432", retries=retries, backoff=0.5)
        self.target = BackendTarget("default", "writes", client, BackendTLS("disable"),
                                    self.clock)
        self.dials = Dials(self.target, self.clock)
        block_stats = self.stats.block("default", "writes")
        self.pool = BackendPool(self.clock, self.dials, client,
                                Pool(size=pool_size, wait_timeout=wait), Proxy(), block_stats)
        self.block = Block("default", "writes", self.target, self.pool, block_stats)
        self.balancer = Balancer(["writes"])
        self.hooks = hooks or Hooks()
        self.cancels = CancelRegistry(Logger())
        self.config = Server(**server)
        self.factory = GatewayServerFactory(
            "default", self.config, {"writes": self.block}, self.balancer, self.cancels,
            self.hooks, self.stats, self.clock, Logger(), tls_context)
        self.pool.start()

    def connect(self, port: int = 40000) -> tuple[Any, Transport]:
        proto = self.factory.buildProtocol(None)
        transport = Transport(port)
        transport.protocol = proto
        proto.makeConnection(transport)
        return proto, transport

    def login(self, port: int = 40000) -> tuple[Any, Transport, BackendConnection]:
        """A client paired with a backend that answered its startup."""
        if self.dials.pending:
            self.dials.succeed()
        proto, transport = self.connect(port)
        proto.dataReceived(wire.startup_packet())
        assert proto.session is not None, transport.value()
        backend = proto.session.backend
        backend.dataReceived(pgwire.authentication_ok() + pgwire.backend_key_data(port, b"key!")
                             + pgwire.ready_for_query(b"I"))
        return proto, transport, backend


def errors(data: bytes) -> list[dict[str, str]]:
    out, pos = [], 0
    while pos + 5 <= len(data):
        length = struct.unpack_from(">i", data, pos + 1)[0]
        if data[pos:pos + 1] == b"E":
            out.append(wire.parse_fields(data[pos + 5:pos + 1 + length]))
        pos += 1 + length
    return out


def only_error(transport: Transport) -> dict[str, str]:
    found = errors(transport.value())
    assert len(found) == 1 and found[0]["S"] == "FATAL", transport.value()
    return found[0]


# -- tests ----------------------------------------------------------------------------------

def test_fakes_provide_the_interfaces() -> None:
    w = World()
    assert verifyObject(IHookRegistry, w.hooks)
    assert verifyObject(ILoadBalancer, w.balancer)
    assert verifyObject(IBackendPool, w.pool)


def test_ssl_request_without_tls_answers_n_then_serves_the_startup() -> None:
    w = World()
    w.dials.succeed()
    proto, t = w.connect()
    proto.dataReceived(wire.SSL_REQUEST)
    assert t.value() == b"N" and t.connected
    proto.dataReceived(wire.startup_packet("alice", "app", application_name="x"))
    assert proto.session is not None
    client = w.balancer.seen[-1]
    assert (client.user, client.database, client.application_name) == ("alice", "app", "x")
    assert client.source_ip == "127.0.0.1" and client.source_port == 40000
    # The exact startup packet went to the backend.
    assert proto.session.backend.transport.value() == wire.startup_packet("alice", "app",
                                                                          application_name="x")


def test_bytes_after_ssl_request_are_refused_08p01() -> None:
    w = World()
    proto, t = w.connect()
    proto.dataReceived(wire.SSL_REQUEST + wire.startup_packet())
    assert only_error(t)["C"] == "08P01"
    assert "unencrypted data after SSL request" in only_error(t)["M"]
    assert not t.connected


def test_bytes_after_ssl_request_with_tls_are_refused_before_starting_tls() -> None:
    w = World(tls_context=object())
    proto, t = w.connect()
    proto.dataReceived(wire.SSL_REQUEST + b"Q")
    assert only_error(t)["C"] == "08P01" and t.tls_context is None


def test_gssenc_request_answers_n() -> None:
    w = World()
    proto, t = w.connect()
    proto.dataReceived(wire.GSSENC_REQUEST)
    assert t.value() == b"N" and t.connected
    proto.dataReceived(wire.SSL_REQUEST)
    assert t.value() == b"NN"


@pytest.mark.parametrize("packet", [
    struct.pack(">i", 3) + b"\x00" * 8,            # shorter than its own header
    struct.pack(">i", -1) + b"\x00" * 8,           # negative
    struct.pack(">i", 1_000_000) + b"\x00" * 8,    # over maxStartupPacketSize
    struct.pack(">ii", 9, 80877103) + b"x",        # SSLRequest with a body
])
def test_bad_length_gets_08p01_and_disconnect(packet: bytes) -> None:
    w = World()
    proto, t = w.connect()
    proto.dataReceived(packet)
    assert only_error(t)["C"] == "08P01"
    assert not t.connected
    assert w.stats.clients_rejected == {"default": 1}


def test_protocol_2_gets_0a000() -> None:
    w = World()
    proto, t = w.connect()
    proto.dataReceived(wire.startup_packet(protocol=2 << 16))
    assert only_error(t)["C"] == "0A000" and not t.connected


def test_require_tls_refuses_plaintext_28000() -> None:
    w = World(require_tls=True, tls_context=object())
    proto, t = w.connect()
    proto.dataReceived(wire.startup_packet())
    assert only_error(t)["C"] == "28000" and not t.connected


def test_require_tls_serves_after_the_handshake() -> None:
    context = object()
    w = World(require_tls=True, tls_context=context)
    w.dials.succeed()
    proto, t = w.connect()
    proto.dataReceived(wire.SSL_REQUEST)
    assert t.value() == b"S" and t.tls_context is context
    proto.handshakeCompleted()
    assert proto.tls
    proto.dataReceived(wire.startup_packet())
    assert proto.session is not None
    assert w.block.stats.tls_connections == 1


def test_second_ssl_request_over_tls_gets_n() -> None:
    w = World(tls_context=object())
    proto, t = w.connect()
    proto.dataReceived(wire.SSL_REQUEST)
    proto.handshakeCompleted()
    proto.dataReceived(wire.SSL_REQUEST)
    assert t.value() == b"SN"


def test_tls_handshake_timeout_aborts() -> None:
    w = World(tls_context=object(), handshake_timeout=2.0)
    proto, t = w.connect()
    proto.dataReceived(wire.SSL_REQUEST)
    w.clock.advance(2.0)
    assert t.aborted and not t.connected


def test_startup_timeout_gets_08p01() -> None:
    w = World()
    proto, t = w.connect()
    proto.dataReceived(wire.startup_packet()[:6])  # a packet that never completes
    w.clock.advance(w.factory.startup_timeout - 0.1)
    assert t.connected
    w.clock.advance(0.2)
    error = only_error(t)
    assert error["C"] == "08P01" and "timeout" in error["M"] and not t.connected


def test_cancel_request_is_forwarded_to_the_target_that_issued_the_key() -> None:
    w = World()
    proto, t, backend = w.login(port=40001)
    assert len(w.cancels) == 1  # BackendKeyData (pid 40001) was noted
    canceller, ct = w.connect(40002)
    packet = wire.cancel_request(40001, b"key!")
    canceller.dataReceived(packet)
    assert ct.value() == b"" and not ct.connected  # PostgreSQL answers nothing either
    # A fresh, non-pooled connection to the owner of the key carries the packet.
    host, port, factory = w.clock.tcpClients[-1][:3]
    assert (host, port) == ("127.0.0.1", 5432)
    link = factory.buildProtocol(IPv4Address("TCP", host, port))
    lt = Transport(5432)
    lt.protocol = link
    link.makeConnection(lt)
    assert lt.value() == packet
    assert w.cancels.forwarded == 1


def test_cancel_request_with_unknown_key_dials_nothing() -> None:
    w = World()
    w.login(port=40001)
    dials_before = len(w.clock.tcpClients)
    for pid, key in ((40001, b"nope"), (12345, b"key!")):
        canceller, ct = w.connect(40002)
        canceller.dataReceived(wire.cancel_request(pid, key))
        assert ct.value() == b"" and not ct.connected
    assert len(w.clock.tcpClients) == dials_before and w.cancels.unknown == 2


def test_exhausted_pool_answers_53300_after_wait_timeout() -> None:
    w = World(pool_size=1, wait=1.5)
    w.login()
    proto, t = w.connect(40003)
    proto.dataReceived(wire.startup_packet())
    w.clock.advance(1.4)
    assert t.value() == b"" and t.connected and w.pool.waiting_count == 1
    w.clock.advance(0.1)
    error = only_error(t)
    assert error["C"] == "53300" and "1.5s" in error["D"] and not t.connected


def test_waiting_client_is_served_when_a_session_ends() -> None:
    w = World(pool_size=1, wait=30)
    first, ft, _ = w.login()
    proto, t = w.connect(40003)
    proto.dataReceived(wire.startup_packet())
    proto.dataReceived(wire.query("select 1"))  # pipelined before authentication: kept
    assert proto.session is None
    ft.loseConnection()  # the first client leaves; its backend is closed and re-dialled
    w.dials.succeed()
    assert proto.session is not None
    assert proto.session.backend.transport.value() == wire.startup_packet() + wire.query(
        "select 1")


def test_client_leaving_while_queued_leaves_the_queue() -> None:
    w = World(pool_size=1, wait=30)
    w.login()
    proto, t = w.connect(40003)
    proto.dataReceived(wire.startup_packet())
    assert w.pool.waiting_count == 1
    t.loseConnection()
    assert w.pool.waiting_count == 0


def test_backend_down_answers_08006_with_the_reason() -> None:
    w = World(retries=0)
    w.dials.fail("Connection refused")
    proto, t = w.connect()
    proto.dataReceived(wire.startup_packet())
    error = only_error(t)
    assert error["C"] == "08006" and "Connection refused" in error["D"]


def test_session_end_releases_the_backend_and_forgets_the_key() -> None:
    w = World(pool_size=1)
    proto, t, backend = w.login()
    assert t.value().endswith(pgwire.ready_for_query(b"I"))
    assert w.block.stats.client_connections == 1
    t.loseConnection()
    assert not backend.transport.connected  # a session's socket is never reused
    assert len(w.cancels) == 0 and w.block.stats.client_connections == 0
    assert len(w.dials.pending) == 1  # and a fresh one is dialled


def test_relays_both_ways_in_pump_mode() -> None:
    w = World()
    proto, t, backend = w.login()
    t.clear()
    backend.transport.clear()
    proto.dataReceived(wire.query("select 1"))
    assert backend.transport.value() == wire.query("select 1")
    answer = pgwire.command_complete("SELECT 1") + pgwire.ready_for_query(b"I")
    backend.dataReceived(answer)
    assert t.value() == answer
    assert proto.session.idle


def test_oversized_message_closes_the_client_with_08p01() -> None:
    w = World(pool_size=2, max_message_size=1024)
    w.dials.succeed()
    proto, t, backend = w.login(40001)
    other, ot, other_backend = w.login(40002)
    t.clear()
    backend.transport.clear()
    proto.dataReceived(b"Q" + struct.pack(">i", 4096) + b"select")
    error = only_error(t)
    assert error["C"] == "08P01" and not t.connected
    assert backend.transport.value() == b""  # nothing of it reached PostgreSQL
    assert not backend.transport.connected
    other.dataReceived(wire.query("select 2"))  # the other session is untouched
    assert other_backend.transport.value().endswith(wire.query("select 2"))
    assert ot.connected


def test_violation_inside_a_server_message_closes_without_injecting_an_error() -> None:
    w = World(max_message_size=1024)
    proto, t, backend = w.login()
    t.clear()
    backend.dataReceived(b"D" + struct.pack(">i", 100) + b"partial")  # a DataRow in flight
    proto.dataReceived(b"Q" + struct.pack(">i", 2))  # invalid length
    assert t.value() == b"D" + struct.pack(">i", 100) + b"partial"  # no ErrorResponse inside
    assert not t.connected


def test_backend_lost_mid_session_gives_08006() -> None:
    w = World()
    proto, t, backend = w.login()
    t.clear()
    backend.transport.loseConnection()
    error = only_error(t)
    assert error["C"] == "08006" and not t.connected


def test_drain_waits_for_sessions_then_closes_them_with_57p01() -> None:
    w = World(pool_size=2)
    w.dials.succeed()
    proto, t, _ = w.login(40001)
    idle, it = w.connect(40002)  # connected but no startup yet: closed at once
    drained = w.factory.drain(1.0)
    assert idle.state is not None and not it.connected
    assert not drained.called and t.connected
    t.clear()
    w.clock.advance(1.0)
    assert only_error(t)["C"] == "57P01" and not t.connected
    assert drained.called


def test_drain_finishes_early_when_sessions_end() -> None:
    w = World()
    proto, t, _ = w.login()
    drained = w.factory.drain(30.0)
    assert not drained.called
    t.loseConnection()
    assert drained.called
    deadline = [c for c in w.clock.getDelayedCalls() if c.getTime() == 30.0]
    assert deadline == []  # the drain deadline was cancelled


def test_hooks_fire_only_when_subscribed() -> None:
    w = World(hooks=Hooks(frozenset({"onOpening", "onClosed"})))
    proto, t, _ = w.login()
    t.loseConnection()
    assert [name for name, _ in w.hooks.ran] == ["onOpening", "onClosed"]
    assert w.hooks.ran[0][1]["client"]["remote"] == "127.0.0.1:40000"


def test_backend_closing_after_the_clients_terminate_is_a_normal_end() -> None:
    w = World(pool_size=1)
    proto, t, backend = w.login()
    t.clear()
    proto.dataReceived(wire.terminate())
    backend.transport.loseConnection()  # PostgreSQL closes before the client's FIN is read
    assert t.value() == b""  # no error for a client that is leaving
    assert len(w.dials.pending) == 1  # the pool pre-dials a replacement as usual


def test_backend_dropping_a_live_session_makes_the_pool_dial_per_client() -> None:
    """The server may be shutting down: no pre-dialled socket may keep it waiting."""
    w = World(pool_size=2)
    w.dials.succeed()
    proto, t, backend = w.login()
    assert w.pool.idle_count == 1
    backend.transport.loseConnection()
    assert only_error(t)["C"] == "08006"
    assert w.pool.idle_count == 0 and w.dials.pending == []
    other, ot = w.connect(40009)
    other.dataReceived(wire.startup_packet())
    assert len(w.dials.pending) == 1  # dialled for this client


def test_drain_cancels_a_running_query_before_closing() -> None:
    """PostgreSQL would run an orphaned query to its end: the drain cancels it first."""
    w = World()
    proto, t, backend = w.login(40001)
    proto.dataReceived(wire.query("select pg_sleep(30)"))
    dials = len(w.clock.tcpClients)
    fired: list[None] = []
    w.factory.drain(1.0).addCallback(fired.append)
    w.clock.advance(1.0)
    assert only_error(t)["C"] == "57P01" and not t.connected
    assert len(w.clock.tcpClients) == dials + 1
    assert not fired  # it waits for the cancel to be sent
    host, port, factory = w.clock.tcpClients[-1][:3]
    link = factory.buildProtocol(IPv4Address("TCP", host, port))
    lt = Transport(5432)
    lt.protocol = link
    link.makeConnection(lt)
    assert lt.value() == wire.cancel_request(40001, b"key!")
    assert fired == [None]


def test_drain_does_not_wait_for_a_cancel_forever() -> None:
    w = World()
    proto, t, backend = w.login(40001)
    proto.dataReceived(wire.query("select pg_sleep(30)"))
    fired: list[None] = []
    w.factory.drain(1.0).addCallback(fired.append)
    w.clock.advance(1.0)  # the cancel's dial never completes
    w.clock.advance(CANCEL_GRACE)
    assert fired == [None]


def test_drain_sends_no_cancel_for_an_idle_session() -> None:
    w = World()
    proto, t, backend = w.login(40001)
    proto.dataReceived(wire.query("select 1"))
    backend.dataReceived(pgwire.command_complete("SELECT 1") + pgwire.ready_for_query(b"I"))
    dials = len(w.clock.tcpClients)
    drained = w.factory.drain(1.0)
    w.clock.advance(1.0)
    assert drained.called and len(w.clock.tcpClients) == dials
