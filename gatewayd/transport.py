# -*- test-case-name: tests.unit.test_transport -*-
"""
Eager writes: send at once when a TCP transport has nothing queued.

Twisted's C{FileDescriptor.write} never sends; it queues the bytes and asks the
reactor for a writable event, so every relayed message costs an extra loop turn
and two C{epoll_ctl} calls (twisted/twisted#5303).  On the relay that is most of
our distance to PgBouncer (reference/twisted-style.md C.5: 21-28 µs -> 11-15 µs
per round trip).  asyncio's and libuv's transports try C{send()} first; this
module gives plain Twisted TCP transports the same behaviour, and only them:

  - TLS transports (C{transport.TLS}) and anything that is not a
    C{twisted.internet.tcp.Connection} keep Twisted's own C{write};
  - when anything is already queued, or the transport is disconnecting, we
    defer to C{write} so ordering, producers and half-close stay Twisted's;
  - a partial send queues the remainder through C{write}, which also pauses a
    registered producer once the buffer passes C{bufferSize}.

It reads four attributes of C{tcp.Connection} (C{dataBuffer}, C{offset},
C{_tempDataLen}, C{socket}); L{supports_eager_writes} checks they are there, so a
future Twisted that renames them only loses the optimisation.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import tcp

Writer = Callable[[bytes], None]

_REQUIRED = ("dataBuffer", "offset", "_tempDataLen", "socket", "TLS", "disconnecting")


def supports_eager_writes(transport: Any) -> bool:
    """True for a plain Twisted TCP transport whose internals we know."""
    return isinstance(transport, tcp.Connection) and all(
        hasattr(transport, name) for name in _REQUIRED)


def eager_writer(transport: Any) -> Writer:
    """
    A C{write(data)} for C{transport} that calls C{send()} at once when nothing
    is queued; otherwise (or for TLS and non-TCP transports) it is C{transport.write}.
    """
    if not supports_eager_writes(transport):
        return transport.write
    queued_write = transport.write
    send = transport.socket.send

    def write(data: bytes) -> None:
        if (transport.TLS or transport._tempDataLen or transport.dataBuffer
                or transport.disconnecting or not transport.connected):
            queued_write(data)
            return
        try:
            sent = send(data)
        except BlockingIOError:
            sent = 0
        except InterruptedError:
            sent = 0
        except OSError:
            # Let Twisted's own write path meet the error and report the loss.
            queued_write(data)
            return
        if sent < len(data):
            queued_write(data[sent:])

    return write
