"""
Hostile and unlucky input: random and truncated startup packets, random
messages after startup, oversized messages, a backend that dies and comes
back.  The gateway must answer what it can with an ErrorResponse (08P01 for
malformed input), close only the offending client, leak no backend
connection and keep serving everyone else without a restart.
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import Iterator

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import wire
from tests.support.gateway import Gateway, base_config
from tests.support.pg import PgCluster, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("core_robustness")]

POOL = 3
MAX_MESSAGE = 1024 * 1024
#: Codes the gateway may answer malformed startup input with.
STARTUP_CODES = {"08P01", "0A000", "28000"}


@pytest.fixture(scope="module")
def gateway(service_pg: str) -> Iterator[Gateway]:
    config = base_config({"writes": service_pg}, pool_size=POOL,
                         maxMessageSize=MAX_MESSAGE, handshakeTimeout="2s")
    config["pools"]["default"]["writes"]["waitTimeout"] = "5s"
    with Gateway(config) as gw:
        yield gw


def _exchange(port: int, payload: bytes, *, good_startup: bool = False) -> bytes:
    """Send C{payload} (after a real login when C{good_startup}), half-close, read to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        prefix = b""
        if good_startup:
            conn = wire.Conn(sock)
            msgs = conn.startup()
            assert msgs and msgs[-1][0] == "Z", wire.errors_in(msgs)
            prefix = bytes(conn.buf)
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the gateway may have answered and closed (or reset) already
        chunks = [prefix]
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass  # reset: a TLS ClientHello on a gateway without TLS is dropped
        return b"".join(chunks)


def _messages(data: bytes) -> list[tuple[str, bytes]]:
    out, pos = [], 0
    while pos + 5 <= len(data):
        kind = chr(data[pos])
        length = struct.unpack_from(">i", data, pos + 1)[0]
        if length < 4 or pos + 1 + length > len(data):
            break
        out.append((kind, data[pos + 5:pos + 1 + length]))
        pos += 1 + length
    return out


def _alive(gw: Gateway) -> None:
    assert gw.proc is not None and gw.proc.poll() is None, f"gateway died:\n{gw.output()}"


def _serves(gw: Gateway) -> None:
    with psycopg.connect(gw.dsn(), autocommit=True, connect_timeout=15) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def _concurrent_clients(gw: Gateway, n: int) -> None:
    """C{n} clients at once must all get a backend: nothing leaked in the pool."""
    conns = []
    try:
        for _ in range(n):
            conns.append(psycopg.connect(gw.dsn(), autocommit=True, connect_timeout=15))
        for conn in conns:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        for conn in conns:
            conn.close()


# -- startup fuzzing ------------------------------------------------------------------

_good = wire.startup_packet("postgres", "postgres", application_name="fuzz")


@st.composite
def startup_inputs(draw: st.DrawFn) -> tuple[str, bytes]:
    """(kind, bytes): what the first bytes of a connection may look like when they are wrong."""
    kind = draw(st.sampled_from(["random", "truncated", "bad_length", "bad_code", "mutated"]))
    if kind == "random":
        return kind, draw(st.binary(min_size=1, max_size=300))
    if kind == "truncated":
        return kind, _good[:draw(st.integers(1, len(_good) - 1))]
    if kind == "bad_length":
        length = draw(st.one_of(st.integers(-2**31, 7), st.integers(10_005, 2**31 - 1)))
        return kind, struct.pack(">i", length) + _good[4:]
    if kind == "bad_code":
        code = draw(st.one_of(st.integers(0, 2**32 - 1), st.sampled_from(
            [80877103, 80877104, 80877102, 131072, 262144])))
        body = draw(st.binary(max_size=40))
        return kind, struct.pack(">iI", 8 + len(body), code) + body
    data = bytearray(_good)
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return kind, bytes(data)


FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None)


def test_fuzzed_startup_packets_then_good_clients_are_served(gateway: Gateway) -> None:
    """60 hostile openings, then pool-size many good clients at once: nothing leaked."""
    FUZZ(given(case=startup_inputs())(lambda case: _check_startup(gateway, case)))()
    _serves(gateway)
    _concurrent_clients(gateway, POOL)


def _check_startup(gateway: Gateway, case: tuple[str, bytes]) -> None:
    kind, payload = case
    answer = _exchange(gateway.port, payload)
    _alive(gateway)
    # Single-byte answers are the SSLRequest/GSSENCRequest replies ("N": no TLS here).
    while answer[:1] == b"N":
        answer = answer[1:]
    msgs = _messages(answer)
    assert sum(5 + len(body) for _, body in msgs) == len(answer), answer
    errors = [wire.parse_fields(body) for k, body in msgs if k == "E"]
    for fields in errors:
        assert fields["S"] == "FATAL" and len(fields["C"]) == 5, fields
    if kind == "truncated":
        # Incomplete but valid so far: the gateway waits; our EOF ends it quietly.
        assert answer == b""
    elif kind == "bad_length":
        # The length word alone condemns it: the gateway answers, PostgreSQL-style.
        assert [e["C"] for e in errors] == ["08P01"], answer
    elif kind in ("random", "bad_code"):
        # Refused by the gateway itself (or waited for, if still incomplete).
        assert all(e["C"] in STARTUP_CODES for e in errors), errors
    # "mutated" packets may be well-formed and reach PostgreSQL, which may
    # answer anything (unknown parameter, database...): any FATAL is fine.


# -- post-startup fuzzing ---------------------------------------------------------------

@st.composite
def session_inputs(draw: st.DrawFn) -> bytes:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(list(b"QPBEDSHCdcfFpX?\x00")))
        body = draw(st.binary(max_size=64))
        if draw(st.booleans()):
            length = len(body) + 4
        else:
            length = draw(st.integers(-2**31, 2**31 - 1))
        parts.append(bytes([kind]) + struct.pack(">i", length) + body)
    if draw(st.booleans()):
        parts.append(draw(st.binary(max_size=32)))
    return b"".join(parts)


def test_fuzzed_messages_after_startup_then_good_clients_are_served(gateway: Gateway) -> None:
    """60 sessions sending random messages, then pool-size many good clients at once."""
    FUZZ(given(payload=session_inputs())(lambda payload: _check_session(gateway, payload)))()
    _serves(gateway)
    _concurrent_clients(gateway, POOL)


def _check_session(gateway: Gateway, payload: bytes) -> None:
    answer = _exchange(gateway.port, payload, good_startup=True)
    _alive(gateway)
    # Whatever the server or the gateway said is well-framed PostgreSQL: the
    # gateway never injects bytes inside a server message.
    msgs = _messages(answer)
    assert sum(5 + len(body) for _, body in msgs) == len(answer)
    # A length the gateway cannot accept (< 4 or over maxMessageSize) is
    # answered by the gateway itself with 08P01.
    first_bad = _first_bad_length(payload)
    if first_bad is not None:
        codes = [wire.parse_fields(b)["C"] for k, b in msgs if k == "E"]
        assert codes and codes[-1] == "08P01", f"{codes} for a bad message length in {payload!r}"


def _first_bad_length(payload: bytes) -> int | None:
    """Offset of the first message header with an unacceptable length, if we get to one."""
    pos = 0
    while pos + 5 <= len(payload):
        if payload[pos] == ord("X"):
            return None  # Terminate: the server closes before reading further
        length = struct.unpack_from(">i", payload, pos + 1)[0]
        if length < 4 or length > MAX_MESSAGE:
            return pos
        pos += 1 + length
    return None


# -- oversized message ------------------------------------------------------------------

def test_oversized_message_closes_only_that_client(gateway: Gateway) -> None:
    with psycopg.connect(gateway.dsn(), autocommit=True) as other:
        other.execute("begin")
        other.execute("create temp table kept (v int)")
        other.execute("insert into kept values (1)")
        with wire.Conn.open(gateway.port) as bad:
            assert bad.startup()[-1][0] == "Z"
            # A Query whose header claims 2 MB (limit 1 MB): refused from the header alone.
            bad.send(b"Q" + struct.pack(">i", 2 * MAX_MESSAGE) + b"select 1")
            error = bad.read_error()
            assert error is not None and error["C"] == "08P01" and error["S"] == "FATAL", error
            assert bad.closed_by_peer()
        # The other session (mid-transaction) goes on.
        other.execute("insert into kept values (2)")
        assert other.execute("select sum(v) from kept").fetchone() == (3,)
        other.execute("commit")
    # Just under the limit is fine.
    with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
        text = "x" * (MAX_MESSAGE - 1000)
        assert conn.execute("select length(%s)", (text,), prepare=False).fetchone() == (len(text),)


def test_oversized_message_in_the_middle_of_a_stream(gateway: Gateway) -> None:
    """The bad header arrives after good pipelined messages, split across reads."""
    with wire.Conn.open(gateway.port) as bad:
        assert bad.startup()[-1][0] == "Z"
        bad.send(wire.query("select 41 + 1") + b"Q\x7f")
        answer = bad.until_ready()
        assert wire.data_rows(answer) == [["42"]]
        bad.send(b"\xff\xff\xff")
        error = bad.read_error()
        assert error is not None and error["C"] == "08P01", error
    _serves(gateway)


# -- a backend that dies and comes back ------------------------------------------------

@pytest.fixture
def flaky_gateway(fresh_pg: PgCluster) -> Iterator[Gateway]:
    config = base_config({"writes": fresh_pg.address}, pool_size=2)
    config["clients"]["default"]["writes"].update(
        {"retries": 1, "backoff": "100ms", "backoffMultiplier": 1, "dialTimeout": "2s"})
    config["pools"]["default"]["writes"]["waitTimeout"] = "5s"
    with Gateway(config) as gw:
        yield gw


def _startup_error(port: int) -> dict[str, str] | None:
    with wire.Conn.open(port) as raw:
        msgs = raw.startup()
        errors = wire.errors_in(msgs)
        return errors[0] if errors else None


@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_backend_killed_and_restarted(flaky_gateway: Gateway, fresh_pg: PgCluster,
                                      mode: str) -> None:
    gw = flaky_gateway
    pid = gw.proc.pid if gw.proc else 0
    connected = psycopg.connect(gw.dsn(), autocommit=True)
    raw = wire.Conn.open(gw.port)
    assert raw.startup()[-1][0] == "Z"
    try:
        assert connected.execute("select 1").fetchone() == (1,)
        # The gateway must not hold PostgreSQL's shutdown up: a socket it dialled
        # during the shutdown would keep the postmaster waiting for 60 s
        # (authentication_timeout).
        assert fresh_pg.stop(mode, timeout=20), "PostgreSQL could not shut down"
        # The connected clients learn it: the server's FATAL or our 08006.
        with pytest.raises(psycopg.OperationalError):
            connected.execute("select 1")
        raw.send(wire.query("select 1"))
        error = raw.read_error()
        assert error is None or error["C"] in ("08006", "57P01"), error
    finally:
        connected.close()
        raw.close()
    # New clients get 08006 while it is down (not a hang, not a silent close).
    seen: list[dict[str, str] | None] = []

    def refused() -> bool:
        seen.append(_startup_error(gw.port))
        return seen[-1] is not None and seen[-1]["C"] == "08006"

    wait_until(refused, timeout=30, what="08006 for new clients")
    assert "could not connect" in seen[-1]["M"] and "D" in seen[-1], seen[-1]
    # Back on the same port: new clients work again, same gateway process.
    fresh_pg.start()
    after: list[dict[str, str] | None] = []

    def works() -> bool:
        after.append(_startup_error(gw.port))
        return after[-1] is None

    wait_until(works, timeout=30, what="backend back")
    # Until the gateway notices, 08006; never a stale socket dialled while the
    # server was starting (57P03 "not yet accepting connections").
    assert all(e["C"] == "08006" for e in after[:-1]), after
    _serves(gw)
    _concurrent_clients(gw, 2)
    _alive(gw)
    assert gw.proc is not None and gw.proc.pid == pid


def test_concurrent_sessions_survive_a_client_that_vanishes(gateway: Gateway) -> None:
    """A client that resets mid-result frees its backend; others are untouched."""
    done = threading.Event()
    errors: list[BaseException] = []

    def steady() -> None:
        try:
            with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
                for i in range(50):
                    assert conn.execute("select %s::int", (i,)).fetchone() == (i,)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        done.set()

    thread = threading.Thread(target=steady)
    thread.start()
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=15)
        conn = wire.Conn(sock)
        assert conn.startup()[-1][0] == "Z"
        conn.send(wire.query("select repeat('y', 1000) from generate_series(1, 20000)"))
        assert conn.recv_message() is not None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
    thread.join(60)
    assert done.is_set() and not errors, errors
    _concurrent_clients(gateway, POOL)
