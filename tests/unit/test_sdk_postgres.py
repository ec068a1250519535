"""
Tests for L{gatewayd.sdk.postgres} and L{gatewayd.hooks.replies}, with real
protocol bytes built by L{gatewayd.pgwire}.
"""

from __future__ import annotations

import pytest

from gatewayd import pgwire
from gatewayd.hooks.replies import awaiting_sync, error_reply, terminated_reply
from gatewayd.pgwire import MessageFramer, decode_server_message
from gatewayd.sdk.postgres import (
    QueryParseError,
    build_result,
    client_messages,
    error_response_bytes,
    get_queries,
    get_query,
    get_tables,
    is_startup,
    server_messages,
    startup_packet,
)
from gatewayd.pgwire.startup import SSLRequest, StartupMessage


def decoded(data: bytes) -> list[dict]:
    framer = MessageFramer()
    out = [decode_server_message(m) for m in framer.feed(data)]
    assert framer.buffered == 0, "trailing partial message"
    return out


def types(data: bytes) -> list[str]:
    return [m["type"] for m in decoded(data)]


EXTENDED = (pgwire.parse("", "SELECT $1::int") + pgwire.bind("", "", params=[b"1"])
            + pgwire.describe("P") + pgwire.execute() + pgwire.sync())


def test_get_query_simple_and_extended() -> None:
    assert get_query(pgwire.query("select 1")) == "select 1"
    assert get_query(EXTENDED) == "SELECT $1::int"
    assert get_queries(pgwire.query("a") + pgwire.parse("s1", "b") + pgwire.query("c")) == ["a", "b", "c"]
    assert get_query(pgwire.sync()) is None
    assert get_query(b"") is None and get_query(None) is None
    startup = pgwire.startup_message({"user": "u", "database": "d"})
    assert get_query(startup) is None
    # a truncated trailing message is ignored, not an error
    assert get_query(pgwire.query("select 1")[:-3]) is None


def test_client_and_server_messages() -> None:
    assert [m["type"] for m in client_messages(EXTENDED)] == ["P", "B", "D", "E", "S"]
    response = (pgwire.row_description([("n", 23)]) + pgwire.data_row([b"1"])
                + pgwire.command_complete("SELECT 1") + pgwire.ready_for_query(b"I"))
    assert [m["type"] for m in server_messages(response)] == ["T", "D", "C", "Z"]
    assert server_messages(None) == []


def test_startup_detection() -> None:
    startup = pgwire.startup_message({"user": "alice", "database": "shop"})
    assert is_startup(startup) and not is_startup(pgwire.query("x"))
    packet = startup_packet(startup)
    assert isinstance(packet, StartupMessage) and packet.database == "shop"
    assert isinstance(startup_packet(pgwire.ssl_request()), SSLRequest)
    assert startup_packet(pgwire.query("x")) is None


def test_get_tables() -> None:
    sql = ("WITH recent AS (SELECT * FROM orders WHERE ts > now()) "
           "SELECT * FROM recent JOIN sales.customers c ON true, "
           "(SELECT 1 FROM items WHERE EXISTS (SELECT 1 FROM stock)) q")
    assert get_tables(sql) == ["orders", "customers", "items", "stock"]
    assert get_tables(sql, qualified=True) == ["orders", "sales.customers", "items", "stock"]
    assert get_tables("DROP TABLE users, public.orders") == ["users", "orders"]
    assert get_tables("TRUNCATE a, b; INSERT INTO c SELECT * FROM d") == ["a", "b", "c", "d"]
    assert get_tables("UPDATE u SET x = 1 WHERE id IN (SELECT id FROM v)") == ["u", "v"]
    assert get_tables("ALTER TABLE t ADD COLUMN c int") == ["t"]
    assert get_tables("SELECT 1") == []
    assert get_tables("DROP INDEX idx") == []
    with pytest.raises(QueryParseError, match="syntax error"):
        get_tables("SELEC 1")


def test_error_response_bytes_simple() -> None:
    data = error_response_bytes("nope", "42501", detail="because", request=pgwire.query("drop table x"))
    messages = decoded(data)
    assert [m["type"] for m in messages] == ["E", "Z"]
    assert messages[0]["fields"] == {"S": "ERROR", "V": "ERROR", "C": "42501", "M": "nope", "D": "because"}
    assert types(error_response_bytes("x")) == ["E", "Z"]


def test_error_replies_follow_the_protocol() -> None:
    error = pgwire.error_response("42501", "no")
    # two simple queries in one burst: one error and RFQ each
    assert types(error_reply(pgwire.query("a") + pgwire.query("b"), error)) == ["E", "Z", "E", "Z"]
    # extended batch with Sync: one error, one RFQ
    assert types(error_reply(EXTENDED, error)) == ["E", "Z"]
    # two pipelined batches: each fails
    assert types(error_reply(EXTENDED + EXTENDED, error)) == ["E", "Z", "E", "Z"]
    # batch without Sync yet (driver sent Flush): error now, RFQ comes with the Sync
    unsynced = pgwire.parse("", "select 1") + pgwire.describe("S") + pgwire.flush()
    assert types(error_reply(unsynced, error)) == ["E"]
    assert awaiting_sync(unsynced) and not awaiting_sync(EXTENDED)
    assert not awaiting_sync(pgwire.query("x")) and not awaiting_sync(None)
    # a lone Sync still gets the error and the RFQ
    assert types(error_reply(pgwire.sync(), error)) == ["E", "Z"]
    # transaction status is the caller's
    assert decoded(error_reply(pgwire.query("a"), error, b"T"))[1]["status"] == "T"


def test_error_reply_startup_is_fatal() -> None:
    data = terminated_reply(pgwire.startup_message({"user": "u"}))
    [message] = decoded(data)
    assert message["fields"]["S"] == "FATAL" and message["fields"]["V"] == "FATAL"
    assert message["fields"]["C"] == "42000"


def test_terminated_reply_never_sends_terminate() -> None:
    for request in (None, pgwire.query("x"), EXTENDED):
        data = terminated_reply(request)
        assert "X" not in types(data)
        assert types(data)[-1] == "Z"


def test_build_result_simple() -> None:
    data = build_result(["name", ("n", 23)], [("a", 1), (None, True)],
                        request=pgwire.query("select name, n from t"))
    messages = decoded(data)
    assert [m["type"] for m in messages] == ["T", "D", "D", "C", "Z"]
    assert [f["name"] for f in messages[0]["fields"]] == ["name", "n"]
    assert messages[0]["fields"][1]["type_oid"] == 23
    assert messages[1]["values"] == [b"a", b"1"]
    assert messages[2]["values"] == [None, b"t"]
    assert messages[3]["tag"] == "SELECT 2"
    assert types(build_result(["x"], [], tag="SHOW")) == ["T", "C", "Z"]


def test_build_result_extended() -> None:
    data = build_result(["n"], [("1",)], request=EXTENDED, status=b"T")
    messages = decoded(data)
    assert [m["type"] for m in messages] == ["1", "2", "T", "D", "C", "Z"]
    assert messages[-1]["status"] == "T"
    statement = pgwire.parse("s", "select 1") + pgwire.describe("S", "s") + pgwire.sync()
    assert types(build_result(["n"], [], request=statement)) == ["1", "t", "T", "Z"]


def test_with_ready_status() -> None:
    from gatewayd.hooks.replies import with_ready_status

    reply = terminated_reply(pgwire.query("a") + pgwire.query("b"))
    patched = with_ready_status(reply, b"E")
    assert [m.get("status") for m in decoded(patched) if m["type"] == "Z"] == ["E", "E"]
    assert [m["type"] for m in decoded(patched)] == ["E", "Z", "E", "Z"]
    assert with_ready_status(b"garbage!", b"E") == b"garbage!"
    assert with_ready_status(reply[:-2], b"E") == reply[:-2]
    with pytest.raises(ValueError):
        with_ready_status(reply, b"X")
