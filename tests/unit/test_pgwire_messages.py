"""
Tests for L{gatewayd.pgwire.messages} and L{gatewayd.pgwire.decoders}.

Builders are checked against byte vectors written from the protocol
documentation, against what a real PostgreSQL server sends (each decoded
server message is rebuilt with our builders and must be byte-identical),
and against real clients (psycopg and asyncpg must accept result sets,
errors and notices we build).  Decoders are fuzzed: malformed input only
ever raises ProtocolViolation.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd import pgwire
from gatewayd.errors import ProtocolViolation
from gatewayd.pgwire import decode_client_message, decode_server_message, sqlstate

# -- hand-written vectors (protocol documentation, section "Message Formats") --------

VECTORS: list[tuple[bytes, bytes]] = [
    (pgwire.query("select 1"), b"Q\x00\x00\x00\x0dselect 1\x00"),
    (pgwire.sync(), b"S\x00\x00\x00\x04"),
    (pgwire.flush(), b"H\x00\x00\x00\x04"),
    (pgwire.terminate(), b"X\x00\x00\x00\x04"),
    (pgwire.copy_done(), b"c\x00\x00\x00\x04"),
    (pgwire.copy_data(b"1\n"), b"d\x00\x00\x00\x061\n"),
    (pgwire.copy_fail("no"), b"f\x00\x00\x00\x07no\x00"),
    (pgwire.password_message("pw"), b"p\x00\x00\x00\x07pw\x00"),
    (pgwire.sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=x"),
     b"p\x00\x00\x00\x1fSCRAM-SHA-256\x00\x00\x00\x00\x09n,,n=,r=x"),
    (pgwire.sasl_response(b"c=biws"), b"p\x00\x00\x00\x0ac=biws"),
    (pgwire.parse("s1", "select $1", [23]), b"P\x00\x00\x00\x17s1\x00select $1\x00\x00\x01\x00\x00\x00\x17"),
    (pgwire.parse("", "select 1"), b"P\x00\x00\x00\x10\x00select 1\x00\x00\x00"),
    (
        pgwire.bind("p", "s1", [b"42", None], param_formats=[0], result_formats=[1]),
        b"B\x00\x00\x00\x1dp\x00s1\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x0242\xff\xff\xff\xff\x00\x01\x00\x01",
    ),
    (pgwire.describe("S", "s1"), b"D\x00\x00\x00\x08Ss1\x00"),
    (pgwire.describe("P"), b"D\x00\x00\x00\x06P\x00"),
    (pgwire.execute("", 0), b"E\x00\x00\x00\x09\x00\x00\x00\x00\x00"),
    (pgwire.execute("p", 10), b"E\x00\x00\x00\x0ap\x00\x00\x00\x00\x0a"),
    (pgwire.close("S", "s1"), b"C\x00\x00\x00\x08Ss1\x00"),
    (pgwire.authentication_ok(), b"R\x00\x00\x00\x08\x00\x00\x00\x00"),
    (pgwire.authentication_cleartext_password(), b"R\x00\x00\x00\x08\x00\x00\x00\x03"),
    (pgwire.authentication_md5_password(b"salt"), b"R\x00\x00\x00\x0c\x00\x00\x00\x05salt"),
    (pgwire.authentication_sasl(["SCRAM-SHA-256"]), b"R\x00\x00\x00\x17\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00"),
    (pgwire.authentication_sasl_continue(b"r=x"), b"R\x00\x00\x00\x0b\x00\x00\x00\x0br=x"),
    (pgwire.authentication_sasl_final(b"v=x"), b"R\x00\x00\x00\x0b\x00\x00\x00\x0cv=x"),
    (pgwire.parameter_status("client_encoding", "UTF8"), b"S\x00\x00\x00\x19client_encoding\x00UTF8\x00"),
    (pgwire.backend_key_data(1234, b"\x00\x01\x02\x03"), b"K\x00\x00\x00\x0c\x00\x00\x04\xd2\x00\x01\x02\x03"),
    (pgwire.ready_for_query(), b"Z\x00\x00\x00\x05I"),
    (pgwire.ready_for_query("T"), b"Z\x00\x00\x00\x05T"),
    (pgwire.ready_for_query(b"E"), b"Z\x00\x00\x00\x05E"),
    (pgwire.data_row([b"1", None, ""]), b"D\x00\x00\x00\x13\x00\x03\x00\x00\x00\x011\xff\xff\xff\xff\x00\x00\x00\x00"),
    (pgwire.command_complete("SELECT 1"), b"C\x00\x00\x00\x0dSELECT 1\x00"),
    (pgwire.empty_query_response(), b"I\x00\x00\x00\x04"),
    (pgwire.parse_complete(), b"1\x00\x00\x00\x04"),
    (pgwire.bind_complete(), b"2\x00\x00\x00\x04"),
    (pgwire.close_complete(), b"3\x00\x00\x00\x04"),
    (pgwire.no_data(), b"n\x00\x00\x00\x04"),
    (pgwire.portal_suspended(), b"s\x00\x00\x00\x04"),
    (pgwire.parameter_description([23, 25]), b"t\x00\x00\x00\x0e\x00\x02\x00\x00\x00\x17\x00\x00\x00\x19"),
    (pgwire.negotiate_protocol_version(196608, ["_pq_.x"]),
     b"v\x00\x00\x00\x13\x00\x03\x00\x00\x00\x00\x00\x01_pq_.x\x00"),
    (
        pgwire.row_description([("?column?", 23)]),
        b"T\x00\x00\x00\x21\x00\x01?column?\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00",
    ),
    (
        pgwire.error_response(sqlstate.PROTOCOL_VIOLATION, "bad", severity="FATAL", detail="d", hint="h"),
        b"E\x00\x00\x00\x25SFATAL\x00VFATAL\x00C08P01\x00Mbad\x00Dd\x00Hh\x00\x00",
    ),
    (
        pgwire.notice_response("00000", "hi", severity="WARNING"),
        b"N\x00\x00\x00\x22SWARNING\x00VWARNING\x00C00000\x00Mhi\x00\x00",
    ),
    (pgwire.ssl_request(), b"\x00\x00\x00\x08\x04\xd2\x16\x2f"),
    (pgwire.gssenc_request(), b"\x00\x00\x00\x08\x04\xd2\x16\x30"),
    (pgwire.cancel_request(1, b"abcd"), b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x00\x01abcd"),
    (pgwire.startup_message({"user": "u"}), b"\x00\x00\x00\x10\x00\x03\x00\x00user\x00u\x00\x00"),
    (pgwire.startup_message({"user": "u"}, pgwire.PROTOCOL_3_2), b"\x00\x00\x00\x10\x00\x03\x00\x02user\x00u\x00\x00"),
]


@pytest.mark.parametrize(("built", "expected"), VECTORS, ids=[repr(v[1][:12]) for v in VECTORS])
def test_builder_vectors(built: bytes, expected: bytes) -> None:
    assert built == expected


def test_sqlstate_constants() -> None:
    assert (
        sqlstate.PROTOCOL_VIOLATION,
        sqlstate.CONNECTION_FAILURE,
        sqlstate.CANNOT_CONNECT_NOW,
        sqlstate.TOO_MANY_CONNECTIONS,
        sqlstate.INVALID_AUTHORIZATION,
        sqlstate.FEATURE_NOT_SUPPORTED,
        sqlstate.ADMIN_SHUTDOWN,
        sqlstate.QUERY_CANCELED,
        sqlstate.INSUFFICIENT_PRIVILEGE,
        sqlstate.SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION,
        sqlstate.INTERNAL_ERROR,
    ) == ("08P01", "08006", "57P03", "53300", "28000", "0A000", "57P01", "57014", "42501", "42000", "XX000")


@pytest.mark.parametrize(
    "build",
    [
        lambda: pgwire.query("select '\0'"),
        lambda: pgwire.parse("a\0b", "select 1"),
        lambda: pgwire.parameter_status("x", "a\0"),
        lambda: pgwire.error_response("08P01", "m", severity="NOTICE"),
        lambda: pgwire.notice_response("00000", "m", severity="ERROR"),
        lambda: pgwire.error_response("8P01", "m"),
        lambda: pgwire.error_response("08p01", "m"),
        lambda: pgwire.error_response("08P01", "m", fields={"C": "x"}),
        lambda: pgwire.error_response("08P01", "m", fields={"PP": "x"}),
        lambda: pgwire.ready_for_query(b"X"),
        lambda: pgwire.describe("X", "n"),
        lambda: pgwire.close("", "n"),
        lambda: pgwire.bind("", "", [b"1", b"2"], param_formats=[0, 0, 0]),
        lambda: pgwire.backend_key_data(1, b"abc"),
        lambda: pgwire.backend_key_data(1, b"k" * 257),
        lambda: pgwire.backend_key_data(1 << 32, b"abcd"),
        lambda: pgwire.authentication_md5_password(b"sal"),
        lambda: pgwire.execute("", 1 << 31),
        lambda: pgwire.startup_message({"": "x"}),
        lambda: pgwire.row_description([("a", 23)] * 65536),
    ],
)
def test_builders_refuse_what_would_corrupt_the_stream(build: Callable[[], bytes]) -> None:
    with pytest.raises(ValueError):
        build()


def test_error_response_extra_fields_and_decoding() -> None:
    raw = pgwire.error_response("42501", "permission denied", detail="by plugin", fields={"P": "8", "W": "rule 3"})
    decoded = decode_server_message(raw)
    assert decoded == {
        "type": "E",
        "fields": {"S": "ERROR", "V": "ERROR", "C": "42501", "M": "permission denied", "D": "by plugin", "P": "8", "W": "rule 3"},
    }
    assert pgwire.parse_error_fields(raw[5:]) == decoded["fields"]


def test_row_description_defaults_and_rich_columns() -> None:
    raw = pgwire.row_description(
        [("id", 20), {"name": "name", "type_oid": 1043, "table_oid": 16384, "column": 2, "modifier": 68, "format": 1}]
    )
    fields = decode_server_message(raw)["fields"]
    assert fields == [
        {"name": "id", "table_oid": 0, "column": 0, "type_oid": 20, "size": 8, "modifier": -1, "format": 0},
        {"name": "name", "table_oid": 16384, "column": 2, "type_oid": 1043, "size": -1, "modifier": 68, "format": 1},
    ]
    assert pgwire.row_description(fields) == raw


def test_single_field_helpers() -> None:
    assert pgwire.parse_backend_key_data(pgwire.backend_key_data(0xFFFFFFFF, b"k" * 32)[5:]) == (0xFFFFFFFF, b"k" * 32)
    assert pgwire.parse_parameter_status(pgwire.parameter_status("TimeZone", "UTC")[5:]) == ("TimeZone", "UTC")
    assert pgwire.parse_ready_for_query(b"T") == b"T"
    assert pgwire.parse_password_message(pgwire.password_message("md5abc")[5:]) == "md5abc"
    assert pgwire.parse_sasl_initial_response(pgwire.sasl_initial_response("SCRAM-SHA-256", None)[5:]) == (
        "SCRAM-SHA-256",
        None,
    )


def test_decode_client_messages() -> None:
    assert decode_client_message(pgwire.query("select 1")) == {"type": "Q", "query": "select 1"}
    assert decode_client_message(pgwire.parse("s", "select $1", [0, 23])) == {
        "type": "P",
        "name": "s",
        "query": "select $1",
        "param_types": [0, 23],
    }
    assert decode_client_message(pgwire.bind("p", "s", [b"\x00\x01", None], param_formats=[1], result_formats=[0, 1])) == {
        "type": "B",
        "portal": "p",
        "statement": "s",
        "param_formats": [1],
        "params": [b"\x00\x01", None],
        "result_formats": [0, 1],
    }
    assert decode_client_message(pgwire.describe("P", "p")) == {"type": "D", "kind": "P", "name": "p"}
    assert decode_client_message(pgwire.close("S", "s")) == {"type": "C", "kind": "S", "name": "s"}
    assert decode_client_message(pgwire.execute("p", 5)) == {"type": "E", "portal": "p", "max_rows": 5}
    for build, kind in ((pgwire.sync, "S"), (pgwire.flush, "H"), (pgwire.terminate, "X"), (pgwire.copy_done, "c")):
        assert decode_client_message(build()) == {"type": kind}
    assert decode_client_message(pgwire.copy_data(b"x")) == {"type": "d", "data": b"x"}
    assert decode_client_message(pgwire.copy_fail("why")) == {"type": "f", "message": "why"}
    assert decode_client_message(pgwire.password_message("pw")) == {"type": "p", "data": b"pw\0"}
    function_call = b"F" + struct.pack(">iIhhh", 14, 1234, 0, 0, 0)
    assert decode_client_message(function_call) == {"type": "F"}
    assert decode_client_message(b"?\x00\x00\x00\x05x") == {"type": "?", "body": b"x"}


def test_decode_server_messages() -> None:
    assert decode_server_message(pgwire.authentication_md5_password(b"1234")) == {
        "type": "R",
        "code": 5,
        "method": "md5_password",
        "salt": b"1234",
    }
    assert decode_server_message(pgwire.authentication_sasl(["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])) == {
        "type": "R",
        "code": 10,
        "method": "sasl",
        "mechanisms": ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"],
    }
    assert decode_server_message(pgwire.authentication_sasl_final(b"v=1"))["data"] == b"v=1"
    assert decode_server_message(pgwire.backend_key_data(7, b"abcd")) == {"type": "K", "pid": 7, "key": b"abcd"}
    assert decode_server_message(pgwire.ready_for_query(b"E")) == {"type": "Z", "status": "E"}
    assert decode_server_message(pgwire.data_row([None, b""])) == {"type": "D", "values": [None, b""]}
    assert decode_server_message(pgwire.parameter_description([23])) == {"type": "t", "param_types": [23]}
    for kind in "123nsIc":
        assert decode_server_message(kind.encode() + b"\x00\x00\x00\x04") == {"type": kind}
    assert decode_server_message(b"G\x00\x00\x00\x0b\x01\x00\x02\x00\x01\x00\x01") == {
        "type": "G",
        "format": 1,
        "column_formats": [1, 1],
    }
    assert decode_server_message(b"A\x00\x00\x00\x0e\x00\x00\x00\x07ch\x00hi\x00") == {
        "type": "A",
        "pid": 7,
        "channel": "ch",
        "payload": "hi",
    }
    assert decode_server_message(b"V\x00\x00\x00\x08\xff\xff\xff\xff") == {"type": "V", "value": None}


@pytest.mark.parametrize(
    ("raw", "decode"),
    [
        (b"Q\x00\x00\x00\x05", decode_client_message),  # length disagrees with size
        (b"Q\x00\x00", decode_client_message),  # shorter than a header
        (b"Q\x00\x00\x00\x07ab", decode_client_message),  # unterminated string
        (b"Q\x00\x00\x00\x08ab\x00c", decode_client_message),  # trailing bytes
        (b"D\x00\x00\x00\x07Xn\x00", decode_client_message),  # bad describe kind
        (b"D\x00\x00\x00\x0a\x00\x01\xff\xff\xff\xfe", decode_server_message),  # length -2
        (b"D\x00\x00\x00\x0a\x00\x01\x00\x00\x00\x05", decode_server_message),  # value runs past the end
        (b"Z\x00\x00\x00\x05X", decode_server_message),
        (b"Z\x00\x00\x00\x04", decode_server_message),
        (b"K\x00\x00\x00\x0b\x00\x00\x00\x01abc", decode_server_message),  # 3-byte key
        (b"R\x00\x00\x00\x09\x00\x00\x00\x00x", decode_server_message),  # AuthenticationOk + junk
        (b"E\x00\x00\x00\x08SX\x00", decode_server_message),  # no final terminator
        (b"v\x00\x00\x00\x0c\x00\x03\x00\x00\xff\xff\xff\xff", decode_server_message),
    ],
)
def test_malformed_messages(raw: bytes, decode: Callable[[bytes], Any]) -> None:
    with pytest.raises(ProtocolViolation) as info:
        decode(raw)
    assert info.value.sqlstate == "08P01"


def test_text_encoding_round_trip() -> None:
    raw = b"Q\x00\x00\x00\x0dselect \xe9\x00"  # latin-1 text
    decoded = decode_client_message(raw)
    assert pgwire.query(decoded["query"]) == raw  # non-UTF-8 bytes survive
    assert decode_client_message(raw, encoding="latin-1")["query"] == "select é"
    assert pgwire.query("select 'é'") == b"Q\x00\x00\x00\x10select '\xc3\xa9'\x00"


# -- property tests ----------------------------------------------------------------------

text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0"), max_size=30)
values = st.lists(st.one_of(st.none(), st.binary(max_size=40)), max_size=8)


@st.composite
def client_messages(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    kind = draw(st.sampled_from("QPBDCEdf"))
    if kind == "Q":
        sql = draw(text)
        return pgwire.query(sql), {"type": "Q", "query": sql}
    if kind == "P":
        name, sql, oids = draw(text), draw(text), draw(st.lists(st.integers(0, 0xFFFFFFFF), max_size=5))
        return pgwire.parse(name, sql, oids), {"type": "P", "name": name, "query": sql, "param_types": oids}
    if kind == "B":
        portal, statement, params = draw(text), draw(text), draw(values)
        fmts = draw(st.lists(st.integers(0, 1), min_size=min(len(params), 1), max_size=min(len(params), 1)))
        results = draw(st.lists(st.integers(0, 1), max_size=4))
        return pgwire.bind(portal, statement, params, param_formats=fmts, result_formats=results), {
            "type": "B",
            "portal": portal,
            "statement": statement,
            "param_formats": fmts,
            "params": params,
            "result_formats": results,
        }
    if kind in "DC":
        which, name = draw(st.sampled_from("SP")), draw(text)
        build = pgwire.describe if kind == "D" else pgwire.close
        return build(which, name), {"type": kind, "kind": which, "name": name}
    if kind == "E":
        portal, rows = draw(text), draw(st.integers(0, 2**31 - 1))
        return pgwire.execute(portal, rows), {"type": "E", "portal": portal, "max_rows": rows}
    if kind == "d":
        data = draw(st.binary(max_size=50))
        return pgwire.copy_data(data), {"type": "d", "data": data}
    reason = draw(text)
    return pgwire.copy_fail(reason), {"type": "f", "message": reason}


@st.composite
def server_messages(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    kind = draw(st.sampled_from("SKZTDCEN"))
    if kind == "S":
        name, value = draw(text), draw(text)
        return pgwire.parameter_status(name, value), {"type": "S", "name": name, "value": value}
    if kind == "K":
        pid, key = draw(st.integers(0, 0xFFFFFFFF)), draw(st.binary(min_size=4, max_size=256))
        return pgwire.backend_key_data(pid, key), {"type": "K", "pid": pid, "key": key}
    if kind == "Z":
        status = draw(st.sampled_from("ITE"))
        return pgwire.ready_for_query(status), {"type": "Z", "status": status}
    if kind == "T":
        fields = draw(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "name": text,
                        "table_oid": st.integers(0, 0xFFFFFFFF),
                        "column": st.integers(-(2**15), 2**15 - 1),
                        "type_oid": st.integers(0, 0xFFFFFFFF),
                        "size": st.integers(-(2**15), 2**15 - 1),
                        "modifier": st.integers(-(2**31), 2**31 - 1),
                        "format": st.integers(0, 1),
                    }
                ),
                max_size=5,
            )
        )
        return pgwire.row_description(fields), {"type": "T", "fields": fields}
    if kind == "D":
        row = draw(values)
        return pgwire.data_row(row), {"type": "D", "values": row}
    if kind == "C":
        tag = draw(text)
        return pgwire.command_complete(tag), {"type": "C", "tag": tag}
    sqlstate_code = draw(st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=5, max_size=5))
    message, detail, hint = draw(text), draw(st.none() | text), draw(st.none() | text)
    fields = {"S": "", "V": "", "C": sqlstate_code, "M": message}
    if kind == "E":
        severity = draw(st.sampled_from(sorted(pgwire.messages.ERROR_SEVERITIES)))
        raw = pgwire.error_response(sqlstate_code, message, severity=severity, detail=detail, hint=hint)
    else:
        severity = draw(st.sampled_from(sorted(pgwire.messages.NOTICE_SEVERITIES)))
        raw = pgwire.notice_response(sqlstate_code, message, severity=severity, detail=detail, hint=hint)
    fields["S"] = fields["V"] = severity
    if detail is not None:
        fields["D"] = detail
    if hint is not None:
        fields["H"] = hint
    return raw, {"type": kind, "fields": fields}


@settings(deadline=None, max_examples=300)
@given(client_messages())
def test_client_round_trip(case: tuple[bytes, dict[str, Any]]) -> None:
    raw, expected = case
    assert decode_client_message(raw) == expected


@settings(deadline=None, max_examples=300)
@given(server_messages())
def test_server_round_trip(case: tuple[bytes, dict[str, Any]]) -> None:
    raw, expected = case
    assert decode_server_message(raw) == expected
    assert pgwire.MessageFramer().feed(raw) == [raw]


@settings(deadline=None, max_examples=300)
@given(
    st.one_of(
        client_messages().map(lambda case: (case[0], decode_client_message)),
        server_messages().map(lambda case: (case[0], decode_server_message)),
    ),
    st.data(),
)
def test_truncated_bodies_raise_protocol_violation(
    case: tuple[bytes, Callable[[bytes], dict[str, Any]]], data: st.DataObject
) -> None:
    """A body cut short (with a consistent length word) is malformed, never a crash."""
    raw, decode = case
    if len(raw) == 5:
        return
    cut = data.draw(st.integers(5, len(raw) - 1))
    truncated = raw[:1] + struct.pack(">i", cut - 1) + raw[5:cut]
    try:
        decode(truncated)
    except ProtocolViolation as e:
        assert e.sqlstate == "08P01"


@settings(deadline=None, max_examples=500)
@given(st.sampled_from("QPBDCESHXFdcfpRSKZTDCENG1tHAvV?"), st.binary(max_size=60))
def test_random_bodies_only_raise_protocol_violation(kind: str, body: bytes) -> None:
    raw = kind.encode() + struct.pack(">i", len(body) + 4) + body
    for decode in (decode_client_message, decode_server_message):
        try:
            decoded = decode(raw)
        except ProtocolViolation as e:
            assert e.sqlstate == "08P01"
        else:
            assert decoded["type"] == kind


# -- a real PostgreSQL server --------------------------------------------------------------

PG_ADDRESS = ("127.0.0.1", 5432)


def pg_socket() -> socket.socket:
    """A TCP connection to the local PostgreSQL (trust auth); fails under CI=true."""
    try:
        return socket.create_connection(PG_ADDRESS, timeout=20)
    except OSError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is not reachable on {PG_ADDRESS}: {e}")
        pytest.skip(f"PostgreSQL is not reachable on {PG_ADDRESS}: {e}")


class PGSession:
    """A hand-driven session: our builders out, our framer and decoders in."""

    def __init__(self, protocol: int = pgwire.PROTOCOL_3, **params: str) -> None:
        self.sock = pg_socket()
        self.framer = pgwire.MessageFramer()
        self.received = bytearray()
        startup = {"user": "postgres", "database": "postgres", "application_name": "gatewayd-pgwire-test", **params}
        self.sock.sendall(pgwire.startup_message(startup, protocol))
        self.startup = self.until_ready()

    def send(self, *messages: bytes) -> None:
        self.sock.sendall(b"".join(messages))

    def until_ready(self) -> list[bytes]:
        """Every message up to and including the next ReadyForQuery."""
        out: list[bytes] = []
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("server closed the connection")
            self.received += data
            for raw in self.framer.feed(data):
                out.append(raw)
                if raw[:1] == b"Z":
                    assert self.framer.buffered == 0
                    return out

    def exchange(self, *messages: bytes) -> list[dict[str, Any]]:
        self.send(*messages)
        return [decode_server_message(raw) for raw in self.until_ready()]

    def close(self) -> None:
        self.sock.sendall(pgwire.terminate())
        self.sock.close()


def rebuild(decoded: dict[str, Any]) -> bytes | None:
    """Rebuild a decoded server message with our builders (None: no builder for it)."""
    kind = decoded["type"]
    if kind == "R" and decoded["code"] == 0:
        return pgwire.authentication_ok()
    if kind == "S":
        return pgwire.parameter_status(decoded["name"], decoded["value"])
    if kind == "K":
        return pgwire.backend_key_data(decoded["pid"], decoded["key"])
    if kind == "Z":
        return pgwire.ready_for_query(decoded["status"])
    if kind == "T":
        return pgwire.row_description(decoded["fields"])
    if kind == "D":
        return pgwire.data_row(decoded["values"])
    if kind == "C":
        return pgwire.command_complete(decoded["tag"])
    if kind in "EN":
        fields = dict(decoded["fields"])
        build = pgwire.error_response if kind == "E" else pgwire.notice_response
        fields.pop("S")
        return build(
            fields.pop("C"),
            fields.pop("M"),
            severity=fields.pop("V"),
            detail=fields.pop("D", None),
            hint=fields.pop("H", None),
            fields=fields,
        )
    if kind == "v":
        return pgwire.negotiate_protocol_version(decoded["version"], decoded["unrecognized"])
    if kind == "t":
        return pgwire.parameter_description(decoded["param_types"])
    if kind == "d":
        return pgwire.copy_data(decoded["data"])
    simple = {"1": pgwire.parse_complete, "2": pgwire.bind_complete, "3": pgwire.close_complete,
              "n": pgwire.no_data, "s": pgwire.portal_suspended, "I": pgwire.empty_query_response,
              "c": pgwire.copy_done}
    return simple[kind]() if kind in simple else None


@pytest.fixture
def session() -> Any:
    s = PGSession()
    yield s
    s.close()


def test_real_server_conversation(session: PGSession) -> None:
    """Startup, simple and extended queries, errors, notices and COPY against PostgreSQL."""
    startup = [decode_server_message(raw) for raw in session.startup]
    assert startup[0] == {"type": "R", "code": 0, "method": "ok"}
    params = {m["name"]: m["value"] for m in startup if m["type"] == "S"}
    assert params["client_encoding"] == "UTF8" and params["application_name"] == "gatewayd-pgwire-test"
    key_data = [m for m in startup if m["type"] == "K"]
    assert len(key_data) == 1 and len(key_data[0]["key"]) == 4
    assert startup[-1] == {"type": "Z", "status": "I"}

    assert session.exchange(pgwire.query("select 1")) == [
        decode_server_message(raw)
        for raw in (
            pgwire.row_description([("?column?", 23)]),
            pgwire.data_row([b"1"]),
            pgwire.command_complete("SELECT 1"),
            pgwire.ready_for_query(),
        )
    ]
    begin = session.exchange(pgwire.query("begin; select 1 / (g - 1) from generate_series(1, 1) g"))
    assert [m["type"] for m in begin] == ["C", "T", "E", "Z"]
    assert begin[2]["fields"]["C"] == "22012" and begin[2]["fields"]["M"] == "division by zero"
    assert begin[-1]["status"] == "E"
    assert session.exchange(pgwire.query("rollback"))[-1]["status"] == "I"

    notice = session.exchange(pgwire.query("DO $$BEGIN RAISE NOTICE 'hi' USING DETAIL = 'd', HINT = 'h'; END$$"))
    assert notice[0]["type"] == "N"
    assert {k: notice[0]["fields"][k] for k in "SVCMDH"} == {
        "S": "NOTICE", "V": "NOTICE", "C": "00000", "M": "hi", "D": "d", "H": "h"
    }

    extended = session.exchange(
        pgwire.parse("s1", "select $1::int + 1 as n, null::text as t, $2::bytea as b", [23, 0]),
        pgwire.bind("", "s1", [b"41", b"\x00\xff"], param_formats=[0, 1], result_formats=[0, 0, 1]),
        pgwire.describe("P"),
        pgwire.execute("", 0),
        pgwire.describe("S", "s1"),
        pgwire.close("S", "s1"),
        pgwire.sync(),
    )
    assert [m["type"] for m in extended] == ["1", "2", "T", "D", "C", "t", "T", "3", "Z"]
    assert [f["name"] for f in extended[2]["fields"]] == ["n", "t", "b"]
    assert [f["format"] for f in extended[2]["fields"]] == [0, 0, 1]
    assert extended[3]["values"] == [b"42", None, b"\x00\xff"]
    assert extended[5]["param_types"] == [23, 17]

    session.exchange(pgwire.query("create temp table t (a int, b text)"))
    copy_in = session.exchange(pgwire.query("copy t from stdin"), pgwire.copy_data(b"1\tx\n"),
                               pgwire.copy_data(b"2\t\\N\n"), pgwire.copy_done())
    assert [m["type"] for m in copy_in] == ["G", "C", "Z"]
    assert copy_in[0]["column_formats"] == [0, 0] and copy_in[1]["tag"] == "COPY 2"
    failed = session.exchange(pgwire.query("copy t from stdin"), pgwire.copy_fail("changed my mind"))
    assert failed[1]["fields"]["C"] == sqlstate.QUERY_CANCELED
    assert "changed my mind" in failed[1]["fields"]["M"]
    copy_out = session.exchange(pgwire.query("copy (select * from t order by a) to stdout"))
    assert [m["type"] for m in copy_out] == ["H", "d", "d", "c", "C", "Z"]
    assert [m["data"] for m in copy_out[1:3]] == [b"1\tx\n", b"2\t\\N\n"]
    assert session.exchange(pgwire.query(""))[0] == {"type": "I"}

    # Every message the server sent, rebuilt by our builders, is byte-identical;
    # and the whole recorded stream frames and scans the same at every split.
    framed = pgwire.MessageFramer().feed(bytes(session.received))
    assert len(framed) > 40
    rebuilt = 0
    for raw in framed:
        again = rebuild(decode_server_message(raw))
        if again is not None:
            assert again == raw
            rebuilt += 1
    assert rebuilt >= len(framed) - 3  # only G and H (copy responses) have no builder
    stream = bytes(session.received)
    for cut in range(0, len(stream), 7):
        framer, scanner = pgwire.MessageFramer(), pgwire.MessageScanner()
        assert framer.feed(stream[:cut]) + framer.feed(stream[cut:]) == framed
        scanner.feed(stream[:cut])
        scanner.feed(stream[cut:])
        assert (scanner.messages, scanner.ready_status) == (len(framed), ord("I"))


def test_real_server_negotiates_protocol_3_2_down() -> None:
    """PostgreSQL 15 answers a 3.2 startup with NegotiateProtocolVersion, which we decode."""
    s = PGSession(pgwire.PROTOCOL_3_2, **{"_pq_.gatewayd_test": "1"})
    try:
        first = decode_server_message(s.startup[0])
        assert first["type"] == "v"
        assert first["unrecognized"] == ["_pq_.gatewayd_test"]
        assert first["version"] >> 16 == 3 and first["minor"] <= 2
        assert pgwire.negotiate_protocol_version(first["version"], first["unrecognized"]) == s.startup[0]
    finally:
        s.close()


def test_real_cancel_request_with_our_builder(session: PGSession) -> None:
    """BackendKeyData decoded by us, CancelRequest built by us: the server cancels."""
    key_data = next(raw for raw in session.startup if raw[:1] == b"K")
    pid, key = pgwire.parse_backend_key_data(key_data[5:])
    session.send(pgwire.query("select pg_sleep(60)"))
    watcher = PGSession()
    try:
        deadline = time.monotonic() + 30
        while True:  # the cancel must arrive while the query runs, not before
            rows = watcher.exchange(
                pgwire.query(f"select 1 from pg_stat_activity where pid = {pid} and wait_event = 'PgSleep'")
            )
            if any(m["type"] == "D" for m in rows):
                break
            assert time.monotonic() < deadline, "pg_sleep never started"
    finally:
        watcher.close()
    with pg_socket() as cancel:
        cancel.sendall(pgwire.cancel_request(pid, key))
        assert cancel.recv(1) == b""  # the server just closes
    answer = [decode_server_message(raw) for raw in session.until_ready()]
    errors = [m for m in answer if m["type"] == "E"]
    assert errors and errors[0]["fields"]["C"] == sqlstate.QUERY_CANCELED
    assert answer[-1] == {"type": "Z", "status": "I"}


# -- real clients accept what we build ---------------------------------------------------------

RESULTS: dict[str, tuple[list[tuple[str, int]], list[list[bytes | None]], str]] = {
    "select 42": ([("answer", 23), ("label", 25)], [[b"42", b"forty-two"], [b"43", None]], "SELECT 2"),
}


def encode_value(value: bytes | None, type_oid: int, binary: bool) -> bytes | None:
    """Text-format value -> the wire value in the requested format (int4 and text only)."""
    if value is None or not binary:
        return value
    return struct.pack(">i", int(value)) if type_oid == 23 else value


def formats_for(codes: list[int], count: int) -> list[int]:
    """Bind's format-code convention: none = all text, one = for all, else one each."""
    if not codes:
        return [0] * count
    return codes * count if len(codes) == 1 else codes


def serve_fake_backend(conn: socket.socket, seen: list[dict[str, Any]]) -> None:
    """
    A minimal PostgreSQL built from our builders: enough for psycopg and asyncpg
    to connect, run a query (simple or extended), get rows, a notice and an error.
    """
    parser = pgwire.StartupParser()
    packet = None
    while not isinstance(packet, pgwire.StartupMessage):
        data = conn.recv(4096)
        if not data:
            return
        packet = parser.feed(data)
        if isinstance(packet, (pgwire.SSLRequest, pgwire.GSSENCRequest)):
            conn.sendall(b"N")
            packet = None
    conn.sendall(
        pgwire.authentication_ok()
        + b"".join(
            pgwire.parameter_status(k, v)
            for k, v in {
                "server_version": "18.0",
                "server_encoding": "UTF8",
                "client_encoding": "UTF8",
                "DateStyle": "ISO, MDY",
                "integer_datetimes": "on",
                "standard_conforming_strings": "on",
                "TimeZone": "UTC",
            }.items()
        )
        + pgwire.backend_key_data(99, b"wxyz")
        + pgwire.ready_for_query()
    )
    framer = pgwire.MessageFramer()
    statements: dict[str, str] = {}
    portals: dict[str, tuple[str, list[int]]] = {}
    failed = False

    def result(sql: str, describe: bool, rows: bool, result_formats: list[int] | None = None) -> bytes:
        sql = sql.strip().rstrip(";")
        if "forbidden" in sql:
            return pgwire.error_response(
                sqlstate.INSUFFICIENT_PRIVILEGE, "blocked by policy", detail="table secrets", hint="ask the DBA"
            )
        columns, data, tag = RESULTS.get(sql, ([], [], "SET"))
        formats = formats_for(result_formats or [], len(columns))
        out = []
        if describe:
            fields = [{"name": n, "type_oid": t, "format": f} for (n, t), f in zip(columns, formats)]
            out.append(pgwire.row_description(fields) if columns else pgwire.no_data())
        if rows:
            out.append(pgwire.notice_response("01000", "served by gatewayd test", severity="WARNING"))
            for row in data:
                out.append(pgwire.data_row([encode_value(v, t, f == 1) for v, (_, t), f in zip(row, columns, formats)]))
            out.append(pgwire.command_complete(tag))
        return b"".join(out)

    while True:
        data = conn.recv(65536)
        if not data:
            return
        replies = []
        for raw in framer.feed(data):
            msg = decode_client_message(raw)
            seen.append(msg)
            kind = msg["type"]
            if kind == "X":
                return
            if kind == "S":
                replies.append(pgwire.ready_for_query())
                failed = False
            elif failed or kind == "H":
                continue
            elif kind == "Q":
                replies.append(result(msg["query"], True, True) + pgwire.ready_for_query())
            elif kind == "P":
                statements[msg["name"]] = msg["query"]
                replies.append(pgwire.parse_complete())
            elif kind == "B":
                portals[msg["portal"]] = (statements[msg["statement"]], msg["result_formats"])
                replies.append(pgwire.bind_complete())
            elif kind == "D" and msg["kind"] == "S":
                sql = statements[msg["name"]]
                replies.append(pgwire.parameter_description([]) + result(sql, True, False))
            elif kind == "D":
                sql, result_formats = portals[msg["name"]]
                replies.append(result(sql, True, False, result_formats))
            elif kind == "E":
                sql, result_formats = portals[msg["portal"]]
                reply = result(sql, False, True, result_formats)
                failed = reply[:1] == b"E"
                replies.append(reply)
            elif kind == "C":
                replies.append(pgwire.close_complete())
        conn.sendall(b"".join(replies))


class FakeBackend:
    """L{serve_fake_backend} on a loopback port, one thread per connection."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

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
                serve_fake_backend(conn, self.seen)
            except BaseException as e:
                self.errors.append(e)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(10)
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def fake_backend() -> Any:
    backend = FakeBackend()
    yield backend
    backend.close()


def test_psycopg_accepts_our_messages(fake_backend: FakeBackend) -> None:
    psycopg = pytest.importorskip("psycopg")
    notices: list[str] = []
    conninfo = f"host=127.0.0.1 port={fake_backend.port} user=u dbname=d sslmode=disable gssencmode=disable"
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=20) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary))
        for prepare in (False, True):  # unnamed, then a named prepared statement
            cur = conn.execute("select 42", prepare=prepare)
            assert [d.name for d in cur.description] == ["answer", "label"]
            assert cur.fetchall() == [(42, "forty-two"), (43, None)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
            conn.execute("select * from forbidden")
        assert info.value.diag.message_primary == "blocked by policy"
        assert info.value.diag.message_detail == "table secrets"
        assert info.value.diag.message_hint == "ask the DBA"
        assert info.value.diag.severity_nonlocalized == "ERROR"
        assert conn.execute("select 42").fetchone() == (42, "forty-two")  # session still usable
    assert "served by gatewayd test" in notices
    parses = [m for m in fake_backend.seen if m["type"] == "P"]
    assert parses and all(m["query"] in ("select 42", "select * from forbidden") for m in parses)
    assert any(m["name"] for m in parses)  # the prepared statement was named


def test_asyncpg_accepts_our_messages(fake_backend: FakeBackend) -> None:
    asyncpg = pytest.importorskip("asyncpg")

    async def run() -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=fake_backend.port, user="u", database="d", ssl=False, timeout=20
        )
        try:
            rows = await conn.fetch("select 42")
            assert [tuple(r) for r in rows] == [(42, "forty-two"), (43, None)]
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError) as info:
                await conn.fetch("select * from forbidden")
            assert info.value.detail == "table secrets" and info.value.hint == "ask the DBA"
        finally:
            await conn.close()

    asyncio.run(asyncio.wait_for(run(), 30))
    assert any(m["type"] == "D" and m["kind"] == "S" for m in fake_backend.seen)


def test_pgwire_is_sans_io() -> None:
    """pgwire imports no I/O or Twisted module, and nothing of ours but gatewayd.errors."""
    import subprocess
    import sys

    code = (
        "import sys; before = set(sys.modules); import gatewayd.pgwire; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    ours = {m for m in loaded if m.startswith("gatewayd")}
    assert ours <= {"gatewayd", "gatewayd.errors"} | {m for m in ours if m.startswith("gatewayd.pgwire")}
    assert not [m for m in loaded if m.split(".")[0] in ("twisted", "socket", "ssl", "asyncio", "selectors", "grpc")]
