"""
examples.cache.plugin driven hook by hook with real protocol bytes, on an
in-memory Redis (a dict speaking GET/SET/MGET/INCR, answering in already
fired Deferreds, as the in-process runtime sees them).  The end-to-end
behaviour with real Redis, PostgreSQL and clients is in
tests/integration/test_cache.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock
from zope.interface.verify import verifyObject

from examples.cache.plugin import CachePlugin
from examples.cache.store import StoreUnavailable, parse_redis_url
from gatewayd.interfaces import IPlugin
from gatewayd.pgwire import (
    bind,
    bind_complete,
    command_complete,
    data_row,
    describe,
    error_response,
    execute,
    parse,
    parse_complete,
    query,
    ready_for_query,
    row_description,
    startup_message,
    sync,
)
from gatewayd.sdk.inprocess import InProcessPlugin

CLIENT = {"local": "127.0.0.1:15432", "remote": "127.0.0.1:40000"}
SERVER = {"local": "127.0.0.1:50000", "remote": "127.0.0.1:5432"}


class MemoryRedis:
    """GET/SET/MGET/INCR on a dict; C{down} makes every command fail like a lost Redis."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.down = False
        self.log: list[tuple[Any, ...]] = []

    def pipeline(self, commands: list[tuple[Any, ...]]) -> Deferred[list[Any]]:
        if self.down:
            return fail(StoreUnavailable("down"))
        return succeed([self._run(*c) for c in commands])

    def _run(self, name: bytes, *args: Any) -> Any:
        self.log.append((name, *args))
        keys = [a.encode() if isinstance(a, str) else a for a in args]
        if name == b"GET":
            return self.data.get(keys[0])
        if name == b"MGET":
            return [self.data.get(k) for k in keys]
        if name == b"SET":
            self.data[keys[0]] = keys[1]
            return b"OK"
        if name == b"INCR":
            value = int(self.data.get(keys[0], b"0")) + 1
            self.data[keys[0]] = str(value).encode()
            return value
        raise AssertionError(name)

    def responses(self) -> list[bytes]:
        return [k for k in self.data if b":resp:" in k]


def call(d: Any) -> Any:
    """The result of a hook call that completes synchronously on the in-memory Redis."""
    out: list[Any] = []
    Deferred.fromCoroutine(d).addBoth(out.append)
    assert out, "hook did not complete synchronously"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


class Session:
    """One client connection through the plugin."""

    def __init__(self, plugin: CachePlugin, remote: str = CLIENT["remote"],
                 database: str = "test", user: str = "alice") -> None:
        self.plugin = plugin
        self.client = dict(CLIENT, remote=remote)
        call(self.request_hook(startup_message({"user": user, "database": database})))
        self.server(ready_for_query(b"I"))

    def request_hook(self, request: bytes) -> Any:
        return self.plugin.on_request({"client": self.client, "server": SERVER, "error": "",
                                       "request": request})

    def send(self, request: bytes) -> dict | None:
        return call(self.request_hook(request))

    def server(self, *responses: bytes) -> None:
        for response in responses:
            call(self.plugin.on_response({"client": self.client, "server": SERVER, "error": "",
                                          "request": b"", "response": response}))

    def close(self) -> None:
        call(self.plugin.on_closed({"client": self.client, "server": SERVER, "error": ""}))


def result(value: str, status: bytes = b"I") -> bytes:
    return (row_description([("v", 25)]) + data_row([value]) + command_complete("SELECT 1")
            + ready_for_query(status))


def extended_request(sql: str, *params: str, name: str = "", with_parse: bool = True) -> bytes:
    return ((parse(name, sql) if with_parse else b"") + bind("", name, list(params))
            + describe("P") + execute() + sync())


def extended_result(value: str, with_parse: bool = True) -> bytes:
    return ((parse_complete() if with_parse else b"") + bind_complete()
            + row_description([("v", 25)]) + data_row([value]) + command_complete("SELECT 1")
            + ready_for_query(b"I"))


@pytest.fixture
def redis() -> MemoryRedis:
    return MemoryRedis()


@pytest.fixture
def plugin(redis: MemoryRedis) -> CachePlugin:
    instance = CachePlugin({"keyPrefix": "t:", "maxResponseSize": 4096})
    instance.store = redis
    return instance


def hit(answer: dict | None) -> bytes | None:
    if answer is None or not answer.get("__signals__"):
        return None
    assert answer["__signals__"][0]["name"] == "terminate"
    return answer["response"]


def test_in_process_wrapper_provides_iplugin(plugin: CachePlugin) -> None:
    wrapped = InProcessPlugin(plugin, 1000)
    assert verifyObject(IPlugin, wrapped)
    assert wrapped.hooks == {"onTrafficFromClient", "onTrafficFromServer", "onClosed"}


def test_simple_query_cached_after_complete_response(plugin: CachePlugin, redis: MemoryRedis) -> None:
    s = Session(plugin)
    q = query("select v from t")
    assert hit(s.send(q)) is None
    full = result("a")
    # the response arrives in two batches: nothing is stored before ReadyForQuery
    s.server(full[:len(full) - 6])
    assert redis.responses() == []
    s.server(full[len(full) - 6:])
    assert len(redis.responses()) == 1
    assert hit(s.send(q)) == full
    other = Session(plugin, remote="127.0.0.1:40001")
    assert hit(other.send(q)) == full  # shared across connections
    assert hit(Session(plugin, remote="127.0.0.1:1", user="bob").send(q)) is None  # per user
    assert hit(Session(plugin, remote="127.0.0.1:2", database="db2").send(q)) is None  # per database


def test_write_makes_entries_unreachable(plugin: CachePlugin, redis: MemoryRedis) -> None:
    reader, writer = Session(plugin), Session(plugin, remote="127.0.0.1:40001")
    q = query("select v from s.t")
    reader.send(q)
    reader.server(result("a"))
    assert hit(reader.send(q)) is not None
    writer.send(query("update s.t set v = 'b'"))
    # bumped before forwarding: the reader already misses while the write runs
    assert redis.data[b"t:tblver:test:s.t"] == b"1"
    assert hit(reader.send(q)) is None
    reader.server(result("a"))  # the reader's pre-write result, under the old version
    writer.server(command_complete("UPDATE 1") + ready_for_query(b"I"))
    assert redis.data[b"t:tblver:test:s.t"] == b"2"  # and again after it completed
    assert hit(reader.send(q)) is None
    # an unqualified write is in public: it does not touch s.t
    writer.send(query("delete from t"))
    writer.server(command_complete("DELETE 0") + ready_for_query(b"I"))
    assert redis.data[b"t:tblver:test:public.t"] == b"2"
    assert redis.data[b"t:tblver:test:s.t"] == b"2"


def test_writes_in_a_transaction_bump_again_at_its_end(plugin: CachePlugin, redis: MemoryRedis) -> None:
    s = Session(plugin)
    s.send(query("begin"))
    s.server(command_complete("BEGIN") + ready_for_query(b"T"))
    s.send(query("insert into t values (1)"))
    s.server(command_complete("INSERT 0 1") + ready_for_query(b"T"))
    assert redis.data[b"t:tblver:test:public.t"] == b"2"
    # a SELECT inside the transaction is neither looked up nor stored
    assert hit(s.send(query("select v from t"))) is None
    s.server(result("in tx", b"T"))
    assert redis.responses() == []
    s.send(query("commit"))
    s.server(command_complete("COMMIT") + ready_for_query(b"I"))
    assert redis.data[b"t:tblver:test:public.t"] == b"3"


def test_extended_protocol_batch_is_replayed_whole(plugin: CachePlugin, redis: MemoryRedis) -> None:
    s = Session(plugin)
    request = extended_request("select v from t where id = $1", "1")
    assert hit(s.send(request)) is None
    s.server(extended_result("one"))
    assert hit(s.send(request)) == extended_result("one")
    assert hit(s.send(extended_request("select v from t where id = $1", "2"))) is None


def test_named_statements(plugin: CachePlugin, redis: MemoryRedis) -> None:
    s = Session(plugin)
    sql = "select v from t where id = $1"
    # the Parse of a named statement must reach the server
    assert hit(s.send(parse("st1", sql) + sync())) is None
    s.server(parse_complete() + ready_for_query(b"I"))
    request = extended_request(sql, "1", name="st1", with_parse=False)
    assert hit(s.send(request)) is None
    s.server(extended_result("one", with_parse=False))
    assert hit(s.send(request)) == extended_result("one", with_parse=False)
    # an unknown statement name on another connection: not answered from the cache
    assert hit(Session(plugin, remote="127.0.0.1:3").send(request)) is None


def test_errors_and_oversized_responses_are_not_stored(plugin: CachePlugin, redis: MemoryRedis) -> None:
    s = Session(plugin)
    s.send(query("select v from missing"))
    s.server(error_response("42P01", "relation does not exist") + ready_for_query(b"I"))
    s.send(query("select v from big"))
    s.server(row_description([("v", 25)]) + data_row(["x" * 3000]),
             data_row(["y" * 3000]) + command_complete("SELECT 2") + ready_for_query(b"I"))
    assert redis.responses() == []
    s.send(query("select v from small"))
    s.server(result("ok"))
    assert len(redis.responses()) == 1


def test_pipelined_requests_are_not_cached(plugin: CachePlugin, redis: MemoryRedis) -> None:
    s = Session(plugin)
    s.send(query("select v from t"))
    s.send(query("select v from u"))  # sent before the first answer: never looked up
    s.server(result("t") + result("u"))
    assert len(redis.responses()) == 1
    assert hit(s.send(query("select v from t"))) == result("t")
    assert hit(s.send(query("select v from u"))) is None


def test_unsynced_batch_makes_the_next_one_uncacheable(plugin: CachePlugin, redis: MemoryRedis) -> None:
    s = Session(plugin)
    s.send(parse("", "select 1"))  # Sync comes later
    s.send(bind("", "") + describe("P") + execute() + sync())
    s.server(extended_result("1"))
    assert redis.responses() == []


def test_search_path_change_disables_caching_and_widens_invalidation(plugin: CachePlugin,
                                                                     redis: MemoryRedis) -> None:
    s = Session(plugin)
    s.send(query("set search_path to s"))
    s.server(command_complete("SET") + ready_for_query(b"I"))
    s.send(query("select v from t"))
    s.server(result("a"))
    assert redis.responses() == []
    s.send(query("delete from t"))
    s.server(command_complete("DELETE 1") + ready_for_query(b"I"))
    assert redis.data[b"t:tblver:test:*"] == b"2"


def test_redis_down_passes_everything_through(plugin: CachePlugin, redis: MemoryRedis) -> None:
    s = Session(plugin)
    redis.down = True
    assert s.send(query("select v from t")) is None
    s.server(result("a"))
    assert s.send(query("update t set v = 1")) is None
    s.server(command_complete("UPDATE 1") + ready_for_query(b"I"))
    errors = plugin.registry.get_sample_value("gatewayd_cache_errors_total")
    assert errors and errors >= 3
    redis.down = False
    s.send(query("select v from t"))
    s.server(result("a"))
    assert hit(s.send(query("select v from t"))) == result("a")
    assert plugin.registry.get_sample_value("gatewayd_cache_hits_total") == 1


def test_closed_connection_state_is_dropped(plugin: CachePlugin, redis: MemoryRedis) -> None:
    s = Session(plugin)
    s.send(query("begin"))
    s.server(command_complete("BEGIN") + ready_for_query(b"T"))
    s.send(query("insert into t values (1)"))
    s.server(command_complete("INSERT 0 1") + ready_for_query(b"T"))
    s.close()
    assert plugin._connections == {}
    assert redis.data[b"t:tblver:test:public.t"] == b"3"  # the unfinished transaction counts


def test_redis_url_parsing() -> None:
    url = parse_redis_url("redis://:secret@cache.local:6380/3")
    assert (url.host, url.port, url.db, url.password) == ("cache.local", 6380, 3, "secret")
    assert parse_redis_url("").address == "localhost:6379"
    with pytest.raises(ValueError):
        parse_redis_url("rediss://x")


def test_twisted_store_fails_fast_without_a_connection() -> None:
    from examples.cache.store import TwistedStore

    reactor = MemoryReactorClock()
    store = TwistedStore(reactor, parse_redis_url("redis://127.0.0.1:1"), timeout=0.5)
    store.start()
    d = store.pipeline([(b"GET", b"k")])
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert not failures  # waits for the first connection attempt...
    reactor.advance(0.6)  # ...at most the command timeout
    assert failures and failures[0].check(StoreUnavailable)
    store.stop()


def test_unix_socket_clients_are_told_apart_by_their_backend_connection(
        plugin: CachePlugin, redis: MemoryRedis) -> None:
    a, b = Session(plugin, remote=""), Session(plugin, remote="")
    # same empty client address, different backend sockets
    a_server = dict(SERVER, local="127.0.0.1:50001")
    b_server = dict(SERVER, local="127.0.0.1:50002")

    def send(session: Session, server: dict, request: bytes) -> dict | None:
        return call(plugin.on_request({"client": session.client, "server": server,
                                       "request": request}))

    def answer(session: Session, server: dict, response: bytes) -> None:
        call(plugin.on_response({"client": session.client, "server": server,
                                 "request": b"", "response": response}))

    for session, server in ((a, a_server), (b, b_server)):
        send(session, server, startup_message({"user": "u", "database": "test"}))
        answer(session, server, ready_for_query(b"I"))
    send(a, a_server, query("begin"))
    answer(a, a_server, command_complete("BEGIN") + ready_for_query(b"T"))
    # b is idle: its SELECT is cached although a is inside a transaction
    send(b, b_server, query("select v from t"))
    answer(b, b_server, result("b"))
    assert hit(send(b, b_server, query("select v from t"))) == result("b")
    assert hit(send(a, a_server, query("select v from t"))) is None


def test_without_any_connection_identity_nothing_is_cached_but_writes_invalidate(
        plugin: CachePlugin, redis: MemoryRedis) -> None:
    def send(request: bytes) -> dict | None:
        return call(plugin.on_request({"client": {"remote": ""}, "server": {}, "request": request}))

    send(startup_message({"user": "u", "database": "test"}))
    send(query("select v from t"))
    call(plugin.on_response({"client": {"remote": ""}, "server": {}, "response": result("x")}))
    assert redis.responses() == []
    plugin.settings.default_db = "test"
    send(query("delete from t"))
    assert redis.data[b"t:tblver:test:public.t"] == b"1"


def test_execute_row_limit_is_part_of_the_key(plugin: CachePlugin, redis: MemoryRedis) -> None:
    s = Session(plugin)
    s.send(parse("st", "select v from t") + sync())
    s.server(parse_complete() + ready_for_query(b"I"))
    limited = bind("", "st") + execute("", 1) + sync()
    s.send(limited)
    answer = bind_complete() + data_row(["a"]) + b"s\x00\x00\x00\x04" + ready_for_query(b"I")
    s.server(answer)
    assert hit(s.send(limited)) == answer
    assert hit(s.send(bind("", "st") + execute("", 0) + sync())) is None


def test_prepared_writes_invalidate_at_every_execution(plugin: CachePlugin, redis: MemoryRedis) -> None:
    s = Session(plugin)
    s.send(parse("w", "update t set v = $1") + sync())
    s.server(parse_complete() + ready_for_query(b"I"))
    assert redis.data[b"t:tblver:test:public.t"] == b"2"
    for expected in (b"4", b"6"):
        s.send(bind("", "w", ["x"]) + execute() + sync())
        s.server(bind_complete() + command_complete("UPDATE 1") + ready_for_query(b"I"))
        assert redis.data[b"t:tblver:test:public.t"] == expected
    # a statement prepared before the plugin saw it: the whole database
    s.send(bind("", "unknown") + execute() + sync())
    assert redis.data[b"t:tblver:test:*"] == b"1"


def test_copy_from_stdin_invalidates_and_its_rows_are_not_decoded(plugin: CachePlugin,
                                                                 redis: MemoryRedis) -> None:
    from examples.cache.plugin import _only_copy_data
    from gatewayd.pgwire import copy_data, copy_done

    rows = copy_data(b"1\tone\n") * 3 + copy_done()
    assert _only_copy_data(rows)
    assert not _only_copy_data(rows + query("select 1"))
    s = Session(plugin)
    s.send(query("copy t from stdin"))
    assert redis.data[b"t:tblver:test:public.t"] == b"1"
    s.server(b"G\x00\x00\x00\x07\x00\x00\x00")
    s.send(rows)
    s.server(command_complete("COPY 3") + ready_for_query(b"I"))
    assert redis.data[b"t:tblver:test:public.t"] == b"2"


def test_invalidations_missed_while_redis_was_down_are_sent_before_the_next_lookup(
        plugin: CachePlugin, redis: MemoryRedis) -> None:
    reader, writer = Session(plugin), Session(plugin, remote="127.0.0.1:40001")
    q = query("select v from t")
    reader.send(q)
    reader.server(result("old"))
    redis.down = True
    writer.send(query("update t set v = 'new'"))
    writer.server(command_complete("UPDATE 1") + ready_for_query(b"I"))
    assert b"t:tblver:test:public.t" not in redis.data
    redis.down = False
    # the old entry is still in Redis, but the lookup first replays the INCR
    assert hit(reader.send(q)) is None
    assert redis.data[b"t:tblver:test:public.t"] == b"1"


def test_a_redis_that_does_not_answer_in_time_is_paused(plugin: CachePlugin, redis: MemoryRedis) -> None:
    s = Session(plugin)
    calls: list[Any] = []

    def slow(commands: Any) -> Deferred[Any]:
        calls.append(commands)
        return fail(StoreUnavailable("Redis did not answer in time"))

    redis.pipeline = slow  # type: ignore[method-assign]
    s.send(query("select v from t"))
    s.server(result("t"))
    s.send(query("select v from u"))
    s.server(result("u"))
    assert len(calls) == 1  # the second query did not wait for Redis
    assert plugin.registry.get_sample_value("gatewayd_cache_errors_total") == 2
    plugin._paused_until = 0.0
    s.send(query("select v from u"))
    assert len(calls) == 2


def test_role_changes_invalidate_every_database(plugin: CachePlugin, redis: MemoryRedis) -> None:
    other = Session(plugin, remote="127.0.0.1:2", database="other")
    q = query("select v from t")
    other.send(q)
    other.server(result("x"))
    assert hit(other.send(q)) is not None
    admin = Session(plugin)
    admin.send(query("revoke reader from bob"))
    admin.server(command_complete("REVOKE ROLE") + ready_for_query(b"I"))
    assert redis.data[b"t:tblver:*:*"] == b"2"
    assert hit(other.send(q)) is None
