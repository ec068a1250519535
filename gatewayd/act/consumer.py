# -*- test-case-name: tests.integration.test_act_redis -*-
"""
Runs the async actions that gateways publish to Redis (C{actionRedis}).

With C{actionRedis.enabled}, a gateway publishes each async action (e.g.
C{log}) as JSON to the channel instead of running it, so that the work runs
elsewhere, shared by the consumers subscribed to the channel.  The gateway
can run one (add L{ActionConsumer} to the service), and
C{python -m gatewayd.act.consumer} runs one on its own.

Messages are GatewayD's C{AsyncActionMessage} JSON, so Go and Python
publishers and consumers mix.  At most C{max_in_flight} actions run at once
(GatewayD: a fixed number of workers); further messages are dropped with a
rate-limited warning rather than queued without bound.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger, LogLevel

from gatewayd.act.redis import RedisSubscriber
from gatewayd.act.registry import ActRegistry
from gatewayd.hooks.ratelimit import RateLimitedLog

__all__ = ["ActionConsumer", "main"]


class ActionConsumer(Service):
    """
    Subscribes to the actions channel and runs each message's action through
    C{act} (its actions and C{actionTimeout}).
    """

    def __init__(self, reactor: Any, address: str, channel: str, act: ActRegistry, *,
                 log: Logger | None = None, max_in_flight: int = 100) -> None:
        self._act = act
        self._log = log if log is not None else Logger(namespace="gatewayd.act.consumer")
        self._warn = RateLimitedLog(self._log, reactor)
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.handled = 0
        self.dropped = 0
        self.subscriber = RedisSubscriber(reactor, address, channel, self._message, log=self._log)

    @classmethod
    def from_config(cls, config: Any, *, reactor: Any, act: ActRegistry,
                    log: Logger | None = None) -> ActionConsumer:
        """From a L{gatewayd.config.schema.PluginsConfig}'s C{actionRedis}."""
        redis = config.action_redis
        return cls(reactor, redis.address, redis.channel, act, log=log)

    def when_subscribed(self) -> Deferred[None]:
        return self.subscriber.when_subscribed()

    def _message(self, payload: bytes) -> None:
        if self.in_flight >= self.max_in_flight:
            self.dropped += 1
            self._warn.emit("full", LogLevel.warn,
                            "{count} async actions already running; message dropped",
                            count=self.in_flight)
            return
        self.in_flight += 1
        d = self._act.run_async_message(payload)
        d.addBoth(self._done)

    def _done(self, _: object) -> None:
        self.in_flight -= 1
        self.handled += 1

    def startService(self) -> None:  # noqa: N802 - Twisted API
        super().startService()
        self.subscriber.startService()

    def stopService(self) -> Deferred[None] | None:  # noqa: N802 - Twisted API
        super().stopService()
        return self.subscriber.stopService()


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gatewayd.act.consumer",
        description="Run the async Act actions that gatewayd/GatewayD publish to Redis.")
    parser.add_argument("--address", default="localhost:6379", help="Redis host:port (localhost:6379)")
    parser.add_argument("--channel", default="gatewayd-actions", help="channel (gatewayd-actions)")
    parser.add_argument("--action-timeout", type=float, default=30.0,
                        help="seconds per action, 0 = none (30)")
    parser.add_argument("--max-in-flight", type=int, default=100, help="concurrent actions (100)")
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warn", "error"), help="(info)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of C{python -m gatewayd.act.consumer}; runs until SIGINT/SIGTERM."""
    from twisted.internet import task
    from twisted.logger import (
        FilteringLogObserver,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    args = _parse(sys.argv[1:] if argv is None else argv)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(args.log_level))
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])],
        redirectStandardIO=False)

    def run(reactor: Any) -> Deferred[None]:
        act = ActRegistry(clock=reactor, action_timeout=args.action_timeout)
        consumer = ActionConsumer(reactor, args.address, args.channel, act,
                                  max_in_flight=args.max_in_flight)
        consumer.startService()
        done: Deferred[None] = Deferred()
        reactor.addSystemEventTrigger("before", "shutdown", consumer.stopService)
        return done

    task.react(run)


if __name__ == "__main__":
    main()
