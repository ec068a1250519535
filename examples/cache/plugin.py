#!/usr/bin/env python3
# -*- test-case-name: tests.unit.test_cache_plugin,tests.integration.test_cache -*-
"""
A query result cache in Redis, GatewayD's cache plugin done correctly.

The gateway asks the plugin about every request (onTrafficFromClient) and
shows it every response (onTrafficFromServer).  A read-only, deterministic
SELECT sent outside a transaction is looked up in Redis; a hit is answered
from there and PostgreSQL never sees it.  On a miss, the COMPLETE response
(every message up to and including ReadyForQuery, accumulated over as many
batches as it takes) is stored, unless it holds an error.  Both protocols:
a simple Query, or an extended-protocol batch (Parse/Bind/Describe/
Execute/Sync) whose stored answer is exactly what the server sent for it.

Invalidation is by version counters: every table has one in Redis, every
cache key includes the current versions of the tables the statement reads,
and a write INCRements the versions of the tables it writes, so the old
entries can no longer be reached (they expire).  See docs/cache.md for the
whole design, what is never cached and why.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from gatewayd.errors import ProtocolViolation
from gatewayd.pgwire import MessageFramer
from gatewayd.pgwire.startup import StartupMessage
from gatewayd.sdk import Plugin, hook, signals
from gatewayd.sdk.postgres import client_messages, is_startup, startup_packet
from gatewayd.sdk.settings import from_env

from examples.cache.analysis import Analysis, Table, analyse
from examples.cache.metrics import CacheMetrics, serve_asyncio, serve_twisted
from examples.cache.settings import ENV, CacheSettings
from examples.cache.store import AsyncioStore, StoreUnavailable, TwistedStore, parse_redis_url

__all__ = ["CLUSTER", "CachePlugin"]

#: Pseudo-table whose version is in every key: bumped by cluster-wide changes (roles).
CLUSTER: Table = ("*", "*")

_READY = ord("Z")
#: Server messages that make a response uncacheable: ErrorResponse,
#: NotificationResponse (asynchronous), ParameterStatus (a setting changed),
#: COPY (not a result set).
_UNCACHEABLE = frozenset(b"EASGHW")
_EXTENDED = frozenset("PBDECH")
_ANALYSIS_CACHE = 2048
_ANALYSIS_CACHE_MAX_SQL = 16 * 1024
#: seconds without Redis after it failed to answer in time
_PAUSE = 1.0
#: invalidations remembered while Redis is unreachable, per table
_MAX_MISSED = 10_000


@dataclass
class _Pending:
    """A request forwarded to the server, waiting for its ReadyForQuery(s)."""

    ready: int
    key: str | None = None
    buffer: bytearray | None = None
    writes: set[Table] = field(default_factory=set)
    write_all: bool = False


@dataclass
class _Connection:
    database: str = ""
    user: str = ""
    status: bytes = b"I"
    pending: deque[_Pending] = field(default_factory=deque)
    statements: dict[str, str] = field(default_factory=dict)
    temp_tables: set[str] = field(default_factory=set)
    search_path_changed: bool = False
    unsynced: bool = False
    tx_writes: set[Table] = field(default_factory=set)
    tx_write_all: bool = False
    #: not tied to one client connection: never caches (see _connection)
    anonymous: bool = False


class CachePlugin(Plugin):
    name = "gatewayd-plugin-cache"
    version = "0.1.0"
    description = "Caches query results in Redis; invalidates on writes, schema-aware"
    authors = ("gatewayd developers",)
    license = "AGPL-3.0-or-later"
    tags = ("cache", "redis")
    categories = ("caching",)

    def __init__(self, config: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.settings = CacheSettings.load(self.config)
        self.redis_url = parse_redis_url(self.settings.redis_url)
        self.metrics = CacheMetrics()
        self.registry = self.metrics.registry
        self.store: Any = None
        self._metrics_port: Any = None
        self._metrics_task: Any = None
        self._connections: dict[str, _Connection] = {}
        self._analyses: OrderedDict[tuple[str, frozenset[str]], Analysis] = OrderedDict()
        self._last_error_log = 0.0
        self._paused_until = 0.0
        #: version keys whose INCR failed: sent before the next lookup
        self._missed: set[str] = set()
        self._suppressed = 0

    # -- plumbing --------------------------------------------------------------------------

    def _store(self) -> Any:
        """The Redis client for this runtime, created on first use (in-process the reactor is set by then)."""
        if self.store is None:
            socket = self.settings.metrics_socket if self.settings.metrics_enabled else ""
            if self.reactor is not None:
                self.store = TwistedStore(self.reactor, self.redis_url,
                                          timeout=self.settings.redis_timeout)
                if socket:
                    try:
                        self._metrics_port = serve_twisted(self.reactor, socket, self.registry)
                    except Exception as e:  # noqa: BLE001 - metrics must not stop the cache
                        self.log.warn(f"cannot serve metrics on {socket}: {e}")
            else:
                self.store = AsyncioStore(self.redis_url, timeout=self.settings.redis_timeout)
                if socket:
                    self._metrics_task = asyncio.ensure_future(self._serve_metrics(socket))
            self.store.start()
        return self.store

    async def _serve_metrics(self, socket: str) -> None:
        try:
            self._metrics_port = await serve_asyncio(socket, self.registry)
        except OSError as e:
            self.log.warn(f"cannot serve metrics on {socket}: {e}")

    def _error(self, what: str, error: BaseException) -> None:
        """Count every Redis error; log at most one every 10 s."""
        self.metrics.errors.inc()
        now = time.monotonic()
        if now - self._last_error_log < 10.0:
            self._suppressed += 1
            return
        self._last_error_log = now
        suppressed, self._suppressed = self._suppressed, 0
        self.log.warn(f"Redis {what} failed, query passed through uncached: {error}",
                      suppressed=suppressed)

    async def _call(self, what: str, commands: list[tuple[Any, ...]]) -> list[Any] | None:
        """
        Run C{commands} in one round trip; None (counted, logged) when Redis
        fails.  After Redis failed to answer in time, calls fail at once for
        C{_PAUSE} seconds, so a slow Redis costs one timeout per pause, not
        one per query.  Invalidations that could not be sent are kept and
        sent before anything is read from the cache again.
        """
        if time.monotonic() < self._paused_until:
            self._error(what, StoreUnavailable("Redis paused after a timeout"))
            return None
        if self._missed and commands[0][0] != b"INCR":
            if not await self._flush_missed():
                return None
        try:
            return list(await self._store().pipeline(commands))
        except (StoreUnavailable, Exception) as e:  # noqa: BLE001 - Redis must never fail a query
            if "in time" in str(e):
                self._paused_until = time.monotonic() + _PAUSE
            self._error(what, e)
            return None

    async def _flush_missed(self) -> bool:
        missed, self._missed = self._missed, set()
        if await self._call("invalidation", [(b"INCR", k) for k in sorted(missed)]) is None:
            self._missed |= missed
            return False
        self.metrics.deletes.inc(len(missed))
        return True

    def _connection(self, payload: dict, *, new: bool = False) -> _Connection:
        """
        This client connection's state.  Clients are told apart by their
        address; Unix-socket clients have none, so their backend
        connection's local address (one per session) stands in.  Without
        either, requests pass through and writes still invalidate.
        """
        key = _connection_key(payload)
        if key is None:
            return _Connection(anonymous=True)
        connection = self._connections.get(key)
        if connection is None or new:
            connection = self._connections[key] = _Connection()
        return connection

    def _analyse(self, sql: str, connection: _Connection) -> Analysis:
        cache_key = (sql, frozenset(connection.temp_tables))
        found = self._analyses.get(cache_key)
        if found is not None:
            self._analyses.move_to_end(cache_key)
            return found
        found = analyse(sql, temp_tables=cache_key[1], extra_volatile=self.settings.volatile_functions)
        if len(sql) > _ANALYSIS_CACHE_MAX_SQL:
            return found  # a bulk INSERT is seldom repeated: do not keep it in memory
        self._analyses[cache_key] = found
        if len(self._analyses) > _ANALYSIS_CACHE:
            self._analyses.popitem(last=False)
        return found

    def _version_key(self, database: str, table: Table | None) -> str:
        """A table's version key; C{None}: the database's; L{CLUSTER}: every database's."""
        if table == CLUSTER:
            return f"{self.settings.key_prefix}tblver:*:*"
        name = "*" if table is None else f"{table[0]}.{table[1]}"
        return f"{self.settings.key_prefix}tblver:{database}:{name}"

    async def _bump(self, database: str, tables: Iterable[Table], everything: bool) -> None:
        """INCR the version of every table written (or the database's, for writes we cannot see)."""
        keys = [self._version_key(database, t) for t in sorted(set(tables))]
        if everything:
            keys.append(self._version_key(database, None))
        if not keys or not database:
            return
        if self._missed:
            keys = sorted(self._missed.union(keys))
            self._missed = set()
        if await self._call("invalidation", [(b"INCR", k) for k in keys]) is not None:
            self.metrics.deletes.inc(len(keys))
        elif len(self._missed) + len(keys) <= _MAX_MISSED:
            self._missed.update(keys)
        else:  # too many to remember: the databases' versions will do
            self._missed = {self._version_key(_database_of(k), None) for k in self._missed.union(keys)}

    # -- hooks -----------------------------------------------------------------------------

    @hook("onTrafficFromClient")
    async def on_request(self, payload: dict) -> dict | None:
        request = payload.get("request")
        if not isinstance(request, (bytes, bytearray)) or not request:
            return None
        request = bytes(request)
        startup = is_startup(request)
        connection = self._connection(payload, new=startup)
        if startup:
            packet = startup_packet(request)
            if isinstance(packet, StartupMessage):
                connection.user = packet.parameters.get("user", "")
                connection.database = (self.settings.default_db
                                       or packet.parameters.get("database") or connection.user)
                if "search_path" in packet.parameters.get("options", ""):
                    connection.search_path_changed = True
            return None
        if _only_copy_data(request):
            return None  # COPY FROM STDIN rows: nothing to decode on this hot path
        messages = client_messages(request)
        if not messages:
            return None
        plan = self._plan(connection, messages)
        database = connection.database or self.settings.default_db
        if plan.writes or plan.write_all:
            # Before the write can run: a reader that looked up the old versions
            # can only store its (old) result under keys nobody reaches any more.
            await self._bump(database, plan.writes, plan.write_all)
        ready = sum(1 for m in messages if m["type"] in ("Q", "S", "F"))
        if plan.sql is not None and database:
            hit = await self._lookup(payload, connection, database, plan)
            if hit is not None:
                return hit
        if ready and not connection.anonymous:
            entry = _Pending(ready, key=plan.key, writes=plan.writes, write_all=plan.write_all)
            if plan.key is not None:
                entry.buffer = bytearray()
            connection.pending.append(entry)
            connection.unsynced = False
        elif any(m["type"] in _EXTENDED for m in messages):
            # A batch whose Sync comes later: its answers cannot be told apart from the next one's.
            connection.unsynced = True
        return None

    async def _lookup(self, payload: dict, connection: _Connection, database: str,
                      plan: _Plan) -> dict | None:
        """Look the statement up; on a hit, the terminal result answering the client."""
        started = time.monotonic()
        version_keys = [self._version_key(database, t) for t in plan.reads]
        version_keys.append(self._version_key(database, None))
        version_keys.append(self._version_key(database, CLUSTER))
        versions = await self._call("lookup", [(b"MGET", *version_keys)])
        if versions is None:
            return None
        server = str((payload.get("server") or {}).get("remote", ""))
        material = repr((server, database, connection.user, plan.material,
                         list(zip(version_keys, versions[0]))))
        key = self.settings.key_prefix + "resp:" + hashlib.sha256(material.encode()).hexdigest()
        self.metrics.gets.inc()
        found = await self._call("get", [(b"GET", key)])
        if found is None:
            return None
        if found[0] is None:
            self.metrics.misses.inc()
            plan.key = key
            return None
        # Still idle and nothing in flight?  (Another request may have gone out while we waited.)
        if connection.pending or connection.status != b"I":
            return None
        self.metrics.hits.inc()
        self.metrics.hit_latency.observe(time.monotonic() - started)
        payload["response"] = found[0]
        payload["__signals__"] = [signals.terminate()]
        return payload

    @hook("onTrafficFromServer")
    async def on_response(self, payload: dict) -> None:
        response = payload.get("response")
        if not isinstance(response, (bytes, bytearray)) or not response:
            return None
        connection = self._connection(payload)
        try:
            frames = MessageFramer().feed(bytes(response))
        except ProtocolViolation:
            frames = []
        done: list[_Pending] = []
        was_in_transaction = connection.status != b"I"
        limit = self.settings.max_response_size
        for raw in frames:
            kind = raw[0]
            head = connection.pending[0] if connection.pending else None
            if head is not None and head.buffer is not None:
                if kind in _UNCACHEABLE or len(head.buffer) + len(raw) > limit:
                    head.buffer = None
                else:
                    head.buffer += raw
            if kind == _READY and len(raw) == 6:
                connection.status = raw[5:6]
                if head is not None:
                    head.ready -= 1
                    if head.ready <= 0:
                        done.append(connection.pending.popleft())
        if not done:
            return None
        database = connection.database or self.settings.default_db
        commands: list[tuple[Any, ...]] = []
        writes: set[Table] = set()
        write_all = False
        for entry in done:
            writes |= entry.writes
            write_all = write_all or entry.write_all
            if entry.key is not None and entry.buffer is not None and connection.status == b"I":
                commands.append((b"SET", entry.key, bytes(entry.buffer),
                                 b"PX", max(1, int(self.settings.expiry * 1000))))
        if connection.status != b"I":
            connection.tx_writes |= writes
            connection.tx_write_all = connection.tx_write_all or write_all
        elif was_in_transaction:
            # The transaction ended: what it wrote is now visible (or rolled back).
            writes |= connection.tx_writes
            write_all = write_all or connection.tx_write_all
            connection.tx_writes, connection.tx_write_all = set(), False
        if writes or write_all:
            # After the write completed, before its client hears so (see docs/cache.md).
            await self._bump(database, writes, write_all)
        if commands and await self._call("set", commands) is not None:
            self.metrics.sets.inc(len(commands))
        return None

    @hook("onClosed")
    async def on_closed(self, payload: dict) -> None:
        key = _connection_key(payload)
        connection = self._connections.pop(key, None) if key is not None else None
        if connection is not None and (connection.tx_writes or connection.tx_write_all
                                       or any(p.writes or p.write_all for p in connection.pending)):
            writes = set(connection.tx_writes)
            for entry in connection.pending:
                writes |= entry.writes
            await self._bump(connection.database or self.settings.default_db, writes,
                             connection.tx_write_all or any(p.write_all for p in connection.pending))
        return None

    # -- deciding --------------------------------------------------------------------------

    def _plan(self, connection: _Connection, messages: list[dict[str, Any]]) -> _Plan:
        """What this batch writes, and whether it is a cacheable read (and under which material)."""
        plan = _Plan()
        statements = connection.statements
        sqls: list[str] = []
        for message in messages:
            kind = message["type"]
            if kind == "Q":
                sqls.append(message["query"])
            elif kind == "P":
                sqls.append(message["query"])
                if message["name"]:
                    statements[message["name"]] = message["query"]
            elif kind == "B" and message["statement"]:
                # a prepared write runs again with every Bind (psycopg, asyncpg)
                sql = statements.get(message["statement"])
                if sql is None:
                    plan.write_all = True  # prepared where we could not see it
                else:
                    sqls.append(sql)
            elif kind == "C" and message["kind"] == "S":
                statements.pop(message["name"], None)
        for sql in sqls:
            analysis = self._analyse(sql, connection)
            plan.writes.update(analysis.writes)
            plan.write_all = plan.write_all or analysis.invalidate_all
            if analysis.invalidate_cluster:
                plan.writes.add(CLUSTER)
            connection.temp_tables.update(analysis.temp_tables)
            if analysis.sets_search_path:
                connection.search_path_changed = True
        if connection.search_path_changed and plan.writes:
            plan.write_all = True  # unqualified names may be in any schema
        if (connection.anonymous or connection.pending or connection.unsynced
                or connection.status != b"I"
                or connection.search_path_changed or plan.writes or plan.write_all):
            return plan
        read = _read_statement(messages, statements)
        if read is None:
            return plan
        sql, material = read
        analysis = self._analyse(sql, connection)
        if analysis.cacheable:
            plan.sql, plan.material, plan.reads = sql, material, sorted(analysis.reads)
        return plan


def _database_of(version_key: str) -> str:
    """The database of C{<prefix>tblver:<db>:<table>}."""
    return version_key.rsplit("tblver:", 1)[1].split(":", 1)[0]


_COPY_DATA = frozenset(b"dcf")


def _only_copy_data(request: bytes) -> bool:
    """True when every message of C{request} is CopyData/CopyDone/CopyFail (walks headers only)."""
    pos, end = 0, len(request)
    while pos + 5 <= end:
        if request[pos] not in _COPY_DATA:
            return False
        pos += 1 + int.from_bytes(request[pos + 1:pos + 5], "big")
    return pos >= end and end > 0


def _connection_key(payload: dict) -> str | None:
    remote = str((payload.get("client") or {}).get("remote") or "")
    if remote:
        return remote
    backend = str((payload.get("server") or {}).get("local") or "")
    return "backend " + backend if backend else None


@dataclass
class _Plan:
    writes: set[Table] = field(default_factory=set)
    write_all: bool = False
    sql: str | None = None
    material: tuple[Any, ...] = ()
    reads: list[Table] = field(default_factory=list)
    key: str | None = None


def _read_statement(messages: list[dict[str, Any]],
                    statements: Mapping[str, str]) -> tuple[str, tuple[Any, ...]] | None:
    """
    The SQL and the cache-key material of a batch that is one whole
    statement: a lone Query, or Parse?/Bind/Describe?/Execute/Sync on the
    unnamed portal, creating no named statement.  Otherwise None.
    """
    if len(messages) == 1 and messages[0]["type"] == "Q":
        return messages[0]["query"], (("Q", messages[0]["query"]),)
    if messages[-1]["type"] != "S" or any(m["type"] not in "PBDES" for m in messages):
        return None
    kinds = [m["type"] for m in messages]
    if kinds.count("S") != 1 or kinds.count("E") != 1 or kinds.count("B") != 1 or kinds.count("P") > 1:
        return None
    sql: str | None = None
    parsed: str | None = None
    material: list[tuple[Any, ...]] = []
    for m in messages:
        kind = m["type"]
        if kind == "P":
            if m["name"]:
                return None  # the server must create that statement: forward it
            parsed = m["query"]
            material.append(("P", m["query"], tuple(m["param_types"])))
        elif kind == "B":
            if m["portal"]:
                return None
            sql = parsed if not m["statement"] else statements.get(m["statement"])
            if sql is None:
                return None
            material.append(("B", sql, tuple(m["param_formats"]), tuple(m["params"]),
                             tuple(m["result_formats"])))
        elif kind == "D":
            if m["kind"] == "P" and m["name"]:
                return None
            if m["kind"] == "S" and m["name"] and m["name"] not in statements:
                return None
            material.append(("D", m["kind"]))
        elif kind == "E":
            if m["portal"]:
                return None
            # A row limit (asyncpg's fetchrow/fetchval) may suspend the portal, but
            # the Sync ending this batch outside a transaction closes it.
            material.append(("E", m["max_rows"]))
        else:
            material.append(("S",))
    if sql is None or (parsed is not None and parsed != sql):
        return None
    return sql, tuple(material)


if __name__ == "__main__":
    # As a plugin process, metrics go where GatewayD's cache plugin puts them by default.
    CachePlugin.serve({"metricsEnabled": "true",
                       "metricsUnixDomainSocket": "/tmp/gatewayd-plugin-cache.sock",
                       **from_env(ENV)})
