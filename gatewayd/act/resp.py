# -*- test-case-name: tests.unit.test_act_redis -*-
"""
RESP2, the Redis protocol, sans-IO: command encoding and an incremental reply parser.

Act needs three commands (PING, PUBLISH, SUBSCRIBE).  The Python Redis
clients do not fit a Twisted gateway: redis-py's asyncio client needs the
asyncio reactor, and txredisapi imports the global reactor at import time
(which breaks C{twistd --reactor=...} and embedding).  RESP2 for these
commands is a few dozen lines, so we own them (see docs/plugins.md).
"""

from __future__ import annotations

from typing import Any

__all__ = ["RedisError", "RespParser", "RespProtocolError", "encode_command"]

#: Redis' own limit for a bulk string.
MAX_BULK = 512 * 1024 * 1024
#: Generous bound for an array's element count (replies here are tiny).
MAX_ARRAY = 1024 * 1024


class RedisError(Exception):
    """An error reply (C{-ERR ...}) from Redis."""


class RespProtocolError(Exception):
    """The server sent bytes that are not RESP2; the connection must be dropped."""


class _Incomplete(Exception):
    """More bytes are needed; C{need} is the buffer size worth waiting for."""

    def __init__(self, need: int) -> None:
        self.need = need


def _arg(value: bytes | str | int) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode("ascii")
    raise TypeError(f"cannot send {type(value).__name__} to Redis")


def encode_command(*args: bytes | str | int) -> bytes:
    """A command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = _arg(arg)
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


class RespParser:
    """
    Feed bytes, get complete replies.  Error replies come out as
    L{RedisError} instances (values, not raised), so that a reply queue can
    match them to their command.  A reply split across many chunks is not
    re-parsed until enough bytes for it have arrived: linear, not quadratic.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._need = 0

    def feed(self, data: bytes) -> list[Any]:
        """
        @return: the replies completed by C{data}, in order.
        @raise RespProtocolError: malformed input.
        """
        buf = self._buffer
        buf += data
        if len(buf) < self._need:
            return []
        replies: list[Any] = []
        pos = 0
        while pos < len(buf):
            try:
                value, pos2 = self._parse(buf, pos)
            except _Incomplete as incomplete:
                self._need = incomplete.need - pos
                break
            replies.append(value)
            pos = pos2
        else:
            self._need = 0
        del buf[:pos]
        return replies

    def _line(self, buf: bytearray, pos: int) -> tuple[bytes, int]:
        end = buf.find(b"\r\n", pos)
        if end < 0:
            if len(buf) - pos > 64 * 1024:
                raise RespProtocolError("reply header line too long")
            raise _Incomplete(len(buf) + 1)
        return bytes(buf[pos:end]), end + 2

    def _int(self, raw: bytes) -> int:
        try:
            return int(raw)
        except ValueError:
            raise RespProtocolError(f"bad integer {raw[:20]!r}") from None

    def _parse(self, buf: bytearray, pos: int) -> tuple[Any, int]:
        kind = buf[pos]
        line, pos = self._line(buf, pos + 1)
        if kind == 0x2B:  # +
            return line, pos
        if kind == 0x2D:  # -
            return RedisError(line.decode("utf-8", "replace")), pos
        if kind == 0x3A:  # :
            return self._int(line), pos
        if kind == 0x24:  # $
            length = self._int(line)
            if length == -1:
                return None, pos
            if not 0 <= length <= MAX_BULK:
                raise RespProtocolError(f"bad bulk length {length}")
            end = pos + length
            if len(buf) < end + 2:
                raise _Incomplete(end + 2)
            if buf[end:end + 2] != b"\r\n":
                raise RespProtocolError("bulk string not terminated by CRLF")
            return bytes(buf[pos:end]), end + 2
        if kind == 0x2A:  # *
            count = self._int(line)
            if count == -1:
                return None, pos
            if not 0 <= count <= MAX_ARRAY:
                raise RespProtocolError(f"bad array length {count}")
            items = []
            for _ in range(count):
                if pos >= len(buf):
                    raise _Incomplete(pos + 1)
                item, pos = self._parse(buf, pos)
                items.append(item)
            return items, pos
        raise RespProtocolError(f"unknown reply type {bytes([kind])!r}")
