"""
Bulk traffic through the gateway: COPY both ways with a million rows, a
~100 MB result read by a deliberately slow client while the gateway's memory
stays flat (producers/consumers, not buffering), and LISTEN/NOTIFY.
"""

from __future__ import annotations

import threading
import time
from typing import Iterator

import psycopg
import pytest

from tests.support import wire
from tests.support.clients import fresh_database
from tests.support.gateway import Gateway, base_config
from tests.support.pg import SERVICE_DSN

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("core_bulk")]

ROWS = 1_000_000
#: RSS growth allowed over the idle baseline while 100 MB flows to a stalled reader.
RSS_BOUND = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def database(service_pg: str) -> Iterator[str]:
    with fresh_database(prefix="core_bulk") as name:
        yield name


@pytest.fixture(scope="module")
def gateway(service_pg: str) -> Iterator[Gateway]:
    with Gateway(base_config({"writes": service_pg}, pool_size=3)) as gw:
        yield gw


def test_copy_in_and_out_a_million_rows(gateway: Gateway, database: str) -> None:
    with psycopg.connect(gateway.dsn(dbname=database), autocommit=True) as conn:
        conn.execute("create table bulk (id int8, label text)")
        with conn.cursor().copy("copy bulk (id, label) from stdin") as copy:
            step = 50_000
            for start in range(0, ROWS, step):
                copy.write("".join(f"{i}\trow-{i}\n" for i in range(start, start + step)))
        assert conn.execute("select count(*), sum(id), max(label) from bulk").fetchone() == (
            ROWS, ROWS * (ROWS - 1) // 2, "row-999999")

        lines = 0
        total = 0
        with conn.cursor().copy("copy bulk (id) to stdout") as copy:
            for chunk in copy:
                data = bytes(chunk)
                lines += data.count(b"\n")
                total += sum(int(x) for x in data.split())
        assert lines == ROWS and total == ROWS * (ROWS - 1) // 2


def _stall(monitor: psycopg.Connection, pg_pid: int, gw_backend: tuple[int, int],
           polls: int = 5) -> None:
    """
    Poll until the PostgreSQL backend C{pg_pid} is blocked writing to the
    gateway (state active, wait_event ClientWrite) and the gateway's socket
    from it received nothing new over C{polls} consecutive observations.

    A gateway that keeps reading (buffering) lets the backend finish instead:
    that fails here ("the whole result left PostgreSQL").
    """
    deadline = time.monotonic() + 30
    stable, last = 0, -1
    while True:
        state, event = monitor.execute(
            "select state, coalesce(wait_event, '') from pg_stat_activity where pid = %s",
            (pg_pid,)).fetchone()
        got = wire.tcp_info(*gw_backend)["bytes_received"]
        assert state == "active", "the whole result left PostgreSQL while the client stalled"
        stable = stable + 1 if (event == "ClientWrite" and got == last) else 0
        if stable >= polls:
            return
        last = got
        assert time.monotonic() < deadline, "PostgreSQL never blocked on the gateway"


def _held_by_gateway(gw_backend: tuple[int, int], gw_client: tuple[int, int]) -> int:
    """Bytes the gateway read from PostgreSQL but has not handed to the kernel for the client."""
    back, front = wire.tcp_info(*gw_backend), wire.tcp_info(*gw_client)
    return (back["bytes_received"] - back["recv_q"]) - (front["bytes_acked"] + front["send_q"])


def test_slow_reader_of_a_100mb_result_keeps_gateway_memory_bounded(
        gateway: Gateway, database: str) -> None:
    """
    The client reads 64 KB at a time and stalls three times.  At each stall
    PostgreSQL must end up blocked on its socket with the query still active,
    the gateway must hold almost nothing in user space (kernel counters of
    both its sockets say how much it read and wrote) and its RSS must stay
    flat: its transports pause the other side (producers/consumers) instead
    of buffering.
    """
    assert gateway.proc is not None
    pid = gateway.proc.pid
    # Warm up (first session, imports, pools) before taking the baseline.
    with psycopg.connect(gateway.dsn(dbname=database)) as conn:
        conn.execute("select repeat('x', 1000) from generate_series(1, 2000)").fetchall()
    baseline = peak = wire.rss_bytes(pid)
    rows = 100_000
    # Our receive buffer is capped so that the kernel cannot hide much of the
    # result; the stalls come early enough that what is left (70+ MB) exceeds
    # every socket buffer on the way even fully grown.
    with wire.Conn.open(gateway.port, rcvbuf=256 * 1024) as client, \
            psycopg.connect(SERVICE_DSN, autocommit=True) as monitor:
        msgs = client.startup("postgres", database)
        assert msgs[-1][0] == "Z" and client.backend_key is not None, msgs
        pg_pid = client.backend_key[0]
        gw_port_to_pg = monitor.execute(
            "select client_port from pg_stat_activity where pid = %s", (pg_pid,)).fetchone()[0]
        gw_backend = (gw_port_to_pg, 5432)
        gw_client = (gateway.port, client.sock.getsockname()[1])
        client.send(wire.query(f"select repeat('x', 1000) from generate_series(1, {rows})"))
        sock = client.sock
        received = 0
        for stall_at in (64 * 1024, 10 * 1024 * 1024, 30 * 1024 * 1024):
            while received < stall_at:
                chunk = sock.recv(65536)
                assert chunk, "connection closed early"
                received += len(chunk)
            _stall(monitor, pg_pid, gw_backend)
            held = _held_by_gateway(gw_backend, gw_client)
            assert held < 4 * 1024 * 1024, f"the gateway buffers {held / 2**20:.1f} MB"
            peak = max(peak, wire.rss_bytes(pid))
        # Now read the rest, sampling memory as we go.
        tail = b""
        reads = 0
        while not tail.endswith(b"Z\x00\x00\x00\x05I"):
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            received += len(chunk)
            tail = (tail + chunk)[-16:]
            reads += 1
            if reads % 64 == 0:
                peak = max(peak, wire.rss_bytes(pid))
        assert received > rows * 1000
    growth = peak - baseline
    assert growth < RSS_BOUND, f"gateway RSS grew by {growth / 2**20:.1f} MB"


def test_listen_notify(gateway: Gateway, database: str) -> None:
    with psycopg.connect(gateway.dsn(dbname=database), autocommit=True) as listener, \
            psycopg.connect(gateway.dsn(dbname=database), autocommit=True) as sender:
        listener.execute("listen core_bulk_channel")
        got: list[psycopg.Notify] = []

        def listen() -> None:
            for notify in listener.notifies(timeout=20, stop_after=2):
                got.append(notify)

        thread = threading.Thread(target=listen)
        thread.start()
        sender.execute("select pg_notify('core_bulk_channel', 'hello')")
        sender.execute("notify core_bulk_channel, 'world'")
        thread.join(30)
        assert [(n.channel, n.payload) for n in got] == [
            ("core_bulk_channel", "hello"), ("core_bulk_channel", "world")]
        assert got[0].pid == sender.execute("select pg_backend_pid()").fetchone()[0]
