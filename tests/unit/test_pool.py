"""BackendPool: pre-dialled sockets, FIFO waiters, 53300 after waitTimeout, backoff, recycling."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from gatewayd.config.schema import Client, Pool, Proxy
from gatewayd.errors import BackendUnavailable, PoolExhausted
from gatewayd.interfaces import IBackendPool
from gatewayd.pool import BackendPool, backoff_delay
from gatewayd.stats import BlockStats


class FakeConn:
    def __init__(self, clock: Clock) -> None:
        self.created = clock.seconds()
        self.usable = True
        self.closed = False
        self.on_lost = None
        self.session = None
        self.transport = None

    def close(self) -> None:
        self.closed = True
        self.usable = False

    def die(self) -> None:
        self.usable = False
        if self.on_lost:
            self.on_lost(self, None)


class Dialer:
    """Each dial returns a Deferred the test resolves: succeed() or fail()."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.pending: list[defer.Deferred] = []
        self.made: list[FakeConn] = []

    def __call__(self) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.pending.append(d)
        return d

    def succeed_all(self) -> None:
        pending, self.pending = self.pending, []
        for d in pending:
            conn = FakeConn(self.clock)
            self.made.append(conn)
            d.callback(conn)

    def fail_all(self, why: str = "connection refused") -> None:
        pending, self.pending = self.pending, []
        for d in pending:
            d.errback(BackendUnavailable(why))


def make(size: int = 2, wait: float = 1.0, retries: int = 1, period: float = 60.0):
    clock = Clock()
    dial = Dialer(clock)
    stats = BlockStats("default", "writes")
    pool = BackendPool(clock, dial, Client(retries=retries, backoff=0.5),
                       Pool(size=size, wait_timeout=wait), Proxy(health_check_period=period), stats)
    return clock, dial, pool, stats


def test_provides_interface() -> None:
    _, _, pool, _ = make()
    assert verifyObject(IBackendPool, pool)


def test_dials_size_connections_at_start() -> None:
    clock, dial, pool, stats = make(size=3)
    pool.start()
    assert len(dial.pending) == 3
    dial.succeed_all()
    assert pool.idle_count == 3 and stats.server_connections == 3 and pool.healthy


def test_exhausted_pool_queues_fifo_then_serves_in_turn() -> None:
    clock, dial, pool, _ = make(size=1, wait=5)
    pool.start()
    dial.succeed_all()
    first = pool.acquire()
    conn = first.result
    second, third = pool.acquire(), pool.acquire()
    assert pool.waiting_count == 2 and not second.called
    pool.release(conn)
    assert conn.closed
    dial.succeed_all()  # the replacement goes to the first waiter
    assert second.called and not third.called
    pool.release(second.result)
    dial.succeed_all()
    assert third.called


def test_waiter_times_out_with_pool_exhausted() -> None:
    clock, dial, pool, stats = make(size=1, wait=1.0)
    pool.start()
    dial.succeed_all()
    pool.acquire()
    waiting = pool.acquire()
    clock.advance(1.0)
    failure = waiting.result
    assert failure.check(PoolExhausted)
    waiting.addErrback(lambda f: None)
    assert pool.waiting_count == 0 and stats.pool_exhausted == 1


def test_cancelled_waiter_leaves_the_queue() -> None:
    clock, dial, pool, _ = make(size=1)
    pool.start()
    dial.succeed_all()
    pool.acquire()
    waiting = pool.acquire()
    waiting.addErrback(lambda f: None)
    waiting.cancel()
    assert pool.waiting_count == 0


def test_backend_down_gives_unavailable_and_recovers() -> None:
    clock, dial, pool, _ = make(size=2, retries=1)
    pool.start()
    dial.fail_all()  # 2 failures > retries=1: unhealthy
    assert not pool.healthy
    failure = []
    pool.acquire().addErrback(failure.append)
    assert failure and failure[0].check(BackendUnavailable)
    clock.advance(backoff_delay(pool.client_config, 2))
    assert len(dial.pending) == 1  # one probe at a time while down
    dial.succeed_all()
    assert pool.healthy
    dial.succeed_all()  # the rest is filled once the probe succeeds
    assert pool.idle_count == 2


class Ready:
    """A session that reached ReadyForQuery."""

    ready = True


def test_server_dropping_idle_sockets_switches_to_per_client_dials() -> None:
    """
    A socket dialled while PostgreSQL shuts down keeps its postmaster waiting
    until authentication_timeout: once the server drops a socket the pool
    closes what it holds idle and dials only for clients, until a session
    through a socket dialled since then succeeds.
    """
    clock, dial, pool, stats = make(size=2)
    pool.start()
    dial.succeed_all()
    dial.made[0].die()
    assert dial.made[1].closed and pool.idle_count == 0 and not dial.pending
    assert stats.server_connections == 0
    clock.advance(1)
    first = pool.acquire()
    assert len(dial.pending) == 1  # dialled for this client only
    dial.succeed_all()
    assert first.called and pool.idle_count == 0 and not dial.pending
    first.result.session = Ready()  # its session reached ReadyForQuery
    second = pool.acquire()
    assert len(dial.pending) == 1
    dial.succeed_all()
    assert second.called
    pool.release(first.result)  # the server proved itself: pre-dial again
    dial.succeed_all()
    assert pool.idle_count == 1 and stats.server_connections == 2


def test_old_idle_socket_meeting_authentication_timeout_is_just_replaced() -> None:
    """Too old to hand out anyway: PostgreSQL's authentication_timeout, not a shutdown."""
    clock, dial, pool, stats = make(size=1, period=10.0)
    pool.start()
    dial.succeed_all()
    clock.advance(9.5)
    dial.made[0].die()
    assert len(dial.pending) == 1  # pre-dialled at once, as before
    dial.succeed_all()
    assert pool.idle_count == 1


def test_busy_socket_closed_by_the_server_also_switches_to_per_client_dials() -> None:
    clock, dial, pool, stats = make(size=2)
    pool.start()
    dial.succeed_all()
    busy = pool.acquire().result
    busy.session = Ready()
    busy.session.server_closed = True  # the server closed it under the session
    busy.usable = False
    pool.release(busy)
    assert pool.idle_count == 0 and dial.made[1].closed and not dial.pending
    assert stats.server_connections == 0


def test_probe_after_an_outage_is_not_kept_idle_while_per_client() -> None:
    clock, dial, pool, stats = make(size=2, retries=0)
    pool.start()
    dial.succeed_all()
    for conn in dial.made:
        conn.die()  # the server went away
    failures = []
    pool.acquire().addErrback(failures.append)
    dial.fail_all()  # the client's own dial is refused: down
    assert failures and failures[0].check(BackendUnavailable) and not pool.healthy
    clock.advance(backoff_delay(pool.client_config, 1))
    assert len(dial.pending) == 1  # the probe
    dial.succeed_all()
    probe = dial.made[-1]
    assert pool.healthy and probe.closed and pool.idle_count == 0
    assert stats.server_connections == 0
    waiting = pool.acquire()
    dial.succeed_all()
    assert waiting.called and waiting.result is not probe


def test_old_idle_sockets_are_recycled_and_not_handed_out() -> None:
    clock, dial, pool, stats = make(size=1, period=10.0)
    pool.start()
    dial.succeed_all()
    old = dial.made[0]
    clock.advance(9.5)  # older than 0.9 * period: never handed out
    d = pool.acquire()
    assert old.closed and not d.called
    dial.succeed_all()
    assert d.called and d.result is not old
    clock.advance(0.5)
    assert stats.proxy_health_checks == 1


def test_backoff_grows_and_is_capped() -> None:
    cfg = Client(backoff=1.0, backoff_multiplier=2.0)
    assert [backoff_delay(cfg, n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_delay(cfg, 30) == 60.0
    assert backoff_delay(Client(backoff=1.0, backoff_multiplier=1.5), 2) == 1.5  # no truncation
    assert backoff_delay(Client(backoff=1.0, backoff_multiplier=50), 2) == 10.0  # multiplier cap
