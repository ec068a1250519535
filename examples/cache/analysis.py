# -*- test-case-name: tests.unit.test_cache_analysis -*-
"""
What a statement does to the cache, decided on PostgreSQL's own syntax tree
(pglast): may its result be cached (a deterministic, read-only SELECT), which
tables does it read, which tables does it write.

Function names come from the AST, never from substrings: C{SELECT usage
FROM page} is cacheable, C{SELECT now()} is not (GatewayD's cache tests the
upper-cased text for C{NOW}, C{AGE}..., so it refuses C{page} and misses
C{random()}).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from pglast import ast, visitors

from gatewayd.sdk.postgres import QueryParseError, parse_sql

__all__ = ["Analysis", "VOLATILE_FUNCTIONS", "analyse", "qualify"]

#: Built-in functions whose result changes between calls (volatile), that
#: depend on the session or the clock, or that have side effects.  Any
#: function whose name starts with C{pg_}, C{txid_}, C{lo_} or C{dblink} is
#: refused as well (session/server state, locks, large objects, remote SQL).
VOLATILE_FUNCTIONS = frozenset({
    "now", "random", "random_normal", "setseed", "nextval", "currval", "lastval", "setval",
    "clock_timestamp", "statement_timestamp", "transaction_timestamp", "timeofday",
    "age",  # age(timestamp) is relative to the current date
    "gen_random_uuid", "uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v4",
    "inet_client_addr", "inet_client_port", "inet_server_addr", "inet_server_port",
    "current_setting", "set_config", "current_query", "current_schemas",
    "version", "has_table_privilege", "has_column_privilege", "has_schema_privilege",
    "has_function_privilege", "has_database_privilege", "has_any_column_privilege",
    "to_regclass", "nextval", "dblink", "query_to_xml", "query_to_json",
})
_VOLATILE_PREFIXES = ("pg_", "txid_", "lo_", "dblink")
#: Schemas whose contents change behind the SQL's back (catalogs, statistics).
_SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast", "pg_temp"})
#: CURRENT_DATE, CURRENT_TIME, LOCALTIMESTAMP...: the clock.
_CLOCK_PREFIXES = ("SVFOP_CURRENT_DATE", "SVFOP_CURRENT_TIME", "SVFOP_LOCALTIME")

Table = tuple[str, str]  # (schema, table)


@dataclass
class Analysis:
    """
    @ivar cacheable: a deterministic read-only SELECT whose result may be cached.
    @ivar reads: tables read (schema-qualified; unqualified names are in C{public}).
    @ivar writes: tables written (INSERT/UPDATE/DELETE/MERGE targets, TRUNCATE,
        ALTER, DROP, COPY FROM, CREATE ... AS, data-modifying CTEs).
    @ivar invalidate_all: the statement may write tables it does not name
        (DO, CALL, EXECUTE, DROP SCHEMA, unparsable SQL...): the whole
        database's cache must be invalidated.
    @ivar invalidate_cluster: role changes (GRANT role, ALTER/DROP ROLE) are
        cluster-wide: every database's cache must be invalidated.
    @ivar temp_tables: temporary tables this statement creates.
    @ivar why: why it is not cacheable (for logs and tests).
    """

    cacheable: bool = False
    reads: list[Table] = field(default_factory=list)
    writes: list[Table] = field(default_factory=list)
    invalidate_all: bool = False
    temp_tables: list[str] = field(default_factory=list)
    why: str = ""
    sets_search_path: bool = False
    invalidate_cluster: bool = False


def qualify(schema: str | None, table: str) -> Table:
    """An unqualified name is taken to be in C{public} (see docs/cache.md)."""
    return (schema or "public", table)


#: Role changes: privileges in every database.
_ROLE_STMTS = (ast.GrantRoleStmt, ast.AlterRoleStmt, ast.AlterRoleSetStmt, ast.DropRoleStmt)
_WRITE_STMTS = (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
#: Statements that change no table data, no table definition, no function a
#: query may call and no privilege.  Everything else that is not recognised
#: as a write invalidates the whole database: GRANT/REVOKE and role changes
#: (a hit bypasses PostgreSQL's privilege checks), CREATE OR REPLACE
#: FUNCTION, policies, rules, triggers, DO, CALL, EXECUTE...
_HARMLESS = (ast.TransactionStmt, ast.VariableShowStmt, ast.PrepareStmt,
             ast.DeallocateStmt, ast.ListenStmt, ast.UnlistenStmt, ast.NotifyStmt,
             ast.DeclareCursorStmt, ast.FetchStmt, ast.ClosePortalStmt, ast.DiscardStmt,
             ast.CreateSchemaStmt, ast.CreateRoleStmt, ast.CheckPointStmt, ast.LockStmt,
             ast.CommentStmt, ast.CreateSeqStmt, ast.AlterSeqStmt, ast.IndexStmt,
             ast.VacuumStmt)


class _Walk(visitors.Visitor):  # type: ignore[misc]
    def __init__(self, result: Analysis, temp: frozenset[str], extra_volatile: frozenset[str]) -> None:
        super().__init__()
        self.result = result
        self.temp = temp
        self.extra_volatile = extra_volatile
        self.ctes: set[str] = set()
        self.targets: set[int] = set()  # id() of RangeVars that are write targets
        self.unqualified: set[str] = set()  # names read without a schema (CTE names among them)
        self.qualified: set[Table] = set()  # tables read with a schema

    def refuse(self, why: str) -> None:
        if self.result.cacheable:
            self.result.cacheable = False
            self.result.why = why

    def visit_CommonTableExpr(self, ancestors: Any, node: ast.CommonTableExpr) -> None:  # noqa: N802
        self.ctes.add(node.ctename)
        if not isinstance(node.ctequery, ast.SelectStmt):
            self.refuse("data-modifying WITH")

    def _written(self, node: Any) -> None:
        self.refuse(type(node).__name__)
        _write_target(self, node.relation)

    visit_InsertStmt = visit_UpdateStmt = visit_DeleteStmt = visit_MergeStmt = (  # noqa: N815
        lambda self, ancestors, node: self._written(node))

    def visit_FuncCall(self, ancestors: Any, node: ast.FuncCall) -> None:  # noqa: N802
        name = (node.funcname[-1].sval or "").lower()
        schema = node.funcname[0].sval.lower() if len(node.funcname) > 1 else None
        if (name in VOLATILE_FUNCTIONS or name in self.extra_volatile
                or name.startswith(_VOLATILE_PREFIXES) or schema == "dblink"):
            self.refuse(f"calls {name}()")
        elif schema is not None and schema != "pg_catalog":
            # a schema-qualified function is the application's: it may write or be volatile
            self.refuse(f"calls {schema}.{name}()")

    def visit_SQLValueFunction(self, ancestors: Any, node: ast.SQLValueFunction) -> None:  # noqa: N802
        if node.op.name.startswith(_CLOCK_PREFIXES):
            self.refuse("reads the clock")

    def visit_RangeTableSample(self, ancestors: Any, node: Any) -> None:  # noqa: N802
        self.refuse("TABLESAMPLE")

    def visit_RangeFunction(self, ancestors: Any, node: Any) -> None:  # noqa: N802
        pass  # its FuncCall is visited on its own

    def visit_SelectStmt(self, ancestors: Any, node: ast.SelectStmt) -> None:  # noqa: N802
        if node.lockingClause:
            self.refuse("FOR UPDATE/SHARE")
        if node.intoClause is not None:
            self.refuse("SELECT INTO")
            rel = node.intoClause.rel
            self.result.writes.append(qualify(rel.schemaname, rel.relname))
            if rel.relpersistence == "t":
                self.result.temp_tables.append(rel.relname)

    def visit_RangeVar(self, ancestors: Any, node: ast.RangeVar) -> None:  # noqa: N802
        if id(node) in self.targets:
            return
        if node.schemaname is None:
            self.unqualified.add(node.relname)
        else:
            self.qualified.add(qualify(node.schemaname, node.relname))
        schema = (node.schemaname or "").lower()
        if schema in _SYSTEM_SCHEMAS or (not schema and node.relname.startswith("pg_")):
            self.refuse("reads a system catalog")
        if not schema and node.relname in self.temp:
            self.refuse("reads a temporary table")
        if node.relpersistence == "t":
            self.refuse("temporary table")
        table = qualify(node.schemaname, node.relname)
        if table not in self.result.reads:
            self.result.reads.append(table)


def _write_target(walk: _Walk, rel: ast.RangeVar | None) -> None:
    if rel is not None:
        walk.targets.add(id(rel))
        table = qualify(rel.schemaname, rel.relname)
        if table not in walk.result.writes:
            walk.result.writes.append(table)


def _names(objects: Iterable[Any]) -> list[Table]:
    out = []
    for obj in objects or ():
        parts = [getattr(item, "sval", None) for item in (obj if isinstance(obj, tuple) else (obj,))]
        if parts and all(isinstance(p, str) for p in parts):
            out.append(qualify(parts[-2] if len(parts) > 1 else None, parts[-1]))
    return out


def _statement(stmt: Any, walk: _Walk) -> None:
    """Classify one top-level statement into C{walk.result}."""
    result = walk.result
    if isinstance(stmt, ast.SelectStmt):
        walk(stmt)
        return
    result.cacheable = False
    result.why = result.why or type(stmt).__name__
    if isinstance(stmt, _WRITE_STMTS):
        walk(stmt)  # the walker records the targets, nested ones (CTEs) too
    elif isinstance(stmt, ast.TruncateStmt):
        for rel in stmt.relations or ():
            _write_target(walk, rel)
    elif isinstance(stmt, ast.AlterTableStmt):
        _write_target(walk, stmt.relation)
    elif isinstance(stmt, ast.RenameStmt) and stmt.relation is not None:
        _write_target(walk, stmt.relation)
    elif isinstance(stmt, ast.DropStmt):
        kind = stmt.removeType.name
        if kind in ("OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_FOREIGN_TABLE"):
            result.writes.extend(t for t in _names(stmt.objects) if t not in result.writes)
        elif kind in ("OBJECT_SCHEMA", "OBJECT_FUNCTION", "OBJECT_PROCEDURE", "OBJECT_TRIGGER",
                      "OBJECT_RULE", "OBJECT_POLICY", "OBJECT_TYPE", "OBJECT_DOMAIN",
                      "OBJECT_EXTENSION"):
            result.invalidate_all = True
    elif isinstance(stmt, ast.CopyStmt):
        if stmt.is_from:
            _write_target(walk, stmt.relation)
    elif isinstance(stmt, ast.CreateTableAsStmt):
        rel = stmt.into.rel
        _write_target(walk, rel)
        if rel.relpersistence == "t":
            result.temp_tables.append(rel.relname)
    elif isinstance(stmt, ast.CreateStmt):
        _write_target(walk, stmt.relation)
        if stmt.relation.relpersistence == "t":
            result.temp_tables.append(stmt.relation.relname)
    elif isinstance(stmt, ast.RefreshMatViewStmt):
        _write_target(walk, stmt.relation)
    elif isinstance(stmt, ast.ViewStmt):  # CREATE OR REPLACE VIEW changes what it returns
        _write_target(walk, stmt.view)
    elif isinstance(stmt, ast.VariableSetStmt):
        if (stmt.name or "").lower() == "search_path" or stmt.kind.name in ("VAR_RESET_ALL",):
            result.sets_search_path = True
    elif isinstance(stmt, ast.ExplainStmt):
        _statement(stmt.query, walk)  # EXPLAIN ANALYZE runs it
        result.cacheable = False
    elif isinstance(stmt, _HARMLESS):
        pass
    elif isinstance(stmt, _ROLE_STMTS):
        result.invalidate_all = result.invalidate_cluster = True
    else:
        # DO, CALL, EXECUTE, CREATE RULE/TRIGGER, ALTER SCHEMA...: may write anything.
        result.invalidate_all = True


def analyse(sql: str, *, temp_tables: frozenset[str] = frozenset(),
            extra_volatile: frozenset[str] = frozenset()) -> Analysis:
    """
    Classify C{sql} (one or more statements).  SQL that does not parse is
    not cacheable and invalidates the database (PostgreSQL may accept what
    our parser version does not).

    @param temp_tables: temporary tables the session created (reading them is never cached).
    @param extra_volatile: more function names to treat as volatile (lower case).
    """
    result = Analysis(cacheable=True)
    try:
        statements = parse_sql(sql)
    except QueryParseError as e:
        return Analysis(invalidate_all=True, why=f"does not parse: {e}")
    if len(statements) != 1:
        result.cacheable = False
        result.why = "not exactly one statement"
    walk = _Walk(result, temp_tables, extra_volatile)
    for raw in statements:
        _statement(raw.stmt, walk)
    # CTE names are not tables (the WITH clause is visited after the FROM clause)
    result.reads = [t for t in result.reads
                    if t in walk.qualified or t[0] != "public" or t[1] not in walk.ctes]
    if not statements:
        result.cacheable = False
        result.why = "empty query"
    return result
