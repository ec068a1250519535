#!/usr/bin/env python3
"""
A SQL firewall: refuses statements by their syntax tree, not by regular
expressions, so comments, casing and whitespace cannot sneak past it.

Rules (each can be switched off):
  - C{blockDrop}: any DROP (table, view, schema, ...);
  - C{blockTruncate}: TRUNCATE;
  - C{blockDeleteWithoutWhere}: DELETE without WHERE;
  - C{blockUpdateWithoutWhere}: UPDATE without WHERE;
  - C{blockedTables}: any statement touching one of these tables.

A refused statement never reaches PostgreSQL.  The client gets an
ErrorResponse with SQLSTATE 42501 (insufficient_privilege: what PostgreSQL
itself answers when a role may not do something, so applications already
handle it) and the session stays usable: ReadyForQuery follows the error
for a simple Query, and after the Sync of an extended-protocol batch (the
SQL is in the Parse message).  SQL that does not parse is let through for
PostgreSQL to report.

In-process (gatewayd_plugins.yaml):

    - name: sql-firewall
      module: examples.sql_firewall.plugin:SQLFirewall
      config: {blockDrop: true, blockedTables: [audit_log]}
      failureMode: closed

As a plugin process (GatewayD or gatewayd): C{localPath} pointing at this
file (executable), settings in C{env}: C{BLOCK_DROP=false}, C{BLOCKED_TABLES=a,b}.
"""

from __future__ import annotations

from typing import Any, Mapping

from gatewayd.pgwire import sqlstate
from gatewayd.sdk import Plugin, hook, signals
from gatewayd.sdk.postgres import (
    QueryParseError,
    error_response_bytes,
    get_queries,
    get_tables,
    parse_sql,
)
from gatewayd.sdk.settings import as_bool, as_list, from_env

__all__ = ["SQLFirewall", "ENV"]

#: Setting -> environment variable, for the plugin-process mode.
ENV = {
    "blockDrop": "BLOCK_DROP",
    "blockTruncate": "BLOCK_TRUNCATE",
    "blockDeleteWithoutWhere": "BLOCK_DELETE_WITHOUT_WHERE",
    "blockUpdateWithoutWhere": "BLOCK_UPDATE_WITHOUT_WHERE",
    "blockedTables": "BLOCKED_TABLES",
}


_CHECKED = ("DropStmt", "TruncateStmt", "DeleteStmt", "UpdateStmt")


def _statements(statements: tuple[Any, ...]) -> list[Any]:
    """Every DROP/TRUNCATE/DELETE/UPDATE node, at any depth."""
    from pglast import visitors

    found: list[Any] = []

    class Collect(visitors.Visitor):  # type: ignore[misc]
        def visit(self, ancestors: Any, node: Any) -> None:
            if type(node).__name__ in _CHECKED:
                found.append(node)

    collect = Collect()
    for statement in statements:
        collect(statement)
    return found


class SQLFirewall(Plugin):
    name = "gatewayd-plugin-sql-firewall"
    version = "0.1.0"
    description = "Refuses dangerous SQL statements by syntax tree (DROP, TRUNCATE, unbounded DELETE/UPDATE)"
    authors = ("gatewayd developers",)
    license = "AGPL-3.0-or-later"
    tags = ("firewall", "security")
    categories = ("security",)

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        c = self.config
        self.block_drop = as_bool(c.get("blockDrop"), True)
        self.block_truncate = as_bool(c.get("blockTruncate"), True)
        self.block_delete = as_bool(c.get("blockDeleteWithoutWhere"), True)
        self.block_update = as_bool(c.get("blockUpdateWithoutWhere"), True)
        self.blocked_tables = frozenset(t.lower() for t in as_list(c.get("blockedTables")))

    def violation(self, sql: str) -> str | None:
        """Why C{sql} is refused, or None."""
        try:
            statements = parse_sql(sql)
        except QueryParseError:
            return None  # PostgreSQL will report the syntax error itself
        # Walk the whole tree: a DELETE may hide in a CTE ("WITH x AS (DELETE
        # ...) SELECT ...") or behind EXPLAIN ANALYZE, and both run it.
        for node in _statements(statements):
            kind = type(node).__name__
            if kind == "DropStmt" and self.block_drop:
                return "DROP statements are not allowed"
            if kind == "TruncateStmt" and self.block_truncate:
                return "TRUNCATE is not allowed"
            if kind == "DeleteStmt" and self.block_delete and node.whereClause is None:
                return "DELETE without WHERE is not allowed"
            if kind == "UpdateStmt" and self.block_update and node.whereClause is None:
                return "UPDATE without WHERE is not allowed"
        if self.blocked_tables:
            for table in get_tables(sql, qualified=True):
                if table.lower() in self.blocked_tables or table.rsplit(".", 1)[-1].lower() in self.blocked_tables:
                    return f"access to table {table} is not allowed"
        return None

    @hook("onTrafficFromClient")
    def check(self, payload: dict) -> dict | None:
        request = payload.get("request")
        if not isinstance(request, bytes) or not request:
            return None
        for sql in get_queries(request):
            reason = self.violation(sql)
            if reason is None:
                continue
            payload["response"] = error_response_bytes(
                f"statement refused by the SQL firewall: {reason}",
                sqlstate.INSUFFICIENT_PRIVILEGE,
                hint="Ask your DBA, or run it through a connection that bypasses the gateway.",
                request=request)
            payload["__signals__"] = [
                signals.terminate(),
                signals.log("warn", "Statement refused", reason=reason, query=sql[:1024],
                            client=(payload.get("client") or {}).get("remote", "")),
            ]
            return payload
        return None


if __name__ == "__main__":
    SQLFirewall.serve(from_env(ENV))
