# -*- test-case-name: tests.unit.test_pgwire_messages -*-
"""
Builders for PostgreSQL protocol messages, and (re-exported) their decoders.

The gateway answers clients itself (errors, a plugin's cached result set),
talks to backends for health checks and cancellation, and plugin authors
craft replies through the SDK; all of them build messages here so that no
one hand-packs bytes.  Every builder returns the complete message, header
included, ready to write.  Text arguments may be C{str} (encoded UTF-8,
see L{gatewayd.pgwire._codec}) or bytes; a NUL inside a protocol String is
refused with C{ValueError} because it would corrupt the framing.

Decoders live in L{gatewayd.pgwire.decoders} and are importable from here
too, so C{messages.parse_error_fields} sits next to C{messages.error_response}.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from gatewayd.pgwire._codec import (
    INT16,
    INT32,
    Text,
    count16,
    cstring,
    encode_text,
    int16,
    int32,
    uint32,
)
from gatewayd.pgwire._codec import message as _frame
from gatewayd.pgwire.decoders import (
    CLIENT_MESSAGE_NAMES,
    SERVER_MESSAGE_NAMES,
    decode_client_message,
    decode_server_message,
    parse_backend_key_data,
    parse_error_fields,
    parse_parameter_status,
    parse_password_message,
    parse_ready_for_query,
    parse_sasl_initial_response,
    split_message,
)
from gatewayd.pgwire.startup import (
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
    MAX_CANCEL_KEY_LENGTH,
    MIN_CANCEL_KEY_LENGTH,
    PROTOCOL_3,
    SSL_REQUEST_CODE,
)

#: Severities allowed in ErrorResponse and NoticeResponse (the non-localised V field).
ERROR_SEVERITIES = frozenset({"ERROR", "FATAL", "PANIC"})
NOTICE_SEVERITIES = frozenset({"WARNING", "NOTICE", "DEBUG", "INFO", "LOG"})

#: pg_type.typlen of common types, so that a RowDescription we build carries
#: the same size a real server would send (-1 = varlena, -2 = cstring).
TYPE_SIZES: dict[int, int] = {
    16: 1,  # bool
    17: -1,  # bytea
    18: 1,  # char
    19: 64,  # name
    20: 8,  # int8
    21: 2,  # int2
    23: 4,  # int4
    25: -1,  # text
    26: 4,  # oid
    114: -1,  # json
    700: 4,  # float4
    701: 8,  # float8
    1042: -1,  # bpchar
    1043: -1,  # varchar
    1082: 4,  # date
    1083: 8,  # time
    1114: 8,  # timestamp
    1184: 8,  # timestamptz
    1186: 16,  # interval
    1700: -1,  # numeric
    2950: 16,  # uuid
    3802: -1,  # jsonb
}

Column = tuple[Text, int] | Mapping[str, object]
Value = bytes | bytearray | memoryview | str | None

_SQLSTATE_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")

# The bodiless messages never change: build them once.
_SYNC = _frame(b"S")
_FLUSH = _frame(b"H")
_TERMINATE = _frame(b"X")
_COPY_DONE = _frame(b"c")
_EMPTY_QUERY = _frame(b"I")
_PARSE_COMPLETE = _frame(b"1")
_BIND_COMPLETE = _frame(b"2")
_CLOSE_COMPLETE = _frame(b"3")
_NO_DATA = _frame(b"n")
_PORTAL_SUSPENDED = _frame(b"s")


def _value(value: Value, what: str) -> bytes:
    """Int32 length + bytes, or -1 for NULL (Bind parameters, DataRow columns)."""
    if value is None:
        return b"\xff\xff\xff\xff"
    raw = encode_text(value)
    return int32(len(raw), what) + raw


def _kind(kind: Text, what: str) -> bytes:
    """The C{S} (statement) / C{P} (portal) selector of Describe and Close."""
    raw = encode_text(kind)
    if raw not in (b"S", b"P"):
        raise ValueError(f"{what} kind must be 'S' or 'P', not {kind!r}")
    return raw


def _formats(codes: Sequence[int], what: str) -> bytes:
    return count16(len(codes), what) + b"".join(int16(c, what) for c in codes)


# -- startup-phase packets (untyped) ------------------------------------------


def ssl_request() -> bytes:
    """SSLRequest: ask the server whether it will speak TLS."""
    return INT32.pack(8) + INT32.pack(SSL_REQUEST_CODE)


def gssenc_request() -> bytes:
    """GSSENCRequest: ask the server for GSSAPI encryption."""
    return INT32.pack(8) + INT32.pack(GSSENC_REQUEST_CODE)


def startup_message(params: Mapping[str, Text], protocol: int = PROTOCOL_3) -> bytes:
    """
    StartupMessage with C{params} in order (C{user} is required by servers).
    """
    body = b"".join(cstring(k, "parameter name") + cstring(v, "parameter value") for k, v in params.items())
    if any(not k for k in params):
        raise ValueError("startup parameter names must not be empty")
    payload = uint32(protocol, "protocol") + body + b"\0"
    return INT32.pack(len(payload) + 4) + payload


def cancel_request(pid: int, key: bytes) -> bytes:
    """
    CancelRequest for backend C{pid}; C{key} is 4 bytes (protocol 3.0) or up
    to 256 bytes (3.2), exactly as BackendKeyData carried it.
    """
    _check_key(key)
    payload = INT32.pack(CANCEL_REQUEST_CODE) + uint32(pid, "process id") + bytes(key)
    return INT32.pack(len(payload) + 4) + payload


def _check_key(key: bytes) -> None:
    if not MIN_CANCEL_KEY_LENGTH <= len(key) <= MAX_CANCEL_KEY_LENGTH:
        raise ValueError(f"cancel key must be 4 to 256 bytes, not {len(key)}")


# -- frontend messages ---------------------------------------------------------


def query(sql: Text) -> bytes:
    """Query (simple protocol)."""
    return _frame(b"Q", cstring(sql, "query"))


def parse(name: Text, sql: Text, param_oids: Iterable[int] = ()) -> bytes:
    """Parse: prepare C{sql} as statement C{name} ("" = unnamed); OID 0 = unspecified."""
    oids = [uint32(oid, "parameter type OID") for oid in param_oids]
    body = cstring(name, "statement name") + cstring(sql, "query") + count16(len(oids), "parameter count")
    return _frame(b"P", body + b"".join(oids))


def bind(
    portal: Text,
    statement: Text,
    params: Sequence[Value] = (),
    *,
    param_formats: Sequence[int] = (),
    result_formats: Sequence[int] = (),
) -> bytes:
    """
    Bind C{params} (bytes, str or None for NULL) to a portal.

    @param param_formats: none (all text), one (applies to all) or one per
        parameter; 0 = text, 1 = binary.
    @param result_formats: the same convention for result columns.
    """
    if len(param_formats) not in (0, 1, len(params)):
        raise ValueError("param_formats must have 0, 1 or len(params) entries")
    body = [
        cstring(portal, "portal name"),
        cstring(statement, "statement name"),
        _formats(param_formats, "parameter format"),
        count16(len(params), "parameter count"),
    ]
    body.extend(_value(v, "parameter length") for v in params)
    body.append(_formats(result_formats, "result format"))
    return _frame(b"B", b"".join(body))


def describe(kind: Text, name: Text = "") -> bytes:
    """Describe a statement (C{kind="S"}) or portal (C{"P"})."""
    return _frame(b"D", _kind(kind, "Describe") + cstring(name, "name"))


def execute(portal: Text = "", max_rows: int = 0) -> bytes:
    """Execute a portal; C{max_rows=0} means no limit."""
    return _frame(b"E", cstring(portal, "portal name") + int32(max_rows, "max_rows"))


def close(kind: Text, name: Text = "") -> bytes:
    """Close a statement (C{kind="S"}) or portal (C{"P"})."""
    return _frame(b"C", _kind(kind, "Close") + cstring(name, "name"))


def sync() -> bytes:
    """Sync: end of an extended-protocol batch."""
    return _SYNC


def flush() -> bytes:
    """Flush: ask for pending output without ending the batch."""
    return _FLUSH


def terminate() -> bytes:
    """Terminate: the client is leaving."""
    return _TERMINATE


def password_message(password: Text) -> bytes:
    """PasswordMessage (cleartext, or the C{"md5..."} digest string)."""
    return _frame(b"p", cstring(password, "password"))


def sasl_initial_response(mechanism: Text, data: bytes | None) -> bytes:
    """SASLInitialResponse: the chosen mechanism and its first message (None = none)."""
    return _frame(b"p", cstring(mechanism, "SASL mechanism") + _value(data, "SASL data length"))


def sasl_response(data: bytes) -> bytes:
    """SASLResponse: the next SASL message."""
    return _frame(b"p", bytes(data))


def copy_data(data: bytes) -> bytes:
    """CopyData (both directions)."""
    return _frame(b"d", bytes(data))


def copy_done() -> bytes:
    """CopyDone (both directions)."""
    return _COPY_DONE


def copy_fail(reason: Text) -> bytes:
    """CopyFail: the client aborts COPY FROM STDIN."""
    return _frame(b"f", cstring(reason, "CopyFail message"))


# -- backend messages ----------------------------------------------------------


def _fields_response(
    type_byte: bytes,
    allowed: frozenset[str],
    sqlstate: str,
    text: Text,
    severity: str,
    detail: Text | None,
    hint: Text | None,
    fields: Mapping[str, Text] | None,
) -> bytes:
    if severity not in allowed:
        raise ValueError(f"severity must be one of {sorted(allowed)}, not {severity!r}")
    if len(sqlstate) != 5 or not _SQLSTATE_CHARS.issuperset(sqlstate):
        raise ValueError(f"SQLSTATE must be 5 upper-case letters or digits, not {sqlstate!r}")
    parts = [b"S" + cstring(severity), b"V" + cstring(severity), b"C" + cstring(sqlstate), b"M" + cstring(text, "message")]
    if detail is not None:
        parts.append(b"D" + cstring(detail, "detail"))
    if hint is not None:
        parts.append(b"H" + cstring(hint, "hint"))
    for code, value in (fields or {}).items():
        if len(code) != 1 or code in "SVCMDH" or not (code.isascii() and code.isalpha()):
            raise ValueError(f"extra field code must be one ASCII letter other than SVCMDH, not {code!r}")
        parts.append(code.encode("ascii") + cstring(value, f"field {code}"))
    parts.append(b"\0")
    return _frame(type_byte, b"".join(parts))


def error_response(
    sqlstate: str,
    message: Text,
    *,
    severity: str = "ERROR",
    detail: Text | None = None,
    hint: Text | None = None,
    fields: Mapping[str, Text] | None = None,
) -> bytes:
    """
    ErrorResponse with fields S and V (severity, sent unlocalised in both),
    C (SQLSTATE), M, and D/H when given.

    @param severity: C{ERROR} (the statement fails), C{FATAL} (the session
        ends: send before closing) or C{PANIC}.
    @param fields: further single-letter fields, e.g. C{{"P": "8"}} for a
        cursor position; see "Error and Notice Message Fields".
    """
    return _fields_response(b"E", ERROR_SEVERITIES, sqlstate, message, severity, detail, hint, fields)


def notice_response(
    sqlstate: str,
    message: Text,
    *,
    severity: str = "NOTICE",
    detail: Text | None = None,
    hint: Text | None = None,
    fields: Mapping[str, Text] | None = None,
) -> bytes:
    """NoticeResponse: like L{error_response} with a notice severity (WARNING, NOTICE, ...)."""
    return _fields_response(b"N", NOTICE_SEVERITIES, sqlstate, message, severity, detail, hint, fields)


def ready_for_query(status: Text = b"I") -> bytes:
    """ReadyForQuery: C{I} idle, C{T} in a transaction, C{E} in a failed transaction."""
    raw = encode_text(status)
    if raw not in (b"I", b"T", b"E"):
        raise ValueError(f"transaction status must be I, T or E, not {status!r}")
    return _frame(b"Z", raw)


def authentication_ok() -> bytes:
    """AuthenticationOk."""
    return _frame(b"R", INT32.pack(0))


def authentication_cleartext_password() -> bytes:
    """AuthenticationCleartextPassword."""
    return _frame(b"R", INT32.pack(3))


def authentication_md5_password(salt: bytes) -> bytes:
    """AuthenticationMD5Password with its 4-byte salt."""
    if len(salt) != 4:
        raise ValueError("MD5 salt must be 4 bytes")
    return _frame(b"R", INT32.pack(5) + bytes(salt))


def authentication_sasl(mechanisms: Iterable[Text]) -> bytes:
    """AuthenticationSASL listing the offered mechanisms (e.g. SCRAM-SHA-256)."""
    names = b"".join(cstring(m, "SASL mechanism") for m in mechanisms)
    return _frame(b"R", INT32.pack(10) + names + b"\0")


def authentication_sasl_continue(data: bytes) -> bytes:
    """AuthenticationSASLContinue."""
    return _frame(b"R", INT32.pack(11) + bytes(data))


def authentication_sasl_final(data: bytes) -> bytes:
    """AuthenticationSASLFinal."""
    return _frame(b"R", INT32.pack(12) + bytes(data))


def parameter_status(name: Text, value: Text) -> bytes:
    """ParameterStatus: a run-time parameter's current value."""
    return _frame(b"S", cstring(name, "parameter name") + cstring(value, "parameter value"))


def backend_key_data(pid: int, key: bytes) -> bytes:
    """BackendKeyData: the process id and 4 to 256 byte secret a client cancels with."""
    _check_key(key)
    return _frame(b"K", uint32(pid, "process id") + bytes(key))


def negotiate_protocol_version(version: int, unrecognized: Iterable[Text] = ()) -> bytes:
    """NegotiateProtocolVersion: newest version supported + unrecognised C{_pq_.} options."""
    names = [cstring(n, "option name") for n in unrecognized]
    return _frame(b"v", uint32(version, "version") + INT32.pack(len(names)) + b"".join(names))


def _column(column: Column) -> bytes:
    if isinstance(column, Mapping):
        name, type_oid = column["name"], column["type_oid"]
        get = column.get
    else:
        name, type_oid = column
        get = {}.get
    size = get("size")
    if size is None:
        size = TYPE_SIZES.get(type_oid, -1)  # type: ignore[arg-type]
    return b"".join(
        (
            cstring(name, "column name"),  # type: ignore[arg-type]
            uint32(get("table_oid", 0), "table OID"),  # type: ignore[arg-type]
            int16(get("column", 0), "column number"),  # type: ignore[arg-type]
            uint32(type_oid, "type OID"),  # type: ignore[arg-type]
            int16(size, "type size"),  # type: ignore[arg-type]
            int32(get("modifier", -1), "type modifier"),  # type: ignore[arg-type]
            int16(get("format", 0), "format code"),  # type: ignore[arg-type]
        )
    )


def row_description(columns: Sequence[Column]) -> bytes:
    """
    RowDescription.

    @param columns: C{(name, type_oid)} pairs, or mappings with C{name} and
        C{type_oid} and optionally C{table_oid}, C{column}, C{size},
        C{modifier}, C{format} (the dicts L{decode_server_message} returns
        for C{T}, so a decoded description can be rebuilt).  Defaults: not
        from a table (0, 0), the type's usual size, no modifier (-1), text (0).
    """
    return _frame(b"T", count16(len(columns), "column count") + b"".join(_column(c) for c in columns))


def data_row(values: Sequence[Value]) -> bytes:
    """DataRow: one row of column values (bytes or str in text format; None = NULL)."""
    return _frame(b"D", count16(len(values), "column count") + b"".join(_value(v, "value length") for v in values))


def command_complete(tag: Text) -> bytes:
    """CommandComplete, e.g. C{"SELECT 1"}, C{"INSERT 0 3"}."""
    return _frame(b"C", cstring(tag, "command tag"))


def empty_query_response() -> bytes:
    """EmptyQueryResponse: the answer to an empty query string."""
    return _EMPTY_QUERY


def parse_complete() -> bytes:
    """ParseComplete."""
    return _PARSE_COMPLETE


def bind_complete() -> bytes:
    """BindComplete."""
    return _BIND_COMPLETE


def close_complete() -> bytes:
    """CloseComplete."""
    return _CLOSE_COMPLETE


def no_data() -> bytes:
    """NoData: the described statement returns no rows."""
    return _NO_DATA


def portal_suspended() -> bytes:
    """PortalSuspended: Execute stopped at C{max_rows}."""
    return _PORTAL_SUSPENDED


def parameter_description(type_oids: Sequence[int]) -> bytes:
    """ParameterDescription: the parameter types of a described statement."""
    return _frame(b"t", count16(len(type_oids), "parameter count") + b"".join(uint32(o, "type OID") for o in type_oids))


__all__ = [
    "CLIENT_MESSAGE_NAMES",
    "ERROR_SEVERITIES",
    "NOTICE_SEVERITIES",
    "SERVER_MESSAGE_NAMES",
    "TYPE_SIZES",
    "authentication_cleartext_password",
    "authentication_md5_password",
    "authentication_ok",
    "authentication_sasl",
    "authentication_sasl_continue",
    "authentication_sasl_final",
    "backend_key_data",
    "bind",
    "bind_complete",
    "cancel_request",
    "close",
    "close_complete",
    "command_complete",
    "copy_data",
    "copy_done",
    "copy_fail",
    "data_row",
    "decode_client_message",
    "decode_server_message",
    "describe",
    "empty_query_response",
    "error_response",
    "execute",
    "flush",
    "gssenc_request",
    "negotiate_protocol_version",
    "no_data",
    "notice_response",
    "parameter_description",
    "parameter_status",
    "parse",
    "parse_backend_key_data",
    "parse_complete",
    "parse_error_fields",
    "parse_parameter_status",
    "parse_password_message",
    "parse_ready_for_query",
    "parse_sasl_initial_response",
    "split_message",
    "password_message",
    "portal_suspended",
    "query",
    "ready_for_query",
    "row_description",
    "sasl_initial_response",
    "sasl_response",
    "ssl_request",
    "startup_message",
    "sync",
    "terminate",
]
