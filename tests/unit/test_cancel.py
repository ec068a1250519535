"""CancelRegistry: keys map to the server that issued them; cancels go there and nowhere else."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger

from gatewayd.backend import BackendTarget
from gatewayd.cancel import CancelRegistry
from gatewayd.config.schema import Client
from gatewayd.errors import BackendUnavailable
from gatewayd.pgwire import CancelRequest, StartupParser
from gatewayd.tls import BackendTLS
from tests.support import wire


def request(pid: int, key: bytes) -> CancelRequest:
    packet = StartupParser().feed(wire.cancel_request(pid, key))
    assert isinstance(packet, CancelRequest)
    return packet


class Conn:
    def __init__(self) -> None:
        self.transport = StringTransport()


class Target:
    """A backend target whose dials the test resolves."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.dials: list[defer.Deferred[Conn]] = []

    def dial(self) -> defer.Deferred[Conn]:
        d: defer.Deferred[Conn] = defer.Deferred()
        self.dials.append(d)
        return d


def test_forwards_to_the_target_that_issued_the_key() -> None:
    registry = CancelRegistry(Logger())
    a, b = Target("a:5432"), Target("b:5432")
    registry.register(100, b"kkkk", a)
    registry.register(100, b"llll", b)  # same pid on another server: keys tell them apart
    assert len(registry) == 2
    result = registry.forward(request(100, b"llll"))
    assert a.dials == [] and len(b.dials) == 1
    conn = Conn()
    b.dials[0].callback(conn)
    assert conn.transport.value() == wire.cancel_request(100, b"llll")
    assert conn.transport.disconnecting
    assert result.result is True and registry.forwarded == 1


def test_unknown_key_is_dropped_without_dialling() -> None:
    registry = CancelRegistry(Logger())
    a = Target("a:5432")
    registry.register(100, b"kkkk", a)
    for pid, key in ((100, b"xxxx"), (101, b"kkkk")):
        assert registry.forward(request(pid, key)).result is False
    assert a.dials == [] and registry.unknown == 2 and registry.forwarded == 0


def test_unregistered_key_is_unknown() -> None:
    registry = CancelRegistry(Logger())
    a = Target("a:5432")
    registry.register(7, b"kkkk", a)
    registry.unregister(7, b"kkkk")
    registry.unregister(7, b"kkkk")  # twice is harmless
    assert len(registry) == 0
    assert registry.forward(request(7, b"kkkk")).result is False and a.dials == []


def test_long_protocol_3_2_keys() -> None:
    registry = CancelRegistry(Logger())
    a = Target("a:5432")
    key = bytes(range(32))
    registry.register(9, key, a)
    registry.forward(request(9, key))
    assert len(a.dials) == 1


def test_dial_failure_is_reported_not_raised() -> None:
    logged: list[dict[str, Any]] = []
    registry = CancelRegistry(Logger(observer=logged.append))
    a = Target("a:5432")
    registry.register(1, b"kkkk", a)
    result = registry.forward(request(1, b"kkkk"))
    a.dials[0].errback(BackendUnavailable("a:5432: connection refused"))
    assert result.result is False and registry.forwarded == 0
    assert any("connection refused" in str(e.get("why")) for e in logged)


def test_forward_opens_a_fresh_connection_to_the_real_target() -> None:
    reactor = MemoryReactorClock()
    target = BackendTarget("default", "reads", Client(address="10.0.0.7:6543"),
                           BackendTLS("disable"), reactor)
    registry = CancelRegistry(Logger())
    registry.register(42, b"abcd", target)
    result = registry.forward(request(42, b"abcd"))
    host, port, factory = reactor.tcpClients[-1][:3]
    assert (host, port) == ("10.0.0.7", 6543)
    proto = factory.buildProtocol(IPv4Address("TCP", host, port))
    transport = StringTransport()
    proto.makeConnection(transport)
    assert transport.value() == wire.cancel_request(42, b"abcd")
    assert result.result is True
