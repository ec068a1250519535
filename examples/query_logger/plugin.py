#!/usr/bin/env python3
"""
A query logger: one log event per query, with how long the server took.

The clock starts when the query passes the gateway (OnTrafficFromClient)
and stops at the ReadyForQuery that ends its response (OnTrafficFromServer),
so the duration covers the network to PostgreSQL, execution and the result
transfer.  Each event carries the SQL, the duration in ms, the row count,
the command tag, the SQLSTATE when it failed, and the client address.

Protocol details handled: a simple Query gets its own ReadyForQuery; an
extended-protocol batch (Parse, Bind, Execute... Sync) gets one at its Sync,
and its SQL comes from the Parse, or for a re-executed prepared statement
from the Parse seen earlier on that connection; responses split across
reads are reassembled.  State is per client connection and is dropped on
OnClosed.

Settings: C{slowQueryMs} (log only queries at least this slow, default 0 =
all), C{maxQueryLength} (truncate logged SQL, default 2048), C{level}
(default info).  Environment in plugin-process mode: C{SLOW_QUERY_MS},
C{MAX_QUERY_LENGTH}, C{LEVEL}.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from gatewayd.errors import ProtocolViolation
from gatewayd.pgwire import MessageFramer, decode_client_message, decode_server_message
from gatewayd.sdk import Plugin, hook
from gatewayd.sdk.postgres import is_startup
from gatewayd.sdk.settings import as_float, from_env

__all__ = ["ENV", "QueryLogger"]

ENV = {"slowQueryMs": "SLOW_QUERY_MS", "maxQueryLength": "MAX_QUERY_LENGTH", "level": "LEVEL"}


@dataclass
class _Pending:
    """A query (or extended batch) waiting for its ReadyForQuery."""

    query: str
    started: float
    rows: int = 0
    command: str = ""
    sqlstate: str = ""


@dataclass
class _Connection:
    pending: deque[_Pending] = field(default_factory=deque)
    batch: list[str] = field(default_factory=list)  # SQL of the extended batch not yet synced
    batch_started: float | None = None
    statements: dict[str, str] = field(default_factory=dict)  # prepared statement name -> SQL
    server: MessageFramer = field(default_factory=MessageFramer)
    client: MessageFramer = field(default_factory=MessageFramer)


class QueryLogger(Plugin):
    name = "gatewayd-plugin-query-logger"
    version = "0.1.0"
    description = "Logs every query with its duration, rows and outcome"
    authors = ("gatewayd developers",)
    license = "AGPL-3.0-or-later"
    tags = ("logging", "observability")
    categories = ("observability",)

    #: Monotonic seconds; replaceable in tests.
    now: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.slow_ms = as_float(self.config.get("slowQueryMs"), 0.0)
        self.max_length = int(as_float(self.config.get("maxQueryLength"), 2048))
        self.level = str(self.config.get("level") or "info").lower()
        self._connections: dict[str, _Connection] = {}

    def _connection(self, payload: dict) -> _Connection:
        key = str((payload.get("client") or {}).get("remote", ""))
        connection = self._connections.get(key)
        if connection is None:
            connection = self._connections[key] = _Connection()
        return connection

    @hook("onTrafficFromClient")
    def on_request(self, payload: dict) -> None:
        request = payload.get("request")
        if not isinstance(request, bytes) or not request or is_startup(request):
            return None
        connection = self._connection(payload)
        try:
            raw_messages = connection.client.feed(request)
        except ProtocolViolation:
            connection.client = MessageFramer()
            return None
        now = self.now()
        for raw in raw_messages:
            try:
                message = decode_client_message(raw)
            except ProtocolViolation:
                continue
            kind = message["type"]
            if kind == "Q":
                connection.pending.append(_Pending(message["query"], now))
            elif kind == "P":
                connection.statements[message["name"]] = message["query"]
                self._in_batch(connection, message["query"], now)
            elif kind == "B":
                sql = connection.statements.get(message["statement"])
                if sql is not None and sql not in connection.batch:
                    self._in_batch(connection, sql, now)
            elif kind in "DEH":
                if connection.batch_started is None:
                    connection.batch_started = now
            elif kind == "C" and message["kind"] == "S":
                connection.statements.pop(message["name"], None)
            elif kind == "S":
                started = connection.batch_started if connection.batch_started is not None else now
                sql = "; ".join(connection.batch) if connection.batch else "<sync>"
                connection.pending.append(_Pending(sql, started))
                connection.batch = []
                connection.batch_started = None
        return None

    @staticmethod
    def _in_batch(connection: _Connection, sql: str, now: float) -> None:
        connection.batch.append(sql)
        if connection.batch_started is None:
            connection.batch_started = now

    @hook("onTrafficFromServer")
    def on_response(self, payload: dict) -> None:
        response = payload.get("response")
        if not isinstance(response, bytes) or not response:
            return None
        connection = self._connection(payload)
        try:
            raw_messages = connection.server.feed(response)
        except ProtocolViolation:
            connection.server = MessageFramer()
            return None
        client = str((payload.get("client") or {}).get("remote", ""))
        for raw in raw_messages:
            kind = raw[:1]
            if not connection.pending:
                continue  # startup, notices, or traffic from before we saw the query
            current = connection.pending[0]
            if kind == b"D":
                current.rows += 1
            elif kind in (b"C", b"E", b"Z"):
                try:
                    message = decode_server_message(raw)
                except ProtocolViolation:
                    continue
                if kind == b"C":
                    current.command = message["tag"]
                elif kind == b"E":
                    current.sqlstate = message["fields"].get("C", "")
                else:
                    connection.pending.popleft()
                    self._emit(current, client)
        return None

    @hook("onClosed")
    def on_closed(self, payload: dict) -> None:
        self._connections.pop(str((payload.get("client") or {}).get("remote", "")), None)
        return None

    def _emit(self, done: _Pending, client: str) -> None:
        duration_ms = (self.now() - done.started) * 1000.0
        if duration_ms < self.slow_ms:
            return
        query = done.query if len(done.query) <= self.max_length else done.query[:self.max_length] + "..."
        fields: dict[str, Any] = {"query": query, "duration_ms": round(duration_ms, 3),
                                  "rows": done.rows, "command": done.command, "client": client}
        if done.sqlstate:
            fields["sqlstate"] = done.sqlstate
        self.log.log(self.level, "query", **fields)


if __name__ == "__main__":
    QueryLogger.serve(from_env(ENV))
