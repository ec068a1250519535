# -*- test-case-name: tests.unit.test_pgwire_messages -*-
"""
Decoders that turn raw PostgreSQL messages into plain values and dicts.

Plugins (through the SDK), the cache plugin and our own logging need to
read messages; the relay itself does not (it only frames or scans).  So
these favour clarity and strictness over speed: every field is bounds
checked, trailing bytes are an error, and anything malformed raises
L{ProtocolViolation} (08P01), never C{struct.error} or C{IndexError}.

C{decode_client_message} and C{decode_server_message} take one complete
message (type byte and length included, as L{MessageFramer} returns it) and
return a dict whose C{"type"} is the one-character message type; the other
keys per type are listed in their docstrings.  The same type letter means
different messages in each direction (C{S} is Sync from a client but
ParameterStatus from a server), hence two functions.  Text is decoded with
C{encoding} (UTF-8 by default) and C{surrogateescape}, so str values
re-encode to the original bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gatewayd.errors import ProtocolViolation
from gatewayd.pgwire._codec import INT32, TEXT_ENCODING, Reader

#: Message names by type letter, for logs and error texts.
CLIENT_MESSAGE_NAMES: dict[str, str] = {
    "B": "Bind",
    "C": "Close",
    "D": "Describe",
    "E": "Execute",
    "F": "FunctionCall",
    "H": "Flush",
    "P": "Parse",
    "Q": "Query",
    "S": "Sync",
    "X": "Terminate",
    "c": "CopyDone",
    "d": "CopyData",
    "f": "CopyFail",
    "p": "PasswordMessage",
}
SERVER_MESSAGE_NAMES: dict[str, str] = {
    "1": "ParseComplete",
    "2": "BindComplete",
    "3": "CloseComplete",
    "A": "NotificationResponse",
    "C": "CommandComplete",
    "D": "DataRow",
    "E": "ErrorResponse",
    "G": "CopyInResponse",
    "H": "CopyOutResponse",
    "I": "EmptyQueryResponse",
    "K": "BackendKeyData",
    "N": "NoticeResponse",
    "R": "Authentication",
    "S": "ParameterStatus",
    "T": "RowDescription",
    "V": "FunctionCallResponse",
    "W": "CopyBothResponse",
    "Z": "ReadyForQuery",
    "c": "CopyDone",
    "d": "CopyData",
    "n": "NoData",
    "s": "PortalSuspended",
    "t": "ParameterDescription",
    "v": "NegotiateProtocolVersion",
}

#: Authentication request codes (the Int32 after C{R}) -> the C{method} we report.
AUTH_METHODS: dict[int, str] = {
    0: "ok",
    2: "kerberos_v5",
    3: "cleartext_password",
    5: "md5_password",
    6: "scm_credential",
    7: "gss",
    8: "gss_continue",
    9: "sspi",
    10: "sasl",
    11: "sasl_continue",
    12: "sasl_final",
}

Decoded = dict[str, Any]


# -- single-message helpers ------------------------------------------------------


def parse_error_fields(body: bytes, encoding: str = TEXT_ENCODING) -> dict[str, str]:
    """
    The fields of an ErrorResponse or NoticeResponse body, keyed by their
    one-letter code: C{S} severity (localised), C{V} severity, C{C} SQLSTATE,
    C{M} message, C{D} detail, C{H} hint, C{P} position, C{W} where, ...
    Unknown codes are kept, as the protocol asks clients to ignore, not reject, them.
    """
    r = Reader(body, "ErrorResponse/NoticeResponse", encoding)
    fields: dict[str, str] = {}
    while True:
        code = r.byte()
        if code == 0:
            break
        fields[chr(code)] = r.cstring()
    r.end()
    return fields


def parse_backend_key_data(body: bytes) -> tuple[int, bytes]:
    """BackendKeyData body -> C{(process_id, secret_key)}; the key is 4 to 256 bytes."""
    r = Reader(body, "BackendKeyData")
    pid = r.uint32()
    key = r.rest()
    if not 4 <= len(key) <= 256:
        raise r.fail(f"secret key must be 4 to 256 bytes, not {len(key)}")
    return pid, key


def parse_parameter_status(body: bytes, encoding: str = TEXT_ENCODING) -> tuple[str, str]:
    """ParameterStatus body -> C{(name, value)}."""
    r = Reader(body, "ParameterStatus", encoding)
    name, value = r.cstring(), r.cstring()
    r.end()
    return name, value


def parse_ready_for_query(body: bytes) -> bytes:
    """ReadyForQuery body -> C{b"I"}, C{b"T"} or C{b"E"} (what L{ready_for_query} takes)."""
    if body not in (b"I", b"T", b"E"):
        raise ProtocolViolation(f"malformed ReadyForQuery message: status {bytes(body)!r}")
    return bytes(body)


def parse_password_message(body: bytes, encoding: str = TEXT_ENCODING) -> str:
    """A C{p} body read as PasswordMessage (cleartext or md5 digest)."""
    r = Reader(body, "PasswordMessage", encoding)
    password = r.cstring()
    r.end()
    return password


def parse_sasl_initial_response(body: bytes) -> tuple[str, bytes | None]:
    """A C{p} body read as SASLInitialResponse -> C{(mechanism, data or None)}."""
    r = Reader(body, "SASLInitialResponse")
    mechanism = r.cstring()
    data = r.nullable()
    r.end()
    return mechanism, data


def split_message(raw: bytes) -> tuple[str, bytes]:
    """
    Check one complete message's header against its size -> C{(type, body)}.

    @raise ProtocolViolation: shorter than a header, or the length field
        disagrees with the number of bytes given.
    """
    if len(raw) < 5:
        raise ProtocolViolation(f"invalid message: {len(raw)} bytes is shorter than a message header")
    length = INT32.unpack_from(raw, 1)[0]
    if length != len(raw) - 1:
        raise ProtocolViolation(f"invalid message length {length} for a {len(raw)} byte message")
    return chr(raw[0]), bytes(raw[5:])


# -- client messages -------------------------------------------------------------


def _formats(r: Reader) -> list[int]:
    return [r.int16() for _ in range(r.uint16())]


def _c_query(r: Reader) -> Decoded:
    return {"query": r.cstring()}


def _c_parse(r: Reader) -> Decoded:
    name, sql = r.cstring(), r.cstring()
    return {"name": name, "query": sql, "param_types": [r.uint32() for _ in range(r.uint16())]}


def _c_bind(r: Reader) -> Decoded:
    portal, statement = r.cstring(), r.cstring()
    param_formats = _formats(r)
    params = [r.nullable() for _ in range(r.uint16())]
    return {
        "portal": portal,
        "statement": statement,
        "param_formats": param_formats,
        "params": params,
        "result_formats": _formats(r),
    }


def _c_describe_or_close(r: Reader) -> Decoded:
    kind = chr(r.byte())
    if kind not in ("S", "P"):
        raise r.fail(f"kind must be 'S' or 'P', not {kind!r}")
    return {"kind": kind, "name": r.cstring()}


def _c_execute(r: Reader) -> Decoded:
    portal = r.cstring()
    return {"portal": portal, "max_rows": r.int32()}


def _c_copy_fail(r: Reader) -> Decoded:
    return {"message": r.cstring()}


def _data(r: Reader) -> Decoded:
    return {"data": r.rest()}


def _empty(r: Reader) -> Decoded:
    return {}


def _opaque(r: Reader) -> Decoded:
    """Recognised but not decoded (FunctionCall): the type alone."""
    r.rest()
    return {}


_CLIENT: dict[str, Callable[[Reader], Decoded]] = {
    "Q": _c_query,
    "P": _c_parse,
    "B": _c_bind,
    "D": _c_describe_or_close,
    "C": _c_describe_or_close,
    "E": _c_execute,
    "S": _empty,
    "H": _empty,
    "X": _empty,
    "F": _opaque,
    "d": _data,
    "c": _empty,
    "f": _c_copy_fail,
    "p": _data,
}


def decode_client_message(raw: bytes, encoding: str = TEXT_ENCODING) -> Decoded:
    """
    Decode one frontend message.  Keys besides C{type}:

      - C{Q} Query: C{query}
      - C{P} Parse: C{name}, C{query}, C{param_types} (OIDs)
      - C{B} Bind: C{portal}, C{statement}, C{param_formats}, C{params}
        (bytes or None for NULL), C{result_formats}
      - C{D} Describe / C{C} Close: C{kind} (C{"S"} or C{"P"}), C{name}
      - C{E} Execute: C{portal}, C{max_rows}
      - C{d} CopyData: C{data}; C{f} CopyFail: C{message}
      - C{p} password/SASL/GSS response: C{data} (the body; which one it is
        depends on the authentication exchange, see
        L{parse_password_message} and L{parse_sasl_initial_response})
      - C{S} Sync, C{H} Flush, C{X} Terminate, C{c} CopyDone, C{F}
        FunctionCall: nothing more
      - any other type: C{body}
    """
    return _decode(raw, _CLIENT, CLIENT_MESSAGE_NAMES, encoding)


# -- server messages -------------------------------------------------------------


def _s_auth(r: Reader) -> Decoded:
    code = r.int32()
    out: Decoded = {"code": code, "method": AUTH_METHODS.get(code, "unknown")}
    if code == 5:
        out["salt"] = r.raw(4)
    elif code == 10:
        mechanisms = []
        while (name := r.cstring()) != "":
            mechanisms.append(name)
        out["mechanisms"] = mechanisms
    elif code in (8, 11, 12) or code not in AUTH_METHODS:
        out["data"] = r.rest()
    return out


def _s_parameter_status(r: Reader) -> Decoded:
    name, value = r.cstring(), r.cstring()
    return {"name": name, "value": value}


def _s_key_data(r: Reader) -> Decoded:
    pid, key = parse_backend_key_data(r.rest())
    return {"pid": pid, "key": key}


def _s_ready(r: Reader) -> Decoded:
    return {"status": parse_ready_for_query(r.rest()).decode("ascii")}


def _s_row_description(r: Reader) -> Decoded:
    fields = []
    for _ in range(r.uint16()):
        fields.append(
            {
                "name": r.cstring(),
                "table_oid": r.uint32(),
                "column": r.int16(),
                "type_oid": r.uint32(),
                "size": r.int16(),
                "modifier": r.int32(),
                "format": r.int16(),
            }
        )
    return {"fields": fields}


def _s_data_row(r: Reader) -> Decoded:
    return {"values": [r.nullable() for _ in range(r.uint16())]}


def _s_command_complete(r: Reader) -> Decoded:
    return {"tag": r.cstring()}


def _s_fields(r: Reader) -> Decoded:
    return {"fields": parse_error_fields(r.rest(), r.encoding)}


def _s_parameter_description(r: Reader) -> Decoded:
    return {"param_types": [r.uint32() for _ in range(r.uint16())]}


def _s_copy_response(r: Reader) -> Decoded:
    overall = r.byte()
    return {"format": overall, "column_formats": _formats(r)}


def _s_notification(r: Reader) -> Decoded:
    pid = r.uint32()
    channel = r.cstring()
    return {"pid": pid, "channel": channel, "payload": r.cstring()}


def _s_negotiate(r: Reader) -> Decoded:
    version = r.uint32()
    count = r.int32()
    if count < 0:
        raise r.fail(f"negative option count {count}")
    return {"version": version, "minor": version & 0xFFFF, "unrecognized": [r.cstring() for _ in range(count)]}


def _s_function_result(r: Reader) -> Decoded:
    return {"value": r.nullable()}


_SERVER: dict[str, Callable[[Reader], Decoded]] = {
    "R": _s_auth,
    "S": _s_parameter_status,
    "K": _s_key_data,
    "Z": _s_ready,
    "T": _s_row_description,
    "D": _s_data_row,
    "C": _s_command_complete,
    "E": _s_fields,
    "N": _s_fields,
    "1": _empty,
    "2": _empty,
    "3": _empty,
    "n": _empty,
    "s": _empty,
    "I": _empty,
    "c": _empty,
    "d": _data,
    "t": _s_parameter_description,
    "G": _s_copy_response,
    "H": _s_copy_response,
    "W": _s_copy_response,
    "A": _s_notification,
    "v": _s_negotiate,
    "V": _s_function_result,
}


def decode_server_message(raw: bytes, encoding: str = TEXT_ENCODING) -> Decoded:
    """
    Decode one backend message.  Keys besides C{type}:

      - C{R} Authentication: C{code} (Int32), C{method} (C{"ok"},
        C{"cleartext_password"}, C{"md5_password"}, C{"sasl"}, ...), plus
        C{salt} (md5), C{mechanisms} (sasl) or C{data} (gss_continue,
        sasl_continue, sasl_final)
      - C{S} ParameterStatus: C{name}, C{value}
      - C{K} BackendKeyData: C{pid}, C{key} (bytes)
      - C{Z} ReadyForQuery: C{status} (C{"I"}, C{"T"} or C{"E"})
      - C{T} RowDescription: C{fields}, dicts of C{name}, C{table_oid},
        C{column}, C{type_oid}, C{size}, C{modifier}, C{format}
      - C{D} DataRow: C{values} (bytes or None for NULL)
      - C{C} CommandComplete: C{tag}
      - C{E} ErrorResponse / C{N} NoticeResponse: C{fields}
        (see L{parse_error_fields})
      - C{t} ParameterDescription: C{param_types}
      - C{G}/C{H}/C{W} Copy{In,Out,Both}Response: C{format},
        C{column_formats}
      - C{A} NotificationResponse: C{pid}, C{channel}, C{payload}
      - C{v} NegotiateProtocolVersion: C{version}, C{minor}, C{unrecognized}
      - C{V} FunctionCallResponse: C{value}
      - C{d} CopyData: C{data}
      - C{1} C{2} C{3} C{n} C{s} C{I} C{c}: nothing more
      - any other type: C{body}
    """
    return _decode(raw, _SERVER, SERVER_MESSAGE_NAMES, encoding)


def _decode(
    raw: bytes,
    table: dict[str, Callable[[Reader], Decoded]],
    names: dict[str, str],
    encoding: str,
) -> Decoded:
    kind, body = split_message(raw)
    decoder = table.get(kind)
    if decoder is None:
        return {"type": kind, "body": body}
    r = Reader(body, names[kind], encoding)
    out = {"type": kind}
    out.update(decoder(r))
    r.end()
    return out
