"""
Act's async actions over a real Redis (127.0.0.1:6379): a gateway-side
L{ActRegistry} publishes, an L{ActionConsumer} subscribed to the channel
runs the action.  Under CI=true a missing Redis fails the test.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from typing import Any, Callable

import pytest
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from gatewayd.act import ActRegistry
from gatewayd.act.consumer import ActionConsumer
from gatewayd.act.redis import RedisPublisher, RedisSubscriber
from gatewayd.act.signals import log
from gatewayd.config.schema import ActionRedis, PluginsConfig

pytestmark = pytest.mark.integration

REDIS = ("127.0.0.1", 6379)


def redis_up() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(autouse=True)
def need_redis() -> None:
    if not redis_up():
        if os.environ.get("CI") == "true":
            pytest.fail("Redis is not running on 127.0.0.1:6379 (required under CI=true)")
        pytest.skip("Redis is not running on 127.0.0.1:6379")


def run_in_reactor(test: Callable[[Any], Any], timeout: float = 15.0) -> Any:
    """Run C{test(reactor)} (a coroutine function) on a fresh epoll reactor."""
    from twisted.internet.epollreactor import EPollReactor

    reactor = EPollReactor()
    outcome: list[Any] = []

    def start() -> None:
        d = ensureDeferred(test(reactor))
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    def too_slow() -> None:
        outcome.append(TimeoutError(f"test did not finish in {timeout}s"))
        reactor.stop()

    reactor.callWhenRunning(start)
    timer = reactor.callLater(timeout, too_slow)
    reactor.run(installSignalHandlers=False)
    if timer.active():
        timer.cancel()
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


async def poll(reactor: Any, check: Callable[[], bool], deadline: float = 10.0) -> None:
    from twisted.internet.task import deferLater

    end = reactor.seconds() + deadline
    while not check():
        if reactor.seconds() > end:
            raise AssertionError("condition not met before the deadline")
        await deferLater(reactor, 0.01, lambda: None)


class Events(list):
    def __call__(self, event: dict) -> None:
        self.append(event)


def test_publish_and_consume_log_action() -> None:
    """The gateway publishes a log action; the consumer runs it with its fields."""
    channel = f"gatewayd-test-{uuid.uuid4().hex}"

    async def scenario(reactor: Any) -> None:
        config = PluginsConfig(action_redis=ActionRedis(enabled=True, address="127.0.0.1:6379",
                                                        channel=channel))
        gateway_events, consumer_events = Events(), Events()
        act = ActRegistry.from_config(config, reactor=reactor, log=Logger(observer=gateway_events))
        assert isinstance(act.publisher, RedisPublisher)
        consumer_act = ActRegistry(clock=reactor, log=Logger(observer=consumer_events))
        consumer = ActionConsumer.from_config(config, reactor=reactor, act=consumer_act,
                                              log=Logger(observer=consumer_events))
        consumer.startService()
        act.publisher.startService()
        try:
            await consumer.when_subscribed()
            await poll(reactor, lambda: act.publisher.connection is not None)
            result, terminal = act.process(
                {"request": b"Q\x00\x00\x00\x0dselect 1\x00",
                 "__signals__": [log("warn", "query seen", table="users")]})
            assert not terminal
            await poll(reactor, lambda: consumer.handled == 1)
            [event] = [e for e in consumer_events if e.get("plugin_message") == "query seen"]
            assert event["table"] == "users"
            assert not any(e.get("plugin_message") == "query seen" for e in gateway_events)
        finally:
            await act.publisher.stopService()
            await consumer.stopService()

    run_in_reactor(scenario)


def test_go_shaped_message_and_receivers() -> None:
    """A message in GatewayD's JSON reaches the consumer; PUBLISH reports one receiver."""
    channel = f"gatewayd-test-{uuid.uuid4().hex}"

    async def scenario(reactor: Any) -> None:
        received: list[bytes] = []
        subscriber = RedisSubscriber(reactor, "127.0.0.1:6379", channel, received.append)
        publisher = RedisPublisher(reactor, "127.0.0.1:6379", channel)
        subscriber.startService()
        publisher.startService()
        try:
            await subscriber.when_subscribed()
            await poll(reactor, lambda: publisher.connection is not None)
            message = json.dumps({"Output": {"matchedPolicy": "log", "metadata": {
                "log": True, "level": "info", "message": "from go"}, "verdict": True,
                "terminal": False, "sync": False}, "Params": [{"Key": "__logger__", "Value": {}}]})
            receivers = await publisher.publish(message.encode())
            assert receivers == 1
            await poll(reactor, lambda: len(received) == 1)
            assert json.loads(received[0])["Output"]["metadata"]["message"] == "from go"
        finally:
            await publisher.stopService()
            await subscriber.stopService()

    run_in_reactor(scenario)


def test_publish_without_connection_fails_fast() -> None:
    """Redis unreachable: publishing fails at once (nothing queued) and is logged."""

    async def scenario(reactor: Any) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # nothing listens there once closed
        events = Events()
        publisher = RedisPublisher(reactor, f"127.0.0.1:{port}", "ch", log=Logger(observer=events))
        publisher.startService()
        try:
            failure: list[Any] = []
            d: Deferred = publisher.publish(b"x")
            d.addErrback(failure.append)
            assert failure and "not connected" in failure[0].getErrorMessage()
            await poll(reactor, lambda: any("Cannot connect to Redis" in str(e.get("log_format"))
                                            for e in events))
        finally:
            await publisher.stopService()

    run_in_reactor(scenario)
