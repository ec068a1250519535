"""
Query cancellation through the gateway, with two backends behind one server
group (ROUND_ROBIN): a CancelRequest must reach the server that issued the
key (GatewayD sends it to whatever pooled backend comes next, #342), unknown
keys are dropped without harm, and real clients (psycopg, psql with SIGINT,
asyncpg) see SQLSTATE 57014.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import threading
from typing import Any, Iterator

import asyncpg
import psycopg
import pytest

from tests.support import wire
from tests.support.clients import env
from tests.support.gateway import Gateway, base_config
from tests.support.pg import PgCluster, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("core_cancel")]

LONG = "select pg_sleep(30)"


@pytest.fixture(scope="module")
def clusters() -> Iterator[dict[str, PgCluster]]:
    made = {name: PgCluster(auth="trust").init() for name in ("a", "b")}
    try:
        for cluster in made.values():
            cluster.start()
        yield made
    finally:
        for cluster in made.values():
            cluster.destroy()


@pytest.fixture(scope="module")
def gateway(clusters: dict[str, PgCluster]) -> Iterator[Gateway]:
    config = base_config({name: c.address for name, c in clusters.items()}, pool_size=4,
                         loadBalancer={"strategy": "ROUND_ROBIN"})
    with Gateway(config) as gw:
        yield gw


def _which(conn: psycopg.Connection, clusters: dict[str, PgCluster]) -> str:
    port = int(conn.execute("select current_setting('port')").fetchone()[0])
    return next(name for name, c in clusters.items() if c.port == port)


def _running(cluster: PgCluster, pid: int) -> bool:
    """The backend C{pid} of C{cluster} is running our long query right now."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        row = conn.execute("select state, query from pg_stat_activity where pid = %s",
                           (pid,)).fetchone()
    return row is not None and row[0] == "active" and row[1] == LONG


class LongQuery(threading.Thread):
    """Runs C{LONG} on C{conn} in a thread and keeps the outcome."""

    def __init__(self, conn: psycopg.Connection) -> None:
        super().__init__(daemon=True)
        self.conn = conn
        self.error: BaseException | None = None
        self.finished = False

    def run(self) -> None:
        try:
            self.conn.execute(LONG)
        except BaseException as e:  # noqa: BLE001 - kept for the assertion
            self.error = e
        self.finished = True


def _one_per_backend(gateway: Gateway, clusters: dict[str, PgCluster]) -> dict[str, Any]:
    """Connect until each backend serves one of our clients (round robin alternates)."""
    by_backend: dict[str, psycopg.Connection] = {}
    extra = []
    for _ in range(6):
        conn = psycopg.connect(gateway.dsn(), autocommit=True)
        name = _which(conn, clusters)
        if name in by_backend:
            extra.append(conn)
        else:
            by_backend[name] = conn
        if len(by_backend) == 2:
            break
    for conn in extra:
        conn.close()
    assert len(by_backend) == 2, "round robin never reached both backends"
    return by_backend


def test_psycopg_cancel_returns_query_canceled(gateway: Gateway,
                                               clusters: dict[str, PgCluster]) -> None:
    with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
        cluster = clusters[_which(conn, clusters)]
        job = LongQuery(conn)
        job.start()
        wait_until(lambda: _running(cluster, conn.info.backend_pid), what="query running")
        conn.cancel_safe()
        job.join(15)
        assert job.finished, "the cancel did not reach the backend"
        assert isinstance(job.error, psycopg.errors.QueryCanceled)
        assert job.error.sqlstate == "57014"
        # The session is usable afterwards.
        assert conn.execute("select 'after cancel'").fetchone() == ("after cancel",)


def test_cancel_reaches_the_backend_that_issued_the_key(
        gateway: Gateway, clusters: dict[str, PgCluster]) -> None:
    conns = _one_per_backend(gateway, clusters)
    try:
        jobs = {name: LongQuery(conn) for name, conn in conns.items()}
        for job in jobs.values():
            job.start()
        for name, conn in conns.items():
            wait_until(lambda: _running(clusters[name], conn.info.backend_pid),
                       what=f"query running on {name}")
        # Cancel the client whose backend is the *second* cluster.
        conns["b"].cancel_safe()
        jobs["b"].join(15)
        assert jobs["b"].finished, "the cancel for cluster b never arrived there"
        assert isinstance(jobs["b"].error, psycopg.errors.QueryCanceled)
        # Cluster a's session is untouched: still running its query.
        assert not jobs["a"].finished
        assert _running(clusters["a"], conns["a"].info.backend_pid)
        conns["a"].cancel_safe()
        jobs["a"].join(15)
        assert isinstance(jobs["a"].error, psycopg.errors.QueryCanceled)
        for conn in conns.values():
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        for conn in conns.values():
            conn.close()


def test_unknown_cancel_key_is_ignored(gateway: Gateway, clusters: dict[str, PgCluster]) -> None:
    with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
        cluster = clusters[_which(conn, clusters)]
        pid = conn.info.backend_pid
        job = LongQuery(conn)
        job.start()
        wait_until(lambda: _running(cluster, pid), what="query running")
        # The right pid with a wrong key, and a made-up pid: both must be dropped.
        for key_pid in (pid, random.randrange(1 << 20, 1 << 31)):
            with wire.Conn.open(gateway.port) as raw:
                raw.send(wire.cancel_request(key_pid, os.urandom(4)))
                # PostgreSQL answers a CancelRequest with nothing but a close; so do we.
                assert raw.recv_byte() == b""
        # Garbage-length cancel packets are refused too, without effect.
        with wire.Conn.open(gateway.port) as raw:
            raw.send(wire.cancel_request(pid, b"\x00\x01"))
            error = raw.read_error()
            assert error is not None and error["C"] == "08P01"
        # A round trip through a fresh client proves the gateway is fine, and
        # the long query is still running: nothing was cancelled.
        with psycopg.connect(gateway.dsn(), autocommit=True) as other:
            assert other.execute("select 2").fetchone() == (2,)
        assert _running(cluster, pid) and not job.finished
        conn.cancel_safe()
        job.join(15)
        assert isinstance(job.error, psycopg.errors.QueryCanceled)


def test_psql_sigint_cancels(gateway: Gateway, clusters: dict[str, PgCluster]) -> None:
    proc = subprocess.Popen(["psql", "-X", "-At", "-d", gateway.dsn(application_name="core-sigint"),
                             "-c", LONG], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env())

    def running() -> bool:
        for cluster in clusters.values():
            with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
                if conn.execute("select 1 from pg_stat_activity where application_name = "
                                "'core-sigint' and state = 'active' and query = %s",
                                (LONG,)).fetchone():
                    return True
        return False

    try:
        wait_until(running, what="psql's query running")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert "canceling statement due to user request" in err


def test_asyncpg_timeout_cancels_and_keeps_the_connection(gateway: Gateway) -> None:
    """asyncpg sends a CancelRequest when a query times out, then reuses the connection."""

    async def run() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=gateway.port, user="postgres",
                                     database="postgres", ssl=False, timeout=15)
        try:
            with pytest.raises(asyncio.TimeoutError):
                await conn.fetch(LONG, timeout=0.5)
            # Had the cancel not reached the backend, this would wait ~30 s.
            assert await asyncio.wait_for(conn.fetchval("select 3"), 15) == 3
        finally:
            await conn.close()

    asyncio.run(run())
