# -*- test-case-name: tests.unit.test_pool -*-
"""
A block's pool of pre-dialled backend connections.

Session pooling as GatewayD does it: each client holds one backend socket for its
whole session (the client authenticates through it, so it carries that user's
session); when the client leaves, the socket is closed and a fresh one dialled.
What we add:

  - clients queue FIFO when the pool is exhausted, up to C{waitTimeout}, then get
    SQLSTATE 53300 (GatewayD closes the socket silently);
  - a backend that is down never stops the gateway: dials retry with backoff for
    ever, clients get 08006 at once while no connection can be had, and the pool
    refills by itself when the server is back;
  - idle sockets are recycled before PostgreSQL's C{authentication_timeout} kills
    them, and never handed out when close to that age;
  - when the server closes a socket itself (an idle one, or one under a running
    session: it is shutting down, or its C{authentication_timeout} passed) the
    pool closes its idle sockets, stops pre-dialling and dials per client until
    a session through a new socket reaches ReadyForQuery.  A socket dialled
    while PostgreSQL shuts down becomes a "dead-end" child that the postmaster
    waits for until C{authentication_timeout} (60 s) unless it gets a startup
    packet or is closed; one dialled while it starts up answers the client's
    startup with 57P03 long after the server is ready.  A client's own dial is
    answered at once with the server's current state.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gatewayd.backend import BackendConnection
from gatewayd.config.schema import Client, Pool, Proxy
from gatewayd.errors import BackendUnavailable, PoolExhausted
from gatewayd.interfaces import IBackendPool
from gatewayd.stats import BlockStats

#: A socket older than this fraction of healthCheckPeriod is recycled, not handed out.
MAX_AGE_FRACTION = 0.9
#: GatewayD's caps: multiplier <= 10 and one sleep <= 60 s unless disableBackoffCaps.
MAX_MULTIPLIER = 10.0
MAX_BACKOFF = 60.0


def backoff_delay(config: Client, failures: int) -> float:
    """
    Seconds to wait after the C{failures}-th consecutive failed dial (1-based).

    GatewayD computes C{backoff * int(multiplier ** retry)}, truncating the power
    first (so 1.5 behaves like 1); we do not truncate.
    """
    multiplier = max(1.0, config.backoff_multiplier)
    base = config.backoff or 1.0
    if config.disable_backoff_caps:
        return base * multiplier ** (failures - 1)
    multiplier = min(multiplier, MAX_MULTIPLIER)
    return min(base * multiplier ** min(failures - 1, 64), MAX_BACKOFF)


class _Waiter:
    __slots__ = ("deferred", "timer", "since")

    def __init__(self, deferred: defer.Deferred[BackendConnection], since: float) -> None:
        self.deferred = deferred
        self.timer: Any = None
        self.since = since


@implementer(IBackendPool)
class BackendPool:
    """
    @param dial: makes one connection attempt, e.g. L{BackendTarget.dial}.
    """

    def __init__(self, clock: Any, dial: Callable[[], defer.Deferred[BackendConnection]],
                 client: Client, pool: Pool, proxy: Proxy, stats: BlockStats,
                 log: Logger | None = None) -> None:
        self.clock = clock
        self._dial = dial
        self.client_config = client
        self.size = max(1, pool.size)
        self.wait_timeout = pool.wait_timeout
        self.max_waiting = pool.max_waiting
        self.check_period = proxy.health_check_period or 60.0
        self.stats = stats
        self.log = log or Logger()
        self._idle: deque[BackendConnection] = deque()
        self._busy: set[BackendConnection] = set()
        self._waiters: deque[_Waiter] = deque()
        self._dialing = 0
        self._failures = 0
        self._backoff: Any = None
        self._recycler: task.LoopingCall | None = None
        self._running = False
        #: None until the first dial settles; then whether the server answered last time.
        self._healthy: bool | None = None
        #: the server dropped a socket: dial per client until a session proves it is up
        self._lazy = False
        self._lazy_since = 0.0
        self.last_error = ""
        #: called with each connection of the first fill (GatewayD's OnNewClient)
        self.on_first_fill: Callable[[BackendConnection], None] | None = None
        self._first_fill = self.size
        stats.pool = self

    # -- IBackendPool --------------------------------------------------------------------

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    @property
    def busy_count(self) -> int:
        return len(self._busy)

    @property
    def waiting_count(self) -> int:
        return len(self._waiters)

    @property
    def healthy(self) -> bool:
        return bool(self._healthy) or bool(self._idle) or bool(self._busy)

    @property
    def starting(self) -> bool:
        """True until the first dial has succeeded or failed."""
        return self._healthy is None

    def start(self) -> None:
        self._running = True
        self._fill()
        self._recycler = task.LoopingCall(self._recycle_idle)
        self._recycler.clock = self.clock
        self._recycler.start(self.check_period, now=False)

    def stop(self) -> defer.Deferred[None]:
        self._running = False
        if self._recycler is not None and self._recycler.running:
            self._recycler.stop()
        if self._backoff is not None and self._backoff.active():
            self._backoff.cancel()
        self._fail_waiters(BackendUnavailable("the gateway is shutting down"))
        closing = [self._close_deferred(c) for c in list(self._idle) + list(self._busy)]
        self._idle.clear()
        return defer.DeferredList(closing).addCallback(lambda _: None)

    def acquire(self, timeout: float | None = None) -> defer.Deferred[BackendConnection]:
        if self._lazy and any(self._proves_up(c) for c in self._busy):
            self._lazy = False
        now = self.clock.seconds()
        max_age = self.check_period * MAX_AGE_FRACTION
        while self._idle:
            conn = self._idle.popleft()
            if conn.usable and now - conn.created < max_age:
                self._busy.add(conn)
                self.stats.pool_wait.observe(0.0)
                return defer.succeed(conn)
            self._discard(conn)
            self._fill()
        if not self.healthy and not self.starting:
            return defer.fail(BackendUnavailable(self.last_error or "backend unavailable"))
        if len(self._waiters) >= self.max_waiting:
            self.stats.pool_exhausted += 1
            return defer.fail(PoolExhausted("too many clients waiting"))
        waiter = _Waiter(defer.Deferred(lambda d: self._cancel_waiter(waiter)), now)
        wait = self.wait_timeout if timeout is None else timeout
        waiter.timer = self.clock.callLater(wait, self._waiter_timed_out, waiter)
        self._waiters.append(waiter)
        self._fill()
        return waiter.deferred

    def release(self, connection: BackendConnection) -> None:
        """The session is over: that socket carried the client's session, so close it."""
        if connection in self._busy:
            self._busy.discard(connection)
            self.stats.server_connections -= 1
            session = connection.session
            if getattr(session, "server_closed", False) and getattr(session, "ready", False):
                # the server closed it under a running session (not a failed login)
                self._server_dropped()
            elif self._lazy and self._proves_up(connection):
                self._lazy = False
        connection.on_lost = None
        connection.close()
        self._fill()

    def _discard(self, conn: BackendConnection) -> None:
        """Close a socket this pool counted (idle or fresh) without re-dialling from its loss."""
        conn.on_lost = None
        conn.close()
        self.stats.server_connections -= 1

    # -- dialling ------------------------------------------------------------------------

    def _fill(self) -> None:
        if not self._running or (self._backoff is not None and self._backoff.active()):
            return
        missing = self.size - len(self._idle) - len(self._busy) - self._dialing
        if self._healthy is False:
            missing = min(missing, 1 - self._dialing)  # one probe at a time while down
        elif self._lazy:
            missing = min(missing, len(self._waiters) - self._dialing)  # per client
        for _ in range(max(0, missing)):
            self._dialing += 1
            self._dial().addCallbacks(self._dialed, self._dial_failed)

    def _dialed(self, conn: BackendConnection) -> None:
        self._dialing -= 1
        if not self._running:
            conn.close()
            return
        if self._healthy is False:
            self.log.info("backend {address} is back", address=self.client_config.address)
        self._healthy = True
        self._failures = 0
        self.stats.server_connections += 1
        conn.on_lost = self._lost
        if self._first_fill and self.on_first_fill is not None:
            self._first_fill -= 1
            self.on_first_fill(conn)
        while self._waiters:
            waiter = self._waiters.popleft()
            waiter.timer.cancel()
            if not waiter.deferred.called:
                self._busy.add(conn)
                self.stats.pool_wait.observe(self.clock.seconds() - waiter.since)
                waiter.deferred.callback(conn)
                break
        else:
            if self._lazy:  # a probe nobody waits for: do not keep it idle (see module doc)
                self._discard(conn)
            else:
                self._idle.append(conn)
        self._fill()

    def _dial_failed(self, failure: Failure) -> None:
        self._dialing -= 1
        if not self._running:
            return
        self._failures += 1
        self.stats.backend_dial_failures += 1
        self.last_error = failure.getErrorMessage()
        retries = max(0, self.client_config.retries)
        delay = backoff_delay(self.client_config, self._failures)
        if self._failures > retries and self._healthy is not False:
            self._healthy = False
            self.log.error(
                "backend {address} unavailable after {n} attempts: {why}; retrying every "
                "{delay:.1f}s at most", address=self.client_config.address, n=self._failures,
                why=self.last_error, delay=delay)
        if self._healthy is False and not self._idle and not self._busy:
            self._fail_waiters(BackendUnavailable(self.last_error))
        if self._backoff is None or not self._backoff.active():
            self._backoff = self.clock.callLater(delay, self._fill)

    def _lost(self, conn: BackendConnection, reason: Failure) -> None:
        if conn in self._idle:
            self._idle.remove(conn)
            self.stats.server_connections -= 1
            if self.clock.seconds() - conn.created < self.check_period * MAX_AGE_FRACTION:
                # Not an old socket meeting authentication_timeout: the server may be stopping.
                self._server_dropped()
        elif conn in self._busy:  # the session also learns it; it will call release()
            return
        self._fill()

    def _server_dropped(self) -> None:
        """
        The server closed one of our sockets: it may be shutting down.  Dial per
        client from now on, and close what we hold idle: those sockets are about
        to be closed by the server anyway, or were dialled during its shutdown
        (dead-end children it would wait for; see the module docstring).
        """
        self._lazy_since = self.clock.seconds()
        if not self._lazy:
            self._lazy = True
            self.log.info("backend {address} closed a connection; dialling per client until a "
                          "session succeeds", address=self.client_config.address)
        while self._idle:
            self._discard(self._idle.popleft())

    def _proves_up(self, conn: BackendConnection) -> bool:
        """C{conn} was dialled after the server dropped us and its session reached ReadyForQuery."""
        return conn.created >= self._lazy_since and bool(getattr(conn.session, "ready", False))

    # -- recycling and waiters -------------------------------------------------------------

    def _recycle_idle(self) -> None:
        """
        Close and re-dial idle sockets older than the period: PostgreSQL drops
        unauthenticated sockets after C{authentication_timeout} (60 s by default).
        """
        self.stats.proxy_health_checks += 1
        now = self.clock.seconds()
        for conn in list(self._idle):
            if now - conn.created >= self.check_period * 0.5 or not conn.usable:
                self._idle.remove(conn)
                self._discard(conn)
        if self._lazy and not self._waiters and now - self._lazy_since >= self.check_period:
            # A quiet period since the server last dropped us: pre-dial again, so
            # a restarted server gets clients back (a refused dial marks it down).
            self._lazy = False
        self._fill()

    def _waiter_timed_out(self, waiter: _Waiter) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            return
        self.stats.pool_exhausted += 1
        waiter.deferred.errback(PoolExhausted(
            f"no backend connection free within {self.wait_timeout:g}s (pool size {self.size})"))

    def _cancel_waiter(self, waiter: _Waiter) -> None:
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass

    def _fail_waiters(self, exc: Exception) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if waiter.timer is not None and waiter.timer.active():
                waiter.timer.cancel()
            if not waiter.deferred.called:
                waiter.deferred.errback(exc)

    @staticmethod
    def _close_deferred(conn: BackendConnection) -> defer.Deferred[None]:
        done: defer.Deferred[None] = defer.Deferred()
        previous = conn.on_lost

        def lost(c: BackendConnection, reason: Failure) -> None:
            if previous is not None and c.session is not None:
                previous(c, reason)
            done.callback(None)

        conn.on_lost = lost
        if conn.transport is not None and conn.transport.connected:
            conn.transport.loseConnection()
        else:
            done.callback(None)
        return done
