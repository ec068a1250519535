# -*- test-case-name: tests.unit.test_pgwire_messages -*-
"""
Primitive encoders and a bounds-checked reader for PostgreSQL message bodies.

One place decides how text crosses the bytes/str boundary so that builders
and decoders agree: UTF-8 with C{surrogateescape}.  PostgreSQL strings are
bytes in the client encoding; UTF-8 is what nearly every client uses, and
C{surrogateescape} lets bytes that are not UTF-8 survive a decode -> encode
round trip unchanged instead of being lost or raising.  (Consumers that must
emit strict UTF-8, e.g. protobuf, should re-encode with C{errors="replace"}.)

The reader turns every out-of-bounds or malformed field into a
L{ProtocolViolation} (08P01) so that decoding hostile bytes never raises
C{struct.error}, C{IndexError} or C{UnicodeDecodeError}.
"""

from __future__ import annotations

import struct

from gatewayd.errors import ProtocolViolation

TEXT_ENCODING = "utf-8"
TEXT_ERRORS = "surrogateescape"

INT16 = struct.Struct(">h")
UINT16 = struct.Struct(">H")
INT32 = struct.Struct(">i")
UINT32 = struct.Struct(">I")

Text = str | bytes


def encode_text(value: Text, encoding: str = TEXT_ENCODING) -> bytes:
    """C{str} -> bytes in C{encoding}; bytes-like values pass through."""
    if isinstance(value, str):
        return value.encode(encoding, TEXT_ERRORS)
    return bytes(value)


def cstring(value: Text, what: str = "string", encoding: str = TEXT_ENCODING) -> bytes:
    """
    Encode a protocol String: the text followed by one NUL.

    @raise ValueError: the text contains a NUL, which would end the string
        early and desynchronise every field after it.
    """
    raw = encode_text(value, encoding)
    if b"\0" in raw:
        raise ValueError(f"{what} must not contain a NUL byte: {value!r}")
    return raw + b"\0"


def message(type_byte: bytes, body: bytes = b"") -> bytes:
    """Frame a regular message: type byte, int32 length (counting itself), body."""
    return type_byte + INT32.pack(len(body) + 4) + body


def int16(value: int, what: str) -> bytes:
    """A signed Int16 field, with a clear error instead of C{struct.error}."""
    if not -0x8000 <= value <= 0x7FFF:
        raise ValueError(f"{what} out of Int16 range: {value}")
    return INT16.pack(value)


def count16(value: int, what: str) -> bytes:
    """
    A 16-bit count (columns, parameters, format codes).  The protocol calls
    it Int16 but servers read it unsigned, so up to 65535 is valid.
    """
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} out of range 0..65535: {value}")
    return UINT16.pack(value)


def int32(value: int, what: str) -> bytes:
    """A signed Int32 field, with a clear error instead of C{struct.error}."""
    if not -0x80000000 <= value <= 0x7FFFFFFF:
        raise ValueError(f"{what} out of Int32 range: {value}")
    return INT32.pack(value)


def uint32(value: int, what: str) -> bytes:
    """
    A 32-bit field that PostgreSQL declares Int32 but that holds an unsigned
    quantity (OIDs, process ids).  Negative values in Int32 range are accepted
    and written in two's complement so either convention round-trips.
    """
    if not -0x80000000 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{what} out of 32-bit range: {value}")
    return UINT32.pack(value & 0xFFFFFFFF)


class Reader:
    """
    Sequential, bounds-checked reads from one message body.

    @ivar what: the message name used in error texts ("DataRow", ...).
    """

    __slots__ = ("_body", "_pos", "what", "encoding")

    def __init__(self, body: bytes, what: str, encoding: str = TEXT_ENCODING) -> None:
        self._body = body
        self._pos = 0
        self.what = what
        self.encoding = encoding

    def fail(self, problem: str) -> ProtocolViolation:
        """The exception to raise for a malformed field."""
        return ProtocolViolation(f"malformed {self.what} message: {problem}")

    def _take(self, n: int) -> int:
        pos = self._pos
        if n < 0 or pos + n > len(self._body):
            raise self.fail("unexpected end of message")
        self._pos = pos + n
        return pos

    def byte(self) -> int:
        """One unsigned byte."""
        return self._body[self._take(1)]

    def int16(self) -> int:
        """A signed Int16."""
        return INT16.unpack_from(self._body, self._take(2))[0]

    def uint16(self) -> int:
        """An unsigned 16-bit count (PostgreSQL's Int16 counts are never negative)."""
        return UINT16.unpack_from(self._body, self._take(2))[0]

    def int32(self) -> int:
        """A signed Int32."""
        return INT32.unpack_from(self._body, self._take(4))[0]

    def uint32(self) -> int:
        """An Int32 that holds an unsigned quantity (OID, process id)."""
        return UINT32.unpack_from(self._body, self._take(4))[0]

    def raw(self, n: int) -> bytes:
        """Exactly C{n} bytes."""
        pos = self._take(n)
        return self._body[pos : pos + n]

    def nullable(self) -> bytes | None:
        """An Int32 length (-1 for NULL) followed by that many bytes."""
        n = self.int32()
        if n == -1:
            return None
        if n < 0:
            raise self.fail(f"invalid value length {n}")
        return self.raw(n)

    def cbytes(self) -> bytes:
        """A NUL-terminated String, as bytes without the NUL."""
        body, pos = self._body, self._pos
        end = body.find(b"\0", pos)
        if end < 0:
            raise self.fail("unterminated string")
        self._pos = end + 1
        return body[pos:end]

    def cstring(self) -> str:
        """A NUL-terminated String, decoded."""
        return self.cbytes().decode(self.encoding, TEXT_ERRORS)

    def rest(self) -> bytes:
        """Everything not read yet."""
        pos = self._pos
        self._pos = len(self._body)
        return self._body[pos:]

    @property
    def at_end(self) -> bool:
        """Whether the whole body has been read."""
        return self._pos >= len(self._body)

    def end(self) -> None:
        """Insist that nothing follows: trailing bytes mean a desynchronised peer."""
        if self._pos != len(self._body):
            raise self.fail(f"{len(self._body) - self._pos} unexpected trailing bytes")
