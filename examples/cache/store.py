# -*- test-case-name: tests.unit.test_cache_store -*-
"""
The cache's Redis access, in the two runtimes a plugin has.

In the gateway's process the plugin runs on the gateway's reactor and must
never block it: L{TwistedStore} speaks RESP over Twisted with gatewayd's own
client (L{gatewayd.act.redis}: C{ClientService} reconnects with backoff).
As a plugin process the SDK runs hooks on asyncio: L{AsyncioStore} speaks
the same RESP (L{gatewayd.act.resp}) over an asyncio stream and reconnects
on demand.  Both give every command a deadline (C{timeout}): a slow Redis
costs a query at most that long, then the query passes through uncached.

Commands fail fast (L{StoreUnavailable}) while there is no connection; the
caller counts and logs that, and the query passes through.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Protocol, Sequence
from urllib.parse import unquote, urlsplit

from twisted.internet.defer import CancelledError, Deferred, fail, gatherResults
from twisted.internet.defer import TimeoutError as DeferTimeout
from twisted.logger import Logger
from twisted.python.failure import Failure

# _RedisService is Act's connection management (ClientService + backoff); the
# cache reuses it rather than duplicating it (see docs/cache.md).
from gatewayd.act.redis import RedisConnection, _RedisService
from gatewayd.act.resp import RedisError, RespParser, encode_command

__all__ = ["AsyncioStore", "RedisURL", "Store", "StoreUnavailable", "TwistedStore", "parse_redis_url"]


class StoreUnavailable(Exception):
    """Redis cannot be reached right now (or did not answer in time)."""


@dataclass(frozen=True)
class RedisURL:
    host: str = "localhost"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_redis_url(url: str) -> RedisURL:
    """
    C{redis://[[user]:password@]host[:port][/db]} (GatewayD's C{REDIS_URL});
    empty means C{redis://localhost:6379}.  TLS (C{rediss://}) is not supported.

    @raise ValueError: not such a URL.
    """
    url = (url or "").strip() or "redis://localhost:6379/0"
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(f"REDIS_URL {url!r}: only redis:// URLs are supported")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"REDIS_URL {url!r}: bad port") from None
    path = parts.path.strip("/")
    try:
        db = int(path) if path else 0
    except ValueError:
        raise ValueError(f"REDIS_URL {url!r}: the path must be a database number") from None
    return RedisURL(parts.hostname or "localhost", port, db,
                    unquote(parts.username) if parts.username else None,
                    unquote(parts.password) if parts.password else None)


def _session_commands(url: RedisURL) -> list[tuple[Any, ...]]:
    """AUTH and SELECT to send first on every new connection."""
    commands: list[tuple[Any, ...]] = []
    if url.password is not None:
        commands.append((b"AUTH", url.username, url.password) if url.username
                        else (b"AUTH", url.password))
    if url.db:
        commands.append((b"SELECT", url.db))
    return commands


class Store(Protocol):
    """What the plugin needs from Redis; every method returns an awaitable."""

    def command(self, *args: bytes | str | int) -> Awaitable[Any]: ...

    def pipeline(self, commands: Sequence[tuple[bytes | str | int, ...]]) -> Awaitable[list[Any]]: ...

    def start(self) -> None: ...

    def stop(self) -> Any: ...


class _Service(_RedisService):
    """gatewayd's reconnecting Redis service, plus AUTH/SELECT on connect."""

    def __init__(self, reactor: Any, url: RedisURL, log: Any) -> None:
        super().__init__(reactor, url.address, log=log)
        self.url = url

    def _connected(self, connection: RedisConnection) -> None:
        for args in _session_commands(self.url):
            connection.command(*args).addErrback(lambda f: None)  # a failure shows on later commands
        super()._connected(connection)


class TwistedStore:
    """Redis on the gateway's reactor (in-process plugins)."""

    def __init__(self, reactor: Any, url: RedisURL, *, timeout: float = 1.0, log: Any = None) -> None:
        self._reactor = reactor
        self.timeout = timeout
        self._service = _Service(reactor, url, log if log is not None else Logger())
        self._initial: Deferred[Any] | None = None

    def start(self) -> None:
        """Connect (in the background); commands sent before the first attempt ends wait for it."""
        if self._service.running:
            return
        self._service.startService()
        client = self._service._client
        if client is not None:
            initial = client.whenConnected(failAfterFailures=1)
            self._initial = initial

            def settled(result: Any) -> None:
                self._initial = None

            initial.addBoth(settled)

    def stop(self) -> Any:
        return self._service.stopService() if self._service.running else None

    def command(self, *args: bytes | str | int) -> Deferred[Any]:
        connection = self._service.connection
        if connection is None and self._initial is not None:
            waiting: Deferred[Any] = Deferred()
            self._initial.addBoth(lambda result: waiting.callback(None))
            if self.timeout > 0:
                waiting.addTimeout(self.timeout, self._reactor)
            return waiting.addBoth(lambda _: self._retry(args))
        if connection is None:
            return fail(StoreUnavailable(f"not connected to Redis at {self._service.address}"))
        d = connection.command(*args)  # fails with RedisUnavailable when too many are outstanding
        if self.timeout > 0:
            d.addTimeout(self.timeout, self._reactor)
        return d.addErrback(_unavailable)

    def _retry(self, args: tuple[Any, ...]) -> Deferred[Any]:
        if self._service.connection is None:
            return fail(StoreUnavailable(f"not connected to Redis at {self._service.address}"))
        return self.command(*args)

    def pipeline(self, commands: Sequence[tuple[bytes | str | int, ...]]) -> Deferred[list[Any]]:
        """Send all commands at once; the replies in order (an error reply fails the lot)."""
        d = gatherResults([self.command(*c) for c in commands], consumeErrors=True)
        return d.addErrback(lambda f: f.value.subFailure if hasattr(f.value, "subFailure") else f)


def _unavailable(failure: Failure) -> Any:
    if failure.check(RedisError):
        return failure
    if failure.check(DeferTimeout, CancelledError):
        raise StoreUnavailable("Redis did not answer in time")
    raise StoreUnavailable(failure.getErrorMessage())


class AsyncioStore:
    """
    Redis on asyncio (plugin processes).  One connection; replies matched to
    commands in order; a lost connection fails what is outstanding and the
    next command reconnects (at most one attempt per C{retry} seconds).
    """

    def __init__(self, url: RedisURL, *, timeout: float = 1.0, retry: float = 1.0) -> None:
        self.url = url
        self.timeout = timeout
        self.retry = retry
        self._writer: asyncio.StreamWriter | None = None
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._last_attempt = 0.0

    def start(self) -> None:
        pass  # connects on first use

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()

    async def _connect(self) -> None:
        if self._writer is not None:
            return
        if self._connecting is not None:
            await asyncio.shield(self._connecting)
            if self._writer is None:
                raise StoreUnavailable(f"cannot connect to Redis at {self.url.address}")
            return
        now = time.monotonic()
        if now - self._last_attempt < self.retry:
            raise StoreUnavailable(f"Redis at {self.url.address} is unreachable (retrying)")
        self._last_attempt = now
        self._connecting = asyncio.get_running_loop().create_future()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.url.host, self.url.port), self.timeout)
        except (OSError, asyncio.TimeoutError) as e:
            self._connecting.set_result(None)
            self._connecting = None
            raise StoreUnavailable(f"cannot connect to Redis at {self.url.address}: {e}") from None
        self._writer = writer
        self._reader_task = asyncio.ensure_future(self._read(reader, writer))
        self._connecting.set_result(None)
        self._connecting = None
        for args in _session_commands(self.url):
            self._send(args)

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = RespParser()
        error: BaseException = StoreUnavailable("connection to Redis lost")
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for reply in parser.feed(data):
                    if not self._pending:
                        continue
                    future = self._pending.popleft()
                    if future.done():
                        continue
                    if isinstance(reply, RedisError):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        except Exception as e:  # noqa: BLE001 - any failure drops the connection
            error = StoreUnavailable(f"Redis connection failed: {e}")
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            pending, self._pending = self._pending, deque()
            for future in pending:
                if not future.done():
                    future.set_exception(error)

    def _send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        assert self._writer is not None
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(future)
        self._writer.write(encode_command(*args))
        return future

    async def command(self, *args: bytes | str | int) -> Any:
        return (await self.pipeline([args]))[0]

    async def pipeline(self, commands: Sequence[tuple[bytes | str | int, ...]]) -> list[Any]:
        await self._connect()
        futures = [self._send(tuple(c)) for c in commands]
        try:
            done = await asyncio.wait_for(asyncio.gather(*futures), self.timeout)
        except asyncio.TimeoutError:
            # a Redis that stops answering: drop the connection, replies cannot be matched
            if self._writer is not None:
                self._writer.close()
            raise StoreUnavailable("Redis did not answer in time") from None
        return list(done)
