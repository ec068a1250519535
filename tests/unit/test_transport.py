"""
eager_writer on a real C{twisted.internet.tcp.Connection} over a socketpair,
with a MemoryReactor standing in for the event loop: sends happen at once when
nothing is queued, a partial send queues the rest through Twisted's own write
(order kept, producer paused past bufferSize), and TLS or non-TCP transports
keep Twisted's write.
"""

from __future__ import annotations

import socket
from typing import Iterator

import pytest
from twisted.internet import tcp
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatewayd.transport import eager_writer, supports_eager_writes


class Pair:
    """Our end is a Twisted TCP transport; the peer is a plain non-blocking socket."""

    def __init__(self, sndbuf: int | None = None) -> None:
        ours, self.peer = socket.socketpair()
        if sndbuf:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
        ours.setblocking(False)
        self.peer.setblocking(False)
        self.reactor = MemoryReactorClock()
        self.protocol = Protocol()
        self.transport = tcp.Connection(ours, self.protocol, reactor=self.reactor)
        self.transport.connected = 1
        self.protocol.makeConnection(self.transport)

    def read_all(self) -> bytes:
        """Everything the peer can read now, flushing Twisted's queue as a reactor would."""
        out = bytearray()
        while True:
            try:
                chunk = self.peer.recv(1 << 20)
            except BlockingIOError:
                chunk = b""
            out += chunk
            if self.transport in self.reactor.getWriters():
                self.transport.doWrite()
            elif not chunk:
                return bytes(out)

    def close(self) -> None:
        self.peer.close()
        self.transport.socket.close()


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    yield p
    p.close()


@implementer(IPushProducer)
class Producer:
    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pauseProducing(self) -> None:  # noqa: N802
        self.paused += 1

    def resumeProducing(self) -> None:  # noqa: N802
        self.resumed += 1

    def stopProducing(self) -> None:  # noqa: N802
        pass


def test_supports_only_plain_tcp_transports(pair: Pair) -> None:
    assert supports_eager_writes(pair.transport)
    string = StringTransport()
    assert not supports_eager_writes(string)
    assert eager_writer(string) == string.write


def test_sends_at_once_when_nothing_is_queued(pair: Pair) -> None:
    write = eager_writer(pair.transport)
    write(b"hello")
    # On the wire already: no reactor turn, nothing queued, no writer registered.
    assert pair.peer.recv(100) == b"hello"
    assert pair.reactor.getWriters() == []
    assert pair.transport._tempDataLen == 0 and not pair.transport.dataBuffer


def test_partial_send_queues_the_rest_in_order() -> None:
    pair = Pair(sndbuf=4096)
    try:
        write = eager_writer(pair.transport)
        big = bytes(range(256)) * 8192  # 2 MB: far more than the socket takes at once
        write(big)
        assert pair.transport._tempDataLen > 0  # the remainder went through Twisted's queue
        assert pair.transport in pair.reactor.getWriters()
        write(b"tail")  # something is queued: this must not overtake it
        assert pair.read_all() == big + b"tail"
    finally:
        pair.close()


def test_partial_send_pauses_a_registered_producer() -> None:
    pair = Pair(sndbuf=4096)
    try:
        producer = Producer()
        verifyObject(IPushProducer, producer)
        pair.transport.registerProducer(producer, True)
        write = eager_writer(pair.transport)
        write(b"x" * (pair.transport.bufferSize * 4))
        assert producer.paused == 1
        pair.read_all()
        assert producer.resumed == 1
    finally:
        pair.close()


def test_tls_transport_uses_twisted_write(pair: Pair) -> None:
    calls: list[bytes] = []
    pair.transport.write = calls.append  # type: ignore[method-assign]
    write = eager_writer(pair.transport)
    pair.transport.TLS = True  # as after startTLS: bytes must go through the TLS layer
    write(b"secret")
    assert calls == [b"secret"]
    with pytest.raises(BlockingIOError):
        pair.peer.recv(100)  # nothing went out in the clear


def test_disconnecting_transport_uses_twisted_write(pair: Pair) -> None:
    calls: list[bytes] = []
    pair.transport.write = calls.append  # type: ignore[method-assign]
    write = eager_writer(pair.transport)
    pair.transport.disconnecting = True
    write(b"late")
    assert calls == [b"late"]


def test_send_error_is_left_to_twisted(pair: Pair) -> None:
    calls: list[bytes] = []
    pair.transport.write = calls.append  # type: ignore[method-assign]
    write = eager_writer(pair.transport)
    pair.peer.close()  # EPIPE on send
    write(b"to nobody")  # must not raise: Twisted's write path reports the loss
    assert calls == [b"to nobody"]
