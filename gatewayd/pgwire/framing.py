# -*- test-case-name: tests.unit.test_pgwire_framing -*-
"""
Message boundaries in the regular PostgreSQL stream (after startup).

Every regular message is a type byte, an Int32 length that counts itself
but not the type byte, and C{length - 4} body bytes.  Two tools find the
boundaries, for the relay's two modes:

  - L{MessageFramer} returns whole messages; the relay uses it when a plugin
    subscribed to traffic hooks and needs to see (and may rewrite) them.
  - L{MessageScanner} only follows the boundaries without keeping any bytes;
    the relay runs it on every read in byte-pump mode so that it always knows
    whether the stream sits between messages and the backend's transaction
    status (from ReadyForQuery), at the price of a few attribute reads per
    chunk.

Both are linear in the bytes fed however the stream is chunked, and both
reject a length below 4 or above C{max_size} with L{ProtocolViolation}
(08P01) before buffering the body, so a hostile length cannot make the
gateway allocate.  PostgreSQL itself caps messages at 1 GB.
"""

from __future__ import annotations

import struct

from gatewayd.errors import ProtocolViolation

#: PostgreSQL itself refuses messages over 1 GB - 1 (PQ_LARGE_MESSAGE_LIMIT).
DEFAULT_MAX_MESSAGE_SIZE = 1 << 30
#: Type byte + Int32 length.
HEADER_SIZE = 5

_READY_FOR_QUERY = 0x5A  # "Z"
_MAX_INT32 = 0x7FFFFFFF
# The length is read unsigned: a negative Int32 then shows up as a huge value
# and one "> max_size" test rejects it along with oversized ones.
_unpack_header = struct.Struct(">BI").unpack_from


def _length_error(length: int, max_size: int) -> ProtocolViolation:
    """The ProtocolViolation for a length outside C{[4, max_size]} (unsigned as read)."""
    if length > _MAX_INT32:
        length -= 1 << 32
    if length < 4:
        return ProtocolViolation(f"invalid message length {length}")
    return ProtocolViolation(f"invalid message length {length}: larger than the {max_size} byte limit")


def _check_max_size(max_size: int) -> int:
    if not 4 <= max_size <= _MAX_INT32:
        raise ValueError(f"max_size must be between 4 and {_MAX_INT32}, not {max_size}")
    return max_size


class MessageFramer:
    """
    Split a byte stream into complete raw messages (header included).

    Complete messages found directly in the fed chunk are sliced out of it
    (one copy each, none when the chunk is exactly one message).  Only a
    partial message at the end of a chunk is buffered; once its header is
    known, later chunks are appended without re-parsing until it is
    complete.  A message that arrives in many chunks is therefore copied
    twice in total (into the buffer, then out as C{bytes}): linear, never
    quadratic.

    After a L{ProtocolViolation} the stream is out of sync; the caller must
    close the connection.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_size = _check_max_size(max_size)
        self._buffer = bytearray()
        self._need = 0  # total size of the buffered message once its header is known

    @property
    def buffered(self) -> int:
        """Bytes held for a message that is not complete yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """
        Add C{data}; return the messages it completes, in order.

        @raise ProtocolViolation: a length below 4 or above C{max_size}.
        """
        if type(data) is not bytes:
            data = bytes(data)
        out: list[bytes] = []
        pos = 0
        n = len(data)
        buf = self._buffer
        if buf:
            pos = self._finish_buffered(data, out)
            if buf:
                return out
        max_size = self.max_size
        append = out.append
        limit = n - HEADER_SIZE
        while pos <= limit:
            length = _unpack_header(data, pos)[1]
            if length > max_size or length < 4:
                raise _length_error(length, max_size)
            end = pos + 1 + length
            if end > n:
                break
            append(data[pos:end])  # the whole chunk when it is one message: no copy
            pos = end
        if pos < n:
            with memoryview(data) as view:
                buf += view[pos:]
            if len(buf) >= HEADER_SIZE:
                self._need = 1 + _unpack_header(buf)[1]
        return out

    def _finish_buffered(self, data: bytes, out: list[bytes]) -> int:
        """
        Complete the buffered message from the front of C{data}.

        @return: how many bytes of C{data} were used.
        """
        buf = self._buffer
        pos = 0
        if len(buf) < HEADER_SIZE:
            pos = min(HEADER_SIZE - len(buf), len(data))
            buf += data[:pos]
            if len(buf) < HEADER_SIZE:
                return pos
            length = _unpack_header(buf)[1]
            if length > self.max_size or length < 4:
                raise _length_error(length, self.max_size)
            self._need = 1 + length
        take = min(self._need - len(buf), len(data) - pos)
        if take:
            with memoryview(data) as view:
                buf += view[pos : pos + take]
        pos += take
        if len(buf) == self._need:
            out.append(bytes(buf))
            buf.clear()
            self._need = 0
        return pos


class MessageScanner:
    """
    Follow message boundaries without copying message bodies.

    Only the header of a message that straddles two chunks (at most 4 bytes)
    is kept; body bytes are skipped arithmetically.  The header fields are
    read straight from the caller's buffer with C{struct.unpack_from}.

    @ivar ready_status: the status byte of the last complete ReadyForQuery
        (C{ord("I")}, C{ord("T")} or C{ord("E")}), 0 before any.
    @ivar messages: how many messages have been completed.
    @ivar in_message: (property) whether the stream is inside a message,
        i.e. the last byte fed was not the end of a message.

    After a L{ProtocolViolation} the stream is out of sync; the caller must
    close the connection.
    """

    __slots__ = ("max_size", "ready_status", "messages", "_skip", "_carry", "_ready_pending")

    def __init__(self, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_size = _check_max_size(max_size)
        self.ready_status = 0
        self.messages = 0
        self._skip = 0  # bytes of the current message's body still to come
        self._carry = b""  # first 1-4 bytes of a header split across chunks
        self._ready_pending = False  # current message is a ReadyForQuery awaiting its status byte

    @property
    def in_message(self) -> bool:
        """Whether the last byte fed was not the end of a message."""
        return bool(self._skip or self._carry)

    def feed(self, data: bytes) -> None:
        """
        Account for C{data}, any bytes-like object (it is not retained).

        @raise ProtocolViolation: a length below 4 or above C{max_size}.
        """
        # Hot path: one call per read in byte-pump mode.  Kept flat on
        # purpose (locals, no helper calls per message, no slicing).
        n = len(data)
        pos = self._skip
        if pos:
            if pos > n:
                self._skip = pos - n
                return
            # The current message ends inside this chunk.
            count = 1
            if self._ready_pending:
                self.ready_status = data[pos - 1]
                self._ready_pending = False
        elif self._carry:
            pos = self._finish_header(data)
            if pos < 0:
                return
            count = 1
        else:
            count = 0
        max_size = self.max_size
        status = -1
        limit = n - 5
        while pos <= limit:
            kind, length = _unpack_header(data, pos)
            if length > max_size or length < 4:
                raise _length_error(length, max_size)
            pos += length + 1
            count += 1
            if kind == _READY_FOR_QUERY and length == 5 and pos <= n:
                status = data[pos - 1]
        if pos > n:
            # The last header was complete but its message is not: the loop
            # ran, so kind/length are that message's.
            self._skip = pos - n
            self._ready_pending = kind == _READY_FOR_QUERY and length == 5
            count -= 1
        else:
            self._skip = 0
            if pos < n:
                self._carry = bytes(data[pos:])
        self.messages += count
        if status >= 0:
            self.ready_status = status

    def _finish_header(self, data: bytes) -> int:
        """
        Complete a header split across chunks.

        @return: the offset in C{data} just past the completed message, or -1
            if this chunk did not complete it (state updated either way).
        """
        carry = self._carry
        need = 5 - len(carry)
        n = len(data)
        if n < need:
            self._carry = carry + bytes(data)
            return -1
        self._carry = b""
        kind, length = _unpack_header(carry + bytes(data[:need]))
        if length > self.max_size or length < 4:
            raise _length_error(length, self.max_size)
        end = need + length - 4
        is_ready = kind == _READY_FOR_QUERY and length == 5
        if end > n:
            self._skip = end - n
            self._ready_pending = is_ready
            return -1
        if is_ready:
            self.ready_status = data[end - 1]
        return end
