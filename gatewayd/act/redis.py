# -*- test-case-name: tests.unit.test_act_redis,tests.integration.test_act_redis -*-
"""
A minimal Redis client on Twisted for Act's async actions: PUBLISH from the
gateway, SUBSCRIBE in consumers.  See L{gatewayd.act.resp} for why it is ours.

Both ends are services built on C{ClientService}, which reconnects with
exponential backoff; a subscriber re-subscribes on every new connection.
Publishing never buffers without bound: while Redis is unreachable (or more
than C{max_pending} replies are outstanding) a publish fails at once, and
the caller logs it, like GatewayD whose go-redis publish just errors.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from gatewayd.act.resp import RedisError, RespParser, RespProtocolError, encode_command
from gatewayd.hooks.ratelimit import RateLimitedLog

__all__ = [
    "RedisConnection",
    "RedisError",
    "RedisPublisher",
    "RedisSubscriber",
    "RedisUnavailable",
    "parse_address",
]

DEFAULT_PORT = 6379


class RedisUnavailable(Exception):
    """No connection to Redis right now, or too many replies outstanding."""


def parse_address(address: str) -> tuple[str, int]:
    """C{"host:port"} / C{"[v6]:port"} / C{"host"} -> (host, port)."""
    address = address.strip()
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest.lstrip(":")
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    else:
        host, port = address, ""
    if not host:
        host = "localhost"
    try:
        number = int(port) if port else DEFAULT_PORT
    except ValueError:
        raise ValueError(f"invalid Redis address {address!r}: bad port") from None
    if not 0 < number < 65536:
        raise ValueError(f"invalid Redis address {address!r}: port out of range")
    return host, number


class RedisConnection(Protocol):
    """
    One Redis connection.  Replies are matched to commands in order; in
    subscribed mode, C{message} pushes go to C{on_message(channel, payload)}.
    """

    def __init__(self, on_message: Callable[[bytes, bytes], None] | None = None,
                 max_pending: int = 10_000) -> None:
        self._parser = RespParser()
        self._pending: deque[Deferred[Any]] = deque()
        self._on_message = on_message
        self.max_pending = max_pending
        self.connected_callback: Callable[[RedisConnection], None] | None = None
        self.lost_callback: Callable[[RedisConnection], None] | None = None

    @property
    def pending(self) -> int:
        """Commands sent and not answered yet."""
        return len(self._pending)

    def connectionMade(self) -> None:  # noqa: N802 - Twisted API
        if self.connected_callback is not None:
            self.connected_callback(self)

    def command(self, *args: bytes | str | int) -> Deferred[Any]:
        """Send one command. @return: Deferred firing with its reply (failing with L{RedisError})."""
        if self.transport is None or len(self._pending) >= self.max_pending:
            return fail(RedisUnavailable(f"{len(self._pending)} Redis replies outstanding"))
        d: Deferred[Any] = Deferred()
        self._pending.append(d)
        self.transport.write(encode_command(*args))
        return d

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted API
        try:
            replies = self._parser.feed(data)
        except RespProtocolError as e:
            self._fail_all(Failure(e))
            if self.transport is not None:
                self.transport.loseConnection()
            return
        for reply in replies:
            if (self._on_message is not None and type(reply) is list and len(reply) == 3
                    and reply[0] == b"message"):
                self._on_message(reply[1], reply[2])
                continue
            if not self._pending:
                continue  # an unsolicited push we do not use
            d = self._pending.popleft()
            if isinstance(reply, RedisError):
                d.errback(reply)
            else:
                d.callback(reply)

    def connectionLost(self, reason: Failure = Failure(ConnectionLost())) -> None:  # noqa: N802,B008
        self._fail_all(reason)
        if self.lost_callback is not None:
            self.lost_callback(self)

    def _fail_all(self, reason: Failure) -> None:
        pending, self._pending = self._pending, deque()
        for d in pending:
            d.errback(reason)


class _RedisService(Service):
    """Shared connection management for the publisher and the subscriber."""

    def __init__(self, reactor: Any, address: str, *, log: Logger | None = None) -> None:
        self._reactor = reactor
        self.address = address
        self._host, self._port = parse_address(address)
        self._log = log if log is not None else Logger()
        self._warn = RateLimitedLog(self._log, reactor, interval=30.0)
        self.connection: RedisConnection | None = None
        self._client: ClientService | None = None

    def _make_protocol(self) -> RedisConnection:
        return RedisConnection()

    def _connected(self, connection: RedisConnection) -> None:
        self.connection = connection
        self._log.info("Connected to Redis at {address}", address=self.address)

    def _lost(self, connection: RedisConnection) -> None:
        if self.connection is connection:
            self.connection = None
            if self.running:
                self._warn.emit("lost", LogLevel.warn, "Lost the connection to Redis at {address}",
                                address=self.address)

    def startService(self) -> None:  # noqa: N802 - Twisted API
        super().startService()

        def build(addr: Any) -> RedisConnection:
            protocol = self._make_protocol()
            protocol.connected_callback = self._connected
            protocol.lost_callback = self._lost
            return protocol

        factory = Factory.forProtocol(RedisConnection)
        factory.buildProtocol = build  # type: ignore[method-assign]
        endpoint = HostnameEndpoint(self._reactor, self._host, self._port, timeout=10)
        self._client = ClientService(endpoint, factory, retryPolicy=backoffPolicy(maxDelay=30.0),
                                     clock=self._reactor)
        self._client.startService()
        self._client.whenConnected(failAfterFailures=1).addErrback(self._first_failure)

    def _first_failure(self, failure: Failure) -> None:
        # Like GatewayD: an unreachable Redis at startup is logged, not fatal.
        self._warn.emit("connect", LogLevel.warn,
                        "Cannot connect to Redis at {address} (will keep retrying): {error}",
                        address=self.address, error=failure.getErrorMessage())

    def stopService(self) -> Deferred[None] | None:  # noqa: N802 - Twisted API
        super().stopService()
        if self._client is None:
            return None
        client, self._client = self._client, None
        return client.stopService()


class RedisPublisher(_RedisService):
    """Publishes to one channel (Act's C{actionRedis.channel})."""

    def __init__(self, reactor: Any, address: str, channel: str, *, log: Logger | None = None,
                 max_pending: int = 10_000) -> None:
        super().__init__(reactor, address, log=log)
        self.channel = channel
        self.max_pending = max_pending

    def _make_protocol(self) -> RedisConnection:
        return RedisConnection(max_pending=self.max_pending)

    def publish(self, payload: bytes) -> Deferred[int]:
        """
        PUBLISH C{payload}. @return: Deferred firing with the number of
        subscribers that got it, or failing with L{RedisUnavailable} at once
        when there is no connection.
        """
        connection = self.connection
        if connection is None:
            return fail(RedisUnavailable(f"not connected to Redis at {self.address}"))
        return connection.command(b"PUBLISH", self.channel, payload)


class RedisSubscriber(_RedisService):
    """Subscribes to one channel and hands each message's payload to C{handler}."""

    def __init__(self, reactor: Any, address: str, channel: str,
                 handler: Callable[[bytes], Any], *, log: Logger | None = None) -> None:
        super().__init__(reactor, address, log=log)
        self.channel = channel
        self._handler = handler
        self._subscribed: list[Deferred[None]] = []
        self.subscribed = False

    def _make_protocol(self) -> RedisConnection:
        return RedisConnection(on_message=self._message)

    def _connected(self, connection: RedisConnection) -> None:
        super()._connected(connection)
        connection.command(b"SUBSCRIBE", self.channel).addCallbacks(
            self._now_subscribed, self._subscribe_failed)

    def _lost(self, connection: RedisConnection) -> None:
        if self.connection is connection:
            self.subscribed = False
        super()._lost(connection)

    def _now_subscribed(self, reply: Any) -> None:
        self.subscribed = True
        self._log.info("Subscribed to Redis channel {channel}", channel=self.channel)
        waiting, self._subscribed = self._subscribed, []
        for d in waiting:
            d.callback(None)

    def _subscribe_failed(self, failure: Failure) -> None:
        self._warn.emit("subscribe", LogLevel.error, "Cannot subscribe to {channel}: {error}",
                        channel=self.channel, error=failure.getErrorMessage())

    def when_subscribed(self) -> Deferred[None]:
        """Fires once subscribed (at once if already); for tests and startup ordering."""
        if self.subscribed:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._subscribed.append(d)
        return d

    def _message(self, channel: bytes, payload: bytes) -> None:
        try:
            self._handler(payload)
        except Exception:  # noqa: BLE001 - one bad message must not stop the consumer
            self._log.failure("Redis message handler failed")
