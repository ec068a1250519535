# -*- test-case-name: tests.unit.test_sdk_postgres,tests.unit.test_hooks -*-
"""
What a client must receive when the gateway answers a request in place of
the server (a plugin or a policy terminated it, or a plugin failed closed).

GatewayD answers every terminated request with an ErrorResponse followed by
a Terminate ('X') message.  'X' is a frontend message: sent to a client it
is garbage, and the client never gets the ReadyForQuery it waits for, so the
session is unusable afterwards.  We answer like PostgreSQL would have
answered a statement that failed:

  - simple protocol: each Query ('Q', or FunctionCall 'F') gets
    ErrorResponse + ReadyForQuery;
  - extended protocol: each Sync ('S') closes a batch; the batch gets one
    ErrorResponse (the server reports the first error and skips the rest of
    the batch) and the Sync gets its ReadyForQuery;
  - a batch that is still open at the end of the request (Parse/Bind/
    Execute... without Sync yet, as a driver sends before a Flush) gets its
    ErrorResponse now and no ReadyForQuery: the client's Sync comes later.
    L{awaiting_sync} tells the caller so that it can drop the rest of that
    batch and answer its Sync itself (see docs/plugins.md);
  - a startup-phase packet (StartupMessage, SSLRequest...) gets the error
    with severity FATAL only: the client will not get a session.

The ReadyForQuery status is C{I} unless the caller knows better (the relay
knows the backend's transaction status).
"""

from __future__ import annotations

import struct

from gatewayd.pgwire import CLIENT_MESSAGE_NAMES, error_response, ready_for_query, sqlstate

__all__ = [
    "TERMINATED_MESSAGE",
    "TERMINATED_DETAIL",
    "awaiting_sync",
    "error_reply",
    "terminated_reply",
    "with_ready_status",
]

#: GatewayD's texts for a request a policy terminated (kept for compatibility).
TERMINATED_MESSAGE = "Request terminated"
TERMINATED_DETAIL = "Policy terminated the request"

_HEADER = struct.Struct(">ci")
#: Frontend messages that belong to an extended-protocol batch (ended by Sync).
_BATCH = frozenset(b"PBDECHdcf")
#: Frontend messages answered on their own, ending with ReadyForQuery (Query, FunctionCall).
_SINGLE = frozenset(b"QF")
_CLIENT_TYPES = frozenset(ord(t) for t in CLIENT_MESSAGE_NAMES)


def _message_types(request: bytes) -> list[int] | None:
    """
    The type bytes of the complete regular messages in C{request}, or None
    when C{request} does not start like a regular message (startup phase).
    A trailing partial message is ignored.
    """
    if not request or request[0] not in _CLIENT_TYPES:
        return None
    types: list[int] = []
    pos, n = 0, len(request)
    while pos + 5 <= n:
        kind, length = _HEADER.unpack_from(request, pos)
        if length < 4 or kind[0] not in _CLIENT_TYPES:
            break
        end = pos + 1 + length
        if end > n:
            break
        types.append(kind[0])
        pos = end
    return types


def error_reply(request: bytes | None, error: bytes, status: bytes = b"I") -> bytes:
    """
    The bytes answering C{request} with C{error} (a complete ErrorResponse),
    following the rules in the module docstring.

    @param request: the client's bytes as the hook saw them (several
        messages, possibly); None or empty when there is no request.
    @param status: the transaction status for the ReadyForQuery messages.
    """
    if not request:
        return error + ready_for_query(status)
    types = _message_types(request)
    if types is None:
        return _fatal(error)
    ready = ready_for_query(status)
    out: list[bytes] = []
    batch_open = False
    for kind in types:
        if kind in _SINGLE:
            if batch_open:  # a Query ends an unsynced batch implicitly
                out.append(error)
                batch_open = False
            out.append(error)
            out.append(ready)
        elif kind == 0x53:  # S
            out.append(error)
            out.append(ready)
            batch_open = False
        elif kind in _BATCH:
            batch_open = True
    if batch_open:
        out.append(error)
    if not out:  # only Terminate, or nothing complete: still tell the client
        return error + ready
    return b"".join(out)


def awaiting_sync(request: bytes | None) -> bool:
    """
    True when C{request} ends inside an extended-protocol batch: after an
    L{error_reply}, the client will still send the batch's Sync.
    """
    if not request:
        return False
    types = _message_types(request)
    if not types:
        return False
    for kind in reversed(types):
        if kind == 0x53 or kind in _SINGLE:  # S, Q, F
            return False
        if kind in _BATCH:
            return True
    return False


def terminated_reply(request: bytes | None, status: bytes = b"I") -> bytes:
    """GatewayD's "Request terminated" error (SQLSTATE 42000), answered per L{error_reply}."""
    error = error_response(
        sqlstate.SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION, TERMINATED_MESSAGE,
        detail=TERMINATED_DETAIL)
    return error_reply(request, error, status)


def _fatal(error: bytes) -> bytes:
    """Re-tag an ErrorResponse's severity as FATAL (fields S and V)."""
    body = error[5:]
    fields: list[bytes] = body.split(b"\0")
    for i, item in enumerate(fields):
        if item[:1] in (b"S", b"V") and item[1:] == b"ERROR":
            fields[i] = item[:1] + b"FATAL"
    new = b"\0".join(fields)
    return b"E" + struct.pack(">i", len(new) + 4) + new


def with_ready_status(response: bytes, status: bytes) -> bytes:
    """
    C{response} with the status of every ReadyForQuery set to C{status}.

    For the relay: a reply built by a plugin or by Act says C{I}; when the
    backend is inside a transaction, PostgreSQL would have answered the
    failed statement with C{E} (transaction aborted), and a client told
    C{I} would believe no transaction is open while the backend holds one.
    Messages are walked by their headers; a malformed response is returned
    unchanged.
    """
    if status not in (b"I", b"T", b"E"):
        raise ValueError(f"transaction status must be I, T or E, not {status!r}")
    out = bytearray(response)
    pos, n = 0, len(out)
    code = status[0]
    while pos + 5 <= n:
        kind, length = _HEADER.unpack_from(out, pos)
        end = pos + 1 + length
        if length < 4 or end > n:
            return response
        if kind == b"Z" and length == 5:
            out[end - 1] = code
        pos = end
    return bytes(out) if pos == n else response
