"""
TLS on both sides of the gateway, with certificate authorities made in the
test: clients with sslmode=require/verify-full, requireTLS, tlsMinVersion,
SSLRequest/GSSENCRequest answers, direct TLS (libpq 17+
C{sslnegotiation=direct}), and backend TLS with verify-full, including a
host name the server certificate does not cover.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import threading
from typing import Any, Iterator

import asyncpg
import psycopg
import pytest

from tests.support import wire
from tests.support.certs import CA, ServerFiles, write_server_files
from tests.support.clients import env, psql
from tests.support.gateway import Gateway
from tests.support.groups import multi_config
from tests.support.pg import PgCluster, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("core_tls")]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ServerFiles]:
    directory = tmp_path_factory.mktemp("core-tls")
    return {
        "gateway": write_server_files(directory, CA.create("gateway-ca"), "gateway"),
        # The cluster's certificate names "localhost" only, no IP address.
        "pg": write_server_files(directory, CA.create("pg-ca"), "pg", ips=()),
    }


@pytest.fixture(scope="module")
def tls_pg(certs: dict[str, ServerFiles]) -> Iterator[PgCluster]:
    cluster = PgCluster(auth="trust", ssl_cert=str(certs["pg"].cert),
                        ssl_key=str(certs["pg"].key)).init().start()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="module")
def gateway(certs: dict[str, ServerFiles], tls_pg: PgCluster, service_pg: str) -> Iterator[Gateway]:
    gw_tls = {"enableTLS": True, "certFile": str(certs["gateway"].cert),
              "keyFile": str(certs["gateway"].key)}
    verify = {"sslmode": "verify-full", "sslrootcert": str(certs["pg"].ca)}
    config = multi_config({
        # TLS to clients, verify-full TLS to a cluster with its own CA (by IP SAN).
        "default": {"blocks": {"tls": f"localhost:{tls_pg.port}"}, "client": verify, **gw_tls},
        # by IP address, with the name to verify given separately
        "servername": {"blocks": {"tls": tls_pg.address},
                       "client": {**verify, "sslservername": "localhost"}},
        # by an IP address the certificate does not carry
        "byip": {"blocks": {"tls": tls_pg.address}, "client": verify},
        "plain": {"blocks": {"writes": service_pg}},
        "required": {"blocks": {"writes": service_pg}, "requireTLS": True, **gw_tls},
        "tls13": {"blocks": {"writes": service_pg}, "tlsMinVersion": "1.3", **gw_tls},
        # verify-full against a name the server certificate does not carry
        "badname": {"blocks": {"tls": f"localhost:{tls_pg.port}"},
                    "client": {**verify, "sslservername": "db.wrong.example"}},
        # verify-full with a CA that did not sign the server certificate
        "badca": {"blocks": {"tls": f"localhost:{tls_pg.port}"},
                  "client": {"sslmode": "verify-full", "sslrootcert": str(certs["gateway"].ca)}},
    })
    with Gateway(config) as gw:
        yield gw


def _tls_dsn(gw: Gateway, certs: dict[str, ServerFiles], group: str = "default",
             **extra: str) -> str:
    return gw.dsn(group=group, host="localhost", sslmode="verify-full",
                  sslrootcert=str(certs["gateway"].ca), **extra)


def test_psql_require_and_backend_verify_full(gateway: Gateway, tls_pg: PgCluster) -> None:
    out = psql(gateway.dsn(sslmode="require"),
               "select ssl, current_setting('port') from pg_stat_ssl where pid = pg_backend_pid()")
    # The gateway's own link to PostgreSQL is TLS, verified against the cluster's CA.
    assert out.stdout.strip() == f"t|{tls_pg.port}"


def test_psql_verify_full(gateway: Gateway, certs: dict[str, ServerFiles]) -> None:
    assert psql(_tls_dsn(gateway, certs), "select 'verified'").stdout.strip() == "verified"


def test_psycopg_verify_full_sees_tls(gateway: Gateway, certs: dict[str, ServerFiles]) -> None:
    with psycopg.connect(_tls_dsn(gateway, certs)) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select %s::int * 2", (21,)).fetchone() == (42,)


def test_client_refuses_a_gateway_cert_from_another_ca(gateway: Gateway,
                                                       certs: dict[str, ServerFiles]) -> None:
    """Negative control: verify-full is really verifying."""
    dsn = gateway.dsn(host="localhost", sslmode="verify-full", sslrootcert=str(certs["pg"].ca))
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(dsn)


def test_direct_tls_negotiation(gateway: Gateway, certs: dict[str, ServerFiles]) -> None:
    """libpq 17+ may open with a TLS ClientHello (ALPN 'postgresql') instead of SSLRequest."""
    if psycopg.pq.version() < 170000:
        pytest.skip("libpq < 17 has no sslnegotiation=direct")
    with psycopg.connect(_tls_dsn(gateway, certs, sslnegotiation="direct")) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select 1").fetchone() == (1,)


def test_require_tls_refuses_plaintext_with_28000(gateway: Gateway,
                                                  certs: dict[str, ServerFiles]) -> None:
    with wire.Conn.open(gateway.ports["required"]) as raw:
        raw.send(wire.startup_packet())
        error = raw.read_error()
    assert error is not None and error["C"] == "28000" and error["S"] == "FATAL"

    async def plaintext() -> None:
        await asyncpg.connect(host="127.0.0.1", port=gateway.ports["required"], user="postgres",
                              database="postgres", ssl=False, timeout=15)

    with pytest.raises(asyncpg.exceptions.InvalidAuthorizationSpecificationError) as info:
        asyncio.run(plaintext())
    assert info.value.sqlstate == "28000"
    # With TLS the same group serves the client.
    with psycopg.connect(_tls_dsn(gateway, certs, group="required")) as conn:
        assert conn.pgconn.ssl_in_use and conn.execute("select 1").fetchone() == (1,)


def _ssl_request(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(wire.SSL_REQUEST)
    assert sock.recv(1) == b"S"
    return sock


def _client_context(certs: dict[str, ServerFiles], **versions: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs["gateway"].ca))
    for name, value in versions.items():
        setattr(ctx, name, value)
    return ctx


def test_tls_min_version_13_refuses_a_tls12_client(gateway: Gateway,
                                                   certs: dict[str, ServerFiles]) -> None:
    port = gateway.ports["tls13"]
    old = _client_context(certs, maximum_version=ssl.TLSVersion.TLSv1_2)
    with _ssl_request(port) as sock, pytest.raises(ssl.SSLError):
        old.wrap_socket(sock, server_hostname="localhost")
    # TLS 1.3 works, and so does the session over it.
    new = _client_context(certs, minimum_version=ssl.TLSVersion.TLSv1_3)
    with new.wrap_socket(_ssl_request(port), server_hostname="localhost") as tls:
        assert tls.version() == "TLSv1.3"
        conn = wire.Conn(tls)  # type: ignore[arg-type]
        msgs = conn.startup()
        assert msgs[-1][0] == "Z", wire.errors_in(msgs)
        assert wire.data_rows(conn.simple_query("select 7"))[0] == ["7"]
    # libpq the same way.
    with pytest.raises(psycopg.OperationalError, match="(?i)protocol version|alert"):
        psycopg.connect(_tls_dsn(gateway, certs, group="tls13",
                                 ssl_max_protocol_version="TLSv1.2"))
    with psycopg.connect(_tls_dsn(gateway, certs, group="tls13",
                                  ssl_min_protocol_version="TLSv1.3")) as conn:
        assert conn.pgconn.ssl_in_use and conn.execute("select 1").fetchone() == (1,)


def test_sslrequest_without_tls_gets_n_and_gssenc_gets_n(gateway: Gateway) -> None:
    with wire.Conn.open(gateway.ports["plain"]) as raw:
        raw.send(wire.GSSENC_REQUEST)
        assert raw.recv_byte() == b"N"
        raw.send(wire.SSL_REQUEST)
        assert raw.recv_byte() == b"N"
        msgs = raw.startup()
        assert msgs[-1][0] == "Z", wire.errors_in(msgs)
    with wire.Conn.open(gateway.port) as raw:  # a TLS group also declines GSSAPI encryption
        raw.send(wire.GSSENC_REQUEST)
        assert raw.recv_byte() == b"N"
    # libpq's prefer modes fall back to plaintext on the N answers.
    out = psql(gateway.dsn(group="plain", sslmode="prefer", gssencmode="prefer"), "select 'ok'")
    assert out.stdout.strip() == "ok"


def test_plaintext_bytes_after_sslrequest_are_refused(gateway: Gateway) -> None:
    """CVE-2021-23214: bytes pipelined after SSLRequest must not be taken as the startup."""
    with wire.Conn.open(gateway.port) as raw:
        raw.send(wire.SSL_REQUEST + wire.startup_packet())
        error = raw.read_error()
    assert error is not None and error["C"] == "08P01"


def test_backend_verify_full_with_sslservername(gateway: Gateway, tls_pg: PgCluster) -> None:
    out = psql(gateway.dsn(group="servername"),
               "select ssl from pg_stat_ssl where pid = pg_backend_pid()")
    assert out.stdout.strip() == "t"


@pytest.mark.parametrize("group, reason", [
    ("badname", "host name 'db.wrong.example'"),
    ("byip", "host name '127.0.0.1'"),
    ("badca", "certificate verify failed"),
])
def test_backend_tls_verification_failure_is_explained(gateway: Gateway, group: str,
                                                       reason: str) -> None:
    with wire.Conn.open(gateway.ports[group]) as raw:
        raw.send(wire.startup_packet())
        error = raw.read_error()
    assert error is not None, "the gateway closed without an ErrorResponse"
    assert error["C"] == "08006" and error["S"] == "FATAL", error
    assert reason in error.get("D", ""), error
    # The gateway's log names the problem too.
    wait_until(lambda: any("unavailable" in line and reason in line
                           for line in gateway.output().splitlines()),
               what=f"{reason!r} in the gateway log")
    # And a real client shows it to its user.
    out = subprocess.run(["psql", "-X", "-At", "-d", gateway.dsn(group=group), "-c", "select 1"],
                         capture_output=True, text=True, timeout=30, env=env())
    assert out.returncode != 0 and reason in out.stderr, out.stderr


def test_cancel_over_tls_on_both_sides(gateway: Gateway, certs: dict[str, ServerFiles],
                                       tls_pg: PgCluster) -> None:
    """libpq sends its CancelRequest over TLS too; the gateway forwards it over TLS."""
    with psycopg.connect(_tls_dsn(gateway, certs), autocommit=True) as conn:
        pid = conn.info.backend_pid
        failure: list[BaseException] = []

        def run() -> None:
            try:
                conn.execute("select pg_sleep(30)")
            except BaseException as e:  # noqa: BLE001
                failure.append(e)

        thread = threading.Thread(target=run)
        thread.start()

        def running() -> bool:
            return tls_pg.psql(f"select count(*) from pg_stat_activity where pid = {pid} "
                               "and state = 'active'") == "1"

        wait_until(running, what="query running")
        conn.cancel_safe()
        thread.join(15)
        assert failure and isinstance(failure[0], psycopg.errors.QueryCanceled)
        assert conn.execute("select 1").fetchone() == (1,)


def test_bulk_over_tls_on_both_sides(gateway: Gateway, certs: dict[str, ServerFiles]) -> None:
    rows = 200_000
    with psycopg.connect(_tls_dsn(gateway, certs), autocommit=True) as conn:
        conn.execute("create temp table t (id int, v text)")
        with conn.cursor().copy("copy t from stdin") as copy:
            copy.write("".join(f"{i}\t{'v' * 50}\n" for i in range(rows)))
        total = 0
        with conn.cursor().copy("copy (select id, repeat('w', 200) from t) to stdout") as copy:
            for chunk in copy:
                total += bytes(chunk).count(b"\n")
        assert total == rows
        with conn.transaction():
            cur = conn.cursor(name="big")  # a server-side cursor fetched in batches
            cur.execute("select repeat('x', 1000) from generate_series(1, 20000)")
            seen = 0
            while batch := cur.fetchmany(5000):
                seen += len(batch)
                assert all(len(r[0]) == 1000 for r in batch)
        assert seen == 20000
