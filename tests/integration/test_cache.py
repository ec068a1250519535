"""
The cache plugin (examples/cache) in a live gateway, in-process, with real
PostgreSQL (127.0.0.1:5432, database test), real Redis (127.0.0.1:6379, a
key prefix of its own per run, deleted afterwards) and real clients (psql
for the simple protocol, psycopg with parameters for the extended one).

How a test knows PostgreSQL did not run a query: after the first SELECT,
the row is changed over a direct connection (bypassing the gateway and the
cache).  A second SELECT that still returns the old value was answered from
Redis; one that returns the new value ran on PostgreSQL.  Each "not cached"
test is therefore the same experiment with the opposite expected outcome.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from typing import Any, Iterator

import psycopg
import pytest

from gatewayd.act.resp import RespParser, encode_command
from tests.support.gateway import Gateway, base_config
from tests.support.pg import wait_until
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

DIRECT = "host=127.0.0.1 port=5432 user=postgres dbname=test"
CACHE = "examples.cache.plugin:CachePlugin"


def redis(address: tuple[str, int], *args: Any) -> Any:
    """One Redis command over a plain socket (the test's own view of Redis)."""
    with socket.create_connection(address, timeout=5) as s:
        s.sendall(encode_command(*args))
        parser = RespParser()
        while True:
            data = s.recv(65536)
            assert data, "Redis closed the connection"
            replies = parser.feed(data)
            if replies:
                return replies[0]


def delete_prefix(address: tuple[str, int], prefix: str) -> None:
    cursor = b"0"
    while True:
        cursor, keys = redis(address, "SCAN", cursor, "MATCH", prefix + "*", "COUNT", 1000)
        if keys:
            redis(address, "DEL", *keys)
        if cursor == b"0":
            return


@pytest.fixture(scope="module")
def prefix(redis_service: str) -> Iterator[str]:
    value = f"gwtest:{uuid.uuid4().hex[:12]}:"
    yield value
    delete_prefix(("127.0.0.1", 6379), value)


def plugin_entry(prefix: str, **config: Any) -> dict[str, Any]:
    return {"plugins": [{"name": "gatewayd-plugin-cache", "module": CACHE,
                         "config": {"redisURL": "redis://127.0.0.1:6379/0", "keyPrefix": prefix,
                                    "expiry": "5m", **config}}]}


@pytest.fixture(scope="module")
def metrics_socket() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="gw-cache-metrics-")
    yield f"{directory}/cache.sock"
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def gateway(service_pg: str, prefix: str, metrics_socket: str) -> Iterator[Gateway]:
    config = plugin_entry(prefix, metricsUnixDomainSocket=metrics_socket)
    with Gateway(base_config({"writes": service_pg}), config) as gw:
        yield gw


def scrape(path: str) -> dict[str, float]:
    """The plugin's Prometheus metrics over HTTP on its Unix socket."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1."), head
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@pytest.fixture(scope="module")
def gateway2(service_pg: str, prefix: str) -> Iterator[Gateway]:
    with Gateway(base_config({"writes": service_pg}), plugin_entry(prefix)) as gw:
        yield gw


@pytest.fixture
def table(service_pg: str) -> Iterator[str]:
    name = f"gw_cache_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(DIRECT, autocommit=True) as conn:
        conn.execute(f"create table {name}(id int primary key, v text)")
        conn.execute(f"insert into {name} values (1, 'one'), (2, 'two')")
    yield name
    with psycopg.connect(DIRECT, autocommit=True) as conn:
        conn.execute(f"drop table if exists {name}")


def direct(sql: str, *params: Any) -> None:
    """Change data behind the gateway's back (no invalidation can happen)."""
    with psycopg.connect(DIRECT, autocommit=True) as conn:
        conn.execute(sql, params or None)


def psql(gateway: Gateway, *commands: str) -> str:
    """Each command is sent as its own simple-protocol Query."""
    argv = ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", gateway.dsn(dbname="test")]
    for sql in commands:
        argv += ["-c", sql]
    result = subprocess.run(argv,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr + gateway.output()[-3000:]
    return result.stdout.strip()


def extended(gateway: Gateway, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(gateway.dsn(dbname="test"), autocommit=True) as conn:
        return conn.execute(sql, params, prepare=False).fetchall()


# -- served from the cache -------------------------------------------------------------------


def test_psql_second_select_is_served_from_redis(gateway: Gateway, table: str) -> None:
    query = f"select v from {table} where id = 1"
    assert psql(gateway, query) == "one"
    direct(f"update {table} set v = 'changed behind' where id = 1")
    assert psql(gateway, query) == "one"  # PostgreSQL would have said 'changed behind'
    # A different statement is a different entry.
    assert psql(gateway, f"select v from {table} where id = 1 ") == "changed behind"


def test_metrics_count_hits_misses_and_sets(gateway: Gateway, table: str,
                                            metrics_socket: str) -> None:
    # The plugin opens Redis and its metrics socket on first use.
    psql(gateway, f"select v from {table} where id = 3 and v is not null")
    wait_until(lambda: os.path.exists(metrics_socket), what="the cache metrics socket")
    before = scrape(metrics_socket)
    query = f"select v from {table} where id = 2"
    psql(gateway, query)
    psql(gateway, query)
    after = scrape(metrics_socket)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta("gatewayd_cache_hits_total") == 1
    assert delta("gatewayd_cache_misses_total") == 1
    assert delta("gatewayd_cache_sets_total") == 1
    assert delta("gatewayd_cache_gets_total") == 2
    assert delta("gatewayd_cache_hit_duration_seconds_count") == 1


def test_psycopg_extended_protocol_with_parameters(gateway: Gateway, table: str) -> None:
    query = f"select v from {table} where id = %s"
    assert extended(gateway, query, 1) == [("one",)]
    assert extended(gateway, query, 2) == [("two",)]
    direct(f"update {table} set v = v || '!'")
    assert extended(gateway, query, 1) == [("one",)]  # cached per parameter value
    assert extended(gateway, query, 2) == [("two",)]
    with psycopg.connect(gateway.dsn(dbname="test"), autocommit=True) as conn:
        # binary results are a different entry (result formats are in the key)
        cur = conn.cursor(binary=True)
        assert cur.execute(query, (1,), prepare=False).fetchall() == [("one!",)]
        # psycopg prepares a statement run often (named statement, Bind without
        # Parse): cached too, resolved to its SQL on this connection
        prepared = query + " and v is not null"
        for _ in range(8):
            assert conn.execute(prepared, (2,)).fetchall() == [("two!",)]
        direct(f"update {table} set v = 'two?' where id = 2")
        assert conn.execute(prepared, (2,)).fetchall() == [("two!",)]
        assert conn._prepared._names, "psycopg did not prepare the statement"


def test_asyncpg_named_prepared_statements(gateway: Gateway, table: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=gateway.port, user="postgres",
                                     database="test", ssl=False)
        try:
            query = f"select v from {table} where id = $1"
            # 1st: Parse+Describe+Flush then Bind+Execute+Sync (not cached: the batch's
            # start went out unsynced); 2nd: Bind+Execute(max_rows 1)+Sync, stored
            assert await conn.fetchval(query, 1) == "one"
            assert await conn.fetchval(query, 1) == "one"
            await asyncio.to_thread(direct, f"update {table} set v = 'behind' where id = 1")
            assert await conn.fetchval(query, 1) == "one"  # Bind to asyncpg's named statement: a hit
            await conn.execute(f"update {table} set v = 'through' where id = 1")
            assert await conn.fetchval(query, 1) == "through"
        finally:
            await conn.close()

    asyncio.run(run())


def test_update_through_the_gateway_invalidates_simple_and_extended(gateway: Gateway,
                                                                    table: str) -> None:
    query = f"select v from {table} where id = 1"
    assert psql(gateway, query) == "one"
    assert extended(gateway, f"select v from {table} where id = %s", 1) == [("one",)]
    direct(f"update {table} set v = 'stale' where id = 1")   # not seen by the cache...
    psql(gateway, f"update {table} set v = 'simple' where id = 1")  # ...this is
    assert psql(gateway, query) == "simple"
    assert extended(gateway, f"select v from {table} where id = %s", 1) == [("simple",)]
    # extended-protocol write, from another connection
    with psycopg.connect(gateway.dsn(dbname="test"), autocommit=True) as conn:
        conn.execute(f"update {table} set v = %s where id = %s", ("extended", 1))
    assert psql(gateway, query) == "extended"
    assert extended(gateway, f"select v from {table} where id = %s", 1) == [("extended",)]
    # a prepared UPDATE executed again and again (Bind to a named statement)
    with psycopg.connect(gateway.dsn(dbname="test"), autocommit=True) as conn:
        for n in range(3):
            conn.execute(f"update {table} set v = %s where id = %s", (f"prepared{n}", 1),
                         prepare=True)
            assert psql(gateway, query) == f"prepared{n}"


def test_copy_from_and_truncate_invalidate(gateway: Gateway, table: str) -> None:
    query = f"select count(*) from {table}"
    assert psql(gateway, query) == "2"
    with psycopg.connect(gateway.dsn(dbname="test"), autocommit=True) as conn:
        with conn.cursor().copy(f"copy {table} (id, v) from stdin") as copy:
            for i in range(3, 103):
                copy.write_row((i, f"row{i}"))
    assert psql(gateway, query) == "102"
    psql(gateway, f"truncate {table}")
    assert psql(gateway, query) == "0"


def test_write_through_another_gateway_invalidates(gateway: Gateway, gateway2: Gateway,
                                                   table: str) -> None:
    query = f"select v from {table} where id = 2"
    assert psql(gateway, query) == "two"
    assert psql(gateway2, query) == "two"  # same Redis, same key: a hit
    psql(gateway2, f"update public.{table} set v = 'second' where id = 2")  # schema-qualified
    assert psql(gateway, query) == "second"
    with psycopg.connect(gateway2.dsn(dbname="test"), autocommit=True) as conn:
        conn.execute(f"delete from {table} where id = %s", (2,))
    assert psql(gateway, query) == ""


def test_join_is_invalidated_by_a_write_to_either_table(gateway: Gateway, table: str) -> None:
    other = table + "_o"
    direct(f"create table {other}(id int, w text)")
    try:
        direct(f"insert into {other} values (1, 'w1')")
        query = f"select v, w from {table} join {other} using (id) order by id"
        assert psql(gateway, query) == "one|w1"
        psql(gateway, f"insert into {other} values (2, 'w2')")
        assert psql(gateway, query) == "one|w1\ntwo|w2"
    finally:
        direct(f"drop table {other}")


def test_revoke_through_the_gateway_ends_cached_access(gateway: Gateway, table: str) -> None:
    role = f"gw_cache_role_{uuid.uuid4().hex[:8]}"
    direct(f"create role {role} login")
    try:
        direct(f"grant select on {table} to {role}")
        query = f"select v from {table} where id = 1"

        def as_role() -> list[tuple[Any, ...]]:
            with psycopg.connect(gateway.dsn(user=role, dbname="test"), autocommit=True) as conn:
                return conn.execute(query).fetchall()

        assert as_role() == [("one",)]
        assert as_role() == [("one",)]  # cached for this user
        psql(gateway, f"revoke select on {table} from {role}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            as_role()
    finally:
        direct(f"revoke all on {table} from {role}")
        direct(f"drop role {role}")


# -- never served from the cache --------------------------------------------------------------


def test_nothing_is_served_inside_a_transaction(gateway: Gateway, table: str) -> None:
    query = f"select v from {table} where id = 1"
    assert psql(gateway, query) == "one"
    direct(f"update {table} set v = 'fresh' where id = 1")
    assert psql(gateway, query) == "one"  # cached outside a transaction
    with psycopg.connect(gateway.dsn(dbname="test")) as conn:  # psycopg: BEGIN first
        assert conn.execute(query).fetchall() == [("fresh",)]
        assert conn.execute(query).fetchall() == [("fresh",)]
        conn.commit()
    # psql: BEGIN, the query and COMMIT as three Query messages
    assert psql(gateway, "begin", query, "commit") == "BEGIN\nfresh\nCOMMIT"


def test_transaction_writes_invalidate_at_commit(gateway: Gateway, table: str) -> None:
    query = f"select v from {table} where id = 1"
    assert psql(gateway, query) == "one"
    with psycopg.connect(gateway.dsn(dbname="test")) as writer:
        writer.execute(f"update {table} set v = 'in tx' where id = 1")
        # uncommitted: a reader outside sees (and may cache) the old row
        assert psql(gateway, query) == "one"
        writer.commit()
    assert psql(gateway, query) == "in tx"


@pytest.mark.parametrize("expression", ["now()", "random()", "nextval('{seq}')",
                                        "current_timestamp", "clock_timestamp()",
                                        "pg_backend_pid()", "gen_random_uuid()"])
def test_volatile_functions_are_never_cached(gateway: Gateway, table: str, expression: str) -> None:
    seq = table + "_seq"
    direct(f"create sequence {seq}")
    try:
        query = f"select v, {expression.format(seq=seq)} is not null from {table} where id = 1"
        assert psql(gateway, query) == "one|t"
        direct(f"update {table} set v = 'new' where id = 1")
        assert psql(gateway, query) == "new|t"
    finally:
        direct(f"drop sequence {seq}")


def test_select_for_update_and_temp_tables_are_not_cached(gateway: Gateway, table: str) -> None:
    query = f"select v from {table} where id = 1 for update"
    assert psql(gateway, query) == "one"
    direct(f"update {table} set v = 'new' where id = 1")
    assert psql(gateway, query) == "new"
    with psycopg.connect(gateway.dsn(dbname="test"), autocommit=True) as conn:
        conn.execute("create temp table gw_tmp(x int)")
        conn.execute("insert into gw_tmp values (1)")
        assert conn.execute("select x from gw_tmp").fetchall() == [(1,)]
        conn.execute("delete from gw_tmp")
        assert conn.execute("select x from gw_tmp").fetchall() == []


def test_errors_are_not_cached(gateway: Gateway, table: str) -> None:
    query = f"select v from {table}_later where id = 1"
    with pytest.raises(psycopg.errors.UndefinedTable):
        extended(gateway, query)
    direct(f"create table {table}_later(id int, v text)")
    try:
        direct(f"insert into {table}_later values (1, 'exists now')")
        assert extended(gateway, query) == [("exists now",)]
    finally:
        direct(f"drop table {table}_later")


# -- limits and failures ----------------------------------------------------------------------


def test_response_over_the_limit_is_not_cached_and_arrives_intact(service_pg: str, prefix: str,
                                                                   table: str) -> None:
    # The case: a ~50 MB result over the default 8 MB limit.
    direct(f"insert into {table} select i, repeat(md5(i::text), 32) from generate_series(3, 50002) i")
    query = f"select id, v from {table} order by id"
    config = plugin_entry(prefix + "big:", maxResponseSize="8MB")
    with Gateway(base_config({"writes": service_pg}), config) as gw:
        with psycopg.connect(gw.dsn(dbname="test"), autocommit=True) as conn:
            rows = conn.execute(query).fetchall()
            assert len(rows) == 50002
            assert rows[4] == (5, "e4da3b7fbbce2345d7772b0674a318d5" * 32)
            assert sum(len(v) for _, v in rows) > 50_000_000
            direct(f"update {table} set v = 'changed' where id = 1")
            again = conn.execute(query).fetchall()
            assert again[0] == (1, "changed") and again[1:] == rows[1:]
            # a small result under the limit is cached by the same gateway
            small = f"select v from {table} where id = 2"
            assert conn.execute(small).fetchall() == [("two",)]
            direct(f"update {table} set v = 'x' where id = 2")
            assert conn.execute(small).fetchall() == [("two",)]


class ThrowawayRedis:
    """A redis-server on a free port, stoppable and restartable on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="gw-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.up, what="redis-server to accept connections")

    def up(self) -> bool:
        try:
            return redis(("127.0.0.1", self.port), "PING") == b"PONG"
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def cached(gateway: Gateway, table: str, serial: list[int]) -> bool:
    """One probe: is a fresh SELECT served from the cache the second time?"""
    serial[0] += 1
    marker = f"probe{serial[0]}"
    direct(f"update {table} set v = %s where id = 1", marker)
    query = f"select v, '{marker}' from {table} where id = 1"  # a new statement per probe
    assert psql(gateway, query) == f"{marker}|{marker}"
    direct(f"update {table} set v = 'after' where id = 1")
    return psql(gateway, query) == f"{marker}|{marker}"


def test_queries_keep_working_without_redis_and_hits_resume(service_pg: str, table: str) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is required for this test")
    server = ThrowawayRedis()
    server.start()
    config = plugin_entry("gwtest-down:", redisURL=f"redis://127.0.0.1:{server.port}/0",
                          redisTimeout="500ms")
    try:
        with Gateway(base_config({"writes": service_pg}), config) as gw:
            serial = [0]
            wait_until(lambda: cached(gw, table, serial), what="the first cache hit")
            server.stop()
            for _ in range(3):  # every query still answered, from PostgreSQL
                assert not cached(gw, table, serial)
            with psycopg.connect(gw.dsn(dbname="test"), autocommit=True) as conn:
                assert conn.execute(f"select v from {table} where id = %s", (2,)).fetchall() \
                    == [("two",)]
            server.start()
            wait_until(lambda: cached(gw, table, serial), timeout=60,
                       what="cache hits after Redis came back")
            assert "passed through uncached" in gw.output()  # the outage was logged
    finally:
        server.close()
