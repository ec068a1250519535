"""
Tests for L{gatewayd.pgwire.startup}: the untyped first packets.

Vectors are built by hand from the protocol documentation and, to prove we
parse exactly what real clients send, captured from psql (libpq 15) and
psycopg (libpq 18, protocol 3.2, direct TLS) talking to a tiny fake server.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd import pgwire
from gatewayd.errors import ProtocolViolation
from gatewayd.pgwire import (
    PROTOCOL_3,
    PROTOCOL_3_2,
    CancelRequest,
    DirectTLS,
    GSSENCRequest,
    SSLRequest,
    StartupMessage,
    StartupParser,
    sqlstate,
)

SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"  # length 8, 1234.5679
GSSENC_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x30"  # length 8, 1234.5680
# length 18, version 3.0, user=bob, terminator
STARTUP_BOB = b"\x00\x00\x00\x12\x00\x03\x00\x00user\x00bob\x00\x00"


def startup(body: bytes, protocol: int = PROTOCOL_3) -> bytes:
    """A StartupMessage with a hand-written parameter body."""
    return struct.pack(">iI", 8 + len(body), protocol) + body


def parse_all(data: bytes, chunks: list[int] | None = None) -> list[object]:
    """Feed C{data} (in C{chunks} sizes) and drain every packet."""
    parser = StartupParser()
    out: list[object] = []
    pieces = [data] if chunks is None else split(data, chunks)
    for piece in pieces:
        packet = parser.feed(piece)
        while packet is not None:
            out.append(packet)
            if isinstance(packet, DirectTLS):
                return out
            packet = parser.feed(b"")
    return out


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    pieces, pos = [], 0
    for size in sizes:
        pieces.append(data[pos : pos + size])
        pos += size
    pieces.append(data[pos:])
    return pieces


def violation(data: bytes, **kw: int) -> ProtocolViolation:
    with pytest.raises(ProtocolViolation) as info:
        StartupParser(**kw).feed(data)
    return info.value


# -- hand-built vectors ------------------------------------------------------------


def test_ssl_and_gssenc_requests() -> None:
    assert StartupParser().feed(SSL_REQUEST) == SSLRequest()
    assert StartupParser().feed(GSSENC_REQUEST) == GSSENCRequest()
    assert pgwire.ssl_request() == SSL_REQUEST
    assert pgwire.gssenc_request() == GSSENC_REQUEST


def test_startup_message_hand_vector() -> None:
    raw = startup(b"user\0bob\0database\0shop\0application_name\0psql\0\0")
    packet = StartupParser().feed(raw)
    assert packet == StartupMessage(
        PROTOCOL_3, {"user": "bob", "database": "shop", "application_name": "psql"}, raw
    )
    assert packet.raw is not None and packet.raw == raw
    assert (packet.user, packet.database, packet.version) == ("bob", "shop", (3, 0))
    assert pgwire.startup_message({"user": "bob", "database": "shop", "application_name": "psql"}) == raw


def test_database_defaults_to_user_without_touching_raw() -> None:
    raw = startup(b"user\0bob\0\0")
    packet = StartupParser().feed(raw)
    assert packet.parameters == {"user": "bob", "database": "bob"}
    assert packet.raw == raw
    # An empty database also defaults, as in PostgreSQL.
    assert StartupParser().feed(startup(b"database\0\0user\0amy\0\0")).database == "amy"


def test_empty_values_and_options_kept() -> None:
    packet = StartupParser().feed(startup(b"user\0u\0options\0\0_pq_.x\0y\0\0"))
    assert packet.parameters["options"] == ""
    assert packet.parameters["_pq_.x"] == "y"


def test_non_utf8_parameter_round_trips() -> None:
    raw = startup(b"user\0caf\xe9\0\0")  # latin-1 client
    packet = StartupParser().feed(raw)
    assert packet.user.encode("utf-8", "surrogateescape") == b"caf\xe9"
    assert pgwire.startup_message({"user": packet.user}) == raw


@pytest.mark.parametrize("minor", [1, 2, 0xFFFF])
def test_protocol_3_minor_versions_are_forwarded(minor: int) -> None:
    raw = startup(b"user\0u\0\0", PROTOCOL_3 | minor)
    packet = StartupParser().feed(raw)
    assert packet.protocol == PROTOCOL_3 | minor
    assert packet.version == (3, minor)
    assert packet.raw == raw
    assert PROTOCOL_3_2 == 196610


@pytest.mark.parametrize("protocol", [2 << 16, (4 << 16), (1234 << 16) | 5681, 0])
def test_other_protocols_rejected(protocol: int) -> None:
    err = violation(startup(b"user\0u\0\0", protocol))
    assert err.sqlstate == sqlstate.FEATURE_NOT_SUPPORTED == "0A000"
    assert str(err).startswith(f"unsupported frontend protocol {protocol >> 16}.{protocol & 0xFFFF}")


def test_unsupported_protocol_rejected_from_header_alone() -> None:
    """The version is judged as soon as 8 bytes arrived, before the body."""
    err = violation(struct.pack(">iI", 5000, 2 << 16))
    assert err.sqlstate == "0A000"


@pytest.mark.parametrize(
    "body",
    [
        b"\0",  # no parameters at all
        b"database\0d\0\0",
        b"user\0\0\0",  # empty user
    ],
)
def test_missing_user(body: bytes) -> None:
    err = violation(startup(body))
    assert err.sqlstate == sqlstate.INVALID_AUTHORIZATION == "28000"
    assert str(err) == "no PostgreSQL user name specified in startup packet"


@pytest.mark.parametrize(
    "body",
    [
        b"",  # nothing after the version
        b"user\0u\0",  # no final terminator
        b"user\0u",  # unterminated value
        b"user\0u\0database\0\0",  # odd: name without value, then terminator
        b"user\0",  # name, no value
        b"user\0u\0\0\0",  # bytes after the terminator
        b"\0\0",  # empty name
        b"user\0u\0\0x",  # trailing garbage
    ],
)
def test_malformed_layout(body: bytes) -> None:
    err = violation(startup(body))
    assert err.sqlstate == "08P01"
    assert "startup packet layout" in str(err)


def test_duplicate_parameter() -> None:
    err = violation(startup(b"user\0a\0user\0b\0\0"))
    assert (err.sqlstate, str(err)) == ("08P01", 'duplicate startup parameter "user"')


@pytest.mark.parametrize("length", [-1, 0, 4, 7, 10005, 0x7FFFFFFF])
def test_invalid_length(length: int) -> None:
    err = violation(struct.pack(">i", length))  # judged from the length word alone
    assert (err.sqlstate, str(err)) == ("08P01", "invalid length of startup packet")


def test_max_size_is_body_limit_like_postgresql() -> None:
    """PostgreSQL compares the length minus the length word with 10000."""
    body = b"user\0u\0x\0" + b"y" * (10000 - 4 - 11) + b"\0\0"
    assert len(startup(body)) == 10004
    assert StartupParser().feed(startup(body)).parameters["x"].startswith("y")
    assert violation(startup(body[:-1] + b"y\0"), max_size=10000).sqlstate == "08P01"
    assert violation(startup(b"user\0u\0\0"), max_size=8).sqlstate == "08P01"


@pytest.mark.parametrize("data", [SSL_REQUEST, GSSENC_REQUEST])
def test_ssl_request_with_wrong_length(data: bytes) -> None:
    err = violation(struct.pack(">i", 12) + data[4:] + b"\0\0\0\0")
    assert err.sqlstate == "08P01"


# -- cancel requests ---------------------------------------------------------------


def test_cancel_request_protocol_3_0() -> None:
    raw = b"\x00\x00\x00\x10\x04\xd2\x16\x2e" + b"\x00\x00\x30\x39" + b"\xde\xad\xbe\xef"
    packet = StartupParser().feed(raw)
    assert packet == CancelRequest(12345, b"\xde\xad\xbe\xef", raw)
    assert pgwire.cancel_request(12345, b"\xde\xad\xbe\xef") == raw
    assert "deadbeef" not in repr(packet) and "\\xde" not in repr(packet)  # a credential


@pytest.mark.parametrize("key_length", [4, 32, 256])
def test_cancel_request_variable_key(key_length: int) -> None:
    key = bytes(range(256))[:key_length]
    raw = pgwire.cancel_request(0xFFFFFFFF, key)
    assert len(raw) == 12 + key_length
    packet = StartupParser().feed(raw)
    assert (packet.process_id, packet.secret_key, packet.raw) == (0xFFFFFFFF, key, raw)


@pytest.mark.parametrize("key_length", [0, 3, 257])
def test_cancel_request_bad_key_length(key_length: int) -> None:
    raw = struct.pack(">iII", 12 + key_length, pgwire.CANCEL_REQUEST_CODE, 1) + b"k" * key_length
    err = violation(raw)
    assert (err.sqlstate, str(err)) == ("08P01", "invalid length of cancel request packet")
    with pytest.raises(ValueError):
        pgwire.cancel_request(1, b"k" * key_length)


# -- streaming behaviour -------------------------------------------------------------


def test_needs_more_bytes() -> None:
    parser = StartupParser()
    for byte in STARTUP_BOB[:-1]:
        assert parser.feed(bytes([byte])) is None
    assert parser.remaining == STARTUP_BOB[:-1]
    assert parser.feed(STARTUP_BOB[-1:]).user == "bob"
    assert parser.remaining == b""


def test_remaining_after_ssl_request_is_exposed() -> None:
    """Bytes pipelined after an SSLRequest must be visible (CVE-2021-23214)."""
    parser = StartupParser()
    assert parser.feed(SSL_REQUEST + b"\x00\x00\x00") == SSLRequest()
    assert parser.remaining == b"\x00\x00\x00"
    parser.reset()
    assert parser.remaining == b""
    assert parser.feed(STARTUP_BOB).user == "bob"


def test_parser_reused_after_negotiation() -> None:
    parser = StartupParser()
    assert parser.feed(GSSENC_REQUEST) == GSSENCRequest()
    assert parser.remaining == b""
    assert parser.feed(SSL_REQUEST) == SSLRequest()
    assert parser.feed(STARTUP_BOB + b"Q\0").user == "bob"
    assert parser.remaining == b"Q\0"  # early regular-message bytes stay for the relay


def test_drains_several_buffered_packets() -> None:
    cancel = pgwire.cancel_request(7, b"abcd")
    assert parse_all(SSL_REQUEST + GSSENC_REQUEST + cancel) == [
        SSLRequest(),
        GSSENCRequest(),
        CancelRequest(7, b"abcd", cancel),
    ]


def test_direct_tls_client_hello() -> None:
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"r" * 32
    parser = StartupParser()
    assert parser.feed(hello[:1]) == DirectTLS()
    assert parser.feed(hello[1:]) == DirectTLS()
    assert parser.remaining == hello  # nothing consumed: the TLS layer gets it all


def test_errors_are_final() -> None:
    parser = StartupParser()
    with pytest.raises(ProtocolViolation):
        parser.feed(struct.pack(">i", 3))
    with pytest.raises(ProtocolViolation) as info:
        parser.feed(STARTUP_BOB)
    assert info.value.sqlstate == "08P01"
    parser.reset()
    assert parser.feed(STARTUP_BOB).user == "bob"


# -- property tests ------------------------------------------------------------------

_name = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\0"), min_size=1, max_size=12
)
_value = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0"), max_size=20)


@st.composite
def packets(draw: st.DrawFn) -> bytes:
    """One valid packet of any kind."""
    kind = draw(st.sampled_from(["ssl", "gss", "cancel", "startup"]))
    if kind == "ssl":
        return pgwire.ssl_request()
    if kind == "gss":
        return pgwire.gssenc_request()
    if kind == "cancel":
        key = draw(st.binary(min_size=4, max_size=256))
        return pgwire.cancel_request(draw(st.integers(0, 0xFFFFFFFF)), key)
    params = draw(st.dictionaries(_name.filter(lambda n: n != "user"), _value, max_size=5))
    params = {"user": draw(_value.filter(bool)), **params}
    return pgwire.startup_message(params, PROTOCOL_3 | draw(st.integers(0, 3)))


@settings(deadline=None)
@given(st.lists(packets(), min_size=1, max_size=4), st.data())
def test_any_split_gives_the_same_packets(stream: list[bytes], data: st.DataObject) -> None:
    joined = b"".join(stream)
    sizes = data.draw(st.lists(st.integers(0, len(joined)), max_size=8))
    whole = parse_all(joined)
    assert len(whole) == len(stream)
    assert parse_all(joined, sizes) == whole
    for packet, raw in zip(whole, stream):
        if isinstance(packet, (StartupMessage, CancelRequest)):
            assert packet.raw == raw


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=200), st.lists(st.integers(1, 50), max_size=10))
def test_random_bytes_only_raise_protocol_violation(data: bytes, sizes: list[int]) -> None:
    parser = StartupParser()
    returned = 0
    try:
        for piece in split(data, sizes):
            packet = parser.feed(piece)
            while packet is not None and not isinstance(packet, DirectTLS):
                returned += 1
                assert returned <= len(data) // 8  # each packet consumes >= 8 bytes: no loop
                packet = parser.feed(b"")
            if isinstance(packet, DirectTLS):
                break
    except ProtocolViolation as e:
        assert e.sqlstate in ("08P01", "0A000", "28000")


@settings(deadline=None)
@given(packets(), st.data())
def test_truncated_or_corrupted_packets(raw: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(raw) - 1))
    parser = StartupParser()
    assert parser.feed(raw[:cut]) in (None, DirectTLS())
    flip = data.draw(st.integers(0, len(raw) - 1))
    corrupted = raw[:flip] + bytes([raw[flip] ^ data.draw(st.integers(1, 255))]) + raw[flip + 1 :]
    try:
        parse_all(corrupted)
    except ProtocolViolation:
        pass


# -- real clients --------------------------------------------------------------------


class FakeServer:
    """
    A loopback TCP server running C{handler(sock)} in a thread per connection.

    Exceptions in handlers are kept in C{errors} and re-raised by C{close}.
    """

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.handler = handler
        self.errors: list[BaseException] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(20)
            try:
                self.handler(conn)
            except BaseException as e:  # reported by close()
                self.errors.append(e)

    def close(self) -> None:
        self._stop.set()
        self._accepter.join(5)
        self._listener.close()
        for thread in self._threads:
            thread.join(5)
        if self.errors:
            raise self.errors[0]


def recv_packet(conn: socket.socket, parser: StartupParser, seen: bytearray) -> object:
    """Read until the parser yields a packet; C{seen} collects every byte read."""
    packet = parser.feed(b"")
    while packet is None:
        data = conn.recv(4096)
        if not data:
            raise EOFError("client closed during startup")
        seen += data
        packet = parser.feed(data)
    return packet


def negotiate(conn: socket.socket, parser: StartupParser, seen: bytearray, log: list[object]) -> object:
    """Refuse SSL/GSSENC like a server without them; return the packet that follows."""
    packet = recv_packet(conn, parser, seen)
    log.append(packet)
    while isinstance(packet, (SSLRequest, GSSENCRequest)):
        assert parser.remaining == b""
        conn.sendall(b"N")
        packet = recv_packet(conn, parser, seen)
        log.append(packet)
    return packet


def client_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = "20"
    return env


@pytest.mark.skipif(shutil.which("psql") is None and os.environ.get("CI") != "true", reason="psql not installed")
def test_capture_psql_startup() -> None:
    """psql (libpq) with sslmode=prefer: SSLRequest, then the StartupMessage."""
    log: list[object] = []
    seen = bytearray()

    def handler(conn: socket.socket) -> None:
        parser = StartupParser()
        packet = negotiate(conn, parser, seen, log)
        assert isinstance(packet, StartupMessage)
        conn.sendall(
            pgwire.error_response(
                sqlstate.CANNOT_CONNECT_NOW, "captured by the pgwire test", severity="FATAL", hint="expected"
            )
        )

    server = FakeServer(handler)
    try:
        result = subprocess.run(
            ["psql", f"host=127.0.0.1 port={server.port} sslmode=prefer user=x dbname=y", "-c", "select 1"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            env=client_env(),
        )
    finally:
        server.close()
    # libpq understood our ErrorResponse and showed it.
    assert result.returncode == 2
    assert "captured by the pgwire test" in result.stderr
    assert SSLRequest() in log
    startup_packet = log[-1]
    assert isinstance(startup_packet, StartupMessage)
    assert startup_packet.protocol == PROTOCOL_3
    assert startup_packet.user == "x" and startup_packet.database == "y"
    assert startup_packet.parameters["application_name"] == "psql"
    # raw is exactly what psql sent, and our builder encodes it byte for byte.
    # (libpq tries GSSENC first only when it holds Kerberos credentials.)
    assert bytes(seen) in (SSL_REQUEST + startup_packet.raw, GSSENC_REQUEST + SSL_REQUEST + startup_packet.raw)
    assert pgwire.startup_message(startup_packet.parameters) == startup_packet.raw


def serve_session(conn: socket.socket, startup_packet: StartupMessage, key: bytes) -> None:
    """Complete the handshake with our builders, then answer each Sync/Query."""
    conn.sendall(
        pgwire.authentication_ok()
        + pgwire.parameter_status("server_version", "18.0")
        + pgwire.parameter_status("client_encoding", "UTF8")
        + pgwire.parameter_status("standard_conforming_strings", "on")
        + pgwire.parameter_status("DateStyle", "ISO, MDY")
        + pgwire.parameter_status("integer_datetimes", "on")
        + pgwire.backend_key_data(4242, key)
        + pgwire.ready_for_query()
    )
    framer = pgwire.MessageFramer()
    while True:
        data = conn.recv(65536)
        if not data:
            return
        for raw in framer.feed(data):
            if raw[:1] == b"X":
                return
            if raw[:1] in (b"S", b"Q"):
                conn.sendall(pgwire.ready_for_query())


@pytest.mark.parametrize(
    ("options", "protocol", "key"),
    [
        ("", PROTOCOL_3, b"\x01\x02\x03\x04"),
        ("max_protocol_version=3.2", PROTOCOL_3_2, bytes(range(32))),
    ],
    ids=["protocol-3.0", "protocol-3.2"],
)
def test_capture_psycopg_startup_and_cancel(options: str, protocol: int, key: bytes) -> None:
    """
    psycopg (libpq 18) startup in protocol 3.0 and 3.2, then a CancelRequest
    carrying the 4-byte or 32-byte key our BackendKeyData handed out.
    """
    psycopg = pytest.importorskip("psycopg")
    log: list[object] = []
    cancelled = threading.Event()

    def handler(conn: socket.socket) -> None:
        parser = StartupParser()
        packet = negotiate(conn, parser, bytearray(), log)
        if isinstance(packet, CancelRequest):
            cancelled.set()
            return
        assert isinstance(packet, StartupMessage)
        serve_session(conn, packet, key)

    server = FakeServer(handler)
    try:
        conninfo = f"host=127.0.0.1 port={server.port} user=alice dbname=shop sslmode=prefer gssencmode=disable {options}"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            assert conn.info.backend_pid == 4242
            # cancel_safe, not cancel: libpq's blocking PQcancel holds the GIL
            # and would starve the server thread.
            conn.cancel_safe(timeout=20)
            assert cancelled.wait(20)
    finally:
        server.close()
    startups = [p for p in log if isinstance(p, StartupMessage)]
    assert len(startups) == 1
    assert startups[0].protocol == protocol
    assert (startups[0].user, startups[0].database) == ("alice", "shop")
    cancels = [p for p in log if isinstance(p, CancelRequest)]
    assert len(cancels) == 1
    assert (cancels[0].process_id, cancels[0].secret_key) == (4242, key)
    assert cancels[0].raw == pgwire.cancel_request(4242, key)


def test_capture_psycopg_direct_tls() -> None:
    """libpq 18 with sslnegotiation=direct opens with a TLS ClientHello."""
    psycopg = pytest.importorskip("psycopg")
    hellos: list[bytes] = []

    def handler(conn: socket.socket) -> None:
        parser = StartupParser()
        packet = None
        while packet is None:
            data = conn.recv(4096)
            if not data:
                return
            packet = parser.feed(data)
        assert packet == DirectTLS()
        hellos.append(parser.remaining)

    server = FakeServer(handler)
    try:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(
                f"host=127.0.0.1 port={server.port} user=u sslmode=require sslnegotiation=direct gssencmode=disable",
                connect_timeout=20,
            )
    finally:
        server.close()
    assert hellos and hellos[0][:1] == b"\x16" and hellos[0][5:6] == b"\x01"  # handshake: ClientHello
