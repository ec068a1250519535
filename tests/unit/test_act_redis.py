"""
Tests for the RESP2 codec and the Redis connection protocol, without sockets.
"""

from __future__ import annotations

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from gatewayd.act.redis import RedisConnection, RedisUnavailable, parse_address
from gatewayd.act.resp import RedisError, RespParser, RespProtocolError, encode_command


def test_encode_command() -> None:
    assert encode_command("PUBLISH", b"ch", 12) == b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$2\r\n12\r\n"
    assert encode_command(b"") == b"*1\r\n$0\r\n\r\n"
    with pytest.raises(TypeError):
        encode_command(1.5)  # type: ignore[arg-type]


def test_parse_all_types() -> None:
    parser = RespParser()
    data = (b"+OK\r\n-ERR wrong\r\n:42\r\n$5\r\nhe\r\nl\r\n$-1\r\n*-1\r\n"
            b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$0\r\n\r\n")
    replies = parser.feed(data)
    assert replies[0] == b"OK"
    assert isinstance(replies[1], RedisError) and str(replies[1]) == "ERR wrong"
    assert replies[2:6] == [42, b"he\r\nl", None, None]
    assert replies[6] == [b"message", b"ch", b""]


def test_parse_byte_by_byte() -> None:
    parser = RespParser()
    data = b"*2\r\n$3\r\nabc\r\n:7\r\n+PONG\r\n"
    out = []
    for i in range(len(data)):
        out += parser.feed(data[i:i + 1])
    assert out == [[b"abc", 7], b"PONG"]


def test_large_bulk_in_chunks_not_reparsed() -> None:
    """A big bulk string waits for its bytes instead of being re-parsed per chunk."""
    parser = RespParser()
    body = b"x" * 100_000
    data = b"$%d\r\n%s\r\n" % (len(body), body)
    assert parser.feed(data[:10]) == []
    assert parser._need > 100_000
    out = []
    for i in range(10, len(data), 4096):
        out += parser.feed(data[i:i + 4096])
    assert out == [body]


@pytest.mark.parametrize("bad", [b"?x\r\n", b"$abc\r\n", b"$5\r\nhelloXX", b"*-5\r\n",
                                 b"$-2\r\n"])
def test_malformed(bad: bytes) -> None:
    with pytest.raises(RespProtocolError):
        RespParser().feed(bad)


def test_parse_address() -> None:
    assert parse_address("localhost:6379") == ("localhost", 6379)
    assert parse_address("redis") == ("redis", 6379)
    assert parse_address("[::1]:7000") == ("::1", 7000)
    assert parse_address(":6380") == ("localhost", 6380)
    for bad in ("h:x", "h:0", "h:70000"):
        with pytest.raises(ValueError):
            parse_address(bad)


def connected(**kwargs) -> tuple[RedisConnection, StringTransport]:
    protocol = RedisConnection(**kwargs)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_commands_matched_in_order() -> None:
    protocol, transport = connected()
    first = protocol.command("PUBLISH", "ch", b"one")
    second = protocol.command("PUBLISH", "ch", b"two")
    assert transport.value() == encode_command("PUBLISH", "ch", b"one") + encode_command(
        "PUBLISH", "ch", b"two")
    results: list = []
    first.addBoth(results.append)
    second.addBoth(results.append)
    protocol.dataReceived(b":1\r\n-ERR no")
    assert results == [1]
    protocol.dataReceived(b"\r\n")
    assert isinstance(results[1], Failure) and results[1].check(RedisError)


def test_pending_bounded() -> None:
    protocol, _ = connected(max_pending=2)
    protocol.command("PING")
    protocol.command("PING")
    failures: list = []
    protocol.command("PING").addErrback(failures.append)
    assert failures and failures[0].check(RedisUnavailable)


def test_messages_dispatched_and_loss_fails_pending() -> None:
    got: list = []
    protocol, _ = connected(on_message=lambda ch, payload: got.append((ch, payload)))
    subscribed = protocol.command("SUBSCRIBE", "ch")
    acks: list = []
    subscribed.addCallback(acks.append)
    protocol.dataReceived(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
                          b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\n{x}\r\n")
    assert acks == [[b"subscribe", b"ch", 1]]
    assert got == [(b"ch", b"{x}")]
    waiting = protocol.command("PING")
    errors: list = []
    waiting.addErrback(errors.append)
    protocol.connectionLost(Failure(ConnectionDone()))
    assert errors and errors[0].check(ConnectionDone)


def test_protocol_error_drops_connection() -> None:
    protocol, transport = connected()
    errors: list = []
    protocol.command("PING").addErrback(errors.append)
    protocol.dataReceived(b"!garbage\r\n")
    assert errors and errors[0].check(RespProtocolError)
    assert transport.disconnecting
