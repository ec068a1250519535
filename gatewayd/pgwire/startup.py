# -*- test-case-name: tests.unit.test_pgwire_startup -*-
"""
The untyped packets a PostgreSQL client sends before the message stream.

A connection starts with packets that have no type byte: an Int32 length
(counting itself) and an Int32 code that is either a protocol version
(StartupMessage) or a special request (SSLRequest, GSSENCRequest,
CancelRequest).  PostgreSQL 17 clients may instead open with a TLS
ClientHello (C{sslnegotiation=direct}).  L{StartupParser} tells these apart,
validates them the way the PostgreSQL server does, and keeps the exact bytes
of StartupMessage and CancelRequest so the gateway can forward them
unchanged.

Sans-IO: no sockets, no Twisted; the caller feeds bytes and acts on the
returned packet objects.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from gatewayd.errors import ProtocolViolation
from gatewayd.pgwire import sqlstate
from gatewayd.pgwire._codec import TEXT_ENCODING, TEXT_ERRORS

#: Protocol 3.0 as sent in a StartupMessage (major << 16 | minor).
PROTOCOL_3 = 196608
#: Protocol 3.2 (PostgreSQL 18): variable-length cancel keys.
PROTOCOL_3_2 = PROTOCOL_3 | 2
#: The special "versions" 1234.5679, 1234.5680 and 1234.5678.
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
#: PostgreSQL's MAX_STARTUP_PACKET_LENGTH: largest body after the length word.
MAX_STARTUP_PACKET_LENGTH = 10000
#: Cancel keys are exactly 4 bytes in protocol 3.0 and 4 to 256 bytes in 3.2.
MIN_CANCEL_KEY_LENGTH = 4
MAX_CANCEL_KEY_LENGTH = 256
#: First byte of a TLS handshake record (ClientHello).
TLS_HANDSHAKE_BYTE = 0x16

_HEADER = struct.Struct(">iI")  # signed length (negative = invalid), unsigned code
_CANCEL_PID = struct.Struct(">I")
_LENGTH_ERROR = "invalid length of startup packet"


@dataclass(frozen=True, slots=True)
class SSLRequest:
    """The client asks whether the server will speak TLS (answer C{S} or C{N})."""


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    """The client asks for GSSAPI encryption (answer C{G} or C{N})."""


@dataclass(frozen=True, slots=True)
class DirectTLS:
    """
    The connection opens with a TLS ClientHello (PostgreSQL 17
    C{sslnegotiation=direct}): start TLS at once, without an SSLRequest.
    Nothing is consumed; L{StartupParser.remaining} holds the ClientHello.
    """


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """
    A request to cancel the query running on another connection.

    @ivar process_id: the target backend's process id (as an unsigned 32-bit
        number: poolers may put any 32 bits there).
    @ivar secret_key: 4 bytes (protocol 3.0) to 256 bytes (3.2).  Left out of
        C{repr} because it is a credential.
    @ivar raw: the exact packet, length word included, to forward unchanged.
    """

    process_id: int
    secret_key: bytes = field(repr=False)
    raw: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class StartupMessage:
    """
    The client's connection parameters.

    @ivar protocol: the requested version, C{major << 16 | minor}.  Any 3.x is
        accepted and forwarded: the backend answers a minor version it does
        not speak with NegotiateProtocolVersion, which we relay.
    @ivar parameters: name -> value in packet order.  C{database} is filled in
        with the user name when the client left it out or empty, as the
        server does; C{raw} is not changed.
    @ivar raw: the exact packet, length word included, to forward unchanged.
    """

    protocol: int
    parameters: dict[str, str]
    raw: bytes = field(repr=False)

    @property
    def user(self) -> str:
        """The (always present, non-empty) user name."""
        return self.parameters["user"]

    @property
    def database(self) -> str:
        """The database name, defaulted to the user name."""
        return self.parameters["database"]

    @property
    def version(self) -> tuple[int, int]:
        """C{(major, minor)} of the requested protocol."""
        return self.protocol >> 16, self.protocol & 0xFFFF


StartupPacket = SSLRequest | GSSENCRequest | DirectTLS | CancelRequest | StartupMessage


class StartupParser:
    """
    Incremental parser for the first packet(s) of a client connection.

    C{feed} returns at most one packet per call and keeps whatever followed it
    in L{remaining}; calling C{feed(b"")} parses the next buffered packet.

    Security: after L{SSLRequest} or L{GSSENCRequest} the caller must check
    that L{remaining} is empty before answering and starting encryption.
    Bytes that arrived with the request were sent in plaintext before the
    handshake and may have been injected by a man in the middle
    (CVE-2021-23214, CVE-2021-23222); treat them as a protocol violation
    ("received unencrypted data after SSL request") and close.  After the
    handshake, call L{reset} (or keep feeding: the buffer is then empty) to
    parse the StartupMessage that arrives over the encrypted channel.

    After L{DirectTLS} nothing is consumed, so feeding again returns
    L{DirectTLS} again: hand L{remaining} to the TLS layer instead.

    Any L{ProtocolViolation} is final: the parser keeps raising it, since the
    stream can no longer be trusted to be in sync.
    """

    def __init__(self, max_size: int = MAX_STARTUP_PACKET_LENGTH) -> None:
        """
        @param max_size: largest accepted packet body after the length word;
            PostgreSQL's limit (10000) by default.
        """
        self.max_size = max_size
        self._buffer = bytearray()
        self._error: ProtocolViolation | None = None

    @property
    def remaining(self) -> bytes:
        """Bytes received but not part of any packet returned so far."""
        return bytes(self._buffer)

    def reset(self) -> None:
        """Forget buffered bytes and any earlier error (e.g. after a TLS handshake)."""
        self._buffer.clear()
        self._error = None

    def feed(self, data: bytes = b"") -> StartupPacket | None:
        """
        Add C{data} and return the next complete packet, or C{None} if more
        bytes are needed.

        @raise ProtocolViolation: a malformed, oversized or unsupported packet
            (SQLSTATE in C{.sqlstate}: 08P01, 0A000 or 28000).
        """
        if self._error is not None:
            raise ProtocolViolation(str(self._error), self._error.sqlstate)
        buf = self._buffer
        buf += data
        if not buf:
            return None
        if buf[0] == TLS_HANDSHAKE_BYTE:
            return DirectTLS()
        try:
            return self._parse(buf)
        except ProtocolViolation as e:
            self._error = e
            raise

    def _parse(self, buf: bytearray) -> StartupPacket | None:
        have = len(buf)
        if have < 4:
            return None
        length = int.from_bytes(buf[:4], "big", signed=True)
        if not 4 <= length - 4 <= self.max_size:
            raise ProtocolViolation(_LENGTH_ERROR)
        if have < 8:
            return None
        code = _HEADER.unpack_from(buf)[1]
        # Reject what the header already condemns before buffering the body.
        _check_header(length, code)
        if have < length:
            return None
        raw = bytes(buf[:length])
        del buf[:length]
        if code == SSL_REQUEST_CODE:
            return SSLRequest()
        if code == GSSENC_REQUEST_CODE:
            return GSSENCRequest()
        if code == CANCEL_REQUEST_CODE:
            return CancelRequest(_CANCEL_PID.unpack_from(raw, 8)[0], raw[12:], raw)
        return StartupMessage(code, _parse_parameters(raw[8:]), raw)


def _check_header(length: int, code: int) -> None:
    """Validate the length against the request code, and the protocol version."""
    if code in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE):
        if length != 8:
            raise ProtocolViolation(_LENGTH_ERROR)
    elif code == CANCEL_REQUEST_CODE:
        if not MIN_CANCEL_KEY_LENGTH <= length - 12 <= MAX_CANCEL_KEY_LENGTH:
            raise ProtocolViolation("invalid length of cancel request packet")
    elif code >> 16 != 3:
        raise ProtocolViolation(
            f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: "
            "server supports 3.0 to 3.2",
            sqlstate.FEATURE_NOT_SUPPORTED,
        )


def _parse_parameters(body: bytes) -> dict[str, str]:
    """
    Parse C{name\\0value\\0 ... \\0} the way PostgreSQL's ProcessStartupPacket
    does, stricter only in refusing duplicate names (which the server would
    silently resolve last-wins, letting a proxy and the server disagree).
    """
    if not body.endswith(b"\0"):
        raise ProtocolViolation("invalid startup packet layout: expected terminator as last byte")
    items = body[:-1].split(b"\0")
    # A well-formed list is pairs each ending in NUL, so the split leaves one
    # empty string at the end; anything else is an unterminated field.
    if items.pop() != b"" or len(items) % 2:
        raise ProtocolViolation("invalid startup packet layout: expected terminator as last byte")
    params: dict[str, str] = {}
    for i in range(0, len(items), 2):
        name = items[i].decode(TEXT_ENCODING, TEXT_ERRORS)
        if not name:
            raise ProtocolViolation("invalid startup packet layout: expected terminator as last byte")
        if name in params:
            raise ProtocolViolation(f'duplicate startup parameter "{name}"')
        params[name] = items[i + 1].decode(TEXT_ENCODING, TEXT_ERRORS)
    user = params.get("user")
    if not user:
        raise ProtocolViolation(
            "no PostgreSQL user name specified in startup packet", sqlstate.INVALID_AUTHORIZATION
        )
    if not params.get("database"):
        params["database"] = user
    return params
