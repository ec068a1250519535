"""
Real clients through the gateway: psql, psycopg 3 (simple and extended
protocol, binary results), asyncpg and pgbench (simple, extended, prepared),
against a SCRAM backend (a throwaway cluster) and a trust backend (the
machine's PostgreSQL), each behind its own server group of one gateway.

Which backend served a client is read from C{current_setting('port')}.
"""

from __future__ import annotations

import asyncio
from typing import Iterator

import asyncpg
import psycopg
import pytest

from tests.support.clients import fresh_database, pgbench, psql
from tests.support.gateway import Gateway
from tests.support.groups import multi_config
from tests.support.pg import PgCluster, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("core_clients")]

POOL = 5


@pytest.fixture(scope="module")
def scram_db(scram_pg: PgCluster) -> Iterator[str]:
    """A database of our own on the SCRAM cluster (other tests share that cluster)."""
    with fresh_database(scram_pg.dsn(), prefix="core_clients") as name:
        yield name


@pytest.fixture(scope="module")
def trust_db(service_pg: str) -> Iterator[str]:
    with fresh_database(prefix="core_clients") as name:
        yield name


@pytest.fixture(scope="module")
def gateway(scram_pg: PgCluster, service_pg: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    sockets = tmp_path_factory.mktemp("core-clients-sockets")
    config = multi_config({
        "default": {"blocks": {"scram": scram_pg.address}, "pool_size": POOL},
        "trust": {"blocks": {"service": service_pg}, "pool_size": POOL},
        # Unix sockets on both sides: a listener like PostgreSQL's, and the
        # SCRAM cluster reached through its own socket directory.
        "unix": {"blocks": {"scram": str(scram_pg.root / f".s.PGSQL.{scram_pg.port}")},
                 "client": {"network": "unix"}, "network": "unix",
                 "address": str(sockets / ".s.PGSQL.6432")},
    })
    with Gateway(config) as gw:
        gw.socket_dir = sockets  # type: ignore[attr-defined]
        wait_until(lambda: (sockets / ".s.PGSQL.6432").exists(), what="unix listener")
        yield gw


@pytest.fixture(params=["scram", "trust"])
def backend(request: pytest.FixtureRequest, gateway: Gateway, scram_pg: PgCluster,
            scram_db: str, trust_db: str) -> dict[str, object]:
    """(group, database, expected backend port) for each backend kind."""
    if request.param == "scram":
        return {"group": "default", "db": scram_db, "port": str(scram_pg.port)}
    return {"group": "trust", "db": trust_db, "port": "5432"}


def dsn(gateway: Gateway, backend: dict[str, object]) -> str:
    return gateway.dsn(dbname=str(backend["db"]), group=str(backend["group"]))


def test_psql(gateway: Gateway, backend: dict[str, object]) -> None:
    out = psql(dsn(gateway, backend),
               "select current_setting('port'), current_user, 6 * 7; select 'second'")
    assert out.stdout.split() == [f"{backend['port']}|postgres|42", "second"]


def test_unix_sockets_on_both_sides(gateway: Gateway, scram_pg: PgCluster) -> None:
    dsn = (f"host={gateway.socket_dir} port=6432 user=postgres dbname=postgres "  # type: ignore[attr-defined]
           "password=password")
    # inet_server_addr() is NULL for a Unix-socket session: the gateway dialled the socket.
    out = psql(dsn, "select current_setting('port'), inet_server_addr() is null")
    assert out.stdout.strip() == f"{scram_pg.port}|t"


def test_scram_backend_rejects_a_wrong_password(gateway: Gateway, scram_db: str) -> None:
    """Authentication really happens end to end (the gateway does not short-circuit it)."""
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(gateway.dsn(dbname=scram_db, password="wrong"))
    # ... and the pool is not poisoned by the failed login.
    with psycopg.connect(gateway.dsn(dbname=scram_db)) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_psycopg_simple_protocol(gateway: Gateway, backend: dict[str, object]) -> None:
    with psycopg.connect(dsn(gateway, backend), autocommit=True,
                         cursor_factory=psycopg.ClientCursor) as conn:
        cur = conn.cursor()
        # Two statements in one string only work with the simple query protocol.
        cur.execute("select %s::int + 1, current_setting('port'); select %s || 'b'", (41, "a"),
                    prepare=False)
        assert cur.fetchone() == (42, backend["port"])
        assert cur.nextset()
        assert cur.fetchone() == ("ab",)
        with pytest.raises(psycopg.errors.DivisionByZero):
            cur.execute("select 1/0")
        # The session survives an error.
        cur.execute("select 'still here'")
        assert cur.fetchone() == ("still here",)


def test_psycopg_extended_protocol_binary(gateway: Gateway, backend: dict[str, object]) -> None:
    blob = bytes(range(256)) * 64
    with psycopg.connect(dsn(gateway, backend), autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute("select %s::int8 * 2, %s::text, %s::bytea, %s::float8",
                    (2**40, "zażółć", blob, 1.5), binary=True)
        assert cur.pgresult is not None and cur.pgresult.fformat(0) == 1  # binary result
        assert cur.fetchone() == (2**41, "zażółć", blob, 1.5)
        # A named prepared statement lives on in this session's backend.
        for i in range(3):
            cur.execute("select %s::int * 10", (i,), prepare=True)
            assert cur.fetchone() == (i * 10,)
        cur.execute("select count(*) from pg_prepared_statements where not from_sql")
        assert cur.fetchone()[0] >= 1
        with conn.transaction():
            cur.execute("create temp table t (id int, v text)")
            cur.executemany("insert into t values (%s, %s)", [(i, str(i)) for i in range(100)])
        cur.execute("select count(*), sum(id) from t")
        assert cur.fetchone() == (100, 4950)


def test_psycopg_pipeline_mode(gateway: Gateway, backend: dict[str, object]) -> None:
    """Hundreds of extended-protocol queries in flight at once, one Sync at the end."""
    with psycopg.connect(dsn(gateway, backend), autocommit=True) as conn:
        with conn.pipeline():
            cursors = [conn.execute("select %s::int * 2", (i,)) for i in range(300)]
        assert [c.fetchone()[0] for c in cursors] == [i * 2 for i in range(300)]


def test_asyncpg(gateway: Gateway, backend: dict[str, object]) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=gateway.ports[str(backend["group"])],
                                     user="postgres", password="password",
                                     database=str(backend["db"]), ssl=False, timeout=15)
        try:
            assert await conn.fetchval("select current_setting('port')") == backend["port"]
            stmt = await conn.prepare("select $1::int + $2::int, $3::text")
            assert tuple(await stmt.fetchrow(40, 2, "x")) == (42, "x")
            async with conn.transaction():
                await conn.execute("create temp table a (id int)")
                await conn.executemany("insert into a values ($1)", [(i,) for i in range(50)])
            assert await conn.fetchval("select sum(id) from a") == 1225
            with pytest.raises(asyncpg.exceptions.UndefinedTableError):
                await conn.fetch("select * from no_such_table")
            assert await conn.fetchval("select 1") == 1
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture(scope="module")
def pgbench_ready(gateway: Gateway, scram_db: str, trust_db: str) -> dict[str, str]:
    """pgbench -i through the gateway once per backend."""
    done = {}
    for group, db in (("default", scram_db), ("trust", trust_db)):
        result = pgbench(gateway.ports[group], db, "-i", "-s", "1", "-q")
        assert result.returncode == 0, result.output
        done[group] = db
    return done


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench(gateway: Gateway, backend: dict[str, object], pgbench_ready: dict[str, str],
                 mode: str) -> None:
    group = str(backend["group"])
    result = pgbench(gateway.ports[group], pgbench_ready[group], "-n", "-T", "2", "-c", "4",
                     "-j", "2", "-M", mode)
    assert result.returncode == 0, result.output
    assert result.failed == 0, result.output
    assert result.processed > 0, result.output
