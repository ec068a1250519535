# -*- test-case-name: tests.unit.test_sdk_postgres -*-
"""
PostgreSQL helpers for plugin authors: read the traffic a hook receives and
build the answers a plugin sends back (the Go SDK's C{databases/postgres}).

Decoding uses L{gatewayd.pgwire} (strict, bounds-checked); SQL is parsed with
pglast, i.e. PostgreSQL's own parser (libpg_query), so C{get_tables} sees
joins, subqueries and CTEs that a regular expression would miss.

Traffic payloads carry whole read bursts: C{request} may hold several
messages (an extended-protocol batch: Parse, Bind, Describe, Execute, Sync),
or a startup packet before the session starts.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from gatewayd.errors import ProtocolViolation
from gatewayd.hooks.replies import error_reply
from gatewayd.pgwire import (
    CLIENT_MESSAGE_NAMES,
    MessageFramer,
    StartupParser,
    bind_complete,
    close_complete,
    command_complete,
    data_row,
    decode_client_message,
    decode_server_message,
    error_response,
    parameter_description,
    parse_complete,
    ready_for_query,
    row_description,
)
from gatewayd.pgwire.startup import StartupPacket

__all__ = [
    "QueryParseError",
    "build_result",
    "client_messages",
    "decode_client_message",
    "decode_server_message",
    "error_response_bytes",
    "get_queries",
    "get_query",
    "get_tables",
    "is_startup",
    "parse_sql",
    "server_messages",
    "startup_packet",
]

_CLIENT_TYPES = frozenset(CLIENT_MESSAGE_NAMES)
#: Default column type: text.
TEXT_OID = 25


class QueryParseError(ValueError):
    """The SQL does not parse (PostgreSQL's parser said so)."""


def is_startup(request: bytes | None) -> bool:
    """True when C{request} is a startup-phase packet (no message type byte)."""
    return bool(request) and chr(request[0]) not in _CLIENT_TYPES


def startup_packet(request: bytes | None) -> StartupPacket | None:
    """The StartupMessage / SSLRequest / CancelRequest / GSSENCRequest in C{request}, or None."""
    if not is_startup(request):
        return None
    try:
        return StartupParser().feed(bytes(request))  # type: ignore[arg-type]
    except ProtocolViolation:
        return None


def _frames(data: bytes) -> list[bytes]:
    try:
        return MessageFramer().feed(bytes(data))
    except ProtocolViolation:
        return []


def client_messages(request: bytes | None) -> list[dict[str, Any]]:
    """
    Every complete frontend message in C{request}, decoded
    (L{gatewayd.pgwire.decode_client_message}'s dicts).  A startup packet, a
    trailing partial message or a malformed message ends the list.
    """
    if not request or is_startup(request):
        return []
    out: list[dict[str, Any]] = []
    for raw in _frames(request):
        try:
            out.append(decode_client_message(raw))
        except ProtocolViolation:
            break
    return out


def server_messages(response: bytes | None) -> list[dict[str, Any]]:
    """Every complete backend message in C{response}, decoded; stops at a malformed one."""
    if not response:
        return []
    out: list[dict[str, Any]] = []
    for raw in _frames(response):
        try:
            out.append(decode_server_message(raw))
        except ProtocolViolation:
            break
    return out


def get_queries(request: bytes | None) -> list[str]:
    """The SQL of every Query ('Q') and Parse ('P') message in C{request}."""
    return [m["query"] for m in client_messages(request) if m["type"] in ("Q", "P")]


def get_query(request: bytes | None) -> str | None:
    """
    The SQL of the first Query or Parse message in C{request}, or None.
    (The Go SDK's C{GetQueryFromRequest} returns garbage for Parse; this
    decodes the message.)
    """
    queries = get_queries(request)
    return queries[0] if queries else None


def parse_sql(sql: str) -> tuple[Any, ...]:
    """pglast's statements for C{sql}. @raise QueryParseError: it does not parse."""
    import pglast

    try:
        return tuple(pglast.parse_sql(sql))
    except pglast.parser.ParseError as e:
        raise QueryParseError(str(e)) from None


#: DROP object types whose names are tables (or table-like relations).
_DROP_TABLE_LIKE = ("OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_FOREIGN_TABLE")


def get_tables(sql: str, *, qualified: bool = False) -> list[str]:
    """
    The tables C{sql} reads or writes, in order of appearance, without
    duplicates: FROM items, joins, subqueries, CTE bodies, INSERT/UPDATE/
    DELETE/MERGE targets, TRUNCATE, ALTER TABLE, DROP TABLE/VIEW.  CTE names
    are not tables and are left out.

    @param qualified: keep the schema (C{"public.users"}); by default only
        the table name, as the Go SDK returns.
    @raise QueryParseError: C{sql} does not parse.
    """
    from pglast import visitors

    found: list[tuple[int, str | None, str]] = []  # (position in sql, schema, table)
    ctes: set[str] = set()
    base = [0]

    class _Collect(visitors.Visitor):  # type: ignore[misc]
        def visit_RangeVar(self, ancestors: Any, node: Any) -> None:  # noqa: N802 - pglast API
            location = node.location if node.location is not None and node.location >= 0 else base[0]
            found.append((location, node.schemaname, node.relname))

        def visit_CommonTableExpr(self, ancestors: Any, node: Any) -> None:  # noqa: N802
            ctes.add(node.ctename)

        def visit_DropStmt(self, ancestors: Any, node: Any) -> None:  # noqa: N802
            if node.removeType.name in _DROP_TABLE_LIKE:
                for obj in node.objects or ():
                    parts = [getattr(item, "sval", None) for item in obj]
                    if parts and all(isinstance(p, str) for p in parts):
                        # names carry no position: keep their order at the statement's start
                        found.append((base[0], parts[-2] if len(parts) > 1 else None, parts[-1]))

    statements = parse_sql(sql)
    collect = _Collect()
    for statement in statements:
        base[0] = statement.stmt_location or 0
        collect(statement)
    found.sort(key=lambda item: item[0])  # stable: DROP names keep their order
    names: list[str] = []
    seen: set[str] = set()
    for _, schema, table in found:
        if schema is None and table in ctes:
            continue
        name = f"{schema}.{table}" if qualified and schema else table
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def error_response_bytes(message: str, sqlstate: str = "42000", *, severity: str = "ERROR",
                         detail: str | None = None, hint: str | None = None,
                         request: bytes | None = None, status: bytes = b"I") -> bytes:
    """
    A complete answer that fails the client's request with an error and
    leaves the session usable: ErrorResponse, then ReadyForQuery as the
    request's protocol expects (one per Query; one per Sync for an
    extended-protocol batch; none yet if the batch's Sync has not arrived).
    Without C{request}: ErrorResponse + ReadyForQuery.

    Put it in the result's C{response} with a terminate signal.
    """
    error = error_response(sqlstate, message, severity=severity, detail=detail, hint=hint)
    return error_reply(request, error, status)


def _columns(columns: Sequence[Any]) -> list[Any]:
    out = []
    for column in columns:
        if isinstance(column, str):
            out.append((column, TEXT_OID))
        else:
            out.append(column)
    return out


def _text(value: Any) -> bytes | str | None:
    if value is None or isinstance(value, (bytes, str)):
        return value
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


def build_result(columns: Sequence[Any], rows: Iterable[Sequence[Any]], *, tag: str | None = None,
                 request: bytes | None = None, status: bytes = b"I") -> bytes:
    """
    A result set as the server would have sent it for C{request}.

    Simple protocol (or no request): RowDescription, DataRows,
    CommandComplete, ReadyForQuery.  Extended protocol: ParseComplete for
    Parse, BindComplete for Bind, ParameterDescription (no parameters) and
    RowDescription for Describe, DataRows and CommandComplete for Execute,
    CloseComplete for Close, ReadyForQuery for Sync.

    @param columns: names (type text) or C{(name, type_oid)} pairs or the
        mappings L{gatewayd.pgwire.row_description} takes.
    @param rows: sequences of values in text format: str, bytes, None
        (NULL), bool (C{t}/C{f}) or anything C{str()} renders.
    @param tag: the CommandComplete tag; default C{"SELECT <row count>"}.
    """
    description = row_description(_columns(columns))
    encoded = [data_row([_text(v) for v in row]) for row in rows]
    data = b"".join(encoded)
    row_count = len(encoded)
    complete = command_complete(tag if tag is not None else f"SELECT {row_count}")
    ready = ready_for_query(status)
    messages = client_messages(request)
    if not messages or all(m["type"] not in "PBDESC" for m in messages):
        queries = sum(1 for m in messages if m["type"] == "Q") or 1
        return (description + data + complete + ready) * queries
    out: list[bytes] = []
    for message in messages:
        kind = message["type"]
        if kind == "Q":
            out += [description, data, complete, ready]
        elif kind == "P":
            out.append(parse_complete())
        elif kind == "B":
            out.append(bind_complete())
        elif kind == "D":
            if message["kind"] == "S":
                out.append(parameter_description([]))
            out.append(description)
        elif kind == "E":
            out += [data, complete]
        elif kind == "C":
            out.append(close_complete())
        elif kind == "S":
            out.append(ready)
    return b"".join(out)
